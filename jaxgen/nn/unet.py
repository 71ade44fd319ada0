"""The DDPM U-Net (Ho et al. 2020, after PixelCNN++): residual blocks conditioned on a timestep
embedding (and optionally a class), self-attention at chosen low resolutions, skip connections
between the down and up paths.

``dtype``: the compute dtype of every layer (e.g. bfloat16; the parameters stay float32 and the
output is float32, so losses are summed in float32). ``remat``: recompute each residual and
attention block's activations in the backward pass instead of storing them (same values and
gradients, less memory; ``jaxgen.nn.remat``).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.remat import remat as remat_module


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding ``[B, dim]`` of (integer or real) timesteps ``t`` ``[B]``.

  ``[sin(t w_i), cos(t w_i)]`` with ``w_i = max_period^(-i / (dim/2))``, ``i < dim/2`` (Vaswani et al.
  2017; the transformer's position code, as in Ho et al.).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def group_norm(channels: int, max_groups: int = 32, dtype=None) -> nn.GroupNorm:
  """GroupNorm with at most ``max_groups`` groups of (where possible) at least 4 channels.

  One channel per group would be instance normalisation, which erases the per-channel shift that
  carries the timestep and class embedding into every residual block.
  """
  return nn.GroupNorm(num_groups=math.gcd(max(channels // 4, 1), max_groups), dtype=dtype)


class ConditionEmbedding(nn.Module):
  """Timestep (and class) embedding ``[B, dim]``: sinusoid -> Dense -> swish -> Dense, plus a
  learned class embedding with ``num_classes + 1`` rows (the last is the null class used by
  classifier-free guidance)."""

  dim: int
  num_classes: int = 0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, t: jax.Array, label: jax.Array | None = None) -> jax.Array:
    emb = timestep_embedding(t, self.dim // 4)
    emb = nn.Dense(self.dim, dtype=self.dtype)(nn.swish(nn.Dense(self.dim, dtype=self.dtype)(emb)))
    if self.num_classes > 0:
      emb = emb + nn.Embed(self.num_classes + 1, self.dim, dtype=self.dtype)(label)
    return emb


class ResBlock(nn.Module):
  """``x + F(x, emb)``: GroupNorm, swish, 3x3 conv, + Dense(emb), GroupNorm, swish, dropout, 3x3 conv.

  A 1x1 conv matches channels on the skip path when ``channels`` differs from the input's.
  """

  channels: int
  dropout: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    dtype = self.dtype
    h = nn.Conv(self.channels, (3, 3), dtype=dtype)(nn.swish(group_norm(x.shape[-1], dtype=dtype)(x)))
    h = h + nn.Dense(self.channels, dtype=dtype)(nn.swish(emb))[:, None, None, :]
    h = nn.swish(group_norm(self.channels, dtype=dtype)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.channels, (3, 3), dtype=dtype)(h)
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), dtype=dtype)(x)
    return x + h


class AttentionBlock(nn.Module):
  """``x + SelfAttention(GroupNorm(x))`` over the ``H * W`` positions of ``x`` ``[B, H, W, C]``."""

  num_heads: int = 1
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = group_norm(c, dtype=self.dtype)(x).reshape(b, h * w, c)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(y)
    return x + y.reshape(b, h, w, c)


class UNet(nn.Module):
  """Denoiser ``f(x_t, t[, label]) -> [B, H, W, out_channels]`` (``out_channels = 0``: C of x).

  ``channels * ch_mult[i]`` channels at level ``i`` (resolution ``H / 2^i``), ``num_res_blocks``
  residual blocks per level going down (``+1`` going up, each taking a skip connection),
  self-attention after the blocks at resolutions listed in ``attn_resolutions`` and in the middle.
  ``num_classes > 0`` makes it class-conditional; label ``num_classes`` is the null class.
  ``dtype`` / ``remat``: the compute dtype and rematerialisation (module docstring).
  """

  channels: int = 64
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  attn_resolutions: Sequence[int] = ()
  num_heads: int = 1
  dropout: float = 0.0
  num_classes: int = 0
  out_channels: int = 0
  dtype: jnp.dtype | None = None
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, label: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    if self.num_classes > 0 and label is None:
      raise ValueError("a class-conditional UNet needs labels (use num_classes for the null class)")
    dtype = self.dtype
    res_block = remat_module(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
    attn_block = remat_module(AttentionBlock) if self.remat else AttentionBlock
    emb = ConditionEmbedding(4 * self.channels, self.num_classes, dtype)(t, label)

    h = nn.Conv(self.channels, (3, 3), dtype=dtype)(x)
    skips = [h]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = res_block(self.channels * mult, self.dropout, dtype)(h, emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block(self.num_heads, dtype)(h)
        skips.append(h)
      if level != len(self.ch_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=dtype)(h)
        skips.append(h)

    h = res_block(h.shape[-1], self.dropout, dtype)(h, emb, train)
    h = attn_block(self.num_heads, dtype)(h)
    h = res_block(h.shape[-1], self.dropout, dtype)(h, emb, train)

    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = res_block(self.channels * mult, self.dropout, dtype)(
            jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block(self.num_heads, dtype)(h)
      if level != 0:
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
        h = nn.Conv(c, (3, 3), dtype=dtype)(h)

    h = nn.swish(group_norm(h.shape[-1], dtype=dtype)(h))
    return nn.Conv(self.out_channels or x.shape[-1], (3, 3), dtype=dtype)(h).astype(jnp.float32)
