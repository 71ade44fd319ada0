"""Likelihood bookkeeping: nats <-> bits/dim, and the offset between model space and raw data.

A continuous density ``p(x)`` over model space ``x = lo + (hi - lo) * (raw + u) / levels``
(uniformly dequantized raw integers) is a density over ``raw + u`` after the change of variables

    log p(raw + u) = log p(x) + D * log((hi - lo) / levels),

and by Jensen ``E_u[log p(raw + u)]`` lower-bounds the discrete log-probability of ``raw`` on the
grid of unit bins (Theis et al. 2016). Bits per dimension are ``nll_raw / (D * ln 2)``. E.g. 8-bit
images in [-1, 1]: add ``D log 128`` nats; in [0, 1]: ``D log 256``. Without dequantization the
pipeline maps ``x = lo + (hi - lo) * raw / (levels - 1)``, so the Jacobian uses ``levels - 1``;
the result is then a density on the raw scale, *not* a bound on the discrete likelihood (a
continuous model can put unbounded density on the grid points), reported only for comparison.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax.scipy.special

from jaxgen.data.spec import DataSpec


def nats_to_bits_per_dim(nll_nats, dims: int):
  """Negative log-likelihood of one example in nats -> bits per dimension."""
  return nll_nats / (dims * math.log(2.0))


def bits_per_dim_to_nats(bpd, dims: int):
  """Inverse of ``nats_to_bits_per_dim``."""
  return bpd * dims * math.log(2.0)


def model_space_offset_nats(spec: DataSpec) -> float:
  """Nats to *add* to a model-space continuous NLL to get the NLL of raw integer data.

  ``D * log(levels / (hi - lo))`` for dequantized images (e.g. ``D * log(128)`` for 8-bit data in
  [-1, 1]), ``D * log((levels - 1) / (hi - lo))`` without dequantization (see the module
  docstring); 0 for data without a discrete raw grid (``toy2d`` points) and for discrete models.
  """
  if spec.modality != "image" or spec.levels <= 1:
    return 0.0
  lo, hi = spec.value_range
  bins = spec.levels if spec.dequantized else spec.levels - 1
  return spec.dims * math.log(bins / (hi - lo))


def continuous_nll_to_bits_per_dim(nll_model_space, spec: DataSpec):
  """Model-space continuous NLL (nats per example) -> bits/dim of the raw data."""
  return nats_to_bits_per_dim(nll_model_space + model_space_offset_nats(spec), spec.dims)


def iwae_log_likelihood(log_weights, axis: int = 0):
  """Importance-weighted estimate ``log (1/K) sum_k w_k`` from ``log w_k = log p(x,z_k) - log q(z_k|x)``.

  ``log_weights``: ``[K, ...]`` (K importance samples along ``axis``). K = 1 gives the ELBO; the
  bound tightens monotonically in expectation towards ``log p(x)`` as K grows (Burda et al. 2016).
  """
  k = log_weights.shape[axis]
  return jax.scipy.special.logsumexp(log_weights, axis=axis) - jnp.log(k)
