"""Discretized mixture of logistics over ``L`` evenly spaced levels (Salimans et al. 2017, PixelCNN++).

A value with ``L`` levels ``k in {0, ..., L-1}`` sits at the bin centre ``c_k = -1 + 2k / (L-1)``
of ``[-1, 1]``; bins have half-width ``delta = 1 / (L-1)``. One logistic component with mean
``mu`` and scale ``s`` gives the bin the mass of its interval under the logistic CDF ``sigmoid``:

    P(k) = sigmoid(b_k) - sigmoid(a_k),   b_k = (c_k + delta - mu) / s,   a_k = (c_k - delta - mu) / s

with the edge bins stretched to the whole line (``a_0 = -inf``, ``b_{L-1} = +inf``), so the
masses telescope to exactly 1. The mixture is ``P(k) = sum_m pi_m P_m(k)``, ``pi = softmax(logits)``.

Numerics: ``sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - exp(a - b))`` with
``a - b = -2 delta / s``, so

    log P(k) = -softplus(-b) - softplus(a) + log(-expm1(-2 delta / s)),

which is finite for every finite ``mu, s`` (PixelCNN++ instead switches to a density
approximation when the difference underflows; this form needs no switch and keeps the bin masses
summing to 1 in float32 up to rounding). Hand-written: neither distrax nor TFP is a dependency and
neither ships a stable discretized logistic over ``L`` levels.

Parameters layout: ``params [..., 3M]`` = ``(logits [..., M], means [..., M], log_scales [..., M])``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: PixelCNN++'s lower bound on log scales (scales >= exp(-7) ~ 1e-3 of the [-1, 1] range).
MIN_LOG_SCALE = -7.0


def split_params(params: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``[..., 3M]`` -> ``(logits, means, log_scales)``, each ``[..., M]`` (log scales clamped)."""
  logits, means, log_scales = jnp.split(params, 3, axis=-1)
  return logits, means, jnp.maximum(log_scales, MIN_LOG_SCALE)


def log_prob(params: jax.Array, k: jax.Array, levels: int) -> jax.Array:
  """``log P(k)`` under the mixture.

  Args:
    params: float ``[..., 3M]`` mixture parameters (module docstring).
    k: int ``[...]`` levels in ``{0, ..., levels-1}``.
    levels: ``L >= 2``.

  Returns:
    float ``[...]`` log-probabilities (nats).
  """
  logits, means, log_scales = split_params(params)
  inv_s = jnp.exp(-log_scales)
  delta = 1.0 / (levels - 1)
  # Bin k spans [(2k - L) / (L-1), (2k + 2 - L) / (L-1)]: integer numerators, one rounding, so
  # the upper edge of bin k is bitwise the lower edge of bin k+1 and the masses telescope.
  k2 = 2 * k[..., None].astype(jnp.int32)
  a = ((k2 - levels).astype(jnp.float32) * delta - means) * inv_s
  b = ((k2 + 2 - levels).astype(jnp.float32) * delta - means) * inv_s
  log_mid = -jax.nn.softplus(-b) - jax.nn.softplus(a) + jnp.log(-jnp.expm1(-2.0 * delta * inv_s))
  log_first = -jax.nn.softplus(-b)  # log sigmoid(b): bin 0 takes all mass below it
  log_last = -jax.nn.softplus(a)  # log (1 - sigmoid(a)): bin L-1 takes all mass above it
  kk = k[..., None]
  log_component = jnp.where(kk == 0, log_first, jnp.where(kk == levels - 1, log_last, log_mid))
  return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + log_component, axis=-1)


def log_probs_all(params: jax.Array, levels: int) -> jax.Array:
  """``log P(k)`` for every level: ``[..., 3M]`` -> ``[..., L]`` (a normalised categorical).

  Sampling draws from this categorical, so temperature / top-k / top-p act on the ``L`` level
  probabilities exactly as on a softmax output.
  """
  k = jnp.arange(levels, dtype=jnp.int32)
  return log_prob(params[..., None, :], jnp.broadcast_to(k, params.shape[:-1] + (levels,)), levels)
