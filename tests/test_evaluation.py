"""Tests of jaxgen.evaluation's metrics: worked examples, invariants, independent references."""

from __future__ import annotations

import math
import types

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from jaxgen import evaluation as ev
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import gaussian


def _scipy_fid(mu1, sigma1, mu2, sigma2):
  """The classic route (pytorch-fid's ``calculate_frechet_distance``) with scipy's sqrtm."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def _random_stats(rng, n, d, scale=1.0, shift=0.0):
  x = rng.standard_normal((n, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) * scale
  return x.mean(0) + shift, np.cov(x, rowvar=False)


# --- FID -------------------------------------------------------------------------------------


def test_fid_1d_course_example():
  # N(0, 1) vs N(0.5, 1.2^2): 0.25 from the means + 1 + 1.44 - 2 * 1.2 = 0.29.
  np.testing.assert_allclose(ev.frechet_distance([0.0], [[1.0]], [0.5], [[1.44]]), 0.29,
                             rtol=1e-12)


def test_fid_2d_closed_form():
  # tr sqrt(M) of a 2x2 M with real positive spectrum is sqrt(tr M + 2 sqrt(det M)).
  expected = 10 - 2 * math.sqrt(10 + 2 * math.sqrt(12))
  got = ev.frechet_distance([0.0, 0.0], [[2.0, 1.0], [1.0, 2.0]], [1.0, 0.0], np.diag([1.0, 4.0]))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_fid_identity_covariances_and_identical_stats():
  eye = np.eye(2048)
  assert ev.frechet_distance(np.zeros(2048), eye, np.ones(2048), eye) == 2048.0
  mu, sigma = _random_stats(np.random.default_rng(0), 300, 64)
  assert ev.frechet_distance(mu, sigma, mu, sigma) == 0.0
  # Almost identical statistics: rounding must never make the distance negative.
  assert ev.frechet_distance(mu, sigma, mu, sigma * (1 + 1e-15)) >= 0.0
  # Statistics of non-finite features (a diverged model's samples): NaN, not an error.
  assert np.isnan(ev.frechet_distance(mu, sigma, np.full_like(mu, np.nan), sigma))
  assert np.isnan(ev.frechet_distance(mu, np.where(np.eye(64) > 0, np.inf, sigma), mu, sigma))


def test_fid_matches_scipy_sqrtm_2048d():
  # The slowest test here (scipy's sqrtm: ~10 s on 2 cores), run once at the size FID uses.
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3000, 2048))
  mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
  y = 1.1 * rng.standard_normal((3000, 2048)) + 0.2 * x + 0.05
  mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
  np.testing.assert_allclose(ev.frechet_distance(mu1, s1, mu2, s2),
                             _scipy_fid(mu1, s1, mu2, s2), rtol=1e-6)


@pytest.mark.parametrize("n1, n2", [(40, 300), (300, 40), (40, 50)])
def test_fid_singular_covariances_match_scipy(n1, n2):
  # Fewer samples than dimensions: Cholesky fails on the singular side(s) -> other factor / eigh.
  rng = np.random.default_rng(2)
  mu1, s1 = _random_stats(rng, n1, 64)
  mu2, s2 = _random_stats(rng, n2, 64, scale=1.2)
  np.testing.assert_allclose(ev.frechet_distance(mu1, s1, mu2, s2),
                             _scipy_fid(mu1, s1, mu2, s2), rtol=1e-6)


def test_streaming_stats_match_numpy_with_large_offset():
  rng = np.random.default_rng(3)
  x = 1e4 + rng.standard_normal((1000, 16))  # float64 features: float64 products (float32: test_fid_precision)
  acc = ev.GaussianAccumulator()
  for start, stop in [(0, 1), (1, 6), (6, 300), (300, 301), (301, 1000)]:  # 1 < rows < D included
    acc.update(x[start:stop])
  mu, sigma = acc.finalize()
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), atol=1e-9)
  chex.assert_trees_all_close(ev.gaussian_stats(x), (mu, sigma), rtol=1e-10, atol=1e-12)  # near-0 entries: summation order
  np.testing.assert_allclose(ev.fid_from_features(x, x + 1), 16.0, rtol=1e-9)


def test_blocked_stats_match_numpy_over_several_column_blocks():
  # D = 1100 is cut into 4 uneven column blocks of the symmetric Gram product.
  x = np.random.default_rng(4).standard_normal((1500, 1100)) + 3.0  # float64 features: float64 products
  mu, sigma = ev.gaussian_stats(x)
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), atol=1e-12)


def test_tridiagonal_eigenvalues_match_numpy_with_zero_and_repeated_eigenvalues():
  # The CPU/GPU route of tr(M^1/2); a rank-deficient M with a repeated eigenvalue.
  rng = np.random.default_rng(5)
  q, _ = np.linalg.qr(rng.standard_normal((600, 600)))
  m = (q * np.concatenate([np.zeros(200), np.full(100, 2.0), rng.uniform(0.1, 9, 300)])) @ q.T
  with jax.enable_x64(True):
    got = np.sort(np.asarray(gaussian._eigenvalues_via_tridiagonal(jnp.asarray(m))))
    trace_sqrt = float(gaussian._trace_sqrt_psd(jnp.asarray(m)))
  expected = np.linalg.eigvalsh(m)
  np.testing.assert_allclose(got, expected, atol=1e-12)
  np.testing.assert_allclose(trace_sqrt, np.sqrt(np.clip(expected, 0, None)).sum(), rtol=1e-9)


def test_stats_need_two_samples():
  with pytest.raises(UserError, match="at least 2"):
    ev.gaussian_stats(np.zeros((1, 3)))
  # Exactly two samples is enough: mean and the N - 1 covariance of two points.
  mu, sigma = ev.gaussian_stats(np.array([[0.0, 1.0], [2.0, 5.0]]))
  np.testing.assert_allclose(mu, [1.0, 3.0])
  np.testing.assert_allclose(sigma, [[2.0, 4.0], [4.0, 8.0]])


# --- KID -------------------------------------------------------------------------------------


def _numpy_kid(f1, f2, num_subsets, m, seed):
  rng = np.random.default_rng(seed)
  d = f1.shape[1]
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)].astype(np.float64)
    y = f2[rng.choice(len(f2), m, replace=False)].astype(np.float64)
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                  - 2 * kxy.mean())
  return np.mean(values), np.std(values)


def test_kid_is_accurate_on_features_far_from_the_origin():
  """Kernel values ~ 26^3 whose averages nearly cancel: the float64 computation is needed."""
  rng = np.random.default_rng(5)
  f1 = (5.0 + rng.standard_normal((300, 32))).astype(np.float32)
  f2 = (5.0 + 1.05 * rng.standard_normal((300, 32))).astype(np.float32)
  got = ev.kid(f1, f2, num_subsets=3, subset_size=200, seed=1)
  np.testing.assert_allclose(got, _numpy_kid(f1, f2, 3, 200, 1), rtol=1e-4)  # float32 sums: ~4e-4 off
  # The evaluator's defaults are those of Binkowski et al.: 100 subsets of 1000.
  assert ev.EVALUATORS.get("kid").defaults() == {"every": 0, "subsets": 100, "subset_size": 1000}


def test_kid_matches_numpy_unbiased_mmd():
  rng = np.random.default_rng(4)
  f1 = rng.standard_normal((300, 32)).astype(np.float32)
  f2 = (rng.standard_normal((250, 32)) * 1.3 + 0.2).astype(np.float32)
  got = ev.kid(f1, f2, num_subsets=20, subset_size=100, seed=7)
  np.testing.assert_allclose(got, _numpy_kid(f1, f2, 20, 100, 7), rtol=1e-5)
  # Same distribution, small subsets: unbiased, so it can be (and is not clipped when) negative.
  same = [ev.kid(f1[:150], f1[150:], 1, 150)[0]] + [
      ev.kid(f1, rng.standard_normal((300, 32)).astype(np.float32), 5, 50, seed=s)[0]
      for s in range(4)]
  assert min(same) < 0 < got[0]
  for subsets, size in ((0, 100), (20, 1)):
    with pytest.raises(UserError, match=f"num_subsets >= 1 and subset_size >= 2 .*got {subsets} and {size}"):
      ev.kid(f1, f2, num_subsets=subsets, subset_size=size)


def test_kid_evaluator_draws_its_subsets_from_the_run_seed_and_step():
  rng = np.random.default_rng(5)
  real, fake = rng.standard_normal((2, 200, 8)).astype(np.float32)
  config = ml_collections.ConfigDict({"eval": {"kid": {"every": 0, "subsets": 4, "subset_size": 50}}})
  got = {}
  for seed in ([0, 10], [1, 10], [0, 11]):
    ctx = types.SimpleNamespace(config=config, real_features=types.SimpleNamespace(features=real),
                                fake_features=types.SimpleNamespace(features=fake), numpy_seed=lambda s=seed: s)
    out = ev.EVALUATORS.get("kid")().run(ctx)
    assert (out["kid_mean"], out["kid_std"]) == ev.kid(real, fake, 4, 50, seed=seed)
    got[tuple(seed)] = out["kid_mean"]
  assert len(set(got.values())) == 3  # another seed or step: other subsets
  run = ev.EvalContext.__new__(ev.EvalContext)  # what a run's evaluation passes: its seed and step
  run.config, run.step = ml_collections.ConfigDict({"seed": 4}), 9
  assert run.numpy_seed() == [4, 9]


# --- IS --------------------------------------------------------------------------------------


def test_inception_score_limits_and_reference():
  n, c = 200, 10
  np.testing.assert_allclose(ev.inception_score(np.zeros((n, c)), splits=4), (1.0, 0.0),
                             atol=1e-12)
  with np.errstate(divide="ignore"):  # exact one-hot: -inf logits, 0 log 0 = 0
    one_hot = np.log(np.eye(c)[np.arange(n) % c])
  np.testing.assert_allclose(ev.inception_score(one_hot, splits=4), (c, 0.0), atol=1e-9)
  logits = np.random.default_rng(5).standard_normal((n, c)) * 3
  p = scipy.special.softmax(logits, axis=1)
  scores = []
  for part in np.array_split(p, 4):
    kl = np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), axis=1)
    scores.append(np.exp(kl.mean()))
  np.testing.assert_allclose(ev.inception_score(logits, splits=4),
                             (np.mean(scores), np.std(scores)), rtol=1e-10)


# --- precision / recall, density / coverage -------------------------------------------------


def _brute_force(real, fake, pr_k, dc_k):
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
  d_rr, d_ff, d_rf = dist(real, real), dist(fake, fake), dist(real, fake)
  kth = lambda d, k: np.sort(d, axis=1)[:, k]  # column 0 is the point itself
  r_pr, r_dc, f_pr = kth(d_rr, pr_k), kth(d_rr, dc_k), kth(d_ff, pr_k)
  return {
      "precision": np.mean(np.any(d_rf <= r_pr[:, None], axis=0)),
      "recall": np.mean(np.any(d_rf <= f_pr[None, :], axis=1)),
      "density": np.sum(d_rf < r_dc[:, None]) / (dc_k * len(fake)),
      "coverage": np.mean(d_rf.min(axis=1) < r_dc),
  }


def test_manifold_metrics_match_brute_force():
  rng = np.random.default_rng(6)
  real = rng.standard_normal((300, 16)).astype(np.float32)
  fake = (rng.standard_normal((250, 16)) * 1.2 + 0.3).astype(np.float32)
  expected = _brute_force(real, fake, 3, 5)
  got = ev.manifold_metrics(real, fake, pr_k=3, dc_k=5, block_size=64)  # 300 = 4*64 + 44
  chex.assert_trees_all_close(got, expected, atol=1e-12)
  assert ev.precision_recall(real, fake, k=3, block_size=1000) == (got["precision"], got["recall"])
  assert ev.density_coverage(real, fake, k=5, block_size=7) == (got["density"], got["coverage"])


def test_manifold_metrics_do_not_change_under_a_common_offset():
  """Features far from the origin (an offset of 100 against neighbour distances of ~0.05): the
  float64 brute force, and jaxgen on the unshifted features, give the same numbers."""
  rng = np.random.default_rng(9)
  real = rng.standard_normal((400, 2)) * 0.5
  fake = rng.standard_normal((300, 2)) * 0.6 + 0.1
  expected = _brute_force(real, fake, 3, 5)
  for shift in (0.0, 100.0):
    got = ev.manifold_metrics(real + shift, fake + shift, pr_k=3, dc_k=5, block_size=128)
    chex.assert_trees_all_close(got, expected, atol=1e-12)
  for other in (fake[:, :1], fake[:, 0]):  # another width, or not [M, D]: one line, never broadcast
    with pytest.raises(UserError, match=r"manifold metrics need features \[N, D\] and \[M, D\]"):
      ev.manifold_metrics(real, other)


def _two_clusters(rng, n, std=0.5, clusters=(0, 1)):
  centres = np.array([[-10.0, 0.0], [10.0, 0.0]])
  labels = rng.choice(clusters, n)
  return (centres[labels] + std * rng.standard_normal((n, 2))).astype(np.float32)


def test_mode_dropping_course_example_3():
  rng = np.random.default_rng(7)
  real = _two_clusters(rng, 2000)
  dropping = _two_clusters(rng, 2000, clusters=(0,))  # perfect samples of one cluster only
  precision, recall = ev.precision_recall(real, dropping)
  assert precision > 0.97 and abs(recall - 0.5) < 0.03
  blurred = _two_clusters(rng, 2000, std=2.0)  # covers both clusters, but blurred
  precision, recall = ev.precision_recall(real, blurred)
  assert recall > 0.9 and precision < 0.5


def test_density_coverage_same_distribution():
  rng = np.random.default_rng(8)
  real, fake = rng.standard_normal((2, 3000, 8)).astype(np.float32)
  density, coverage = ev.density_coverage(real, fake, k=5)
  assert abs(density - 1.0) < 0.05
  assert abs(coverage - (1 - 2.0**-5)) < 0.015


# --- mode coverage ---------------------------------------------------------------------------


def test_mode_coverage_counts_modes_quality_and_reverse_kl():
  rng = np.random.default_rng(9)
  angles = 2 * np.pi * np.arange(8) / 8
  means = np.stack([np.cos(angles), np.sin(angles)], 1)
  std = 0.01
  offsets = rng.standard_normal((600, 2))
  offsets *= 2.5 * std * rng.random((600, 1)) / np.linalg.norm(offsets, axis=1, keepdims=True)
  good = np.repeat(means[:6], 100, axis=0) + offsets  # within 2.5 std of 6 of the 8 modes
  junk = np.full((200, 2), 5.0)
  out = ev.mode_coverage(np.concatenate([good, junk]), means, std)
  assert out["modes"] == 6
  np.testing.assert_allclose(out["high_quality"], 600 / 800)
  np.testing.assert_allclose(out["reverse_kl"], math.log(8 / 6), rtol=1e-6)
  full = ev.mode_coverage(np.repeat(means, 10, axis=0), means, std)
  assert full == {"modes": 8, "high_quality": 1.0, "reverse_kl": 0.0}
  assert ev.mode_coverage(junk, means, std)["reverse_kl"] == math.inf


# --- likelihood ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_uniform_density_is_8_bits_per_dim_on_dequantized_8bit_data(value_range):
  lo, hi = value_range
  spec = DataSpec("img", "image", (4, 4, 3), levels=256, value_range=value_range, dequantized=True)
  nll = spec.dims * math.log(hi - lo)  # uniform density on [lo, hi]^D
  np.testing.assert_allclose(ev.continuous_nll_to_bits_per_dim(nll, spec), 8.0, rtol=1e-12)
  # Without dequantization the grid is raw / 255: bins of width (hi - lo) / 255.
  plain = DataSpec("img", "image", (4, 4, 3), levels=256, value_range=value_range)
  np.testing.assert_allclose(ev.model_space_offset_nats(plain),
                             spec.dims * math.log(255 / (hi - lo)), rtol=1e-12)
  assert ev.model_space_offset_nats(DataSpec("p", "points", (2,))) == 0.0
  np.testing.assert_allclose(ev.bits_per_dim_to_nats(ev.nats_to_bits_per_dim(5.0, 7), 7), 5.0)


def test_iwae_exact_posterior_and_monotone_bound():
  # z ~ N(0, 1), x | z ~ N(z, 1)  =>  p(x) = N(0, 2) and p(z | x) = N(x / 2, 1 / 2).
  rng = np.random.default_rng(10)
  x = 1.3
  log_px = -0.5 * math.log(2 * math.pi * 2) - x**2 / 4
  log_normal = lambda v, m, var: -0.5 * np.log(2 * np.pi * var) - (v - m) ** 2 / (2 * var)

  def log_weights(z, q_mean, q_var):
    return log_normal(z, 0, 1) + log_normal(x, z, 1) - log_normal(z, q_mean, q_var)

  z = x / 2 + math.sqrt(0.5) * rng.standard_normal(16)
  np.testing.assert_allclose(ev.iwae_log_likelihood(log_weights(z, x / 2, 0.5)), log_px,
                             rtol=1e-6)
  # A poor proposal: the bound tightens with K (averaged over 2000 repeats) and stays below.
  bounds = []
  for k in (1, 10, 100):
    z = rng.standard_normal((k, 2000))
    bounds.append(float(np.mean(ev.iwae_log_likelihood(log_weights(z, 0.0, 1.0), axis=0))))
  assert bounds[0] < bounds[1] < bounds[2] < log_px
  assert log_px - bounds[2] < 0.02
