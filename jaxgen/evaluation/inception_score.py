"""Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split, and the evaluator ``is``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric, check_space


@jax.jit
def _split_score(logits):
  """``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the split's mean prediction; 0 log 0 = 0."""
  p = jax.nn.softmax(logits.astype(jnp.float64), axis=-1)
  p_y = jnp.mean(p, axis=0, keepdims=True)
  kl = jnp.sum(jax.scipy.special.xlogy(p, p) - jax.scipy.special.xlogy(p, p_y), axis=-1)
  return jnp.exp(jnp.mean(kl))


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """IS ``(mean, std)`` over ``splits`` consecutive chunks of ``logits`` ``[N, C]``.

  Chunk ``i`` is rows ``[i N // splits, (i+1) N // splits)`` and the std is the population std,
  as in the reference code. Logits may be ``-inf`` (probability exactly 0): ``0 log 0`` counts as
  0, so uniform predictions score 1 and balanced one-hot predictions over C classes score C.
  """
  logits = np.asarray(logits)
  n = logits.shape[0]
  if logits.ndim != 2 or not 1 <= splits <= n:
    raise UserError(f"inception_score needs logits [N, C] with N >= splits={splits}, "
                    f"got shape {logits.shape}")
  with jax.enable_x64(True):
    scores = np.array([float(_split_score(logits[i * n // splits:(i + 1) * n // splits]))
                       for i in range(splits)])
  return float(scores.mean()), float(scores.std())


@register("is")
class InceptionScore(FeatureMetric):
  """Evaluator ``is``: IS of the generated samples from the feature network's logits (``is_mean``,
  ``is_std``) over ``splits`` chunks. A chunk of one sample scores exactly 1 whatever the model,
  so ``eval.num_samples`` must give every chunk at least two (``>= 2 * splits``)."""

  needs_logits = True

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "splits": 10}

  def real_examples_needed(self, config) -> int:
    del config
    return 0

  def check(self, config, spec, family) -> None:
    splits = self.settings(config).splits
    if splits < 1:
      raise UserError(f"eval.is.splits={splits}: the Inception Score needs >= 1 split; "
                      "set e.g. --config.eval.is.splits=10")
    check_space(config, spec, self.name, self.needs_logits)  # FeatureMetric.check, with its own sample count
    if config.eval.num_samples < 2 * splits:
      raise UserError(f"metric 'is' needs eval.num_samples >= 2 * eval.is.splits = {2 * splits} (a split of one "
                      f"sample scores exactly 1), got {config.eval.num_samples}; raise eval.num_samples or set "
                      f"--config.eval.is.splits={max(1, config.eval.num_samples // 2)}")

  def run(self, ctx) -> dict[str, float]:
    mean, std = inception_score(ctx.fake_features.logits, self.settings(ctx.config).splits)
    return {"is_mean": mean, "is_std": std}
