"""Causal multi-head self-attention with a fixed-shape key/value cache, and rotary positions.

Shapes: ``B`` batch, ``L`` query positions in this call, ``S`` cache length (the maximum
context), ``H`` heads, ``D`` head width, ``W = H * D`` model width.

Attention of query position ``i`` over key positions ``j``:
``softmax_j(q_i . k_j / sqrt(D) + mask_ij) v_j`` with ``mask_ij = 0`` if ``j <= i``, else the most
negative float (its weight underflows to exactly 0).

Without a cache the call sees the whole sequence (``L`` positions starting at 0). With a cache
(``KVCache`` of shape ``[B, S, H, D]`` each) the call writes its ``L`` new keys/values at
positions ``index .. index+L-1`` and attends over the whole buffer under the same causal mask by
*absolute* position, so unwritten (future) slots are never read: the cache shape never changes and
a generation loop compiles once.

The attention itself is ``jax.nn.dot_product_attention`` (logits and softmax in float32 whatever the
compute dtype). ``implementation``: ``"xla"``, or ``"cudnn"`` (cuDNN's fused flash attention: GPU,
bfloat16 / float16 only, used for the whole-sequence causal call; a call with a cache uses XLA).
Attention-weight dropout (training with ``dropout > 0``) has no fused form and goes through
``flax.linen.dot_product_attention``.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
  """Keys and values of one attention layer for positions ``0 .. S-1``: ``[B, S, H, D]`` each."""

  key: jax.Array
  value: jax.Array

  @classmethod
  def zeros(cls, batch: int, length: int, num_heads: int, head_dim: int,
            dtype=jnp.float32) -> KVCache:
    shape = (batch, length, num_heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (Su et al. 2021, RoFormer), "rotate-half" layout.

  Channel pairs ``(x_c, x_{c+D/2})``, ``c < D/2``, are rotated by the angle ``p * base^(-2c/D)``
  at position ``p``, so ``q_i . k_j`` depends on the positions only through ``i - j``.

  Args:
    x: ``[B, L, H, D]`` with ``D`` even.
    positions: absolute positions, int ``[L]``.
    base: wavelength base.

  Returns:
    ``[B, L, H, D]``, rotated.
  """
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * freqs  # [L, D/2]
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _write(buffer: jax.Array, update: jax.Array, index) -> jax.Array:
  """``buffer [B, S, H, D]`` with rows ``index .. index+L-1`` replaced by ``update [B, L, H, D]``."""
  return jax.lax.dynamic_update_slice_in_dim(buffer, update.astype(buffer.dtype), index, axis=1)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention (see the module docstring for the maths and shapes).

  Attributes:
    num_heads: ``H``; the input width must be divisible by it.
    rotary: rotate queries and keys by their absolute positions (``apply_rotary``).
    dropout: dropout rate on the attention weights and on the output.
    use_bias: biases in the projections.
    dtype: compute dtype of the projections and the attention (None: that of the inputs).
    implementation: ``"xla"`` or ``"cudnn"`` (module docstring).
  """

  num_heads: int
  rotary: bool = False
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  implementation: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, *, cache: KVCache | None = None, index: jax.Array | int = 0,
               deterministic: bool = True) -> tuple[jax.Array, KVCache | None]:
    """Attend causally.

    Args:
      x: ``[B, L, W]``.
      cache: ``None`` (the whole sequence, positions ``0 .. L-1``) or the layer's cache.
      index: with a cache, the absolute position of ``x[:, 0]`` (a traced int is fine).
      deterministic: disables dropout.

    Returns:
      ``([B, L, W], updated cache or None)``.
    """
    b, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads={self.num_heads}")
    head_dim = width // self.num_heads
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), use_bias=self.use_bias, dtype=self.dtype, name="qkv")(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, D]
    query_pos = index + jnp.arange(length)
    if self.rotary:
      q = apply_rotary(q, query_pos)
      k = apply_rotary(k, query_pos)
    if cache is None:
      key_pos = query_pos
    else:
      key_pos = jnp.arange(cache.key.shape[1])
      k, v = _write(cache.key, k, index), _write(cache.value, v, index)
      cache = KVCache(k, v)
    mask = key_pos[None, :] <= query_pos[:, None]  # [L, S]: causal by absolute position
    if self.dropout > 0.0 and not deterministic:
      out = nn.dot_product_attention(q, k, v, mask=mask[None, None], dropout_rate=self.dropout,
                                     deterministic=False, dropout_rng=self.make_rng("dropout"))
    elif cache is None:  # positions 0..L-1 on both sides: the causal mask is is_causal
      out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=self.implementation)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask[None, None], implementation="xla")  # [B, L, H, D]
    out = nn.DenseGeneral(width, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out")(out)
    return nn.Dropout(self.dropout)(out, deterministic=deterministic), cache
