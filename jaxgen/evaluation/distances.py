"""Blocked pairwise Euclidean distances in JAX: memory bounded by the block size.

A ``[N, M]`` distance matrix is never formed: rows are processed ``block_size`` at a time by
``lax.map`` / ``lax.scan``, so the largest temporary is ``[block_size, M]``. Squared distances
``|a|^2 - 2 a.b + |b|^2`` are computed with float32 products at full precision and clipped at 0;
comparisons are made between squared distances (monotone, no square roots in the inner loop).
That form cancels badly when the rows share a large offset, so callers centre the rows first
(:func:`kth_nn_squared_radii` does; ``manifold.manifold_metrics`` centres both sets on the real mean).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Rows per block when the caller does not say.
DEFAULT_BLOCK_SIZE = 1024


def squared_distances(a, b, b_sqnorm=None):
  """``[A, B]`` squared Euclidean distances between rows of ``a [A, D]`` and ``b [B, D]``."""
  if b_sqnorm is None:
    b_sqnorm = jnp.sum(b * b, axis=1)
  ab = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(jnp.sum(a * a, axis=1)[:, None] - 2 * ab + b_sqnorm[None, :], 0.0)


def row_blocks(x: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pads ``x [N, D]`` with zero rows to a multiple of ``block_size`` and reshapes it to
  ``[num_blocks, block_size, D]``; also returns the ``[num_blocks, block_size]`` validity mask."""
  n = x.shape[0]
  block_size = max(1, min(block_size, n))
  num_blocks = -(-n // block_size)
  pad = num_blocks * block_size - n
  blocks = np.pad(x, ((0, pad), (0, 0))).reshape(num_blocks, block_size, x.shape[1])
  valid = (np.arange(num_blocks * block_size) < n).reshape(num_blocks, block_size)
  return blocks, valid


@functools.partial(jax.jit, static_argnames="ks")
def _kth_nn_blocked(blocks, x, ks):
  x_sqnorm = jnp.sum(x * x, axis=1)

  def one(block):
    d2 = squared_distances(block, x, x_sqnorm)
    # The k+1 smallest include the point itself (distance 0), as in the reference code.
    smallest = -jax.lax.top_k(-d2, max(ks) + 1)[0]
    return smallest[:, list(ks)].T  # [len(ks), B]

  return jax.lax.map(one, blocks)


def centred(x, centre=None) -> np.ndarray:
  """float32 rows of ``x [N, D]`` minus ``centre [D]`` (default: their mean), subtracted in the
  inputs' precision with a float64 mean: what the float32 products above need (module docstring)."""
  x = np.asarray(x)
  return (x - (np.mean(x, axis=0, dtype=np.float64) if centre is None else centre)).astype(np.float32)


def kth_nn_squared_radii(x, ks: Sequence[int],
                         block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
  """Squared distances ``[len(ks), N]`` from each row of ``x [N, D]`` to its k-th nearest other
  row, for each k in ``ks`` (one pass over the data for all of them)."""
  x = centred(x)
  ks = tuple(int(k) for k in ks)
  if not all(1 <= k < x.shape[0] for k in ks):
    raise ValueError(f"k in {ks} needs 1 <= k < N={x.shape[0]}")
  blocks, _ = row_blocks(x, block_size)
  out = np.asarray(_kth_nn_blocked(blocks, x, ks))  # [num_blocks, len(ks), B]
  return out.transpose(1, 0, 2).reshape(len(ks), -1)[:, :x.shape[0]]
