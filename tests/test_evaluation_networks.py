"""Tests of the feature networks (FID Inception-v3 against pytorch-fid, digits classifier), the
torch-free .pth reader, and the sample metrics on arrays (``evaluate_samples``)."""

from __future__ import annotations

import collections
import functools
import io
import json
import logging
import os
import pickle
import runpy
import struct
import sys
import types
import zipfile

import chex
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgen import evaluation as ev
from jaxgen import outputs
from jaxgen.data import digits, toy2d
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier, features, inception, inception_weights
from jaxgen.evaluation.torch_weights import load_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# numpy-only recipes shared with the script that made tests/data/ with torch and pytorch-fid
VERIFY = runpy.run_path(os.path.join(ROOT, "experiments", "verify_inception_port.py"))

# --- writing .pth files the way torch.save does, without torch --------------------------------


class _Storage:
  def __init__(self, array: np.ndarray, key: str):
    self.array, self.key = array.reshape(-1), key


class _FakeTensor:
  """Pickles as torch's Tensor.__reduce_ex__: ``_rebuild_tensor_v2(storage, 0, size, stride, ...)``."""

  def __init__(self, array: np.ndarray, key: str, rebuild):
    self.storage = _Storage(array, key)
    self.size = array.shape
    self.stride = tuple(s // array.itemsize for s in np.array(array, order="C").strides)
    self.rebuild = rebuild

  def __reduce__(self):
    return self.rebuild, (self.storage, 0, self.size, self.stride, False,
                          collections.OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch):
  """Importable ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` stand-ins so that
  pickle writes the same GLOBAL opcodes as torch; removed again after the test."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called")

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  storage_types = {}
  for name, dtype in (("FloatStorage", np.float32), ("LongStorage", np.int64)):
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
    storage_types[np.dtype(dtype)] = cls
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, storage_types=storage_types)


def _pickler(file, fake_torch, legacy: bool) -> pickle.Pickler:
  pickler = pickle.Pickler(file, protocol=2)

  def persistent_id(obj):
    if isinstance(obj, _Storage):
      pid = ("storage", fake_torch.storage_types[obj.array.dtype], obj.key, "cpu", obj.array.size)
      return pid + (None,) if legacy else pid
    return None

  pickler.persistent_id = persistent_id
  return pickler


def _tensors(state: dict, fake_torch) -> tuple[collections.OrderedDict, list]:
  tensors = collections.OrderedDict(
      (name, _FakeTensor(value, str(i), fake_torch.rebuild)) for i, (name, value)
      in enumerate(state.items()))
  return tensors, [t.storage for t in tensors.values()]


def write_zip_pth(path, state: dict, fake_torch) -> None:
  """torch >= 1.6 layout: archive/data.pkl, archive/data/<key>, archive/version."""
  tensors, storages = _tensors(state, fake_torch)
  buffer = io.BytesIO()
  _pickler(buffer, fake_torch, legacy=False).dump(tensors)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/byteorder", "little")
    for s in storages:
      archive.writestr(f"archive/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<"))
                       .tobytes())
    archive.writestr("archive/version", "3\n")


def write_legacy_pth(path, state: dict, fake_torch) -> None:
  """torch < 1.6 layout: magic, protocol, sys_info, object, storage keys, then raw storages."""
  tensors, storages = _tensors(state, fake_torch)
  with open(path, "wb") as f:
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    _pickler(f, fake_torch, legacy=True).dump(tensors)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(struct.pack("<q", s.array.size))
      f.write(s.array.tobytes())


SMALL_STATE = {
    "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
    "bn.running_var": np.array([1.5, 2.5], np.float32),
    "bn.num_batches_tracked": np.array(7, np.int64),
    "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T.copy(),
}


@pytest.mark.parametrize("writer", [write_zip_pth, write_legacy_pth])
def test_pth_reader_round_trip_without_torch(tmp_path, fake_torch, writer, monkeypatch):
  path = str(tmp_path / "w.pth")
  writer(path, SMALL_STATE, fake_torch)
  monkeypatch.delitem(sys.modules, "torch")  # the reader must not need (or import) torch
  monkeypatch.delitem(sys.modules, "torch._utils")
  loaded = load_state_dict(path)
  assert list(loaded) == list(SMALL_STATE)
  for name, value in SMALL_STATE.items():
    np.testing.assert_array_equal(loaded[name], value)
    assert loaded[name].dtype == value.dtype
  assert "torch" not in sys.modules


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pth_reader_on_files_saved_by_torch(fmt):
  """``torch.save`` output (tests/data/torch_*.pth): views sharing a storage at an offset or with
  strides, scalars, float16/32/64, int32/64 and bool come back exactly, in order."""
  want = VERIFY["reader_state"]()
  loaded = load_state_dict(VERIFY["READER_PATHS"][fmt])
  assert list(loaded) == list(want)
  for name, value in want.items():
    np.testing.assert_array_equal(loaded[name], value)
    assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape


def test_pth_reader_refuses_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  path = str(tmp_path / "evil.pth")
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
  with pytest.raises(UserError, match="refusing to load .*print"):
    load_state_dict(path)


# --- Inception ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _fixture() -> dict[str, np.ndarray]:
  """tests/data/inception_reference.npz, made with pytorch-fid by verify_inception_port.py."""
  with np.load(VERIFY["REFERENCE_PATH"], allow_pickle=False) as npz:
    return dict(npz)


@functools.lru_cache(maxsize=1)
def _reference_state() -> dict[str, np.ndarray]:
  """The pseudo-random state_dict pytorch-fid's network held for the fixture: pytorch-fid's names
  and shapes, ``num_batches_tracked`` and ``fc.bias`` included."""
  fixture = _fixture()
  shapes = {k: tuple(v) for k, v in json.loads(str(fixture["state_dict_shapes"])).items()}
  state = VERIFY["inception_state_dict"](shapes, int(fixture["weights_seed"]))
  assert VERIFY["weights_fingerprint"](state) == pytest.approx(
      float(fixture["weights_fingerprint"]), rel=1e-12), (
          "numpy no longer regenerates the reference weights: rerun "
          "experiments/verify_inception_port.py with torch and pytorch-fid")
  return state


def test_inception_matches_pytorch_fid(tmp_path, fake_torch):
  """pytorch-fid's FID network and jaxgen's, both holding the same weights (read here from a
  legacy-format .pth through the real loader, whose name and shape checks then also show that the
  two networks have the same tensors), agree on pool3 and the unbiased logits of two 37x53 images
  (resized to 299). float32 through 94 convolutions: errors are ~1e-6 of the largest feature,
  while the known FID-network variants (average pools counting padding, an average pool in
  Mixed_7c, align_corners=True) move pool3 by 1% to 37% of it."""
  reference, state = _fixture(), _reference_state()
  pth = str(tmp_path / "random_fid_inception.pth")
  write_legacy_pth(pth, state, fake_torch)
  variables = inception_weights.load_inception_variables(pth, check_hash=False)
  pool, logits = inception_weights.inception_features(variables, reference["images"],
                                                      batch_size=2)
  for got, want in ((pool, reference["pool3"]), (logits, reference["logits_unbiased"])):
    scale = float(np.max(np.abs(want)))
    print(f"max |jaxgen - pytorch-fid| {np.max(np.abs(got - want)):.3g} (max |ref| {scale:.3g})")
    chex.assert_trees_all_close(got, want, rtol=0, atol=VERIFY["TOLERANCE"] * scale)
  assert np.mean(reference["pool3"] > 0) > 0.8  # live features: the comparison means something


def test_inception_weights_pth_and_npz(tmp_path, fake_torch):
  state = _reference_state()
  pth = str(tmp_path / inception_weights.FID_WEIGHTS_NAME)
  write_zip_pth(pth, state, fake_torch)
  with pytest.raises(UserError, match="6726825d"):
    inception_weights.load_inception_variables(pth)  # not the real file: hash mismatch
  variables = inception_weights.load_inception_variables(pth, check_hash=False)
  flat = flax.traverse_util.flatten_dict(variables)
  np.testing.assert_array_equal(flat[("params", "Mixed_7c", "branch3x3_2a", "conv", "kernel")],
                                state["Mixed_7c.branch3x3_2a.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(flat[("params", "fc", "kernel")], state["fc.weight"].T)
  assert len(flat) == len([k for k in state if not k.endswith("num_batches_tracked")]) - 1

  convert = runpy.run_path(os.path.join(ROOT, "experiments", "convert_inception_weights.py"))
  npz = str(tmp_path / "inception.npz")
  convert["convert"](pth, npz, check_hash=False)
  from_npz = inception_weights.load_inception_variables(npz, check_hash=False)
  jax.tree.map(np.testing.assert_array_equal, from_npz, variables)
  with pytest.raises(UserError, match="6726825d"):
    inception_weights.load_inception_variables(npz)
  np.savez(tmp_path / "no_hash.npz", **{"params/fc/kernel": np.zeros((2, 2))})  # no recorded source hash
  with pytest.raises(UserError, match="records no source SHA-256, so it is not that of"):
    inception_weights.load_inception_variables(str(tmp_path / "no_hash.npz"))


@pytest.mark.parametrize("name, content, check_hash, message", [
    ("random.pth", b"\x05" * 5000, True, r"SHA-256 [0-9a-f]{8}\.\.\. is not that of the FID Inception weights"),
    ("random.pth", b"\x05" * 5000, False, r"cannot be read \(UnpicklingError"),
    ("cut.npz", b"PK\x03\x04garbage", False, r"cannot be read \(BadZipFile"),
    ("empty.npz", b"", True, r"cannot be read \(EOFError"),
])
def test_unreadable_inception_weights_are_one_line(tmp_path, name, content, check_hash, message):
  (tmp_path / name).write_bytes(content)
  with pytest.raises(UserError, match=message) as e:
    inception_weights.load_inception_variables(str(tmp_path / name), check_hash=check_hash)
  assert "\n" not in str(e.value)


def _torch_bilinear(x: np.ndarray, size: int) -> np.ndarray:
  """F.interpolate(mode="bilinear", align_corners=False) on [H, W] (negative sources clamp)."""
  def axis(n_in):
    src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0

  (y0, y1, wy), (x0, x1, wx) = axis(x.shape[0]), axis(x.shape[1])
  rows = x[y0] * (1 - wy)[:, None] + x[y1] * wy[:, None]
  return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def test_resize_matches_torch_bilinear():
  image = np.random.default_rng(2).random((32, 24)).astype(np.float32)
  got = jax.image.resize(image, (299, 299), "bilinear", antialias=False)  # as InceptionV3 does
  np.testing.assert_allclose(got, _torch_bilinear(image, 299), atol=1e-5)


def test_resize_down_matches_torch_interpolate():
  """Downsampling 331x419 -> 299 as InceptionV3 does vs torch's ``F.interpolate`` (bilinear,
  ``align_corners=False``, every third pixel stored)."""
  got = jax.image.resize(VERIFY["resize_source"](), (299, 299), "bilinear", antialias=False)
  chex.assert_trees_all_close(got[::3, ::3], _fixture()["resized_source_every_3rd"],
                             atol=1e-6)


def test_basic_conv_matches_torch_semantics():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)
  state = {"conv.weight": rng.standard_normal((4, 3, 1, 3)).astype(np.float32),
           "bn.weight": rng.random(4).astype(np.float32) + 0.5,
           "bn.bias": rng.standard_normal(4).astype(np.float32),
           "bn.running_mean": rng.standard_normal(4).astype(np.float32),
           "bn.running_var": rng.random(4).astype(np.float32) + 0.5}
  variables = flax.traverse_util.unflatten_dict(inception_weights.state_dict_to_variables(state))
  got = inception.BasicConv2d(4, (1, 3), padding=(0, 1)).apply(variables, x)
  # torch: out[o, i, j] = sum_{c, u, v} w[o, c, u, v] * x_padded[c, i + u, j + v], then BN, ReLU.
  xp = np.pad(x[0], ((0, 0), (1, 1), (0, 0)))
  w = state["conv.weight"]
  conv = np.zeros((6, 7, 4))
  for v in range(3):
    conv += np.einsum("ijc,oc->ijo", xp[:, v:v + 7], w[:, :, 0, v])
  bn = ((conv - state["bn.running_mean"]) / np.sqrt(state["bn.running_var"] + 1e-3)
        * state["bn.weight"] + state["bn.bias"])
  np.testing.assert_allclose(got[0], np.maximum(bn, 0), rtol=1e-4, atol=1e-4)


def test_inception_pools_ignore_padding():
  ones = jnp.ones((1, 5, 5, 2))
  np.testing.assert_array_equal(inception._avg_pool_3x3(ones), ones)  # count_include_pad=False
  negative = -jnp.arange(1.0, 26.0).reshape(1, 5, 5, 1)
  # The E_2 max pool pads with -inf (as torch): a corner sees its 2x2 neighbourhood, never a 0.
  pooled = inception._max_pool_3x3(negative)
  assert float(pooled[0, 0, 0, 0]) == -1.0 and float(pooled[0, 4, 4, 0]) == -19.0


# --- digits classifier ----------------------------------------------------------------------


def test_digits_classifier_accuracy_on_test_split():
  data = digits.load(None)
  images = data.test["x"].astype(np.float32) / 16
  features, logits = digits_classifier.digits_features(images)
  accuracy = float(np.mean(np.argmax(logits, axis=1) == data.test["label"]))
  print(f"digits classifier test accuracy: {accuracy:.4f} on {len(images)} images")
  assert accuracy >= 0.97
  assert features.shape == (len(images), digits_classifier.FEATURES)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
@pytest.mark.parametrize("dequantized", [False, True])
def test_model_space_to_classifier_input(value_range, dequantized):
  raw = np.arange(17, dtype=np.float32)
  lo, hi = value_range
  rng = np.random.default_rng(4)
  if dequantized:
    x = lo + (hi - lo) * (raw + rng.random(17)) / 17
  else:
    x = lo + (hi - lo) * raw / 16
  spec = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=value_range,
                  dequantized=dequantized)
  got = digits_classifier.to_classifier_input(x, spec) * 16
  np.testing.assert_allclose(got, raw, atol=0.5 if dequantized else 1e-5)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_inception_input_is_the_saved_8bit_image(value_range, tmp_path):
  lo, hi = value_range
  raw = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
  spec = DataSpec("cifar10", "image", (8, 8, 3), levels=256, value_range=value_range)
  x = lo + (hi - lo) * raw.astype(np.float32) / 255  # real examples in model space
  np.testing.assert_array_equal(features.to_inception_input(x, spec) * 255, raw)
  # A sample scores as the PNG it is saved as: less than half a level of difference vanishes.
  noise = np.random.default_rng(6).uniform(-0.45, 0.45, x.shape) * (hi - lo) / 255
  np.testing.assert_array_equal(features.to_inception_input(x + noise, spec) * 255, raw)
  outputs.write_image_grid(x + noise, spec, str(tmp_path / "grid.png"), scale=1)
  saved = np.asarray(Image.open(tmp_path / "grid.png"))
  np.testing.assert_array_equal(saved[1:9, 1:9], raw[0])  # the grid's first cell (1-pixel pad)
  # Dequantized data (a flow's): x = lo + (hi - lo) (raw + u) / levels comes back as raw, whatever u.
  u = np.random.default_rng(7).uniform(0.0, 1.0 - 1e-3, x.shape)
  for levels, shown in ((256, raw), (17, np.round(np.round(raw / 255 * 16) * 255 / 16))):
    grid = np.round(raw / 255 * (levels - 1))
    spec = DataSpec("cifar10", "image", (8, 8, 3), levels=levels, value_range=value_range, dequantized=True)
    np.testing.assert_array_equal(features.to_inception_input(lo + (hi - lo) * (grid + u) / levels, spec) * 255, shown)


# --- evaluate_samples -----------------------------------------------------------------------


def _digits_model_space(images):
  return images.astype(np.float32) / 16 * 2 - 1


def test_evaluate_samples_on_digits():
  data = digits.load(None)
  spec = DataSpec("digits", "image", (8, 8, 1), levels=17, num_classes=10)
  real = _digits_model_space(data.test["x"])
  names = ["fid", "kid", "is", "precision_recall", "density_coverage"]
  good = ev.evaluate_samples(names, _digits_model_space(data.train["x"][:600]), real, spec)
  noise = ev.evaluate_samples(names, np.random.default_rng(5).uniform(-1, 1, (600, 8, 8, 1)), real, spec)
  assert set(good) == {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
                       "density", "coverage"}
  assert good["fid"] < 0.1 * noise["fid"] and good["kid_mean"] < 0.1 * noise["kid_mean"]
  assert good["is_mean"] > 7 and good["recall"] > 0.5 and good["coverage"] > 0.8
  assert noise["recall"] < 0.1 and noise["coverage"] < 0.2 and noise["density"] < 0.4
  threes = ev.evaluate_samples(names, _digits_model_space(data.train["x"][data.train["label"] == 3][:150]),
                               real, spec)
  assert threes["is_mean"] < 1.1 and threes["recall"] < 0.15 < 0.6 < threes["precision"]
  # The digits classifier's features (auto: 8x8x1 images), computed here without the evaluator.
  real_features = digits_classifier.digits_features(digits_classifier.to_classifier_input(real, spec))[0]
  assert ev.evaluate_samples(["fid"], real[:100], real, spec) == {"fid": pytest.approx(
      ev.fid_from_features(real_features, real_features[:100]))}


def test_evaluate_samples_on_toy2d_mixture():
  means, std = toy2d.mixture_modes("toy2d/ring8")
  spec = DataSpec("toy2d/ring8", "points", (2,), num_classes=8)
  rng = np.random.default_rng(6)
  real = (means[rng.integers(8, size=500)] + std * rng.standard_normal((500, 2))).astype(
      np.float32)
  out = ev.evaluate_samples(["mode_coverage", "precision_recall"], real[:250], real[250:], spec)
  assert out["modes"] == 8.0 and out["high_quality"] > 0.97 and out["precision"] > 0.9


def test_evaluate_samples_errors_and_unavailable_inception(caplog):
  ring = DataSpec("toy2d/ring8", "points", (2,))
  # The error lists every registered evaluator (sorted); the built-in ones among them.
  with pytest.raises(UserError, match=r"available: (.+, )?density_coverage, density_plot, fid, heldout, (.+, )?is, kid, "
                                      r"mode_coverage, (.+, )?precision_recall, samples\b"):
    ev.evaluate_samples(["fdi"], np.zeros((4, 2)), np.zeros((4, 2)), ring)
  with pytest.raises(UserError, match="logits"):
    ev.evaluate_samples(["is"], np.zeros((4, 2)), np.zeros((4, 2)), ring)
  with pytest.raises(UserError, match="Gaussian-mixture"):
    ev.evaluate_samples(["mode_coverage"], np.zeros((4, 2)), np.zeros((4, 2)),
                        DataSpec("toy2d/moons", "points", (2,)))
  with pytest.raises(UserError, match="scores a model on the test split"):
    ev.evaluate_samples(["heldout"], np.zeros((4, 2)), np.zeros((4, 2)), ring)
  cifar = DataSpec("cifar10", "image", (32, 32, 3), levels=256)
  images = np.zeros((20, 32, 32, 3), np.float32)  # the 2 per split of "is"
  with caplog.at_level(logging.WARNING):
    assert ev.evaluate_samples(["fid", "is"], images, images, cifar) == {}
  assert "inception_weights" in caplog.text
  with pytest.raises(UserError, match="not found"):
    ev.evaluate_samples(["fid"], images, images, cifar, {"eval.inception_weights": "/no/such/file.npz"})
