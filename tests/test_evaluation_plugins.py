"""Evaluators as plug-ins: a toy evaluator and a toy data source registered from this file and run by
``--mode=train`` and ``--mode=eval``; periods; checks before training; the feature space; the
density plot; SPMD (every process computes, process 0 writes)."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from jaxgen import checkpoint as checkpoint_lib
from jaxgen import config_defaults, data, evaluation, outputs, train
from jaxgen.data.spec import DataSpec, RawData
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier, features
from jaxgen.families.base import FAMILIES, Family, UpdateGroup

# --- a data source and an evaluator, each one definition in this file (and a tiny family) -----------------


@data.register("test/segment", defaults={"segment_points": 512})
def load_segment(config) -> RawData:
  """Points near the segment from (-1, -0.5) to (1, 0.5); every other point is a test point."""
  rng = np.random.default_rng(config.seed)
  t = rng.uniform(-1, 1, (config.segment_points, 1))
  x = (t * np.array([1.0, 0.5]) + 0.05 * rng.standard_normal((config.segment_points, 2))).astype(np.float32)
  return RawData(train={"x": x[::2]}, test={"x": x[1::2]}, spec=DataSpec("test/segment", "points", (2,)))


@evaluation.register("test_mean_gap")
class MeanGap(evaluation.Evaluator):
  """Distance between the mean of the generated samples and the mean of as many test points."""

  calls: list = []  # (step, id(ctx), id(ctx.samples)) of every run

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0}

  def check(self, config, spec, family) -> None:
    if spec.modality != "points":
      raise UserError(f"test_mean_gap compares points, not {spec.modality}; remove it from config.eval.metrics")

  def run(self, ctx) -> dict[str, float]:
    MeanGap.calls.append((ctx.step, id(ctx), id(ctx.samples)))
    real = ctx.data.held_out(ctx.config.eval.num_samples)["x"]
    return {"mean_gap": float(np.linalg.norm(ctx.samples.mean(0) - real.mean(0)))}


@evaluation.register("test_at_end")
class AtEnd(evaluation.Evaluator):
  """Reports the step; default period 0: only at the end of training."""

  calls: list = []

  def run(self, ctx) -> dict[str, float]:
    AtEnd.calls.append((ctx.step, id(ctx), id(ctx.samples)))
    return {"at_end_step": float(ctx.step)}


MU = (0.5, -0.25)


@FAMILIES.register("test_gaussian2d")
class Gaussian2D(Family):
  """N(mu, I) on 2-D points with mu = MU at init: an exact NLL with a closed-form density."""

  def init(self, rng, batch):
    return {"model": {"mu": jnp.asarray(MU)}}, {}

  def nll(self, params, x):
    return 0.5 * jnp.sum((x - params["model"]["mu"]) ** 2, axis=-1) + math.log(2 * math.pi)

  def update_groups(self):
    return [UpdateGroup("model", lambda p, s, b, r: (jnp.mean(self.nll(p, b["x"])), ({}, s)))]

  def sample(self, params, state, rng, num):
    return params["model"]["mu"] + jax.random.normal(rng, (num, 2))

  def eval_metrics(self, params, state, batch, rng):
    return {"nll_nats": self.nll(params, batch["x"])}


@FAMILIES.register("test_gaussian2d_bound")
class Gaussian2DBound(Gaussian2D):
  """The same model reporting its NLL as a bound only: not a density to plot."""

  def eval_metrics(self, params, state, batch, rng):
    return {"nll_bound_nats": self.nll(params, batch["x"])}


@FAMILIES.register("test_gaussian2d_counted")
class Gaussian2DCounted(Gaussian2D):
  """The same model with bits/dim, counting how often ``eval_metrics`` is traced."""

  traces = 0

  def eval_metrics(self, params, state, batch, rng):
    Gaussian2DCounted.traces += 1
    nll = self.nll(params, batch["x"])
    return {"nll_nats": nll, "bits_per_dim": nll / (2 * math.log(2))}


def _json(workdir, step):
  with open(os.path.join(workdir, "eval", f"step_{step}.json")) as f:
    return json.load(f)


def test_toy_evaluator_and_source_in_train_and_eval_modes(workdir):
  MeanGap.calls.clear()
  AtEnd.calls.clear()
  config = tiny_config("gan", **{"data.name": "test/segment", "train.steps": 5, "train.checkpoint_every": 5,
                                 "eval.metrics": ("heldout", "test_mean_gap", "test_at_end"),
                                 "eval.test_mean_gap.every": 2})  # declared by the evaluator: a config field
  config.model.family = "test_gaussian2d"
  assert config.data.segment_points == 512  # declared by the source
  train.train_and_evaluate(config, workdir)

  # Each evaluator on its own period (every=2: steps 2 and 4; every=0: only at the end), all at the end.
  assert [c[0] for c in MeanGap.calls] == [2, 4, 5] and [c[0] for c in AtEnd.calls] == [5]
  assert sorted(_json(workdir, 2)) == sorted(_json(workdir, 4)) == ["mean_gap", "step"]
  final = _json(workdir, 5)
  assert final["at_end_step"] == 5 and final["num_eval_examples"] == 64 and "nll_nats" in final
  # Evaluators due at the same step share one context and one set of samples.
  assert MeanGap.calls[-1][1:] == AtEnd.calls[-1][1:]

  # The reported gap, recomputed from the documented sample stream: eval.num_samples samples from the
  # EMA params, eval.batch_size at a time, chunk i keyed fold_in(fold_in(fold_in(key(seed), 4), step), i).
  exp = train.setup(config, workdir)
  ts = train.restore_for_inference(exp)
  sample = jax.jit(lambda p, s, k: exp.family.sample(p, s, k, 32))
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 4), 5)
  fake = np.concatenate([np.asarray(sample(ts.ema_params, ts.state, jax.random.fold_in(key, i))) for i in range(2)])
  real = load_segment(ml_collections.ConfigDict({"seed": 0, "segment_points": 512})).test["x"][:64]
  np.testing.assert_allclose(final["mean_gap"], np.linalg.norm(fake.mean(0) - real.mean(0)), rtol=1e-5)

  # --mode=eval runs every configured evaluator once at the checkpoint's step: the same numbers.
  results = train.evaluate(config, workdir)
  assert results == {k: v for k, v in final.items() if k != "step"}
  assert [c[0] for c in AtEnd.calls] == [5, 5]


@pytest.mark.parametrize("data_name,metrics,overrides,message", [
    ("toy2d/ring8", ("heldout", "fdi"), {},
     r"unknown evaluator 'fdi' \(did you mean 'fid'\?\); available: (.+, )?density_coverage, density_plot, fid, heldout, (.+, )?is, kid, mode_coverage"),
    ("toy2d/moons", ("mode_coverage",), {}, "needs a Gaussian-mixture toy2d data set"),
    ("toy2d/ring8", ("is",), {}, "needs a classifier's logits"),
    ("digits", ("fid", "precision_recall"), {"eval.num_samples": 3}, "'precision_recall' needs eval.num_samples >= 4"),
    ("digits", ("is",), {"eval.num_samples": 19}, r"'is' needs eval.num_samples >= 2 \* eval.is.splits = 20 .*--config.eval.is.splits=9$"),  # 2 per split
    ("digits", ("is",), {"eval.is.splits": 0}, "eval.is.splits=0"),
    ("digits", ("density_plot",), {}, "draws 2-D points, not image"),
    ("toy2d/ring8", ("density_plot",), {}, "needs an exact likelihood"),  # found by jax.eval_shape
    ("digits", ("test_mean_gap",), {}, "test_mean_gap compares points"),
    ("digits", ("kid",), {"eval.features": "inception", "eval.inception_weights": "/no/such/weights.npz"},
     "not found"),
    ("digits", ("fid",), {"eval.features": "pixels"}, "eval.features='pixels' is not a feature space"),
])
def test_unknown_names_and_unmet_preconditions_fail_before_training(data_name, metrics, overrides, message, workdir):
  config = tiny_config("gan", **{"data.name": data_name, "eval.metrics": metrics, **overrides})
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # not a single step was taken


def test_evaluator_registered_after_the_config_gets_its_defaults_at_setup():
  config = config_defaults.base()
  assert "test_late" not in config.eval

  @evaluation.register("test_late")
  class Late(evaluation.Evaluator):
    @classmethod
    def defaults(cls) -> dict:
      return {"every": 7, "scale": 2.0}

  config.eval.metrics = ("test_late",)
  (late,) = evaluation.prepare(config, DataSpec("p", "points", (2,)), None, num_real=0)
  assert isinstance(late, Late) and late.every(config) == 7 and config.eval.test_late.scale == 2.0
  config_defaults.apply_overrides(config, ["eval.test_late.every=3"])  # now an ordinary config field
  assert late.every(config) == 3


def test_an_evaluator_without_a_period_or_named_like_a_shared_field_is_refused():
  class NoPeriod(evaluation.Evaluator):
    @classmethod
    def defaults(cls) -> dict:
      return {"scale": 2.0}

  with pytest.raises(ValueError, match="evaluator 'test_no_period': defaults\\(\\) declares no 'every'"):
    evaluation.register("test_no_period")(NoPeriod)
  assert "test_no_period" not in evaluation.EVALUATORS
  # Named like a shared field, its settings group would replace config.eval.features.
  with pytest.raises(ValueError, match="evaluator 'features' is named like the shared field eval.features"):
    evaluation.register("features")(MeanGap)
  assert config_defaults.base().eval.features == "auto"


@evaluation.register("test_returns")
class Returns(evaluation.Evaluator):
  """Reports ``Returns.out`` as it is."""

  out = None

  def run(self, ctx):
    return Returns.out


@pytest.mark.parametrize("out,expected", [
    ({"a": np.float32(1.5), "b": jnp.asarray(2.25), "c": 3, "d": np.float64("nan")}, {"a": 1.5, "b": 2.25, "c": 3.0}),
    ({"a": np.zeros((40, 10))}, r"reports 'a' = a ndarray of shape \(40, 10\) and dtype float64, "
                                 "not a real number"),  # one line, not the array's repr
    ({"a": "high"}, "reports 'a' = a str of shape"),
    ({"a": jnp.ones(1)}, "not a real number"), (None, "returned NoneType, not a dict"),
])
def test_evaluator_numbers_become_floats_and_anything_else_names_the_evaluator(out, expected):
  """numpy / JAX scalars are floats in eval/step_N.json (json cannot write them); arrays, strings or
  no dict are one TypeError naming the evaluator, before the step's files are written."""
  Returns.out = out
  ctx = type("Ctx", (), {})()
  if isinstance(expected, str):
    with pytest.raises(TypeError, match=f"evaluator 'test_returns' (.* )?{expected}"):
      evaluation.run([Returns()], ctx)
    return
  got = evaluation.run([Returns()], ctx)
  assert all(type(v) is float for v in got.values()) and math.isnan(got.pop("d"))
  assert got == expected and json.loads(json.dumps(got)) == expected


# --- the feature space -----------------------------------------------------------------------------


def _config(**overrides) -> ml_collections.ConfigDict:
  return config_defaults.apply_overrides(config_defaults.base(), overrides)


def test_auto_feature_space_follows_modality_and_shape_not_name():
  config = _config()
  other_8x8 = DataSpec("not_digits", "image", (8, 8, 1), levels=256, value_range=(0.0, 1.0))
  assert features.resolve(config, other_8x8) == "digits_classifier"
  assert features.resolve(config, DataSpec("digits", "image", (16, 16, 3), levels=256)) == "inception"
  assert features.resolve(config, DataSpec("toy", "points", (5,))) == "data"
  assert features.resolve(config, DataSpec("text", "text", (32,), levels=96)) == ""
  assert features.resolve(_config(**{"eval.features": "data"}), other_8x8) == "data"

  # An 8x8x1 array that is not the digits set is scored by the digits classifier (its input: [0, 1]).
  x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1)).astype(np.float32) / 255
  got = features.extract(config, other_8x8, x)
  want = digits_classifier.digits_features(x)
  assert got.features.shape == (20, digits_classifier.FEATURES) and got.logits.shape == (20, 10)
  np.testing.assert_allclose(got.features, want[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.logits, want[1], rtol=1e-5, atol=1e-6)


def test_feature_space_errors_and_unavailable_inception(caplog):
  rgb = DataSpec("rgb", "image", (4, 4, 3), levels=256)
  images = np.random.default_rng(1).uniform(-1, 1, (40, 4, 4, 3)).astype(np.float32)
  with caplog.at_level("WARNING"):  # Inception without weights: skipped with one warning, not an error
    assert evaluation.evaluate_samples(["fid", "kid"], images[:20], images[20:], rgb) == {}
  assert [r.levelname for r in caplog.records if "inception_weights" in r.getMessage()] == ["WARNING"]
  # In the data space the same arrays are scored on their flattened values, with the kid group's settings.
  got = evaluation.evaluate_samples(["kid"], images[:20], images[20:], rgb,
                                    {"eval.features": "data", "eval.kid.subsets": 10, "eval.kid.subset_size": 10})
  want = evaluation.kid(images[20:].reshape(20, -1), images[:20].reshape(20, -1), num_subsets=10, subset_size=10)
  assert (got["kid_mean"], got["kid_std"]) == want and want[1] > 0
  with pytest.raises(UserError, match="digits_classifier scores 8x8x1 images"):
    evaluation.evaluate_samples(["fid"], images, images, rgb, {"eval.features": "digits_classifier"})
  text = DataSpec("text", "text", (32,), levels=96)
  with pytest.raises(UserError, match="text data .* does not have"):
    evaluation.evaluate_samples(["precision_recall"], np.zeros((8, 32)), np.zeros((8, 32)), text)


# --- the density plot and SPMD -----------------------------------------------------------------------


def _experiment(workdir, family, metrics, **overrides):
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "eval.metrics": metrics, **overrides})
  config.model.family = family
  exp = train.setup(config, workdir)
  ckpt = checkpoint_lib.Checkpointer(workdir, 1)
  ts = train.init_or_restore(exp, ckpt)  # a fresh state: mu = MU
  ckpt.close()
  return exp, ts


def test_a_test_split_too_small_for_a_metric_stops_before_training(tmp_path, caplog):
  # The feature metrics compare eval.num_samples samples with the first as many test examples:
  # precision/recall (k = 3) needs 4 of them, FID 2 (none with reference statistics), IS none.
  spec = DataSpec("p", "points", (2,))
  config = _config(**{"eval.metrics": ("fid", "precision_recall"), "eval.num_samples": 64})
  with pytest.raises(UserError, match=r"'precision_recall' needs >= 4 real examples, and the test split of p has 3"):
    evaluation.prepare(config, spec, None, num_real=3)
  caplog.clear()
  assert len(evaluation.prepare(config, spec, None, num_real=4)) == 2
  assert "compare eval.num_samples=64 samples with the 4 examples of the test split of p" in caplog.text
  caplog.clear()
  evaluation.prepare(config, spec, None, num_real=64)
  assert "test split" not in caplog.text
  with pytest.raises(UserError, match=r"'fid' needs >= 2 real examples"):
    evaluation.prepare(_config(**{"eval.metrics": ("fid",)}), spec, None, num_real=1)
  images = DataSpec("rgb", "image", (4, 4, 3), levels=256)
  for metrics in (("is",), ("fid", "precision_recall")):  # no Inception weights: skipped, so not refused
    assert evaluation.prepare(_config(**{"eval.metrics": metrics, "eval.features": "inception"}),
                              images, None, num_real=1) == []
  # Through the trainer: refused before the first step, so no checkpoint is written.
  np.save(tmp_path / "points.npy", np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32))
  run = tiny_config("flow2d", **{"data.name": f"arrays:{tmp_path / 'points.npy'}", "data.test_fraction": 0.05,
                                 "eval.metrics": ("precision_recall",)})
  with pytest.raises(UserError, match="needs >= 4 real examples, and the test split of arrays:.* has [0-3]:"):
    train.train_and_evaluate(run, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(tmp_path / "run" / "checkpoints")


def test_density_plot_draws_the_closed_form_density(workdir, monkeypatch):
  drawn = []
  draw = outputs.write_density_plot
  monkeypatch.setattr(outputs, "write_density_plot", lambda *args, **kw: (drawn.append(args), draw(*args, **kw)))
  exp, ts = _experiment(workdir, "test_gaussian2d", ("density_plot",), **{"eval.density_plot.size": 20})
  assert train.run_evaluators(exp, ts, exp.evaluators, None) == {}
  (points, density, (x0, x1, y0, y1), path), = drawn
  assert path == os.path.join(workdir, "samples", "density_step_0.png") and Image.open(path).size[0] > 500
  assert x0 < points[:, 0].min() and points[:, 0].max() < x1 and y0 < points[:, 1].min() and points[:, 1].max() < y1
  xs = x0 + (np.arange(20) + 0.5) * (x1 - x0) / 20  # cell centres; rows are y, columns x
  ys = y0 + (np.arange(20) + 0.5) * (y1 - y0) / 20
  gx, gy = np.meshgrid(xs, ys)
  want = np.exp(-0.5 * ((gx - MU[0]) ** 2 + (gy - MU[1]) ** 2)) / (2 * np.pi)
  np.testing.assert_allclose(density, want, rtol=1e-5)


def test_density_plot_precondition_by_eval_shape(workdir):
  for family in ("flow2d", "test_gaussian2d"):  # exact nll_nats: accepted
    config = tiny_config("flow2d", **{"data.name": "toy2d/ring8", "eval.metrics": ("density_plot",)})
    config.model.family = family
    train.setup(config, workdir)
  with pytest.raises(UserError, match=r"exact likelihood .* reports \['nll_bound_nats'\]"):
    _experiment(workdir, "test_gaussian2d_bound", ("density_plot",))


def test_every_process_computes_and_only_process_0_writes(tmp_path, monkeypatch):
  """SPMD: on a process other than 0 the evaluators run the same jitted sampling, held-out and
  density-grid computations (and get the same numbers) but write nothing."""
  metrics = ("heldout", "samples", "density_plot", "test_mean_gap")
  exp0, ts0 = _experiment(str(tmp_path / "p0"), "test_gaussian2d", metrics, **{"eval.density_plot.size": 8})
  exp1, ts1 = _experiment(str(tmp_path / "p1"), "test_gaussian2d", metrics, **{"eval.density_plot.size": 8})
  on0 = train.run_evaluators(exp0, ts0, exp0.evaluators, None)
  monkeypatch.setattr(jax, "process_index", lambda *args: 1)
  on1 = train.run_evaluators(exp1, ts1, exp1.evaluators, None)
  assert on1 == on0 and "nll_nats" in on0 and "mean_gap" in on0
  assert sorted(exp1._built) == sorted(exp0._built) and "density_plot" in exp1._built  # same jitted functions
  assert sorted(os.listdir(tmp_path / "p0" / "samples")) == ["density_step_0.png", "step_0.png"]
  assert os.listdir(tmp_path / "p0" / "eval") == ["step_0.json"]
  assert not os.path.exists(tmp_path / "p1" / "samples") and not os.path.exists(tmp_path / "p1" / "eval")


def test_heldout_and_per_example_nll_share_one_pass_over_the_test_split(workdir):
  Gaussian2DCounted.traces = 0
  config = tiny_config("gan", **{"data.name": "test/segment", "train.steps": 2,
                                 "eval.metrics": ("heldout", "per_example_nll")})
  config.model.family = "test_gaussian2d_counted"
  train.train_and_evaluate(config, workdir)
  assert Gaussian2DCounted.traces == 1  # one jitted pass serves both evaluators
  final = _json(workdir, 2)
  record = np.load(os.path.join(workdir, "eval", "per_example_nll_step_2.npy"))
  assert len(record) == final["num_eval_examples"] == 64
  # Closed form under the trained mean: N(mu, I) in 2-D, and heldout's numbers are the file's means.
  mu = np.asarray(train.restore_for_inference(train.setup(config, workdir)).ema_params["model"]["mu"])
  x = load_segment(ml_collections.ConfigDict({"seed": 0, "segment_points": 512})).test["x"][:64]
  np.testing.assert_allclose(record["nll_nats"], 0.5 * np.sum((x - mu) ** 2, -1) + math.log(2 * math.pi), rtol=1e-5)
  np.testing.assert_allclose([record["nll_nats"].mean(), record["bits_per_dim"].mean()],
                             [final["nll_nats"], final["bits_per_dim"]], rtol=1e-12)
