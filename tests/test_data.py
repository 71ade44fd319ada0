"""Tests of jaxgen.data: embedded sets, preprocessing, determinism and sharding, tfds (mocked), the
source registry. The user-file sources (images:, text:, arrays:, audio:) are tested in test_data_files.py."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen import config_defaults
from jaxgen.data import SOURCES, ArraySource, DataSpec, RawData, Splits, build, pipeline, register, source, toy2d
from jaxgen.data.preprocess import Preprocessor
from jaxgen.errors import UserError

TOY2D = [
    "toy2d/ring8", "toy2d/grid25", "toy2d/8gaussians", "toy2d/moons", "toy2d/swissroll",
    "toy2d/checkerboard", "toy2d/2spirals", "toy2d/pinwheel",
]


def make_config(name="digits", batch_size=64, seed=0, **data):
  c = config_defaults.base()
  c.seed = seed
  c.data.name = name
  c.train.batch_size = batch_size
  c.data.update(data)
  return c


def sklearn_digits():
  from sklearn.datasets import load_digits

  d = load_digits()
  return d.images.astype(np.uint8)[..., None], d.target


def image_preprocessor(levels, **data):
  """A Preprocessor for a made-up image set of shape [4, 4, 1] with ``levels`` raw levels."""
  spec = DataSpec(name="made_up", modality="image", shape=(4, 4, 1), levels=levels)
  return Preprocessor(spec, make_config(**data).data)


# ------------------------------------------------------------------------------------- digits


def test_digits_matches_sklearn_with_fixed_split():
  images, target = sklearn_digits()
  raw = SOURCES.get("digits").load(make_config().data)
  assert raw.spec.levels == 17 and raw.spec.num_classes == 10 and raw.spec.shape == (8, 8, 1)
  np.testing.assert_array_equal(raw.train["x"], images[:1500])
  np.testing.assert_array_equal(raw.test["x"], images[1500:])
  np.testing.assert_array_equal(raw.train["label"], target[:1500])
  np.testing.assert_array_equal(raw.test["label"], target[1500:])
  # No image of the test set occurs in the training set.
  train_images = {im.tobytes() for im in raw.train["x"]}
  assert not any(im.tobytes() in train_images for im in raw.test["x"])


@pytest.mark.parametrize("scale,lo,hi", [("[-1,1]", -1.0, 1.0), ("[0,1]", 0.0, 1.0)])
def test_digits_pipeline_scales_exactly(scale, lo, hi):
  images, target = sklearn_digits()
  p = build(make_config(scale=scale))
  assert p.spec.value_range == (lo, hi) and p.spec.levels == 17 and not p.spec.dequantized
  assert (p.num_train, p.num_test) == (1500, 297)
  held = p.held_out(1000)  # capped at the 297 test examples
  chex.assert_shape(held["x"], (297, 8, 8, 1))
  chex.assert_type([held["x"], held["label"]], [np.float32, np.int32])
  expected = lo + (hi - lo) * images[1500:].astype(np.float64) / 16  # exact: /16 is a power of 2
  np.testing.assert_array_equal(held["x"], expected.astype(np.float32))
  np.testing.assert_array_equal(held["label"], target[1500:])
  batch = p.train_batch(0)
  chex.assert_shape([batch["x"], batch["label"]], [(64, 8, 8, 1), (64,)])
  assert batch["x"].min() >= lo and batch["x"].max() <= hi


# -------------------------------------------------------------------------------------- toy2d


@pytest.mark.parametrize("name", TOY2D)
def test_toy2d_sets_load_deterministically(name):
  p = build(make_config(name, num_points=1000))
  assert p.spec.modality == "points" and p.spec.shape == (2,)
  assert (p.num_train, p.num_test) == (1000, 250)
  held = p.held_out(250)
  chex.assert_shape(held["x"], (250, 2))
  chex.assert_type(held["x"], np.float32)
  chex.assert_tree_all_finite(held["x"])
  chex.assert_trees_all_equal(held, build(make_config(name, num_points=1000)).held_out(250))
  other_seed = build(make_config(name, num_points=1000, seed=1)).held_out(250)
  assert not np.array_equal(held["x"], other_seed["x"])
  raw = SOURCES.get(name).load(pipeline._data_config(make_config(name, num_points=1000)))
  assert not np.isin(raw.test["x"][:, 0], raw.train["x"][:, 0]).any()  # separate draws


def ring8_reference():
  return np.array([[1, 0], [.5**.5, .5**.5], [0, 1], [-.5**.5, .5**.5], [-1, 0],
                   [-.5**.5, -.5**.5], [0, -1], [.5**.5, -.5**.5]])


@pytest.mark.parametrize("name,means,std", [
    ("toy2d/ring8", ring8_reference(), 0.01),
    ("toy2d/grid25", np.array(list(itertools.product([-4, -2, 0, 2, 4], repeat=2)), float), 0.05),
])
def test_mixtures_match_their_definition(name, means, std):
  got_means, got_std = toy2d.mixture_modes(name)
  assert got_std == std
  order = lambda m: m[np.lexsort(np.round(m, 9).T)]  # pylint: disable=unnecessary-lambda-assignment
  chex.assert_trees_all_close(order(got_means), order(means), atol=1e-12)
  n = 40000
  x = build(make_config(name, num_points=n)).held_out(n)  # 10000 test points
  x, label = x["x"].astype(np.float64), x["label"]
  nearest = np.argmin(((x[:, None] - got_means[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, label)  # modes are far apart: label = nearest mean
  counts = np.bincount(label, minlength=len(means))
  k = len(means)
  assert np.all(np.abs(counts - len(x) / k) < 5 * np.sqrt(len(x) / k))  # all modes, ~uniform
  residual = x - got_means[label]
  np.testing.assert_allclose(residual.mean(0), 0, atol=5 * std / np.sqrt(len(x)))
  np.testing.assert_allclose(residual.std(0), std, rtol=0.03)
  if name == "toy2d/ring8":
    np.testing.assert_allclose(np.linalg.norm(x, axis=1).mean(), 1.0, atol=1e-3)


# ----------------------------------------------------------- determinism, sharding, epochs


def test_batches_are_deterministic_and_shards_concatenate():
  c = make_config(batch_size=32, dequantize=True, binarize="dynamic")
  whole = build(c)
  again = build(c)
  for step in (0, 7, 123):
    batch = whole.train_batch(step)
    chex.assert_trees_all_equal(batch, again.train_batch(step))
    for count in (2, 4):
      shards = [build(c, process_index=i, process_count=count) for i in range(count)]
      assert shards[0].local_batch_size == 32 // count
      parts = [s.train_batch(step) for s in shards]
      chex.assert_trees_all_equal(batch, {k: np.concatenate([q[k] for q in parts]) for k in batch})
  assert not np.array_equal(whole.train_batch(1)["x"], whole.train_batch(2)["x"])
  assert not np.array_equal(whole.train_batch(1)["x"], build(make_config(
      batch_size=32, dequantize=True, binarize="dynamic", seed=1)).train_batch(1)["x"])


@pytest.mark.parametrize("prefetch", [0, 3])
def test_iterate_train_matches_train_batch(prefetch):
  p = build(make_config(batch_size=16, dequantize=True, prefetch=prefetch))
  it = p.iterate_train(5)
  got = list(itertools.islice(it, 6))
  it.close()
  assert [s for s, _ in got] == list(range(5, 11))
  for step, batch in got:
    chex.assert_trees_all_equal(batch, p.train_batch(step))


def test_iterate_train_raises_producer_errors():
  p = build(make_config(batch_size=16))
  p._train.get = lambda indices: 1 / 0  # simulate a broken source
  with pytest.raises(ZeroDivisionError):
    next(p.iterate_train(0))


def test_each_epoch_is_a_permutation():
  # 100 points, batches of 30 straddle epoch boundaries: 10 steps = 3 epochs exactly.
  c = make_config("toy2d/swissroll", batch_size=30, num_points=100)
  p = build(c)
  train = SOURCES.get("toy2d/swissroll").load(pipeline._data_config(c)).train["x"]
  stream = np.concatenate([p.train_batch(s)["x"] for s in range(10)])
  order = np.argmin(np.abs(train[:, 0][None] - stream[:, 0][:, None]), axis=1)  # stream -> split
  np.testing.assert_array_equal(train[order], stream)
  epochs = order.reshape(3, 100)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(100))
  assert not np.array_equal(epochs[0], epochs[1])


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("scale,lo,hi", [("[-1,1]", -1.0, 1.0), ("[0,1]", 0.0, 1.0)])
def test_scaling_of_known_pixels(scale, lo, hi):
  prep = image_preprocessor(256, scale=scale)
  raw = np.zeros((1, 4, 4, 1), np.uint8)
  raw.flat[:4] = [0, 51, 128, 255]
  x = prep({"x": raw}, np.random.default_rng(0), slice(0, 1), 1)["x"].ravel()[:4]
  expected = np.array([lo, lo + (hi - lo) * 0.2, lo + (hi - lo) * 128 / 255, hi])
  np.testing.assert_array_equal(x, expected.astype(np.float32))  # correctly rounded


@pytest.mark.parametrize("levels,scale", [(256, "[-1,1]"), (256, "[0,1]"), (17, "[-1,1]")])
def test_dequantization_bounds_and_uniformity(levels, scale):
  prep = image_preprocessor(levels, scale=scale, dequantize=True)
  lo, hi = prep.spec.value_range
  assert prep.spec.dequantized and prep.spec.levels == levels
  raw = (np.arange(2000 * 16) % levels).astype(np.uint8).reshape(2000, 4, 4, 1)
  x = prep({"x": raw}, np.random.default_rng(0), slice(0, 2000), 2000)["x"]
  chex.assert_type(x, np.float32)
  assert x.min() >= lo and x.max() < hi
  level = (x.astype(np.float64) - lo) / (hi - lo) * levels
  np.testing.assert_array_equal(np.floor(level), raw)
  u = level - raw
  np.testing.assert_allclose([u.mean(), u.var()], [1 / 2, 1 / 12], atol=0.01)


def test_static_binarization_thresholds_at_half():
  images, _ = sklearn_digits()
  p = build(make_config(binarize="static", scale="[-1,1]"))
  assert p.spec.levels == 2 and p.spec.value_range == (0.0, 1.0)
  held = p.held_out(297)["x"]
  np.testing.assert_array_equal(held, (images[1500:] > 8).astype(np.float32))
  np.testing.assert_array_equal(held, p.held_out(297)["x"])


def test_dynamic_binarization_is_bernoulli_of_intensity():
  prep = image_preprocessor(256, binarize="dynamic")
  assert prep.spec.levels == 2 and prep.spec.value_range == (0.0, 1.0)
  raw = np.array([0, 32, 64, 128, 192, 255] * 3 + [0, 0], np.uint8)[:16].reshape(1, 4, 4, 1)
  raw = np.repeat(raw, 500, axis=0)
  draws = prep({"x": raw}, np.random.default_rng(0), slice(0, 500), 500)["x"]
  assert set(np.unique(draws)) <= {0.0, 1.0}
  p = raw / 255
  np.testing.assert_allclose(draws.mean(0), p[0], atol=4 * 0.5 / np.sqrt(500))
  assert np.all(draws[:, raw[0] == 0] == 0) and np.all(draws[:, raw[0] == 255] == 1)
  # Through the pipeline: fixed by (seed, step), redrawn each time an example is drawn. With
  # batches of the whole split (1500), step s holds every training image once (epoch s).
  c = make_config(binarize="dynamic", batch_size=1500)
  a, b = build(c), build(c)
  chex.assert_trees_all_equal(a.train_batch(3), b.train_batch(3))
  images = SOURCES.get("digits").load(c.data).train["x"]
  draws = []
  for step in range(20):
    order = np.argsort(pipeline.train_indices(0, 1500, np.arange(1500) + step * 1500))
    draws.append(a.train_batch(step)["x"][order])  # back in the split's order
  draws = np.stack(draws)  # [20, 1500, 8, 8, 1]
  assert not np.array_equal(draws[0], draws[1])
  np.testing.assert_array_equal(draws[:, images == 0], 0)
  np.testing.assert_array_equal(draws[:, images == 16], 1)
  for level in range(1, 16):
    at = draws[:, images == level]
    np.testing.assert_allclose(at.mean(), level / 16, atol=4 * 0.5 / np.sqrt(at.size))


def test_non_images_pass_through_and_reject_image_options():
  spec = DataSpec(name="chars", modality="text", shape=(5,), levels=7)
  prep = Preprocessor(spec, make_config().data)
  assert prep.spec == spec
  tokens = np.arange(10).reshape(2, 5) % 7
  out = prep({"x": tokens}, np.random.default_rng(0), slice(0, 2), 2)["x"]
  chex.assert_type(out, np.int32)
  np.testing.assert_array_equal(out, tokens)
  with pytest.raises(UserError, match="dequantize"):
    Preprocessor(spec, make_config(dequantize=True).data)


@pytest.mark.parametrize("field,value", [("scale", "[0,255]"), ("binarize", "sometimes")])
def test_bad_preprocessing_option_is_a_user_error(field, value):
  with pytest.raises(UserError, match=field):
    build(make_config(**{field: value}))


# ------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("count", [1, 2])
def test_eval_batches_cover_the_test_split_once(count):
  c = make_config(dequantize=True)
  parts = [list(build(c, process_index=i, process_count=count).eval_batches(64 // count))
           for i in range(count)]
  assert all(len(batches) == 5 for batches in parts)  # ceil(297 / 64)
  batches = [{k: np.concatenate([part[j][k] for part in parts]) for k in parts[0][j]}
             for j in range(5)]
  for batch in batches:
    chex.assert_shape([batch["x"], batch["mask"]], [(64, 8, 8, 1), (64,)])
    chex.assert_type(batch["mask"], np.float32)
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(mask, np.arange(320) < 297)
  images, target = sklearn_digits()
  x = np.concatenate([b["x"] for b in batches])[:297]
  np.testing.assert_array_equal(np.floor((x + 1) / 2 * 17), images[1500:])
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:297], target[1500:])
  again = list(build(c).eval_batches(64, num_batches=2))
  assert len(again) == 2
  chex.assert_trees_all_equal(again, batches[:2])  # the same noise every time


def test_held_out_is_the_same_on_every_process():
  c = make_config(dequantize=True)
  chex.assert_trees_all_equal(build(c, process_index=0, process_count=2).held_out(50),
                              build(c, process_index=1, process_count=2).held_out(50))


# ------------------------------------------------------------------------------------ errors


def test_unknown_name_lists_embedded_sets():
  with pytest.raises(UserError, match="no_such_data_set") as e:
    build(make_config("no_such_data_set"))
  assert "digits" in str(e.value) and "toy2d/ring8" in str(e.value)
  assert "tensorflow-datasets" in str(e.value)
  with pytest.raises(UserError, match=r"unknown data set 'toy2d/ring9' \(did you mean 'toy2d/ring8'\?\): it is"):
    build(make_config("toy2d/ring9"))


def test_unprepared_tfds_set_explains_the_prepare_step(tmp_path, monkeypatch):
  with pytest.raises(UserError, match="not prepared") as e:
    build(make_config("mnist", data_dir=str(tmp_path)))
  assert "tfds.builder('mnist', data_dir=" in str(e.value) and "download_and_prepare()" in str(e.value)
  # The default data_dir: tfds finds the builder's metadata but no splits (a KeyError inside tfds).
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
  with pytest.raises(UserError, match="not prepared .*download_and_prepare"):
    build(make_config("mnist"))


def test_batch_not_divisible_by_process_count():
  with pytest.raises(UserError, match="batch_size=10.*process count 4"):
    build(make_config(batch_size=10), process_index=0, process_count=4)


# ------------------------------------------------------------------------------ tfds (mocked)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_sets_under_mock_data(name, shape):
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    c = make_config(name, batch_size=16)
    p = build(c)
    assert p.spec == DataSpec(name=name, modality="image", shape=shape, levels=256,
                              value_range=(-1.0, 1.0), num_classes=10)
    assert (p.num_train, p.num_test) == (40, 40)
    reference = tfds.data_source(name, split="train")
    batch = p.train_batch(4)  # steps 0-1 are epoch 0, steps 2-4 epoch 1 (40 = 2.5 batches)
    chex.assert_shape([batch["x"], batch["label"]], [(16, *shape), (16,)])
    chex.assert_type([batch["x"], batch["label"]], [np.float32, np.int32])
    indices = pipeline.train_indices(0, 40, np.arange(64, 80))
    raw = np.stack([reference[int(i)]["image"] for i in indices])
    np.testing.assert_array_equal(batch["x"], (-1 + raw.astype(np.float64) * 2 / 255).astype(
        np.float32))
    np.testing.assert_array_equal(batch["label"], [reference[int(i)]["label"] for i in indices])
    assert batch["label"].min() >= 0 and batch["label"].max() < 10
    chex.assert_trees_all_equal(batch, build(c).train_batch(4))
    shards = [build(c, process_index=i, process_count=2).train_batch(4) for i in range(2)]
    chex.assert_trees_all_equal(batch, {k: np.concatenate([s[k] for s in shards]) for k in batch})
    evals = list(p.eval_batches(16))
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in evals]), np.arange(48) < 40)
    first = p.held_out(16)
    np.testing.assert_array_equal(evals[0]["x"], first["x"])
    np.testing.assert_array_equal(evals[0]["label"], [reference[i]["label"] for i in range(16)])


def test_tfds_reads_without_cache_give_the_same_batches():
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    c = make_config("mnist", batch_size=16, dequantize=True)
    cached = build(c)
    uncached = build(make_config("mnist", batch_size=16, dequantize=True, cache_max_bytes=0))
    assert uncached._train._cache is None and cached._train._cache is not None
    for step in (0, 3, 3):
      chex.assert_trees_all_equal(cached.train_batch(step), uncached.train_batch(step))


# ----------------------------------------------------------------------- the source registry


@register("test_data/line", defaults={"line_points": 12})
def _line(data) -> RawData:
  """A data source declared in this file: points on the line y = 2x, every other one held out."""
  x = np.linspace(-1, 1, data.line_points, dtype=np.float32)[:, None] * np.array([1, 2], np.float32)
  return RawData(train={"x": x[::2]}, test={"x": x[1::2]},
                 spec=DataSpec(name="test_data/line", modality="points", shape=(2,)))


@register("test_data_kind:")
def _kind(data) -> Splits:
  """A kind: ``test_data_kind:<n>`` has n training and n test points, all equal to the seed."""
  n = int(data.path)
  arrays = {"x": np.full((2 * n, 1), data.seed, np.float32)}
  spec = DataSpec(name=data.name, modality="points", shape=(1,))
  return Splits(ArraySource(arrays, np.arange(n)), ArraySource(arrays, np.arange(n, 2 * n)), spec)


def test_a_source_registered_in_a_test_file_is_read_by_name():
  assert config_defaults.base().data.line_points == 12  # its declared default is in every config
  p = build(make_config("test_data/line", batch_size=3, line_points=8))
  assert p.spec.shape == (2,) and (p.num_train, p.num_test) == (4, 4)
  x = np.linspace(-1, 1, 8)
  np.testing.assert_allclose(p.held_out(4)["x"], np.stack([x[1::2], 2 * x[1::2]], 1), rtol=1e-6)
  q = build(make_config("test_data_kind:5", seed=7))
  assert (q.num_train, q.num_test) == (5, 5) and q.spec.name == "test_data_kind:5"
  np.testing.assert_array_equal(q.train_batch(0)["x"], np.full((64, 1), 7.0))


@register("test_data_broken:")
def _broken(data) -> RawData:
  """Images ``[16, 4, 4, 1]`` of the 256 levels, with the mistake of a loader named by the path."""
  x = (np.arange(16 * 16).reshape(16, 4, 4, 1) % 256).astype(np.uint8)
  spec = {"modality": "image", "shape": (4, 4, 1), "levels": 256}
  mistakes = {"none": {}, "levels": {"levels": 0}, "few_levels": {"levels": 17}, "modality": {"modality": "images"},
              "shape": {"shape": (4, 4, 3)}, "floats": {}, "text_floats": {"modality": "text"}}
  spec.update(mistakes[data.path])
  if data.path.endswith("floats"):
    x = x / 255.0
  return RawData(train={"x": x[:8]}, test={"x": x[8:]}, spec=DataSpec(name=data.name, **spec))


@pytest.mark.parametrize("mistake,message", [
    ("levels", r"DataSpec.levels=0 of image data: it needs >= 2"),
    ("few_levels", r"the train split holds values in \[0, 127\], outside \{0, ..., levels - 1 = 16\}"),
    ("modality", r"DataSpec.modality='images' is not one of image, points, text, audio"),
    ("shape", r"the train split holds examples of shape \(4, 4, 1\), not DataSpec.shape=\(4, 4, 3\)"),
    ("floats", r"the train split holds float64 image examples \(integers expected\)"),
    ("text_floats", r"float64 text examples"),
])
def test_a_loader_that_breaks_the_spec_conventions_is_one_error_before_training(mistake, message):
  """Not an IndexError at the first batch (levels missing or too few), nor float images or tokens
  silently truncated to integers, nor a spec whose modality or shape the data do not have."""
  assert build(make_config("test_data_broken:none", batch_size=4)).train_batch(0)["x"].shape == (4, 4, 4, 1)
  with pytest.raises(UserError, match=message + ".*fix the loader of data source 'test_data_broken:'"):
    build(make_config(f"test_data_broken:{mistake}", batch_size=4))


def test_names_resolve_exact_then_kind_then_tfds():
  cases = {"digits": ("digits", None), "toy2d/ring8": ("toy2d/ring8", None),
           "images:/data/x:y": ("images:", "/data/x:y"), "text:a.txt": ("text:", "a.txt"),
           "mnist": ("tfds:", "mnist"), "celeb_a:2.1.0": ("tfds:", "celeb_a:2.1.0"),
           "tfds:mnist": ("tfds:", "mnist"), "mnist:3.*.*": ("tfds:", "mnist:3.*.*"), "cifar10:3": ("tfds:", "cifar10:3"),
           "huggingface:mnist": ("tfds:", "huggingface:mnist"), "tfds:huggingface:mnist": ("tfds:", "huggingface:mnist")}
  for name, (entry, path) in cases.items():
    got = source.resolve(name)
    assert (got[0].name, got[1]) == (entry, path), name
  with pytest.raises(UserError, match="names no path"):
    source.resolve("arrays:")
  # neither a kind nor a tfds version: a misspelt kind, named with its closest one
  with pytest.raises(UserError, match=r"'image:' is not a data source kind .*\(did you mean images:/data/x\?\)"):
    source.resolve("image:/data/x")
  with pytest.raises(UserError, match=r"'arary:' is not .*\(did you mean arrays:data\.npz\?\)"):
    source.resolve("arary:data.npz")
  with pytest.raises(UserError, match=r"'nokind:' is not a data source kind .*fix data.name; a tensorflow-datasets"):
    source.resolve("nokind:/x")


def test_a_field_declared_twice_needs_the_same_default():
  register("test_data/same", defaults={"line_points": 12})(_line)  # same default: fine
  with pytest.raises(ValueError, match="line_points.*test_data/line"):
    register("test_data/other", defaults={"line_points": 13})(_line)
  with pytest.raises(ValueError, match="seq_len"):
    register("test_data/seq", defaults={"seq_len": 64})(_line)  # declared 0 by the text and audio sets
  assert "test_data/other" not in SOURCES


def test_a_source_cannot_change_the_default_of_a_shared_field(monkeypatch):
  """Merged after the shared fields, data.scale='[0,1]' declared by one source would have changed
  the preprocessing of every config; the shared default itself may be declared."""
  monkeypatch.setitem(SOURCES._items, "test_data/same_scale", source.DataSource("s", _line, {"scale": "[-1,1]"}))
  assert config_defaults.base().data.scale == "[-1,1]"
  monkeypatch.setitem(SOURCES._items, "test_data/scale", source.DataSource("s", _line, {"scale": "[0,1]"}))
  with pytest.raises(ValueError, match=r"data source 'test_data/scale' declares data.scale='\[0,1\]', a field "
                                       r"shared by every config whose default is '\[-1,1\]'"):
    config_defaults.base()


def test_importing_the_data_package_imports_no_reader():
  script = ("import sys, jaxgen.data\n"
            "print(sorted(m for m in ('tensorflow_datasets', 'tensorflow', 'PIL', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True)
  assert out.stdout.strip() == "[]"


def test_data_seed_keeps_the_data_while_the_training_seed_changes():
  """``--config.data.seed=3`` is a field (-1: ``config.seed``): toy2d draws with it whatever ``seed``."""
  fixed = [build(config_defaults.apply_overrides(make_config("toy2d/ring8", seed=s), ["data.seed=3"]))
           for s in (1, 2)]
  np.testing.assert_array_equal(fixed[0].held_out(50)["x"], fixed[1].held_out(50)["x"])
  np.testing.assert_array_equal(fixed[0].held_out(50)["x"], build(make_config("toy2d/ring8", seed=3)).held_out(50)["x"])
  assert not np.array_equal(build(make_config("toy2d/ring8", seed=1)).held_out(50)["x"],
                            build(make_config("toy2d/ring8", seed=2)).held_out(50)["x"])
