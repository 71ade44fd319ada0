"""Two-dimensional LSTM layers of PixelRNN (van den Oord et al. 2016a): Row LSTM and Diagonal BiLSTM.

Ordering and channel groups as in :mod:`jaxgen.nn.masked_conv`: sub-pixels in raster order, then
channel order; feature ``f`` belongs to channel group ``f % C``. Each layer maps ``x [B, H, W, D]``
to ``h [B, H, W, F]`` (``F`` a multiple of ``C``) with the LSTM cell

    [i, f, o, g] = input_to_state(x) + state_to_state(h_prev)       (4 chunks of F features)
    c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g),   h = sigmoid(o) * tanh(c)

Splitting ``4F`` features into chunks of ``F`` keeps every feature's group (``F % C == 0``), and the
cell is elementwise, so ``h``'s group-``g`` features at pixel ``(i, j)`` see that pixel's channels
``<= g`` only through the mask-B input-to-state convolution; the state-to-state convolution reads
earlier pixels only, whose every channel is visible.

* **Row LSTM**: input-to-state a mask-B ``1 x k`` convolution along the row; the state of row ``i``
  comes from row ``i - 1`` by an (unmasked) ``k``-tap convolution along the width: one scan over the
  rows, each row in parallel. Receptive field: a triangle above the pixel, plus the row to its left.
* **Diagonal LSTM**: the input-to-state map (mask-B ``1 x 1``) is *skewed*, row ``i`` shifted right
  by ``i`` (``[B, H, W + H - 1, .]``), so that the diagonal ``i + j = s`` becomes column ``s``; a
  scan over the columns computes the state at ``(i, j)`` from ``(i, j - 1)`` and ``(i - 1, j)``
  (a ``2 x 1`` convolution over the previous skewed column); the output is *unskewed*. Receptive
  field: every ``(i', j')`` with ``i' <= i, j' <= j``.
* **Diagonal BiLSTM**: a Diagonal LSTM on the image and a second one on the mirrored image
  (covering ``i' <= i, j' >= j``, including pixels to the *right* in row ``i``); the second output,
  mirrored back, is shifted down one row (now ``i' < i``) before the two are added: together they
  see every earlier sub-pixel (no blind spot).

``cond [B, E]`` (an optional class embedding) adds a learned bias to the gates.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.masked_conv import MaskedConv2D, down_shift


def skew(x: jax.Array) -> jax.Array:
  """``[B, H, W, F] -> [B, H, W + H - 1, F]``: row ``i`` shifted right by ``i``, zeros elsewhere."""
  h = x.shape[1]
  return jnp.stack([jnp.pad(x[:, i], ((0, 0), (i, h - 1 - i), (0, 0))) for i in range(h)], axis=1)


def unskew(y: jax.Array, width: int) -> jax.Array:
  """Inverse of :func:`skew`: ``[B, H, width + H - 1, F] -> [B, H, width, F]``."""
  return jnp.stack([y[:, i, i:i + width] for i in range(y.shape[1])], axis=1)


def lstm_cell(gates: jax.Array, c_prev: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(h, c)`` from pre-activations ``[..., 4F]`` (chunks i, f, o, g) and the previous cell ``[..., F]``."""
  i, f, o, g = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


class _Gates(nn.Module):
  """Input-to-state pre-activations ``[B, H, W, 4F]``: a mask-B convolution, plus the class bias."""

  features: int
  kernel_size: tuple[int, int]
  data_channels: int

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None) -> jax.Array:
    gates = MaskedConv2D(4 * self.features, self.kernel_size, "B", self.data_channels, name="input_to_state")(x)
    if cond is not None:
      gates = gates + nn.Dense(4 * self.features, name="cond")(cond)[:, None, None, :]
    return gates


class RowLSTM(nn.Module):
  """``(x [B, H, W, D], cond) -> h [B, H, W, F]`` (module docstring)."""

  features: int
  kernel_size: int
  data_channels: int

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
    f, k = self.features, self.kernel_size
    gates = _Gates(f, (1, k), self.data_channels, name="gates")(x, cond)
    kernel = self.param("state_to_state", nn.initializers.lecun_normal(), (k, f, 4 * f))

    width = x.shape[2]

    def row(carry, row_gates):
      h_prev, c_prev = carry
      # The k-tap convolution along the row as one matmul of the k shifted rows: a convolution's
      # kernel gradient inside the scan's loop misses XLA:CPU's fast kernels (4x slower step).
      padded = jnp.pad(h_prev, ((0, 0), (k // 2, k // 2), (0, 0)))  # "SAME" for the odd k
      taps = jnp.concatenate([padded[:, t:t + width] for t in range(k)], axis=-1)  # [B, W, k F]
      h, c = lstm_cell(row_gates + taps @ kernel.reshape(k * f, 4 * f), c_prev)
      return (h, c), h

    zeros = jnp.zeros(x.shape[:1] + x.shape[2:3] + (f,), gates.dtype)
    _, hs = jax.lax.scan(row, (zeros, zeros), jnp.moveaxis(gates, 1, 0))
    return jnp.moveaxis(hs, 0, 1)


class DiagonalLSTM(nn.Module):
  """One direction of the Diagonal BiLSTM: ``(x [B, H, W, D], cond) -> h [B, H, W, F]``."""

  features: int
  data_channels: int

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
    f = self.features
    gates = skew(_Gates(f, (1, 1), self.data_channels, name="gates")(x, cond))  # [B, H, S, 4F]
    # Taps of the 2 x 1 state-to-state convolution: [0] the row above, [1] the same row.
    kernel = self.param("state_to_state", nn.initializers.lecun_normal(), (2, f, 4 * f))

    def column(carry, column_gates):
      h_prev, c_prev = carry  # [B, H, F]: the previous skewed column
      above = jnp.pad(h_prev, ((0, 0), (1, 0), (0, 0)))[:, :-1]
      h, c = lstm_cell(column_gates + above @ kernel[0] + h_prev @ kernel[1], c_prev)
      return (h, c), h

    zeros = jnp.zeros(x.shape[:2] + (f,), gates.dtype)
    _, hs = jax.lax.scan(column, (zeros, zeros), jnp.moveaxis(gates, 2, 0))
    return unskew(jnp.moveaxis(hs, 0, 2), x.shape[2])


class DiagonalBiLSTM(nn.Module):
  """``(x [B, H, W, D], cond) -> [B, H, W, F]``: both diagonal directions, the mirrored one shifted
  down a row (module docstring)."""

  features: int
  data_channels: int

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
    left = DiagonalLSTM(self.features, self.data_channels, name="left_to_right")(x, cond)
    right = DiagonalLSTM(self.features, self.data_channels, name="right_to_left")(x[:, :, ::-1], cond)
    return left + down_shift(right[:, :, ::-1])
