"""Raw examples -> model space (the conventions of :mod:`jaxgen.data.spec`), driven by ``config.data``.

Images, with ``L`` raw levels, intensity ``raw / (L - 1)`` and ``(lo, hi) = value_range``:

* ``binarize="static"``: ``raw <- [intensity > 0.5]`` (the same every time), ``L <- 2``.
* ``binarize="dynamic"``: ``raw <- [u < intensity]``, ``u ~ U[0, 1)`` drawn anew each time the
  example is drawn (Bernoulli(intensity)), ``L <- 2``.
* Binary data (``L = 2``, binarized or natively binary) always lives in ``[0, 1]``; otherwise
  ``scale`` picks ``[-1,1]`` or ``[0,1]``.
* Without dequantization ``x = lo + (hi - lo) * raw / (L - 1)``; with it
  ``x = lo + (hi - lo) * (raw + u) / L``, ``u`` uniform on the midpoints of a grid of
  ``DEQUANT_GRID`` cells of ``[0, 1)`` (see :func:`_dequantization_noise`). Then ``x`` lies in
  ``[lo, hi)`` and ``floor((x - lo) / (hi - lo) * L) = raw`` exactly in float32.
* ``random_flip`` (training batches only): each image is mirrored horizontally (``x[:, ::-1]``)
  with probability 1/2, drawn after the noise above from the same Generator (so the other draws do
  not change when flips are switched on).

Points stay float32 and tokens (text, audio) int32, unchanged. Noise comes from a numpy Generator
the caller seeds; it is drawn for the whole global batch and sliced to this process's rows, so the
shards of any process count concatenate to the same global batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

SCALES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}
BINARIZE = ("none", "static", "dynamic")
#: Dequantization noise takes DEQUANT_GRID values per level. float32 ``x`` carries a rounding
#: error of ~1e-5 of a level (for L = 256); the grid keeps ``raw + u`` at least 1 / (2 *
#: DEQUANT_GRID) ~ 1.2e-4 of a level away from the level's edges, so ``x < hi`` and ``floor``
#: recovers ``raw`` exactly, while the noise stays uniform at a resolution of 1/4096 of a level.
DEQUANT_GRID = 4096


class Preprocessor:
  """Maps raw batches of one data set to model space.

  Attributes:
    raw_spec: the data set's spec before preprocessing.
    spec: the model-space spec (``levels``, ``value_range``, ``dequantized`` filled in).
  """

  def __init__(self, raw_spec: DataSpec, data_config):
    self.raw_spec = raw_spec
    self._binarize = str(data_config.binarize)
    self._dequantize = bool(data_config.dequantize)
    self._random_flip = bool(data_config.get("random_flip", False))
    scale = str(data_config.scale).replace(" ", "")
    if scale not in SCALES:
      raise UserError(f"data.scale={data_config.scale!r} is not one of {list(SCALES)}: set one of them")
    if self._binarize not in BINARIZE:
      raise UserError(
          f"data.binarize={self._binarize!r} is not one of {list(BINARIZE)}: set one of them")
    if raw_spec.modality != "image":
      if self._binarize != "none" or self._dequantize or self._random_flip:
        raise UserError(
            f"data.binarize / data.dequantize / data.random_flip apply to images, and "
            f"{raw_spec.name!r} holds {raw_spec.modality}: set data.binarize='none', "
            "data.dequantize=False and data.random_flip=False")
      self.spec = raw_spec
      return
    levels = 2 if self._binarize != "none" else raw_spec.levels
    value_range = (0.0, 1.0) if levels == 2 else SCALES[scale]
    self.spec = dataclasses.replace(
        raw_spec, levels=levels, value_range=value_range, dequantized=self._dequantize)
    # Without dequantization x depends on the level only: a table, level -> x.
    self._levels = None if self._dequantize else self._model_space(np.arange(levels, dtype=np.float32))

  @property
  def uses_noise(self) -> bool:
    """Whether :meth:`__call__` draws random numbers (dynamic binarization, dequantization,
    random flips)."""
    return self.raw_spec.modality == "image" and (
        self._binarize == "dynamic" or self._dequantize or self._random_flip)

  def __call__(self, raw: dict[str, np.ndarray], rng: np.random.Generator | None, rows: slice,
               global_size: int, train: bool = False) -> dict[str, np.ndarray]:
    """Model-space batch from raw examples.

    Args:
      raw: ``"x"`` ``[b, *shape]`` raw examples (rows ``rows`` of a global batch) and optionally
        ``"label"`` ``[b]``.
      rng: the global batch's Generator (used, identically whatever ``rows`` is, only when
        :attr:`uses_noise`).
      rows: which rows of the global batch ``raw`` holds.
      global_size: the global batch size (the noise is drawn for all of it).
      train: a training batch (random flips apply to training batches only).

    Returns:
      ``{"x": float32 [b, *shape] (int32 for text/audio), "label": int32 [b] (if present)}``.
    """
    out = {}
    if "label" in raw:
      out["label"] = np.asarray(raw["label"], np.int32)
    modality = self.raw_spec.modality
    if modality == "points":
      out["x"] = np.asarray(raw["x"], np.float32)
      return out
    if modality != "image":
      out["x"] = np.asarray(raw["x"], np.int32)
      return out
    shape = (global_size, *self.raw_spec.shape)
    x = np.asarray(raw["x"])
    if self._binarize != "none":
      intensity = x.astype(np.float32) / (self.raw_spec.levels - 1)
      x = (intensity > 0.5 if self._binarize == "static"
           else rng.random(shape, dtype=np.float32)[rows] < intensity).view(np.uint8)
    if self._dequantize:
      out["x"] = self._model_space(x.astype(np.float32) + _dequantization_noise(rng, shape)[rows])
    else:  # the values of _model_space, looked up: one pass instead of three
      out["x"] = np.take(self._levels, x)
    if train and self._random_flip:
      flip = rng.random(global_size)[rows] < 0.5
      out["x"][flip] = out["x"][flip, :, ::-1]
    return out

  def _model_space(self, level: np.ndarray) -> np.ndarray:
    """``lo + (hi - lo) * level / denominator`` (float32 ``level``; module docstring)."""
    denominator = self.spec.levels - (0 if self._dequantize else 1)
    lo, hi = self.spec.value_range
    # One rounding: the numerator is exact in float32 (hi - lo and lo are small integers, level
    # has at most 21 significant bits).
    return ((hi - lo) * level + lo * denominator) / np.float32(denominator)


def _dequantization_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  """``u = (k + 1/2) / DEQUANT_GRID`` with ``k`` uniform in ``{0, ..., DEQUANT_GRID - 1}``."""
  k = rng.integers(0, DEQUANT_GRID, shape, dtype=np.uint16)
  return (k.astype(np.float32) + 0.5) * np.float32(1 / DEQUANT_GRID)
