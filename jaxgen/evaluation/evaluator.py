"""Sample-based metrics by name, computed in the feature space that suits the data set.

Feature space, chosen by the ``DataSpec``:

* ``modality="points"`` (``toy2d/*``): the data space itself (no logits: no IS);
* ``digits``: the shipped digits classifier (128-d penultimate features, 10 logits);
* other images: FID Inception-v3 (2048-d pool3, 1008 logits) with the weights at
  ``eval.inception_weights``. When that is empty, the metrics that need Inception are skipped with
  one logged warning (training is not stopped for lack of a weight file); a path that does not
  exist or holds other weights raises ``UserError``.

Metric names (``config.eval.metrics``) and the keys they produce:
``fid -> fid``, ``kid -> kid_mean, kid_std``, ``is -> is_mean, is_std``,
``precision_recall -> precision, recall``, ``density_coverage -> density, coverage``,
``mode_coverage -> modes, high_quality, reverse_kl`` (Gaussian-mixture ``toy2d`` sets only).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import digits_classifier
from jaxgen.evaluation.distances import DEFAULT_BLOCK_SIZE
from jaxgen.evaluation.gaussian import fid_from_features
from jaxgen.evaluation.inception_score import inception_score
from jaxgen.evaluation.inception_weights import inception_features, load_inception_variables
from jaxgen.evaluation.kid import kid
from jaxgen.evaluation.manifold import manifold_metrics
from jaxgen.evaluation.mode_coverage import mode_coverage
from jaxgen.outputs import to_uint8
from jaxgen.registry import Registry

_log = logging.getLogger(__name__)

#: ``config.eval`` fields read here, with the values used when a config lacks them.
EVAL_DEFAULTS = {
    "batch_size": 256,  # feature-network batch size
    "inception_weights": "",  # pt_inception-2015-12-05-6726825d.pth or its .npz conversion
    "block_size": DEFAULT_BLOCK_SIZE,  # rows per block of the pairwise distances
    "pr_k": 3,  # neighbours for precision / recall
    "dc_k": 5,  # neighbours for density / coverage
    "kid_subsets": 100,
    "kid_subset_size": 1000,
    "is_splits": 10,
    "mode_threshold": 3.0,  # mode_coverage: high quality within this many stds of a mode
}

_UNAVAILABLE = ("unavailable: set --config.eval.inception_weights=PATH (convert with "
                "experiments/convert_inception_weights.py)")


def to_inception_input(x: np.ndarray, spec: DataSpec) -> np.ndarray:
  """Model-space images ``[N, H, W, C]`` -> the Inception network's input in [0, 1], through the
  8-bit PNG conversion of ``jaxgen.outputs.to_uint8``: published FIDs score image files
  (pytorch-fid reads them), so a sample is scored as it is saved. Real examples of 8-bit data
  sets are already on that grid: the rounding leaves them unchanged."""
  return to_uint8(x, spec).astype(np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class Features:
  """Feature vectors ``[N, F]`` and, where the feature network classifies, logits ``[N, C]``."""

  features: np.ndarray
  logits: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Context:
  """What a metric sees: generated and real features, raw samples, spec and settings."""

  fake: Features
  real: Features | None
  samples: np.ndarray
  spec: DataSpec
  settings: dict


@dataclasses.dataclass(frozen=True)
class Metric:
  fn: Callable[[Context], dict[str, float]]
  needs_real: bool = True
  needs_logits: bool = False
  needs_network: bool = True  # runs on feature-network outputs (not on raw samples)


#: Metric name -> Metric; ``config.eval.metrics`` names entries of this registry.
METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, **kwargs) -> Callable:
  def decorator(fn):
    METRICS.register(name)(Metric(fn, **kwargs))
    return fn

  return decorator


@_register("fid")
def _fid(ctx: Context) -> dict[str, float]:
  return {"fid": fid_from_features(ctx.real.features, ctx.fake.features)}


@_register("kid")
def _kid(ctx: Context) -> dict[str, float]:
  mean, std = kid(ctx.real.features, ctx.fake.features, ctx.settings["kid_subsets"],
                  ctx.settings["kid_subset_size"])
  return {"kid_mean": mean, "kid_std": std}


@_register("is", needs_real=False, needs_logits=True)
def _is(ctx: Context) -> dict[str, float]:
  splits = min(ctx.settings["is_splits"], ctx.fake.logits.shape[0])
  mean, std = inception_score(ctx.fake.logits, splits)
  return {"is_mean": mean, "is_std": std}


@_register("precision_recall")
def _precision_recall(ctx: Context) -> dict[str, float]:
  return manifold_metrics(ctx.real.features, ctx.fake.features, pr_k=ctx.settings["pr_k"],
                          dc_k=None, block_size=ctx.settings["block_size"])


@_register("density_coverage")
def _density_coverage(ctx: Context) -> dict[str, float]:
  return manifold_metrics(ctx.real.features, ctx.fake.features, pr_k=None,
                          dc_k=ctx.settings["dc_k"], block_size=ctx.settings["block_size"])


@_register("mode_coverage", needs_real=False, needs_network=False)
def _mode_coverage(ctx: Context) -> dict[str, float]:
  means, std = _mixture_modes(ctx.spec)
  out = mode_coverage(ctx.samples, means, std, ctx.settings["mode_threshold"])
  return {k: float(v) for k, v in out.items()}


def _mixture_modes(spec: DataSpec) -> tuple[np.ndarray, float]:
  from jaxgen.data import toy2d  # pylint: disable=import-outside-toplevel

  try:
    return toy2d.mixture_modes(spec.name)
  except KeyError as e:
    raise UserError(f"metric 'mode_coverage' needs a Gaussian-mixture toy2d data set "
                    f"(toy2d/ring8, toy2d/grid25, toy2d/8gaussians), not {spec.name!r}") from e


def _settings(eval_config) -> dict:
  get = eval_config.get if eval_config is not None else (lambda name, default: default)
  return {name: type(default)(get(name, default)) for name, default in EVAL_DEFAULTS.items()}


class SampleEvaluator:
  """Computes named metrics of generated samples against a fixed real set.

  The real set's features are computed once, here; call the evaluator with each new batch of
  samples (e.g. at every periodic evaluation). Samples and real data are in model space
  (``jaxgen.data.spec``): images ``[N, H, W, C]``, points ``[N, D]``.
  """

  def __init__(self, metric_names: Sequence[str], real: np.ndarray, spec: DataSpec,
               eval_config=None):
    self.spec = spec
    self.settings = _settings(eval_config)
    self.metrics = {name: METRICS.get(name) for name in metric_names}
    if spec.modality not in ("points", "image"):
      raise UserError(f"sample metrics {list(self.metrics)} are defined for images and points, "
                      f"not {spec.modality} data; set config.eval.metrics=()")
    for name, metric in self.metrics.items():
      if metric.needs_logits and spec.modality == "points":
        raise UserError(f"metric {name!r} needs a classifier's logits: not available for "
                        f"{spec.name}")
      if name == "mode_coverage":
        _mixture_modes(spec)
    self._inception = None
    self.unavailable = False
    if spec.modality == "image" and spec.name != "digits":
      path = self.settings["inception_weights"]
      if not path and any(m.needs_network for m in self.metrics.values()):
        self.unavailable = True
        _log.warning("metrics %s on %s are %s", [n for n, m in self.metrics.items()
                                                   if m.needs_network], spec.name, _UNAVAILABLE)
      elif path:
        self._inception = load_inception_variables(path)
    needs_real = any(m.needs_real for m in self.metrics.values())
    self.real = self._features(real) if needs_real and not self.unavailable else None

  def _features(self, x: np.ndarray) -> Features:
    x = np.asarray(x, np.float32)
    if tuple(x.shape[1:]) != tuple(self.spec.shape):
      raise UserError(f"expected examples of shape {self.spec.shape}, got {x.shape[1:]}")
    if self.spec.modality == "points":
      return Features(x.reshape(x.shape[0], -1), None)
    if self.spec.name == "digits":
      images = digits_classifier.to_classifier_input(x, self.spec)
      return Features(*digits_classifier.digits_features(images,
                                                         batch_size=self.settings["batch_size"]))
    return Features(*inception_features(self._inception, to_inception_input(x, self.spec),
                                        self.settings["batch_size"]))

  def __call__(self, samples: np.ndarray) -> dict[str, float]:
    """``{key: value}`` for every metric (keys in the module docstring); metrics that need the
    Inception network are absent when it is unavailable."""
    samples = np.asarray(samples)
    runnable = {n: m for n, m in self.metrics.items()
                if not (self.unavailable and m.needs_network)}
    fake = (self._features(samples) if any(m.needs_network for m in runnable.values())
            else Features(samples, None))
    ctx = Context(fake=fake, real=self.real, samples=samples, spec=self.spec,
                  settings=self.settings)
    out: dict[str, float] = {}
    for metric in runnable.values():
      out.update(metric.fn(ctx))
    return out


def evaluate_samples(metric_names: Sequence[str], samples: np.ndarray, real: np.ndarray,
                     spec: DataSpec, eval_config=None) -> dict[str, float]:
  """One-shot ``SampleEvaluator(metric_names, real, spec, eval_config)(samples)``."""
  return SampleEvaluator(metric_names, real, spec, eval_config)(samples)
