"""DDPM: a denoising diffusion model trained with the simple loss, sampled by DDPM or DDIM.

Config (``config.model``): ``network`` (``unet`` for images, ``mlp`` for points) and its size,
``num_timesteps``, ``schedule`` (linear | cosine), ``prediction`` (eps | v), ``variance`` of the
reverse process (small = posterior variance | large = beta), ``clip_denoised`` (clip the predicted
``x_0`` to [-1, 1] when sampling and in the bound), ``class_conditional`` with ``label_dropout``.
Sampling (``config.sample``): ``sampler`` (ddpm | ddim), ``steps`` and ``eta`` (ddim),
``guidance_scale`` (classifier-free guidance, conditional models), ``label`` (-1: cycle through
the classes). Evaluation (``config.eval``): ``bound_timesteps`` (0: all T terms, else an unbiased
estimate from that many random timesteps).
The maths is in ``jaxgen.diffusion``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import diffusion
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Batch, Family, Metrics, Params, State, UpdateGroup
from jaxgen.nn.mlp_denoiser import MLPDenoiser
from jaxgen.nn.unet import UNet


@FAMILIES.register("ddpm")
class DDPM(Family):
  """Networks: ``{"model": denoiser}``; one update group, the simple loss on eps or v."""

  networks = ("model",)

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m, s = config.model, config.sample
    for key, allowed in (("schedule", diffusion.SCHEDULES), ("prediction", diffusion.PREDICTIONS),
                         ("variance", diffusion.VARIANCES)):
      if m[key] not in allowed:
        raise UserError(f"model.{key}={m[key]!r} is unknown; use one of {allowed}")
    if s.sampler not in ("ddpm", "ddim"):
      raise UserError(f"sample.sampler={s.sampler!r} is unknown; use ddpm or ddim")
    self.num_classes = self.condition_classes("class_conditional")
    self.conditional = self.num_classes > 0
    if not self.conditional and (s.guidance_scale != 0 or s.label >= 0):
      raise UserError("sample.guidance_scale / sample.label need a class-conditional model; "
                      "train with --config.model.class_conditional=True or leave them at 0 / -1")
    if s.label >= spec.num_classes > 0:
      raise UserError(f"sample.label={s.label} but {spec.name!r} has {spec.num_classes} classes")
    self.schedule = diffusion.make_schedule(m.schedule, m.num_timesteps)
    self.net = self._network()

  def _network(self):
    m = self.config.model
    if m.network == "unet":
      if self.spec.modality != "image":
        raise UserError(f"model.network='unet' needs images, {self.spec.name!r} is "
                        f"{self.spec.modality}; use model.network='mlp'")
      return UNet(channels=m.unet.channels, ch_mult=tuple(m.unet.ch_mult),
                  num_res_blocks=m.unet.num_res_blocks,
                  attn_resolutions=tuple(m.unet.attn_resolutions), num_heads=m.unet.num_heads,
                  dropout=m.unet.dropout, num_classes=self.num_classes)
    if m.network == "mlp":
      if self.spec.modality != "points":
        raise UserError(f"model.network='mlp' is for points, {self.spec.name!r} is "
                        f"{self.spec.modality}; use model.network='unet'")
      return MLPDenoiser(hidden=m.mlp.hidden, num_blocks=m.mlp.num_blocks,
                         num_classes=self.num_classes)
    raise UserError(f"model.network={m.network!r} is unknown; use unet or mlp")

  # ---- the denoiser -------------------------------------------------------------------------

  def _apply(self, params: Params, x, t, label, train: bool = False, rng=None):
    rngs = {"dropout": rng} if train else {}
    return self.net.apply({"params": params["model"]}, x, t,
                          label if self.conditional else None, train, rngs=rngs)

  def _model_fn(self, params: Params, label) -> diffusion.ModelFn:
    """``model_fn(x_t, t)`` conditioned on ``label`` (unguided), for the bound."""
    return lambda x, t: self._apply(params, x, t, label)

  def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, State]:
    x = jnp.asarray(batch["x"][:1], jnp.float32)
    label = jnp.zeros((1,), jnp.int32)
    variables = self.net.init({"params": rng}, x, jnp.zeros((1,), jnp.int32),
                              label if self.conditional else None)
    return {"model": variables["params"]}, {}

  # ---- training -----------------------------------------------------------------------------

  def _simple_loss(self, params: Params, batch: Batch, rng: jax.Array, train: bool) -> jax.Array:
    """Per-example ``mean_dims |target - f(x_t, t)|^2`` at a uniform ``t`` ``[B]``."""
    x0 = batch["x"]
    b = x0.shape[0]
    rng_t, rng_eps, rng_drop, rng_label = jax.random.split(rng, 4)
    t = jax.random.randint(rng_t, (b,), 0, self.schedule.num_timesteps)
    eps = jax.random.normal(rng_eps, x0.shape)
    xt = diffusion.q_sample(self.schedule, x0, t, eps)
    label = batch.get("label") if self.conditional else None
    if self.conditional and train:
      drop = jax.random.uniform(rng_label, (b,)) < self.config.model.label_dropout
      label = jnp.where(drop, self.num_classes, label)
    out = self._apply(params, xt, t, label, train, rng_drop)
    target = diffusion.training_target(self.schedule, self.config.model.prediction, x0, t, eps)
    return jnp.mean(jnp.square(out - target).reshape(b, -1), axis=-1)

  def update_groups(self) -> list[UpdateGroup]:
    def loss_fn(params, state, batch, rng):
      return jnp.mean(self._simple_loss(params, batch, rng, train=True)), ({}, state)

    return [UpdateGroup("model", loss_fn)]

  # ---- sampling -----------------------------------------------------------------------------

  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    m, s = self.config.model, self.config.sample
    shape = (num, *self.spec.shape)
    if self.conditional:
      label = (jnp.arange(num, dtype=jnp.int32) % self.num_classes if s.label < 0
               else jnp.full((num,), s.label, jnp.int32))
      model_fn = diffusion.guided(lambda x, t, c: self._apply(params, x, t, c), label,
                                  self.num_classes, float(s.guidance_scale))
    else:
      model_fn = self._model_fn(params, None)
    clip = bool(m.clip_denoised)
    if s.sampler == "ddpm":
      return diffusion.ddpm_sample(self.schedule, model_fn, rng, shape, m.prediction, m.variance,
                                   clip)
    return diffusion.ddim_sample(self.schedule, model_fn, rng, shape, int(s.steps),
                                 float(s.eta), m.prediction, clip)

  # ---- evaluation ---------------------------------------------------------------------------

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-example ``[B]``: the simple loss and the variational bound, total and by term.

    Bits/dim are nats / (D ln 2). Images on their discrete grid (no dequantization) use the
    discretized decoder, so the bound is on the raw discrete data directly; dequantized images use
    a Gaussian decoder density plus ``likelihood.model_space_offset_nats`` (added to the decoder
    term); points are continuous (no offset). Conditional models report the bound of p(x | label).
    """
    m, ev = self.config.model, self.config.eval
    rng_loss, rng_bound = jax.random.split(rng)
    x0 = batch["x"]
    discrete = self.spec.modality == "image" and self.spec.levels > 1 and not self.spec.dequantized
    terms = diffusion.variational_bound(
        self.schedule, self._model_fn(params, batch.get("label")), x0, rng_bound, m.prediction,
        m.variance, bool(m.clip_denoised), levels=self.spec.levels if discrete else 0,
        value_range=tuple(self.spec.value_range), num_terms=int(ev.bound_timesteps))
    if not discrete:
      terms["decoder"] = terms["decoder"] + likelihood.model_space_offset_nats(self.spec)
    total = terms["prior"] + terms["diffusion"] + terms["decoder"]
    bpd = lambda nats: likelihood.nats_to_bits_per_dim(nats, self.spec.dims)
    return {
        "model/loss": self._simple_loss(params, batch, rng_loss, train=False),
        "nll_bound_nats": total,
        "bits_per_dim": bpd(total),
        "bpd_prior": bpd(terms["prior"]),
        "bpd_diffusion": bpd(terms["diffusion"]),
        "bpd_decoder": bpd(terms["decoder"]),
    }
