"""Gaussian feature statistics and the Fréchet distance between them (FID).

For feature sets with means ``mu1, mu2`` and covariances ``S1, S2`` (``D x D``, divisor ``N - 1``
as ``numpy.cov`` and the reference FID code),

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

``tr((S1 S2)^{1/2})`` is the sum of the square roots of the eigenvalues of ``S1 S2``, which are
those of the *symmetric* positive semi-definite matrix ``L^T S2 L`` for any factor ``S1 = L L^T``
(``L^T S2 L = L^{-1} (S1 S2) L`` when ``L`` is invertible; ``AB`` and ``BA`` share their spectrum
otherwise). We take ``L`` = the Cholesky factor of ``S1`` (or of ``S2``, swapping roles) and, when
neither is positive definite (fewer samples than dimensions), ``L = S1^{1/2}`` from ``eigh``. The
real eigenvalues of that symmetric matrix (tridiagonalization and bisection on CPU/GPU, ``eigh``
elsewhere), clipped at 0, give the trace: no complex numbers, no scipy, runs on CPU/GPU/TPU, and the
result (computed in float64, clipped at 0) is never negative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError

#: Rows per device update of the streaming accumulator (bounds the float64 copy of a batch).
_CHUNK_ROWS = 4096
#: Width of the column blocks of ``_gram`` and ``_triangular_congruence``.
_BLOCK = 256


def _block_slices(d: int) -> list[slice]:
  """``d`` indices cut into ``max(1, d // _BLOCK)`` contiguous blocks of about ``_BLOCK``."""
  k = max(1, d // _BLOCK)
  edges = [round(i * d / k) for i in range(k + 1)]
  return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _symmetric_from_lower(lower):
  """The symmetric matrix whose block ``(i, j)``, ``i >= j``, is ``lower[i][j]``."""
  k = len(lower)
  return jnp.block([[lower[i][j] if i >= j else lower[j][i].T for j in range(k)]
                    for i in range(k)])


def _gram(x):
  """``x^T x`` for ``x [N, D]``, computing only the column blocks on and below the diagonal.

  With ``k`` blocks this is ``(k + 1) / (2 k)`` of a full product (56% for ``D = 2048``): what
  BLAS's symmetric rank-k update (``syrk``) saves, which XLA does not have.
  """
  cols = [x[:, s] for s in _block_slices(x.shape[1])]
  return _symmetric_from_lower([[cols[i].T @ cols[j] for j in range(i + 1)]
                                for i in range(len(cols))])


def _triangular_congruence(l, s):
  """``L^T S L`` for a lower-triangular ``L [D, D]`` and a symmetric ``S [D, D]``.

  Column block ``j`` of ``L`` is zero above row ``start_j``, so ``Y = S L`` needs only
  ``Y[:, j] = S[:, start_j:] L[start_j:, j]``, and the symmetric result only its lower blocks
  ``(L^T Y)_ij = L[start_i:, i]^T Y[start_i:, j]``, ``i >= j``: a third of the two full products.
  """
  blocks = _block_slices(l.shape[0])
  y = [s[:, b.start:] @ l[b.start:, b] for b in blocks]
  return _symmetric_from_lower([[l[bi.start:, bi].T @ y[j][bi.start:] for j in range(i + 1)]
                                for i, bi in enumerate(blocks)])


@jax.jit
def _merge(count, mean, m2, batch):
  """Chan et al.'s pairwise update of (count, mean, sum of centred outer products) by a batch.

  Exact in exact arithmetic and numerically stable: the batch is centred on its own mean before
  the ``X^T X`` product, so large feature means do not cancel catastrophically.
  """
  x = batch.astype(jnp.float64)
  n_b = x.shape[0]
  mean_b = jnp.mean(x, axis=0)
  xc = x - mean_b
  m2_b = _gram(xc)
  total = count + n_b
  delta = mean_b - mean
  new_mean = mean + delta * (n_b / total)
  new_m2 = m2 + m2_b + jnp.outer(delta, delta) * (count * n_b / total)
  return total, new_mean, new_m2


class GaussianAccumulator:
  """Streaming mean and covariance of features: ``update`` with ``[B, D]`` batches, ``finalize``.

  Memory is ``O(D^2)`` whatever the number of samples, so 50k Inception features never need to
  sit in memory together. Accumulation is in float64 on the default device.
  """

  def __init__(self):
    self._state = None  # (count, mean [D], m2 [D, D]) as float64 device arrays

  @property
  def count(self) -> int:
    return 0 if self._state is None else int(self._state[0])

  def update(self, features) -> None:
    """Adds a batch of features ``[B, D]``."""
    features = np.asarray(features)
    if features.ndim != 2:
      raise UserError(f"features must be [N, D], got shape {features.shape}")
    with jax.enable_x64(True):
      if self._state is None:
        d = features.shape[1]
        self._state = (jnp.zeros((), jnp.float64), jnp.zeros(d, jnp.float64),
                       jnp.zeros((d, d), jnp.float64))
      elif features.shape[1] != self._state[1].shape[0]:
        raise UserError(
            f"feature dimension changed from {self._state[1].shape[0]} to {features.shape[1]}")
      for start in range(0, features.shape[0], _CHUNK_ROWS):
        self._state = _merge(*self._state, features[start:start + _CHUNK_ROWS])

  def finalize(self) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [D], sigma [D, D])`` in float64; ``sigma`` uses the unbiased ``N - 1`` divisor."""
    if self.count < 2:
      raise UserError(f"Gaussian statistics need at least 2 samples, got {self.count}")
    count, mean, m2 = self._state
    with jax.enable_x64(True):
      return np.asarray(mean), np.asarray(m2 / (count - 1))


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean ``[D]`` and covariance ``[D, D]`` (divisor ``N - 1``) of features ``[N, D]``, float64."""
  acc = GaussianAccumulator()
  acc.update(features)
  return acc.finalize()


def _eigenvalues_via_tridiagonal(m):
  """Eigenvalues of a symmetric ``m``: Householder tridiagonalization (LAPACK/cuSOLVER ``sytrd``)
  then bisection on the tridiagonal matrix. No eigenvectors: about half the time of ``eigh``."""
  _, diagonal, off_diagonal, _ = jax.lax.linalg.tridiagonal(m)
  return jax.scipy.linalg.eigh_tridiagonal(diagonal, off_diagonal, eigvals_only=True)


def _trace_sqrt_psd(m):
  """``tr(M^{1/2})`` of a symmetric PSD matrix: its eigenvalues clipped at 0, square-rooted.

  ``jax.lax.linalg.tridiagonal`` exists on CPU and GPU only; other platforms (TPU) use ``eigh``.
  """
  m = (m + m.T) / 2
  eigenvalues = jax.lax.platform_dependent(
      m, cpu=_eigenvalues_via_tridiagonal, cuda=_eigenvalues_via_tridiagonal,
      rocm=_eigenvalues_via_tridiagonal, default=lambda m: jnp.linalg.eigh(m)[0])
  return jnp.sum(jnp.sqrt(jnp.clip(eigenvalues, 0.0)))


@jax.jit
def _frechet(mu1, sigma1, mu2, sigma2):
  sigma1 = (sigma1 + sigma1.T) / 2
  sigma2 = (sigma2 + sigma2.T) / 2

  # A failed Cholesky factorization (matrix not positive definite) returns NaNs.
  def via_cholesky(a, b, otherwise):
    l = jnp.linalg.cholesky(a)
    return jax.lax.cond(jnp.all(jnp.isfinite(l)),
                        lambda: _trace_sqrt_psd(_triangular_congruence(l, b)), otherwise)

  def via_sqrtm():
    w, v = jnp.linalg.eigh(sigma1)
    a = (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T
    return _trace_sqrt_psd(a @ sigma2 @ a)

  tr_covmean = via_cholesky(sigma1, sigma2, lambda: via_cholesky(sigma2, sigma1, via_sqrtm))
  diff = mu1 - mu2
  return diff @ diff + jnp.trace(sigma1) + jnp.trace(sigma2) - 2 * tr_covmean


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (see module docstring).

  Args: means ``[D]`` and covariances ``[D, D]``. Returns a Python float ``>= 0``, exactly 0 for
  identical statistics (the eigen-decomposition would otherwise leave ~1e-12 of rounding).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0] if mu1.ndim == 1 else -1
  if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise UserError(f"frechet_distance needs mu [D] and sigma [D, D] for both sets, got "
                    f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
  if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
    return 0.0
  with jax.enable_x64(True):
    value = float(_frechet(mu1, sigma1, mu2, sigma2))
  return max(value, 0.0)


def fid_from_features(features1, features2) -> float:
  """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
  return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
