"""k-NN manifold metrics: precision / recall (Kynkäänniemi et al. 2019), density / coverage
(Naeem et al. 2020).

With ``r_k(x)`` the distance from ``x`` to its k-th nearest neighbour in its own set (the point
itself excluded), real set ``X`` (N points) and generated set ``Y`` (M points):

* precision = fraction of ``y`` inside the real manifold: some ``x`` has ``|y - x| <= r_k(x)``;
* recall    = fraction of ``x`` inside the generated manifold: some ``y`` has ``|x - y| <= r_k(y)``;
* density   = ``1/(k M) sum_y #{x : |y - x| < r_k(x)}``;
* coverage  = fraction of ``x`` whose nearest ``y`` satisfies ``|x - y| < r_k(x)``.

The comparisons follow the reference implementations (``<=`` in Kynkäänniemi et al.'s code, ``<``
in Naeem et al.'s ``prdc``). Everything is blocked (see ``distances``): at most three passes over
the data (real-real, fake-fake, real-fake), never an ``N x M`` matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluation.distances import DEFAULT_BLOCK_SIZE, centred, kth_nn_squared_radii, row_blocks, squared_distances


@jax.jit
def _cross(real_blocks, pr_radius2, dc_radius2, fake, fake_radius2):
  """One blocked pass over (block of real rows) x (all fakes).

  ``pr_radius2`` / ``dc_radius2``: ``[num_blocks, B]`` squared real radii for precision and for
  density / coverage; padding rows carry -1 so that nothing falls inside them. Returns per real
  row ``(in_fake_manifold, covered)`` ``[num_blocks, B]`` and per fake ``(in_real_manifold,
  density_count)`` ``[M]``.
  """
  fake_sqnorm = jnp.sum(fake * fake, axis=1)
  m = fake.shape[0]

  def step(carry, inputs):
    in_real, count = carry
    block, r_pr, r_dc = inputs
    d2 = squared_distances(block, fake, fake_sqnorm)  # [B, M]
    in_fake = jnp.any(d2 <= fake_radius2[None, :], axis=1)
    covered = jnp.min(d2, axis=1) < r_dc
    in_real = in_real | jnp.any(d2 <= r_pr[:, None], axis=0)
    count = count + jnp.sum(d2 < r_dc[:, None], axis=0, dtype=jnp.int32)
    return (in_real, count), (in_fake, covered)

  init = (jnp.zeros(m, bool), jnp.zeros(m, jnp.int32))
  (in_real, count), (in_fake, covered) = jax.lax.scan(
      step, init, (real_blocks, pr_radius2, dc_radius2))
  return in_fake, covered, in_real, count


def manifold_metrics(real, fake, pr_k: int | None = 3, dc_k: int | None = 5,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> dict[str, float]:
  """Precision / recall with ``pr_k`` and density / coverage with ``dc_k`` neighbours.

  ``real [N, D]``, ``fake [M, D]``: features (or data points). Returns a dict with keys
  ``precision, recall`` (unless ``pr_k`` is None) and ``density, coverage`` (unless ``dc_k`` is
  None). Passes: real-real once for both k, fake-fake only for recall, real-fake once.
  """
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise UserError(f"manifold metrics need features [N, D] and [M, D], got {real.shape} and "
                    f"{fake.shape}")
  # Distances do not change under a common shift; centred on the real mean (in the inputs' precision)
  # the float32 products of |a|^2 - 2 a.b + |b|^2 lose nothing to a large offset of the features.
  centre = np.mean(real, axis=0, dtype=np.float64)
  real, fake = centred(real, centre), centred(fake, centre)
  ks = tuple(k for k in (pr_k, dc_k) if k is not None)
  if not ks or not all(1 <= k < min(real.shape[0], fake.shape[0]) for k in ks):
    raise UserError(f"k={ks} nearest neighbours need more than k samples in each set, got "
                    f"{real.shape[0]} real and {fake.shape[0]} generated")
  n, m = real.shape[0], fake.shape[0]
  blocks, valid = row_blocks(real, block_size)
  radii = kth_nn_squared_radii(real, ks, block_size)  # [len(ks), N]

  def per_block(k):
    padded = np.full(valid.size, -1.0, np.float32)
    if k is not None:
      padded[:n] = radii[ks.index(k)]
    return padded.reshape(valid.shape)

  fake_r = (kth_nn_squared_radii(fake, (pr_k,), block_size)[0] if pr_k is not None
            else np.full(m, -1.0, np.float32))
  in_fake, covered, in_real, count = _cross(blocks, per_block(pr_k), per_block(dc_k), fake, fake_r)
  out = {}
  if pr_k is not None:
    out["precision"] = float(np.mean(np.asarray(in_real)))
    out["recall"] = float(np.mean(np.asarray(in_fake)[valid]))
  if dc_k is not None:
    out["density"] = float(np.sum(np.asarray(count)) / (dc_k * m))
    out["coverage"] = float(np.mean(np.asarray(covered)[valid]))
  return out


def precision_recall(real, fake, k: int = 3,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` w.r.t. ``real``."""
  out = manifold_metrics(real, fake, pr_k=k, dc_k=None, block_size=block_size)
  return out["precision"], out["recall"]


def density_coverage(real, fake, k: int = 5,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[float, float]:
  """Density and coverage (Naeem et al. 2020) of ``fake`` w.r.t. ``real``."""
  out = manifold_metrics(real, fake, pr_k=None, dc_k=k, block_size=block_size)
  return out["density"], out["coverage"]
