"""Checkpoints with orbax: the config and a checksum stored with each step, resume only a compatible
config, fall back past damaged steps, keep K per run configuration, one-line storage errors.

Layout: ``<workdir>/checkpoints/<step>/`` holds two orbax items, ``state`` (the ``TrainState``) and
``meta`` (JSON: the run's config, a digest of every array, the format version). Saves are
synchronous: a save that fails (disk full, read-only, remote error) raises at once, the temporary
directory is removed, and the previous steps stay as they were. Orbax writes each step into a
temporary directory and renames it when complete, so a killed save leaves no half-written step.

Restoring (``restore_latest``) walks the steps from the newest:

* a step directory without a readable ``meta`` item (empty, or partial) is skipped, with a warning;
* the first complete step's saved config is compared with this run's: a different family or data
  set (``model.*``, ``data.name``) or a different array shape / tree (data shape options,
  optimizer kind) is a ``UserError`` naming the differing keys and the fixes, and nothing is
  touched; any other difference (more steps, eval settings, learning rate) is allowed and logged;
* the state is restored and its digest compared with the saved one: data that does not decode,
  or decodes to other values (orbax 0.12.8 checks no checksum of the array data; zarr3's crc32c
  covers only its shard index), marks the step damaged; in ``train`` mode it is moved to
  ``corrupted-<step>-<time>`` (never deleted), and the previous step is tried;
* storage errors (permission, quota, remote unavailable) stop with one line; they never mark a
  step damaged.

If steps (or earlier set-aside ones) exist but none restores, a ``UserError`` lists what was tried:
a run never silently starts again from step 0.

Retention: after each save, only the steps saved under this run's exact configuration beyond the
newest ``keep`` are deleted; steps of earlier configurations are never deleted.

Digest: per array, two 32-bit sums of its bits, ``sum_i u_i (2i + 1)`` and
``sum_i (u_i xor i * 0x9E3779B9) * 0x85EBCA6B`` (mod 2^32), computed on device (one jitted pass, no
copy to the host; any sharding). It detects damage, not tampering.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxgen import workdir as workdir_lib
from jaxgen.errors import NonFiniteLossError, UserError

FORMAT = 1
STATE, META = "state", "meta"
#: Config keys whose change makes a checkpoint another model (refused even if shapes agree).
REFUSED_PREFIXES = ("model.",)
REFUSED_KEYS = ("data.name",)
#: ``model.*`` fields that choose how the same function is computed (rematerialisation, the
#: attention kernel), not the model: changing them on a resumed run is allowed.
EXECUTION_FIELDS = ("remat", "attention")
#: ``model.*`` fields that say where a frozen first stage is read from (a run's workdir, or one of its
#: steps pinned as ``<run>/checkpoints/<step>``): a path, not the model, so pinning the step a run
#: used, or a moved stage-one directory, resumes; the change is logged as a warning.
STAGE_ONE_FIELDS = ("autoencoder_workdir", "vqvae_workdir", "reflow_from")


# --- configs ---------------------------------------------------------------------------------------


def plain(config: ml_collections.ConfigDict | dict | None) -> dict | None:
  """A config as the JSON-able dict stored with a checkpoint (tuples become lists)."""
  if config is None or isinstance(config, dict):
    return config
  return json.loads(config.to_json_best_effort(sort_keys=True))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_changes(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """``{dotted key: (saved value, new value)}`` for every key that differs (missing = None)."""
  a, b = flatten(saved), flatten(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _first_stage_moved(key: str, saved: Any, new: Any) -> bool:
  """Whether ``key`` is a first stage's path that changed while set on both sides; one that appears
  or goes switches the objective (reflow on or off)."""
  return key.startswith("model.") and key.rsplit(".", 1)[-1] in STAGE_ONE_FIELDS and bool(saved and new)


def _refused(key: str, saved: Any = None, new: Any = None) -> bool:
  """Whether changing ``key`` from ``saved`` to ``new`` makes another model."""
  if key.rsplit(".", 1)[-1] in EXECUTION_FIELDS or _first_stage_moved(key, saved, new):
    return False
  return key.startswith(REFUSED_PREFIXES) or key in REFUSED_KEYS


def flag_text(value: Any) -> str:
  """A saved config value as the text of its ``--config.key=`` flag (lists comma-separated)."""
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _flag(key: str, value: Any) -> str:
  return f"--config.{key}={flag_text(value)}"


def _run_id(config: dict | None) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# --- digests ---------------------------------------------------------------------------------------


def _bits(x: jax.Array) -> jax.Array:
  """The bits of ``x`` as a flat uint32 vector (16/8-bit types widened, 64-bit split in two)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.reshape(-1).astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).reshape(-1).astype(jnp.uint32)


@jax.jit
def _digest_and_finite(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """``uint32[L, 2]`` digests and ``bool[L]`` all-finite flags of ``leaves``."""
  digests, finite = [], []
  for x in leaves:
    u = _bits(x)
    i = jnp.arange(u.shape[0], dtype=jnp.uint32)
    digests.append(jnp.stack([jnp.sum(u * (2 * i + 1), dtype=jnp.uint32),
                              jnp.sum((u ^ (i * np.uint32(0x9E3779B9))) * np.uint32(0x85EBCA6B), dtype=jnp.uint32)]))
    finite.append(jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True))
  return jnp.stack(digests), jnp.stack(finite)


def _host(x: jax.Array) -> np.ndarray:
  return np.asarray(x.addressable_data(0))


def digest(state: Any) -> tuple[dict[str, str], list[str]]:
  """``({"params/gen/Dense_0/kernel": "1a2b3c4d-5e6f7a8b", ...}, [paths of non-finite arrays])``."""
  flat = ocp.tree.to_flat_dict(state)
  names = ["/".join(map(str, k)) for k in flat]
  if not names:
    return {}, []
  digests, finite = _digest_and_finite(list(flat.values()))
  digests, finite = _host(digests), _host(finite)
  return ({n: f"{d[0]:08x}-{d[1]:08x}" for n, d in zip(names, digests)},
          [n for n, ok in zip(names, finite) if not ok])


# --- errors ----------------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
  text = " ".join(str(e).split("\n", 1)[0].split())
  return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


# --- the checkpointer ------------------------------------------------------------------------------


class Checkpointer:
  """One run's checkpoints: ``save`` / ``restore_latest`` of a ``TrainState`` pytree.

  ``workdir``: local or remote (``gs://``) run directory. ``keep``: steps kept per run
  configuration (>= 1). ``config``: this run's config (read at each save / restore, so it may be
  completed after construction, e.g. by ``optim.resolve_decay_steps``); None skips the config
  comparison. ``read_only``: for ``--mode=sample`` / ``eval``: never writes to ``checkpoints/``.
  """

  def __init__(self, workdir: str | epath.Path, keep: int = 1, config: ml_collections.ConfigDict | None = None,
               *, read_only: bool = False):
    if keep < 1:
      raise UserError(f"train.keep_checkpoints={keep} would keep no checkpoint; set --config.train.keep_checkpoints=1 or more")
    self.directory = workdir_lib.path(workdir) / "checkpoints"
    self.keep, self.config, self.read_only = keep, config, read_only
    self._metas: dict[int, dict | None] = {}
    if self.directory.exists() and not self.directory.is_dir():
      raise UserError(f"{self.directory} is a file, not a checkpoint directory; move it away, or pass --workdir=NEW")
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=not read_only, read_only=read_only,
                                           save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False)
    try:
      self.manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={STATE: ocp.StandardCheckpointHandler(), META: ocp.JsonCheckpointHandler()})
    except OSError as e:
      raise UserError(f"cannot open the checkpoint directory {self.directory}: {workdir_lib.storage_cause(e) or _first_line(e)}; "
                      "pass --workdir=DIR you can write to") from None

  # --- reading ---

  def steps(self) -> list[int]:
    """Every step directory, newest first (complete or not)."""
    return sorted(self.manager.all_steps(), reverse=True)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def meta(self, step: int) -> dict | None:
    """The ``meta`` item of ``step`` (config, digests), or None when the step has none (empty or
    partial directory). Storage failures raise ``UserError``."""
    if step not in self._metas:
      try:
        self._metas[step] = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
      except Exception as e:  # orbax: KeyError / FileNotFoundError / ValueError for a missing item
        cause = workdir_lib.storage_cause(e)
        if cause:
          raise UserError(f"cannot read checkpoint {self.directory / str(step)}: {cause}; fix the storage and rerun") from None
        self._metas[step] = None
    return self._metas[step]

  def saved_config(self) -> dict | None:
    """The config saved with the newest complete step (a plain dict), or None."""
    return next((m.get("config") for m in map(self.meta, self.steps()) if m is not None), None)

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises ``UserError`` when step ``step`` cannot continue as this run: another family or data
    set, or other array shapes. Logs the allowed differences."""
    saved = (self.meta(step) or {}).get("config")
    changes = config_changes(saved, plain(self.config)) if saved is not None and self.config is not None else {}
    refused = {k: v for k, v in changes.items() if _refused(k, *v)}
    shapes = self._shape_changes(step, abstract_state)
    if refused or shapes:
      named = list((refused or {k: v for k, v in changes.items() if k.startswith(("data.", "optim."))}
                    or changes).items())
      more = f" and {len(named) - 6} more" if len(named) > 6 else ""
      what = [", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in named[:6]) + more] if named else []
      what += [f"arrays differ, e.g. {shapes[0]}"] if shapes else []
      family = dict(named).get("model.family", (None,))[0]
      back = "" if more else " ".join(_flag(k, a) for k, (a, _) in named if a is not None)
      if family:  # another family's config cannot be turned into this one by overrides
        advice = f"Continue it with a config of family {family!r} (e.g. --config=configs/{family}.py), or s"
      else:
        advice = f"Continue it with the saved values ({back}), or s" if back else "S"
      raise UserError(
          f"checkpoint step {step} in {self.directory} was saved by another model ({'; '.join(what)}); nothing "
          f"was changed. {advice}tart a new run "
          f"with --workdir=NEW, optionally warm-started from it with --config.train.init_from={self.directory / str(step)}")
    if changes:
      logging.info("config changes since checkpoint step %d (allowed): %s", step,
                   ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    for key, (a, b) in changes.items():
      if _first_stage_moved(key, a, b):
        logging.warning("%s: %r -> %r since checkpoint step %d: this run goes on with the first stage the new "
                        "path names (the same weights only if it is the run and step used so far)", key, a, b, step)

  def _shape_changes(self, step: int, abstract_state: Any) -> list[str]:
    try:
      saved = self.manager.item_metadata(step)[STATE]
    except Exception:  # unreadable metadata: the restore below decides whether the step is damaged
      return []
    saved = ocp.tree.to_flat_dict(getattr(saved, "tree", saved))
    new = ocp.tree.to_flat_dict(abstract_state)
    out = []
    for key in sorted(set(saved) | set(new), key=str):
      a, b = saved.get(key), new.get(key)
      a = None if a is None else (tuple(a.shape), str(np.dtype(a.dtype)))
      b = None if b is None else (tuple(b.shape), str(np.dtype(b.dtype)))
      if a != b:
        out.append(f"{'/'.join(map(str, key))}: saved {a or 'absent'}, now {b or 'absent'}")
    return out

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest checkpoint that restores cleanly, shaped/sharded like ``abstract_state`` (a
    pytree of ``jax.ShapeDtypeStruct`` with shardings); None when the workdir has no checkpoint
    at all. Raises ``UserError`` for an incompatible config, a storage failure, or when steps
    exist but none restores."""
    tried = []
    for step in self.steps():
      meta = self.meta(step)
      if meta is None:
        tried.append(f"step {step}: no readable meta item (empty or partial directory)")
        logging.warning("checkpoint step %d has no readable meta item (empty or partial): skipped", step)
        self._set_aside(step, "incomplete")
        continue
      self.check_compatible(step, abstract_state)
      try:
        state = self.manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]
      except Exception as e:  # orbax / tensorstore raise many kinds on damaged files
        cause = workdir_lib.storage_cause(e)
        if cause:
          raise UserError(f"cannot read checkpoint {self.directory / str(step)}: {cause}; fix the storage and rerun") from None
        tried.append(f"step {step}: does not restore ({_first_line(e)})")
        self._set_aside(step, "corrupted", tried[-1])
        continue
      expected = meta.get("digest") or {}
      actual, _ = digest(state)
      bad = [k for k in expected if actual.get(k) != expected[k]]
      if bad:
        tried.append(f"step {step}: data does not match its checksum ({len(bad)} arrays, e.g. {bad[0]})")
        self._set_aside(step, "corrupted", tried[-1])
        continue
      if tried:
        logging.warning("restored checkpoint step %d after: %s", step, "; ".join(tried))
      return state
    aside = sorted(p.name for p in self._aside_dirs())
    if tried or aside:
      raise UserError(
          f"no checkpoint in {self.directory} restores ({'; '.join(tried) or 'no step left'}"
          f"{'; set aside: ' + ', '.join(aside) if aside else ''}); to start again from step 0, move "
          f"{self.directory} away, or pass --workdir=NEW")
    return None

  def _aside_dirs(self) -> list[epath.Path]:
    if not self.directory.exists():
      return []
    return [p for p in self.directory.iterdir() if p.name.startswith(("corrupted-", "incomplete-"))]

  def _set_aside(self, step: int, kind: str, why: str = "") -> None:
    """Moves step ``step`` to ``<kind>-<step>-<time>`` (train mode; read-only mode only warns)."""
    if self.read_only:
      if why:
        logging.warning("checkpoint %s: %s; trying the previous one", self.directory / str(step), why)
      return
    aside = self.directory / f"{kind}-{step}-{int(time.time())}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(aside)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

      multihost_utils.sync_global_devices(f"jaxgen_checkpoint_aside_{step}")
    if why:
      logging.warning("checkpoint %s: %s; moved to %s, trying the previous one", self.directory / str(step), why, aside)
    self._metas.pop(step, None)
    self.manager.reload()

  # --- writing ---

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as ``step`` (synchronously), with the config and the digest of every array.

    A step that already exists is left as it is. A non-finite array is refused
    (``NonFiniteLossError``); a storage failure is a one-line ``UserError`` naming the path and the
    cause, with the temporary files removed and the earlier steps intact.
    """
    if self.read_only:
      raise RuntimeError("a read-only Checkpointer (sample / eval mode) never saves")
    if step in self.manager.all_steps():
      if self.meta(step) is not None:
        return
      self._set_aside(step, "incomplete")
    digests, nonfinite = digest(state)
    if nonfinite:
      raise NonFiniteLossError(f"refusing to save checkpoint step {step}: {', '.join(nonfinite[:3])} "
                               f"{'is' if len(nonfinite) == 1 else 'are'} not finite; the earlier checkpoints are kept. "
                               "Lower the learning rate or clip gradients (--config.optim.<network>.grad_clip_norm=1.0)")
    config = plain(self.config)
    meta = {"format": FORMAT, "step": step, "run": _run_id(config), "config": config, "digest": digests}
    args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)})
    try:
      saved = self.manager.save(step, args=args)
    except Exception as e:  # disk full, read-only, remote failures: orbax / tensorstore error kinds vary
      self._remove_temporary(step)
      last = next((s for s in self.steps() if s < step), None)
      kept = f"the last checkpoint (step {last}) is intact" if last is not None else "no earlier checkpoint exists"
      raise UserError(f"cannot save checkpoint step {step} in {self.directory}: "
                      f"{workdir_lib.storage_cause(e) or _first_line(e)}; {kept}. Free space or fix the storage, then rerun "
                      "the same command to resume") from None
    if not saved:
      raise UserError(f"checkpoint step {step} was not saved: {self.directory} holds a newer step "
                      f"({self.latest_step()}); move it away or pass --workdir=NEW")
    self._metas[step] = meta
    self._retain(meta["run"])

  def _remove_temporary(self, step: int) -> None:
    """Removes the orbax temporary directory of a failed save (frees the space it took)."""
    if jax.process_index() != 0 or not self.directory.exists():
      return
    for path in self.directory.iterdir():
      if path.name.startswith(f"{step}.orbax-checkpoint-tmp"):
        try:
          path.rmtree()
        except OSError as e:
          logging.warning("could not remove %s: %s", path, e)

  def _retain(self, run: str) -> None:
    """Deletes this run configuration's steps beyond the newest ``keep``; never other ones."""
    mine = [s for s in self.steps() if (self.meta(s) or {}).get("run") == run]
    for step in mine[self.keep:]:
      self.manager.delete(step)
      self._metas.pop(step, None)

  def wait(self) -> None:
    """Saves are synchronous: nothing to wait for (kept for callers of the asynchronous API)."""

  def restore_as_saved(self, step: int) -> tuple[Any, list[str]]:
    """``(state, damaged)``: the state saved at ``step`` with its saved shapes and dtypes, on this
    process's first device (no target needed: a warm start or a pretrained model reads another
    run's checkpoint), and the keys whose data do not match their stored digest."""
    saved_meta = self.manager.item_metadata(step)[STATE]
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          getattr(saved_meta, "tree", saved_meta))
    state = self.manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))[STATE]
    expected = (self.meta(step) or {}).get("digest") or {}
    actual, _ = digest(state)
    return state, [k for k in expected if actual.get(k) != expected[k]]

  def close(self) -> None:
    self.manager.close()


# --- warm start ------------------------------------------------------------------------------------


def step_dir(text: str, knob: str) -> tuple[epath.Path, int, bool]:
  """``(run workdir, step, pinned)`` of a config field ``knob`` naming a trained run: a workdir (its
  newest complete step; ``UserError`` when it has none) or ``<workdir>/checkpoints/<step>``
  (``pinned``: that step, whose completeness the caller checks)."""
  path = workdir_lib.path(text)
  if path.name.isdigit() and path.parent.name == "checkpoints":
    return path.parent.parent, int(path.name), True
  ckpt = Checkpointer(path, config=None, read_only=True)
  step = next((s for s in ckpt.steps() if ckpt.meta(s) is not None), None)
  ckpt.close()
  if step is None:
    raise UserError(f"{knob}={text!r} holds no checkpoint in {path / 'checkpoints'}; train that run first, "
                    "or give a workdir of a trained run or one of its checkpoints/<step> directories")
  return path, step, False


def warm_start(init_from: str, fresh: Any) -> Any:
  """``fresh`` (a new, initialised ``TrainState``) with every array of ``params``, ``ema_params``
  and ``state`` whose path, shape and dtype match the checkpoint at ``init_from`` replaced by the
  saved value; the step stays 0 and the optimizer state fresh. The saved arrays are verified
  against their digests. Raises ``UserError`` when nothing matches or the checkpoint is unusable.
  """
  root, step, _ = step_dir(init_from, "train.init_from")
  ckpt = Checkpointer(root, config=None, read_only=True)
  try:
    if step not in ckpt.steps() or ckpt.meta(step) is None:
      raise UserError(f"train.init_from={init_from!r}: no complete checkpoint step {step} in {ckpt.directory}")
    try:
      saved, bad = ckpt.restore_as_saved(step)
    except Exception as e:
      raise UserError(f"train.init_from={init_from!r}: step {step} does not restore ({workdir_lib.storage_cause(e) or _first_line(e)})") from None
    if bad:
      raise UserError(f"train.init_from={init_from!r}: step {step} is damaged ({bad[0]} does not match its checksum); "
                      "choose another step")
  finally:
    ckpt.close()
  saved_flat = ocp.tree.to_flat_dict(saved)
  loaded, skipped = [], []

  def pick(path, leaf):
    key = tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)
    if key[0] not in ("params", "ema_params", "state"):
      return leaf
    old = saved_flat.get(key)
    name = "/".join(key)
    if old is None or old.shape != leaf.shape or old.dtype != leaf.dtype:
      skipped.append(f"{name} ({'absent' if old is None else f'saved {old.shape}, now {leaf.shape}'})")
      return leaf
    loaded.append(name)
    return jax.device_put(np.asarray(old), leaf.sharding)

  state = jax.tree_util.tree_map_with_path(pick, fresh)
  if not loaded:
    raise UserError(f"train.init_from={init_from!r}: no array of step {step} matches this model "
                    f"(e.g. {skipped[0] if skipped else 'no params'}); check --config.model.*")
  logging.info("warm start from %s step %d: loaded %d arrays, kept %d fresh%s", root, step, len(loaded),
               len(skipped), f" ({', '.join(skipped[:5])})" if skipped else "")
  return state
