"""Objectives against closed forms: ELBO / IWAE on a linear-Gaussian model, adversarial losses,
log-densities against scipy."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.ad_checkpoint import print_saved_residuals
from scipy import stats

from jaxgen import losses
from jaxgen.families.vae import elbo_terms, iwae_bound

# Linear-Gaussian latent model: z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3), so x ~ N(b, W W^T + s^2 I).
# W has orthogonal columns, so the exact posterior N(A (x - b), C) has a diagonal covariance
# C = (I + W^T W / s^2)^-1 and is representable by the diagonal-Gaussian encoder.
W = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
B = np.array([0.5, -1.0, 0.2])
S = 0.7
X = np.array([[1.0, 0.3, -0.4], [-2.0, 1.5, 0.9]])


def log_lik(x, z):
  return losses.gaussian_log_prob(x, z @ W.T + B, jnp.full_like(x, math.log(S)))


def exact_log_px(x):
  return stats.multivariate_normal(B, W @ W.T + S**2 * np.eye(3)).logpdf(x)


def posterior_encoder(x):
  cov = np.linalg.inv(np.eye(2) + W.T @ W / S**2)
  mean = (x - B) @ (W / S**2) @ cov  # C W^T (x - b) / s^2, written row-wise
  return mean, jnp.broadcast_to(0.5 * jnp.log(jnp.diag(cov)), mean.shape)


def poor_encoder(x):
  mean, log_std = posterior_encoder(x)
  return 0.5 * mean, log_std + 0.4


def elbo(encode, x, rng, num=4000):
  keys = jax.random.split(rng, num)
  rec, kl = jax.vmap(lambda k: elbo_terms(encode, log_lik, x, k))(keys)
  return np.asarray(jnp.mean(rec - kl, axis=0))


def test_elbo_equals_log_px_with_the_exact_posterior():
  """With q = p(z|x) the log weight log p(x,z) - log q(z|x) is log p(x) for every z."""
  for seed in range(3):
    np.testing.assert_allclose(iwae_bound(posterior_encoder, log_lik, X, jax.random.key(seed), 1),
                               exact_log_px(X), rtol=1e-5)


def test_elbo_below_log_px_and_iwae_tightens_with_k():
  exact = exact_log_px(X)
  bound = elbo(poor_encoder, X, jax.random.key(0))
  assert np.all(bound < exact - 0.05)
  # IWAE_k averaged over many draws: increasing in k, all below log p(x), approaching it.
  means, errors = [], []
  for k in (1, 4, 16, 64, 256):
    draws = np.asarray(jax.vmap(lambda key: iwae_bound(poor_encoder, log_lik, X, key, k))(
        jax.random.split(jax.random.key(k), 200)))
    means.append(draws.mean(axis=0))
    errors.append(draws.std(axis=0) / math.sqrt(len(draws)))  # Monte Carlo standard error
  means, errors = np.stack(means), np.stack(errors)
  assert np.all(np.diff(means, axis=0) > 0), means
  assert np.all(means < exact[None] + 4 * errors + 1e-5), (means, exact, errors)
  assert np.all(np.abs(means[0] - bound) < 4 * errors[0] + 0.02)  # IWAE_1 is the ELBO (MC-KL estimate)
  assert np.all(exact - means[-1] < 0.1 * (exact - means[0]))


def test_kl_closed_form_against_monte_carlo():
  mean = jnp.array([[0.3, -1.2]])
  log_std = jnp.array([[-0.5, 0.4]])
  z = mean + jnp.exp(log_std) * jax.random.normal(jax.random.key(1), (200000, 2))
  mc = jnp.mean(losses.gaussian_log_prob(z, mean, log_std) - losses.gaussian_log_prob(z, 0 * z, 0 * z))
  assert float(losses.kl_diag_gaussian_standard_normal(mean, log_std)[0]) == pytest.approx(float(mc), abs=0.01)


def test_sum_except_batch_and_gaussian_log_prob_match_numpy_and_scipy():
  """The sum over event axes of ``[B, ...]`` is per example; ``gaussian_log_prob`` is scipy's
  ``norm.logpdf`` summed per example, with a scalar mean and a broadcast per-pixel ``log_std``."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 4, 2, 5)).astype(np.float32)
  np.testing.assert_allclose(losses.sum_except_batch(jnp.asarray(x)), x.reshape(3, -1).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(losses.sum_except_batch(jnp.asarray(x[:, 0, 0, 0])), x[:, 0, 0, 0])  # [B] stays
  log_std = rng.normal(scale=0.5, size=(4, 2, 5)).astype(np.float32)
  expected = stats.norm(0.7, np.exp(log_std.astype(np.float64))).logpdf(x).reshape(3, -1).sum(-1)
  np.testing.assert_allclose(losses.gaussian_log_prob(jnp.asarray(x), 0.7, jnp.asarray(log_std)), expected,
                             rtol=1e-5)


def test_bernoulli_log_prob_matches_scipy():
  x = jnp.array([[1.0, 0.0, 1.0]])
  logits = jnp.array([[0.3, -2.0, 4.0]])
  expected = stats.bernoulli(1 / (1 + np.exp(-np.asarray(logits)))).logpmf(np.asarray(x)).sum()
  assert float(losses.bernoulli_log_prob(x, logits)[0]) == pytest.approx(expected, rel=1e-6)


def test_adversarial_losses_closed_form():
  zero = jnp.zeros(5)
  assert float(losses.gan_discriminator_loss("non_saturating", zero, zero)) == pytest.approx(2 * math.log(2), rel=1e-6)
  assert float(losses.gan_generator_loss("non_saturating", zero)) == pytest.approx(math.log(2), rel=1e-6)
  assert float(losses.gan_generator_loss("minimax", zero)) == pytest.approx(-math.log(2), rel=1e-6)
  real, fake = jnp.array([2.0, 0.5]), jnp.array([-3.0, 0.0])
  assert float(losses.gan_discriminator_loss("hinge", real, fake)) == pytest.approx((0 + 0.5 + 0 + 1) / 2)
  assert float(losses.gan_discriminator_loss("wasserstein", real, fake)) == pytest.approx(-1.5 - 1.25)
  with pytest.raises(ValueError, match="unknown GAN loss"):
    losses.gan_discriminator_loss("nope", real, fake)


def test_gradient_penalty_of_a_linear_critic():
  """A linear critic x -> w.x has gradient w everywhere: the penalty is (||w|| - 1)^2 exactly."""
  w = jnp.array([3.0, 4.0])
  gp = losses.gradient_penalty(lambda x: x @ w, jnp.ones((8, 2)), jnp.zeros((8, 2)), jax.random.key(0))
  assert float(gp) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_categorical_nll_value_gradient_and_residuals(capsys):
  """Against a float64 numpy reference: the value is -log softmax at the label, the gradient
  ``g (softmax - onehot)``; bfloat16 logits give the float32 value of their upcast and a bfloat16
  gradient; the backward pass keeps the logits as given, no float32 ``[..., V]`` tensor."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 5, 11)) * 4
  labels = rng.integers(0, 11, (3, 5))
  g = rng.standard_normal((3, 5))
  shifted = logits - logits.max(-1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_softmax, labels[..., None], -1)[..., 0]
  grad = g[..., None] * (np.exp(log_softmax) - np.eye(11)[labels])

  value, vjp = jax.vjp(lambda x: losses.categorical_nll(x, jnp.asarray(labels)), jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(value, nll, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_equal(value, optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, jnp.float32),
                                                                                     jnp.asarray(labels)))
  np.testing.assert_allclose(vjp(jnp.asarray(g, jnp.float32))[0], grad, rtol=1e-5, atol=1e-6)

  half = jnp.asarray(logits, jnp.bfloat16)
  value, vjp = jax.vjp(lambda x: losses.categorical_nll(x, jnp.asarray(labels)), half)
  chex.assert_type(value, jnp.float32)
  chex.assert_trees_all_equal(value, losses.categorical_nll(half.astype(jnp.float32), jnp.asarray(labels)))
  (half_grad,) = vjp(jnp.asarray(g, jnp.float32))
  chex.assert_type(half_grad, jnp.bfloat16)
  np.testing.assert_allclose(half_grad.astype(np.float32), grad, rtol=2e-2, atol=2e-2)

  capsys.readouterr()
  print_saved_residuals(lambda x: losses.categorical_nll(x, jnp.asarray(labels)).sum(), half)
  saved = capsys.readouterr().out
  assert "bf16[3,5,11]" in saved and "f32[3,5,11]" not in saved, saved
