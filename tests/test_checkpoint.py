"""Checkpointer: config stored with each step, compatibility refusal, warm start, integrity,
retention per run configuration, non-finite refusal, one-line storage errors (read-only, disk full).

Tiny synthetic ``TrainState``s (no trainer): each test takes well under a second of compute.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import time
import uuid

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxgen import checkpoint
from jaxgen.errors import NonFiniteLossError, UserError
from jaxgen.state import TrainState

# Orbax abandons the read coroutines of a damaged step; Python reports them when they are collected.
pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")]


def make_state(width: int = 4, extra: bool = False, seed: int = 0, big: int = 0) -> TrainState:
  """Params ``{"gen": {"Dense_0": [3, width] + [width], "Dense_1": [width, 2]}}`` (+ ``Dense_2`` when
  ``extra``, + a ``[big]`` random vector that compresses badly, so its data file is large)."""
  keys = jax.random.split(jax.random.key(seed), 4)
  gen = {"Dense_0": {"kernel": jax.random.normal(keys[0], (3, width)), "bias": jnp.zeros(width)},
         "Dense_1": {"kernel": jax.random.normal(keys[1], (width, 2))}}
  if extra:
    gen["Dense_2"] = {"kernel": jax.random.normal(keys[2], (2, 2))}
  if big:
    gen["big"] = jax.random.normal(keys[3], (big,))
  params = {"gen": gen}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, state={"gen": {}},
                    opt_state={"gen": optax.adam(1e-3).init(params["gen"])},
                    ema_params=jax.tree.map(lambda x: x + 1.0, params))


def abstract(state: TrainState):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def make_config(**changes) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({
      "seed": 0, "model": {"family": "gan", "width": 4, "loss": "hinge"}, "data": {"name": "digits"},
      "train": {"steps": 4, "keep_checkpoints": 3}, "eval": {"num_samples": 100}})
  for key, value in changes.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def save_steps(workdir, config, steps, state=None, keep=3):
  ckpt = checkpoint.Checkpointer(workdir, keep, config)
  state = state if state is not None else make_state()
  for s in steps:
    ckpt.save(s, state.replace(step=jnp.int32(s)))
  ckpt.close()
  return state


def snapshot(directory) -> dict[str, str]:
  """``{relative path: sha256}`` of every file below ``directory``."""
  out = {}
  for path in glob.glob(os.path.join(directory, "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def step_dirs(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


# --- compatibility -----------------------------------------------------------------------------------


@pytest.mark.parametrize("change,shapes,named", [
    ({"model.width": 8}, 8, "model.width: 4 -> 8"),  # shapes change
    ({"model.loss": "wasserstein"}, 4, "model.loss: 'hinge' -> 'wasserstein'"),  # same shapes, another model
    ({"data.name": "toy2d/ring8"}, 4, "data.name"),
    ({"train.steps": 4}, 8, "arrays differ"),  # a shape change no config key explains (e.g. a data source option)
])
def test_incompatible_config_is_refused_and_nothing_is_touched(tmp_path, change, shapes, named):
  workdir = str(tmp_path)
  save_steps(workdir, make_config(), [2, 4])
  before = snapshot(workdir)
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config(**change))
  with pytest.raises(UserError) as err:
    ckpt.restore_latest(abstract(make_state(width=shapes)))
  ckpt.close()
  message = str(err.value)
  assert "\n" not in message and named in message
  assert "--workdir=NEW" in message and f"--config.train.init_from={tmp_path}/checkpoints/4" in message
  assert snapshot(workdir) == before


def test_refusal_names_the_saved_values_to_continue(tmp_path):
  save_steps(str(tmp_path), make_config(), [2])
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3, make_config(**{"model.width": 8}))
  with pytest.raises(UserError, match="--config.model.width=4"):
    ckpt.restore_latest(abstract(make_state(width=8)))
  # More than six differences: counted, and no partial list of flags offered as the way to continue.
  many = make_config(**{"model.width": 8})
  many.model.update({f"extra_{i}": i for i in range(7)})
  with pytest.raises(UserError, match=r"and 2 more; arrays differ.*; nothing was changed. Start a new run"):
    checkpoint.Checkpointer(str(tmp_path), 3, many).restore_latest(abstract(make_state(width=8)))


def test_allowed_changes_restore(tmp_path):
  state = save_steps(str(tmp_path), make_config(), [2, 4])
  config = make_config(**{"train.steps": 100, "eval.num_samples": 5000, "train.keep_checkpoints": 1})
  ckpt = checkpoint.Checkpointer(str(tmp_path), 1, config)
  restored = ckpt.restore_latest(abstract(state))
  assert int(restored.step) == 4
  chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
  assert ckpt.saved_config()["train"]["steps"] == 4  # the config saved with the checkpoint


def test_execution_fields_of_the_model_may_change_or_appear_on_resume(tmp_path):
  """model.remat / model.attention choose how the same function is computed: a run saved before
  they existed (or with other values) resumes."""
  state = save_steps(str(tmp_path), make_config(), [2])
  config = make_config()
  with config.unlocked():
    config.model.remat = True
    config.model.attention = "cudnn"
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3, config)
  chex.assert_trees_all_equal(jax.device_get(ckpt.restore_latest(abstract(state)).params), jax.device_get(state.params))


def test_a_first_stage_pinned_or_moved_resumes_with_a_warning(tmp_path, caplog):
  """The path of a frozen first stage (``model.vqvae_workdir``, ...) may change on resume: pinning
  ``<run>/checkpoints/<step>`` that the log named, or a moved directory. Another ``model.*`` is refused."""
  saved = make_config()
  with saved.unlocked():
    saved.model.vqvae_workdir = "/runs/vqvae"
  state = save_steps(str(tmp_path / "pinned"), saved, [2])
  config = make_config()
  with config.unlocked():
    config.model.vqvae_workdir = "/runs/vqvae/checkpoints/4"
  with caplog.at_level("WARNING"):
    restored = checkpoint.Checkpointer(str(tmp_path / "pinned"), 3, config).restore_latest(abstract(state))
  chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
  assert "model.vqvae_workdir: '/runs/vqvae' -> '/runs/vqvae/checkpoints/4' since checkpoint step 2" in caplog.text
  config.model.loss = "wasserstein"
  with pytest.raises(UserError, match="model.loss: 'hinge' -> 'wasserstein'"):
    checkpoint.Checkpointer(str(tmp_path / "pinned"), 3, config).restore_latest(abstract(state))
  # A first stage that appears or goes (reflow switched on or off) is another objective: refused.
  config.model.loss, config.model.vqvae_workdir = "hinge", ""
  with pytest.raises(UserError, match="model.vqvae_workdir: '/runs/vqvae' -> ''"):
    checkpoint.Checkpointer(str(tmp_path / "pinned"), 3, config).restore_latest(abstract(state))


# --- warm start --------------------------------------------------------------------------------------


def test_warm_start_loads_exactly_the_matching_arrays(tmp_path):
  saved = save_steps(str(tmp_path), make_config(), [2, 4], state=make_state(seed=1))
  fresh = make_state(width=4, extra=True, seed=2)
  fresh = fresh.replace(params={"gen": {**fresh.params["gen"], "Dense_1": {"kernel": jnp.ones((4, 5))}}})
  for init_from in (str(tmp_path), str(tmp_path / "checkpoints" / "4")):
    warm = checkpoint.warm_start(init_from, fresh)
    np.testing.assert_array_equal(warm.params["gen"]["Dense_0"]["kernel"], saved.params["gen"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(warm.ema_params["gen"]["Dense_0"]["bias"], saved.ema_params["gen"]["Dense_0"]["bias"])
    np.testing.assert_array_equal(warm.params["gen"]["Dense_1"]["kernel"], np.ones((4, 5)))  # shape differs: fresh
    np.testing.assert_array_equal(warm.params["gen"]["Dense_2"]["kernel"], fresh.params["gen"]["Dense_2"]["kernel"])
    assert int(warm.step) == 0
    chex.assert_trees_all_equal(jax.device_get(warm.opt_state), jax.device_get(fresh.opt_state))
  with pytest.raises(UserError, match="no array"):
    checkpoint.warm_start(str(tmp_path), make_state(width=7))
  with pytest.raises(UserError, match="holds no checkpoint"):
    checkpoint.warm_start(str(tmp_path / "empty"), fresh)


# --- integrity ---------------------------------------------------------------------------------------


def _overwrite_4k(step_dir: str, fraction: float) -> None:
  files = [p for p in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
           if os.path.isfile(p) and f"{os.sep}d{os.sep}" in p]
  largest = max(files, key=os.path.getsize)
  assert os.path.getsize(largest) > 3 * 4096
  with open(largest, "r+b") as f:
    f.seek(int(os.path.getsize(largest) * fraction))
    f.write(np.random.default_rng(0).bytes(4096))


def test_garbage_inside_data_is_detected_and_the_previous_step_restored(tmp_path):
  """4 KiB of garbage at three places of the largest data file of step 4: each time step 4 is moved
  aside (not deleted) and step 2 restored exactly. Some places decode without error to other
  values (orbax has no checksum of array data): only the stored digest catches those."""
  silent = 0
  for i, fraction in enumerate((0.1, 0.5, 0.7)):
    workdir = str(tmp_path / str(i))
    state = make_state(big=20000)
    save_steps(workdir, make_config(), [2], state=state)
    save_steps(workdir, make_config(), [4], state=make_state(big=20000, seed=5))
    _overwrite_4k(os.path.join(workdir, "checkpoints", "4"), fraction)
    raw = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=ocp.CheckpointManagerOptions(read_only=True),
                                item_handlers={"state": ocp.StandardCheckpointHandler()})
    try:
      raw.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract(state))))
      silent += 1
    except Exception:  # the garbage broke the compressed stream: orbax noticed by itself
      pass
    raw.close()
    ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
    restored = ckpt.restore_latest(abstract(state))
    ckpt.close()
    assert int(restored.step) == 2
    chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
    names = step_dirs(workdir)
    assert "2" in names and "4" not in names and any(n.startswith("corrupted-4-") for n in names)
  assert silent >= 1, "no silent corruption among the three places: the digest was not exercised"


def test_empty_step_dir_is_skipped_and_the_others_untouched(tmp_path):
  workdir = str(tmp_path)
  state = save_steps(workdir, make_config(), [2, 4])
  os.makedirs(tmp_path / "checkpoints" / "6")
  before = {k: v for k, v in snapshot(workdir).items()}
  reader = checkpoint.Checkpointer(workdir, 3, make_config(), read_only=True)  # sample / eval: moves nothing
  assert int(reader.restore_latest(abstract(state)).step) == 4
  reader.close()
  assert step_dirs(workdir) == ["2", "4", "6"]
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
  assert int(ckpt.restore_latest(abstract(state)).step) == 4
  assert snapshot(workdir) == before  # steps 2 and 4 byte for byte
  ckpt.save(6, state.replace(step=jnp.int32(6)))  # the empty directory does not shadow a new step 6
  ckpt.close()
  names = step_dirs(workdir)
  assert names[:3] == ["2", "4", "6"] and names[3].startswith("incomplete-6-")


def test_when_nothing_restores_the_error_lists_what_was_tried(tmp_path):
  workdir = str(tmp_path)
  state = save_steps(workdir, make_config(), [2])
  os.makedirs(tmp_path / "checkpoints" / "4")
  for path in glob.glob(os.path.join(workdir, "checkpoints", "2", "**", "d", "*"), recursive=True):
    with open(path, "wb") as f:
      f.write(b"garbage")
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
  with pytest.raises(UserError) as err:
    ckpt.restore_latest(abstract(state))
  ckpt.close()
  message = str(err.value)
  assert "step 4: no readable meta" in message and "step 2: does not restore" in message
  assert "--workdir=NEW" in message and "\n" not in message
  # The next run sees only set-aside steps: still an error, never a silent start from step 0.
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
  with pytest.raises(UserError, match="corrupted-2-.*incomplete-4-"):
    ckpt.restore_latest(abstract(state))
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path / "new"), 3, make_config()).restore_latest(abstract(state)) is None


# --- retention ---------------------------------------------------------------------------------------


def test_keep_checkpoints_is_at_least_one(tmp_path):
  with pytest.raises(UserError, match="keep_checkpoints=0"):
    checkpoint.Checkpointer(str(tmp_path), 0, make_config())
  save_steps(str(tmp_path), make_config(), [2, 4, 6], keep=1)
  assert step_dirs(str(tmp_path)) == ["6"]


def test_a_file_in_place_of_the_checkpoint_directory_is_one_line(tmp_path):
  (tmp_path / "checkpoints").write_text("")  # a traceback (NotADirectoryError) from orbax before
  for read_only in (False, True):
    with pytest.raises(UserError, match="checkpoints is a file, not a checkpoint directory; move it away"):
      checkpoint.Checkpointer(str(tmp_path), 1, make_config(), read_only=read_only)
  assert (tmp_path / "checkpoints").read_text() == ""


def test_retention_never_deletes_an_earlier_configurations_steps(tmp_path):
  workdir = str(tmp_path)
  save_steps(workdir, make_config(), [2, 4], keep=2)
  save_steps(workdir, make_config(**{"train.steps": 10}), [6, 8, 10], keep=1)
  assert step_dirs(workdir) == ["10", "2", "4"]
  save_steps(workdir, make_config(**{"train.steps": 10}), [12], keep=1)  # a restart of the same configuration
  assert step_dirs(workdir) == ["12", "2", "4"]


def test_a_non_finite_state_is_never_saved(tmp_path):
  state = make_state()
  bad = state.replace(params={"gen": {**state.params["gen"], "Dense_1": {"kernel": jnp.full((4, 2), jnp.inf)}}})
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3, make_config())
  ckpt.save(2, state)
  with pytest.raises(NonFiniteLossError, match="params/gen/Dense_1/kernel is not finite"):
    ckpt.save(4, bad)
  ckpt.close()
  assert step_dirs(str(tmp_path)) == ["2"]


# --- storage errors ------------------------------------------------------------------------------------


def _checkpoint_bytes(tmp_path, state) -> int:
  probe = str(tmp_path / f"probe-{uuid.uuid4().hex}")
  save_steps(probe, make_config(), [2], state=state)
  size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(probe, "**", "*"), recursive=True) if os.path.isfile(p))
  shutil.rmtree(probe)
  return size


def test_disk_full_is_one_line_quickly_and_keeps_the_last_checkpoint(tmp_path, mount_point):
  state = make_state(big=50000)
  size = _checkpoint_bytes(tmp_path, state)
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2 // 1024 + 8}k", "tmpfs", str(mount_point)], check=True)
  workdir = str(mount_point / "run")
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
  ckpt.save(2, state.replace(step=jnp.int32(2)))
  start = time.monotonic()
  with pytest.raises(UserError) as err:
    ckpt.save(4, state.replace(step=jnp.int32(4)))
  assert time.monotonic() - start < 10
  message = str(err.value)
  assert "\n" not in message and "no space left on device" in message and workdir in message
  assert "step 2) is intact" in message
  assert step_dirs(workdir) == ["2"]  # the temporary files of step 4 are gone
  restored = checkpoint.Checkpointer(workdir, 3, make_config(), read_only=True).restore_latest(abstract(state))
  chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))


def test_read_only_workdir_is_one_line_quickly(tmp_path, mount_point):
  """root ignores chmod, so the workdir is made read-only by remounting its file system."""
  subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
  workdir = str(mount_point / "run")
  state = make_state()
  ckpt = checkpoint.Checkpointer(workdir, 3, make_config())
  ckpt.save(2, state.replace(step=jnp.int32(2)))
  subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
  start = time.monotonic()
  with pytest.raises(UserError) as err:
    ckpt.save(4, state.replace(step=jnp.int32(4)))
  assert time.monotonic() - start < 10
  message = str(err.value)
  assert "\n" not in message and "read-only file system" in message and workdir in message
  restored = checkpoint.Checkpointer(workdir, 3, make_config(), read_only=True).restore_latest(abstract(state))
  assert int(restored.step) == 2
