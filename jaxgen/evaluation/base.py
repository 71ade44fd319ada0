"""Evaluators: named plug-ins that score a training state, run by the loop and by ``--mode=eval``.

An evaluator is a subclass of :class:`Evaluator` in its own file of ``jaxgen/evaluation/``,
registered by name with ``@register("name")``. It declares

* ``defaults()``: its settings, the group ``config.eval.<name>`` (one place only), among them
  ``every``: the period in training steps (0 = only at the end of training);
* ``check(config, spec, family)``: its preconditions, raising ``UserError`` before training starts
  (a metric that cannot run on this data must not fail only after a long run);
* ``run(ctx) -> {key: float}``: its numbers for the state in ``ctx`` (an
  :class:`jaxgen.evaluation.context.EvalContext`); evaluators that write files return ``{}``.
  Python, numpy and JAX scalars are stored as floats; anything else (an array, a string, ``None``)
  is a ``TypeError`` naming the evaluator, raised before anything of that step is written.

``config.eval.metrics`` names the evaluators to run. At every step where ``eval.<name>.every``
divides the step, and for all of them at the end of training, the due ones share one context
(one set of generated samples and their features) and the union of their outputs is written to
``eval/step_<N>.json``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import ml_collections
import numpy as np

from jaxgen.errors import UserError
from jaxgen.registry import Registry

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
  from jaxgen.data.spec import DataSpec
  from jaxgen.evaluation.context import EvalContext

#: ``config.eval`` fields shared by the evaluators (each evaluator's own are in its group).
SHARED_DEFAULTS = {
    "metrics": ("heldout", "samples"),  # evaluators to run, by name (see docs/evaluation.md)
    "batch_size": 256,  # held-out batches and sample / feature-network chunks
    "num_batches": 0,  # held-out batches for the loss / likelihood (0 = the whole test split)
    "num_samples": 1000,  # samples drawn (and real examples used) by sample-based metrics
    "features": "auto",  # feature space of sample metrics: auto | data | digits_classifier | inception
    "inception_weights": "",  # FID Inception-v3 weights (.pth or converted .npz); "" = skip those metrics
    "block_size": 1024,  # rows per block of the pairwise distances (bounds memory)
    # FID reference statistics (docs/evaluation.md#reference-statistics)
    "reference_stats": "",  # .npz of mu/sigma FID compares against ("" = the real examples' features)
    "reference_stats_split": "train",  # split --mode=reference_stats streams: train | test
    "reference_stats_out": "",  # file --mode=reference_stats writes ("" = <workdir>/reference_stats/<split>.npz)
}


class Evaluator:
  """Base class of evaluators; see the module docstring. Instances are made once per run."""

  #: The registered name (set by :func:`register`): ``config.eval.metrics`` entry and settings group.
  name: str = ""
  #: Whether ``run`` compares samples in the feature space of ``config.eval.features``: such
  #: evaluators are skipped (with one warning) when that space is Inception and no weights are given.
  uses_features: bool = False
  #: Whether ``run`` reads only the Gaussian statistics ``ctx.fake_stats`` / ``ctx.real_stats`` (FID):
  #: when every due feature metric does, generated features are streamed into them, never held.
  only_gaussian_stats: bool = False

  @classmethod
  def defaults(cls) -> dict:
    """The fields of ``config.eval.<name>``; ``every`` (training steps, 0 = only at the end) at least."""
    return {"every": 0}

  def settings(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """This evaluator's group ``config.eval.<name>``."""
    return config.eval[self.name]

  def every(self, config: ml_collections.ConfigDict) -> int:
    """The period in training steps, ``eval.<name>.every`` (``<= 0``: only at the end of training)."""
    return int(self.settings(config).every)

  def check(self, config: ml_collections.ConfigDict, spec: DataSpec, family: Any) -> None:
    """Raises ``UserError`` when this evaluator cannot run on ``spec`` / ``family`` (``family`` is
    None when only arrays of samples are scored)."""

  def run(self, ctx: EvalContext) -> dict[str, float]:
    """``{key: value}`` for the state in ``ctx``."""
    raise NotImplementedError


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")


def register(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
  """Class decorator: registers an :class:`Evaluator` subclass as ``name``.

  Raises:
    ValueError: ``name`` is taken or is a shared ``config.eval`` field (``metrics``, ``features``,
      ...: its group would replace the field), or ``defaults()`` declares no ``every``.
  """

  def decorator(cls: type[Evaluator]) -> type[Evaluator]:
    if name in SHARED_DEFAULTS:
      raise ValueError(f"evaluator {name!r} is named like the shared field eval.{name}, which its settings "
                       "group would replace: choose another name")
    if "every" not in cls.defaults():
      raise ValueError(f"evaluator {name!r}: defaults() declares no 'every' (its period in training steps, "
                       "0 = only at the end of training): add it")
    cls.name = name
    return EVALUATORS.register(name)(cls)

  return decorator


def default_config() -> dict:
  """``config.eval`` defaults: the shared fields plus ``{name: defaults()}`` of every registered
  evaluator (merged by ``config_defaults.base``)."""
  return {**SHARED_DEFAULTS, **{name: EVALUATORS.get(name).defaults() for name in EVALUATORS.names()}}


def fill_defaults(config: ml_collections.ConfigDict) -> None:
  """Adds the missing ``config.eval.<name>`` groups of evaluators registered after ``config`` was
  built (e.g. by a test or a user's module), so their settings can be read like any other."""
  with config.unlocked():
    for name in EVALUATORS.names():
      if name not in config.eval:
        config.eval[name] = ml_collections.ConfigDict(EVALUATORS.get(name).defaults())


def prepare(config: ml_collections.ConfigDict, spec: DataSpec, family: Any, num_real: int) -> list[Evaluator]:
  """The evaluators of ``config.eval.metrics``, checked against the data and family.

  ``num_real``: the real examples there are to compare samples with (the test split's size).
  Raises ``UserError`` for an unknown name or an unmet precondition, e.g. a test split smaller
  than a feature metric needs (before training, not after it). Evaluators that need the
  Inception network while ``eval.inception_weights`` is empty are left out, with one warning.
  """
  from jaxgen.evaluation import features  # pylint: disable=import-outside-toplevel

  fill_defaults(config)
  evaluators = [EVALUATORS.get(name)() for name in dict.fromkeys(config.eval.metrics)]
  for evaluator in evaluators:
    evaluator.check(config, spec, family)
  skipped = [e.name for e in evaluators if e.uses_features and not features.available(config, spec)]
  if skipped:
    _log.warning("metrics %s on %s are unavailable: set --config.eval.inception_weights=PATH "
                 "(convert with experiments/convert_inception_weights.py)", skipped, spec.name)
  evaluators = [e for e in evaluators if e.name not in skipped]
  # Feature metrics read the first eval.num_samples real examples; their checks above already
  # required eval.num_samples >= what each needs, so the test split is what can fall short.
  needs = {e.name: e.real_examples_needed(config) for e in evaluators if isinstance(e, features.FeatureMetric)}
  readers = [name for name, need in needs.items() if need]
  for name in readers:
    if num_real < needs[name]:
      raise UserError(f"metric {name!r} needs >= {needs[name]} real examples, and the test split of "
                      f"{spec.name} has {num_real}: add test examples (a larger data.test_fraction, or a "
                      f"test/ folder) or remove {name!r} from config.eval.metrics")
  if readers and num_real < config.eval.num_samples:
    _log.warning("metrics %s compare eval.num_samples=%d samples with the %d examples of the test split "
                 "of %s", readers, config.eval.num_samples, num_real, spec.name)
  return evaluators


def _numbers(name: str, out: Any) -> dict[str, float]:
  """``out`` of evaluator ``name`` as ``{key: float}``: real scalars (Python, numpy, JAX 0-d arrays)
  become floats; anything else is a ``TypeError`` naming the evaluator and the key."""
  if not isinstance(out, Mapping):
    raise TypeError(f"evaluator {name!r} returned {type(out).__name__}, not a dict of numbers "
                    "(return {} when it reports none)")
  numbers = {}
  for key, value in out.items():
    array = np.asarray(value)
    if not isinstance(key, str) or array.ndim or array.dtype.kind not in "biuf":
      what = f"{type(value).__name__} of shape {array.shape} and dtype {array.dtype}"  # never a multi-line repr
      raise TypeError(f"evaluator {name!r} reports {key!r} = a {what}, not a real number: return "
                      "{name: float(value)}, one key per number")
    numbers[key] = float(array)
  return numbers


def run(evaluators: list[Evaluator], ctx: EvalContext) -> dict[str, float]:
  """The union of the outputs of ``evaluators`` on one shared context, as floats."""
  ctx.stream_stats = all(e.only_gaussian_stats for e in evaluators if e.uses_features)
  results: dict[str, float] = {}
  for evaluator in evaluators:
    out = _numbers(evaluator.name, evaluator.run(ctx))
    clash = sorted(set(out) & set(results))
    if clash:
      raise ValueError(f"evaluator {evaluator.name!r} reports {clash}, already reported by another")
    results.update(out)
  return results
