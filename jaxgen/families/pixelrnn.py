"""PixelRNN (van den Oord et al. 2016a): Row LSTM or Diagonal BiLSTM layers over the discrete raw
values of images, with PixelCNN's outputs, likelihood and samplers.

Everything but the network is :class:`jaxgen.families.pixelcnn.PixelCNNFamily`'s: the model is a
distribution over raw levels ``raw in {0..L-1}``,

    log p(raw) = sum_{i, j, c in raster / channel order} log p(raw_ijc | raw_<ijc)

(exact, nats per image; ``bits_per_dim = nll / (H W C ln 2)``), each conditional a softmax over the
``L`` levels (or ``model.output="logistic_mixture"``), sampled sub-pixel by sub-pixel in one
compiled ``lax.fori_loop`` under ``sample.temperature`` / ``top_k`` / ``top_p``
(:mod:`jaxgen.sampling`), conditional models with the classes of ``sample.label``.

Network (:mod:`jaxgen.nn.lstm2d`): a mask-A ``first_kernel_size`` square convolution to ``2F``
features (``F = model.features``); ``model.num_layers`` residual LSTM layers, each
``x <- x + conv1x1_B(LSTM(x))`` with the LSTM a Row LSTM (mask-B ``1 x row_kernel_size``
input-to-state, ``row_kernel_size``-tap state-to-state along the row above) or a Diagonal BiLSTM
(skewed ``1 x 1`` / ``2 x 1`` convolutions, both directions); then ReLU, a mask-B ``1 x 1``
convolution to ``head_features``, ReLU, and a mask-B ``1 x 1`` convolution to the outputs.
``model.conditional`` adds a class bias to every LSTM's gates. The paper's sizes (7x7 first layer,
12 layers of ``F = 128`` on MNIST / CIFAR-10) are configured in ``configs/pixelrnn.py``'s docstring.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_defaults, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, Family
from jaxgen.families.pixelcnn import PixelCNNFamily, check_pixel_model
from jaxgen.nn.lstm2d import DiagonalBiLSTM, RowLSTM
from jaxgen.nn.masked_conv import MaskedConv2D

ARCHITECTURES = ("row_lstm", "diagonal_bilstm")


class PixelRNN(nn.Module):
  """``(x [B, H, W, C] in [-1, 1], label [B] | None) -> [B, H, W, C, outputs_per_channel]``.

  Output ``[..., c, :]`` at pixel ``(i, j)`` depends only on sub-pixels before ``(i, j, c)``.
  """

  data_channels: int
  outputs_per_channel: int
  architecture: str = "diagonal_bilstm"
  features: int = 32
  num_layers: int = 2
  first_kernel_size: int = 5
  row_kernel_size: int = 3
  head_features: int = 64
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None) -> jax.Array:
    c, f = self.data_channels, self.features
    cond = jax.nn.one_hot(label, self.num_classes) if self.num_classes else None
    k = self.first_kernel_size
    x = MaskedConv2D(2 * f, (k, k), "A", c, name="input")(x)
    for i in range(self.num_layers):
      if self.architecture == "row_lstm":
        h = RowLSTM(f, self.row_kernel_size, c, name=f"lstm_{i}")(x, cond)
      else:
        h = DiagonalBiLSTM(f, c, name=f"lstm_{i}")(x, cond)
      x = x + MaskedConv2D(2 * f, (1, 1), "B", c, name=f"residual_{i}")(h)
    out = MaskedConv2D(self.head_features, (1, 1), "B", c, name="head")(nn.relu(x))
    out = MaskedConv2D(c * self.outputs_per_channel, (1, 1), "B", c, name="out")(nn.relu(out))
    # Output feature o = p * C + c belongs to channel group o % C = c.
    out = out.reshape(out.shape[:3] + (self.outputs_per_channel, c))
    return jnp.swapaxes(out, -1, -2)


@FAMILIES.register("pixelrnn")
class PixelRNNFamily(PixelCNNFamily):
  """PixelCNN's likelihood and samplers on the PixelRNN network (module docstring; config in
  :meth:`defaults`)."""

  cached_sampling = False  # the recompute: the cached generator is PixelCNN's network's

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "architecture": "diagonal_bilstm",  # row_lstm | diagonal_bilstm
            "features": 32,  # F: LSTM state features (the residual stream has 2F); a multiple of the channels
            "num_layers": 2,  # residual LSTM layers
            "first_kernel_size": 5,  # odd; the mask-A input convolution (the paper: 7)
            "row_kernel_size": 3,  # odd; row_lstm only: input-to-state and state-to-state taps (the paper: 3)
            "head_features": 64,  # channels of the 1x1 output head
            "output": "softmax",  # softmax | logistic_mixture
            "num_mixtures": 5,  # logistic_mixture only: logistics per sub-pixel
            "conditional": False,  # class-conditional on batch["label"]
        },
        "sample": {**sampling.DEFAULTS, "label": -1},  # label: -1 = uniform classes, k = class k
        "optim": {"default": config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=1.0)},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    # PixelCNNFamily.__init__ builds the PixelCNN network from PixelCNN's fields: not called.
    Family.__init__(self, config, spec)  # pylint: disable=non-parent-init-called
    m = config.model
    if m.architecture not in ARCHITECTURES:
      raise UserError(f"model.architecture={m.architecture!r} is not one of {list(ARCHITECTURES)}: set one of them")
    per_channel = check_pixel_model("pixelrnn", m, spec, ("first_kernel_size", "row_kernel_size"))
    channels = spec.shape[-1]
    self.levels = spec.levels
    self.net = PixelRNN(data_channels=channels, outputs_per_channel=per_channel, architecture=str(m.architecture),
                        features=int(m.features), num_layers=int(m.num_layers),
                        first_kernel_size=int(m.first_kernel_size), row_kernel_size=int(m.row_kernel_size),
                        head_features=int(m.head_features), num_classes=self.condition_classes())
    self.sampling_controls()  # bad controls fail here
