"""A strided transposed convolution computed as ``s x s`` ordinary convolutions (sub-pixel form).

``ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")`` is the same function, with the
same parameters (names, shapes, initialisers), as ``flax.linen.ConvTranspose`` with those
arguments: ``y = conv_transpose(x, kernel, s, "SAME") + bias``, ``[B, H, W, Cin] -> [B, sH, sW, F]``.

Why not flax's layer: XLA:CPU lowers the gradient of a transposed convolution (a convolution with
``lhs_dilation``) to a slow generic loop; for the DCGAN generator's 32 -> 64 stage (batch 64,
64 -> 32 channels) its forward + backward took 25 s against 1.3 s for this form on the 2-core CI
machine (``experiments/benchmarks/conv_transpose.py``). No maintained library offers the rewrite.

The maths. ``lax.conv_transpose`` with ``transpose_kernel=False`` dilates ``x`` by ``s`` (``s - 1``
zeros between pixels), pads it by ``(p, q)`` from ``_conv_transpose_padding`` (``SAME``:
``p = ceil((k + s - 2) / 2)``, or ``k - 1`` when ``s > k - 1``) and correlates it with the
kernel. Output row ``o = s m + a`` (phase ``a`` in ``[0, s)``) therefore only meets the kernel taps
``t`` with ``(a + t - p) % s == 0``, which read input row ``m + d``, ``d = (a + t - p) // s``:

    y[s m + a, s n + b] = sum_{(t, d) in taps(a), (u, e) in taps(b)} x[m + d, n + e] K[t, u]

i.e. for each of the ``s^2`` phases an ordinary stride-1 convolution of ``x`` with the sub-kernel
``K[taps(a), taps(b)]`` (zero padding where ``m + d`` leaves the image), interleaved into the
output. Every phase has ``k / s`` taps per axis, so ``k % s == 0`` is required (4 x 4 stride 2:
four 2 x 2 convolutions, exactly the work of the transposed convolution).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def phase_taps(k: int, s: int, phase: int) -> tuple[np.ndarray, int, int]:
  """``(kernel taps, low pad, high pad)`` of output phase ``phase`` along one axis (module
  docstring): the taps in increasing order and the zero padding of the stride-1 convolution."""
  pad_len = k + s - 2
  p = k - 1 if s > k - 1 else -(-pad_len // 2)
  taps = np.array([t for t in range(k) if (phase + t - p) % s == 0])
  offsets = (phase + taps - p) // s
  return taps, -int(offsets[0]), int(offsets[-1])


class ConvTranspose(nn.Module):
  """``flax.linen.ConvTranspose`` (``padding="SAME"``, ``kernel % strides == 0``) in sub-pixel
  form: ``[B, H, W, Cin] -> [B, s_h H, s_w W, features]``; params ``kernel [kh, kw, Cin, F]``, ``bias [F]``."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int]
  padding: str = "SAME"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    if self.padding != "SAME" or kh % sh or kw % sw:
      raise ValueError(f"ConvTranspose supports padding='SAME' with kernel % strides == 0, got "
                       f"{self.kernel_size}, {self.strides}, {self.padding!r}")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    rows = []
    for a in range(sh):
      taps_a, lo_a, hi_a = phase_taps(kh, sh, a)
      cols = []
      for b in range(sw):
        taps_b, lo_b, hi_b = phase_taps(kw, sw, b)
        cols.append(jax.lax.conv_general_dilated(
            x, kernel[taps_a][:, taps_b], (1, 1), ((lo_a, hi_a), (lo_b, hi_b)),
            dimension_numbers=("NHWC", "HWIO", "NHWC")))
      rows.append(jnp.stack(cols, axis=3))  # [B, H, W, sw, F]
    y = jnp.stack(rows, axis=2)  # [B, H, sh, W, sw, F]: output row s m + a, column s n + b
    batch, h, _, w, _, f = y.shape
    return y.reshape(batch, sh * h, sw * w, f) + bias
