"""A small CNN classifier of the embedded ``digits`` set: the feature network of FID, KID, IS and
precision/recall on ``digits`` (Inception-v3 on 8x8 images would be meaningless).

Input: images ``[N, 8, 8, 1]`` with values ``raw / 16`` in [0, 1] (``raw`` in ``{0, ..., 16}``).
Output: ``(features [N, 128], logits [N, 10])``, the features being the penultimate (ReLU) layer.
The weights ship with the package (``weights/digits_classifier.npz``, ~0.6 MB), trained
deterministically by ``experiments/train_digits_classifier.py`` on the ``digits`` training split
(the first 1500 images); its test-split accuracy is checked by the tests (>= 97%).
"""

from __future__ import annotations

import functools
import pathlib

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data.spec import DataSpec

WEIGHTS_PATH = pathlib.Path(__file__).parent / "weights" / "digits_classifier.npz"
#: Gray levels of the raw digits images.
DIGITS_LEVELS = 17
FEATURES = 128
NUM_CLASSES = 10


class DigitsClassifier(nn.Module):
  """conv3x3(32) -> conv3x3/2(64) -> dense(128) = features -> dense(10) = logits, ReLUs; dropout
  0.5 before each dense layer when ``train`` (needs a ``"dropout"`` rng)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2), name="conv2")(x))
    x = nn.Dropout(0.5, deterministic=not train)(x.reshape(x.shape[0], -1))
    features = nn.relu(nn.Dense(FEATURES, name="fc1")(x))
    logits = nn.Dense(NUM_CLASSES, name="fc2")(nn.Dropout(0.5, deterministic=not train)(features))
    return features, logits


def save_params(params, path: str | pathlib.Path = WEIGHTS_PATH) -> None:
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  np.savez(path, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


@functools.lru_cache(maxsize=1)
def load_params(path: str | pathlib.Path = WEIGHTS_PATH) -> dict:
  """The shipped (or given) classifier parameters."""
  with np.load(path, allow_pickle=False) as npz:
    flat = {k: jnp.asarray(npz[k]) for k in npz.files}
  return flax.traverse_util.unflatten_dict(flat, sep="/")


@jax.jit
def _apply(params, images):
  return DigitsClassifier().apply({"params": params}, images)


def to_classifier_input(x, spec: DataSpec) -> np.ndarray:
  """Model-space digits ``[N, 8, 8, 1]`` -> the classifier's ``raw / 16`` scale.

  Inverts the pipeline's mapping (``jaxgen.data.spec``): ``u = (x - lo) / (hi - lo)`` is
  ``raw / (levels - 1)`` without dequantization and ``(raw + noise) / levels`` with it, whose
  bin centre is ``raw = u * levels - 1/2``. The estimate of ``raw`` is clipped to the raw range and
  rescaled to ``[0, 1]`` (binarized data, ``levels = 2``, maps to {0, 1}).
  """
  lo, hi = spec.value_range
  u = (np.asarray(x, np.float32) - lo) / (hi - lo)
  levels = spec.levels if spec.levels > 1 else DIGITS_LEVELS
  raw = u * levels - 0.5 if spec.dequantized else u * (levels - 1)
  return np.clip(raw / (levels - 1), 0.0, 1.0)


def digits_features(images, params=None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """``(features [N, 128], logits [N, 10])`` of images ``[N, 8, 8, 1]`` in the ``raw / 16`` scale."""
  params = load_params() if params is None else params
  images = np.asarray(images, np.float32)
  feats, logits = [], []
  for start in range(0, images.shape[0], batch_size):
    f, l = _apply(params, images[start:start + batch_size])
    feats.append(np.asarray(f))
    logits.append(np.asarray(l))
  return np.concatenate(feats), np.concatenate(logits)
