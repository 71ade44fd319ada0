"""VQ-VAE (van den Oord et al. 2017): a conv autoencoder with a discrete code grid.

Model. ``z_e = E(x) [B, h, w, D]`` (:class:`jaxgen.nn.conv_autoencoder.ConvEncoder` + a 1x1
convolution; ``h = H / 2^k`` for ``k = len(model.features)``), quantised per position to the
nearest of ``K = model.num_codes`` codebook vectors, ``q = e_{k(x)}``; the decoder reads
``z + sg(q - z)`` (straight-through) and parameterises ``p(x | k)``, one of
:mod:`jaxgen.nn.pixel_likelihood` (default: a discretized logistic over the raw levels).
Codebook (:mod:`jaxgen.nn.vector_quantizer`): ``model.codebook="ema"`` (default) keeps it in the
non-gradient state ``{"model": {"vq_stats": ...}}``, updated by exponential moving averages
(decay ``model.codebook_decay``) with dead-code restarts (``model.dead_code_threshold``); ``"loss"``
makes it a parameter trained by the codebook loss.

Training loss (mean over the batch; sums over the ``h w D`` entries of one example):

    loss = -log p(x | q)  +  beta ||z_e - sg(q)||^2  [+ ||sg(z_e) - q||^2 with model.codebook="loss"]

``beta = model.commitment``. Logged: ``recon_nats``, ``commitment``, ``perplexity`` and ``usage``
of the codes in the batch, ``restarted`` (codes restarted this step).

Likelihood. With the deterministic one-hot posterior and the uniform prior ``p(k) = K^-(h w)``
that :meth:`VQVAE.sample` draws from, the ELBO is ``log p(x | k(x)) - h w log K``, so the held-out
``nll_bound_nats = recon_nats + h w log K`` (and ``bits_per_dim`` of it) bounds ``-log p(x)``
under *that* model. A learned prior over the codes (``vqvae_prior``) replaces ``h w log K`` by
``-log p_prior(k(x))``: the two-stage bound. Also per example: ``recon_nats``, ``mse`` (of the
decoder mean in model space); per batch: ``perplexity``, ``usage``.

Parameter EMA is off by default (``train.ema_decay = 0``): averaged encoder weights would no longer
match the codebook of the state.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn import pixel_likelihood
from jaxgen.nn import vector_quantizer as vq
from jaxgen.nn.conv_autoencoder import ConvDecoder, ConvEncoder, check_downsampling

CODEBOOKS = ("ema", "loss")


class VQVAEModel(nn.Module):
  """Encoder ``x -> z_e [B, h, w, D]``, decoder ``[B, h, w, D] -> out [B, *shape, P]``."""

  shape: tuple[int, ...]
  features: tuple[int, ...]
  embedding_dim: int
  num_codes: int
  decoder: str
  codebook_param: bool  # model.codebook == "loss"

  def setup(self):
    self.encoder = ConvEncoder(self.features)
    self.to_embedding = nn.Conv(self.embedding_dim, (1, 1))
    self.decoder_net = ConvDecoder(self.features, self.shape[-1] * pixel_likelihood.num_outputs(self.decoder))
    if self.codebook_param:
      self.codebook = self.param("codebook", nn.initializers.normal(1.0), (self.num_codes, self.embedding_dim))
    if self.decoder == "gaussian":
      self.log_std = self.param("log_std", nn.initializers.zeros, self.shape)

  def encode(self, x):
    return self.to_embedding(self.encoder(x))

  def decode(self, z):
    out = self.decoder_net(z)
    return out.reshape(out.shape[:3] + (self.shape[-1], -1))

  def codebook_value(self):
    return self.codebook if self.codebook_param else None

  def decoder_log_std(self):
    return self.log_std if self.decoder == "gaussian" else None

  def __call__(self, x):
    return self.decode(self.encode(x))


@FAMILIES.register("vqvae")
class VQVAE(Family):
  """One network ``model``; the EMA codebook is the state ``{"model": {"vq_stats": ...}}``."""

  objective = "reconstruction + vector quantisation"

  networks = ("model",)

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "features": (32,),  # channels of the stride-2 stages: the code grid is H/2^len x W/2^len
            "embedding_dim": 16,  # D, the size of a codebook vector
            "num_codes": 32,  # K, the codebook size
            "commitment": 0.25,  # beta of the commitment loss
            "codebook": "ema",  # ema (moving averages, non-gradient state) | loss (codebook loss)
            "codebook_decay": 0.99,  # EMA decay of the codebook statistics
            "dead_code_threshold": 1.0,  # EMA count (uses per batch) below which a code restarts (ema only; 0: off)
            "decoder": "logistic",  # bernoulli | gaussian | logistic (jaxgen.nn.pixel_likelihood)
        },
        "optim": {"model": config_defaults.optimizer(learning_rate=1e-3)},
        "train": {"ema_decay": 0.0},  # parameter EMA off: it would not match the state's codebook
    }

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.model
    if spec.modality != "image":
      raise UserError(f"the vqvae family models images, not {spec.modality} ({spec.name})")
    if m.codebook not in CODEBOOKS:
      raise UserError(f"model.codebook={m.codebook!r}; use one of {', '.join(CODEBOOKS)}")
    if m.codebook == "loss" and m.dead_code_threshold > 0:
      raise UserError("dead-code restarts need the EMA codebook: set --config.model.codebook=ema "
                      "or --config.model.dead_code_threshold=0")
    pixel_likelihood.check(m.decoder, spec)
    self.grid = check_downsampling(spec.shape, len(m.features))
    self.num_codes = int(m.num_codes)
    self.net = VQVAEModel(tuple(spec.shape), tuple(m.features), int(m.embedding_dim), self.num_codes,
                          m.decoder, m.codebook == "loss")

  def init(self, rng, batch):
    k_param, k_code = jax.random.split(rng)
    params = {"model": self.net.init(k_param, batch["x"])["params"]}
    if self.config.model.codebook == "loss":
      return params, {}
    return params, {"model": {"vq_stats": vq.init_stats(k_code, self.num_codes, self.config.model.embedding_dim)}}

  # --- pieces (also used by the prior over codes and the evaluators) -----------------------------

  def _apply(self, params, *args, method):
    return self.net.apply({"params": params["model"]}, *args, method=method)

  def codebook(self, params, state) -> jax.Array:
    """``[K, D]``."""
    if self.config.model.codebook == "loss":
      return self._apply(params, method=VQVAEModel.codebook_value)
    return state["model"]["vq_stats"]["codebook"]

  def encode(self, params, x):
    """``z_e [B, h, w, D]``."""
    return self._apply(params, x, method=VQVAEModel.encode)

  def quantize(self, params, state, z_e):
    """``(codes int32 [B, h, w], q [B, h, w, D])`` of encoder outputs."""
    codebook = self.codebook(params, state)
    codes = vq.nearest_codes(z_e.reshape(-1, z_e.shape[-1]), codebook).reshape(z_e.shape[:-1])
    return codes, codebook[codes]

  def encode_codes(self, params, state, x):
    """The code grid of images ``x``: int32 ``[B, h, w]``."""
    return self.quantize(params, state, self.encode(params, x))[0]

  def decode(self, params, z):
    """Decoder outputs ``[B, *shape, P]`` from (quantised) embeddings ``[B, h, w, D]``."""
    return self._apply(params, z, method=VQVAEModel.decode)

  def log_lik(self, params, x, z):
    """``log p(x | z)`` in nats, ``[B]``."""
    log_std = self._apply(params, method=VQVAEModel.decoder_log_std)
    return pixel_likelihood.log_prob(self.config.model.decoder, self.spec, x, self.decode(params, z), log_std)

  def decode_codes(self, params, state, codes):
    """Model-space images (the decoder mean) of code grids ``[B, h, w]``."""
    out = self.decode(params, self.codebook(params, state)[codes])
    return pixel_likelihood.mean(self.config.model.decoder, self.spec, out)

  def encode_latent(self, params, state, batch):
    """The continuous encoder output ``z_e [B, h, w, D]`` (the interpolation evaluator's latent)."""
    return self.encode(params, batch["x"])

  def decode_latent(self, params, state, z, label=None):
    """Quantise ``z [B, h, w, D]`` to its nearest codes and decode them (model space)."""
    return self.decode_codes(params, state, self.quantize(params, state, z)[0])

  def raw_offset_nats(self) -> float:
    """Nats that turn a model-space ``-log p(x|z)`` into the raw data's (:func:`pixel_likelihood.raw_offset_nats`)."""
    return pixel_likelihood.raw_offset_nats(self.config.model.decoder, self.spec)

  def uniform_prior_nats(self) -> float:
    """``h w log K``: ``-log p(k)`` of any code grid under the uniform prior."""
    return self.grid[0] * self.grid[1] * math.log(self.num_codes)

  # --- the family contract -----------------------------------------------------------------------

  def loss(self, params, state, batch, rng):
    m = self.config.model
    x = batch["x"]
    z_e = self.encode(params, x)
    codes, q = self.quantize(params, state, z_e)
    rec = self.log_lik(params, x, vq.straight_through(z_e, q))
    commitment = losses.sum_except_batch((z_e - jax.lax.stop_gradient(q)) ** 2)
    loss = -jnp.mean(rec) + m.commitment * jnp.mean(commitment)
    counts = vq.code_counts(codes.reshape(-1), self.num_codes)
    metrics = {"recon_nats": -jnp.mean(rec), "commitment": jnp.mean(commitment),
               "perplexity": vq.perplexity(counts), "usage": vq.usage(counts)}
    if m.codebook == "loss":
      loss = loss + jnp.mean(losses.sum_except_batch((jax.lax.stop_gradient(z_e) - q) ** 2))
      return loss, (metrics, state)
    flat = z_e.reshape(-1, z_e.shape[-1])
    stats = vq.ema_update(state["model"]["vq_stats"], flat, codes.reshape(-1), m.codebook_decay)
    if m.dead_code_threshold > 0:
      stats, metrics["restarted"] = vq.restart_dead_codes(stats, flat, rng, m.dead_code_threshold)
    return loss, (metrics, {**state, "model": {"vq_stats": stats}})

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def sample(self, params, state, rng, num):
    """Decoded code grids drawn from the uniform prior (the model the bound is of); the learned
    prior is the ``vqvae_prior`` family."""
    codes = jax.random.randint(rng, (num, *self.grid), 0, self.num_codes, jnp.int32)
    return self.decode_codes(params, state, codes)

  def eval_metrics(self, params, state, batch, rng):
    x = batch["x"]
    codes, q = self.quantize(params, state, self.encode(params, x))
    out = self.decode(params, q)
    log_std = self._apply(params, method=VQVAEModel.decoder_log_std)
    kind = self.config.model.decoder
    rec = pixel_likelihood.log_prob(kind, self.spec, x, out, log_std) - self.raw_offset_nats()  # raw data
    bound = self.uniform_prior_nats() - rec
    mask = jnp.broadcast_to(batch.get("mask", jnp.ones(x.shape[:1]))[:, None, None], codes.shape)
    counts = vq.code_counts(codes.reshape(-1), self.num_codes, mask.reshape(-1))  # padding not counted
    mse = jnp.mean(((pixel_likelihood.mean(kind, self.spec, out) - x) ** 2).reshape(x.shape[0], -1), -1)
    return {"nll_bound_nats": bound, "bits_per_dim": likelihood.nats_to_bits_per_dim(bound, self.spec.dims),
            "recon_nats": -rec, "mse": mse, "perplexity": vq.perplexity(counts), "usage": vq.usage(counts)}
