"""The input and output layers every image GAN generator shares (DCGAN in ``jaxgen.families.gan``,
the ResNet in ``jaxgen.nn.resnet_gan``).

For images ``[B, H, W, C]`` whose side halves ``k = num_upsamples(H)`` times while staying >= 4:

* :func:`latent_to_map`: ``z [B, latent]`` (concatenated with ``embed(label) [B, latent]`` when
  class-conditional) -> Dense -> ``[B, H / 2^k, W / 2^k, channels]``, the map the ``k``
  upsampling stages start from;
* :func:`to_image`: conv3x3 to ``C`` channels, then tanh (data in [-1, 1]) or sigmoid ([0, 1]).

Both are called inside a module's ``nn.compact`` method, so their layers are that module's own
(named ``Embed_0``, ``Dense_0``, ``Conv_<n>`` in call order).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def num_upsamples(size: int) -> int:
  """How often ``size`` halves while staying an integer >= 4: the up/down-sampling depth."""
  k = 0
  while size % 2 == 0 and size // 2 >= 4:
    size //= 2
    k += 1
  return k


def latent_to_map(z: jax.Array, labels: jax.Array | None, num_classes: int, shape: tuple[int, int, int],
                  channels: int) -> jax.Array:
  """``z [B, latent]`` (and ``labels [B]`` when ``num_classes``) -> ``[B, H / 2^k, W / 2^k, channels]``."""
  h, w, _ = shape
  k = num_upsamples(h)
  if num_classes:
    z = jnp.concatenate([z, nn.Embed(num_classes, z.shape[-1])(labels)], axis=-1)
  return nn.Dense((h >> k) * (w >> k) * channels)(z).reshape(z.shape[0], h >> k, w >> k, channels)


def to_image(x: jax.Array, channels: int, out_activation: str) -> jax.Array:
  """Features ``[B, H, W, F]`` -> images ``[B, H, W, channels]``; ``out_activation``: tanh | sigmoid."""
  x = nn.Conv(channels, (3, 3), padding="SAME")(x)
  return jnp.tanh(x) if out_activation == "tanh" else nn.sigmoid(x)
