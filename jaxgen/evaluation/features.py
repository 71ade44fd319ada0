"""The feature space of sample-based metrics (``config.eval.features``), and the base class of the
metrics that compare generated and real examples there.

Spaces:

* ``data``: the examples themselves, flattened to ``[N, D]`` (no logits: no IS);
* ``digits_classifier``: the shipped classifier of 8x8 gray images (``digits_classifier``: 128-d
  penultimate features, 10 logits);
* ``inception``: FID Inception-v3 (2048-d pool3, 1008 logits) with the weights at
  ``eval.inception_weights``; an image is scored as the 8-bit PNG it is saved as;
* ``auto``: chosen from the modality and shape, never from the data set's name: points -> ``data``;
  images ``[8, 8, 1]`` -> ``digits_classifier``; other images -> ``inception``; text and audio have
  no feature space (a metric that needs one is a ``UserError``).

When the space is Inception and ``eval.inception_weights`` is empty, the metrics that need it are
skipped with one logged warning (training is not stopped for lack of a weight file); a path that
does not exist or holds other weights is a ``UserError`` at setup.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier
from jaxgen.evaluation.base import Evaluator
from jaxgen.evaluation.inception_weights import inception_features, load_inception_variables
from jaxgen.outputs import to_uint8

SPACES = ("auto", "data", "digits_classifier", "inception")
_DIGITS_SHAPE = (8, 8, 1)


@dataclasses.dataclass(frozen=True)
class Features:
  """Feature vectors ``[N, F]`` and, where the feature network classifies, logits ``[N, C]``."""

  features: np.ndarray
  logits: np.ndarray | None


def resolve(config: ml_collections.ConfigDict, spec: DataSpec) -> str:
  """The feature space ``eval.features`` names for this data (``auto`` resolved); ``""`` for none."""
  choice = config.eval.features
  if choice not in SPACES:
    raise UserError(f"eval.features={choice!r} is not a feature space; choose one of {', '.join(SPACES)}")
  if choice != "auto":
    return choice
  if spec.modality == "points":
    return "data"
  if spec.modality == "image":
    return "digits_classifier" if tuple(spec.shape) == _DIGITS_SHAPE else "inception"
  return ""


def available(config: ml_collections.ConfigDict, spec: DataSpec) -> bool:
  """False when the space is Inception and no weights are given (its metrics are then skipped)."""
  return not (resolve(config, spec) == "inception" and not config.eval.inception_weights)


def check_space(config: ml_collections.ConfigDict, spec: DataSpec, metric: str, needs_logits: bool) -> None:
  """Raises ``UserError`` when ``metric`` cannot be computed in the configured space on this data;
  loads the Inception weights (once per process) to check them when they are given."""
  space = resolve(config, spec)
  if not space:
    raise UserError(f"metric {metric!r} compares samples in a feature space, which {spec.modality} data "
                    f"({spec.name}) does not have; remove it from config.eval.metrics")
  if space == "data" and needs_logits:
    raise UserError(f"metric {metric!r} needs a classifier's logits, which eval.features=data "
                    f"({spec.name}) does not give; remove it from config.eval.metrics")
  if space != "data" and spec.modality != "image":
    raise UserError(f"eval.features={space} scores images, but {spec.name} holds {spec.modality}; "
                    "set --config.eval.features=data")
  if space == "digits_classifier" and tuple(spec.shape) != _DIGITS_SHAPE:
    raise UserError(f"eval.features=digits_classifier scores 8x8x1 images, not {spec.shape} ({spec.name}); "
                    "set --config.eval.features=inception or auto")
  if space == "inception":
    if spec.shape[-1] not in (1, 3):
      raise UserError(f"eval.features=inception scores gray or RGB images, not {spec.shape[-1]} channels "
                      f"({spec.name}); set --config.eval.features=data")
    if config.eval.inception_weights:
      load_inception_variables(config.eval.inception_weights)


def to_inception_input(x: np.ndarray, spec: DataSpec) -> np.ndarray:
  """Model-space images ``[N, H, W, C]`` -> the Inception network's input in [0, 1], through the
  8-bit PNG conversion of ``jaxgen.outputs.to_uint8``: published FIDs score image files
  (pytorch-fid reads them), so a sample is scored as it is saved. Real examples of 8-bit data
  sets are already on that grid: the rounding leaves them unchanged."""
  return to_uint8(x, spec).astype(np.float32) / 255.0


def extract(config: ml_collections.ConfigDict, spec: DataSpec, x: np.ndarray) -> Features:
  """Features of model-space examples ``x`` ``[N, *spec.shape]`` in the configured space."""
  x = np.asarray(x, np.float32)
  space = resolve(config, spec)
  if space == "data":
    return Features(x.reshape(x.shape[0], -1), None)
  if space == "digits_classifier":
    images = digits_classifier.to_classifier_input(x, spec)
    return Features(*digits_classifier.digits_features(images, batch_size=config.eval.batch_size))
  variables = load_inception_variables(config.eval.inception_weights)
  return Features(*inception_features(variables, to_inception_input(x, spec), config.eval.batch_size))


class FeatureMetric(Evaluator):
  """A metric of generated samples against real examples in the space of ``eval.features``
  (``ctx.fake_features``, ``ctx.real_features``)."""

  uses_features = True
  #: Whether the metric reads the feature network's logits (IS).
  needs_logits = False

  def min_samples(self, config: ml_collections.ConfigDict) -> int:
    """The fewest ``eval.num_samples`` the metric is defined for."""
    del config
    return 2

  def check(self, config, spec, family) -> None:
    check_space(config, spec, self.name, self.needs_logits)
    need = self.min_samples(config)
    if config.eval.num_samples < need:
      raise UserError(f"metric {self.name!r} needs eval.num_samples >= {need}, got {config.eval.num_samples}; "
                      f"set --config.eval.num_samples={max(need, 1000)}")
