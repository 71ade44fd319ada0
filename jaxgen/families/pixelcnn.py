"""Gated PixelCNN (van den Oord et al. 2016b) over the discrete raw values of images.

Data. Model-space images ``x [H, W, C]`` (not dequantized) hold raw integers
``raw = round((x - lo) / (hi - lo) * (L - 1))`` in ``{0..L-1}`` (``L = spec.levels``: 256 for
8-bit images, 17 for ``digits``, 2 for binarized data); the model is a distribution over ``raw``:

    log p(raw) = sum_{i, j, c in raster / channel order} log p(raw_ijc | raw_<ijc)

in nats per image; bits/dim ``= -log p(raw) / (H W C ln 2)`` (discrete, no model-space offset). The
network reads ``2 raw / (L-1) - 1`` and outputs, per sub-pixel, either

* ``model.output="softmax"``: ``L`` logits (a 256-way softmax for 8-bit data), or
* ``model.output="logistic_mixture"``: a discretized mixture of ``model.num_mixtures`` logistics
  over the ``L`` levels (:mod:`jaxgen.nn.logistic_mixture`). Unlike PixelCNN++, which shares one
  mixture per pixel and links channels by linear coefficients, each sub-pixel has its own
  mixture, conditioned on the earlier channels through the channel-masked network.

Network (:mod:`jaxgen.nn.masked_conv`): a mask-A gated block reading the image, ``num_blocks``
mask-B gated blocks (vertical + horizontal stacks, no blind spot), then two mask-B 1x1
convolutions. ``model.conditional`` adds a class embedding to every gate.

Held-out metrics (``eval_metrics``, per image): ``nll_nats`` (exact) and ``bits_per_dim``.

Sampling: sub-pixel ``(i, j, c)`` (step ``n`` in raster / channel order, key ``fold_in(rng, n)``)
is drawn from its categorical over the ``L`` levels under ``config.sample``'s temperature / top-k /
top-p (:mod:`jaxgen.sampling`; for the mixture, the controls act on the ``L`` level
probabilities), conditional models with the classes of ``sample.label``
(:func:`jaxgen.sampling.labels_from_config`). Samples are returned in model space. Two samplers,
each one compiled loop, draw the same samples from the same key (the logits agree up to float
summation order):

* ``sample.cache=True`` (default; Ramachandran et al. 2017, :mod:`jaxgen.nn.pixelcnn_cache`):
  per sub-pixel, only that pixel's horizontal stack through every block, from cached row buffers
  and the row above's vertical features; each block's vertical stack once per completed row.
  ``H W C`` pixel-sized evaluations per image;
* ``sample.cache=False``: recompute the network on the whole canvas at each of the ``H W C``
  steps (the reference; ``H W C`` image-sized evaluations).

``experiments/benchmarks/pixelcnn_cache.py`` times both in one run (configs/pixelcnn.py's model,
batch 16, 2 CPU cores): 8x8x1 digits 7-20x faster cached (load-dependent), 28x28x1 170x.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_defaults, losses, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation.likelihood import nats_to_bits_per_dim
from jaxgen.families.base import FAMILIES, MaximumLikelihoodFamily
from jaxgen.nn import logistic_mixture, pixelcnn_cache
from jaxgen.nn.masked_conv import GatedPixelCNNBlock, MaskedConv2D

OUTPUTS = ("softmax", "logistic_mixture")


class PixelCNN(nn.Module):
  """``(x [B, H, W, C] in [-1, 1], label [B] | None) -> [B, H, W, C, outputs_per_channel]``.

  Output ``[..., c, :]`` at pixel ``(i, j)`` depends only on sub-pixels before ``(i, j, c)``.
  """

  data_channels: int
  outputs_per_channel: int
  features: int = 64
  num_blocks: int = 5
  kernel_size: int = 3
  first_kernel_size: int = 7
  head_features: int = 128
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None) -> jax.Array:
    c = self.data_channels
    cond = jax.nn.one_hot(label, self.num_classes) if self.num_classes else None
    v, h = GatedPixelCNNBlock(self.features, self.first_kernel_size, c, "A", residual=False,
                              name="block_0")(x, x, cond)
    for i in range(self.num_blocks):
      v, h = GatedPixelCNNBlock(self.features, self.kernel_size, c, name=f"block_{i + 1}")(v, h, cond)
    out = MaskedConv2D(self.head_features, (1, 1), "B", c, name="head")(nn.relu(h))
    out = MaskedConv2D(c * self.outputs_per_channel, (1, 1), "B", c, name="out")(nn.relu(out))
    # Output feature o = p * C + c belongs to channel group o % C = c.
    out = out.reshape(out.shape[:3] + (self.outputs_per_channel, c))
    return jnp.swapaxes(out, -1, -2)


def check_pixel_model(family: str, m: ml_collections.ConfigDict, spec: DataSpec, odd_fields: tuple[str, ...]) -> int:
  """The checks every pixel-level autoregressive family (PixelCNN, PixelRNN) makes of its data and
  ``config.model``, each a ``UserError`` naming the fix; returns the outputs per sub-pixel
  (``levels`` logits for softmax, ``3 * num_mixtures`` for the logistic mixture)."""
  if spec.modality != "image" or spec.levels < 2:
    raise UserError(f"{family} models images with discrete levels, and {spec.name!r} holds "
                    f"{spec.modality}: use an image data set such as data.name='digits'")
  if spec.dequantized:
    raise UserError(f"{family} models the discrete raw pixel values: set data.dequantize=False")
  if m.output not in OUTPUTS:
    raise UserError(f"model.output={m.output!r} is not one of {list(OUTPUTS)}: set one of them")
  channels = spec.shape[-1]
  if int(m.features) % channels:
    raise UserError(f"model.features={m.features} must be a multiple of the {channels} image "
                    "channels (each feature belongs to one channel group): change model.features")
  for name in odd_fields:
    if int(m[name]) % 2 == 0:
      raise UserError(f"model.{name}={m[name]} must be odd (masked convolutions are centred)")
  return spec.levels if m.output == "softmax" else 3 * int(m.num_mixtures)


@FAMILIES.register("pixelcnn")
class PixelCNNFamily(MaximumLikelihoodFamily):
  """Autoregressive image model, one network ``model`` (module docstring; config in :meth:`defaults`)."""

  sample_temperature = True
  objective = "max likelihood"

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "features": 32,  # channels per stack, a multiple of the image channels
            "num_blocks": 4,  # mask-B gated blocks after the mask-A block
            "kernel_size": 3,  # odd; the mask-B blocks' kernel
            "first_kernel_size": 5,  # odd; the mask-A block's kernel
            "head_features": 64,  # channels of the 1x1 output head
            "output": "softmax",  # softmax | logistic_mixture
            "num_mixtures": 5,  # logistic_mixture only: logistics per sub-pixel
            "conditional": False,  # class-conditional on batch["label"]
        },
        "sample": {**sampling.DEFAULTS, "label": -1,  # label: -1 = uniform classes, k = class k
                   "cache": True},  # cached generation (module docstring); False: recompute per step
        "optim": {"default": config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=1.0)},
    }

  @property
  def cached_sampling(self) -> bool:
    """Whether ``generate_raw`` uses the cached generator: ``sample.cache``, read when the sampler
    is traced (as :meth:`sampling_controls`); subclasses with another network (PixelRNN) override
    it with ``False``, the recompute."""
    return bool(self.config.sample.cache)

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m = config.model
    per_channel = check_pixel_model("pixelcnn", m, spec, ("kernel_size", "first_kernel_size"))
    channels = spec.shape[-1]
    num_classes = self.condition_classes()
    self.levels = spec.levels
    self.net = PixelCNN(data_channels=channels, outputs_per_channel=per_channel,
                        features=int(m.features), num_blocks=int(m.num_blocks),
                        kernel_size=int(m.kernel_size), first_kernel_size=int(m.first_kernel_size),
                        head_features=int(m.head_features), num_classes=num_classes)
    self.sampling_controls()  # bad controls fail here

  # --- model space <-> raw levels --------------------------------------------------------------

  def to_raw(self, x: jax.Array) -> jax.Array:
    """Model-space images -> int32 levels ``round((x - lo) / (hi - lo) * (L - 1))``."""
    lo, hi = self.spec.value_range
    return jnp.round((x - lo) / (hi - lo) * (self.levels - 1)).astype(jnp.int32)

  def to_model_space(self, raw: jax.Array) -> jax.Array:
    lo, hi = self.spec.value_range
    return (lo + (hi - lo) / (self.levels - 1) * raw.astype(jnp.float32)).astype(jnp.float32)

  def _net_input(self, raw: jax.Array) -> jax.Array:
    return 2.0 / (self.levels - 1) * raw.astype(jnp.float32) - 1.0

  def _label(self, batch):
    return batch["label"] if self.net.num_classes else None

  # --- likelihood ------------------------------------------------------------------------------

  def level_log_probs(self, params, raw: jax.Array, label: jax.Array | None) -> jax.Array:
    """Log-probabilities of every level for every sub-pixel: ``[B, H, W, C, L]``."""
    return self._outputs_to_level_log_probs(self.net.apply(params["model"], self._net_input(raw), label))

  def _outputs_to_level_log_probs(self, out: jax.Array) -> jax.Array:
    """Network outputs ``[..., outputs_per_channel]`` -> level log-probabilities ``[..., L]``."""
    if self.config.model.output == "softmax":
      return jax.nn.log_softmax(out, axis=-1)
    return logistic_mixture.log_probs_all(out, self.levels)

  def sub_pixel_log_probs(self, params, raw: jax.Array, label: jax.Array | None) -> jax.Array:
    """``log p(raw_ijc | raw_<ijc)`` for every sub-pixel: ``[B, H, W, C]``."""
    out = self.net.apply(params["model"], self._net_input(raw), label)
    if self.config.model.output == "softmax":
      return -losses.categorical_nll(out, raw)
    return logistic_mixture.log_prob(out, raw, self.levels)

  def log_prob(self, params, batch) -> jax.Array:
    """Exact ``log p(raw)`` in nats per image, ``[B]``."""
    lp = self.sub_pixel_log_probs(params, self.to_raw(batch["x"]), self._label(batch))
    return losses.sum_except_batch(lp)

  def per_example_metrics(self, params, batch):
    """Per-example ``nll_nats`` and ``bits_per_dim``, ``[B]`` each."""
    nll = -self.log_prob(params, batch)
    return {"nll_nats": nll, "bits_per_dim": nats_to_bits_per_dim(nll, self.spec.dims)}

  # --- the family contract ---------------------------------------------------------------------

  def init(self, rng, batch):
    raw = self.to_raw(batch["x"])
    return {"model": self.net.init(rng, self._net_input(raw), self._label(batch))}, {}

  def generate_raw(self, params, rng: jax.Array, labels: jax.Array | None, num: int,
                   cache: bool | None = None) -> jax.Array:
    """``num`` images of raw levels ``int32 [num, H, W, C]``, sub-pixel by sub-pixel.

    Step ``n`` (sub-pixel ``(i, j, c)`` in raster / channel order) uses key ``fold_in(rng, n)``.
    ``cache``: the cached generator (PixelCNN networks only) or the recompute; ``None``:
    :attr:`cached_sampling`.
    """
    h, w, c = self.spec.shape
    cache = self.cached_sampling if cache is None else cache
    controls = self.sampling_controls()

    def draw(n, logits):
      return sampling.sample_logits(jax.random.fold_in(rng, n), logits, **controls)

    if cache:
      return pixelcnn_cache.generate(
          self.net, params["model"], (h, w, c), labels, num, self._net_input,
          lambda n, out: draw(n, self._outputs_to_level_log_probs(out)))

    def body(n, canvas):
      i, j, ch = n // (w * c), (n // c) % w, n % c
      logits = self.level_log_probs(params, canvas, labels)[:, i, j, ch]
      return canvas.at[:, i, j, ch].set(draw(n, logits))

    return jax.lax.fori_loop(0, h * w * c, body, jnp.zeros((num, h, w, c), jnp.int32))

  def sample(self, params, state, rng, num):
    """``num`` images in model space, ``float32 [num, H, W, C]``."""
    label_key, key = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.net.num_classes, label_key, num)
    return self.to_model_space(self.generate_raw(params, key, labels, num))
