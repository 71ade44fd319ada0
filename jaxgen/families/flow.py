"""Normalizing flows: RealNVP and Glow on images, a small coupling flow on 2-D points.

A flow is a bijection ``f`` from data ``x`` to a latent ``z = f(x)`` of the same size, with base
density ``N(0, I)``; the change of variables gives the exact log-likelihood

    log p(x) = log N(f(x); 0, I) + log|det df/dx|.

Training minimises the mean model-space NLL ``-log p(x)`` in nats. Images must be uniformly
dequantized (``data.dequantize=True``): then ``NLL + D log(levels / (hi - lo))`` bounds the NLL of
the raw integers, reported in bits/dim (:mod:`jaxgen.evaluation.likelihood`). Sampling inverts the
flow on ``z ~ N(0, T^2 I)`` with ``T = config.sample.temperature`` (Glow's reduced-temperature
sampling for ``T < 1``). The interpolation evaluator decodes slerp paths between such latents
(``sample_latent`` / ``decode_latent`` = ``f^{-1}``; ``forward`` is ``f``).

Registered families (layers in :mod:`jaxgen.nn.bijectors`):

* ``realnvp`` (Dinh et al. 2017): per scale, ``couplings`` checkerboard affine couplings, squeeze,
  ``couplings`` channel couplings, factor out half the channels; the last scale has
  ``couplings + 1`` checkerboard couplings. Optional logit pre-transform (``model.logit_alpha``).
* ``glow`` (Kingma & Dhariwal 2018): per level, squeeze then ``steps_per_level`` steps of
  actnorm -> invertible 1x1 convolution (LU) -> channel affine coupling, then factor out half the
  channels (all levels but the last). Factored-out halves use the N(0, I) base (RealNVP-style), not
  Glow's learned conditional prior.
* ``flow2d``: for ``toy2d/*`` points, ``num_layers`` x (actnorm -> MLP affine coupling with
  alternating halves). Points have no raw grid, so its ``nll_nats`` is the exact ``-log p(x)`` of
  each point (what the ``density_plot`` evaluator draws on a grid).

Held-out metrics (``eval_metrics``, per example): ``nll_nats`` (exact) and ``bits_per_dim``.
"""

from __future__ import annotations

import abc

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn import bijectors as bj


class FlowFamily(Family):
  """A flow ``x -> (z, log|det|)`` built by :meth:`build`; likelihood, loss and sampler shared."""

  sample_temperature = True
  objective = "max likelihood"

  networks = ("model",)
  modality = "image"  # the data modality the architecture models
  latent_prior = "gaussian"  # z ~ N(0, T^2 I): interpolations are spherical

  @classmethod
  def defaults(cls) -> dict:
    """Shared by every flow; each subclass adds its ``model`` fields."""
    return {
        "sample": {"temperature": 1.0},  # T: samples are f^{-1}(z), z ~ N(0, T^2 I)
        "optim": {"default": config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=100.0)},
    }

  def __init__(self, config, spec):
    super().__init__(config, spec)
    name = config.model.family
    if spec.modality != self.modality:
      other = {"points": "configs/flow2d.py", "image": "configs/realnvp.py or configs/glow.py"}.get(
          spec.modality, "an autoregressive family (flows model continuous data)")
      raise UserError(f"model.family={name!r} models {self.modality} data, but {spec.name!r} holds "
                      f"{spec.modality}: use {other}")
    if spec.modality == "image" and not spec.dequantized:
      raise UserError(f"model.family={name!r} is a density on continuous data: set "
                      "--config.data.dequantize=True (uniform dequantization)")
    self.net = self.build(config.model, spec)

  @abc.abstractmethod
  def build(self, model_config, spec) -> nn.Module:
    """The flow as a bijector ``[B, *spec.shape] -> ([B, *spec.shape], [B])``."""

  def _variables(self, params, state):
    return {"params": params["model"], **state.get("model", {})}

  def init(self, rng, batch):
    """Parameters from a forward pass on ``batch``: actnorm layers take their initial scale and
    bias from its statistics. Non-trainable collections (1x1-conv permutations) go to ``state``."""
    variables = dict(self.net.init({"params": rng}, batch["x"]))
    params = {"model": variables.pop("params")}
    return params, ({"model": variables} if variables else {})

  def forward(self, params, state, x):
    """``(z, log|det df/dx|)``: the latent ``z = f(x) [B, *shape]`` of data ``x`` and ``[B]``."""
    return self.net.apply(self._variables(params, state), x)

  def log_prob(self, params, state, x):
    """Exact model-space ``log p(x)`` in nats, ``[B]``."""
    z, logdet = self.forward(params, state, x)
    zero = jnp.zeros_like(z)
    return losses.gaussian_log_prob(z, zero, zero) + logdet

  def loss(self, params, state, batch, rng):
    nll = -self.log_prob(params, state, batch["x"])
    bpd = likelihood.continuous_nll_to_bits_per_dim(nll, self.spec)
    return jnp.mean(nll), ({"bits_per_dim": jnp.mean(bpd)}, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def eval_metrics(self, params, state, batch, rng):
    """Per example ``[B]``: the exact ``nll_nats`` of the raw data (model space plus the
    dequantization offset; no offset for points) and ``bits_per_dim``."""
    nll = -self.log_prob(params, state, batch["x"])
    return {"nll_nats": nll + likelihood.model_space_offset_nats(self.spec),
            "bits_per_dim": likelihood.continuous_nll_to_bits_per_dim(nll, self.spec)}

  def sample(self, params, state, rng, num):
    """``x = f^{-1}(z)``, ``z ~ N(0, T^2 I)``, ``T = config.sample.temperature``; images clipped
    to the value range."""
    return self.decode_latent(params, state, self.sample_latent(rng, num))

  # --- latent space (the interpolation evaluator) ---------------------------------------------------

  def sample_latent(self, rng, num):
    """``z ~ N(0, T^2 I)`` ``[num, *shape]``, ``T = config.sample.temperature``."""
    return self.config.sample.temperature * jax.random.normal(rng, (num, *self.spec.shape))

  def decode_latent(self, params, state, z, label=None):
    """``x = f^{-1}(z) [B, *shape]`` (the inverse of :meth:`forward`); images clipped to the value
    range. ``label`` is ignored (flows here are unconditional)."""
    del label
    x, _ = self.net.apply(self._variables(params, state), z, reverse=True)
    if self.spec.modality == "image":
      x = jnp.clip(x, *self.spec.value_range)
    return x


def _pre_transform(model_config, spec) -> list[nn.Module]:
  alpha = float(model_config.logit_alpha)
  if not 0.0 <= alpha < 0.5:
    raise UserError(f"model.logit_alpha={alpha} must be in [0, 0.5) (0 disables the logit pre-transform)")
  return [bj.Logit(tuple(spec.value_range), alpha)] if alpha > 0 else []


def _check_squeezes(spec, times: int, min_size: int, knob: str, value: int) -> None:
  """``UserError`` unless the images halve ``times`` times to at least ``min_size`` pixels a side."""
  h, w = spec.shape[:2]
  if value < 1 or h % 2**times or w % 2**times or min(h, w) // 2**times < min_size:
    raise UserError(f"{knob}={value} does not fit {spec.name}'s {h}x{w} images (each scale halves "
                    f"them, down to at least {min_size}x{min_size}): pick a value >= 1 that fits")


@FAMILIES.register("realnvp")
class RealNVP(FlowFamily):
  """Multi-scale RealNVP on dequantized images (module docstring; config in :meth:`defaults`)."""

  @classmethod
  def defaults(cls) -> dict:
    return {**super().defaults(), "model": {
        "num_scales": 3,  # scales; all but the last squeeze and factor out half the channels
        "couplings": 3,  # couplings per half-scale; the last scale has couplings + 1 checkerboards
        "hidden": 64,  # conditioner channels
        "depth": 2,  # conditioner ReLU conv layers (3x3 then 1x1)
        "logit_alpha": 0.05,  # logit pre-transform (0 = off); its log-det is part of the NLL
    }}

  def build(self, m, spec):
    last = m.num_scales - 1
    _check_squeezes(spec, last, 2, "model.num_scales", m.num_scales)  # checkerboards need 2x2

    def coupling(mask: str, j: int) -> nn.Module:
      return bj.AffineCoupling(mask, j % 2, m.hidden, m.depth)

    def scale(i: int) -> nn.Module:
      if i == last:
        return bj.Chain([coupling("checkerboard", j) for j in range(m.couplings + 1)])
      return bj.Chain([*(coupling("checkerboard", j) for j in range(m.couplings)), bj.Squeeze(),
                       *(coupling("channel", j) for j in range(m.couplings)),
                       bj.FactorOut(scale(i + 1)), bj.Unsqueeze()])

    return bj.Chain([*_pre_transform(m, spec), scale(0)])


@FAMILIES.register("glow")
class Glow(FlowFamily):
  """Multi-level Glow on dequantized images (module docstring; config in :meth:`defaults`)."""

  @classmethod
  def defaults(cls) -> dict:
    warmup_cosine = config_defaults.optimizer(learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=200,
                                              end_learning_rate=1e-4, grad_clip_norm=100.0)
    return {**super().defaults(), "optim": {"default": warmup_cosine}, "model": {
        "num_levels": 2,  # L: each level squeezes once; all but the last factor out half
        "steps_per_level": 8,  # K: actnorm -> 1x1 conv -> coupling steps per level
        "hidden": 64,  # conditioner channels
        "depth": 2,  # conditioner ReLU conv layers (3x3 then 1x1)
        "logit_alpha": 0.0,  # logit pre-transform (0 = off: Glow models the scaled pixels)
        # one nn.scan over each level's K steps (parameters stacked [K, ...]): compile time flat in
        # K, but 16x slower steps on XLA:CPU (docs/families.md); off: the K steps unrolled
        "scan_steps": False,
    }}

  def build(self, m, spec):
    _check_squeezes(spec, m.num_levels, 1, "model.num_levels", m.num_levels)

    def step() -> list[nn.Module]:
      return [bj.ActNorm(), bj.InvertibleConv1x1(), bj.AffineCoupling("channel", 0, m.hidden, m.depth)]

    def level(i: int) -> nn.Module:
      if m.scan_steps:
        steps = [bj.Repeat(lambda: bj.Chain(step()), m.steps_per_level)]
      else:
        steps = [layer for _ in range(m.steps_per_level) for layer in step()]
      split = [bj.FactorOut(level(i + 1))] if i < m.num_levels - 1 else []
      return bj.Chain([bj.Squeeze(), *steps, *split, bj.Unsqueeze()])

    return bj.Chain([*_pre_transform(m, spec), level(0)])


@FAMILIES.register("flow2d")
class Flow2D(FlowFamily):
  """A coupling flow on points (module docstring; config in :meth:`defaults`)."""

  modality = "points"

  @classmethod
  def defaults(cls) -> dict:
    return {**super().defaults(), "model": {
        "num_layers": 8,  # couplings, alternating which coordinate is transformed
        "hidden": 64,  # conditioner MLP width
        "depth": 2,  # conditioner MLP ReLU layers
        "actnorm": True,  # a data-initialised actnorm before each coupling
    }}

  def build(self, m, spec):
    layers = []
    for j in range(m.num_layers):
      layers += [bj.ActNorm()] if m.actnorm else []
      layers.append(bj.AffineCoupling("channel", j % 2, m.hidden, m.depth))
    return bj.Chain(layers)
