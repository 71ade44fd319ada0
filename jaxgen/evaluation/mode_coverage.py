"""Mode coverage of Gaussian-mixture toy data (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et
al. 2018).

Each sample is assigned to its nearest mode mean. It is *high quality* when that distance is at
most ``threshold * std``. A mode is *captured* when it is the nearest mode of at least one
high-quality sample. The reverse KL is ``KL(p || uniform) = sum_k p_k log(K p_k)`` where ``p`` is
the histogram of high-quality samples over the K modes (0 log 0 = 0); it is 0 when all modes are
equally represented and ``log K`` when a single mode is.

The evaluator ``mode_coverage`` (below) scores generated samples of the ``toy2d`` mixtures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register


@jax.jit
def _assign(samples, means):
  d2 = jnp.sum((samples[:, None, :] - means[None, :, :]) ** 2, axis=-1)  # [N, K]
  return jnp.argmin(d2, axis=1), jnp.sqrt(jnp.min(d2, axis=1))


def mode_coverage(samples, means, std: float, threshold: float = 3.0) -> dict:
  """``{"modes": int, "high_quality": float, "reverse_kl": float}`` of ``samples [N, D]``
  against mixture ``means [K, D]`` with common isotropic ``std``.

  ``reverse_kl`` is ``inf`` when no sample is of high quality.
  """
  samples = np.asarray(samples, np.float32)
  means = np.asarray(means, np.float32)
  if samples.ndim != 2 or means.ndim != 2 or samples.shape[1] != means.shape[1]:
    raise UserError(f"mode_coverage needs samples [N, D] and means [K, D], got {samples.shape} "
                    f"and {means.shape}")
  nearest, dist = (np.asarray(a) for a in _assign(samples, means))
  good = dist <= threshold * std
  counts = np.bincount(nearest[good], minlength=means.shape[0])
  if counts.sum() == 0:
    reverse_kl = float("inf")
  else:
    p = counts / counts.sum()
    nz = p > 0
    reverse_kl = float(np.sum(p[nz] * np.log(means.shape[0] * p[nz])))
  return {"modes": int(np.sum(counts > 0)), "high_quality": float(np.mean(good)),
          "reverse_kl": reverse_kl}


def _mixture_modes(spec) -> tuple[np.ndarray, float]:
  from jaxgen.data import toy2d  # pylint: disable=import-outside-toplevel

  try:
    return toy2d.mixture_modes(spec.name)
  except KeyError:
    raise UserError(f"metric 'mode_coverage' needs a Gaussian-mixture toy2d data set "
                    f"(toy2d/ring8, toy2d/grid25, toy2d/8gaussians), not {spec.name!r}; "
                    "remove it from config.eval.metrics") from None


@register("mode_coverage")
class ModeCoverage(Evaluator):
  """Evaluator ``mode_coverage`` (Gaussian-mixture ``toy2d`` sets): ``modes``, ``high_quality``,
  ``reverse_kl`` of the generated samples; high quality within ``threshold`` stds of a mode."""

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "threshold": 3.0}

  def check(self, config, spec, family) -> None:
    _mixture_modes(spec)

  def run(self, ctx) -> dict[str, float]:
    means, std = _mixture_modes(ctx.spec)
    out = mode_coverage(ctx.samples, means, std, self.settings(ctx.config).threshold)
    return {k: float(v) for k, v in out.items()}
