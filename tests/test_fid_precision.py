"""Precision of FID statistics: float32 Gram products of float64-centred rows (jaxgen.evaluation.gaussian).

Tolerances: float32 features, covariance entries within ``1e-6 max|S|`` of float64 ``numpy.cov`` and
FID within ``1e-6`` relative (the module's rule); float64 features, ``1e-12``. Products of the raw
float32 values would miss by ``~u |x|^2 = 6e-8 * 1e6``: five orders of magnitude more at a 1e3 offset.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg

from conftest import ROOT
from jaxgen import evaluation as ev

OFFSET = 1e3


def _sylvester_hadamard_columns(n, columns):
  """Columns of the order-``n`` (a power of 2) Sylvester Hadamard matrix: ``(-1)^popcount(i & j)``."""
  bits = np.arange(n)[:, None] & np.asarray(columns)[None, :]
  parity = np.zeros_like(bits)
  while bits.any():
    parity ^= bits & 1
    bits >>= 1
  return 1 - 2 * parity


def _float64_fid(x1, x2):
  """Independent float64 reference: numpy.cov, Cholesky congruence, LAPACK eigenvalues."""
  (m1, s1), (m2, s2) = ((x.mean(0), np.cov(x, rowvar=False)) for x in (x1.astype(np.float64), x2.astype(np.float64)))
  l = np.linalg.cholesky(s1)
  tr_covmean = np.sqrt(np.clip(scipy.linalg.eigvalsh(l.T @ s2 @ l), 0, None)).sum()
  return (m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


def test_fid_closed_form_of_offset_hadamard_features():
  # Rows 1e3 + a_j h_ij (h: Hadamard columns, a_j dyadic) are exact in float32, and so is every
  # centred product over the two aligned 4096-row chunks: mean 1e3, covariance diag(a^2) n/(n-1),
  # and FID = d (mu1 - mu2)^2 + n/(n-1) sum (a_j - b_j)^2 exactly.
  n, d = 8192, 48
  rng = np.random.default_rng(0)
  a, b = 0.25 * rng.integers(2, 16, d), 0.25 * rng.integers(2, 16, d)
  x1 = (OFFSET + a * _sylvester_hadamard_columns(n, np.arange(1, d + 1))).astype(np.float32)
  x2 = (OFFSET + 0.5 + b * _sylvester_hadamard_columns(n, np.arange(d + 1, 2 * d + 1))).astype(np.float32)
  mu, sigma = ev.gaussian_stats(x1)
  np.testing.assert_array_equal(mu, np.full(d, OFFSET))
  np.testing.assert_allclose(sigma, np.diag(a**2) * n / (n - 1), rtol=1e-15, atol=0)
  expected = d * 0.25 + n / (n - 1) * np.sum((a - b) ** 2)
  np.testing.assert_allclose(ev.fid_from_features(x1, x2), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_streamed_and_one_shot_stats_match_float64_numpy_at_large_offset(dtype, tol):
  # Uneven updates (1 row, fewer rows than D, one past the 4096-row chunk) vs one call vs numpy.
  rng = np.random.default_rng(1)
  x = (OFFSET + rng.standard_normal((6000, 40)) @ (np.eye(40) + 0.3 * rng.standard_normal((40, 40))))
  x = x.astype(np.float32).astype(dtype)
  ref_mu, ref_sigma = x.astype(np.float64).mean(0), np.cov(x.astype(np.float64), rowvar=False)
  acc = ev.GaussianAccumulator()
  for start, stop in [(0, 1), (1, 7), (7, 4200), (4200, 6000)]:
    acc.update(x[start:stop])
  scale = np.abs(ref_sigma).max()
  for mu, sigma in (acc.finalize(), ev.gaussian_stats(x)):
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-14)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_fid_matches_float64_reference(dtype, tol):
  rng = np.random.default_rng(2)
  mix = np.eye(128) + 0.05 * rng.standard_normal((128, 128))
  x1 = (OFFSET + rng.standard_normal((2000, 128)) @ mix).astype(np.float32).astype(dtype)
  x2 = (OFFSET + 0.02 + 1.1 * rng.standard_normal((2000, 128)) @ mix).astype(np.float32).astype(dtype)
  np.testing.assert_allclose(ev.fid_from_features(x1, x2), _float64_fid(x1, x2), rtol=tol)


def test_benchmark_lapack_floor_route_computes_the_same_fid():
  # experiments/benchmarks/metrics.py --lapack-floor times the Cholesky route as single BLAS /
  # LAPACK calls (float32 ssyrk of rows centred on a float32-rounded mean, dpotrf, dsygst, dsytrd,
  # dsterf); its speed-up bounds jaxgen's only if it computes the same FID.
  path = os.path.join(ROOT, "experiments", "benchmarks", "metrics.py")
  spec = importlib.util.spec_from_file_location("metrics_benchmark", path)
  metrics = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(metrics)
  rng = np.random.default_rng(4)
  mix = np.eye(96) + 0.05 * rng.standard_normal((96, 96))
  x1 = (OFFSET + rng.standard_normal((1500, 96)) @ mix).astype(np.float32)
  x2 = (OFFSET + 0.02 + 1.1 * rng.standard_normal((1500, 96)) @ mix).astype(np.float32)
  (mu1, s1), (mu2, s2) = metrics._lapack_stats(x1), metrics._lapack_stats(x2)
  for x, mu, s in ((x1, mu1, s1), (x2, mu2, s2)):
    ref = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(np.tril(s), np.tril(ref), rtol=0, atol=1e-6 * np.abs(ref).max())
  np.testing.assert_allclose(metrics._lapack_frechet(mu1, s1, mu2, s2), _float64_fid(x1, x2), rtol=1e-6)


def test_fid_closed_form_with_graded_spectrum():
  # S1 = Q diag(lam) Q^T with lam over 8 decades, S2 = 1.21 S1: FID = (1 - 1.1)^2 tr S1 exactly. The
  # eigenvalues of S1 S2 reach 1e-16 of the largest; bisection to eps |M| misses 7e-8, sterf 2e-13.
  d = 256
  q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((d, d)))
  lam = np.logspace(0, -8, d)
  s1 = (q * lam) @ q.T
  np.testing.assert_allclose(ev.frechet_distance(np.zeros(d), s1, np.zeros(d), 1.21 * s1), 0.01 * lam.sum(),
                             rtol=1e-11)
