"""Variational autoencoder (Kingma & Welling 2014): β-VAE, KL warm-up, free bits, IWAE evaluation.

Model. Prior ``p(z) = N(0, I_L)``; encoder ``q(z|x) = N(mu(x), diag sigma(x)^2)``; decoder
``p(x|z)`` one of :mod:`jaxgen.nn.pixel_likelihood` (``model.decoder``): Bernoulli on binarized
data, Gaussian with a learned per-dimension scale, or a discretized logistic over the raw levels
(the default for images; bits/dim then compare with PixelCNN's). ``model.architecture`` (:mod:`jaxgen.nn.autoencoder`): ``conv``
(images: stride-2 conv stages, then an MLP head to the latent; the decoder mirrors it) or ``mlp``
(images or points). ``model.conditional``: the encoder and decoder also see the one-hot
label (a conditional VAE, sampled with ``sample.label``).

Training loss (per batch of ``B``; ``t`` = training step, counted in the non-gradient state):

    loss = mean_b[-log p(x_b|z_b)] + beta_t * sum_j max(lambda, mean_b KL_bj),
    beta_t = model.beta * min(1, t / model.kl_warmup_steps)   (beta_t = model.beta without warm-up)

with ``z_b = mu + sigma * eps`` (one reparameterised sample) and ``KL_bj`` the closed-form KL of
latent dimension ``j``. ``beta = 1``, no warm-up and ``lambda = model.free_bits = 0`` is the negative
ELBO; ``beta > 1`` is the β-VAE (Higgins et al. 2017); ``lambda > 0`` is free bits (Kingma et al.
2016: a dimension's batch-mean KL below ``lambda`` nats costs nothing, so the optimiser has no
reason to collapse it to the prior).

Evaluation (per example, whatever beta / warm-up / free bits were; every ``*_nats`` of the raw data:
a Gaussian decoder's model-space density gets the offset of
:func:`jaxgen.nn.pixel_likelihood.raw_offset_nats`, as flows' and diffusion's do): ``neg_elbo_nats`` (closed-form
KL), ``nll_bound_nats`` = the K-sample IWAE bound ``-log (1/K) sum_k p(x, z_k) / q(z_k|x)``
(Burda et al. 2016; ``eval.iwae_samples = K``; K <= 1 reports the ELBO), ``bits_per_dim`` of it,
``recon_nats``, ``kl_nats``, and the posterior-collapse diagnostics: ``kl_dim_<j>`` (the KL of each
latent dimension; a collapsed one is ~0) and ``active_units`` (Burda et al. 2016:
``#{j : Cov_x(E_q[z_j]) > 0.01}``, estimated on each evaluation batch). Training logs the same
diagnostics on its batches.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses, sampling
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn import pixel_likelihood
from jaxgen.nn.autoencoder import ARCHITECTURES, Decoder, Encoder

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # x [B, ...] -> (mean, log_std) [B, L]
LogLik = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], z [B, L]) -> log p(x|z) [B]

#: Burda et al. (2016)'s threshold on Cov_x(E_q[z_j]) for an active unit.
ACTIVE_UNIT_THRESHOLD = 0.01


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


def kl_per_dim(mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """Closed-form ``KL(N(mean_j, exp(2 log_std_j)) || N(0, 1))`` of every latent dimension, ``[B, L]``."""
  b, l = mean.shape
  return losses.kl_diag_gaussian_standard_normal(mean.reshape(b * l, 1), log_std.reshape(b * l, 1)).reshape(b, l)


def active_units(means: jax.Array, mask: jax.Array | None = None,
                 threshold: float = ACTIVE_UNIT_THRESHOLD) -> jax.Array:
  """Number of latent dimensions ``j`` with ``Var_x(E_q[z_j | x]) > threshold`` (Burda et al. 2016).

  ``means [N, L]``: posterior means of ``N`` examples; ``mask [N]`` (1 = counts) weights them.
  The variance is the (mask-weighted) population variance over the examples.
  """
  w = jnp.ones(means.shape[:1]) if mask is None else mask.astype(jnp.float32)
  w = w / jnp.maximum(jnp.sum(w), 1.0)
  centred = means - w @ means
  return jnp.sum(w @ centred**2 > threshold)


def kl_weight(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
  """``beta * min(1, step / warmup_steps)`` (``beta`` when ``warmup_steps <= 0``)."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def vae_objective(rec: jax.Array, kl_dims: jax.Array, weight: jax.Array, free_bits: float) -> jax.Array:
  """The training loss of the module docstring from ``log p(x|z)`` ``[B]`` and ``KL_bj`` ``[B, L]``
  (``KL_bj >= 0``, so ``free_bits = 0`` leaves the mean KL unchanged)."""
  return -jnp.mean(rec) + weight * jnp.sum(jnp.maximum(free_bits, jnp.mean(kl_dims, axis=0)))


class LatentAutoencoderFamily(Family):
  """Shared by the continuous-latent families (``vae``, ``aae``, ``avb``): builds the
  :mod:`jaxgen.nn.autoencoder` encoder (``encoder_out`` outputs, optional noise input) and decoder
  from ``config.model`` (``architecture``, ``hidden``, ``features``, ``latent_dim``, ``decoder``),
  checks them against the data, and evaluates ``p(x|z)`` from the decoder's parameters."""

  def __init__(self, config, spec, encoder_out: int):
    super().__init__(config, spec)
    m = config.model
    if spec.modality not in ("image", "points"):
      raise UserError(f"the {m.family} family models images or points, not {spec.modality} ({spec.name})")
    if m.architecture not in ARCHITECTURES:
      raise UserError(f"model.architecture={m.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    if m.architecture == "conv" and spec.modality != "image":
      raise UserError(f"model.architecture=conv needs images and {spec.name!r} holds {spec.modality}: "
                      "set --config.model.architecture=mlp")
    pixel_likelihood.check(m.decoder, spec)
    self.latent_dim = int(m.latent_dim)
    self.encoder = Encoder(m.architecture, tuple(m.hidden), tuple(m.features), encoder_out)
    self.decoder = Decoder(tuple(spec.shape), m.architecture, tuple(m.hidden), tuple(m.features), m.decoder)

  def decoder_out(self, dec_params, z, onehot=None):
    """Decoder outputs ``[B, *shape, P]``."""
    return self.decoder.apply({"params": dec_params}, z, onehot)

  def decoder_log_lik(self, dec_params, x, z, onehot=None):
    """``log p(x|z)`` in nats, ``[B]``."""
    log_std = self.decoder.apply({"params": dec_params}, method=Decoder.log_std_value)
    return pixel_likelihood.log_prob(self.config.model.decoder, self.spec, x, self.decoder_out(dec_params, z, onehot),
                                     log_std)

  def decoder_mean(self, dec_params, z, onehot=None):
    """The mean of ``p(x|z)`` in model space, ``[B, *shape]``."""
    return pixel_likelihood.mean(self.config.model.decoder, self.spec, self.decoder_out(dec_params, z, onehot))

  def bits_per_dim(self, nll_nats):
    """Per-example bits/dim of the raw data from a model-space NLL (or a bound) in nats."""
    return pixel_likelihood.bits_per_dim(self.config.model.decoder, self.spec, nll_nats)

  def raw_offset_nats(self) -> float:
    """Nats that turn a model-space ``-log p(x|z)`` into the raw data's (:func:`pixel_likelihood.raw_offset_nats`)."""
    return pixel_likelihood.raw_offset_nats(self.config.model.decoder, self.spec)

  def init_autoencoder(self, rng, batch, onehot=None, noise=None) -> dict:
    """``{"encoder": ..., "decoder": ...}`` parameters for an example batch."""
    k_enc, k_dec = jax.random.split(rng)
    x = batch["x"]
    z = jnp.zeros((x.shape[0], self.latent_dim))
    return {"encoder": self.encoder.init(k_enc, x, onehot, noise)["params"],
            "decoder": self.decoder.init(k_dec, z, onehot)["params"]}


@FAMILIES.register("vae")
class VAE(LatentAutoencoderFamily):
  """One network ``model`` = ``{"encoder", "decoder"}``; the training-step counter of the KL warm-up
  is the non-gradient state ``{"model": {"schedule": {"step": int32}}}``. Config: :meth:`defaults`."""

  sample_temperature = True
  objective = "ELBO"

  networks = ("model",)
  latent_prior = "gaussian"  # N(0, I): interpolations are spherical

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "architecture": "conv",  # conv (images) | mlp (images or points)
            "hidden": (256, 256),  # widths of the encoder's MLP (head, for conv; reversed in the decoder)
            "features": (32, 64),  # conv: channels of the stride-2 stages (H, W divisible by 2^len)
            "latent_dim": 16,
            "decoder": "logistic",  # bernoulli | gaussian | logistic (jaxgen.nn.pixel_likelihood)
            "beta": 1.0,  # weight of the KL term (beta-VAE when > 1)
            "kl_warmup_steps": 0,  # KL weight ramps linearly from 0 to beta over these steps (0: off)
            "free_bits": 0.0,  # nats per latent dimension below which the batch-mean KL is free
            "conditional": False,  # encoder and decoder see the label (sample.label picks it)
        },
        "sample": {"temperature": 1.0, "label": -1},  # z ~ N(0, T^2 I); label: -1 = uniform
        "optim": {"model": config_defaults.optimizer(learning_rate=1e-3)},
        "eval": {"iwae_samples": 100},  # K of the held-out IWAE bound (<= 1: the ELBO)
    }

  def __init__(self, config, spec):
    m = config.model
    super().__init__(config, spec, 2 * int(m.latent_dim))
    if m.beta < 0 or m.free_bits < 0:
      raise UserError(f"model.beta={m.beta} and model.free_bits={m.free_bits} must be >= 0")
    self.num_classes = self.condition_classes()

  def _onehot(self, label):
    return jax.nn.one_hot(label, self.num_classes) if self.num_classes and label is not None else None

  def _label(self, batch):
    return batch["label"] if self.num_classes else None

  def init(self, rng, batch):
    params = self.init_autoencoder(rng, batch, self._onehot(self._label(batch)))
    return {"model": params}, {"model": {"schedule": {"step": jnp.zeros((), jnp.int32)}}}

  # --- pieces (also used by tests and the latent-space evaluators) -------------------------------

  def encode(self, params, x, label=None):
    """``(mean, log_std)`` of ``q(z|x)``, each ``[B, L]``."""
    h = self.encoder.apply({"params": params["model"]["encoder"]}, x, self._onehot(label))
    mean, log_std = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(log_std, -10.0, 5.0)

  def decode(self, params, z, label=None):
    """Decoder outputs ``[B, *shape, P]``."""
    return self.decoder_out(params["model"]["decoder"], z, self._onehot(label))

  def log_lik(self, params, x, z, label=None):
    """``log p(x|z)`` in nats, ``[B]``."""
    return self.decoder_log_lik(params["model"]["decoder"], x, z, self._onehot(label))

  def decode_mean(self, params, z, label=None):
    """The mean of ``p(x|z)`` in model space, ``[B, *shape]``."""
    return self.decoder_mean(params["model"]["decoder"], z, self._onehot(label))

  def encode_latent(self, params, state, batch):
    """The posterior mean ``[B, L]`` (the latent of the interpolation evaluator)."""
    return self.encode(params, batch["x"], self._label(batch))[0]

  def decode_latent(self, params, state, z, label=None):
    return self.decode_mean(params, z, label)

  def _diagnostics(self, mean, kl_dims, mask=None):
    out = {f"kl_dim_{j}": kl_dims[:, j] for j in range(kl_dims.shape[1])}
    out["active_units"] = active_units(mean, mask)
    return out

  # --- the family contract -----------------------------------------------------------------------

  def loss(self, params, state, batch, rng):
    m = self.config.model
    x, label = batch["x"], self._label(batch)
    mean, log_std = self.encode(params, x, label)
    z = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
    rec = self.log_lik(params, x, z, label)
    kl_dims = kl_per_dim(mean, log_std)
    step = state["model"]["schedule"]["step"]
    weight = kl_weight(step, m.beta, m.kl_warmup_steps)
    neg_elbo = kl_dims.sum(-1) - rec
    metrics = {"recon_nats": -jnp.mean(rec), "kl_nats": jnp.mean(kl_dims.sum(-1)), "kl_weight": weight,
               "bits_per_dim": jnp.mean(self.bits_per_dim(neg_elbo)),
               **jax.tree.map(jnp.mean, self._diagnostics(mean, kl_dims))}
    new_state = {**state, "model": {"schedule": {"step": step + 1}}}
    return vae_objective(rec, kl_dims, weight, m.free_bits), (metrics, new_state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    k_z, k_label = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.num_classes, k_label, num)
    z = jax.random.normal(k_z, (num, self.config.model.latent_dim)) * self.config.sample.temperature
    return self.decode_mean(params, z, labels)

  def eval_metrics(self, params, state, batch, rng):
    """Per-example ``[B]`` bounds and diagnostics of the module docstring (``active_units``: scalar)."""
    k_elbo, k_iwae = jax.random.split(rng)
    x, label = batch["x"], self._label(batch)
    mean, log_std = self.encode(params, x, label)
    z = mean + jnp.exp(log_std) * jax.random.normal(k_elbo, mean.shape)
    offset = self.raw_offset_nats()
    rec = self.log_lik(params, x, z, label) - offset  # of the raw data
    kl_dims = kl_per_dim(mean, log_std)
    neg_elbo = kl_dims.sum(-1) - rec
    bound = neg_elbo
    k = int(self.config.eval.get("iwae_samples", 0))
    if k > 1:
      bound = offset - iwae_bound(lambda x_: (mean, log_std), lambda x_, z_: self.log_lik(params, x_, z_, label),
                                  x, k_iwae, k)
    return {"nll_bound_nats": bound, "bits_per_dim": likelihood.nats_to_bits_per_dim(bound, self.spec.dims),
            "neg_elbo_nats": neg_elbo, "recon_nats": -rec, "kl_nats": kl_dims.sum(-1),
            **self._diagnostics(mean, kl_dims, batch.get("mask"))}
