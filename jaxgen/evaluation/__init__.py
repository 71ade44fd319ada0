"""Evaluation: evaluators (plug-ins run by the training loop and ``--mode=eval``) and the metric
kernels they use (arrays in, Python floats or small dicts out).

* evaluators, one file each, registered by name in ``EVALUATORS`` (``base``) and selected by
  ``config.eval.metrics``: ``heldout``, ``samples``, ``fid``, ``kid``, ``is`` (``inception_score``),
  ``precision_recall``, ``density_coverage``, ``mode_coverage``, ``density_plot``, ``interpolation``,
  ``ais``, ``per_example_nll``; FID reference statistics files: ``reference_stats``; what they share
  at one step: ``context.EvalContext``; the feature space of sample metrics: ``features``;
* kernels: Fréchet distance / FID, KID, Inception Score (``gaussian``, ``kid``,
  ``inception_score``); k-NN precision/recall, density/coverage (``manifold``, blocked
  ``distances``); mode coverage of Gaussian-mixture toy data (``mode_coverage``); likelihood
  bookkeeping: nats <-> bits/dim, model-space offsets, IWAE (``likelihood``);
* feature networks: FID Inception-v3 (``inception``, ``inception_weights``) and the shipped digits
  classifier (``digits_classifier``).

Every module in this package is imported here so that its ``@register(name)`` runs: a new
evaluator is one new file (docs/evaluation.md).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

# After the loop: these names are functions, not the evaluator modules of the same names.
from jaxgen.evaluation.base import EVALUATORS, Evaluator, default_config, fill_defaults, prepare, register, run
from jaxgen.evaluation.context import EvalContext, evaluate_samples
from jaxgen.evaluation.gaussian import GaussianAccumulator, fid_from_features, frechet_distance, gaussian_stats
from jaxgen.evaluation.inception_score import inception_score
from jaxgen.evaluation.kid import kid
from jaxgen.evaluation.likelihood import (
  bits_per_dim_to_nats,
  continuous_nll_to_bits_per_dim,
  iwae_log_likelihood,
  model_space_offset_nats,
  nats_to_bits_per_dim,
)
from jaxgen.evaluation.manifold import density_coverage, manifold_metrics, precision_recall
from jaxgen.evaluation.mode_coverage import mode_coverage

__all__ = [
    "EVALUATORS", "EvalContext", "Evaluator", "GaussianAccumulator", "bits_per_dim_to_nats",
    "continuous_nll_to_bits_per_dim", "default_config", "density_coverage", "evaluate_samples", "fid_from_features",
    "fill_defaults", "frechet_distance", "gaussian_stats", "inception_score", "iwae_log_likelihood", "kid",
    "manifold_metrics", "mode_coverage", "model_space_offset_nats", "nats_to_bits_per_dim", "precision_recall",
    "prepare", "register", "run",
]
