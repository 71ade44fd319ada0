"""Masked convolutions and gated PixelCNN blocks (van den Oord et al. 2016a, 2016b).

Ordering. Sub-pixels are generated in raster order over pixels ``(i, j)`` and, within a pixel, in
channel order (R, then G, then B). Output sub-pixel ``(i, j, c)`` may depend on every input
sub-pixel of an earlier pixel and on channels ``< c`` of pixel ``(i, j)`` itself.

Channel groups. With ``C`` data channels every feature map carries a *group*: feature ``f``
belongs to group ``f % C`` (interleaved, so that splitting ``2F`` features into two halves of
``F``, as the gates do, keeps each feature's group). A feature of group ``g`` at pixel ``(i, j)``
may see channels ``<= g`` of that pixel (``< g`` right after a mask-A layer, which reads the data).

* Mask A (first layer, reads the data): the kernel's centre tap connects input group ``g_in`` to
  output group ``g_out`` only if ``g_in < g_out``; taps before the centre in raster order are
  open, taps after it closed.
* Mask B (every later layer): as A but ``g_in <= g_out`` at the centre.

Gated PixelCNN without a blind spot (van den Oord et al. 2016b). A *vertical* stack sees whole
rows: its ``(k//2+1) x k`` convolution at row ``i`` reads rows ``i - k//2 .. i`` of its input, so
it depends on data rows ``<= i`` (never used directly). A *horizontal* stack reads row ``i`` at
columns ``<= j`` through masked ``1 x k`` convolutions and receives the vertical stack shifted
down by one row (data rows ``< i``, all columns): together they cover every earlier sub-pixel.
Each block gates ``tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)`` (``h`` an optional class
embedding) and adds a residual connection to the horizontal stack.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def pixelcnn_mask(kernel_size: tuple[int, int], in_features: int, out_features: int,
                  data_channels: int, mask_type: str) -> np.ndarray:
  """The ``[kh, kw, in, out]`` 0/1 mask of a raster-causal convolution (module docstring).

  ``kh`` and ``kw`` are odd; the centre tap is ``(kh // 2, kw // 2)``.
  """
  kh, kw = kernel_size
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel_size}")
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  mask = np.zeros((kh, kw, in_features, out_features), np.float32)
  ci, cj = kh // 2, kw // 2
  mask[:ci] = 1.0
  mask[ci, :cj] = 1.0
  g_in = np.arange(in_features)[:, None] % data_channels
  g_out = np.arange(out_features)[None, :] % data_channels
  mask[ci, cj] = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
  return mask


class MaskedConv2D(nn.Module):
  """Raster- and channel-causal 2-D convolution, ``SAME`` padding: ``[B,H,W,Cin] -> [B,H,W,out]``."""

  features: int
  kernel_size: tuple[int, int]
  mask_type: str  # "A" | "B"
  data_channels: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mask = pixelcnn_mask(self.kernel_size, x.shape[-1], self.features, self.data_channels,
                         self.mask_type)
    return nn.Conv(self.features, self.kernel_size, padding="SAME", mask=jnp.asarray(mask),
                   kernel_init=self.kernel_init, bias_init=self.bias_init, name="conv")(x)


def down_shift(x: jax.Array) -> jax.Array:
  """``[B,H,W,C]``: row ``i`` of the output is row ``i-1`` of the input (row 0 is zeros)."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def gate(x: jax.Array) -> jax.Array:
  """``[..., 2F] -> [..., F]``: ``tanh(first half) * sigmoid(second half)``."""
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedPixelCNNBlock(nn.Module):
  """One gated block: ``(v [B,H,W,*], h [B,H,W,*], cond [B,E] | None) -> (v', h')``, ``F`` features.

  The first block reads the data (``mask_type="A"``, ``residual=False``, ``v = h = image``);
  later blocks use mask B and a residual horizontal stack.
  """

  features: int
  kernel_size: int
  data_channels: int
  mask_type: str = "B"
  residual: bool = True

  @nn.compact
  def __call__(self, v: jax.Array, h: jax.Array, cond: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    f2, k = 2 * self.features, self.kernel_size
    # Vertical: (k//2+1) x k window over rows i-k//2..i (top-padded, no bottom padding).
    v_pre = nn.Conv(f2, (k // 2 + 1, k), padding=((k // 2, 0), (k // 2, k // 2)), name="vertical")(v)
    h_pre = MaskedConv2D(f2, (1, k), self.mask_type, self.data_channels, name="horizontal")(h)
    h_pre = h_pre + nn.Conv(f2, (1, 1), name="vertical_to_horizontal")(down_shift(v_pre))
    if cond is not None:
      v_pre = v_pre + nn.Dense(f2, name="cond_vertical")(cond)[:, None, None, :]
      h_pre = h_pre + nn.Dense(f2, name="cond_horizontal")(cond)[:, None, None, :]
    h_out = MaskedConv2D(self.features, (1, 1), "B", self.data_channels, name="horizontal_out")(gate(h_pre))
    if self.residual:
      h_out = h_out + h
    return gate(v_pre), h_out
