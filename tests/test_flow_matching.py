"""Tests of the ODE integrators (jaxgen/ode.py) and the ``flow_matching`` family.

Reference case: Gaussian data ``x_0 ~ N(M, diag(S^2))`` on the path ``x_t = alpha_t x_0 + sigma_t
eps``. Then ``x_t ~ N(alpha_t M, V_t)``, ``V_t = alpha_t^2 S^2 + sigma_t^2`` per dimension, and the
optimal (marginal) velocity is ``E[u_t | x_t] = alpha'_t E[x_0 | x_t] + sigma'_t E[eps | x_t]`` with
``E[x_0 | x_t] = M + alpha_t S^2 (x_t - alpha_t M) / V_t`` and ``E[eps | x_t] = sigma_t (x_t -
alpha_t M) / V_t``. Its flow keeps the standardised coordinate ``(x_t - alpha_t M) / sqrt(V_t)``
constant, so the exact map from ``x_1`` to ``x_0`` is ``M + S (x_1 - alpha_1 M) / sqrt(V_1)`` and
``log p_0`` is the Gaussian log-density.
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

from conftest import load_config, tiny_config
from jaxgen import ode, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families import build
from jaxgen.families.flow_matching import path_coefficients, sample_time

M = np.array([0.3, -1.0])
S = np.array([0.5, 1.5])
TOY = DataSpec(name="toy2d/moons", modality="points", shape=(2,))


def numpy_path(path: str, t):
  """(alpha, sigma, alpha', sigma') written from the definitions, independent of the code."""
  t = np.asarray(t, np.float64)
  if path == "linear":
    return 1 - t, t, -np.ones_like(t), np.ones_like(t)
  return (np.cos(np.pi * t / 2), np.sin(np.pi * t / 2), -np.pi / 2 * np.sin(np.pi * t / 2),
          np.pi / 2 * np.cos(np.pi * t / 2))


def analytic_velocity(path: str, mean=M, cov=np.diag(S**2)) -> ode.VectorField:
  """The optimal velocity field for data N(mean, cov) (module docstring, with matrices:
  ``V_t = alpha_t^2 cov + sigma_t^2 I`` and ``E[x_0 | x_t] = mean + alpha_t cov V_t^-1 (x_t - alpha_t mean)``)."""
  mean, cov = jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)

  def f(x, t):
    a, s, da, ds = path_coefficients(path, t)
    resid = jnp.linalg.solve(a**2 * cov + s**2 * jnp.eye(cov.shape[0]), (x - a * mean).T).T
    return da * (mean + a * resid @ cov) + ds * s * resid

  return f


def exact_transport(path: str, x1):
  a, s, _, _ = numpy_path(path, 1.0)
  return M + S * (np.asarray(x1, np.float64) - a * M) / np.sqrt(a**2 * S**2 + s**2)


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_path_coefficients_match_their_definition(path):
  t = np.linspace(0, 1, 11)
  got = [np.asarray(c, np.float64) for c in path_coefficients(path, jnp.asarray(t, jnp.float32))]
  want = numpy_path(path, t)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-6)
  # The derivatives are the derivatives: central differences of alpha and sigma.
  h = 1e-3
  lo, hi = numpy_path(path, t[1:-1] - h), numpy_path(path, t[1:-1] + h)
  np.testing.assert_allclose((hi[0] - lo[0]) / (2 * h), want[2][1:-1], atol=1e-5)
  np.testing.assert_allclose((hi[1] - lo[1]) / (2 * h), want[3][1:-1], atol=1e-5)
  # Endpoints: data at t = 0, pure noise at t = 1.
  np.testing.assert_allclose([want[0][0], want[1][0], want[0][-1], want[1][-1]], [1, 0, 0, 1], atol=1e-12)


@pytest.mark.parametrize("path", ["linear", "vp"])
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_analytic_field_transports_prior_to_data(path, method):
  """Integrating the optimal field from N(0, I) at t = 1 to t = 0 gives N(M, diag(S^2)): the
  sample moments are within sampling error and every point lands on its exact image."""
  n = 5000
  steps, rel = {"euler": (256, 1e-2), "heun": (32, 1e-3)}[method]  # the discretisation error
  x1 = jax.random.normal(jax.random.key(0), (n, 2))
  x0 = np.asarray(ode.solve(analytic_velocity(path), x1, jnp.linspace(1.0, 0.0, steps + 1), method),
                  np.float64)
  se_mean, se_var = S / math.sqrt(n), S**2 * math.sqrt(2 / n)
  assert np.all(np.abs(x0.mean(0) - M) < 5 * se_mean + rel), x0.mean(0)
  assert np.all(np.abs(x0.var(0) - S**2) < 5 * se_var + 2 * rel * S**2), x0.var(0)
  exact = exact_transport(path, x1)
  assert np.all(np.abs(x0 - exact) <= rel * (1 + np.abs(exact))), np.abs(x0 - exact).max()


def test_heun_is_second_order_and_euler_first_order():
  """The error of the final point halves (Euler) or quarters (Heun) when the steps double."""
  x1 = jnp.array([[-1.5, 0.7], [0.2, 2.0]])
  exact = exact_transport("linear", x1)
  for method, ratio_range in (("euler", (1.8, 2.2)), ("heun", (3.5, 4.8))):
    errors = [float(np.abs(np.asarray(ode.solve(analytic_velocity("linear"), x1,
                                                   jnp.linspace(1.0, 0.0, n + 1), method),
                                         np.float64) - exact).max()) for n in (16, 32, 64)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(ratio_range[0] < r < ratio_range[1] for r in ratios), (method, errors, ratios)


def test_heun_euler_last_and_evaluation_counts():
  """``euler_last`` ends with an Euler step; the number of field evaluations is as documented."""
  def field(x, t):
    return -x

  grid = jnp.array([1.0, 0.5, 0.0])
  x = jnp.ones((1, 1))
  heun = ode.solve(field, x, grid, "heun")
  mixed = ode.solve(field, x, grid, "heun", euler_last=True)
  # dx/dt = -x backwards in time: Heun's step multiplies by 1 + h' + h'^2 / 2 (h' = 0.5), Euler by 1.5.
  np.testing.assert_allclose(heun, [[1.625**2]], rtol=1e-6)
  np.testing.assert_allclose(mixed, [[1.625 * 1.5]], rtol=1e-6)
  assert ode.num_evaluations("heun", 2, euler_last=True) == 3 and ode.num_evaluations("euler", 5) == 5


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_ode_log_likelihood_equals_the_exact_one(path):
  """log p_0 through the ODE with the exact divergence equals the log-density of a correlated 2-D
  Gaussian; Hutchinson's estimate is unbiased: its mean over probes agrees too. (With a diagonal
  Jacobian, Rademacher probes would give the exact trace: the correlation makes them differ.)"""
  cov = np.array([[0.25, 0.3], [0.3, 1.0]])
  field = analytic_velocity(path, M, cov)
  x = jnp.asarray(np.random.default_rng(0).multivariate_normal(M, cov, 5), jnp.float32)
  exact = scipy.stats.multivariate_normal(M, cov).logpdf(np.asarray(x, np.float64))
  grid = jnp.linspace(0.0, 1.0, 65)
  got = ode.log_likelihood(field, x, grid, ode.standard_normal_log_prob, "heun", "exact")
  np.testing.assert_allclose(got, exact, atol=1e-3)
  keys = jax.random.split(jax.random.key(1), 200)
  probes = np.asarray(jax.vmap(lambda k: ode.log_likelihood(
      field, x, grid, ode.standard_normal_log_prob, "heun", "hutchinson", k))(keys), np.float64)
  mean, std = probes.mean(0), probes.std(0)
  assert np.all(std > 1e-2), std  # an estimate: the probes differ ...
  assert np.all(np.abs(mean - exact) < 4 * std / math.sqrt(len(keys)) + 2e-3), (mean, exact)  # ... unbiased


def test_exact_divergence_of_a_linear_map():
  a = jnp.array([[1.0, 2.0, 0.5], [-3.0, 0.25, 1.0], [0.0, 4.0, -2.0]])
  x = jax.random.normal(jax.random.key(0), (4, 3))
  value, div = ode.value_and_divergence(lambda y: y @ a.T, x, "exact")
  chex.assert_trees_all_close(value, x @ a.T)
  chex.assert_trees_all_close(div, jnp.full((4,), float(jnp.trace(a))), atol=1e-5)


# ---- the family -----------------------------------------------------------------------------

SMALL = {"model.network": "mlp", "model.mlp.hidden": 16, "model.mlp.num_blocks": 1}


def toy_family(**overrides):
  config = load_config("flow_matching_toy2d", **{**SMALL, **overrides})
  family = build(config, TOY)
  batch = {"x": jnp.asarray(M + S * np.random.default_rng(0).standard_normal((6, 2)), jnp.float32)}
  params, state = family.init(jax.random.key(0), batch)
  return family, params, state, batch


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_training_loss_equals_its_definition_in_numpy(path):
  family, params, state, batch = toy_family(**{"model.path": path})
  rng = jax.random.key(3)
  (group,) = family.update_groups()
  loss, _ = group.loss_fn(params, state, batch, rng)
  # The draws of the loss (rng -> (draws, dropout)), then the definition in float64 numpy.
  t, eps, _ = family.draws(batch, jax.random.split(rng)[0], train=True)
  t, eps, x0 = (np.asarray(a, np.float64) for a in (t, eps, batch["x"]))
  a, s, da, ds = (c[:, None] for c in numpy_path(path, t))
  xt = a * x0 + s * eps
  v = np.asarray(family.net.apply({"params": params["model"]}, jnp.asarray(xt, jnp.float32),
                                  jnp.asarray(1000 * t, jnp.float32)), np.float64)
  want = np.mean((v - (da * x0 + ds * eps)) ** 2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_time_sampling_distributions():
  n = 20000
  uniform = np.asarray(sample_time(jax.random.key(0), n, "uniform"), np.float64)
  logit = np.asarray(sample_time(jax.random.key(1), n, "logit_normal", 0.5, 1.5), np.float64)
  assert scipy.stats.kstest(uniform, "uniform").pvalue > 1e-3
  assert scipy.stats.kstest(np.log(logit / (1 - logit)), "norm", args=(0.5, 1.5)).pvalue > 1e-3


def test_family_sampler_and_likelihood_shapes_and_checks():
  family, params, state, batch = toy_family(**{"sample.steps": 3})
  draw = jax.jit(lambda p, k: family.sample(p, state, k, 5))
  a, b = draw(params, jax.random.key(1)), draw(params, jax.random.key(2))
  chex.assert_shape(a, (5, 2))
  assert float(jnp.abs(a - b).max()) > 0
  m = jax.jit(family.eval_metrics)(params, state, batch, jax.random.key(0))
  chex.assert_shape(m["nll_nats"], (6,))
  chex.assert_trees_all_close(m["bits_per_dim"] * 2 * math.log(2), m["nll_nats"], rtol=1e-5)
  # With the exact trace (2-D) the likelihood does not depend on the key.
  m2 = jax.jit(family.eval_metrics)(params, state, batch, jax.random.key(7))
  chex.assert_trees_all_close(m2["nll_nats"], m["nll_nats"], rtol=1e-6)
  with pytest.raises(UserError, match="sample.sampler"):
    build(load_config("flow_matching_toy2d", **{"sample.sampler": "rk4"}), TOY)
  with pytest.raises(UserError, match="guidance_scale"):
    build(load_config("flow_matching_toy2d", **{"sample.guidance_scale": 1.0}), TOY)
  with pytest.raises(UserError, match="model.path"):
    build(load_config("flow_matching_toy2d", **{"model.path": "cosine"}), TOY)


def test_train_then_reflow_from_it(tmp_path):
  """A tiny flow-matching run on toy2d, then reflow from its workdir: the reflow model starts from
  the teacher's EMA weights and trains on the teacher's cached (noise, sample) pairs."""
  first = str(tmp_path / "fm")
  config = tiny_config("flow_matching_toy2d", **SMALL, **{"sample.steps": 2, "eval.ode_steps": 2,
                                                          "eval.metrics": ("heldout",)})
  teacher_state = train.train_and_evaluate(config, first)
  with open(os.path.join(first, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert np.isfinite(results["nll_nats"]) and math.isclose(
      results["bits_per_dim"], results["nll_nats"] / (2 * math.log(2)), rel_tol=1e-5)

  reflow = tiny_config("flow_matching_toy2d", **SMALL, **{
      "sample.steps": 2, "eval.ode_steps": 2, "model.reflow_from": first, "model.reflow_pairs": 40,
      "model.reflow_steps": 3, "train.steps": 2, "eval.metrics": ()})
  family = build(reflow, TOY)
  (group,) = family.update_groups()  # loads the teacher, draws its pairs
  params, _ = family.init(jax.random.key(5), {"x": jnp.zeros((2, 2))})
  chex.assert_trees_all_close(params["model"], teacher_state.ema_params["model"])
  pairs = family._reflow_pairs()
  chex.assert_shape((pairs["x"], pairs["noise"]), (40, 2))
  teacher_x = family.transport(teacher_state.ema_params, pairs["noise"], None, "heun", 3)
  chex.assert_trees_all_close(pairs["x"], teacher_x, atol=1e-5)  # the teacher's own samples
  loss = lambda x: group.loss_fn(params, {}, {"x": x}, jax.random.key(2))[0]
  # The loss reads the pairs, not the data batch (which sets only the batch size).
  assert float(loss(jnp.zeros((8, 2)))) == float(loss(jnp.ones((8, 2)))) > 0
  with pytest.raises(UserError, match="reflow_from"):
    build(load_config("flow_matching_toy2d", **{**SMALL, "model.reflow_from": str(tmp_path / "none")}),
          TOY).update_groups()
  with pytest.raises(UserError, match="has other model.mlp"):
    build(load_config("flow_matching_toy2d", **{"model.reflow_from": first}), TOY).update_groups()

  # A reflowed run samples without its teacher: only training reads the teacher's workdir.
  second = str(tmp_path / "reflow")
  train.train_and_evaluate(reflow, second)
  os.rename(first, str(tmp_path / "moved"))
  (png,) = train.sample(reflow, second)
  assert os.path.basename(png) == "sample_step_2_seed_0.png"
