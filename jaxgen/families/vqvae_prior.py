"""``vqvae_prior``: a PixelCNN prior over the code grids of a trained VQ-VAE (van den Oord et al. 2017).

Stage 1 is a ``vqvae`` run; stage 2 (this family) names its workdir in ``model.vqvae_workdir``
and trains the gated PixelCNN of :mod:`jaxgen.families.pixelcnn` (the same network and sampler,
with the same ``model`` / ``sample`` fields, over a ``h x w x 1`` "image" of ``K`` levels: the
codes) by maximum likelihood on the codes ``k(x)`` of the training images.

The VQ-VAE (its EMA parameters and codebook) is restored read-only by :mod:`jaxgen.pretrained`
(the same data settings are required) and stays frozen. Codes are computed once: when training
starts the whole training split is encoded (``code_cache``, in memory), and each step draws its
batch of code grids uniformly from the cache with the step's key (the data batch sets only the
batch size), as latent diffusion does with its latents.

Sampling: codes from the prior (temperature / top-k / top-p of ``config.sample``, ``sample.label``
for a class-conditional prior), decoded by the VQ-VAE (the decoder mean).

Held-out (per image, the test images encoded on the fly): the **two-stage bound**
``nll_bound_nats = -log p_prior(k(x)) - log p(x | k(x))`` (the negative ELBO of the VQ-VAE with
its deterministic one-hot posterior and the learned prior: an upper bound on ``-log p(x)`` of the
two-stage model) and ``bits_per_dim`` of it; its terms ``prior_nll_nats`` and ``recon_nats``;
``prior_bits_per_code``; and ``uniform_prior_nats = h w log K``, the prior term of the VQ-VAE alone
(``vqvae``'s bound), for comparison.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgen import pretrained, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.families.pixelcnn import PixelCNNFamily


@FAMILIES.register("vqvae_prior")
class VQVAEPrior(Family):
  """One network ``model``: the PixelCNN over codes (module docstring)."""

  sample_temperature = True
  objective = "max likelihood of codes"

  networks = ("model",)

  @classmethod
  def defaults(cls) -> dict:
    pixelcnn = PixelCNNFamily.defaults()
    return {**pixelcnn, "model": {
        **pixelcnn["model"],
        "vqvae_workdir": "",  # workdir of the trained vqvae run whose codes this prior models
    }}

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.model
    if m.output != "softmax":
      raise UserError(f"model.output={m.output!r}: codes are unordered categories, use --config.model.output=softmax")
    self.vqvae = pretrained.load(m.vqvae_workdir, spec, config.data, "model.vqvae_workdir", family="vqvae")
    self.vq = self.vqvae.family
    self.code_spec = DataSpec("vqvae_codes", "image", (*self.vq.grid, 1), levels=self.vq.num_codes,
                              num_classes=spec.num_classes)
    self.prior = PixelCNNFamily(config, self.code_spec)
    self.num_classes = self.condition_classes()
    self._cache = None

  # --- the frozen VQ-VAE ---------------------------------------------------------------------------

  def encode_codes(self, x):
    """Code grids of images ``x``: int32 ``[B, h, w]``."""
    return self.vq.encode_codes(self.vqvae.params, self.vqvae.state, x)

  def decode_codes(self, codes):
    """Model-space images (the VQ-VAE's decoder mean) of code grids ``[B, h, w]``."""
    return self.vq.decode_codes(self.vqvae.params, self.vqvae.state, codes)

  def code_cache(self) -> dict[str, jax.Array]:
    """The training split's codes, computed once: ``{"codes": int32 [N, h, w], ["label": [N]]}``."""
    if self._cache is None:
      encoded = pretrained.encode_training_split(self.config, jax.jit(self.encode_codes))
      self._cache = {"codes" if k == "z" else k: v for k, v in encoded.items()}
    return self._cache

  def _code_batch(self, codes, labels):
    """The PixelCNN's batch: codes as a ``[B, h, w, 1]`` image of ``K`` levels (+ labels)."""
    out = {"x": self.prior.to_model_space(codes[..., None])}
    if labels is not None:
      out["label"] = labels
    return out

  def prior_log_prob(self, params, codes, labels=None):
    """``log p_prior(codes)`` in nats, ``[B]``."""
    return self.prior.log_prob(params, self._code_batch(codes, labels))

  # --- the family contract -------------------------------------------------------------------------

  def init(self, rng, batch):
    codes = jnp.zeros((batch["x"].shape[0], *self.vq.grid), jnp.int32)
    params, _ = self.prior.init(rng, self._code_batch(codes, batch.get("label")))
    return params, {}

  def loss_on_codes(self, params, codes, labels=None):
    """The mean prior NLL of code grids ``[B, h, w]`` and its logged metrics."""
    nll = -self.prior_log_prob(params, codes, labels)
    return jnp.mean(nll), {"prior_nll_nats": jnp.mean(nll),
                           "prior_bits_per_code": jnp.mean(nll) / (math.log(2) * self.code_spec.dims)}

  def update_groups(self):
    cache = self.code_cache()

    def loss_fn(params, state, batch, rng):
      index = jax.random.randint(rng, batch["x"].shape[:1], 0, cache["codes"].shape[0])
      labels = cache["label"][index] if self.num_classes else None
      loss, metrics = self.loss_on_codes(params, cache["codes"][index], labels)
      return loss, (metrics, state)

    return [UpdateGroup("model", loss_fn)]

  def sample_codes(self, params, rng, num):
    """``num`` code grids ``int32 [num, h, w]`` drawn from the prior under ``config.sample``."""
    label_key, key = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.num_classes, label_key, num)
    return self.prior.generate_raw(params, key, labels, num)[..., 0]

  def sample(self, params, state, rng, num):
    """Codes from the prior, decoded by the VQ-VAE (its decoder mean), in model space."""
    return self.decode_codes(self.sample_codes(params, rng, num))

  def eval_metrics(self, params, state, batch, rng):
    """Per-example two-stage bound and its terms (module docstring)."""
    del rng
    x = batch["x"]
    codes = self.encode_codes(x)
    prior_nll = -self.prior_log_prob(params, codes, batch["label"] if self.num_classes else None)
    vq_params, vq_state = self.vqvae.params, self.vqvae.state
    recon = self.vq.raw_offset_nats() - self.vq.log_lik(vq_params, x, self.vq.codebook(vq_params, vq_state)[codes])
    bound = prior_nll + recon
    return {"nll_bound_nats": bound, "bits_per_dim": likelihood.nats_to_bits_per_dim(bound, self.spec.dims),
            "prior_nll_nats": prior_nll, "recon_nats": recon,
            "prior_bits_per_code": prior_nll / (math.log(2) * self.code_spec.dims),
            "uniform_prior_nats": jnp.full_like(prior_nll, self.vq.uniform_prior_nats())}
