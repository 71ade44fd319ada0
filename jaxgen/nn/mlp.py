"""Multi-layer perceptron shared by the small (2-D / flattened) networks."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """``[B, ...] -> [B, out]``: flatten, then Dense+activation per hidden width, then a Dense output."""

  hidden: Sequence[int]
  out: int
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = self.activation(nn.Dense(width)(x))
    return nn.Dense(self.out)(x)
