"""Gaussian feature statistics and the Fréchet distance between them (FID).

For feature sets with means ``mu1, mu2`` and covariances ``S1, S2`` (``D x D``, divisor ``N - 1``
as ``numpy.cov`` and the reference FID code),

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

**Statistics.** Rows arrive in chunks of ``B <= 4096``; each chunk's mean ``m_b`` and centred rows
``x - m_b`` are computed in float64 and merged into (count, mean, ``M2 = sum (x - mean)(x - mean)^T``)
in float64 with Chan et al.'s pairwise update. Only the chunk's Gram product ``(x - m_b)^T (x - m_b)``
(the ``N D^2`` part of the cost) runs in the *features' precision*: float32 for features of at most
32 bits (Inception features are float32), float64 otherwise. The centred values are rounded to
float32 (relative ``u = 2^-24``) and a float32 sum of ``B`` products errs by at most ``~B u``
(typically ``~sqrt(B) u``) of ``sum |x_i - m_i| |x_j - m_j| <= B sqrt(S_ii S_jj)``: relative to the
*centred* values, so a large feature mean does not cancel catastrophically (float32 products of the
raw values would lose the variance of ``1e3 + N(0, 1)`` entirely). Why float32: its products run
3x faster than float64 through XLA on the 2-core development CPU, where float64 products alone took
longer (1.5 s) than a tenth of the numpy.cov + scipy ``sqrtm`` route (13 s) on 10k x 2048 features.

**Accuracy rule** (printed by ``experiments/benchmarks/metrics.py`` against a float64 reference:
``numpy.cov`` + LAPACK eigenvalues of the congruence below): relative FID error ``<= 1e-6`` for
float32 features -- measured 4e-9 on the benchmark's 10k x 2048 features, 2e-7 when the covariances
span 8 decades (eigenvalues of ``S1 S2`` down to ``1e-16`` of the largest) -- and within 10x of the
scipy ``sqrtm`` route's error for float64 features (both ~1e-14 on the benchmark; jaxgen 4e-11 and
scipy 1e-9 on the 8-decade case). Pass float64 features for float64 products, at ~2x the time.

**Distance.** ``tr((S1 S2)^{1/2})`` is the sum of the square roots of the eigenvalues of ``S1 S2``,
which are those of the *symmetric* positive semi-definite matrix ``L^T S2 L`` for any factor
``S1 = L L^T`` (``L^T S2 L = L^{-1} (S1 S2) L`` when ``L`` is invertible; ``AB`` and ``BA`` share their
spectrum otherwise). We take ``L`` = the Cholesky factor of ``S1`` (or of ``S2``, swapping roles) and,
when neither is positive definite (fewer samples than dimensions), ``L = S1^{1/2}`` from ``eigh``.
The real eigenvalues of that symmetric matrix (tridiagonalization, then LAPACK ``sterf`` on CPU and
bisection on GPU; ``eigh`` elsewhere), clipped at 0, give the trace: no complex numbers, runs on
CPU/GPU/TPU, and the result (computed in float64, clipped at 0) is never negative. ``sterf`` keeps
the tiny eigenvalues of graded spectra to high relative accuracy (their square roots are what
matters); bisection to ``eps |M|`` misses each square root by up to ``sqrt(eps |M|)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

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

  Exact in exact arithmetic and numerically stable: the batch is centred on its own float64 mean
  before the ``X^T X`` product, which runs in ``batch.dtype`` (float32 or float64; see the module
  docstring), so large feature means do not cancel catastrophically.
  """
  n_b = batch.shape[0]
  mean_b = jnp.mean(batch, axis=0, dtype=jnp.float64)
  m2_b = _gram((batch.astype(jnp.float64) - mean_b).astype(batch.dtype)).astype(jnp.float64)
  total = count + n_b
  delta = mean_b - mean
  new_mean = mean + delta * (n_b / total)
  new_m2 = m2 + m2_b + jnp.outer(delta, delta) * (count * n_b / total)
  return total, new_mean, new_m2


def _product_dtype(dtype) -> type:
  """float32 for floating features of at most 32 bits, float64 for anything else."""
  small_float = jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits <= 32
  return np.float32 if small_float else np.float64


class GaussianAccumulator:
  """Streaming mean and covariance of features: ``update`` with ``[B, D]`` batches, ``finalize``.

  Memory is ``O(D^2)`` whatever the number of samples, so 50k Inception features never need to
  sit in memory together. Accumulation is in float64 on the default device; the Gram products in
  float32 for features of at most 32 bits, else float64 (module docstring).
  """

  def __init__(self):
    self._state = None  # (count, mean [D], m2 [D, D]) as float64 device arrays

  @property
  def count(self) -> int:
    return 0 if self._state is None else int(self._state[0])

  def update(self, features) -> None:
    """Adds a batch of features ``[B, D]``."""
    features = np.asarray(features)
    features = features.astype(_product_dtype(features.dtype), copy=False)
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
  """Mean ``[D]`` and covariance ``[D, D]`` (divisor ``N - 1``) of features ``[N, D]``, float64
  (Gram products in the features' precision: module docstring)."""
  acc = GaussianAccumulator()
  acc.update(features)
  return acc.finalize()


def _lapack_tridiagonal_eigenvalues(d, e):
  """LAPACK ``sterf`` (root-free QL/QR) through scipy, on the host: tiny eigenvalues of a graded
  tridiagonal to high relative accuracy, where bisection to ``eps |T|`` leaves ``sqrt(eps |T|)``
  in each of their square roots (2e-6 of an FID whose covariances span 8 decades).

  The arrays cross as ``uint32`` bit patterns: the callback's thread does not see the caller's
  ``jax.enable_x64`` and would round float64 arguments to float32.
  """
  def host(d_bits, e_bits):
    d, e = (np.asarray(bits).view(np.float64)[..., 0] for bits in (d_bits, e_bits))
    eigenvalues = scipy.linalg.eigvalsh_tridiagonal(d, e, lapack_driver="sterf")
    return eigenvalues[:, None].view(np.uint32)

  bits = [jax.lax.bitcast_convert_type(v.astype(jnp.float64), jnp.uint32) for v in (d, e)]
  eigenvalues = jax.pure_callback(host, jax.ShapeDtypeStruct(bits[0].shape, jnp.uint32), *bits)
  return jax.lax.bitcast_convert_type(eigenvalues, jnp.float64).astype(d.dtype)


def _bisection_tridiagonal_eigenvalues(d, e):
  return jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)


def _eigenvalues_via_tridiagonal(m):
  """Eigenvalues of a symmetric ``m``: Householder tridiagonalization (LAPACK/cuSOLVER ``sytrd``),
  then LAPACK ``sterf`` on CPU, bisection on GPU. No eigenvectors: about half the time of ``eigh``."""
  _, diagonal, off_diagonal, _ = jax.lax.linalg.tridiagonal(m)
  return jax.lax.platform_dependent(diagonal, off_diagonal, cpu=_lapack_tridiagonal_eigenvalues,
                                    default=_bisection_tridiagonal_eigenvalues)


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
  identical statistics (the eigen-decomposition would otherwise leave ~1e-12 of rounding), NaN when
  a statistic holds NaN or inf (features of non-finite samples: a diverged model).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0] if mu1.ndim == 1 else -1
  if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise UserError(f"frechet_distance needs mu [D] and sigma [D, D] for both sets, got "
                    f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
  if not all(np.all(np.isfinite(a)) for a in (mu1, sigma1, mu2, sigma2)):
    return float("nan")
  if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
    return 0.0
  with jax.enable_x64(True):
    value = float(_frechet(mu1, sigma1, mu2, sigma2))
  return max(value, 0.0)


def fid_from_features(features1, features2) -> float:
  """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
  return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
