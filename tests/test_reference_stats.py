"""FID reference statistics (``--mode=reference_stats``, ``eval.reference_stats``) and evaluation
sharded over devices: statistics equal numpy's, pytorch-fid files are accepted, mismatched files
refused before training, and 2 devices give the metrics of one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from jaxgen import data as data_lib
from jaxgen import evaluation, train
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier, reference_stats

DIGITS = {"data.name": "digits", "eval.features": "digits_classifier", "eval.batch_size": 64}


def _digits_features(x, spec) -> np.ndarray:
  """The classifier's features computed without the evaluation code (no mesh, no accumulator)."""
  return digits_classifier.digits_features(digits_classifier.to_classifier_input(x, spec))[0]


def test_image_folder_statistics_equal_numpy(tmp_path):
  """30 training PNGs (a test/ folder holds 10 more) in batches of 16: the padded last batch does
  not count, and mu / sigma equal numpy's mean and covariance of the classifier's features."""
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
  (tmp_path / "images" / "test").mkdir(parents=True)
  for i, image in enumerate(raw):
    Image.fromarray(image).save(tmp_path / "images" / ("test" if i >= 30 else "") / f"{i:02d}.png")
  config = tiny_config("gan", **{"data.name": f"images:{tmp_path / 'images'}", "data.channels": 1,
                                 "data.cache_dir": str(tmp_path / "cache"), "eval.features": "digits_classifier",
                                 "eval.batch_size": 16})
  path = reference_stats.compute(config, str(tmp_path / "run"))
  assert path == tmp_path / "run" / "reference_stats" / "train.npz"
  ref = reference_stats.load(str(path))
  want = digits_classifier.digits_features(raw[:30, :, :, None].astype(np.float32) / 255.0)[0]
  assert (ref.count, ref.network, ref.data_shape) == (30, "digits_classifier", (8, 8, 1))
  assert ref.mu.dtype == ref.sigma.dtype == np.float64
  np.testing.assert_allclose(ref.mu, want.mean(0), atol=1e-5)
  np.testing.assert_allclose(ref.sigma, np.cov(want, rowvar=False), atol=1e-5)


def test_pytorch_fid_file_gives_the_fid_of_the_recomputed_reference(tmp_path, caplog):
  pipe = data_lib.build(tiny_config("gan", **DIGITS))
  real = pipe.held_out(200)["x"]
  samples = np.clip(real[:100] + np.random.default_rng(1).normal(0, 0.3, real[:100].shape), -1, 1)
  feats = _digits_features(real, pipe.spec)
  np.savez(tmp_path / "fid_stats.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))  # as pytorch-fid
  want = evaluation.evaluate_samples(["fid"], samples, real, pipe.spec)
  got = evaluation.evaluate_samples(["fid"], samples, real, pipe.spec,
                                    {"eval.reference_stats": str(tmp_path / "fid_stats.npz")})
  assert want["fid"] > 1.0
  assert got["fid"] == pytest.approx(want["fid"], rel=1e-5)
  assert "could not be checked" in caplog.text


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory) -> dict[str, np.ndarray]:
  """The fields of a reference file of the digits test split in the classifier's space."""
  config = tiny_config("gan", **DIGITS, **{"eval.reference_stats_split": "test"})
  with np.load(reference_stats.compute(config, str(tmp_path_factory.mktemp("made")))) as npz:
    return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("file, overrides, words", [
    ({"feature_network": "digits_classifier", "data_shape": [16, 16, 1]}, {}, ["[16, 16, 1]", "[8, 8, 1]"]),
    ({}, {"eval.features": "data"}, ["digits_classifier features", "data features of [8, 8, 1]"]),
    ({"feature_weights_sha256": "0" * 64}, {}, ["sha256 000000000000", "digits_classifier"]),
    ({"mu": np.zeros(64), "sigma": np.eye(64)}, {}, ["64-d", "(128-d)"]),
    ({"feature_network": "data", "feature_weights_sha256": "", "data_value_range": [0.0, 1.0]},
     {"eval.features": "data"}, ["scaled to [0.0, 1.0]", "are scaled to [-1.0, 1.0] (data.scale)"]),
])
def test_mismatched_file_is_refused_before_training(tmp_path, digits_reference, file, overrides, words):
  fields = dict(digits_reference)
  if "mu" in file:  # a pytorch-fid file of another network
    fields = {}
  fields.update(file)
  np.savez(tmp_path / "other.npz", **fields)
  config = tiny_config("gan", **{**DIGITS, "eval.metrics": ("fid",), "eval.reference_stats": str(tmp_path / "other.npz"),
                                 **overrides})
  with pytest.raises(UserError) as e:
    train.setup(config, str(tmp_path / "run"))
  message = str(e.value)
  assert "\n" not in message and "--mode=reference_stats" in message
  for word in words:
    assert word in message


def test_a_file_of_other_data_is_used_with_a_warning(tmp_path, digits_reference, caplog):
  np.savez(tmp_path / "other.npz", **{**digits_reference, "data_name": "images:/elsewhere", "data_levels": 256})
  config = tiny_config("gan", **{**DIGITS, "eval.metrics": ("fid",), "eval.reference_stats": str(tmp_path / "other.npz")})
  spec = data_lib.build(config).spec
  assert reference_stats.check(config, spec).data_levels == 256
  assert ("was made from other data, data set 'images:/elsewhere' (this run: 'digits'), levels 256 (this run: "
          f"{spec.levels})") in caplog.text
  caplog.clear()
  np.savez(tmp_path / "same.npz", **digits_reference)
  config.eval.reference_stats = str(tmp_path / "same.npz")
  reference_stats.check(config, spec)
  assert "other data" not in caplog.text and "predates" not in caplog.text
  assert not bool(digits_reference["data_dequantized"])
  # A file written before the dequantized 8-bit conversion changed, on dequantized data: remake it.
  np.savez(tmp_path / "old.npz", **{k: v for k, v in digits_reference.items() if k != "data_dequantized"})
  config.eval.reference_stats, config.data.dequantize = str(tmp_path / "old.npz"), True
  reference_stats.check(config, data_lib.build(config).spec)
  assert "predates the 8-bit conversion of dequantized images" in caplog.text


def test_unreadable_file_and_unwritable_output_are_one_line(tmp_path, digits_reference):
  assert list(digits_reference["data_value_range"]) == [-1.0, 1.0]  # recorded by --mode=reference_stats
  good = tmp_path / "good.npz"
  np.savez(good, **digits_reference)
  (tmp_path / "empty.npz").write_bytes(b"")
  (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:200])
  for name, kind in (("empty.npz", "EOFError"), ("cut.npz", "BadZipFile")):
    with pytest.raises(UserError, match=f"{name} is not a readable .npz file \\({kind}\\)"):
      reference_stats.load(str(tmp_path / name))
  (tmp_path / "a_file").write_text("")
  config = tiny_config("gan", **DIGITS, **{"eval.reference_stats_out": str(tmp_path / "a_file" / "x.npz")})
  with pytest.raises(UserError, match="cannot write the reference statistics to .*a_file .*reference_stats_out"):
    reference_stats.compute(config, str(tmp_path / "run"))


TWO_DEVICES = """
import json, sys, jax
jax.config.update("jax_num_cpu_devices", 2)
sys.path.insert(0, "tests")
from test_reference_stats import eval_metrics

assert jax.device_count() == 2
print(json.dumps(eval_metrics(sys.argv[1])))
"""


def eval_metrics(workdir: str) -> dict[str, float]:
  """FID and KID of a fresh MLP GAN on ring8 points (features held), and FID alone (streamed)."""
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "eval.metrics": ("fid", "kid"), "eval.batch_size": 32,
                                 "eval.num_samples": 96, "model.hidden": (16,)})
  exp = train.setup(config, workdir)
  params, state = jax.jit(exp.family.init)(exp.stream(train.INIT_STREAM), exp.data.train_batch(0))
  ts = types.SimpleNamespace(**jax.device_put({"step": np.int32(0), "ema_params": params, "state": state}, exp.replicated))
  held = evaluation.run(exp.evaluators, evaluation.EvalContext(exp, ts))
  ctx = evaluation.EvalContext(exp, ts)
  streamed = evaluation.run([e for e in exp.evaluators if e.name == "fid"], ctx)
  assert ctx.stream_stats and not {"samples", "fake_features"} & set(vars(ctx))  # nothing [N, ...] kept
  return {**held, "streamed_fid": streamed["fid"]}


def test_two_devices_match_one_device(tmp_path):
  """Sampling and features split over 2 CPU devices give the metrics of one; the CLI's
  --mode=reference_stats (on 2 devices) writes the statistics of one device and touches no checkpoint."""
  env = {**os.environ, "PYTHONPATH": ROOT}
  two = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(tmp_path / "two")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert two.returncode == 0, two.stderr[-3000:]
  one = eval_metrics(str(tmp_path / "one"))
  assert json.loads(two.stdout.strip().splitlines()[-1]) == pytest.approx(one, rel=1e-5)
  assert one["streamed_fid"] == pytest.approx(one["fid"], rel=1e-6)  # float32 products, summed in another order

  workdir = tmp_path / "run"
  saved = workdir / "checkpoints" / "4"
  saved.mkdir(parents=True)
  (saved / "state").write_bytes(b"weights")
  before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (workdir / "checkpoints").rglob("*") if p.is_file()}
  args = [f"--config.{k}={v}" for k, v in DIGITS.items()] + ["--config.eval.reference_stats_split=test"]
  cli = subprocess.run([sys.executable, "-m", "jaxgen.main", "--config=configs/gan.py", f"--workdir={workdir}",
                        "--mode=reference_stats", "--cpu_devices=2", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert cli.returncode == 0, cli.stderr[-3000:]
  assert f"wrote {workdir / 'reference_stats' / 'test.npz'}" in cli.stdout
  after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (workdir / "checkpoints").rglob("*") if p.is_file()}
  assert after == before
  written = reference_stats.load(str(workdir / "reference_stats" / "test.npz"))
  config = tiny_config("gan", **DIGITS, **{"eval.reference_stats_split": "test"})
  pipe = data_lib.build(config)
  feats = _digits_features(pipe.held_out(pipe.num_test)["x"], pipe.spec)
  assert written.count == pipe.num_test
  np.testing.assert_allclose(written.mu, feats.mean(0), atol=1e-5)
  np.testing.assert_allclose(written.sigma, np.cov(feats, rowvar=False), atol=1e-5)
