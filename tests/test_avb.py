"""Adversarial Variational Bayes: its objectives find the closed-form posterior of a linear-Gaussian
model, and the family's losses equal their definitions computed in numpy."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_vae import _discretized_logistic_log_prob, final_eval

from conftest import ROOT, compiled_init, tiny_config
from jaxgen import config_defaults, families, losses, train
from jaxgen.data.spec import DataSpec
from jaxgen.families import avb

# z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3): the posterior is N(A (x - b), C) with
# C = (I + W^T W / s^2)^-1 and A = C W^T / s^2 (as in tests/test_losses.py).
W = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
B = np.array([0.5, -1.0, 0.2])
S = 0.7
C = np.linalg.inv(np.eye(2) + W.T @ W / S**2)
A = C @ W.T / S**2
DATA_CHOL = np.linalg.cholesky(W @ W.T + S**2 * np.eye(3))  # x ~ N(b, W W^T + s^2 I)


def test_avb_finds_the_posterior_of_a_linear_gaussian_model():
  """Implicit encoder z = F x + c + M eps (eps ~ N(0, I)), critic T quadratic in (x, z) (it can
  represent log q(z|x) - log p(z) exactly), the true decoder: training both by AVB's objectives
  drives q(z|x) to N(A (x - b), C)."""
  steps, disc_steps, n = 1000, 10, 512

  def log_lik(x, z):
    return losses.gaussian_log_prob(x, z @ W.T + B, jnp.full_like(x, math.log(S)))

  def critic(w):
    def t(x, z):
      v = jnp.concatenate([x, z], -1)
      i, j = np.triu_indices(5)
      return jnp.concatenate([jnp.ones((x.shape[0], 1)), v, v[:, i] * v[:, j]], -1) @ w
    return t

  def encode(p, x, eps):
    return x @ p["F"].T + p["c"] + eps @ p["M"].T

  def data(key):
    return B + jax.random.normal(key, (n, 3)) @ DATA_CHOL.T

  enc_opt = optax.adam(optax.cosine_decay_schedule(1e-2, steps))
  disc_opt = optax.adam(optax.cosine_decay_schedule(3e-2, steps * disc_steps))

  def step(carry, key):
    enc, enc_state, w, disc_state = carry
    k_disc, k_x, k_eps = jax.random.split(key, 3)

    def disc_step(carry, key):
      w, disc_state = carry
      k1, k2, k3 = jax.random.split(key, 3)
      x = data(k1)
      z_q, z_p = encode(enc, x, jax.random.normal(k2, (n, 2))), jax.random.normal(k3, (n, 2))
      g = jax.grad(lambda w: avb.discriminator_loss(critic(w), x, z_q, z_p))(w)
      u, disc_state = disc_opt.update(g, disc_state)
      return (w + u, disc_state), None

    (w, disc_state), _ = jax.lax.scan(disc_step, (w, disc_state), jax.random.split(k_disc, disc_steps))
    x = data(k_x)

    def neg_elbo(enc):
      rec, kl = avb.elbo_terms(critic(w), log_lik, x, encode(enc, x, jax.random.normal(k_eps, (n, 2))))
      return jnp.mean(kl - rec)

    u, enc_state = enc_opt.update(jax.grad(neg_elbo)(enc), enc_state)
    return (optax.apply_updates(enc, u), enc_state, w, disc_state), None

  enc = {"F": jnp.zeros((2, 3)), "c": jnp.zeros(2), "M": jnp.eye(2)}  # q(z|x) = p(z) at the start
  w = jnp.zeros(21)
  carry = (enc, enc_opt.init(enc), w, disc_opt.init(w))
  enc = jax.jit(lambda c: jax.lax.scan(step, c, jax.random.split(jax.random.key(0), steps))[0][0])(carry)
  np.testing.assert_allclose(enc["F"], A, atol=0.06)
  np.testing.assert_allclose(enc["c"], -A @ B, atol=0.06)
  np.testing.assert_allclose(enc["M"] @ enc["M"].T, C, atol=0.06)


DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(-1.0, 1.0), num_classes=10)
SMALL = {"model.architecture": "mlp", "model.hidden": (16,), "model.disc_hidden": (16,)}  # cheap to compile


def test_family_losses_equal_their_objectives_in_numpy():
  config = config_defaults.load(os.path.join(ROOT, "configs", "avb.py"), SMALL)
  family = families.build(config, DIGITS)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (6, 8, 8, 1)) / 8.0 - 1.0, jnp.float32)
  batch = {"x": x, "label": jnp.zeros((6,), jnp.int32)}
  params, state = compiled_init(family, 0, batch)
  rng = jax.random.key(7)
  critic = jax.jit(lambda p, x, z: family.critic(p)(x, z))
  k = np.round((np.asarray(x) + 1) * 8)

  # vae group: mean_b [T(x, z) - log p(x|z)], z = E(x, eps), eps ~ N(0, I) from the group's key.
  z = jax.jit(family.encode)(params, x, jax.random.normal(rng, (6, family.noise_dim)))
  out = np.asarray(jax.jit(family.decoder_out)(params["vae"]["decoder"], z), np.float64)
  rec = _discretized_logistic_log_prob(k, out[..., 0], out[..., 1], 17).reshape(6, -1).sum(-1)
  expected = np.mean(np.asarray(critic(params, x, z), np.float64) - rec)
  assert float(jax.jit(family.vae_loss)(params, state, batch, rng)[0]) == pytest.approx(expected, rel=1e-4)

  # disc group: -log sigmoid T(x, z_q) - log(1 - sigmoid T(x, z_p)), its mean the loss.
  def disc_terms(key):
    k_q, k_p = jax.random.split(key)
    z_q = jax.jit(family.encode)(params, x, jax.random.normal(k_q, (6, family.noise_dim)))
    t_q = np.asarray(critic(params, x, z_q), np.float64)
    t_p = np.asarray(critic(params, x, jax.random.normal(k_p, z_q.shape)), np.float64)
    return np.logaddexp(0, -t_q) + np.logaddexp(0, t_p)

  assert float(jax.jit(family.disc_loss)(params, state, batch, rng)[0]) == pytest.approx(disc_terms(rng).mean(), rel=1e-4)
  # Held out, per example [B] (so padding rows can be dropped), from the second half of its key.
  held = jax.jit(family.eval_metrics)(params, state, batch, rng)
  np.testing.assert_allclose(held["disc/loss"], disc_terms(jax.random.split(rng)[1]), rtol=1e-4)


def test_avb_trains_and_reports_its_estimates(workdir):
  config = tiny_config("avb", **SMALL, **{"eval.metrics": ("heldout",)})
  train.train_and_evaluate(config, workdir)
  results = final_eval(workdir)
  assert results["neg_elbo_estimate_nats"] == pytest.approx(results["recon_nats"] + results["kl_estimate_nats"], rel=1e-5)
  assert results["neg_elbo_estimate_bits_per_dim"] == pytest.approx(
      results["neg_elbo_estimate_nats"] / (64 * math.log(2)), rel=1e-6)
  assert "nll_bound_nats" not in results  # T is an estimate: no bound is claimed
