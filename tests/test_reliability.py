"""Pieces of issue 10 the trainer calls: finite checks of an update, the schedule horizon, the stop
signal, and config validation (units; the command-line behaviour is in test_bad_inputs.py)."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal
import time

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import ROOT, tiny_config
from jaxgen import checkpoint as checkpoint_lib
from jaxgen import config_defaults, optim, preemption, state, train, validate
from jaxgen.errors import NonFiniteLossError, Preempted, UserError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.metric_writer import MetricWriter

# --- finite checks -----------------------------------------------------------------------------------


def _update(tx, params, grads):
  """One optax update as the compiled step does it, returning the four flags."""

  @jax.jit
  def step(params, grads):
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    return state.finite_flags(jnp.sum(grads["w"]), grads, opt_state, new), new

  return step(params, grads)


def test_finite_flags_name_what_went_non_finite():
  params = {"w": jnp.ones(3)}
  # Finite everywhere.
  flags, _ = _update(optax.sgd(0.1), params, {"w": jnp.ones(3)})
  np.testing.assert_array_equal(flags, [True, True, True, True])
  # An inf gradient: loss (its sum here) and gradient non-finite.
  flags, _ = _update(optax.sgd(0.1), params, {"w": jnp.array([1.0, jnp.inf, 1.0])})
  np.testing.assert_array_equal(flags[:2], [False, False])
  # Adam's second moment overflows (1e20^2 > float32 max) while the step itself stays finite:
  # m / (sqrt(inf) + eps) = 0. Only the optimizer state shows it.
  flags, new = _update(optax.adam(1e-3), params, {"w": jnp.full(3, 1e20)})
  np.testing.assert_array_equal(flags, [True, True, False, True])
  assert np.all(np.isfinite(new["w"]))
  # A finite but huge step: params overflow, everything before them is finite.
  flags, _ = _update(optax.sgd(-1e38), params, {"w": jnp.full(3, 1e1)})
  np.testing.assert_array_equal(flags, [True, True, True, False])


def test_all_finite_ignores_integer_leaves():
  assert bool(state.all_finite({"count": jnp.array(3, jnp.int32), "x": jnp.zeros(2)}))
  assert not bool(state.all_finite({"count": jnp.array(3, jnp.int32), "x": jnp.array([0.0, jnp.nan])}))
  assert bool(state.all_finite({}))


def test_check_finite_message_names_step_term_and_checkpoint():
  ok = np.array([True] * 4)
  state.check_finite(7, {"disc": ok, "gen": ok}, {}, 6)  # nothing raised
  with pytest.raises(NonFiniteLossError) as err:
    state.check_finite(12, {"disc": np.array([True, False, False, False]), "gen": ok},
                       {"disc/loss": 0.69, "disc/grad_norm": math.inf, "gen/loss": 1.0}, 10)
  message = str(err.value)
  assert message.startswith("non-finite gradient at step 12: disc/loss=0.69, disc/grad_norm=inf")
  assert "the last good checkpoint (step 10) is kept" in message and "\n" not in message
  with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3: model/loss=nan.*no checkpoint was written"):
    state.check_finite(3, {"model": np.array([False] * 4)}, {"model/loss": math.nan}, None)


# --- the schedule horizon ----------------------------------------------------------------------------


def _cosine(lr, alpha, horizon, k):
  """optax.cosine_decay_schedule in closed form."""
  k = min(k, horizon)
  return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * k / horizon)) + alpha)


def test_extending_a_run_keeps_its_cosine_schedule():
  def config(steps):
    c = ml_collections.ConfigDict({"train": {"steps": steps},
                                   "optim": {"model": config_defaults.optimizer(schedule="cosine", learning_rate=0.1,
                                                                                end_learning_rate=0.01)}})
    return c

  first = config(100)
  optim.resolve_decay_steps(first, None)  # a fresh run: the horizon is its train.steps
  assert first.optim.model.decay_steps == 100
  saved = first.to_dict()
  extended = config(150)
  optim.resolve_decay_steps(extended, saved)  # resumed with more steps: the first run's horizon
  assert extended.optim.model.decay_steps == 100
  lr = optim.schedule(extended.optim.model, optim.horizon(extended.optim.model, extended))
  for k in (0, 37, 99, 100, 149):
    assert float(lr(k)) == pytest.approx(_cosine(0.1, 0.1, 100, k), rel=1e-6)
  # An explicit horizon wins over both.
  explicit = config(150)
  explicit.optim.model.decay_steps = 120
  optim.resolve_decay_steps(explicit, saved)
  assert explicit.optim.model.decay_steps == 120



def test_a_repeated_update_group_reads_its_schedule_in_training_steps():
  """A WGAN critic updated n_critic=5 times per step: its learning rate at training step k is the
  cosine schedule at k (not at 5k, which would end the decay after a fifth of the run)."""
  cfg = config_defaults.optimizer(name="sgd", momentum=0.0, schedule="cosine", learning_rate=0.1,
                                  end_learning_rate=0.0)
  params = {"w": np.zeros(())}
  tx = optim.optimizer(cfg, 100, repeats=5)
  opt_state = tx.init(params)
  for k in range(30):
    for _ in range(5):
      updates, opt_state = tx.update({"w": np.ones(())}, opt_state, params)
      assert float(updates["w"]) == pytest.approx(-_cosine(0.1, 0.0, 100, k), rel=1e-6, abs=1e-12)

# --- stop signal -------------------------------------------------------------------------------------


def test_sigterm_sets_the_flag_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopSignal() as stop:
    assert not stop.should_stop(0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.should_stop(1) and stop.received == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_at_once():
  with preemption.StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.received == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


def test_any_process_is_the_flag_on_one_process():
  assert int(np.asarray(preemption.any_process(True).addressable_data(0))) == 1
  assert int(np.asarray(preemption.any_process(False).addressable_data(0))) == 0


# --- validation --------------------------------------------------------------------------------------


def test_every_shipped_config_validates():
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    validate.validate(config_defaults.load(path))


@pytest.mark.parametrize("overrides,fragment", [
    ({"train.steps": 0}, "train.steps=0 must be >= 1"),
    ({"train.ema_decay": 1.0}, "train.ema_decay=1.0 must be in [0, 1)"),
    ({"optim.gen.learning_rate": 0.0}, "optim.gen.learning_rate=0.0 must be > 0 (it trains gen)"),
    ({"optim.default.learning_rate": -1.0}, "optim.default.learning_rate=-1.0 must be >= 0"),
    ({"eval.metrics": ("fid", "nope")}, "eval.metrics names unknown evaluator 'nope'"),
    ({"eval.fid.every": -1}, "eval.fid.every=-1 must be >= 0"),
    ({"train.log_every": -5}, "train.log_every=-5 must be >= 0"),
])
def test_validation_names_the_field(overrides, fragment):
  with pytest.raises(UserError) as err:
    validate.validate(config_defaults.load(os.path.join(ROOT, "configs", "gan.py"), overrides))
  assert fragment in str(err.value)


def test_a_missing_init_from_is_refused_only_for_a_run_without_checkpoints(tmp_path):
  """A warm-started run resumes from its own checkpoints once it has them, even when the run it
  started from was moved or deleted (a preempted job is requeued with the same command)."""
  config = config_defaults.load(os.path.join(ROOT, "configs", "vae.py"), [f"train.init_from={tmp_path}/gone"])
  os.makedirs(tmp_path / "run" / "checkpoints" / "4.orbax-checkpoint-tmp-1")  # a save killed: not a step
  with pytest.raises(UserError, match="train.init_from=.*gone' does not exist"):
    validate.validate(config, str(tmp_path / "run"))
  os.makedirs(tmp_path / "run" / "checkpoints" / "2")
  validate.validate(config, str(tmp_path / "run"))


# --- end to end, through the trainer (phase 2 wires these pieces into jaxgen/train.py) ------------------



@FAMILIES.register("test_sqrt_at_zero")
class SqrtAtZero(Family):
  """loss = sqrt(w) at w = 0: the loss is finite (0) but its gradient 1 / (2 sqrt(w)) is inf."""

  def init(self, rng, batch):
    return {"model": {"w": jnp.zeros(())}}, {}

  def loss(self, params, state, batch, rng):
    return jnp.sqrt(params["model"]["w"]) + 0.0 * jnp.mean(batch["x"]), ({}, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


@FAMILIES.register("test_huge_gradient")
class HugeGradient(Family):
  """loss = 1e20 w: finite loss and gradient, but Adam's second moment g^2 = 1e40 overflows float32."""

  def init(self, rng, batch):
    return {"model": {"w": jnp.ones(())}}, {}

  def loss(self, params, state, batch, rng):
    return 1e20 * params["model"]["w"] + 0.0 * jnp.mean(batch["x"]), ({}, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


def _toy_config(family, workdir_steps=6, **overrides):
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "train.steps": workdir_steps,
                                 "train.checkpoint_every": 1, "eval.metrics": (), **overrides})
  config.model.family = family
  return config


@pytest.mark.parametrize("family,optimizer,learning_rate,expected", [
    ("test_sqrt_at_zero", "sgd", 1e-3, "non-finite gradient at step 1: model/loss=0, model/grad_norm=inf"),
    ("test_huge_gradient", "adam", 1e-3, "non-finite optimizer state at step 1: model/loss=1e+20"),
    # Finite loss 1e20 and gradient 1e20, but the SGD step 1e20 * 1e20 overflows: only the params show it
    # (the quoted grad_norm, sqrt(g^2), overflows too: it is a metric, not one of the checked terms).
    ("test_huge_gradient", "sgd", 1e20, "non-finite params at step 1: model/loss=1e+20"),
])
def test_non_finite_updates_are_caught_before_anything_is_saved(workdir, family, optimizer, learning_rate, expected):
  config = _toy_config(family)
  config.optim.default.name = optimizer
  config.optim.default.learning_rate = learning_rate
  config.optim.default.momentum = 0.0
  with pytest.raises(NonFiniteLossError) as err:
    train.train_and_evaluate(config, workdir)
  assert expected in str(err.value) and "no checkpoint was written" in str(err.value)
  steps = os.listdir(os.path.join(workdir, "checkpoints")) if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
  assert [s for s in steps if s.isdigit()] == []


def test_a_non_finite_state_is_never_evaluated(workdir):
  """An evaluation due at the step that went non-finite, which is not logged or saved, does not run
  either: no samples drawn from NaN params, no eval numbers of them."""
  config = _toy_config("test_huge_gradient", **{"eval.metrics": ("samples",), "eval.samples.every": 1,
                                                "train.log_every": 0, "train.checkpoint_every": 0})
  config.optim.default.name, config.optim.default.learning_rate = "sgd", 1e20
  with pytest.raises(NonFiniteLossError, match="non-finite params at step 1"):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "samples"))


def test_extending_a_cosine_run_equals_the_longer_uninterrupted_run(tmp_path):
  """6 steps with a cosine schedule, then raised to 9: the same as 9 steps with decay_steps=6."""
  cosine = {"optim.gen.schedule": "cosine", "optim.disc.schedule": "cosine", "train.checkpoint_every": 3}
  split = str(tmp_path / "split")
  train.train_and_evaluate(tiny_config("gan", **{**cosine, "train.steps": 6, "eval.metrics": ()}), split)
  extended = train.train_and_evaluate(tiny_config("gan", **{**cosine, "train.steps": 9, "eval.metrics": ()}), split)
  longer = tiny_config("gan", **{**cosine, "train.steps": 9, "eval.metrics": ()})
  longer.optim.gen.decay_steps = 6
  longer.optim.disc.decay_steps = 6
  uninterrupted = train.train_and_evaluate(longer, str(tmp_path / "longer"))
  chex.assert_trees_all_equal(jax.device_get(extended), jax.device_get(uninterrupted))
  # Lowered below the trained step: one line, and the saved config and checkpoints stay as they were.
  saved = (tmp_path / "split" / "config.json").read_text()
  steps = sorted(os.listdir(tmp_path / "split" / "checkpoints"))
  with pytest.raises(UserError, match="holds a checkpoint of step 9, past train.steps=6: train it further"):
    train.train_and_evaluate(tiny_config("gan", **{**cosine, "train.steps": 6, "eval.metrics": ()}), split)
  assert (tmp_path / "split" / "config.json").read_text() == saved
  assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == steps


# --- warm start, finishing work, metrics after a resume ---------------------------------------------------


def _arrays(ts):
  """``{path: array}`` of the params, EMA params and collections of a ``TrainState``."""
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get({"params": ts.params, "ema_params": ts.ema_params,
                                                              "state": ts.state}))[0]
  return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def test_warm_start_loads_the_matching_params_into_a_fresh_run(tmp_path):
  """A VAE with another latent size, initialised from a trained one: every array whose path and shape
  match is the trained value, every other one the fresh init; step 0 and a fresh optimizer state."""
  trained = train.train_and_evaluate(tiny_config("vae", **{"eval.metrics": ()}), str(tmp_path / "trained"))
  other = {"eval.metrics": (), "model.latent_dim": 8}

  def initial(workdir, **overrides):
    config = tiny_config("vae", **other, **overrides)
    exp = train.setup(config, workdir)
    ckpt = checkpoint_lib.Checkpointer(workdir, 1, config)
    try:
      return train.init_or_restore(exp, ckpt)
    finally:
      ckpt.close()

  warm = initial(str(tmp_path / "warm"), **{"train.init_from": str(tmp_path / "trained")})
  fresh = initial(str(tmp_path / "fresh"))
  saved, warm_arrays, fresh_arrays = _arrays(trained), _arrays(warm), _arrays(fresh)
  loaded = [k for k, v in warm_arrays.items() if k in saved and saved[k].shape == v.shape]
  kept = [k for k in warm_arrays if k not in loaded]
  assert loaded and kept  # the hidden layers match, the latent-sized ones do not
  for k in loaded:
    np.testing.assert_array_equal(warm_arrays[k], saved[k], err_msg=k)
  for k in kept:
    np.testing.assert_array_equal(warm_arrays[k], fresh_arrays[k], err_msg=k)
  assert int(warm.step) == 0
  chex.assert_trees_all_equal(jax.device_get(warm.opt_state), jax.device_get(fresh.opt_state))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_a_kill_during_the_final_evaluation_is_repaired_on_restart(workdir, monkeypatch):
  config = tiny_config("vae", **{"eval.metrics": ("heldout",)})
  run_evaluators = train.run_evaluators

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # stands in for a kill while the final evaluation runs

  monkeypatch.setattr(train, "run_evaluators", killed)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert not os.path.exists(os.path.join(workdir, "eval", "step_4.json"))
  monkeypatch.setattr(train, "run_evaluators", run_evaluators)
  before = _rows(workdir)
  train.train_and_evaluate(config, workdir)  # trained already: only the evaluation runs
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    repaired = json.load(f)
  assert _rows(workdir) == before + [{"step": 4, **{f"eval/{k}": v for k, v in repaired.items() if k != "step"}}]
  assert repaired == {"step": 4, **train.evaluate(config, workdir)}  # the numbers of the step-4 state


def test_a_stop_at_an_evaluation_step_evaluates_that_step_on_resume(tmp_path, monkeypatch):
  """Stopped right after the checkpoint of a step where an evaluator was due (its evaluation never
  ran), the resumed run evaluates that step first: the files of an uninterrupted run."""
  config = tiny_config("vae", **{"train.checkpoint_every": 0, "eval.metrics": ("heldout",), "eval.heldout.every": 2})
  run, reference = str(tmp_path / "run"), str(tmp_path / "reference")
  with monkeypatch.context() as m:
    m.setattr(preemption.StopSignal, "should_stop", lambda self, step: step == 2)
    with pytest.raises(Preempted):
      train.train_and_evaluate(config, run)
  assert os.listdir(os.path.join(run, "checkpoints")) == ["2"] and not os.path.exists(os.path.join(run, "eval"))
  train.train_and_evaluate(config, run)
  train.train_and_evaluate(config, reference)
  for step in (2, 4):
    with open(os.path.join(run, "eval", f"step_{step}.json")) as f, \
         open(os.path.join(reference, "eval", f"step_{step}.json")) as g:
      assert json.load(f) == json.load(g)
  assert [r for r in _rows(run) if "eval/nll_bound_nats" in r] == [r for r in _rows(reference) if "eval/nll_bound_nats" in r]


def test_writers_opened_within_one_second_keep_each_others_tensorboard_events(workdir, monkeypatch):
  """tensorboardX names event files by the second and opens them with "wb": without a suffix the
  second writer (a resume within the same second) truncated the first one's events. Its file must
  also sort after the first (TensorBoard reads them in name order, and purges by that order)."""
  os.makedirs(workdir)
  events = os.path.join(workdir, "tensorboard")

  def opened_at_one_second(**kwargs):  # the event file is named when the writer opens
    with monkeypatch.context() as m:
      m.setattr(time, "time", lambda: 1700000000.5)
      return MetricWriter(workdir, **kwargs)

  first = opened_at_one_second()
  first.write(1, {"a": 1.0})
  first.write(2, {"a": 2.0})
  first.close()
  (name,) = os.listdir(events)
  size = os.path.getsize(os.path.join(events, name))
  second = opened_at_one_second(resume_step=1)  # step 2 is repeated
  second.write(2, {"a": 4.0})
  second.close()
  names = sorted(os.listdir(events))
  assert len(names) == 2 and names[0] == name and os.path.getsize(os.path.join(events, name)) == size
  assert _rows(workdir) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 4.0}]


def test_a_damaged_metrics_file_keeps_its_whole_rows(tmp_path):
  """Bytes that are not UTF-8 (a damaged disk block) in metrics.jsonl: the resume keeps the whole rows
  up to its step and drops the rest, instead of failing to read the file."""
  (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "a": 1.0}\n\xff\xfe\x00garbage\n{"step": 2, "a": 2.0}\n'
                                           b'{"step": 3, "a": 3.0}\n{"step": 4, "a"')
  writer = MetricWriter(str(tmp_path), resume_step=2)
  writer.write(3, {"a": 4.0})
  writer.close()
  assert _rows(str(tmp_path)) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}, {"step": 3, "a": 4.0}]


def test_metrics_have_one_row_per_step_after_a_resume(workdir):
  """A run that logged steps 4..6 past its last checkpoint (3) and half a row before it died: the
  restart drops those rows and writes them again, with the same values (the resumed steps repeat the
  lost ones). One killed while evaluating step 3, just saved: the restart evaluates step 3 first and
  drops the row that evaluation had written."""
  config = tiny_config("vae", **{"train.steps": 6, "train.checkpoint_every": 3, "train.log_every": 1,
                                 "eval.metrics": ("heldout",), "eval.heldout.every": 3})
  train.train_and_evaluate(config, workdir)
  first = _rows(workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # as if killed before step 6 was saved,
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:  # while writing a row of step 7
    f.write('{"step": 7, "train/mod')
  train.train_and_evaluate(config, workdir)
  rows = _rows(workdir)
  assert [r["step"] for r in rows if "train/model/loss" in r] == [1, 2, 3, 4, 5, 6]
  assert [r["step"] for r in rows if "eval/num_eval_examples" in r] == [3, 6]
  drop = lambda r: {k: v for k, v in r.items() if k != "train/steps_per_second"}  # noqa: E731
  assert [drop(r) for r in rows] == [drop(r) for r in first]
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

  def tensorboard_matches_metrics():  # reading every run's event files: one value per step and tag
    events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
    events.Reload()
    seen = [(tag, e.step, e.value) for tag in events.Tags()["scalars"] for e in events.Scalars(tag)]
    want = [(k, r["step"], v) for r in _rows(workdir) for k, v in r.items() if k != "step"]
    assert sorted((t, s) for t, s, _ in seen) == sorted((t, s) for t, s, _ in want)
    np.testing.assert_allclose([v for *_, v in sorted(seen)], [v for *_, v in sorted(want)], rtol=1e-6)

  tensorboard_matches_metrics()  # the interrupted run's steps 4..6 are purged
  with open(os.path.join(workdir, "eval", "step_3.json")) as f:
    evaluated = f.read()
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # killed while evaluating step 3, just saved:
  os.remove(os.path.join(workdir, "eval", "step_3.json"))  # its eval row written, not yet its eval file
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows[:4])  # the train rows of steps 1..3, the eval row of 3
  train.train_and_evaluate(config, workdir)
  assert [drop(r) for r in _rows(workdir)] == [drop(r) for r in first]
  with open(os.path.join(workdir, "eval", "step_3.json")) as f:
    assert f.read() == evaluated
  tensorboard_matches_metrics()  # step 3's first evaluation is purged, its train events kept
