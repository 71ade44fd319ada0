"""What a data set looks like to a model family: :class:`DataSpec`, and :class:`RawData`.

Model space
-----------
Families see ``batch["x"]`` in *model space*:

* ``modality="image"``: float32 ``[H, W, C]``. Raw values are integers in ``{0, ..., levels-1}``
  (256 for 8-bit images, 17 for scikit-learn's digits, 2 for binarized data) mapped affinely to
  ``value_range`` (``(-1, 1)`` or ``(0, 1)``). Without dequantization ``x = lo + (hi-lo) * raw /
  (levels-1)``; with uniform dequantization ``x = lo + (hi-lo) * (raw + u) / levels``, ``u ~ U[0,1)``,
  so a continuous density on ``x`` bounds the discrete likelihood of ``raw`` (Theis et al. 2016).
* ``modality="points"``: float32 ``[D]`` (the ``toy2d/*`` sets, D = 2), used as they are.
* ``modality="text"`` / ``"audio"``: int32 tokens ``[T]`` in ``{0, ..., levels-1}`` (characters,
  mu-law codes).

``batch["label"]`` (int32 ``[B]``) is present when ``num_classes > 0``; ``batch["mask"]``
(float32 ``[B]``, 1 for real examples, 0 for padding) is present in evaluation batches.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Static description of one data set in model space (see the module docstring)."""

  name: str
  modality: str  # "image" | "points" | "text" | "audio"
  shape: tuple[int, ...]  # shape of one example's "x"
  levels: int = 0  # number of discrete raw values per dimension (0 for continuous points)
  value_range: tuple[float, float] = (-1.0, 1.0)  # model-space range of images
  dequantized: bool = False  # uniform dequantization applied to images
  num_classes: int = 0  # labels available when > 0
  vocab: tuple[str, ...] = ()  # text: the character of each token id
  sample_rate: int = 0  # audio: samples per second

  @property
  def dims(self) -> int:
    """Number of dimensions of one example (the D in bits/dim)."""
    return int(np.prod(self.shape))

  @property
  def is_discrete(self) -> bool:
    return self.modality in ("text", "audio")


@dataclasses.dataclass(frozen=True)
class RawData:
  """A data set held in memory: raw arrays per split plus its spec (what most loaders return).

  ``train`` and ``test`` map feature names to arrays with a leading example axis: ``"x"`` in raw
  form (integer images ``[N, H, W, C]`` in ``{0..levels-1}``, float points ``[N, D]``, int tokens
  ``[N, T]``) and optionally ``"label"`` ``[N]``. ``spec`` describes raw data before preprocessing
  (its ``value_range`` / ``dequantized`` are filled in by the pipeline from ``config.data``).
  """

  train: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  spec: DataSpec
