"""The ResNet generator and discriminator of the SNGAN / WGAN-GP CIFAR-10 experiments.

Gulrajani et al. 2017 (WGAN-GP, appendix F) and Miyato et al. 2018 (SNGAN, table 4, ResNet for
CIFAR-10), for images ``[B, H, W, C]`` whose side halves ``k`` times while staying >= 4
(``k = num_upsamples(H)``: 32 -> 3, 28 -> 2, 8 -> 1):

* generator: ``z [B, latent]`` (concatenated with ``embed(label)`` when conditional) -> Dense ->
  ``[B, H/2^k, W/2^k, ch]`` -> ``k`` up-blocks -> BatchNorm, ReLU, conv3x3 -> ``[B, H, W, C]``
  (tanh or sigmoid). Up-block: ``conv3x3(relu(bn(conv3x3(up(relu(bn(x)))))))`` plus the shortcut
  ``conv1x1(up(x))``; ``up`` is nearest-neighbour 2x upsampling.
* discriminator: an input block (``avgpool(conv3x3(relu(conv3x3(x))))`` plus ``conv1x1(avgpool(x))``),
  ``max(k - 2, 0)`` down-blocks and two blocks that keep the size (the size halves ``max(k - 1, 1)``
  times: 32 -> 16 -> 8 -> 8 -> 8), then ReLU, a sum over the spatial positions (global sum pooling)
  and a Dense logit ``[B]``. Block:
  ``pool(conv3x3(relu(conv3x3(relu(x)))))`` plus ``pool(conv1x1(x))`` (``pool`` = 2x2 average
  pooling in down-blocks, the identity otherwise; the 1x1 shortcut conv only where the block
  downsamples or changes the width). No BatchNorm in the discriminator (WGAN-GP's penalty is per
  example); spectral normalisation wraps it from outside (``jaxgen.families.gan``).

On 32x32 images with ``ch = 128`` these are the WGAN-GP CIFAR networks (SNGAN's generator uses
``ch = 256``). Initialisers are Flax's defaults (LeCun normal), not the papers' Glorot uniform.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.gan_generator import latent_to_map, num_upsamples, to_image


def _upsample(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling ``[B, H, W, C] -> [B, 2H, 2W, C]``."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _pool(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _batch_norm(train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9)


class UpBlock(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Conv(self.channels, (3, 3), padding="SAME")(_upsample(nn.relu(_batch_norm(train)(x))))
    h = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(_batch_norm(train)(h)))
    return h + nn.Conv(self.channels, (1, 1))(_upsample(x))


class DownBlock(nn.Module):
  channels: int
  down: bool
  first: bool = False  # the input block: no ReLU on the image, pooling before the shortcut conv

  @nn.compact
  def __call__(self, x):
    h = x if self.first else nn.relu(x)
    h = nn.Conv(self.channels, (3, 3), padding="SAME")(h)
    h = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(h))
    if self.first:
      return _pool(h) + nn.Conv(self.channels, (1, 1))(_pool(x))
    shortcut = x
    if self.down or x.shape[-1] != self.channels:
      shortcut = nn.Conv(self.channels, (1, 1))(x)
    if self.down:
      h, shortcut = _pool(h), _pool(shortcut)
    return h + shortcut


class ResNetGenerator(nn.Module):
  """``(z [B, latent], labels [B] or None, train) -> images [B, H, W, C]``."""

  shape: tuple[int, int, int]
  width: int
  num_classes: int
  out_activation: str  # tanh | sigmoid

  @nn.compact
  def __call__(self, z, labels, train: bool):
    x = latent_to_map(z, labels, self.num_classes, self.shape, self.width)
    for _ in range(num_upsamples(self.shape[0])):
      x = UpBlock(self.width)(x, train)
    return to_image(nn.relu(_batch_norm(train)(x)), self.shape[-1], self.out_activation)


class ResNetDiscriminator(nn.Module):
  """``images [B, H, W, C] -> logits [B]``."""

  width: int

  @nn.compact
  def __call__(self, x):
    k = num_upsamples(x.shape[1])
    x = DownBlock(self.width, down=True, first=True)(x)
    for i in range(max(k - 2, 0) + 2):
      x = DownBlock(self.width, down=i < k - 2)(x)
    x = jnp.sum(nn.relu(x), axis=(1, 2))
    return nn.Dense(1)(x)[:, 0]
