"""RBM: free energy against its formula and the sum over hidden states, the CD / PCD gradient against
positive-minus-negative statistics computed in numpy, AIS against the exact partition function,
invariance of block Gibbs sampling, exact resume of the persistent chains, and the ``ais`` evaluator
end to end against an exact held-out likelihood."""

from __future__ import annotations

import itertools
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from conftest import load_config, tiny_config
from jaxgen import data as data_lib
from jaxgen import families, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn.rbm import RBM, ais_betas

BINARY = DataSpec("digits", "image", (1, 5, 1), levels=2, value_range=(0.0, 1.0))


def _params(visible, v, h, scale, seed=0):
  rng = np.random.default_rng(seed)
  p = {"w": scale * rng.standard_normal((v, h)), "visible_bias": rng.standard_normal(v),
       "hidden_bias": rng.standard_normal(h)}
  if visible == "gaussian":
    p["log_sigma"] = rng.uniform(-0.5, 0.3, v)
  return {k: jnp.asarray(x, jnp.float32) for k, x in p.items()}


def _np(params):
  return {k: np.asarray(x, np.float64) for k, x in params.items()}


def _states(n):
  return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def _free_energy_np(p, v, gaussian):
  """The closed form of F(v), float64."""
  if gaussian:
    s = np.exp(p["log_sigma"])
    return (np.sum((v - p["visible_bias"]) ** 2 / (2 * s**2), -1)
            - np.sum(np.logaddexp(0, p["hidden_bias"] + (v / s) @ p["w"]), -1))
  return -v @ p["visible_bias"] - np.sum(np.logaddexp(0, p["hidden_bias"] + v @ p["w"]), -1)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_equals_its_formula_and_minus_log_sum_over_hidden(visible):
  gaussian = visible == "gaussian"
  rbm, params = RBM(visible), _params(visible, 5, 4, 0.7)
  rng = np.random.default_rng(1)
  v = rng.standard_normal((3, 5)) if gaussian else rng.integers(0, 2, (3, 5)).astype(float)
  f = np.asarray(rbm.free_energy(params, jnp.asarray(v, jnp.float32)))
  p = _np(params)
  np.testing.assert_allclose(f, _free_energy_np(p, v, gaussian), rtol=1e-5, atol=1e-5)
  # F(v) = -log sum_h exp(-E(v, h)) with the energy written out term by term.
  hs = _states(4)
  vhat = v / np.exp(p["log_sigma"]) if gaussian else v
  visible_term = (np.sum((v - p["visible_bias"]) ** 2 / (2 * np.exp(p["log_sigma"]) ** 2), -1) if gaussian
                  else -v @ p["visible_bias"])
  energies = visible_term[:, None] - hs @ p["hidden_bias"] - np.einsum("bi,ij,hj->bh", vhat, p["w"], hs)
  np.testing.assert_allclose(f, -scipy.special.logsumexp(-energies, axis=1), rtol=1e-5, atol=1e-5)
  pairs_v, pairs_h = v[:, None].repeat(16, 1).reshape(-1, 5), np.tile(hs, (3, 1))
  e = rbm.energy(params, jnp.asarray(pairs_v, jnp.float32), jnp.asarray(pairs_h, jnp.float32))
  np.testing.assert_allclose(np.asarray(e).reshape(3, 16), energies, rtol=1e-5, atol=1e-5)


def _family(**model):
  config = load_config("rbm", **{f"model.{k}": v for k, v in model.items()})
  return families.build(config, BINARY)


def _numpy_gibbs(p, v, key, steps):
  """CD's chain in numpy with the draws of the documented keys: step t uses fold_in(key, t), split
  into the hidden and the visible uniforms; a unit is on when its uniform is below its probability."""

  @jax.jit
  def uniforms(key):
    keys = [jax.random.split(jax.random.fold_in(key, t)) for t in range(steps)]
    return [(jax.random.uniform(kh, (v.shape[0], p["w"].shape[1])), jax.random.uniform(kv, v.shape)) for kh, kv in keys]

  for u_h, u_v in uniforms(key):
    h = (np.asarray(u_h) < scipy.special.expit(p["hidden_bias"] + v @ p["w"])).astype(float)
    v = (np.asarray(u_v) < scipy.special.expit(p["visible_bias"] + h @ p["w"].T)).astype(float)
  return v


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_gradient_is_positive_minus_negative_statistics(persistent):
  """d loss / d theta == -(<v h>_data - <v h>_negative) with the hidden units at their conditional
  means, the negative particles from k = 3 Gibbs steps (from the data, or from the PCD chains, which
  the update replaces by the negative particles)."""
  fam = _family(hidden=3, cd_k=3, persistent=persistent, persistent_chains=6)
  v = np.random.default_rng(2).integers(0, 2, (4, 5)).astype(float)
  batch = {"x": jnp.asarray(v.reshape(4, 1, 5, 1), jnp.float32)}
  _, state = jax.jit(fam.init)(jax.random.key(0), batch)
  params = {"model": _params("bernoulli", 5, 3, 1.0, seed=3)}
  key = jax.random.key(7)
  loss_fn = fam.update_groups()[0].loss_fn
  grads, (metrics, new_state) = jax.jit(jax.grad(lambda p: loss_fn(p, state, batch, key), has_aux=True))(params)
  p = _np(params["model"])
  start = np.asarray(state["model"]["chains"]["visible"], np.float64) if persistent else v
  neg = _numpy_gibbs(p, start, key, 3)
  ph_pos = scipy.special.expit(p["hidden_bias"] + v @ p["w"])
  ph_neg = scipy.special.expit(p["hidden_bias"] + neg @ p["w"])
  g = grads["model"]
  np.testing.assert_allclose(g["w"], -(v.T @ ph_pos / 4 - neg.T @ ph_neg / len(neg)), atol=1e-6)
  np.testing.assert_allclose(g["visible_bias"], -(v.mean(0) - neg.mean(0)), atol=1e-6)
  np.testing.assert_allclose(g["hidden_bias"], -(ph_pos.mean(0) - ph_neg.mean(0)), atol=1e-6)
  assert np.abs(v.T @ ph_pos / 4 - neg.T @ ph_neg / len(neg)).max() > 0.05  # a non-trivial case
  if persistent:
    np.testing.assert_array_equal(new_state["model"]["chains"]["visible"], neg)
  else:
    assert new_state == {}  # CD-k keeps no state
  # The logged monitors are the formulas: mean-field reconstruction error, exact pseudo-likelihood.
  recon = np.sum((v - scipy.special.expit(p["visible_bias"] + ph_pos @ p["w"].T)) ** 2, -1)
  np.testing.assert_allclose(metrics["recon_error"], recon.mean(), rtol=1e-5)
  pl = 0.0
  for i in range(5):
    flipped = v.copy()
    flipped[:, i] = 1 - flipped[:, i]
    pl += np.log(scipy.special.expit(_free_energy_np(p, flipped, False) - _free_energy_np(p, v, False)))
  np.testing.assert_allclose(metrics["pseudo_log_likelihood"], pl.mean(), rtol=1e-5)


def _exact_log_z(p, gaussian):
  """Bernoulli: log sum_v exp(-F(v)) over all 2^V visible states. Gaussian: log sum_h of the
  closed-form Gaussian integral over v, c.h + sum_i [log(sqrt(2 pi) sigma_i) + b_i u_i / sigma_i
  + u_i^2 / 2] with u = W h."""
  if not gaussian:
    return scipy.special.logsumexp(-_free_energy_np(p, _states(p["w"].shape[0]), False))
  hs = _states(p["w"].shape[1])
  u = hs @ p["w"].T
  s = np.exp(p["log_sigma"])
  terms = hs @ p["hidden_bias"] + np.sum(0.5 * np.log(2 * np.pi) + np.log(s) + p["visible_bias"] * u / s + u**2 / 2, -1)
  return scipy.special.logsumexp(terms)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_log_partition_agrees_with_exact_enumeration(visible):
  """10 visible x 6 hidden: AIS (200 chains, 1000 betas, a base-rate model from a made-up data mean)
  is within 4 of its standard errors of the exact log Z, and the standard error is small."""
  gaussian = visible == "gaussian"
  rbm, params = RBM(visible), _params(visible, 10, 6, 0.8, seed=4)
  exact = _exact_log_z(_np(params), gaussian)
  mean = jnp.asarray(np.random.default_rng(5).uniform(0.2, 0.8, 10), jnp.float32)
  betas = jnp.asarray(ais_betas(1000))
  estimate = jax.jit(lambda p, k: rbm.log_partition_ais(p, k, 200, betas, rbm.base_rate(mean)))
  log_z, stderr = estimate(params, jax.random.key(6))
  assert 0 < float(stderr) < 0.05, float(stderr)
  assert abs(float(log_z) - exact) < 4 * float(stderr) + 1e-4, (float(log_z), exact, float(stderr))


def test_ais_schedule_follows_the_paper_in_proportion():
  betas = ais_betas(14500)
  assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 14501 and np.all(np.diff(betas) > 0)
  assert (betas < 0.5).sum() == 500 and ((betas >= 0.5) & (betas < 0.9)).sum() == 4000
  with pytest.raises(UserError, match="eval.ais.betas"):
    ais_betas(2)


def test_block_gibbs_leaves_the_model_distribution_invariant():
  """Exact draws from p(v) of a strongly coupled 4 x 3 RBM, moved by 3 block Gibbs steps, still
  follow p(v) (chi-squared over the 16 states), while they are far from the independent-units
  distribution with the same biases (what a Gibbs step that ignored h would produce)."""
  rbm, params = RBM("bernoulli"), _params("bernoulli", 4, 3, 2.0, seed=8)
  p = _np(params)
  states = _states(4)
  probs = scipy.special.softmax(-_free_energy_np(p, states, False))
  n = 20000
  draws = states[np.random.default_rng(9).choice(16, n, p=probs)]
  gibbs = jax.jit(lambda v, k: rbm.gibbs(params, v, k, 3))
  moved = np.asarray(gibbs(jnp.asarray(draws, jnp.float32), jax.random.key(10)))
  assert np.mean(np.any(moved != draws, axis=1)) > 0.3  # the chain moves
  counts = np.bincount((moved @ (2 ** np.arange(3, -1, -1))).astype(int), minlength=16)
  assert scipy.stats.chisquare(counts, n * probs).pvalue > 1e-3
  on = scipy.special.expit(p["visible_bias"])
  independent = np.prod(np.where(states == 1, on, 1 - on), 1)
  assert scipy.stats.chisquare(counts, n * independent).pvalue < 1e-6


TINY = {"model.hidden": 8, "model.persistent_chains": 16, "eval.ais.chains": 50, "eval.ais.betas": 500,
        "sample.gibbs_steps": 5}


def test_pcd_chains_resume_exactly(tmp_path):
  """4 steps in one go == 2 steps, stop, resume to 4: params, optimizer state and the persistent
  chains bit for bit (the chains moved: they are not their initial noise)."""
  overrides = {**TINY, "eval.metrics": ("heldout",)}
  full = train.train_and_evaluate(tiny_config("rbm", **overrides), str(tmp_path / "full"))
  split = str(tmp_path / "split")
  half = train.train_and_evaluate(tiny_config("rbm", **{**overrides, "train.steps": 2}), split)
  chains_at_2 = np.asarray(half.state["model"]["chains"]["visible"])
  resumed = train.train_and_evaluate(tiny_config("rbm", **overrides), split)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  assert np.any(chains_at_2 != np.asarray(full.state["model"]["chains"]["visible"]))


def test_ais_evaluator_matches_the_exact_held_out_likelihood(workdir):
  """A trained 64 x 8 RBM on binarized digits: log Z by enumerating the 2^8 hidden states,
  log Z = log sum_h exp(c.h + sum_i softplus(b_i + (W h)_i)), and the exact held-out NLL of the
  evaluated test examples; the evaluator's estimates agree within a few standard errors."""
  config = tiny_config("rbm", **{**TINY, "eval.metrics": ("ais",), "eval.ais.chains": 100, "eval.ais.betas": 2000})
  ts = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    result = json.load(f)
  p = _np(jax.device_get(ts.ema_params["model"]))
  hs = _states(8)
  exact = scipy.special.logsumexp(
      hs @ p["hidden_bias"] + np.sum(np.logaddexp(0, p["visible_bias"] + hs @ p["w"].T), -1))
  tolerance = 4 * result["ais_log_z_stderr"] + 1e-3
  assert abs(result["ais_log_z"] - exact) < tolerance, (result, exact)
  pipeline = data_lib.build(config)
  x = np.concatenate([b["x"][b["mask"] > 0].reshape(-1, 64) for b in pipeline.eval_batches(32, 2)])
  nll = np.mean(_free_energy_np(p, x, False)) + exact
  assert abs(result["ais_nll_nats"] - nll) < tolerance
  assert result["ais_bits_per_dim"] == pytest.approx(result["ais_nll_nats"] / (64 * math.log(2)), rel=1e-6)


def test_bad_configs_raise_user_errors(workdir):
  with pytest.raises(UserError, match="binarize"):
    families.build(load_config("rbm"), DataSpec("digits", "image", (8, 8, 1), levels=17))
  with pytest.raises(UserError, match="model.visible"):
    families.build(load_config("rbm", **{"model.visible": "poisson"}), BINARY)
  with pytest.raises(UserError, match="evaluator 'ais'"):
    train.setup(tiny_config("pixelcnn", **{"eval.metrics": ("ais",)}), workdir)
