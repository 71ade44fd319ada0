"""Cached generation for the gated PixelCNN (Ramachandran et al. 2017, "Fast Generation for
Convolutional Autoregressive Models"): pixel-sized steps instead of a pass over the image per
sub-pixel.

What sub-pixel ``(i, j, c)`` needs (:mod:`jaxgen.nn.masked_conv`). For block ``b`` with kernel
``k`` (``first_kernel_size`` for the mask-A block 0) and ``q = k // 2``:

* horizontal stack, at pixel ``(i, j)`` only::

      h_pre(i, j) = sum_{t=0..q} h_in(i, j-q+t) K_h[t] + b_h + V2H(v_pre(i-1, j)) [+ cond_h]
      h_out(i, j) = M(gate(h_pre(i, j))) [+ h_in(i, j)]            (residual: blocks b >= 1)

  (the taps right of the centre are masked out), so it reads the current pixel and the ``q``
  pixels to its left of this row's horizontal inputs (block 0: the image row, later blocks: the
  previous block's ``h_out``), plus the row above's vertical features;
* vertical stack: ``v_pre(i) = conv over rows i-q..i of v_in`` (all columns) feeds row ``i + 1``
  only, through ``V2H`` (a 1x1 convolution of the down-shifted ``v_pre``; at row 0 it sees zeros,
  i.e. its bias), and the next block's vertical input ``gate(v_pre + cond_v)``.

Cache per block: a row buffer of this row's horizontal inputs ``[B, q + W, F_in]`` (``q`` zero
columns on the left: the SAME padding), a window of the last ``q + 1`` rows of vertical inputs
``[B, q + 1, W + 2q, F_in]`` (zero rows at the start: the top padding) and ``V2H(v_pre(i - 1))``
``[B, W, 2F]``.

Loop (one compiled ``lax.fori_loop`` over rows, inside it one over the row's ``W C`` sub-pixels):
each sub-pixel step runs the pixel's horizontal stack through every block from the row buffers and
the 1x1 head, and draws sub-pixel ``(i, j, c)`` from channel ``c``'s outputs. The whole pixel is
recomputed at each of its ``C`` steps: the channel masks make a feature of group ``g`` see only
channels ``< g`` of its own pixel, so channel ``c``'s outputs ignore the channels not drawn yet.
After the row, each block's vertical convolution runs once on its window (one output row).

Cost per image: ``H W C`` pixel-sized network evaluations and ``H`` row-sized ones, against ``H W C``
image-sized evaluations for the recompute. The kernels are read from the params tree of
:class:`jaxgen.families.pixelcnn.PixelCNN` (the training network's) and masked with
:func:`jaxgen.nn.masked_conv.pixelcnn_mask` as ``MaskedConv2D`` does, so the outputs equal the full
pass's up to float summation order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxgen.nn.masked_conv import gate, pixelcnn_mask


def _masked(p: dict, mask_type: str, data_channels: int) -> jax.Array:
  """A ``MaskedConv2D``'s kernel ``[kh, kw, in, out]`` times its mask."""
  kernel = p["conv"]["kernel"]
  return kernel * pixelcnn_mask(kernel.shape[:2], *kernel.shape[2:], data_channels, mask_type)


def _block(p: dict, kernel_size: int, mask_type: str, data_channels: int, cond: jax.Array | None) -> dict:
  """One gated block's weights in the shapes the cached steps use."""
  q = kernel_size // 2
  horizontal = _masked(p["horizontal"], mask_type, data_channels)[0, :q + 1]  # [q + 1, in, 2F]
  weights = {
      "q": q,
      "horizontal": horizontal.reshape(-1, horizontal.shape[-1]),  # [(q + 1) in, 2F]
      "horizontal_bias": p["horizontal"]["conv"]["bias"],
      "vertical": p["vertical"]["kernel"],  # [q + 1, k, in, 2F]
      "vertical_bias": p["vertical"]["bias"],
      "v2h": p["vertical_to_horizontal"]["kernel"][0, 0],
      "v2h_bias": p["vertical_to_horizontal"]["bias"],
      "out": _masked(p["horizontal_out"], "B", data_channels)[0, 0],
      "out_bias": p["horizontal_out"]["conv"]["bias"],
  }
  if cond is not None:  # [B, 2F] each, as nn.Dense
    weights["cond_vertical"] = cond @ p["cond_vertical"]["kernel"] + p["cond_vertical"]["bias"]
    weights["cond_horizontal"] = cond @ p["cond_horizontal"]["kernel"] + p["cond_horizontal"]["bias"]
  return weights


def generate(net: Any, variables: dict, shape: tuple[int, int, int], labels: jax.Array | None, num: int,
             net_input: Callable[[jax.Array], jax.Array], draw: Callable[[jax.Array, jax.Array], jax.Array],
             collect_outputs: bool = False):
  """Sub-pixels drawn in raster / channel order with the cached network (module docstring).

  Args:
    net: the :class:`jaxgen.families.pixelcnn.PixelCNN` module whose ``variables`` these are.
    shape: ``(H, W, C)``.
    labels: int ``[num]`` for a conditional ``net``, else ``None``.
    net_input: raw levels int32 ``[num]`` -> the network's input values ``[num]``.
    draw: ``(n, outputs [num, P]) -> int32 [num]``, the raw levels of sub-pixel ``n`` (raster /
      channel index) from the network's outputs for it (``P = net.outputs_per_channel``).
    collect_outputs: also return every sub-pixel's outputs ``[num, H, W, C, P]``.

  Returns:
    raw levels int32 ``[num, H, W, C]`` (and the outputs if ``collect_outputs``).
  """
  height, width, channels = shape
  params = variables["params"]
  cond = jax.nn.one_hot(labels, net.num_classes) if net.num_classes else None
  blocks = [_block(params["block_0"], net.first_kernel_size, "A", channels, cond)]
  blocks += [_block(params[f"block_{b}"], net.kernel_size, "B", channels, cond)
             for b in range(1, net.num_blocks + 1)]
  head = _masked(params["head"], "B", channels)[0, 0]
  out = _masked(params["out"], "B", channels)[0, 0]
  in_features = [channels] + [net.features] * net.num_blocks
  per_channel = net.outputs_per_channel

  def pixel(rows, v2h, j):
    """Outputs ``[num, C, P]`` of pixel ``(i, j)`` and the row buffers with its ``h_out``s."""
    rows = list(rows)
    h = None
    for b, blk in enumerate(blocks):
      q = blk["q"]
      if b:
        rows[b] = jax.lax.dynamic_update_slice_in_dim(rows[b], h[:, None], q + j, axis=1)
      window = jax.lax.dynamic_slice_in_dim(rows[b], j, q + 1, axis=1)  # columns j-q..j
      pre = window.reshape(num, -1) @ blk["horizontal"] + blk["horizontal_bias"]
      pre = pre + jax.lax.dynamic_index_in_dim(v2h[b], j, axis=1, keepdims=False)
      if cond is not None:
        pre = pre + blk["cond_horizontal"]
      h_out = gate(pre) @ blk["out"] + blk["out_bias"]
      h = h_out + h if b else h_out
    y = jax.nn.relu(h) @ head + params["head"]["conv"]["bias"]
    y = jax.nn.relu(y) @ out + params["out"]["conv"]["bias"]
    # Output feature o = p * C + c belongs to channel c (PixelCNN.__call__).
    return jnp.swapaxes(y.reshape(num, per_channel, channels), 1, 2), rows

  def vertical(windows, row_input):
    """Each block's window with this row pushed in, and its ``V2H(v_pre)`` ``[num, W, 2F]``."""
    windows, v2h, v = list(windows), [], row_input
    for b, blk in enumerate(blocks):
      q = blk["q"]
      padded = jnp.pad(v, ((0, 0), (q, q), (0, 0)))[:, None]
      windows[b] = jnp.concatenate([windows[b][:, 1:], padded], axis=1)
      v_pre = jax.lax.conv_general_dilated(windows[b], blk["vertical"], (1, 1), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, 0]
      v_pre = v_pre + blk["vertical_bias"]
      v2h.append(v_pre @ blk["v2h"] + blk["v2h_bias"])
      if cond is not None:
        v_pre = v_pre + blk["cond_vertical"][:, None]
      v = gate(v_pre)
    return windows, v2h

  def row_step(i, carry):
    canvas, windows, v2h, outputs = carry
    rows = [jnp.zeros((num, blk["q"] + width, f), jnp.float32) for blk, f in zip(blocks, in_features)]

    def sub_pixel_step(m, carry):
      canvas, rows, outputs = carry
      j, c = m // channels, m % channels
      y, rows = pixel(rows, v2h, j)
      y = jax.lax.dynamic_index_in_dim(y, c, axis=1, keepdims=False)  # [num, P]
      x = draw(i * width * channels + m, y)
      canvas = canvas.at[:, i, j, c].set(x)
      rows[0] = rows[0].at[:, blocks[0]["q"] + j, c].set(net_input(x))
      if collect_outputs:
        outputs = outputs.at[:, i, j, c].set(y)
      return canvas, rows, outputs

    canvas, rows, outputs = jax.lax.fori_loop(0, width * channels, sub_pixel_step, (canvas, rows, outputs))
    windows, v2h = vertical(windows, rows[0][:, blocks[0]["q"]:])
    return canvas, windows, v2h, outputs

  windows = [jnp.zeros((num, blk["q"] + 1, width + 2 * blk["q"], f), jnp.float32)
             for blk, f in zip(blocks, in_features)]
  # Row 0's V2H sees the zeros of the down-shift: its bias.
  v2h = [jnp.broadcast_to(blk["v2h_bias"], (num, width, blk["v2h_bias"].shape[0])) for blk in blocks]
  outputs = jnp.zeros((num, height, width, channels, per_channel) if collect_outputs else (), jnp.float32)
  canvas = jnp.zeros((num, height, width, channels), jnp.int32)
  canvas, _, _, outputs = jax.lax.fori_loop(0, height, row_step, (canvas, windows, v2h, outputs))
  return (canvas, outputs) if collect_outputs else canvas

