"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic kernel.

With ``k(x, y) = (x.y / d + 1)^3`` and subsets ``X, Y`` of ``m`` features each,

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2,

averaged over ``num_subsets`` random subsets (drawn without replacement, as the reference
``polynomial_mmd_averages``). The estimator is unbiased, so it can be negative on small sets:
it is not clipped.

The evaluator ``kid`` (below) applies it to real and generated features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric


def _kernel_sums(x, y):
  """``(sum of off-diagonal k(x,x), same for y, sum of k(x,y))`` in float64.

  The Gram matrices are float32 products (at full precision) and the cube and sums float64: the
  kernel values stay accurate to ~1e-7 relative while the sums of 10^6 terms do not lose the small
  difference that MMD is.
  """
  d = x.shape[1]

  def k(a, b):
    gram = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST).astype(jnp.float64)
    return (gram / d + 1.0) ** 3

  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  return (jnp.sum(kxx) - jnp.trace(kxx), jnp.sum(kyy) - jnp.trace(kyy), jnp.sum(kxy))


@jax.jit
def _subset_mmds(f1, f2, idx1, idx2):
  """Unbiased MMD^2 for each subset: ``idx1, idx2`` are ``[S, m]`` row indices."""
  m = idx1.shape[1]

  def one(indices):
    sxx, syy, sxy = _kernel_sums(f1[indices[0]], f2[indices[1]])
    return (sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)

  return jax.lax.map(one, (idx1, idx2))


def kid(features1, features2, num_subsets: int = 100, subset_size: int = 1000,
        seed: int | list[int] = 0) -> tuple[float, float]:
  """KID ``(mean, std)`` over subsets of two feature sets ``[N1, D]``, ``[N2, D]``.

  ``subset_size`` is capped at ``min(N1, N2)`` (as clean-fid does). Subsets are drawn with
  ``numpy.random.default_rng(seed)``: for each subset, ``choice(N1, m, replace=False)`` then
  ``choice(N2, m, replace=False)``. When the subsets are the whole sets, every subset is a
  permutation of them and gives the same value: it is computed once and the std is 0.
  ``std`` is the population std (``ddof=0``) over subsets, as the reference code.
  """
  f1 = np.asarray(features1, np.float32)
  f2 = np.asarray(features2, np.float32)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise UserError(f"kid needs features [N1, D] and [N2, D], got {f1.shape} and {f2.shape}")
  n1, n2 = f1.shape[0], f2.shape[0]
  if num_subsets < 1 or subset_size < 2:
    raise UserError(f"kid needs num_subsets >= 1 and subset_size >= 2 (the unbiased estimator's "
                    f"m (m - 1)), got {num_subsets} and {subset_size}; set eval.kid.subsets / eval.kid.subset_size")
  m = min(subset_size, n1, n2)
  if m < 2:
    raise UserError(f"kid needs at least 2 samples per set, got {n1} and {n2}")
  if m == n1 == n2:
    idx1, idx2 = np.arange(m)[None], np.arange(m)[None]
  else:
    rng = np.random.default_rng(seed)
    pairs = [(rng.choice(n1, m, replace=False), rng.choice(n2, m, replace=False))
             for _ in range(num_subsets)]
    idx1 = np.stack([p[0] for p in pairs])
    idx2 = np.stack([p[1] for p in pairs])
  with jax.enable_x64(True):
    mmds = np.asarray(_subset_mmds(f1, f2, idx1, idx2))
  return float(mmds.mean()), float(mmds.std())


@register("kid")
class KID(FeatureMetric):
  """Evaluator ``kid``: KID of the generated features against the real ones (``kid_mean``,
  ``kid_std``); ``subsets`` of ``subset_size`` (capped at the set sizes) features each, drawn with
  the seed ``[config.seed, step]`` (``SampleContext.numpy_seed``)."""

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "subsets": 100, "subset_size": 1000}

  def check(self, config, spec, family) -> None:
    super().check(config, spec, family)
    s = self.settings(config)
    if s.subsets < 1 or s.subset_size < 2:
      raise UserError(f"eval.kid.subsets={s.subsets}, eval.kid.subset_size={s.subset_size}: KID needs >= 1 "
                      "subset of >= 2 features; set e.g. --config.eval.kid.subsets=100 --config.eval.kid.subset_size=1000")

  def run(self, ctx) -> dict[str, float]:
    s = self.settings(ctx.config)
    mean, std = kid(ctx.real_features.features, ctx.fake_features.features, s.subsets, s.subset_size,
                    seed=ctx.numpy_seed())
    return {"kid_mean": mean, "kid_std": std}
