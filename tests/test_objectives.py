"""Each family's training loss is its documented objective, recomputed in numpy from the definition,
and every random draw of the loss has its documented distribution.

Families whose objectives are already checked this way elsewhere (and not repeated here): GAN
(``test_gan``: every loss kind at nonzero logits, PacGAN, conditional, WGAN-GP), VAE (``test_vae``:
the negative ELBO with its KL term), AAE / AVB (their ``test_*``), VQ-VAE (``test_vqvae``: the three
terms), flow matching (``test_flow_matching``: velocity loss and time distributions), PixelCNN /
PixelRNN / transformer / WaveNet (their NLL against slow per-position references), flows
(``test_flows``: inverse and log-det, exact density), RBM (free energy, CD gradient).

Here: the DDPM simple loss (eps and v prediction) with its timesteps, noise and label dropout; the
maximum-likelihood base class (the training loss is the batch mean of the exact NLL); the random
draws of the GAN (latent ``z ~ N(0, I)``, generator labels uniform) and of the VAE
(``z = mean + exp(log_std) eps``, ``eps ~ N(0, I)``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import load_config
from jaxgen import families
from jaxgen.data.spec import DataSpec
from jaxgen.families import vae
from jaxgen.families.base import MaximumLikelihoodFamily

T = 40
POINTS = DataSpec("toy2d/grid25", "points", (2,), num_classes=5)


def _linear_abar(num_timesteps: int) -> np.ndarray:
  """Ho et al. (2020): betas linear from 1e-4 to 0.02 (rescaled to T steps), abar = prod (1 - beta)."""
  return np.cumprod(1 - np.linspace(1e-4, 0.02, num_timesteps) * 1000 / num_timesteps)


def _stand_in(params, x, t, label, train=False, rng=None):
  """A fixed 'network' that depends on x, t and the label (null class 5 -> 0)."""
  extra = 0.0 if label is None else 0.1 * jnp.where(label == 5, 0, label + 1)[:, None]
  return 0.5 * x + (t[:, None] / T) + extra


@pytest.mark.parametrize("prediction,conditional", [("eps", False), ("v", True)])
def test_ddpm_simple_loss_timesteps_noise_and_label_dropout(prediction, conditional):
  """L = mean_b mean_d (target - f(x_t, t))^2 with t ~ U{0..T-1}, eps ~ N(0, I),
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, target eps or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0;
  a conditional model sees the null class with probability label_dropout, only in training."""
  config = load_config("ddpm_toy2d", **{"model.num_timesteps": T, "model.schedule": "linear",
                                        "model.prediction": prediction, "model.conditional": conditional,
                                        "model.label_dropout": 0.3, "sample.steps": T})
  family = families.build(config, POINTS)
  family._apply = _stand_in
  n = 4000
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(n, 2)).astype(np.float32) * 2 + 1
  labels = np.arange(n) % 5
  batch = {"x": jnp.asarray(x0), "label": jnp.asarray(labels, jnp.int32)}
  key = jax.random.key(3)
  loss, _ = family.update_groups()[0].loss_fn({}, {}, batch, key)
  xt, t, label, target = (np.asarray(a, np.float64) if a is not None else None
                          for a in family.training_inputs(batch, jax.random.split(key)[0], train=True))
  abar = _linear_abar(T)[t.astype(int)][:, None]
  eps = (xt - np.sqrt(abar) * x0) / np.sqrt(1 - abar)
  # Timesteps: uniform on 0..T-1, both ends included.
  assert t.min() == 0 and t.max() == T - 1
  assert scipy.stats.chisquare(np.bincount(t.astype(int), minlength=T)).pvalue > 1e-3
  # Noise: standard normal, independent of x0 (moments within 5 standard errors).
  se = 1 / math.sqrt(eps.size)
  assert abs(eps.mean()) < 5 * se and abs(eps.var() - 1) < 5 * math.sqrt(2) * se
  assert abs(np.corrcoef(eps[:, 0], x0[:, 0])[0, 1]) < 5 / math.sqrt(n)
  want_target = eps if prediction == "eps" else np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0
  np.testing.assert_allclose(target, want_target, atol=1e-4)
  # Label dropout: the null class (5) with probability 0.3; otherwise the true label.
  if conditional:
    dropped = label == 5
    assert abs(dropped.mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    np.testing.assert_array_equal(label[~dropped], labels[~dropped])
    extra = 0.1 * np.where(dropped, 0, labels + 1)[:, None]
  else:
    assert label is None
    extra = 0.0
  out = 0.5 * xt + t[:, None] / T + extra
  np.testing.assert_allclose(float(loss), np.mean((want_target - out) ** 2), rtol=1e-4)


class _Gaussian(MaximumLikelihoodFamily):
  """N(x; w, I) per example: the exact NLL is ``|x - w|^2 / 2 + D log(2 pi) / 2``."""

  def init(self, rng, batch):
    return {"model": {"w": jnp.array([0.5, -1.0])}}, {}

  def per_example_metrics(self, params, batch):
    d2 = jnp.sum((batch["x"] - params["model"]["w"]) ** 2, axis=-1)
    return {"nll_nats": 0.5 * d2 + math.log(2 * math.pi), "d2": d2}

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


def test_maximum_likelihood_training_loss_is_the_batch_mean_nll():
  family = _Gaussian(load_config("flow2d"), DataSpec("toy2d/moons", "points", (2,)))
  x = np.array([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]], np.float32)
  params, state = family.init(None, {"x": x})
  loss, (metrics, new_state) = family.update_groups()[0].loss_fn(params, state, {"x": x}, jax.random.key(0))
  d2 = np.sum((x - [0.5, -1.0]) ** 2, axis=-1)
  nll = 0.5 * d2 + math.log(2 * math.pi)
  np.testing.assert_allclose(float(loss), nll.mean(), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["d2"]), d2.mean(), rtol=1e-6)
  assert new_state is state
  per_example = family.eval_metrics(params, state, {"x": x}, jax.random.key(0))
  np.testing.assert_allclose(per_example["nll_nats"], nll, rtol=1e-6)


class _IdentityGenerator:
  """Stands in for the generator network: returns its latent input (and no batch-stat updates)."""

  def apply(self, variables, z, labels, train, mutable=None):
    return (z, {}) if mutable else z


def _moments_ok(a: np.ndarray, mean: float, std: float) -> bool:
  """Mean and variance of iid draws within 5 standard errors of ``N(mean, std^2)``'s."""
  n = a.size
  return abs(a.mean() - mean) < 5 * std / math.sqrt(n) and abs(a.var() / std**2 - 1) < 5 * math.sqrt(2 / n)


def test_gan_latent_is_standard_normal_and_generator_labels_are_uniform():
  config = load_config("gan", **{"model.conditional": True, "model.latent_dim": 4})
  family = families.build(config, DataSpec("digits", "image", (8, 8, 1), levels=17, num_classes=10))
  family.gen = _IdentityGenerator()
  n = 20000
  z = np.asarray(family.sample({"gen": {}}, {}, jax.random.key(0), n), np.float64)
  assert z.shape == (n, 4)
  assert all(_moments_ok(z[:, j], 0.0, 1.0) for j in range(4))
  corr = np.corrcoef(z.T)[np.triu_indices(4, 1)]
  assert np.abs(corr).max() < 5 / math.sqrt(n)  # independent coordinates
  assert scipy.stats.kstest(z[:, 0], "norm").pvalue > 1e-3
  labels = np.asarray(family._labels(None, jax.random.key(1), n))
  assert scipy.stats.chisquare(np.bincount(labels, minlength=10)).pvalue > 1e-3 and labels.max() == 9


def test_vae_reparameterised_latent_has_the_encoder_mean_and_std():
  """``elbo_terms`` draws ``z ~ N(mean, exp(log_std)^2)`` and returns ``(log p(x|z), KL)``."""
  n = 20000
  mean = jnp.tile(jnp.array([1.5, -2.0]), (n, 1))
  log_std = jnp.tile(jnp.log(jnp.array([0.5, 2.0])), (n, 1))
  encode = lambda x: (mean, log_std)
  for j, (m, s) in enumerate([(1.5, 0.5), (-2.0, 2.0)]):
    z_j, kl = vae.elbo_terms(encode, lambda x, z, j=j: z[:, j], None, jax.random.key(0))
    assert _moments_ok(np.asarray(z_j, np.float64), m, s), (j, float(z_j.mean()), float(z_j.std()))
  # KL(N(m, s^2) || N(0, 1)) per dimension: (m^2 + s^2 - 1) / 2 - log s.
  want = sum((m**2 + s**2 - 1) / 2 - math.log(s) for m, s in [(1.5, 0.5), (-2.0, 2.0)])
  np.testing.assert_allclose(kl, np.full(n, want), rtol=1e-5)
