"""Adversarial Variational Bayes (Mescheder et al. 2017): a VAE with an implicit posterior.

Model. Prior ``p(z) = N(0, I_L)``; decoder ``p(x|z)`` (:mod:`jaxgen.nn.pixel_likelihood`); the
encoder takes noise, ``z = E(x, eps)``, ``eps ~ N(0, I_E)`` (``E = model.noise_dim``, appended to the
encoder's features, :mod:`jaxgen.nn.autoencoder`), so ``q(z|x)`` is any distribution the network can
push noise into -- with no density to evaluate. A discriminator ``T(x, z)`` (the same encoder
architecture with ``z`` appended, ``model.disc_hidden``) learns the log-density ratio: the
minimiser of

    disc loss = -E_{x, z~q(z|x)} log sigmoid(T(x, z)) - E_{x, z~p(z)} log(1 - sigmoid(T(x, z)))

is ``T*(x, z) = log q(z|x) - log p(z)``, so ``KL(q(z|x) || p(z)) = E_q T*(x, z)`` and the ELBO is

    ELBO(x) = E_{eps} [ log p(x | E(x, eps)) - T*(x, E(x, eps)) ].

Two update groups per step: ``disc`` (the loss above, codes held fixed; ``model.disc_steps``
times, each with fresh noise), then ``vae`` (encoder and
decoder, one network ``{"encoder", "decoder"}``) minimising ``mean_b[T(x, z) - log p(x|z)]`` with
``z = E(x, eps)`` reparameterised (gradients flow through ``T`` into ``z``; ``T`` is not updated).

Held-out metrics use the learned ``T`` in place of ``T*``, so they are *estimates*, not bounds:
``neg_elbo_estimate_nats`` (and ``neg_elbo_estimate_bits_per_dim``), ``recon_nats``,
``kl_estimate_nats``, and ``disc/loss``. No ``nll_bound_nats``: ``T`` may under- or over-estimate the KL.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, UpdateGroup
from jaxgen.families.vae import LatentAutoencoderFamily
from jaxgen.nn.autoencoder import Encoder

Critic = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], z [B, L]) -> T(x, z) [B]
LogLik = Callable[[jax.Array, jax.Array], jax.Array]  # (x, z) -> log p(x|z) [B]


def discriminator_terms(critic: Critic, x: jax.Array, z_q: jax.Array, z_p: jax.Array) -> jax.Array:
  """The logistic loss of ``T`` per example ``[B]``: posterior codes ``z_q`` labelled 1, prior
  codes ``z_p`` 0."""
  posterior, prior = losses.gan_discriminator_terms("non_saturating", critic(x, z_q), critic(x, z_p))
  return posterior + prior


def discriminator_loss(critic: Critic, x: jax.Array, z_q: jax.Array, z_p: jax.Array) -> jax.Array:
  """The mean of :func:`discriminator_terms`."""
  return jnp.mean(discriminator_terms(critic, x, z_q, z_p))


def elbo_terms(critic: Critic, log_lik: LogLik, x: jax.Array, z_q: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(log p(x|z), T(x, z))`` per example, each ``[B]``, for posterior codes ``z_q``: the ELBO
  estimate is their difference (``T`` standing for ``log q(z|x) - log p(z)``)."""
  return log_lik(x, z_q), critic(x, z_q)


@FAMILIES.register("avb")
class AVB(LatentAutoencoderFamily):
  """Networks ``disc`` (``T``) and ``vae`` (``{"encoder", "decoder"}``); config: :meth:`defaults`."""

  sample_temperature = True
  objective = "adversarial ELBO estimate"

  networks = ("disc", "vae")
  latent_prior = "gaussian"

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "architecture": "conv",  # conv (images) | mlp (images or points)
            "hidden": (128,),  # widths of the encoder's MLP (head, for conv; reversed in the decoder)
            "features": (16, 32),  # conv: channels of the stride-2 stages (H, W divisible by 2^len)
            "latent_dim": 8,
            "noise_dim": 8,  # E: dimensions of the encoder's input noise
            "decoder": "logistic",  # bernoulli | gaussian | logistic (jaxgen.nn.pixel_likelihood)
            "disc_hidden": (128,),  # T(x, z): the encoder architecture with these MLP widths
            "disc_steps": 2,  # discriminator updates per step (T must track q as it moves)
        },
        "sample": {"temperature": 1.0},  # z ~ N(0, T^2 I)
        "optim": {"vae": config_defaults.optimizer(learning_rate=1e-3),
                  "disc": config_defaults.optimizer(learning_rate=1e-3)},
    }

  def __init__(self, config, spec):
    m = config.model
    super().__init__(config, spec, int(m.latent_dim))
    self.noise_dim = int(m.noise_dim)
    self.critic_net = Encoder(m.architecture, tuple(m.disc_hidden), tuple(m.features), 1)

  def init(self, rng, batch):
    k_ae, k_disc = jax.random.split(rng)
    x = batch["x"]
    ae = self.init_autoencoder(k_ae, batch, noise=jnp.zeros((x.shape[0], self.noise_dim)))
    disc = self.critic_net.init(k_disc, x, None, jnp.zeros((x.shape[0], self.latent_dim)))["params"]
    return {"vae": ae, "disc": disc}, {}

  # --- pieces --------------------------------------------------------------------------------------

  def encode(self, params, x, eps):
    """``z = E(x, eps)``, ``[B, L]``."""
    return self.encoder.apply({"params": params["vae"]["encoder"]}, x, None, eps)

  def sample_posterior(self, params, x, rng):
    return self.encode(params, x, jax.random.normal(rng, (x.shape[0], self.noise_dim)))

  def critic(self, params):
    """``T(x, z) -> [B]`` with these parameters."""
    return lambda x, z: self.critic_net.apply({"params": params["disc"]}, x, None, z)[:, 0]

  def log_lik(self, params):
    return lambda x, z: self.decoder_log_lik(params["vae"]["decoder"], x, z)

  def encode_latent(self, params, state, batch):
    """The code of ``eps = 0`` (the noise's mode), ``[B, L]``."""
    x = batch["x"]
    return self.encode(params, x, jnp.zeros((x.shape[0], self.noise_dim)))

  def decode_latent(self, params, state, z, label=None):
    return self.decoder_mean(params["vae"]["decoder"], z)

  # --- the two update groups -----------------------------------------------------------------------

  def _disc_codes(self, params, x, rng):
    """``(z_q, z_p)``: posterior codes of ``x`` (no gradient to the encoder) and prior codes."""
    k_q, k_p = jax.random.split(rng)
    z_q = jax.lax.stop_gradient(self.sample_posterior(params, x, k_q))
    return z_q, jax.random.normal(k_p, z_q.shape)

  def disc_loss(self, params, state, batch, rng):
    x = batch["x"]
    return discriminator_loss(self.critic(params), x, *self._disc_codes(params, x, rng)), ({}, state)

  def vae_loss(self, params, state, batch, rng):
    x = batch["x"]
    rec, kl = elbo_terms(self.critic(params), self.log_lik(params), x, self.sample_posterior(params, x, rng))
    metrics = {"recon_nats": -jnp.mean(rec), "kl_estimate_nats": jnp.mean(kl)}
    return jnp.mean(kl - rec), (metrics, state)

  def update_groups(self):
    return [UpdateGroup("disc", self.disc_loss, int(self.config.model.disc_steps)), UpdateGroup("vae", self.vae_loss)]

  # --- sampling and evaluation ---------------------------------------------------------------------

  def sample(self, params, state, rng, num):
    z = jax.random.normal(rng, (num, self.latent_dim)) * self.config.sample.temperature
    return self.decoder_mean(params["vae"]["decoder"], z)

  def eval_metrics(self, params, state, batch, rng):
    """Per example ``[B]``: the ELBO estimate and its terms in nats of the raw data (a Gaussian
    decoder's offset added, :meth:`raw_offset_nats`), and the discriminator's loss."""
    k_z, k_disc = jax.random.split(rng)
    x = batch["x"]
    rec, kl = elbo_terms(self.critic(params), self.log_lik(params), x, self.sample_posterior(params, x, k_z))
    rec = rec - self.raw_offset_nats()
    disc = discriminator_terms(self.critic(params), x, *self._disc_codes(params, x, k_disc))
    return {"neg_elbo_estimate_nats": kl - rec,
            "neg_elbo_estimate_bits_per_dim": likelihood.nats_to_bits_per_dim(kl - rec, self.spec.dims),
            "recon_nats": -rec, "kl_estimate_nats": kl, "disc/loss": disc}
