"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024).

Path. Data ``x_0`` at ``t = 0``, noise ``eps ~ N(0, I)`` at ``t = 1``:
``x_t = alpha_t x_0 + sigma_t eps`` (``model.path``):

* ``linear`` (rectified flow, the conditional optimal-transport path): ``alpha = 1 - t``,
  ``sigma = t``;
* ``vp`` (variance preserving, trigonometric): ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``.
  Every path with ``alpha^2 + sigma^2 = 1`` (Lipman et al.'s VP path from the VP-SDE schedule
  included) is this one with time reparameterised, so it has the same trajectories.

Training (velocity prediction): the network ``v(x_t, t)`` regresses the conditional velocity
``u_t = alpha'_t x_0 + sigma'_t eps``; the loss is ``mean_b mean_dims |v(x_t, t) - u_t|^2``, whose
minimiser is the marginal velocity ``E[u_t | x_t]``. Times are uniform on (0, 1) or logit-normal,
``t = sigmoid(m + s n)``, ``n ~ N(0, 1)`` (``model.time_sampling``; Esser et al. 2024). The network
sees ``1000 t`` (the timestep scale of its sinusoidal embedding, as DDPM's ``t``).

Sampling: ``x_1 ~ N(0, I)``, then ``dx/dt = v(x, t)`` from ``t = 1`` to 0 with Euler or Heun on
``sample.steps`` uniform steps (``jaxgen.ode``); classifier-free guidance as DDPM's
(``(1 + w) v(x, t, c) - w v(x, t, null)``). Images are clipped to their value range.

Likelihood: the exact log-density through the ODE from ``t = 0`` to 1 (``ode.log_likelihood``)
with ``eval.ode_steps`` steps of ``eval.ode_method``, the divergence exact (``eval.trace``;
``auto``: for data of at most 2 dimensions) or by Hutchinson's estimator (unbiased). Reported as
``nll_nats`` of the raw data: model-space NLL plus ``likelihood.model_space_offset_nats`` (the
dequantization offset of dequantized images, so a bound on the discrete likelihood; for images
without dequantization a density on the grid points, comparable only as such), and ``bits_per_dim``.

Reflow (Liu et al. 2023): with ``model.reflow_from`` naming the workdir of a trained
``flow_matching`` run, training starts from its EMA weights and trains on ``model.reflow_pairs``
(noise, sample) pairs drawn once from it (its ODE with ``model.reflow_steps`` steps of
``model.reflow_sampler``), cached for the run: ``x_0`` = the sample, ``eps`` = its noise. This
straightens the paths, so few steps suffice. The data batches then set only the batch size.
The teacher is loaded by ``update_groups`` (training) only: a reflowed run samples and evaluates
from its own checkpoint, without its teacher's workdir.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import diffusion, ode, pretrained, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Batch, Family, Metrics, Params, State, UpdateGroup
from jaxgen.families.ddpm import build_denoiser, check_guidance, denoiser_defaults

PATHS = ("linear", "vp")
TIME_SAMPLINGS = ("uniform", "logit_normal")
#: The network's time input is ``TIME_SCALE * t``: the range of DDPM's integer timesteps.
TIME_SCALE = 1000.0
#: ``fold_in(key(seed), REFLOW_STREAM)`` draws the reflow pairs (the trainer's streams are 0..4).
REFLOW_STREAM = 100
#: Reflow pairs are drawn this many at a time.
REFLOW_CHUNK = 1000


def path_coefficients(path: str, t: jax.Array):
  """``(alpha_t, sigma_t, alpha'_t, sigma'_t)`` of the path, each shaped like ``t``."""
  if path == "linear":
    return 1.0 - t, t, -jnp.ones_like(t), jnp.ones_like(t)
  if path == "vp":
    angle = 0.5 * math.pi * t
    return (jnp.cos(angle), jnp.sin(angle), -0.5 * math.pi * jnp.sin(angle),
            0.5 * math.pi * jnp.cos(angle))
  raise UserError(f"model.path={path!r} is unknown; use one of {PATHS}")


def sample_time(rng: jax.Array, n: int, kind: str, mean: float = 0.0, std: float = 1.0) -> jax.Array:
  """``n`` training times in (0, 1): ``uniform`` or ``logit_normal`` (``sigmoid(mean + std n)``)."""
  if kind == "uniform":
    return jax.random.uniform(rng, (n,))
  if kind == "logit_normal":
    return jax.nn.sigmoid(mean + std * jax.random.normal(rng, (n,)))
  raise UserError(f"model.time_sampling={kind!r} is unknown; use one of {TIME_SAMPLINGS}")


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


@FAMILIES.register("flow_matching")
class FlowMatching(Family):
  """Networks: ``{"model": velocity network}`` (the DDPM U-Net / MLP denoiser); one update group."""

  objective = "flow matching (velocity regression)"
  mixed_precision = True  # the U-Net computes in train.compute_dtype

  networks = ("model",)

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            **denoiser_defaults(),
            "path": "linear",  # linear (rectified flow) | vp (trigonometric)
            "time_sampling": "logit_normal",  # training times: uniform | logit_normal
            "logit_mean": 0.0,  # logit_normal: t = sigmoid(logit_mean + logit_std * n)
            "logit_std": 1.0,
            "reflow_from": "",  # workdir of a trained flow_matching run to reflow ("" = off)
            "reflow_pairs": 10000,  # (noise, sample) pairs drawn once from it
            "reflow_steps": 100,  # its ODE steps per pair
            "reflow_sampler": "heun",  # euler | heun
        },
        "sample": {
            "sampler": "heun",  # euler | heun (2 network evaluations per step)
            "steps": 32,  # uniform steps from t = 1 to 0
            "guidance_scale": 0.0,  # classifier-free guidance w (conditional models)
            "label": -1,  # conditional models: -1 = uniformly random labels, k >= 0 = class k
        },
        "eval": {
            "ode_steps": 32,  # steps of the likelihood ODE from t = 0 to 1
            "ode_method": "heun",  # euler | heun
            "trace": "auto",  # divergence: auto (exact for <= 2 dims) | exact | hutchinson
        },
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m, s, ev = config.model, config.sample, config.eval
    if m.path not in PATHS or m.time_sampling not in TIME_SAMPLINGS or m.logit_std <= 0:
      raise UserError(f"model.path={m.path!r}, model.time_sampling={m.time_sampling!r}, "
                      f"model.logit_std={m.logit_std}: use a path of {PATHS}, a time sampling of "
                      f"{TIME_SAMPLINGS} and logit_std > 0")
    for key, value in (("sample.sampler", s.sampler), ("model.reflow_sampler", m.reflow_sampler),
                       ("eval.ode_method", ev.ode_method)):
      if value not in ode.METHODS:
        raise UserError(f"{key}={value!r} is unknown; use one of {ode.METHODS}")
    for key, value in (("sample.steps", s.steps), ("model.reflow_steps", m.reflow_steps),
                       ("model.reflow_pairs", m.reflow_pairs), ("eval.ode_steps", ev.ode_steps)):
      if value < 1:
        raise UserError(f"{key}={value} must be at least 1")
    if ev.trace not in ("auto", *ode.TRACES):
      raise UserError(f"eval.trace={ev.trace!r} is unknown; use auto or one of {ode.TRACES}")
    self.num_classes = self.condition_classes()
    self.conditional = self.num_classes > 0
    check_guidance(self, s)
    self.net = build_denoiser(m, spec, self.num_classes, self.compute_dtype)
    self.teacher: pretrained.Pretrained | None = None  # loaded by update_groups, not in a trace
    self._pairs = None

  # ---- the velocity network -----------------------------------------------------------------

  def _apply(self, params: Params, x, t, label, train: bool = False, rng=None):
    """``v(x, t[, label])`` for ``t`` ``[B]`` in [0, 1]."""
    rngs = {"dropout": rng} if train else {}
    return self.net.apply({"params": params["model"]}, x, TIME_SCALE * t,
                          label if self.conditional else None, train, rngs=rngs)

  def velocity(self, params: Params, label=None, guidance: float = 0.0) -> ode.VectorField:
    """``f(x, t)`` for a scalar ``t``: the (guided) velocity field the ODEs integrate."""
    if self.conditional and label is not None:
      fn = diffusion.guided(lambda x, t, c: self._apply(params, x, t, c), label, self.num_classes,
                            guidance)
    else:
      fn = lambda x, t: self._apply(params, x, t, None)
    return lambda x, t: fn(x, jnp.full(x.shape[:1], t, jnp.float32))

  def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, State]:
    if self.teacher is not None:  # reflow: Liu et al.'s k-rectified flow starts from its teacher
      return {"model": self.teacher.params["model"]}, {}
    x = jnp.asarray(batch["x"][:1], jnp.float32)
    label = jnp.zeros((1,), jnp.int32) if self.conditional else None
    return {"model": self.net.init({"params": rng}, x, jnp.zeros((1,)), label)["params"]}, {}

  # ---- training -----------------------------------------------------------------------------

  def draws(self, batch: Batch, rng: jax.Array, train: bool):
    """``(t [B], eps [B, ...], label)`` of the loss: times by ``model.time_sampling``, the noise
    (``batch["noise"]`` when the batch carries it: reflow pairs), the label with label dropout
    when training a conditional model (None if unconditional)."""
    m = self.config.model
    x0 = batch["x"]
    rng_t, rng_eps, rng_label = jax.random.split(rng, 3)
    t = sample_time(rng_t, x0.shape[0], m.time_sampling, m.logit_mean, m.logit_std)
    eps = batch["noise"] if "noise" in batch else jax.random.normal(rng_eps, x0.shape)
    label = batch.get("label") if self.conditional else None
    if self.conditional and train:
      label = diffusion.drop_labels(rng_label, label, m.label_dropout, self.num_classes)
    return t, eps, label

  def per_example_loss(self, params: Params, batch: Batch, rng: jax.Array, train: bool) -> jax.Array:
    """``mean_dims |v(x_t, t) - (alpha'_t x_0 + sigma'_t eps)|^2`` ``[B]``; ``rng`` splits into
    (``draws``, dropout)."""
    rng_draws, rng_drop = jax.random.split(rng)
    t, eps, label = self.draws(batch, rng_draws, train)
    x0 = batch["x"]
    alpha, sigma, d_alpha, d_sigma = (_bcast(c, x0) for c in path_coefficients(self.config.model.path, t))
    out = self._apply(params, alpha * x0 + sigma * eps, t, label, train, rng_drop)
    target = d_alpha * x0 + d_sigma * eps
    return jnp.mean(jnp.square(out - target).reshape(x0.shape[0], -1), axis=-1)

  def update_groups(self) -> list[UpdateGroup]:
    """The one update; with ``model.reflow_from``, first loads the teacher (``init`` then returns
    its EMA weights) and draws its pairs."""
    if self.config.model.reflow_from and self.teacher is None:
      self.teacher = self._load_teacher()
    pairs = self._reflow_pairs() if self.teacher is not None else None

    def loss_fn(params, state, batch, rng):
      if pairs is not None:
        rng, rng_index = jax.random.split(rng)
        index = jax.random.randint(rng_index, batch["x"].shape[:1], 0, pairs["x"].shape[0])
        batch = jax.tree.map(lambda a: a[index], pairs)
      return jnp.mean(self.per_example_loss(params, batch, rng, train=True)), ({}, state)

    return [UpdateGroup("model", loss_fn)]

  # ---- reflow -------------------------------------------------------------------------------

  def _load_teacher(self) -> pretrained.Pretrained:
    m = self.config.model
    teacher = pretrained.load(m.reflow_from, self.spec, self.config.data, "model.reflow_from",
                              "flow_matching")
    differ = [k for k in ("network", "unet", "mlp", "conditional", "path") if m[k] != teacher.config.model[k]]
    if differ:
      raise UserError(f"model.reflow_from={m.reflow_from!r} has other model.{', model.'.join(differ)}; "
                      "reflow keeps the teacher's network: set the same fields here")
    return teacher

  def _reflow_pairs(self) -> dict[str, jax.Array]:
    """``{"x": samples, "noise": their noise[, "label"]}``, drawn once (deterministic in the seed)."""
    if self._pairs is None:
      m, teacher = self.config.model, self.teacher
      rng = jax.random.fold_in(jax.random.key(self.config.seed), REFLOW_STREAM)
      noise = jax.random.normal(rng, (m.reflow_pairs, *self.spec.shape))
      labels = sampling.labels_from_config({"label": -1}, self.num_classes,
                                           jax.random.fold_in(rng, 1), m.reflow_pairs)
      draw = jax.jit(lambda p, z, c: teacher.family.transport(p, z, c, m.reflow_sampler,
                                                              m.reflow_steps))
      xs = [draw(teacher.params, noise[i:i + REFLOW_CHUNK],
                 None if labels is None else labels[i:i + REFLOW_CHUNK])
            for i in range(0, m.reflow_pairs, REFLOW_CHUNK)]
      self._pairs = {"x": jnp.concatenate(xs), "noise": noise}
      if labels is not None:
        self._pairs["label"] = labels
    return self._pairs

  # ---- sampling -----------------------------------------------------------------------------

  def transport(self, params: Params, noise: jax.Array, label, method: str, steps: int,
                guidance: float = 0.0) -> jax.Array:
    """``x_0`` from ``x_1 = noise``: ``steps`` uniform steps of ``method`` from ``t = 1`` to 0."""
    return ode.solve(self.velocity(params, label, guidance), noise,
                     jnp.linspace(1.0, 0.0, steps + 1), method)

  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    s = self.config.sample
    label = sampling.labels_from_config(s, self.num_classes, jax.random.fold_in(rng, 1), num)
    x = self.transport(params, jax.random.normal(rng, (num, *self.spec.shape)), label, s.sampler,
                       int(s.steps), float(s.guidance_scale))
    if self.spec.modality == "image" and self.spec.levels > 0:
      x = jnp.clip(x, *self.spec.value_range)
    return x

  def num_evaluations(self) -> int:
    """Network evaluations of the configured sampler per sample (one batched call with guidance)."""
    return ode.num_evaluations(self.config.sample.sampler, int(self.config.sample.steps))

  # ---- evaluation ---------------------------------------------------------------------------

  def log_prob(self, params: Params, x: jax.Array, label, rng: jax.Array) -> jax.Array:
    """Model-space ``log p(x)`` (``log p(x | label)`` if conditional) ``[B]`` through the ODE."""
    ev = self.config.eval
    trace = ("exact" if self.spec.dims <= 2 else "hutchinson") if ev.trace == "auto" else ev.trace
    return ode.log_likelihood(self.velocity(params, label), x,
                              jnp.asarray(np.linspace(0.0, 1.0, ev.ode_steps + 1)),
                              ode.standard_normal_log_prob, ev.ode_method, trace, rng)

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-example ``[B]``: the loss, ``nll_nats`` of the raw data and ``bits_per_dim``."""
    rng_loss, rng_ll = jax.random.split(rng)
    label = batch.get("label") if self.conditional else None
    nll = -self.log_prob(params, batch["x"], label, rng_ll)
    return {
        "model/loss": self.per_example_loss(params, batch, rng_loss, train=False),
        "nll_nats": nll + likelihood.model_space_offset_nats(self.spec),
        "bits_per_dim": likelihood.continuous_nll_to_bits_per_dim(nll, self.spec),
    }
