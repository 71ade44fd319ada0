"""Normalizing flows: RealNVP and Glow on images, a small coupling flow on 2-D points.

A flow is a bijection ``f`` from data ``x`` to a latent ``z = f(x)`` of the same size, with base
density ``N(0, I)``; the change of variables gives the exact log-likelihood

    log p(x) = log N(f(x); 0, I) + log|det df/dx|.

Training minimises the mean model-space NLL ``-log p(x)`` in nats. Images must be uniformly
dequantized (``data.dequantize=True``): then ``NLL + D log(levels / (hi - lo))`` bounds the NLL of
the raw integers, reported in bits/dim (:mod:`jaxgen.evaluation.likelihood`). Sampling inverts the
flow on ``z ~ N(0, T^2 I)`` with ``T = config.sample.temperature`` (Glow's reduced-temperature
sampling for ``T < 1``).

Registered families (layers in :mod:`jaxgen.nn.bijectors`):

* ``realnvp`` (Dinh et al. 2017): per scale, ``couplings`` checkerboard affine couplings, squeeze,
  ``couplings`` channel couplings, factor out half the channels; the last scale has
  ``couplings + 1`` checkerboard couplings. Optional logit pre-transform (``model.logit_alpha``).
* ``glow`` (Kingma & Dhariwal 2018): per level, squeeze then ``steps_per_level`` steps of
  actnorm -> invertible 1x1 convolution (LU) -> channel affine coupling, then factor out half the
  channels (all levels but the last). Factored-out halves use the N(0, I) base (RealNVP-style), not
  Glow's learned conditional prior.
* ``flow2d``: for ``toy2d/*`` points, ``num_layers`` x (actnorm -> MLP affine coupling with
  alternating halves); :meth:`Flow2D.plot_density` draws the model density beside the data.
"""

from __future__ import annotations

import abc

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from jaxgen import losses
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn import bijectors as bj

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


class FlowFamily(Family):
  """A flow ``x -> (z, log|det|)`` built by :meth:`build`; likelihood, loss and sampler shared."""

  networks = ("model",)
  modality = "image"  # the data modality the architecture models

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

  def log_prob(self, params, state, x):
    """Exact model-space ``log p(x)`` in nats, ``[B]``."""
    z, logdet = self.net.apply(self._variables(params, state), x)
    zero = jnp.zeros_like(z)
    return losses.gaussian_log_prob(z, zero, zero) + logdet

  def loss(self, params, state, batch, rng):
    nll = -self.log_prob(params, state, batch["x"])
    bpd = likelihood.continuous_nll_to_bits_per_dim(nll, self.spec)
    return jnp.mean(nll), ({"bits_per_dim": jnp.mean(bpd)}, state)

  def update_groups(self):
    return [UpdateGroup("model", self.loss)]

  def eval_metrics(self, params, state, batch, rng):
    """Per example ``[B]``: NLL of the raw data in nats (model space plus the dequantization
    offset) and in bits/dim."""
    nll = -self.log_prob(params, state, batch["x"])
    return {"nll_nats": nll + likelihood.model_space_offset_nats(self.spec),
            "bits_per_dim": likelihood.continuous_nll_to_bits_per_dim(nll, self.spec)}

  def sample(self, params, state, rng, num):
    """``x = f^{-1}(z)``, ``z ~ N(0, T^2 I)``, ``T = config.sample.temperature``; images clipped
    to the value range."""
    z = self.config.sample.temperature * jax.random.normal(rng, (num, *self.spec.shape))
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
  """Config (``config.model``): ``num_scales``, ``couplings`` (per half-scale), ``hidden``, ``depth``
  (conditioner ReLU layers), ``logit_alpha`` (0 = no logit pre-transform)."""

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
  """Config (``config.model``): ``num_levels`` (each squeezes once), ``steps_per_level``,
  ``hidden``, ``depth`` (conditioner ReLU layers), ``logit_alpha`` (0 = none)."""

  def build(self, m, spec):
    _check_squeezes(spec, m.num_levels, 1, "model.num_levels", m.num_levels)

    def level(i: int) -> nn.Module:
      steps = [layer for _ in range(m.steps_per_level)
               for layer in (bj.ActNorm(), bj.InvertibleConv1x1(),
                             bj.AffineCoupling("channel", 0, m.hidden, m.depth))]
      split = [bj.FactorOut(level(i + 1))] if i < m.num_levels - 1 else []
      return bj.Chain([bj.Squeeze(), *steps, *split, bj.Unsqueeze()])

    return bj.Chain([*_pre_transform(m, spec), level(0)])


@FAMILIES.register("flow2d")
class Flow2D(FlowFamily):
  """Config (``config.model``): ``num_layers`` couplings, ``hidden``, ``depth`` (MLP ReLU layers),
  ``actnorm`` (an actnorm before each coupling)."""

  modality = "points"

  def build(self, m, spec):
    layers = []
    for j in range(m.num_layers):
      layers += [bj.ActNorm()] if m.actnorm else []
      layers.append(bj.AffineCoupling("channel", j % 2, m.hidden, m.depth))
    return bj.Chain(layers)

  def density_grid(self, params, state, lim: tuple[float, float, float, float], size: int = 200):
    """Model density on a ``size x size`` grid over ``(x0, x1, y0, y1)``: ``(xs, ys, p)`` with
    ``p[i, j] = p(xs[j], ys[i])`` (cell centres)."""
    x0, x1, y0, y1 = lim
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size
    ys = y0 + (np.arange(size) + 0.5) * (y1 - y0) / size
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    logp = jax.jit(self.log_prob)(params, state, grid)
    return xs, ys, np.exp(np.asarray(logp)).reshape(size, size)

  def plot_density(self, params, state, data_points: np.ndarray, path: str, size: int = 200) -> None:
    """PNG at ``path``: the data ``[N, 2]`` (left) beside the model density ``exp(log p)`` on a grid
    over the data's bounding box (right)."""
    data_points = np.asarray(data_points)
    lo, hi = data_points.min(0), data_points.max(0)
    pad = 0.1 * (hi - lo)
    lim = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    _, _, p = self.density_grid(params, state, lim, size)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    left.scatter(data_points[:, 0], data_points[:, 1], s=2, alpha=0.5)
    left.set_title(f"data ({self.spec.name})")
    right.imshow(p, origin="lower", extent=lim, cmap="viridis", aspect="auto")
    right.set_title("model density")
    for ax in (left, right):
      ax.set_xlim(lim[0], lim[1])
      ax.set_ylim(lim[2], lim[3])
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
