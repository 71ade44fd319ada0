"""Convolutional encoder / decoder pair shared by the latent-variable families (VAE, VQ-VAE, AAE, AVB).

``ConvEncoder(features)``: ``[B, H, W, C] -> [B, H / 2^k, W / 2^k, features[-1]]`` with
``k = len(features)`` stages, each a stride-2 4x4 convolution to ``features[i]`` channels and a
residual 3x3 convolution, all ReLU. ``ConvDecoder(features, out_channels)`` mirrors it:
``[B, h, w, D] -> [B, h 2^k, w 2^k, out_channels]`` through a 3x3 convolution, ``k`` stride-2 4x4
transposed convolutions to ``reversed(features)`` channels (each with a residual 3x3 convolution)
and a final 3x3 convolution. ``H`` and ``W`` must be divisible by ``2^k``
(:func:`check_downsampling`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from jaxgen.errors import UserError
from jaxgen.nn.conv_transpose import ConvTranspose


def check_downsampling(shape: Sequence[int], stages: int, field: str = "model.features") -> tuple[int, int]:
  """The spatial size ``(H / 2^k, W / 2^k)`` after ``k = stages`` stride-2 stages; a ``UserError``
  when ``H`` or ``W`` is not divisible by ``2^k``."""
  h, w = shape[0], shape[1]
  if stages < 1 or h % 2**stages or w % 2**stages:
    raise UserError(f"{field} has {stages} stride-2 stages but the {h}x{w} images are not divisible "
                    f"by 2^{stages}: use between 1 and as many entries as halvings of the image size")
  return h >> stages, w >> stages


class ConvEncoder(nn.Module):
  """``[B, H, W, C] -> [B, H / 2^k, W / 2^k, features[-1]]`` (module docstring)."""

  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for ch in self.features:
      x = nn.relu(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME")(x))
      x = nn.relu(x + nn.Conv(ch, (3, 3), padding="SAME")(x))
    return x


class ConvDecoder(nn.Module):
  """``[B, h, w, D] -> [B, h 2^k, w 2^k, out_channels]`` (module docstring)."""

  features: Sequence[int]
  out_channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Conv(self.features[-1], (3, 3), padding="SAME")(x))
    for ch in reversed(self.features):
      x = nn.relu(ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME")(x))
      x = nn.relu(x + nn.Conv(ch, (3, 3), padding="SAME")(x))
    return nn.Conv(self.out_channels, (3, 3), padding="SAME")(x)
