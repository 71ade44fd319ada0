"""Variational autoencoder (Kingma & Welling 2014) with the IWAE bound (Burda et al. 2016).

Prior ``p(z) = N(0, I)``; encoder ``q(z|x) = N(mu(x), diag sigma(x)^2)`` (MLP); decoder
``p(x|z)``: Bernoulli(sigmoid(logits(z))) for data in [0, 1] (``model.decoder="bernoulli"``; a proper
likelihood on binarized data) or Gaussian N(mean(z), diag exp(2 s)) with a learned per-dimension
log-std ``s`` (``"gaussian"``; a density on dequantized data).

Training maximises the single-sample reparameterised ELBO
``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` (KL in closed form). Evaluation reports the ELBO and the
K-sample IWAE bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` (``eval.iwae_samples``), in nats per
example and bits/dim; both lower-bound ``log p(x)`` and IWAE tightens as K grows.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import losses
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn.mlp import MLP

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # x [B, ...] -> (mean, log_std) [B, L]
LogLik = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], z [B, L]) -> log p(x|z) [B]


def elbo_terms(encode: Encode, log_lik: LogLik, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Single-sample reparameterised ``(E_q log p(x|z), KL(q||p))`` estimates, each ``[B]``."""
  mean, log_std = encode(x)
  z = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
  return log_lik(x, z), losses.kl_diag_gaussian_standard_normal(mean, log_std)


def iwae_bound(encode: Encode, log_lik: LogLik, x: jax.Array, rng: jax.Array, k: int) -> jax.Array:
  """K-sample importance-weighted bound on ``log p(x)``, ``[B]``; K = 1 is an ELBO estimate."""
  mean, log_std = encode(x)
  zero = jnp.zeros_like(mean)

  def log_weight(key):
    z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_prior = losses.gaussian_log_prob(z, zero, zero)
    return log_lik(x, z) + log_prior - losses.gaussian_log_prob(z, mean, log_std)

  log_w = jax.lax.map(log_weight, jax.random.split(rng, k))  # [K, B], sequential: memory of one sample
  return likelihood.iwae_log_likelihood(log_w, axis=0)


class VAEModel(nn.Module):
  shape: tuple[int, ...]
  hidden: tuple[int, ...]
  latent_dim: int
  decoder: str

  def setup(self):
    self.encoder = MLP(self.hidden, 2 * self.latent_dim)
    self.decoder_net = MLP(tuple(reversed(self.hidden)), math.prod(self.shape))
    if self.decoder == "gaussian":
      self.log_std = self.param("log_std", nn.initializers.zeros, self.shape)

  def encode(self, x):
    mean, log_std = jnp.split(self.encoder(x), 2, axis=-1)
    return mean, jnp.clip(log_std, -10.0, 5.0)

  def log_lik(self, x, z):
    out = self.decoder_net(z).reshape(x.shape)
    if self.decoder == "bernoulli":
      return losses.bernoulli_log_prob(x, out)
    return losses.gaussian_log_prob(x, out, jnp.broadcast_to(self.log_std, x.shape))

  def decode_mean(self, z):
    out = self.decoder_net(z).reshape((z.shape[0],) + self.shape)
    return nn.sigmoid(out) if self.decoder == "bernoulli" else out

  def __call__(self, x, rng):
    return elbo_terms(self.encode, self.log_lik, x, rng)


@FAMILIES.register("vae")
class VAE(Family):
  """Config (``config.model``): ``hidden``, ``latent_dim``, ``decoder`` (bernoulli | gaussian)."""

  networks = ("model",)

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.model
    if m.decoder not in ("bernoulli", "gaussian"):
      raise UserError(f"model.decoder={m.decoder!r}; use bernoulli or gaussian")
    if m.decoder == "bernoulli" and spec.modality == "image" and tuple(spec.value_range) != (0.0, 1.0):
      raise UserError("the Bernoulli decoder needs data in [0, 1]: set --config.data.scale=[0,1]")
    if spec.modality not in ("image", "points"):
      raise UserError(f"the vae family models images or points, not {spec.modality} ({spec.name})")
    self.net = VAEModel(tuple(spec.shape), tuple(m.hidden), m.latent_dim, m.decoder)

  def init(self, rng, batch):
    k_param, k_noise = jax.random.split(rng)
    return {"model": self.net.init(k_param, batch["x"], k_noise)["params"]}, {}

  def _bits_per_dim(self, nll):
    """Discrete (Bernoulli: exact bound on binary data) or continuous-with-offset (Gaussian)."""
    if self.config.model.decoder == "bernoulli":
      return likelihood.nats_to_bits_per_dim(nll, self.spec.dims)
    return likelihood.continuous_nll_to_bits_per_dim(nll, self.spec)

  def loss(self, params, state, batch, rng):
    rec, kl = self.net.apply({"params": params["model"]}, batch["x"], rng)
    neg_elbo = -losses.elbo(rec, kl)
    metrics = {"reconstruction": -jnp.mean(rec), "kl": jnp.mean(kl),
               "bits_per_dim": jnp.mean(self._bits_per_dim(neg_elbo))}
    return jnp.mean(neg_elbo), (metrics, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    z = jax.random.normal(rng, (num, self.config.model.latent_dim)) * self.config.sample.temperature
    return self.net.apply({"params": params["model"]}, z, method=VAEModel.decode_mean)

  def eval_metrics(self, params, state, batch, rng):
    """Per-example ``[B]``: ELBO and IWAE(K) in nats and bits/dim, reconstruction and KL."""
    k_elbo, k_iwae = jax.random.split(rng)
    rec, kl = self.net.apply({"params": params["model"]}, batch["x"], k_elbo)
    elbo = losses.elbo(rec, kl)
    k = self.config.eval.get("iwae_samples", 0)
    out = {"elbo_nats": elbo, "elbo_bits_per_dim": self._bits_per_dim(-elbo), "reconstruction": -rec, "kl": kl}
    if k:
      iw = lambda mdl, x: iwae_bound(mdl.encode, mdl.log_lik, x, k_iwae, k)  # noqa: E731
      iwae = self.net.apply({"params": params["model"]}, batch["x"], method=iw)
      out[f"iwae{k}_nats"] = iwae
      out[f"iwae{k}_bits_per_dim"] = self._bits_per_dim(-iwae)
    return out
