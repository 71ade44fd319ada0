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

A space's :class:`Network` is identified by its name and the SHA-256 of its weights (stored with
FID reference statistics, ``reference_stats``). It runs on every device of the mesh: a chunk of
``B`` examples (``B`` a multiple of the device count, padded otherwise) is split over the devices,
each computes the features of its ``B / n`` rows, and every process receives all ``[B, F]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxgen import parallel
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier
from jaxgen.evaluation.base import Evaluator
from jaxgen.evaluation.inception import InceptionV3
from jaxgen.evaluation.inception_weights import load_inception_variables, sha256_of
from jaxgen.outputs import to_uint8

SPACES = ("auto", "data", "digits_classifier", "inception")
_DIGITS_SHAPE = (8, 8, 1)


@dataclasses.dataclass(frozen=True)
class Features:
  """Feature vectors ``[N, F]`` and, where the feature network classifies, logits ``[N, C]``."""

  features: np.ndarray
  logits: np.ndarray | None

  @staticmethod
  def concatenate(parts: list[Features]) -> Features:
    """The rows of ``parts`` in order."""
    logits = None if parts[0].logits is None else np.concatenate([p.logits for p in parts])
    return Features(np.concatenate([p.features for p in parts]), logits)


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


def extract(config: ml_collections.ConfigDict, spec: DataSpec, x: np.ndarray, mesh: Mesh | None = None) -> Features:
  """Features of model-space examples ``x`` ``[N, *spec.shape]`` (the same array on every process)
  in the configured space, ``eval.batch_size`` at a time over the devices of ``mesh`` (default: all)."""
  net = network(config, spec, mesh)
  x = np.asarray(x, np.float32)
  chunk = int(config.eval.batch_size)
  return Features.concatenate([net.of_examples(x[start:start + chunk]) for start in range(0, x.shape[0], chunk)])


@dataclasses.dataclass(frozen=True)
class Network:
  """The feature network of one space on one mesh.

  Attributes:
    space: ``data``, ``digits_classifier`` or ``inception``.
    sha256: hex SHA-256 of its weights (``""`` for ``data``): the Inception ``.pth`` (an ``.npz``
      conversion records it), the digits classifier's ``.npz``.
    dim: feature dimension ``F``.
    mesh: the devices it runs on (a 1-D ``data`` mesh, ``parallel.make_mesh``).
    to_input: model-space examples ``[B, *shape]`` -> the network's input (host, numpy).
    apply: jitted ``(variables, inputs [B, ...] sharded over the mesh) -> (features [B, F],
      logits [B, C] or None)``, replicated on every device.
    variables: its weights, replicated on the mesh.
  """

  space: str
  sha256: str
  dim: int
  mesh: Mesh
  to_input: Callable[[np.ndarray], np.ndarray]
  apply: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array | None]]
  variables: Any

  def of_inputs(self, inputs: jax.Array) -> Features:
    """Features of network inputs already laid out as a global array sharded over the mesh's
    ``data`` axis (``parallel.global_batch``); every process gets all rows."""
    features, logits = self.apply(self.variables, inputs)
    return Features(np.asarray(features), None if logits is None else np.asarray(logits))

  def of_examples(self, x: np.ndarray) -> Features:
    """Features of model-space examples ``x`` ``[B, *shape]``, the same array on every process."""
    n = x.shape[0]
    inputs = self.to_input(np.asarray(x, np.float32))
    inputs = np.pad(inputs, [(0, -n % self.mesh.size)] + [(0, 0)] * (inputs.ndim - 1))
    sharded = jax.make_array_from_callback(inputs.shape, parallel.batch_sharding(self.mesh), lambda i: inputs[i])
    out = self.of_inputs(sharded)
    return Features(out.features[:n], None if out.logits is None else out.logits[:n])


def network(config: ml_collections.ConfigDict, spec: DataSpec, mesh: Mesh | None = None) -> Network:
  """The feature network of ``eval.features`` on ``mesh`` (default: every device), built once."""
  return _network(resolve(config, spec), str(config.eval.inception_weights), spec, mesh or parallel.make_mesh())


def _flatten(variables, x):
  del variables
  return x.reshape(x.shape[0], -1), None


def _digits(variables, images):
  return digits_classifier.DigitsClassifier().apply(variables, images)


def _inception(variables, images):
  return InceptionV3(resize=True).apply(variables, images)


@functools.lru_cache(maxsize=None)
def _weights_sha256(path: str) -> str:
  """SHA-256 of a weights file; for a converted Inception ``.npz``, that of the ``.pth`` it records."""
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as npz:
      if "source_sha256" in npz.files:
        return str(npz["source_sha256"])
  return sha256_of(path)


def _to_rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


@functools.lru_cache(maxsize=8)
def _network(space: str, weights: str, spec: DataSpec, mesh: Mesh) -> Network:
  if space == "data":
    to_input, fn, variables, sha, dim = lambda x: x, _flatten, {}, "", spec.dims
  elif space == "digits_classifier":
    to_input = functools.partial(digits_classifier.to_classifier_input, spec=spec)
    fn, variables = _digits, {"params": digits_classifier.load_params()}
    sha, dim = _weights_sha256(str(digits_classifier.WEIGHTS_PATH)), digits_classifier.FEATURES
  elif space == "inception":
    to_input = lambda x: _to_rgb(to_inception_input(x, spec))  # noqa: E731
    fn, variables, sha, dim = _inception, load_inception_variables(weights), _weights_sha256(weights), 2048
  else:
    raise UserError(f"{spec.name} ({spec.modality}) has no feature space; set --config.eval.features=data")
  replicated = parallel.replicated(mesh)
  apply = jax.jit(fn, in_shardings=(replicated, parallel.batch_sharding(mesh)), out_shardings=replicated)
  return Network(space, sha, dim, mesh, to_input, apply, jax.device_put(variables, replicated))


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

  def real_examples_needed(self, config: ml_collections.ConfigDict) -> int:
    """The fewest real examples (``ctx.real_features``: the first ``eval.num_samples`` of the test
    split) the metric is defined for; 0 for a metric that reads none."""
    return self.min_samples(config)

  def check(self, config, spec, family) -> None:
    check_space(config, spec, self.name, self.needs_logits)
    need = self.min_samples(config)
    if config.eval.num_samples < need:
      raise UserError(f"metric {self.name!r} needs eval.num_samples >= {need}, got {config.eval.num_samples}; "
                      f"set --config.eval.num_samples={max(need, 1000)}")
