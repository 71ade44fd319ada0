"""Encoder and decoder networks of the continuous-latent families (VAE, AAE, AVB).

``Encoder``: ``(x [B, *shape], onehot [B, C] | None, noise [B, E] | None) -> [B, out]``.
``architecture="mlp"``: the flattened ``x`` with the one-hot label and the noise appended, through
``MLP(hidden, out)``. ``"conv"``: ``x`` with one-hot label planes through
:class:`jaxgen.nn.conv_autoencoder.ConvEncoder`, flattened, label and noise appended, then
``MLP(hidden, out)``.

``Decoder``: ``(z [B, L], onehot | None) -> out [B, *shape, P]``, the parameters of a
:mod:`jaxgen.nn.pixel_likelihood` distribution (``P`` per dimension). ``"mlp"``: ``[z, onehot]``
through ``MLP(reversed(hidden), D P)``. ``"conv"``: ``MLP(reversed(hidden))`` to the encoder's last
feature grid ``[h, w, features[-1]]``, ReLU, then :class:`ConvDecoder`. A Gaussian decoder also
owns a learned per-dimension log-std ``[*shape]`` (:meth:`Decoder.log_std_value`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import pixel_likelihood
from jaxgen.nn.conv_autoencoder import ConvDecoder, ConvEncoder, check_downsampling
from jaxgen.nn.mlp import MLP

ARCHITECTURES = ("conv", "mlp")


def with_label(h: jax.Array, onehot: jax.Array | None) -> jax.Array:
  """``h`` with a one-hot label appended: on the last axis of ``[B, F]``, or as constant planes of
  an image ``[B, H, W, C]``. Unchanged when ``onehot`` is None."""
  if onehot is None:
    return h
  planes = jnp.broadcast_to(onehot.reshape((h.shape[0],) + (1,) * (h.ndim - 2) + (-1,)),
                            h.shape[:-1] + onehot.shape[-1:])
  return jnp.concatenate([h, planes.astype(h.dtype)], axis=-1)


class Encoder(nn.Module):
  """``(x, onehot, noise) -> [B, out]`` (module docstring)."""

  architecture: str
  hidden: tuple[int, ...]
  features: tuple[int, ...]
  out: int

  @nn.compact
  def __call__(self, x, onehot=None, noise=None):
    if self.architecture == "conv":
      x = ConvEncoder(self.features)(with_label(x, onehot))
    h = with_label(x.reshape(x.shape[0], -1), onehot)
    if noise is not None:
      h = jnp.concatenate([h, noise], axis=-1)
    return MLP(self.hidden, self.out)(h)


class Decoder(nn.Module):
  """``(z, onehot) -> out [B, *shape, P]`` (module docstring)."""

  shape: tuple[int, ...]
  architecture: str
  hidden: tuple[int, ...]
  features: tuple[int, ...]
  decoder: str  # a pixel_likelihood kind

  def setup(self):
    p = pixel_likelihood.num_outputs(self.decoder)
    if self.architecture == "mlp":
      self.net = MLP(tuple(reversed(self.hidden)), math.prod(self.shape) * p)
    else:
      self.grid = check_downsampling(self.shape, len(self.features))
      self.to_grid = MLP(tuple(reversed(self.hidden)), self.grid[0] * self.grid[1] * self.features[-1])
      self.conv = ConvDecoder(self.features, self.shape[-1] * p)
    if self.decoder == "gaussian":
      self.log_std = self.param("log_std", nn.initializers.zeros, self.shape)

  def __call__(self, z, onehot=None):
    h = with_label(z, onehot)
    if self.architecture == "mlp":
      out = self.net(h)
    else:
      out = self.conv(nn.relu(self.to_grid(h)).reshape((z.shape[0], *self.grid, self.features[-1])))
    return out.reshape((z.shape[0], *self.shape, -1))

  def log_std_value(self):
    """The Gaussian decoder's log-std ``[*shape]``; None for the other decoders."""
    return self.log_std if self.decoder == "gaussian" else None
