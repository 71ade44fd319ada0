"""Checks jaxgen's FID Inception port against pytorch-fid; writes the fixtures the tests use.

Runs in a separate environment with torch (never a dependency of jaxgen):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch torchvision pytorch-fid torch-fidelity numpy
    /tmp/torchvenv/bin/python experiments/verify_inception_port.py

The real FID weights cannot be fetched offline, so pytorch-fid's own network
(``pytorch_fid.inception.InceptionV3([3])``, ``use_fid_inception=True``: torchvision's Inception3
with the ``FIDInception*`` blocks) is built with its weight download intercepted and filled with
deterministic pseudo-random weights from ``inception_state_dict`` (numpy only: the test regenerates
them rather than storing 95 MB). The script then

* runs pytorch-fid's forward pass (bilinear resize to 299, ``2x - 1``) on ``reference_images()``
  and records pool3 ``[N, 2048]`` and the unbiased logits ``pool3 @ fc.weight.T [N, 1008]``
  (pytorch-fid stops at pool3; the logits of the Inception Score are ``fc`` without its bias);
* checks that reference against torch-fidelity's independent port of the same graph (its
  ``'2048'`` and ``'logits_unbiased'``, the features its Inception Score uses), at 299x299 where
  the two resizes agree;
* records ``F.interpolate`` (bilinear, ``align_corners=False``) on a larger image, downsampled;
* prints how far each known FID-network variant (average pools counting padding, an average pool
  in Mixed_7c, ``align_corners=True``) moves pool3, and checks that it is far beyond the tests'
  tolerance (``1e-5`` of the largest feature), so that the tests would catch it;
* writes ``tests/data/inception_reference.npz`` (recipe seed, pytorch-fid's state_dict names and
  shapes, a fingerprint of the weights, inputs and outputs; ~0.1 MB) and two small ``.pth``
  files of ``reader_state()`` saved by ``torch.save`` in the zip and the legacy (torch < 1.6)
  formats, ``tests/data/torch_{zip,legacy}.pth``, for the torch-free reader.

``--pth_dir DIR`` also keeps the full random-weight network as ``DIR/inception_{zip,legacy}.pth``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import zlib
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_PATH = os.path.join(ROOT, "tests", "data", "inception_reference.npz")
READER_PATHS = {fmt: os.path.join(ROOT, "tests", "data", f"torch_{fmt}.pth")
                for fmt in ("zip", "legacy")}
WEIGHTS_SEED = 20151205
#: Largest |difference| the tests allow, as a fraction of the largest reference value.
TOLERANCE = 1e-5


def inception_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
  """Deterministic pseudo-random weights for a state_dict with these names and shapes.

  Each tensor has its own generator, seeded by ``(seed, crc32(name))``, so the values do not depend
  on the order of ``shapes``. Scaled so that activations stay O(1) through the 94 convolutions:
  conv ``[O, I, kh, kw] ~ N(0, 2 / (I kh kw))`` (He), BatchNorm weight ``U(0.5, 1.5)``, bias and
  running mean ``N(0, 0.1^2)``, running variance ``U(0.5, 2)``; ``fc.weight ~ N(0, 1 / 2048)``,
  ``fc.bias ~ N(0, 1)``; ``num_batches_tracked`` 0 (int64).
  """
  state = {}
  for name, shape in shapes.items():
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
      value = np.zeros(shape, np.int64)
    elif name == "fc.weight":
      value = rng.standard_normal(shape) / np.sqrt(shape[1])
    elif name == "fc.bias":
      value = rng.standard_normal(shape)
    elif name.endswith("conv.weight"):
      value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif leaf == "weight":
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf in ("bias", "running_mean"):
      value = 0.1 * rng.standard_normal(shape)
    elif leaf == "running_var":
      value = rng.uniform(0.5, 2.0, shape)
    else:
      raise ValueError(f"no recipe for {name}")
    state[name] = value if value.dtype == np.int64 else value.astype(np.float32)
  return state


def weights_fingerprint(state: dict[str, np.ndarray]) -> float:
  """Sum of all float weights in float64: tells whether a regeneration gave the same values."""
  return float(sum(np.sum(v, dtype=np.float64) for v in state.values() if v.dtype == np.float32))


def reference_images() -> np.ndarray:
  """Two 37x53 RGB noise images in [0, 1], NHWC float32: not square, not 299, upsampled."""
  return np.random.default_rng(WEIGHTS_SEED + 1).random((2, 37, 53, 3)).astype(np.float32)


def resize_source() -> np.ndarray:
  """A 331x419 image in [0, 1] (closed form, no generator), for resizing *down* to 299."""
  i, j = np.meshgrid(np.arange(331), np.arange(419), indexing="ij")
  return (0.5 + 0.5 * np.sin(0.37 * i + 0.011 * j * j) * np.cos(0.23 * j - 0.007 * i * j)).astype(
      np.float32)


#: Views of ``reader_state``'s ``base`` saved as views (sharing its storage, with an offset or
#: strides): written the same way with numpy and with torch.
READER_VIEWS: dict[str, Callable] = {
    "rows": lambda a: a[1:3], "transposed": lambda a: a.T, "column": lambda a: a[:, 2]}


def reader_state() -> dict[str, np.ndarray]:
  """Tensors of the layouts and dtypes a state_dict can hold (``READER_VIEWS`` of ``base`` too)."""
  base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8 - 1
  return {"base": base, **{name: view(base) for name, view in READER_VIEWS.items()},
          "bn.num_batches_tracked": np.array(7, np.int64),
          "double": np.linspace(-1, 1, 5), "half": np.array([0.5, -2.0, 65504.0], np.float16),
          "int32": np.array([[1, -2], [3, 2**31 - 1]], np.int32),
          "flags": np.array([True, False, True])}


# --- the torch side -------------------------------------------------------------------------


def _fid_network(state: dict[str, np.ndarray]):
  """pytorch-fid's ``InceptionV3([3])`` loaded with ``state`` (its download intercepted)."""
  from unittest import mock  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel
  from pytorch_fid import inception  # pylint: disable=import-outside-toplevel

  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: tensors):
    return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def _fid_state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """Names and shapes of pytorch-fid's FID Inception state_dict (``fid_inception_v3``'s model,
  built by pytorch-fid with its ``load_state_dict`` call skipped)."""
  from unittest import mock  # pylint: disable=import-outside-toplevel

  import torchvision  # pylint: disable=import-outside-toplevel
  from pytorch_fid import inception  # pylint: disable=import-outside-toplevel

  with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None), \
       mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda *a, **k: None):
    model = inception.fid_inception_v3()
  return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _pool3_and_logits(model, state, images_nhwc: np.ndarray):
  """pytorch-fid's pool3 ``[N, 2048]`` and the unbiased logits ``pool3 @ fc.weight.T``."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    pool = model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy()))[0][:, :, 0, 0]
  return pool.numpy(), pool.numpy() @ state["fc.weight"].T


def _save_state(state: dict[str, np.ndarray], path: str, legacy: bool) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()), path,
             _use_new_zipfile_serialization=not legacy)


def _save_reader_files() -> None:
  """``reader_state`` through real ``torch.save``; views stay views of the saved ``base``."""
  import torch  # pylint: disable=import-outside-toplevel
  state = reader_state()
  base = torch.from_numpy(state["base"])
  tensors = collections.OrderedDict(
      (k, READER_VIEWS[k](base) if k in READER_VIEWS else base if k == "base"
       else torch.from_numpy(v))
      for k, v in state.items())
  for fmt, path in READER_PATHS.items():
    torch.save(tensors, path, _use_new_zipfile_serialization=fmt == "zip")


def _torch_fidelity_check(state: dict[str, np.ndarray], model, pth: str) -> None:
  """torch-fidelity's port on 299x299 uint8 images vs pytorch-fid's on ``x / 256``: both then
  feed the network ``(x - 128) / 128``."""
  import torch  # pylint: disable=import-outside-toplevel

  # pylint: disable-next=import-outside-toplevel
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

  extractor = FeatureExtractorInceptionV3(
      "inception-v3-compat", ["2048", "logits_unbiased", "logits"],
      feature_extractor_weights_path=pth)
  uint8 = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), np.uint8)
  with torch.no_grad():
    pool, unbiased, biased = (t.numpy() for t in extractor(
        torch.from_numpy(uint8.transpose(0, 3, 1, 2).copy())))
  ref_pool, ref_logits = _pool3_and_logits(model, state, uint8.astype(np.float32) / 256)
  for what, got, want in (("pool3 ('2048')", pool, ref_pool),
                          ("'logits_unbiased' vs pool3 @ fc.weight.T", unbiased, ref_logits),
                          ("'logits' - 'logits_unbiased' vs fc.bias", biased - unbiased,
                           state["fc.bias"][None])):
    scale = np.max(np.abs(want))
    error = np.max(np.abs(got - want))
    print(f"torch-fidelity vs pytorch-fid at 299, {what}: max |diff| {error:.3g} "
          f"(max |ref| {scale:.3g})")
    assert error <= TOLERANCE * scale, what


def _variant_distances(model, state, images, pool) -> None:
  """How far the known FID-network variants move pool3 (relative to its largest entry)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  from pytorch_fid import inception  # pylint: disable=import-outside-toplevel

  tv = torchvision.models.inception
  mixed_5_6, mixed_7 = model.blocks[2], model.blocks[3]
  swaps = {
      "avg pools counting padding (torchvision's A/C/E blocks)":
          [(m, tv.InceptionA) for m in mixed_5_6[:3]] + [(m, tv.InceptionC) for m in mixed_5_6[4:]]
          + [(mixed_7[1], tv.InceptionE)],
      "avg pool in Mixed_7c (FIDInceptionE_1 instead of _2)":
          [(mixed_7[2], inception.FIDInceptionE_1)],
  }
  for what, pairs in swaps.items():
    originals = [(m, type(m)) for m, _ in pairs]
    for m, cls in pairs:
      m.__class__ = cls
    moved, _ = _pool3_and_logits(model, state, images)
    for m, cls in originals:
      m.__class__ = cls
    _report_variant(what, moved, pool)
  x = torch.nn.functional.interpolate(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                                      size=(299, 299), mode="bilinear", align_corners=True)
  model.resize_input = False
  moved, _ = _pool3_and_logits(model, state, x.numpy().transpose(0, 2, 3, 1))
  model.resize_input = True
  _report_variant("align_corners=True", moved, pool)


def _report_variant(what: str, moved: np.ndarray, pool: np.ndarray) -> None:
  distance = np.max(np.abs(moved - pool)) / np.max(pool)
  print(f"variant {what}: pool3 moves by {distance:.3g} of its max")
  assert distance > 100 * TOLERANCE, f"the reference does not tell {what} apart"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pth_dir", help="also keep the random-weight network's .pth files here")
  args = parser.parse_args()
  import pytorch_fid  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(1)
  print(f"torch {torch.__version__}, pytorch-fid {pytorch_fid.__version__}")

  shapes = _fid_state_dict_shapes()
  state = inception_state_dict(shapes, WEIGHTS_SEED)
  model = _fid_network(state)
  images = reference_images()
  pool, logits = _pool3_and_logits(model, state, images)
  print(f"pool3: mean {pool.mean():.3g}, max {pool.max():.3g}, zero {np.mean(pool == 0):.1%}; "
        f"logits: std {logits.std():.3g}")
  _variant_distances(model, state, images, pool)

  with tempfile.TemporaryDirectory() as tmp:
    pth_dir = args.pth_dir or tmp
    os.makedirs(pth_dir, exist_ok=True)
    for fmt in ("zip", "legacy"):
      _save_state(state, os.path.join(pth_dir, f"inception_{fmt}.pth"), legacy=fmt == "legacy")
    _torch_fidelity_check(state, model, os.path.join(pth_dir, "inception_zip.pth"))

  source = resize_source()
  resized = torch.nn.functional.interpolate(
      torch.from_numpy(source)[None, None], size=(299, 299), mode="bilinear",
      align_corners=False)[0, 0].numpy()
  np.savez_compressed(
      REFERENCE_PATH, weights_seed=np.array(WEIGHTS_SEED),
      state_dict_shapes=np.array(json.dumps(shapes)),
      weights_fingerprint=np.array(weights_fingerprint(state)), images=images, pool3=pool,
      logits_unbiased=logits, resized_source_every_3rd=resized[::3, ::3])
  _save_reader_files()
  print(f"wrote {REFERENCE_PATH} ({os.path.getsize(REFERENCE_PATH) / 1e3:.0f} kB), "
        f"{', '.join(READER_PATHS.values())}")


if __name__ == "__main__":
  main()
