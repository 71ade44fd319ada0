"""Latent diffusion (Rombach et al. 2022): DDPM or flow matching in the latent space of a trained,
frozen autoencoder, samples decoded to data.

The autoencoder is the run in ``model.autoencoder_workdir`` (a ``vae``; another family is refused),
rebuilt from its ``config.json`` with the EMA parameters of its latest checkpoint
(:mod:`jaxgen.pretrained`, read-only). Its parameters are constants here, never trained. Its
``encode(params, x, label) -> (mean, log_std)`` of ``q(z | x)`` and ``decode_mean(params, z, label)
-> x`` in model space are used; it must be unconditional.

Latents. When training starts, the whole training split is encoded once and cached in memory
(posterior means and log-stds, ``[N, *latent_shape]``). Each step draws a batch of cached examples
uniformly from the step's key (the data batch then sets only the batch size) and a posterior
sample ``z = mean + std * eps`` (as Rombach et al. train on KL-regularised autoencoders).
Scaling (Rombach et al., sec. 4.3.2 and their ``scale_by_std``): the diffusion model sees
``z * scale`` with ``scale = 1 / std`` of the latents of the first training batch (or
``model.scale_factor`` when > 0), so they have unit variance like its ``N(0, I)`` prior; the scale
is non-gradient state (checkpointed: sampling and evaluation use the training value).

The diffusion model is the family ``model.diffusion`` (``ddpm`` | ``flow_matching``) built for
the latent data (vectors ``[L]`` as points for ``model.network="mlp"``, grids ``[h, w, c]`` as
images for ``"unet"``) from the same ``config.model`` and ``config.sample`` fields; its network is
the only trained one. ``clip_denoised`` is off by default: latents are not confined to [-1, 1].

Sampling: a latent sample ``/ scale``, decoded, clipped to the data range. Held-out metrics: the
diffusion model's on the scaled posterior samples of the batch, prefixed ``latent_``
(``latent_nll_bound_nats`` or ``latent_nll_nats``, ``latent_bits_per_dim`` per latent dimension):
a likelihood of the latents, not of the data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import pretrained
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, Batch, Family, Metrics, Params, State, UpdateGroup
from jaxgen.families.ddpm import DDPM
from jaxgen.families.flow_matching import FlowMatching

DIFFUSIONS = {"ddpm": DDPM, "flow_matching": FlowMatching}


@FAMILIES.register("latent_diffusion")
class LatentDiffusion(Family):
  """Networks: ``{"model": the latent diffusion model's network}``; state: the latent scale."""

  objective = "latent denoising"

  networks = ("model",)

  @classmethod
  def defaults(cls) -> dict:
    ddpm, flow = DDPM.defaults(), FlowMatching.defaults()
    return {
        "model": {
            **ddpm["model"], **flow["model"],
            "autoencoder_workdir": "",  # workdir of the trained autoencoder (e.g. configs/vae.py's)
            "diffusion": "ddpm",  # the model of the latents: ddpm | flow_matching
            "scale_factor": 0.0,  # latents are multiplied by it; 0 = 1 / std of the first batch
            "network": "mlp",  # mlp (vector latents) | unet (latent grids [h, w, c])
            "clip_denoised": False,  # ddpm: latents are not confined to [-1, 1]
        },
        "sample": {**ddpm["sample"], **flow["sample"], "sampler": "heun", "steps": 32},
        "eval": {**ddpm["eval"], **flow["eval"]},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m = config.model
    if m.diffusion not in DIFFUSIONS:
      raise UserError(f"model.diffusion={m.diffusion!r} is unknown; use one of {tuple(DIFFUSIONS)}")
    if m.reflow_from:
      raise UserError("model.reflow_from is not available in latent diffusion; leave it empty")
    if m.scale_factor < 0:
      raise UserError(f"model.scale_factor={m.scale_factor} must be >= 0 (0 = 1 / std of the latents)")
    self.autoencoder = pretrained.load(m.autoencoder_workdir, spec, config.data,
                                       "model.autoencoder_workdir", family="vae")  # its Gaussian encoder
    if self.autoencoder.config.model.get("conditional", False):
      raise UserError(f"model.autoencoder_workdir={m.autoencoder_workdir!r} holds a conditional "
                      "autoencoder; latent diffusion needs an unconditional one")
    example = jax.ShapeDtypeStruct((1, *spec.shape), jnp.float32)
    latent = jax.eval_shape(lambda x: self._encode(x)[0], example)
    self.latent_spec = DataSpec(name=f"latents of {m.autoencoder_workdir}",
                                modality="points" if latent.ndim == 2 else "image",
                                shape=tuple(latent.shape[1:]), num_classes=spec.num_classes)
    self.diffusion = DIFFUSIONS[m.diffusion](config, self.latent_spec)
    self._cache = None

  # ---- the frozen autoencoder ---------------------------------------------------------------

  def _encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean, log_std)`` of the VAE's ``q(z | x)``."""
    ae = self.autoencoder
    return ae.family.encode(ae.params, x, None)

  @staticmethod
  def _posterior_sample(mean, log_std, rng):
    return mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)

  def decode(self, z: jax.Array) -> jax.Array:
    """Latents (unscaled) ``[B, *latent_shape]`` -> data in model space, clipped to its range."""
    ae = self.autoencoder
    x = ae.family.decode_mean(ae.params, z, None)
    return jnp.clip(x, *self.spec.value_range) if self.spec.modality == "image" else x

  def latent_cache(self) -> dict:
    """The training split encoded once: ``{"z": (mean, log_std), ["label"]}``, ``[N, ...]``
    arrays (``pretrained.encode_training_split``)."""
    if self._cache is None:
      self._cache = pretrained.encode_training_split(self.config, jax.jit(self._encode))
    return self._cache

  # ---- the family contract ------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, State]:
    rng_init, rng_z = jax.random.split(rng)
    scale = jnp.asarray(self.config.model.scale_factor, jnp.float32)
    if self.config.model.scale_factor == 0:
      scale = 1.0 / jnp.std(self._posterior_sample(*self._encode(batch["x"]), rng_z))
    params, _ = self.diffusion.init(rng_init, self._latent_batch(batch, rng_z, scale))
    return params, {"model": {"latent": {"scale": scale}}}

  def _latent_batch(self, batch: Batch, rng: jax.Array, scale: jax.Array) -> Batch:
    """``batch`` with ``x`` replaced by its scaled latents (a posterior sample)."""
    z = self._posterior_sample(*self._encode(batch["x"]), rng) * scale
    return {**batch, "x": z}

  def update_groups(self) -> list[UpdateGroup]:
    cache = self.latent_cache()
    (inner,) = self.diffusion.update_groups()

    def loss_fn(params, state, batch, rng):
      rng_index, rng_z, rng_inner = jax.random.split(rng, 3)
      index = jax.random.randint(rng_index, batch["x"].shape[:1], 0, cache["z"][0].shape[0])
      picked = jax.tree.map(lambda a: a[index], cache)
      z = self._posterior_sample(*picked["z"], rng_z)
      latent = {"x": z * state["model"]["latent"]["scale"]}
      if "label" in picked:
        latent["label"] = picked["label"]
      loss, (metrics, _) = inner.loss_fn(params, {}, latent, rng_inner)
      return loss, (metrics, state)

    return [UpdateGroup("model", loss_fn)]

  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    z = self.diffusion.sample(params, {}, rng, num)
    return self.decode(z / state["model"]["latent"]["scale"])

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """The diffusion model's held-out metrics on the batch's scaled latents, ``latent_``-prefixed
    (its ``model/loss`` as it is)."""
    rng_z, rng_inner = jax.random.split(rng)
    latent = self._latent_batch(batch, rng_z, state["model"]["latent"]["scale"])
    metrics = self.diffusion.eval_metrics(params, {}, latent, rng_inner)
    return {k if k.startswith("model/") else f"latent_{k}": v for k, v in metrics.items()}
