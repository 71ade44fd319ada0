"""Evaluation metrics in JAX: arrays in, Python floats (or small dicts) out.

* Fréchet distance / FID, KID, Inception Score on features (``gaussian``, ``kid``,
  ``inception_score``);
* k-NN manifold metrics: precision/recall, density/coverage (``manifold``, blocked ``distances``);
* mode coverage of Gaussian-mixture toy data (``mode_coverage``);
* likelihood bookkeeping: nats <-> bits/dim, model-space offsets, IWAE (``likelihood``);
* feature networks: FID Inception-v3 (``inception``, ``inception_weights``) and the shipped digits
  classifier (``digits_classifier``);
* ``evaluate_samples`` / ``SampleEvaluator``: the metrics named in ``config.eval.metrics``, in the
  feature space suited to the data set (``evaluator``).
"""

from jaxgen.evaluation.evaluator import (EVAL_DEFAULTS, METRICS, SampleEvaluator,
                                         evaluate_samples)
from jaxgen.evaluation.gaussian import (GaussianAccumulator, fid_from_features, frechet_distance,
                                        gaussian_stats)
from jaxgen.evaluation.inception_score import inception_score
from jaxgen.evaluation.kid import kid
from jaxgen.evaluation.likelihood import (bits_per_dim_to_nats, continuous_nll_to_bits_per_dim,
                                          iwae_log_likelihood, model_space_offset_nats,
                                          nats_to_bits_per_dim)
from jaxgen.evaluation.manifold import density_coverage, manifold_metrics, precision_recall
from jaxgen.evaluation.mode_coverage import mode_coverage

__all__ = [
    "EVAL_DEFAULTS", "METRICS", "GaussianAccumulator", "SampleEvaluator", "bits_per_dim_to_nats",
    "continuous_nll_to_bits_per_dim", "density_coverage", "evaluate_samples", "fid_from_features",
    "frechet_distance", "gaussian_stats", "inception_score", "iwae_log_likelihood", "kid",
    "manifold_metrics", "mode_coverage", "model_space_offset_nats", "nats_to_bits_per_dim",
    "precision_recall",
]


def default_config() -> dict:
  """The ``config.eval`` defaults declared by the registered evaluators, ``{name: {field: value}}``
  (merged by ``config_defaults.base``)."""
  return {}
