"""Tests of the diffusion maths (jaxgen/diffusion.py), the denoisers and the ``ddpm`` family.

The reference case throughout is 1-D Gaussian data ``x_0 ~ N(M, S^2)``, where everything is
closed form: ``x_t = a x_0 + sigma eps`` (``a = sqrt(abar_t)``, ``sigma^2 = 1 - abar_t``) is jointly
Gaussian with ``x_0`` and ``eps``, so the ideal denoiser is ``E[eps | x_t] = sigma (x_t - a M) / V_t``
with ``V_t = a^2 S^2 + sigma^2``.
"""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import compiled_init, load_config, tiny_config
from jaxgen import diffusion, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families import build
from jaxgen.nn.mlp_denoiser import MLPDenoiser

M, S = 0.3, 0.5  # the 1-D Gaussian data set N(M, S^2)
T = 1000


def numpy_schedule(name: str, num_timesteps: int) -> tuple[np.ndarray, np.ndarray]:
  """(betas, abar) in float64, written from the papers' definitions, independent of the code."""
  if name == "linear":
    betas = np.linspace(1e-4, 0.02, num_timesteps) * 1000 / num_timesteps
  else:
    f = np.cos((np.arange(num_timesteps + 1) / num_timesteps + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
  return betas, np.cumprod(1 - betas)


def analytic_model(sched: diffusion.Schedule, prediction: str = "eps") -> diffusion.ModelFn:
  """The ideal eps- (or v-) predictor for data N(M, S^2): posterior means given x_t."""

  def fn(x, t):
    abar = sched.alphas_cumprod[t].reshape(t.shape + (1,) * (x.ndim - 1))
    a, sig = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    resid = (x - a * M) / (a**2 * S**2 + sig**2)
    eps = sig * resid
    if prediction == "eps":
      return eps
    x0 = M + a * S**2 * resid
    return a * eps - sig * x0

  return fn


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_constants(name):
  sched = diffusion.make_schedule(name, T)
  betas, abar = numpy_schedule(name, T)
  np.testing.assert_allclose(sched.betas, betas, rtol=1e-5)
  np.testing.assert_allclose(sched.alphas_cumprod, abar, rtol=1e-4, atol=1e-7)
  if name == "linear":  # Ho et al.: beta_1 = 1e-4, beta_T = 0.02
    np.testing.assert_allclose(np.asarray(sched.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_forward_process_matches_markov_chain(name):
  """Running the chain x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) z step by step reproduces the
  closed form q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t)."""
  sched = diffusion.make_schedule(name, T)
  betas, _ = numpy_schedule(name, T)
  x0 = np.array([-1.0, 0.25, 2.0])
  n = 20000
  rng = np.random.default_rng(0)
  x = np.broadcast_to(x0, (n, 3)).copy()
  checks = {0, 99, 499, 999}
  for t in range(T):
    x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(x.shape)
    if t in checks:
      mean, var = diffusion.q_mean_variance(sched, jnp.asarray(x0)[None], jnp.array([t]))
      se = np.sqrt(np.asarray(var[0]) / n)
      chex.assert_trees_all_close(x.mean(0), np.asarray(mean[0]), atol=5 * float(se.max()))
      np.testing.assert_allclose(x.var(0), np.broadcast_to(var[0], (3,)), rtol=0.05, atol=2e-6)
      # q_sample draws from the same distribution.
      noise = jax.random.normal(jax.random.key(t), (n, 3))
      xt = diffusion.q_sample(sched, jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (n, 3)),
                              jnp.full((n,), t), noise)
      for j in range(3):
        assert scipy.stats.ks_2samp(np.asarray(xt[:, j]), x[:, j]).pvalue > 1e-4


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_matches_bayes_rule(name, t):
  """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), integrated on a fine grid."""
  sched = diffusion.make_schedule(name, T)
  betas, abar = numpy_schedule(name, T)
  x0, xt = 0.7, -0.4
  prior_mean, prior_var = np.sqrt(abar[t - 1]) * x0, 1 - abar[t - 1]
  mean, var, _ = diffusion.q_posterior(sched, jnp.array([x0]), jnp.array([xt]), jnp.array([t]))
  width = 8 * np.sqrt(float(var[0]))
  grid = np.linspace(float(mean[0]) - width, float(mean[0]) + width, 200001)
  log_p = (scipy.stats.norm.logpdf(xt, np.sqrt(1 - betas[t]) * grid, np.sqrt(betas[t]))
           + scipy.stats.norm.logpdf(grid, prior_mean, np.sqrt(prior_var)))
  w = np.exp(log_p - log_p.max())
  w /= w.sum()
  bayes_mean = np.sum(w * grid)
  bayes_var = np.sum(w * (grid - bayes_mean) ** 2)
  np.testing.assert_allclose(float(mean[0]), bayes_mean, atol=1e-4 * max(1, abs(bayes_mean)))
  np.testing.assert_allclose(float(var[0]), bayes_var, rtol=1e-3)


def test_posterior_at_first_step_is_x0():
  sched = diffusion.make_schedule("linear", T)
  mean, var, _ = diffusion.q_posterior(sched, jnp.array([0.5]), jnp.array([0.1]), jnp.array([0]))
  np.testing.assert_allclose(mean, [0.5], atol=1e-6)
  np.testing.assert_allclose(var, [0.0], atol=1e-12)


def test_prediction_conversions_are_consistent():
  sched = diffusion.make_schedule("cosine", T)
  k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
  x0 = jax.random.normal(k0, (64, 4))
  eps = jax.random.normal(k1, (64, 4))
  t = jax.random.randint(k2, (64,), 0, T - 50)  # away from abar ~ 0 where x0 is ill-determined
  xt = diffusion.q_sample(sched, x0, t, eps)
  v = diffusion.v_from_eps_x0(sched, t, eps, x0)
  x0_v, eps_v = diffusion.x0_eps_from_v(sched, xt, t, v)
  chex.assert_trees_all_close((x0_v, eps_v), (x0, eps), atol=2e-4)
  chex.assert_trees_all_close(diffusion.x0_from_eps(sched, xt, t, eps), x0, atol=2e-3)
  chex.assert_trees_all_close(diffusion.eps_from_x0(sched, xt, t, x0), eps, atol=2e-3)
  # x_t = sqrt(abar) x0 + sqrt(1-abar) eps and v are an orthogonal rotation of (x0, eps).
  chex.assert_trees_all_close(xt**2 + v**2, x0**2 + eps**2, atol=1e-4)
  # denoise() recovers x0 and eps from either parameterisation of the true target.
  for prediction, target in (("eps", eps), ("v", v)):
    got = diffusion.denoise(sched, lambda x, tt, target=target: target, xt, t, prediction)
    chex.assert_trees_all_close(got, (x0, eps), atol=2e-3)


def _random_model(x, t):
  """Any denoiser: the DDPM/DDIM identity must hold whatever the network predicts."""
  return jnp.tanh(x) * 0.7 + jnp.sin(t.astype(jnp.float32) / 37.0)[:, None]


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_eta1_step_is_the_ancestral_step(prediction, clip):
  """DDIM with eta = 1 from t to t-1 has the DDPM mean and std (posterior variance)."""
  sched = diffusion.make_schedule("linear", T)
  x = jax.random.normal(jax.random.key(0), (T, 3)) * 1.5
  t = jnp.arange(T)
  noise = jnp.zeros_like(x)
  _, ddpm_mean, ddpm_std = diffusion.ddpm_step(sched, _random_model, x, t, noise, prediction,
                                               "small", clip)
  _, ddim_mean, ddim_sigma = diffusion.ddim_step(sched, _random_model, x, t, t - 1, noise, 1.0,
                                                 prediction, clip)
  chex.assert_trees_all_close(ddim_mean, ddpm_mean, atol=2e-5, rtol=1e-4)
  chex.assert_trees_all_close(jnp.broadcast_to(ddim_sigma, (T, 1)), ddpm_std, atol=1e-6,
                              rtol=1e-4)


def test_ddim_eta1_all_steps_matches_ddpm_in_distribution():
  sched = diffusion.make_schedule("linear", T)
  model = analytic_model(sched)
  shape = (4000, 1)
  ddpm = diffusion.ddpm_sample(sched, model, jax.random.key(1), shape, "eps")
  ddim_same = diffusion.ddim_sample(sched, model, jax.random.key(1), shape, T, 1.0, "eps")
  ddim_other = diffusion.ddim_sample(sched, model, jax.random.key(2), shape, T, 1.0, "eps")
  # Same randomness: the same chain, step for step.
  chex.assert_trees_all_close(ddim_same, ddpm, atol=1e-4)
  # Independent randomness: the same distribution.
  assert scipy.stats.ks_2samp(np.asarray(ddpm[:, 0]), np.asarray(ddim_other[:, 0])).pvalue > 1e-3


def ddim_output_moments(name: str, steps: int, eta: float) -> tuple[float, float]:
  """Exact mean/variance of DDIM's output with the ideal denoiser, by propagating moments in float64.

  Every DDIM step is linear-Gaussian in x_t here. With few steps DDIM is biased towards a smaller
  variance (its x_0 prediction is a posterior mean, not a posterior sample); the bias vanishes as
  the number of steps grows.
  """
  _, abar = numpy_schedule(name, T)
  seq = diffusion.ddim_timesteps(T, steps)[::-1]
  mean, var = 0.0, 1.0
  for t, s in zip(seq, np.append(seq[1:], -1)):
    a_t, sig_t = np.sqrt(abar[t]), np.sqrt(1 - abar[t])
    abar_s = abar[s] if s >= 0 else 1.0
    sigma = eta * np.sqrt((1 - abar_s) / (1 - abar[t]) * (1 - abar[t] / abar_s))
    v_t = a_t**2 * S**2 + sig_t**2
    gain = (np.sqrt(abar_s) * a_t * S**2 + np.sqrt(1 - abar_s - sigma**2) * sig_t) / v_t
    mean = gain * (mean - a_t * M) + np.sqrt(abar_s) * M
    var = gain**2 * var + sigma**2
  return mean, var


@pytest.mark.parametrize("name,prediction", [("linear", "eps"), ("cosine", "v")])
def test_samplers_reproduce_gaussian_with_ideal_denoiser(name, prediction):
  sched = diffusion.make_schedule(name, T)
  model = analytic_model(sched, prediction)
  n = 20000
  se_mean, se_var = S / math.sqrt(n), S**2 * math.sqrt(2 / n)

  def check(x, mean, var):
    x = np.asarray(x[:, 0], np.float64)
    assert abs(x.mean() - mean) < 5 * se_mean, (x.mean(), mean)
    assert abs(x.var() - var) < 5 * se_var, (x.var(), var)

  ddpm = diffusion.ddpm_sample(sched, model, jax.random.key(0), (n, 1), prediction)
  check(ddpm, M, S**2)
  for steps, eta in ((T, 0.0), (100, 0.0), (100, 1.0), (20, 0.0), (20, 1.0)):
    x = diffusion.ddim_sample(sched, model, jax.random.key(steps), (n, 1), steps, eta, prediction)
    mean, var = ddim_output_moments(name, steps, eta)
    check(x, mean, var)
    if steps == T:  # the discretisation bias is negligible with all T steps
      check(x, M, S**2)


def expected_bound() -> tuple[float, float, float]:
  """E_{x_0 ~ N(M, S^2)} of the (prior, diffusion, decoder) terms for the ideal denoiser, in closed
  form (float64). With the posterior variance as reverse variance, each KL is the squared mean
  error ``c0_t^2 (x_0 - E[x_0|x_t])^2 / (2 betatilde_t)``, whose expectation uses
  ``Var(x_0 | x_t) = S^2 sigma_t^2 / V_t``; the decoder is a Gaussian density of variance
  ``betatilde_1``."""
  betas, abar = numpy_schedule("linear", T)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = betas * (1 - abar_prev) / (1 - abar)
  var_x0 = S**2 * (1 - abar) / (abar * S**2 + 1 - abar)
  c0 = np.sqrt(abar_prev) * betas / (1 - abar)
  prior = 0.5 * (abar[-1] * (M**2 + S**2) + (1 - abar[-1]) - 1 - np.log(1 - abar[-1]))
  diffusion_kl = np.sum(0.5 * c0[1:] ** 2 * var_x0[1:] / post_var[1:])
  decoder = 0.5 * np.log(2 * np.pi * post_var[1]) + 0.5 * var_x0[0] / post_var[1]
  return prior, diffusion_kl, decoder


def model_marginal() -> tuple[float, float]:
  """Mean and variance of p_theta(x_0) for the ideal denoiser: the reverse chain with the posterior
  variance is linear-Gaussian, x_{t-1} = c0_t E[x_0|x_t] + ct_t x_t + sigma_t z (with the decoder
  noise at t = 0), so its marginal follows by propagating two moments in float64."""
  betas, abar = numpy_schedule("linear", T)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = betas * (1 - abar_prev) / (1 - abar)
  mean, var = 0.0, 1.0
  for t in range(T - 1, -1, -1):
    a, v_t = np.sqrt(abar[t]), abar[t] * S**2 + 1 - abar[t]
    c0 = np.sqrt(abar_prev[t]) * betas[t] / (1 - abar[t])
    ct = np.sqrt(1 - betas[t]) * (1 - abar_prev[t]) / (1 - abar[t])
    gain = c0 * a * S**2 / v_t + ct  # d mean / d x_t
    mean = gain * (mean - a * M) + c0 * M + ct * a * M
    var = gain**2 * var + (post_var[t] if t > 0 else post_var[1])
  return mean, var


def test_bound_matches_closed_form_and_is_above_the_exact_nll():
  """Continuous data with a continuous (Gaussian-density) decoder: like with like.

  The Monte-Carlo bound averages to its closed form (``expected_bound``). For each x_0,
  E_q[bound(x_0)] >= -log p_theta(x_0) (the ELBO), where p_theta is exactly Gaussian here
  (``model_marginal``); averaged over the data, -log p_theta >= the entropy of N(M, S^2) (Gibbs).
  The gap (~0.6 nats) is the price of the fixed reverse variance: the true reverse variance is
  ``betatilde_t + c0_t^2 Var(x_0|x_t)``, about twice ``betatilde_t`` for the first steps.
  """
  sched = diffusion.make_schedule("linear", T)
  n = 2000
  x0 = M + S * jax.random.normal(jax.random.key(0), (n, 1))
  terms = jax.jit(lambda x, k: diffusion.variational_bound(
      sched, analytic_model(sched), x, k, "eps"))(x0, jax.random.key(1))
  for name, want in zip(("prior", "diffusion", "decoder"), expected_bound()):
    got = np.asarray(terms[name], np.float64)
    assert abs(got.mean() - want) < 4 * got.std() / math.sqrt(n) + 1e-3, (name, got.mean(), want)
  bound = np.asarray(terms["prior"] + terms["diffusion"] + terms["decoder"], np.float64)
  mean_p, var_p = model_marginal()
  exact_nll = -scipy.stats.norm.logpdf(np.asarray(x0[:, 0], np.float64), mean_p, np.sqrt(var_p))
  entropy = 0.5 * math.log(2 * math.pi * math.e * S**2)
  gap = bound - exact_nll
  assert gap.mean() > 3 * gap.std() / math.sqrt(n), (gap.mean(), gap.std())
  assert exact_nll.mean() > entropy - 3 * exact_nll.std() / math.sqrt(n)
  # The prior term is the closed-form KL of N(sqrt(abar_T) x0, 1 - abar_T) from N(0, 1).
  a2 = float(sched.alphas_cumprod[-1])
  np.testing.assert_allclose(
      terms["prior"], 0.5 * (a2 * x0[:, 0] ** 2 + (1 - a2) - 1 - np.log(1 - a2)), atol=1e-6)


def test_discrete_bound_is_above_the_discrete_entropy():
  """Data on a grid of 17 values (a discretized N(M, S^2)), discretized decoder: the bound is on
  the discrete probabilities, so its mean over the data is >= their entropy."""
  levels = 17
  grid = np.linspace(-1, 1, levels)
  edges = np.concatenate([[-np.inf], (grid[1:] + grid[:-1]) / 2, [np.inf]])
  probs = np.diff(scipy.stats.norm.cdf(edges, M, S))
  entropy = -np.sum(probs * np.log(probs))
  sched = diffusion.make_schedule("linear", T)
  n = 2000
  x0 = jnp.asarray(np.random.default_rng(0).choice(grid, size=(n, 1), p=probs), jnp.float32)
  terms = jax.jit(lambda x, k: diffusion.variational_bound(
      sched, analytic_model(sched), x, k, "eps", levels=levels))(x0, jax.random.key(1))
  bound = np.asarray(terms["prior"] + terms["diffusion"] + terms["decoder"], np.float64)
  assert bound.mean() - 3 * bound.std() / math.sqrt(n) > entropy


def test_discretized_decoder_probabilities_sum_to_one():
  levels = 17
  grid = jnp.linspace(-1, 1, levels)[:, None]
  for mean, std in ((0.1, 0.05), (-0.97, 0.3), (1.5, 0.01), (0.0, 3.0)):
    log_p = diffusion.discretized_gaussian_log_likelihood(
        grid, mean, jnp.log(std**2), levels, (-1.0, 1.0))
    edges = np.concatenate([[-np.inf], np.linspace(-1, 1, levels)[:-1] + 1 / 16, [np.inf]])
    expected = np.diff(scipy.stats.norm.cdf(edges, mean, std))
    np.testing.assert_allclose(np.exp(log_p[:, 0]), expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, atol=1e-4)


def test_discrete_decoder_nll_is_the_binned_gaussian_of_x0():
  """``decoder_nll`` with ``levels``: ``-sum_d log P(bin of x0_d)`` under ``N(mean, var)`` of
  ``p(x_0 | x_1)``, the bins of the grid of x0 (not of the mean); extreme bins open-ended."""
  levels, sched = 17, diffusion.make_schedule("linear", T)
  rng = np.random.default_rng(3)
  grid = np.linspace(-1, 1, levels)
  x0 = jnp.asarray(rng.choice(grid, size=(6, 3)), jnp.float32).at[0, 0].set(1.0).at[1, 0].set(-1.0)  # open bins
  noise = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
  model = lambda x, t: 0.3 * x + 5.0  # a poor eps-predictor: the mean sits ~0.05 (5 std) off x0
  got = diffusion.decoder_nll(sched, model, x0, noise, "eps", "large", False, levels, (-1.0, 1.0))
  t0 = jnp.zeros((6,), jnp.int32)
  mean, log_var, _ = diffusion.p_mean_variance(sched, model, diffusion.q_sample(sched, x0, t0, noise), t0,
                                               "eps", "large", False)
  mean, std, x = np.asarray(mean, np.float64), np.exp(0.5 * np.asarray(log_var, np.float64)), np.asarray(x0)
  upper = np.where(x >= 1, np.inf, x + 1 / 16)
  lower = np.where(x <= -1, -np.inf, x - 1 / 16)
  prob = scipy.stats.norm.cdf(upper, mean, std) - scipy.stats.norm.cdf(lower, mean, std)
  assert -np.log(prob).sum() > 1  # far from certain: which bins are used matters
  np.testing.assert_allclose(got, -np.log(prob).sum(axis=1), rtol=1e-3)


def test_stratified_bound_is_unbiased():
  sched = diffusion.make_schedule("cosine", 200)
  x0 = M + S * jax.random.normal(jax.random.key(0), (4000, 1))
  bound = jax.jit(lambda k, num_terms: diffusion.variational_bound(
      sched, analytic_model(sched), x0, k, "eps", num_terms=num_terms),
      static_argnums=1)
  full = bound(jax.random.key(1), 0)["diffusion"]
  est = bound(jax.random.key(2), 4)["diffusion"]
  se = float(jnp.std(est - full)) / math.sqrt(x0.shape[0])
  assert abs(float(jnp.mean(est)) - float(jnp.mean(full))) < 4 * se


def test_classifier_free_guidance_combination():
  def model(x, t, label):
    return x * (label[:, None] + 1.0) + t[:, None]

  x = jnp.arange(6.0).reshape(3, 2)
  t = jnp.array([1, 2, 3])
  label = jnp.array([0, 1, 2])
  w = 2.5
  got = diffusion.guided(model, label, 10, w)(x, t)
  want = (1 + w) * model(x, t, label) - w * model(x, t, jnp.full((3,), 10))
  chex.assert_trees_all_close(got, want, atol=1e-5)
  chex.assert_trees_all_close(diffusion.guided(model, label, 10, 0.0)(x, t), model(x, t, label))


def test_ddim_timesteps():
  np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 4), [0, 3, 6, 9])
  np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 10), np.arange(10))
  with pytest.raises(UserError, match="sample.steps"):
    diffusion.ddim_timesteps(10, 11)


def test_sample_steps_beyond_the_trained_timesteps_are_refused_when_the_family_is_built():
  """Before any training step, not at the first ``samples`` evaluation; DDPM's ancestral sampler
  takes every timestep and ignores ``sample.steps``."""
  spec = DataSpec("toy2d/ring8", "points", (2,))
  for sampler in ("ddim", "dpm_solver", "heun", "euler"):
    config = load_config("ddpm_toy2d", **{"sample.sampler": sampler, "sample.steps": 201})
    with pytest.raises(UserError, match=r"sample.steps=201 must be in \[1, model.num_timesteps=200\]"):
      build(config, spec)
  build(load_config("ddpm_toy2d", **{"sample.sampler": "ddpm", "sample.steps": 201}), spec)


@pytest.mark.parametrize("name", ["ddpm_toy2d", "flow_matching_toy2d"])
def test_bfloat16_with_the_float32_mlp_denoiser_is_refused_when_the_family_is_built(name):
  """The MLP denoiser of points has no compute dtype: bfloat16 would be a silent float32 run."""
  with pytest.raises(UserError, match=r"train.compute_dtype=bfloat16 changes nothing in model.network='mlp'"):
    build(load_config(name, **{"train.compute_dtype": "bfloat16"}), DataSpec("toy2d/ring8", "points", (2,)))


# ---- networks ---------------------------------------------------------------------------------


def test_mlp_denoiser_shapes_and_conditioning():
  net = MLPDenoiser(hidden=16, num_blocks=2, num_classes=2)
  x = jnp.ones((4, 2))
  params = net.init(jax.random.key(0), x, jnp.zeros(4, jnp.int32), jnp.zeros(4, jnp.int32))
  out0 = net.apply(params, x, jnp.zeros(4, jnp.int32), jnp.zeros(4, jnp.int32))
  out1 = net.apply(params, x, jnp.zeros(4, jnp.int32), jnp.ones(4, jnp.int32))
  chex.assert_shape(out0, (4, 2))
  assert float(jnp.abs(out1 - out0).min()) > 0


# ---- the family ---------------------------------------------------------------------------------

DIGITS = DataSpec(name="digits", modality="image", shape=(8, 8, 1), levels=17, num_classes=10)
SMALL = {"model.num_timesteps": 50, "model.unet.channels": 8, "sample.steps": 10}


def digits_batch(n=8):
  raw = np.random.default_rng(0).integers(0, 17, (n, 8, 8, 1))
  return {"x": jnp.asarray(raw / 8.0 - 1.0, jnp.float32), "label": jnp.arange(n) % 10,
          "mask": jnp.ones(n)}


@pytest.fixture(scope="module")
def conditional():
  """A class-conditional tiny-U-Net family from configs/ddpm.py and its initial params."""
  family = build(load_config("ddpm", **SMALL, **{"model.conditional": True}), DIGITS)
  params, state = compiled_init(family, 0, digits_batch())
  return family, params, state


def test_unet_shapes_and_conditioning(conditional):
  family, params, _ = conditional
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  x_b = x.at[1].set(0.0)
  xs = jnp.stack([x, x, x, x_b])
  ts = jnp.array([[3, 3], [3, 3], [40, 40], [3, 3]])
  labels = jnp.array([[0, 0], [1, 10], [0, 0], [0, 0]])  # 10 = the null class
  apply = lambda x, t, c: family.net.apply({"params": params["model"]}, x, t, c)
  out0, out_label, out_t, out_b = jax.jit(jax.vmap(apply))(xs, ts, labels)
  chex.assert_shape(out0, (2, 8, 8, 1))
  chex.assert_tree_all_finite(out0)
  assert float(jnp.abs(out_label - out0).min()) > 1e-6  # every output changes with the label
  assert float(jnp.abs(out_t - out0).min()) > 1e-6  # ... and with the timestep
  # Examples are independent: changing one input leaves the other output unchanged.
  chex.assert_trees_all_close(out_b[0], out0[0], atol=1e-5)
  assert float(jnp.abs(out_b[1] - out0[1]).max()) > 1e-3


def test_family_sampler_is_one_compiled_scan(conditional):
  family, params, state = conditional
  calls = []
  apply = family._apply
  family._apply = lambda *a, **k: calls.append(1) or apply(*a, **k)
  try:
    for sampler, guidance in (("ddim", 0.0), ("ddpm", 1.5)):
      family.config.sample.sampler = sampler
      family.config.sample.guidance_scale = guidance
      calls.clear()
      chex.clear_trace_counter()

      @jax.jit
      @chex.assert_max_traces(n=1)
      def draw(params, rng):
        return family.sample(params, state, rng, 4)

      a = draw(params, jax.random.key(1))
      b = draw(params, jax.random.key(2))
      chex.assert_shape(a, (4, 8, 8, 1))
      assert float(jnp.abs(a).max()) <= 1.0  # the last step returns the clipped x_0 prediction
      assert float(jnp.abs(a - b).max()) > 0
      assert len(calls) == 1, calls  # the network is traced once: a scan, not a Python loop
  finally:
    del family._apply
    family.config.sample.sampler, family.config.sample.guidance_scale = "ddim", 0.0


def test_family_eval_terms_add_up(conditional):
  family, params, state = conditional
  batch = digits_batch()
  m = jax.jit(family.eval_metrics)(params, state, batch, jax.random.key(1))
  for k in ("bits_per_dim", "bpd_prior", "bpd_diffusion", "bpd_decoder", "nll_bound_nats"):
    chex.assert_shape(m[k], (8,))
  chex.assert_trees_all_close(m["bpd_prior"] + m["bpd_diffusion"] + m["bpd_decoder"],
                              m["bits_per_dim"], rtol=1e-5)
  chex.assert_trees_all_close(m["bits_per_dim"] * 64 * math.log(2), m["nll_bound_nats"], rtol=1e-5)
  assert float(m["bpd_decoder"].min()) >= 0  # a discrete likelihood: log p <= 0
  assert float(m["bpd_diffusion"].min()) > 0  # a sum of KLs


def test_training_timesteps_are_uniform_and_label_dropout_has_its_rate(conditional):
  """The simple loss draws t uniformly on 0..T-1 (chi-square goodness of fit) and replaces the
  label by the null class with probability model.label_dropout (binomial), only in training."""
  family, _, _ = conditional
  n, num_t = 20000, family.schedule.num_timesteps
  batch = {"x": jnp.zeros((n, 8, 8, 1)), "label": jnp.arange(n) % 10}
  _, t, label, _ = family.training_inputs(batch, jax.random.key(0), train=True)
  counts = np.bincount(np.asarray(t), minlength=num_t)
  assert len(counts) == num_t and scipy.stats.chisquare(counts).pvalue > 1e-3, counts
  dropped = np.asarray(label) == 10
  rate = family.config.model.label_dropout
  assert abs(dropped.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / n), dropped.mean()
  np.testing.assert_array_equal(np.asarray(label)[~dropped], np.asarray(batch["label"])[~dropped])
  _, _, kept, _ = family.training_inputs(batch, jax.random.key(0), train=False)
  np.testing.assert_array_equal(kept, batch["label"])


def test_sample_label_semantics(monkeypatch):
  """sample.label=-1 draws uniformly random labels from the sample key (not a cycle through the
  classes); k >= 0 gives class k to every sample."""
  from jaxgen.families import ddpm  # pylint: disable=import-outside-toplevel

  spec = DataSpec(name="points with classes", modality="points", shape=(2,), num_classes=10)
  family = build(load_config("ddpm_toy2d", **{"model.conditional": True, "model.mlp.hidden": 8,
                                              "model.num_timesteps": 10, "sample.steps": 1}), spec)
  params, state = family.init(jax.random.key(0), {"x": jnp.zeros((2, 2))})
  drawn = []
  labels_from_config = ddpm.sampling.labels_from_config
  monkeypatch.setattr(ddpm.sampling, "labels_from_config",
                      lambda *a: drawn.append(labels_from_config(*a)) or drawn[-1])
  for key in (1, 2):
    family.sample(params, state, jax.random.key(key), 200)
  family.config.sample.label = 3
  family.sample(params, state, jax.random.key(1), 5)
  first, second, fixed = (np.asarray(d) for d in drawn)
  assert set(first) == set(range(10)) and np.any(first != second)
  assert np.any(first != np.arange(200) % 10)
  assert scipy.stats.chisquare(np.bincount(first, minlength=10)).pvalue > 1e-3
  np.testing.assert_array_equal(fixed, [3] * 5)


def test_family_defaults_are_the_documented_ones():
  """DDIM is deterministic by default (eta = 0, Song et al. 2021); the held-out bound uses 100
  stratified timesteps (``diffusion.variational_bound``)."""
  from jaxgen.families.ddpm import DDPM  # pylint: disable=import-outside-toplevel

  defaults = DDPM.defaults()
  assert defaults["sample"]["eta"] == 0.0 and defaults["sample"]["sampler"] == "ddim"
  assert defaults["eval"]["bound_timesteps"] == 100


def test_family_rejects_bad_config():
  with pytest.raises(UserError, match="guidance_scale"):
    build(load_config("ddpm", **{"sample.guidance_scale": 2.0}), DIGITS)
  with pytest.raises(UserError, match="no labels"):
    build(load_config("ddpm", **{"model.network": "mlp", "model.conditional": True}),
          DataSpec(name="toy2d/swissroll", modality="points", shape=(2,)))
  with pytest.raises(UserError, match="mlp"):
    build(load_config("ddpm", **{"model.network": "mlp"}), DIGITS)
  with pytest.raises(UserError, match="prediction"):
    build(load_config("ddpm", **{"model.prediction": "x0"}), DIGITS)


def test_end_to_end_on_digits(workdir):
  # A one-level U-Net without attention (half the compile time): this test checks the loop and the
  # bound's accounting; the default U-Net's structure is test_unet_shapes_and_conditioning's.
  config = tiny_config("ddpm", **SMALL, **{"eval.bound_timesteps": 10, "model.unet.ch_mult": (1,),
                                           "model.unet.attn_resolutions": ()})
  ts = train.train_and_evaluate(config, workdir)
  assert int(ts.step) == 4
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert results["num_eval_examples"] == 64
  terms = results["bpd_prior"] + results["bpd_diffusion"] + results["bpd_decoder"]
  assert math.isclose(results["bits_per_dim"], terms, rel_tol=1e-5)
  assert math.isclose(results["nll_bound_nats"], results["bits_per_dim"] * 64 * math.log(2),
                      rel_tol=1e-5)
  # A 4-step model is far from the data: worse than the uniform 17-level code, log2(17) bits/dim.
  assert results["bits_per_dim"] > math.log2(17)
  assert os.path.exists(os.path.join(workdir, "samples", "step_4.png"))
