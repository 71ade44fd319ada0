"""Tests of the DDPM family's ODE samplers (jaxgen/diffusion.py): DPM-Solver++(2M), the EDM Euler /
Heun sampler and their time grids.

Reference case: 1-D Gaussian data ``N(M, S^2)`` with the ideal denoiser of test_diffusion.py.
Every ODE sampler is then an affine map of its start ``x_{T-1} = z``, ``x_0 = a z + b``, so the
exact moments of its output for ``z ~ N(0, 1)`` are ``(b, a^2)``, read off two points without
sampling noise. The exact probability flow maps ``z`` to ``M + S (z - sqrt(abar_{T-1}) M) /
sqrt(V)`` with ``V = abar_{T-1} S^2 + 1 - abar_{T-1}`` (it keeps the standardised coordinate).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_diffusion import M, S, T, analytic_model

from conftest import load_config
from jaxgen import diffusion
from jaxgen.data.spec import DataSpec
from jaxgen.families import build

Z = jnp.array([[-1.0], [1.0]])


def exact_map(name: str) -> tuple[float, float]:
  """(a, b) of the exact probability-flow map, in float64 from the betas."""
  abar = np.cumprod(1 - diffusion.betas_for(name, T))[-1]
  v = abar * S**2 + 1 - abar
  return S / np.sqrt(v), M - S * np.sqrt(abar) * M / np.sqrt(v)


def affine(x) -> tuple[float, float]:
  """(a, b) of a sampler's output at Z = (-1, 1)."""
  lo, hi = np.asarray(x, np.float64)[:, 0]
  return (hi - lo) / 2, (hi + lo) / 2


def slope_error(name: str, prediction: str, sampler, steps: int) -> float:
  sched = diffusion.make_schedule(name, T)
  a, b = affine(sampler(sched, analytic_model(sched, prediction), steps))
  a_exact, b_exact = exact_map(name)
  assert abs(b - b_exact) < 2e-3, (b, b_exact)  # the mean is right at any step count
  return a - a_exact


@pytest.mark.parametrize("name,prediction", [("linear", "eps"), ("cosine", "v")])
def test_dpm_solver_matches_exact_moments_in_few_steps(name, prediction):
  """DPM-Solver++(2M) (on its default log-SNR grid) gets the variance within 8% with 16 steps,
  where Euler / DDIM on the same grid (first order) is several times further off; its error falls
  ~4x from 32 to 64 steps (second order)."""
  err = {n: slope_error(name, prediction, lambda s, m, k: diffusion.dpm_solver_sample(s, m, Z, k, prediction), n)
         for n in (16, 32, 64)}
  euler = slope_error(name, prediction,
                      lambda s, m, k: diffusion.ode_sample(s, m, Z, k, "euler", prediction, grid="logsnr"), 16)
  a_exact, _ = exact_map(name)
  assert 2 * abs(err[16]) / a_exact < 0.08, err  # Var = a^2: its relative error is ~ 2 da / a
  assert abs(euler) > 3 * abs(err[16]), (euler, err)
  assert 3.0 < abs(err[32] / err[64]) < 6.0, err


@pytest.mark.parametrize("name,prediction", [("linear", "eps"), ("cosine", "v")])
def test_edm_heun_is_second_order_and_euler_first_order(name, prediction):
  """On the Karras grid, doubling the steps quarters Heun's error and halves Euler's."""
  for method, lo, hi in (("heun", 3.5, 5.0), ("euler", 1.7, 2.3)):
    sample = lambda s, m, k: diffusion.ode_sample(s, m, Z, k, method, prediction)
    e32, e64 = (slope_error(name, prediction, sample, n) for n in (32, 64))
    assert lo < e32 / e64 < hi, (method, e32, e64)


def _random_model(x, t):
  """Any denoiser: the identities below hold whatever the network predicts."""
  return jnp.tanh(x) * 0.7 + jnp.sin(t.astype(jnp.float32) / 37.0)[:, None]


@pytest.mark.parametrize("clip", [False, True])
def test_euler_on_the_uniform_grid_is_ddim_and_first_step_of_dpm_solver_too(clip):
  """DDIM (eta = 0) is Euler's method on the probability flow in (xbar, sigma) (Song et al. 2021,
  Karras et al. 2022); DPM-Solver++ with 2 timesteps takes only first-order steps, so it is DDIM."""
  sched = diffusion.make_schedule("linear", T)
  rng = jax.random.key(0)
  noise = jax.random.normal(jax.random.split(rng)[1], (3, 2))  # the x_T that ddim_sample draws
  ddim = diffusion.ddim_sample(sched, _random_model, rng, (3, 2), 10, 0.0, "eps", clip)
  euler = diffusion.ode_sample(sched, _random_model, noise, 10, "euler", "eps", clip, grid="uniform")
  chex.assert_trees_all_close(euler, ddim, atol=1e-4, rtol=1e-4)
  dpm2 = diffusion.dpm_solver_sample(sched, _random_model, noise, 2, "eps", clip, grid="uniform")
  chex.assert_trees_all_close(dpm2, diffusion.ddim_sample(sched, _random_model, rng, (3, 2), 2, 0.0, "eps", clip),
                              atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grid", ["uniform", "karras", "logsnr"])
def test_sampler_timesteps(grid):
  sched = diffusion.make_schedule("linear", T)
  log_sigma = np.log(np.asarray(diffusion.ve_sigmas(sched), np.float64))
  for steps in (1, 2, 7, 20, 50):
    ts = diffusion.sampler_timesteps(sched, steps, grid)
    assert ts[0] == T - 1 and (steps == 1 or ts[-1] == 0)
    assert np.all(np.diff(ts) < 0)  # decreasing, distinct
    assert len(ts) == steps or (steps == 50 and len(ts) < steps)  # 50: a few merge near t = 0
  ts = diffusion.sampler_timesteps(sched, 20, grid)
  u = np.linspace(0, 1, 20)
  if grid == "karras":  # sigma_i^(1/7) linear in i, up to snapping to the nearest timestep
    want = (np.exp(log_sigma[-1] / 7) + u * (np.exp(log_sigma[0] / 7) - np.exp(log_sigma[-1] / 7))) ** 7
  elif grid == "logsnr":
    want = np.exp(log_sigma[-1] + u * (log_sigma[0] - log_sigma[-1]))
  else:
    want = np.exp(log_sigma[np.round(np.linspace(T - 1, 0, 20)).astype(int)])
  spacing = np.abs(np.diff(log_sigma)).max()
  assert np.all(np.abs(log_sigma[ts] - np.log(want)) <= spacing), (ts, want)
  # Near T the grids merge timesteps that snap together: never more than asked, never repeated.
  dense = diffusion.sampler_timesteps(sched, T, grid)
  assert len(dense) <= T and len(set(dense)) == len(dense)


def test_family_samplers_are_one_compiled_scan_each():
  """Each sampler of the family traces the network a fixed number of times (a scan, not a Python
  loop over steps): the same for 5 and 9 steps (traced only, not compiled)."""
  spec = DataSpec(name="toy2d/moons", modality="points", shape=(2,))
  family = build(load_config("ddpm_toy2d", **{"model.mlp.hidden": 8, "model.mlp.num_blocks": 1}), spec)
  params, state = family.init(jax.random.key(0), {"x": jnp.zeros((2, 2))})
  apply, calls = family._apply, []
  family._apply = lambda *a, **k: calls.append(1) or apply(*a, **k)
  traces = {}
  for sampler in ("ddim", "dpm_solver", "heun", "euler"):
    for steps in (5, 9):
      family.config.sample.sampler, family.config.sample.steps = sampler, steps
      calls.clear()
      out = jax.eval_shape(lambda p, k: family.sample(p, state, k, 3), params, jax.random.key(1))
      chex.assert_shape(out, (3, 2))
      traces[sampler, steps] = len(calls)
  assert all(traces[s, 5] == traces[s, 9] <= 3 for s in ("ddim", "dpm_solver", "heun", "euler")), traces
