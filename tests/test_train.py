"""The generic trainer: end to end, exact resume, one compilation, NaN handling, checkpoints."""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
import types

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from jaxgen import checkpoint, parallel, train
from jaxgen.errors import NonFiniteLossError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.mark.parametrize("name,data,metrics", [
    ("gan", "digits", ("fid", "is", "precision_recall")), ("gan", "toy2d/grid25", ("mode_coverage", "fid")),
    ("vae", "digits", ()), ("vae", "toy2d/ring8", ())])
def test_end_to_end(name, data, metrics, workdir):
  overrides = {"data.name": data, "eval.metrics": ("heldout", "samples", *metrics)}
  if name == "vae" and data.startswith("toy2d"):
    overrides.update({"model.decoder": "gaussian", "data.binarize": "none"})
  config = tiny_config(name, **overrides)
  ts = train.train_and_evaluate(config, workdir)

  assert int(ts.step) == 4
  assert _checkpoint_steps(workdir) == [2, 4]
  train_rows = [r for r in _metrics(workdir) if any(k.startswith("train/") for k in r)]
  assert [r["step"] for r in train_rows] == [2, 4]
  for row in train_rows:
    losses = {k: v for k, v in row.items() if k.endswith("/loss")}
    assert losses and all(math.isfinite(v) for v in losses.values()), row
  png = os.path.join(workdir, "samples", "step_4.png")
  assert Image.open(png).size[0] >= 64
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert results["num_eval_examples"] == 64  # eval.num_batches=2 x eval.batch_size=32
  # Each metric within the range its definition allows (10 classes: 1 <= IS <= 10).
  ranges = {"fid": [("fid", 0, math.inf)], "is": [("is_mean", 1, 10), ("is_std", 0, math.inf)],
            "precision_recall": [("precision", 0, 1), ("recall", 0, 1)],
            "mode_coverage": [("modes", 0, 25), ("high_quality", 0, 1), ("reverse_kl", 0, math.inf)]}
  for metric in metrics:
    for key, low, high in ranges[metric]:
      assert low <= results[key] <= high, (key, results)  # reverse_kl is inf when no sample is high quality
  if "mode_coverage" in metrics:
    assert results["modes"] == int(results["modes"])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["name"] == data
  # EMA params differ from the raw params after training (decay 0.999) and stay finite.
  for net in ts.params:
    chex.assert_tree_all_finite(ts.ema_params[net])
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ts.params[net]), jax.tree.leaves(ts.ema_params[net])))


def test_zero_periods_act_only_at_the_last_step(workdir):
  config = tiny_config("vae", **{"train.checkpoint_every": 0, "train.log_every": 0, "eval.samples.every": 0})
  train.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir) == [4]
  assert [r["step"] for r in _metrics(workdir) if any(k.startswith("train/") for k in r)] == [4]
  assert os.listdir(os.path.join(workdir, "samples")) == ["step_4.png"]
  # TensorBoard (the viewer the install brings) reads the same scalars as metrics.jsonl.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  rows = {(r["step"], k): v for r in _metrics(workdir) for k, v in r.items() if k != "step"}
  seen = {(e.step, tag): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
  assert seen.keys() == rows.keys() and len(rows) > 5
  for key, value in rows.items():
    assert seen[key] == pytest.approx(value, rel=1e-6, abs=1e-30) or (math.isnan(value) and math.isnan(seen[key])), key


def test_vae_eval_reports_elbo_and_iwae_in_nats_and_bits(workdir, monkeypatch):
  config = tiny_config("vae", **{"eval.iwae_samples": 8})
  train.train_and_evaluate(config, workdir)
  results = train.evaluate(config, workdir)
  # Bernoulli decoder on binarized 8x8 digits: discrete likelihood, bits/dim = nats / (64 ln 2); the
  # reported bound is the 8-sample IWAE bound, tighter than the ELBO = KL + reconstruction.
  assert results["bits_per_dim"] == pytest.approx(results["nll_bound_nats"] / (64 * math.log(2)), rel=1e-6)
  assert results["nll_bound_nats"] <= results["neg_elbo_nats"]
  assert results["neg_elbo_nats"] == pytest.approx(results["kl_nats"] + results["recon_nats"], rel=1e-6)
  assert results["kl_nats"] >= 0
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    assert json.load(f) == {"step": 4, **results}
  # --mode=sample / --mode=eval never build the update groups, where a two-stage family prepares
  # its training data (latent caches of the training split, reflow pairs drawn from the teacher).
  def training_only(self):
    raise AssertionError("update_groups built outside training")

  monkeypatch.setattr(type(train.setup(config, workdir, training=False).family), "update_groups", training_only)
  assert train.evaluate(config, workdir) == results
  with pytest.raises(AssertionError, match="outside training"):  # while training builds them
    train.setup(config, workdir)
  paths = train.sample(config, workdir)
  assert len(paths) == 1 and Image.open(paths[0]).size[0] >= 64
  assert os.path.basename(paths[0]) == "sample_step_4_seed_0.png"  # the run's own sample settings
  first = Image.open(paths[0]).tobytes()
  other_optimizer = tiny_config("vae", **{"eval.iwae_samples": 8, "optim.model.name": "sgd"})
  assert Image.open(train.sample(other_optimizer, workdir)[0]).tobytes() == first  # sampling makes no update
  older = checkpoint.plain(config)  # a checkpoint saved before optim.*.clip_params existed
  del older["optim"]["model"]["clip_params"]
  monkeypatch.setattr(checkpoint.Checkpointer, "saved_config", lambda self: older)
  assert Image.open(train.sample(other_optimizer, workdir)[0]).tobytes() == first
  config.sample.num = 4  # other settings on the same checkpoint: their own file, the first one kept
  other = train.sample(config, workdir)
  assert [os.path.basename(p) for p in other] == ["sample_step_4_seed_0_num=4.png"]
  assert Image.open(paths[0]).tobytes() == first and Image.open(other[0]).size != Image.open(paths[0]).size


def test_sample_names_spell_the_settings_that_differ_from_the_run():
  config = ml_collections.ConfigDict({"seed": 2, "sample": {"sampler": "ddim", "steps": 50, "guidance": [1, 2],
                                                            "path": "a/b c"}})
  saved = {"sample": {"sampler": "ddpm", "steps": 50, "guidance": [1]}}
  assert train.sample_name(config, saved, 7) == "sample_step_7_seed_2_guidance=1,2_path=a-bc_sampler=ddim"
  assert train.sample_name(config, {"sample": checkpoint.plain(config.sample)}, 7) == "sample_step_7_seed_2"
  assert train.sample_name(config, None, 7) == "sample_step_7_seed_2"  # a checkpoint saved without its config


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_resume_equals_uninterrupted(name, tmp_path):
  """2N steps in one go == N steps, stop, resume to 2N: params, EMA, optimizer state bit for bit."""
  full = train.train_and_evaluate(tiny_config(name, **{"train.steps": 6}), str(tmp_path / "full"))
  split_dir = str(tmp_path / "split")
  train.train_and_evaluate(tiny_config(name, **{"train.steps": 3, "train.checkpoint_every": 3}), split_dir)
  resumed = train.train_and_evaluate(tiny_config(name, **{"train.steps": 6}), split_dir)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))


def test_killed_run_resumes_to_identical_params(tmp_path):
  """A training process killed with SIGKILL mid-run and restarted ends exactly like an uninterrupted one."""
  steps = 40
  overrides = {"train.steps": steps, "train.checkpoint_every": 5}
  reference = train.train_and_evaluate(tiny_config("gan", **overrides), str(tmp_path / "ref"))

  workdir = str(tmp_path / "killed")
  args = [sys.executable, "-m", "jaxgen.main", "--config=configs/gan.py", f"--workdir={workdir}",
          "--config.train.batch_size=16", f"--config.train.steps={steps}", "--config.train.checkpoint_every=5",
          "--config.train.log_every=2", "--config.eval.samples.every=0", "--config.train.progress_bar=False",
          "--config.sample.num=16", "--config.eval.batch_size=32", "--config.eval.num_batches=2"]
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and not glob.glob(os.path.join(workdir, "checkpoints", "10")):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = _checkpoint_steps(workdir)
  assert saved and saved[-1] < steps, f"the run was not interrupted mid-way: {saved}"
  resumed = train.train_and_evaluate(tiny_config("gan", **overrides), workdir)
  chex.assert_trees_all_equal(jax.device_get(reference.params), jax.device_get(resumed.params))
  chex.assert_trees_all_equal(jax.device_get(reference.ema_params), jax.device_get(resumed.ema_params))


def test_train_step_compiles_once_per_run(workdir, monkeypatch):
  """A whole run -- checkpoints, periodic samples and evaluations, a resume -- traces the step once."""
  steps = []

  def guarded(exp):
    steps.append(make_train_step(exp, max_traces=1))
    return steps[-1]

  make_train_step = train.make_train_step
  monkeypatch.setattr(train, "make_train_step", guarded)
  chex.clear_trace_counter()
  config = tiny_config("gan", **{"train.steps": 6, "eval.metrics": ("heldout", "samples", "fid"),
                                 "eval.samples.every": 2, "eval.heldout.every": 3, "eval.fid.every": 3})
  train.train_and_evaluate(config, workdir)
  assert steps[-1]._cache_size() == 1
  # Each evaluator on its own period, all of them at the end.
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_2.png", "step_4.png", "step_6.png"]
  assert sorted(os.listdir(os.path.join(workdir, "eval"))) == ["step_3.json", "step_6.json"]
  chex.clear_trace_counter()
  train.train_and_evaluate(tiny_config("gan", **{"train.steps": 9}), workdir)  # resumed from step 6
  assert len(steps) == 2 and steps[-1]._cache_size() == 1
  # The guard is live: a batch of another shape would retrace, and chex refuses it.
  exp = train.setup(config, workdir)
  ts = train.restore_for_inference(exp)
  other = {k: v[:8] for k, v in exp.data.train_batch(0).items()}
  with pytest.raises(AssertionError, match="traced > 1 times"):
    steps[-1](ts, parallel.global_batch(other, exp.mesh))


# --- NaN handling ------------------------------------------------------------------------------------


@FAMILIES.register("test_sqrt_descent")
class SqrtDescent(Family):
  """loss = sqrt(w) under SGD: w shrinks each step until it goes negative and the loss is NaN."""

  def init(self, rng, batch):
    return {"model": {"w": jnp.ones(())}}, {}

  def loss(self, params, state, batch, rng):
    return jnp.sqrt(params["model"]["w"]) + 0.0 * jnp.mean(batch["x"]), ({}, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(workdir):
  lr = 0.3
  w, nan_step = 1.0, None  # numpy reference of the SGD trajectory: step k sees w_{k-1}
  for k in range(1, 100):
    if w < 0:
      nan_step = k
      break
    w -= lr / (2 * math.sqrt(w))
  assert nan_step is not None and nan_step > 3
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "train.steps": 50, "train.checkpoint_every": 2,
                                 "train.log_every": 1000})
  config.model.family = "test_sqrt_descent"
  config.optim.default.name = "sgd"
  config.optim.default.momentum = 0.0
  config.optim.default.learning_rate = lr
  with pytest.raises(NonFiniteLossError, match=f"step {nan_step}: model/loss=nan") as err:
    train.train_and_evaluate(config, workdir)
  last_good = (nan_step - 1) // 2 * 2
  assert f"checkpoint (step {last_good}) is kept" in str(err.value)
  assert _checkpoint_steps(workdir)[-1] == last_good
  exp = train.setup(config, workdir)
  restored = train.restore_for_inference(exp)
  assert int(restored.step) == last_good
  assert np.isfinite(float(restored.params["model"]["w"]))  # finite, though its next step is the NaN one


# Orbax abandons the read coroutines of a damaged step; Python reports them when they are collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupted_latest_checkpoint_falls_back_to_previous(workdir):
  config = tiny_config("vae")
  train.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir) == [2, 4]
  for path in glob.glob(os.path.join(workdir, "checkpoints", "4", "**", "*"), recursive=True):
    if os.path.isfile(path) and "/d/" in path:
      with open(path, "wb") as f:
        f.write(b"garbage")
  exp = train.setup(config, workdir)
  restored = train.restore_for_inference(exp)
  assert int(restored.step) == 2
  assert _checkpoint_steps(workdir) == [2, 4], "sample / eval modes never write to checkpoints/"
  # Training again resumes from step 2, moves the damaged step aside (not deleted) and re-creates step 4.
  ts = train.train_and_evaluate(config, workdir)
  assert int(ts.step) == 4 and _checkpoint_steps(workdir) == [2, 4]
  assert len(glob.glob(os.path.join(workdir, "checkpoints", "corrupted-4-*"))) == 1


def test_a_later_evaluation_of_a_step_merges_into_its_file(tmp_path):
  # --mode=eval with another metric adds its numbers and replaces the ones it recomputes; the
  # numbers of the metrics it did not run stay (they were saved); a file cut short is rewritten.
  exp = types.SimpleNamespace(workdir=str(tmp_path))
  path = tmp_path / "eval" / "step_7.json"
  train._write_eval(exp, 7, {"fid": 12.5, "kid_mean": 0.25}, None)
  train._write_eval(exp, 7, {"fid": 11.0, "precision": 0.5}, None)
  assert json.loads(path.read_text()) == {"step": 7, "fid": 11.0, "kid_mean": 0.25, "precision": 0.5}
  path.write_text('{"fid": 1')
  train._write_eval(exp, 7, {"is_mean": 2.0}, None)
  assert json.loads(path.read_text()) == {"step": 7, "is_mean": 2.0}

