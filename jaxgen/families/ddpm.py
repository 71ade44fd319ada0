"""DDPM: a denoising diffusion model trained with the simple loss, sampled by ancestral sampling,
DDIM, DPM-Solver++(2M) or the EDM Euler / Heun sampler.

Config: :meth:`DDPM.defaults` declares every ``config.model`` field and ``config.sample`` control,
each with a comment. Images are in [-1, 1] (``data.scale``): the U-Net, ``clip_denoised`` and the
discretized decoder assume it. Conditional models (``model.conditional``) train with label
dropout (the null class) for classifier-free guidance and sample class ``sample.label`` (-1: labels
drawn uniformly at random from the sample key). Held-out metrics: the variational bound
``nll_bound_nats`` and its ``bits_per_dim``, by term. The maths is in ``jaxgen.diffusion``.
Latent space (the interpolation evaluator): ``x_T``, decoded by DDIM with ``eta = 0``
(:meth:`DDPM.decode_latent`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import diffusion, ode, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Batch, Family, Metrics, Params, State, UpdateGroup
from jaxgen.nn.mlp_denoiser import MLPDenoiser
from jaxgen.nn.unet import UNet

#: ``sample.sampler`` values; ``ddpm`` always runs all ``T`` steps, the others ``sample.steps``.
SAMPLERS = ("ddpm", "ddim", "dpm_solver", "heun", "euler")
#: The time grid each ODE sampler uses with ``sample.grid="auto"`` (``diffusion.sampler_timesteps``).
AUTO_GRID = {"dpm_solver": "logsnr", "heun": "karras", "euler": "karras"}


def denoiser_defaults() -> dict:
  """``config.model`` fields of the denoiser network and its conditioning, shared by the families
  built on it (``ddpm``, ``flow_matching``)."""
  return {
      "network": "unet",  # unet (images) | mlp (points)
      "unet": {
          "channels": 32,  # base width; level i has channels * ch_mult[i]
          "ch_mult": (1, 2),  # one level per entry (8x8, 4x4 for digits)
          "num_res_blocks": 1,  # residual blocks per level going down (+1 going up)
          "attn_resolutions": (4,),  # self-attention at these feature-map sizes
          "num_heads": 1,
          "dropout": 0.0,
          "remat": False,  # recompute each block's activations in the backward pass (less memory)
      },
      "mlp": {"hidden": 128, "num_blocks": 3},  # the residual MLP denoiser (points)
      "conditional": False,  # class-conditional on batch["label"]
      "label_dropout": 0.1,  # classifier-free guidance: P(label -> null class) in training
  }


def build_denoiser(m: ml_collections.ConfigDict, spec: DataSpec, num_classes: int, dtype=None) -> nn.Module:
  """The network ``f(x, t[, label])`` named by ``model.network`` for data ``spec``; the U-Net computes
  in ``dtype`` (``train.compute_dtype``); the MLP denoiser only in float32 (another dtype is refused)."""
  if m.network == "unet":
    if spec.modality != "image":
      raise UserError(f"model.network='unet' needs images, {spec.name!r} is {spec.modality}; "
                      "use model.network='mlp'")
    return UNet(channels=m.unet.channels, ch_mult=tuple(m.unet.ch_mult),
                num_res_blocks=m.unet.num_res_blocks, attn_resolutions=tuple(m.unet.attn_resolutions),
                num_heads=m.unet.num_heads, dropout=m.unet.dropout, num_classes=num_classes, dtype=dtype,
                remat=m.unet.remat)
  if m.network == "mlp":
    if spec.modality != "points":
      raise UserError(f"model.network='mlp' is for points, {spec.name!r} is {spec.modality}; "
                      "use model.network='unet'")
    if dtype is not None and jnp.dtype(dtype) != jnp.float32:  # a run must not claim a precision it did not use
      raise UserError(f"train.compute_dtype={jnp.dtype(dtype).name} changes nothing in model.network='mlp' (the "
                      "MLP denoiser of points computes in float32); use --config.train.compute_dtype=float32")
    return MLPDenoiser(hidden=m.mlp.hidden, num_blocks=m.mlp.num_blocks, num_classes=num_classes)
  raise UserError(f"model.network={m.network!r} is unknown; use unet or mlp")


def check_guidance(family: Family, sample_config) -> None:
  """``UserError`` when guidance or a fixed label is asked of an unconditional model."""
  if not family.condition_classes() and (sample_config.guidance_scale != 0 or sample_config.label >= 0):
    raise UserError("sample.guidance_scale / sample.label need a class-conditional model; "
                    "train with --config.model.conditional=True or leave them at 0 / -1")


@FAMILIES.register("ddpm")
class DDPM(Family):
  """Networks: ``{"model": denoiser}``; one update group, the simple loss on eps or v."""

  objective = "denoising (variational bound)"
  mixed_precision = True  # the U-Net computes in train.compute_dtype

  networks = ("model",)
  latent_prior = "gaussian"  # x_T ~ N(0, I): interpolations are spherical

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            **denoiser_defaults(),
            "num_timesteps": 1000,  # T
            "schedule": "linear",  # linear | cosine (jaxgen.diffusion.betas_for)
            "prediction": "eps",  # what the network predicts: eps | v
            "variance": "small",  # reverse-process variance: small (posterior) | large (beta)
            "clip_denoised": True,  # clip the predicted x_0 to [-1, 1] (images) when sampling and in the bound
        },
        "sample": {
            "sampler": "ddim",  # ddpm (ancestral, all T steps) | ddim | dpm_solver | heun | euler
            "steps": 100,  # timesteps of ddim / dpm_solver / heun / euler (heun: 2 steps - 1 evaluations)
            "eta": 0.0,  # ddim: 0 deterministic, 1 = the ancestral noise level
            "grid": "auto",  # ODE samplers' timesteps: auto | uniform | karras | logsnr
            "rho": 7.0,  # the karras grid's exponent
            "guidance_scale": 0.0,  # classifier-free guidance w (conditional models)
            "label": -1,  # conditional models: -1 = uniformly random labels, k >= 0 = class k
        },
        # The bound: 0 = all T terms (~10x slower); K > 0 = a stratified, unbiased K-timestep estimate.
        "eval": {"bound_timesteps": 100},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m, s = config.model, config.sample
    for key, allowed in (("schedule", diffusion.SCHEDULES), ("prediction", diffusion.PREDICTIONS),
                         ("variance", diffusion.VARIANCES)):
      if m[key] not in allowed:
        raise UserError(f"model.{key}={m[key]!r} is unknown; use one of {allowed}")
    if s.sampler not in SAMPLERS:
      raise UserError(f"sample.sampler={s.sampler!r} is unknown; use one of {SAMPLERS}")
    if s.grid not in ("auto", *diffusion.GRIDS) or s.rho <= 0 or s.steps < 1 or s.eta < 0:
      raise UserError(f"sample.grid={s.grid!r}, sample.rho={s.rho}, sample.steps={s.steps}, "
                      f"sample.eta={s.eta}: use a grid of auto|{'|'.join(diffusion.GRIDS)}, "
                      "rho > 0, steps >= 1, eta >= 0")
    if s.sampler != "ddpm" and s.steps > m.num_timesteps:  # the samplers step through the T trained timesteps
      raise UserError(f"sample.steps={s.steps} must be in [1, model.num_timesteps={m.num_timesteps}] for "
                      f"sample.sampler={s.sampler}; set e.g. --config.sample.steps={min(50, m.num_timesteps)}")
    self.num_classes = self.condition_classes()
    self.conditional = self.num_classes > 0
    check_guidance(self, s)
    self.schedule = diffusion.make_schedule(m.schedule, m.num_timesteps)
    self.net = build_denoiser(m, spec, self.num_classes, self.compute_dtype)

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

  def training_inputs(self, batch: Batch, rng: jax.Array, train: bool):
    """``(x_t, t, label, target)`` of the simple loss: ``t`` uniform on ``0..T-1`` ``[B]``,
    ``x_t = q_sample(x_0, t, eps)``, the label (null class with probability
    ``model.label_dropout`` when training a conditional model; None if unconditional) and the
    regression target (eps or v)."""
    x0 = batch["x"]
    b = x0.shape[0]
    rng_t, rng_eps, rng_label = jax.random.split(rng, 3)
    t = jax.random.randint(rng_t, (b,), 0, self.schedule.num_timesteps)
    eps = jax.random.normal(rng_eps, x0.shape)
    xt = diffusion.q_sample(self.schedule, x0, t, eps)
    label = batch.get("label") if self.conditional else None
    if self.conditional and train:
      label = diffusion.drop_labels(rng_label, label, self.config.model.label_dropout, self.num_classes)
    target = diffusion.training_target(self.schedule, self.config.model.prediction, x0, t, eps)
    return xt, t, label, target

  def _simple_loss(self, params: Params, batch: Batch, rng: jax.Array, train: bool) -> jax.Array:
    """Per-example ``mean_dims |target - f(x_t, t)|^2`` at a uniform ``t`` ``[B]``."""
    rng_inputs, rng_drop = jax.random.split(rng)
    xt, t, label, target = self.training_inputs(batch, rng_inputs, train)
    out = self._apply(params, xt, t, label, train, rng_drop)
    return jnp.mean(jnp.square(out - target).reshape(xt.shape[0], -1), axis=-1)

  def update_groups(self) -> list[UpdateGroup]:
    def loss_fn(params, state, batch, rng):
      return jnp.mean(self._simple_loss(params, batch, rng, train=True)), ({}, state)

    return [UpdateGroup("model", loss_fn)]

  # ---- sampling -----------------------------------------------------------------------------

  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    m, s = self.config.model, self.config.sample
    shape = (num, *self.spec.shape)
    label = sampling.labels_from_config(s, self.num_classes, jax.random.fold_in(rng, 1), num)
    model_fn = self._sampling_model_fn(params, label)
    clip, sched, steps, grid = bool(m.clip_denoised), self.schedule, int(s.steps), self._grid()
    if s.sampler == "ddpm":
      return diffusion.ddpm_sample(sched, model_fn, rng, shape, m.prediction, m.variance, clip)
    if s.sampler == "ddim":
      return diffusion.ddim_sample(sched, model_fn, rng, shape, steps, float(s.eta), m.prediction,
                                   clip)
    noise = jax.random.normal(rng, shape)
    if s.sampler == "dpm_solver":
      return diffusion.dpm_solver_sample(sched, model_fn, noise, steps, m.prediction, clip, grid,
                                         float(s.rho))
    return diffusion.ode_sample(sched, model_fn, noise, steps, s.sampler, m.prediction, clip, grid,
                                float(s.rho))

  def _sampling_model_fn(self, params: Params, label) -> diffusion.ModelFn:
    """``model_fn(x_t, t)`` of the samplers: guided towards ``label [B]`` (``sample.guidance_scale``)
    when conditional, else the plain denoiser."""
    if self.conditional:
      return diffusion.guided(lambda x, t, c: self._apply(params, x, t, c), label, self.num_classes,
                              float(self.config.sample.guidance_scale))
    return self._model_fn(params, None)

  # ---- latent space (the interpolation evaluator) -------------------------------------------

  def sample_latent(self, rng: jax.Array, num: int) -> jax.Array:
    """``x_T ~ N(0, I)`` ``[num, *shape]``: the noise the samplers start from."""
    return jax.random.normal(rng, (num, *self.spec.shape))

  def decode_latent(self, params: Params, state: State, z: jax.Array, label=None) -> jax.Array:
    """DDIM with ``eta = 0`` from ``x_T = z [B, *shape]`` over ``sample.steps`` timesteps, whatever
    ``sample.sampler`` is: the deterministic latent -> data map, equal to :meth:`sample` with
    ``sampler=ddim, eta=0`` from the same ``x_T``. ``label [B]`` is required by conditional models
    (guided as in :meth:`sample`)."""
    m = self.config.model
    return diffusion.ddim_from(self.schedule, self._sampling_model_fn(params, label), z, jax.random.key(0),
                               int(self.config.sample.steps), 0.0, m.prediction, bool(m.clip_denoised))

  def _grid(self) -> str:
    s = self.config.sample
    return AUTO_GRID.get(s.sampler, "uniform") if s.grid == "auto" else s.grid

  def num_evaluations(self) -> int:
    """Network evaluations of the configured sampler per sample (one batched call with guidance)."""
    s, num_t = self.config.sample, self.schedule.num_timesteps
    if s.sampler == "ddpm":
      return num_t
    if s.sampler == "ddim":
      return len(diffusion.ddim_timesteps(num_t, int(s.steps)))
    n = len(diffusion.sampler_timesteps(self.schedule, int(s.steps), self._grid(), float(s.rho)))
    return n if s.sampler == "dpm_solver" else ode.num_evaluations(s.sampler, n, euler_last=True)

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
    label = batch.get("label") if self.conditional else None
    terms = diffusion.variational_bound(
        self.schedule, self._model_fn(params, label), x0, rng_bound, m.prediction,
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
