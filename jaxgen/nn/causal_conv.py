"""Dilated causal 1-D convolution with a Fast-WaveNet queue for step-by-step generation.

A causal convolution with kernel size ``k`` and dilation ``d`` maps ``x [B, T, Cin]`` to

    y_t = b + sum_{m=0}^{k-1} W_m x_{t - (k-1-m) d}        (x_s = 0 for s < 0: zero padding)

so ``y_t`` depends on ``x_{t-(k-1)d} .. x_t`` only. Generation (Paine et al. 2016, Fast
WaveNet) computes one time step at a time and keeps, per layer, a *queue* of the last
``(k-1) d`` inputs: a circular buffer ``[B, (k-1) d, Cin]`` whose slot ``s mod ((k-1) d)`` holds
``x_s``. Step ``t`` reads the taps ``x_{t - (k-1-m) d}`` from slots ``(t - (k-1-m) d) mod
((k-1) d)`` and then overwrites slot ``t mod ((k-1) d)`` (the oldest tap) with ``x_t``. A buffer
of zeros is exactly the zero padding of the full convolution, so the two agree at every step; the
taps are summed in the same order in both, so they agree up to the matmul's float rounding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def shift_right(x: jax.Array, shift: int) -> jax.Array:
  """``[B, T, C]``: output position ``t`` holds input ``t - shift`` (zeros before the start)."""
  if shift == 0:
    return x
  return jnp.pad(x, ((0, 0), (shift, 0), (0, 0)))[:, :x.shape[1]]


class CausalConv1D(nn.Module):
  """Dilated causal convolution ``[B, T, in_features] -> [B, T, features]`` (module docstring).

  ``__call__`` processes a whole sequence; ``step`` one time step with a queue from
  ``init_queue``. Both use the same parameters ``kernel [k, in, out]`` and ``bias [out]``.
  """

  in_features: int
  features: int
  kernel_size: int = 2
  dilation: int = 1

  def setup(self):
    if self.kernel_size < 2:
      raise ValueError(f"a causal convolution needs kernel_size >= 2, got {self.kernel_size}")
    self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                             (self.kernel_size, self.in_features, self.features))
    self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

  @property
  def queue_length(self) -> int:
    """``(k - 1) d``: how many past inputs a step needs."""
    return (self.kernel_size - 1) * self.dilation

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bias
    for m in range(self.kernel_size):
      y = y + shift_right(x, (self.kernel_size - 1 - m) * self.dilation) @ self.kernel[m]
    return y

  def init_queue(self, batch: int) -> jax.Array:
    """An empty queue ``[batch, (k-1) d, in_features]`` (zeros = the padding before time 0)."""
    return jnp.zeros((batch, self.queue_length, self.in_features), jnp.float32)

  def step(self, x_t: jax.Array, queue: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x_t [B, in], queue, t) -> (y_t [B, out], queue)`` for time ``t`` (int scalar, >= 0)."""
    n = self.queue_length
    y = self.bias
    for m in range(self.kernel_size - 1):
      slot = (t - (self.kernel_size - 1 - m) * self.dilation) % n
      y = y + jax.lax.dynamic_index_in_dim(queue, slot, axis=1, keepdims=False) @ self.kernel[m]
    y = y + x_t @ self.kernel[self.kernel_size - 1]
    return y, jax.lax.dynamic_update_index_in_dim(queue, x_t.astype(queue.dtype), t % n, axis=1)
