"""A small residual MLP denoiser for low-dimensional points (the ``toy2d/*`` data sets)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxgen.nn.unet import ConditionEmbedding


class MLPDenoiser(nn.Module):
  """``f(x_t, t[, label]) -> [B, D]`` for points ``x_t`` ``[B, D]``.

  ``Dense(x) -> num_blocks x [h + Dense(swish(Dense(swish(LayerNorm(h))) + Dense(emb)))] ->
  Dense(D)``, with ``emb`` the timestep (and class) embedding of ``ConditionEmbedding``.
  """

  hidden: int = 128
  num_blocks: int = 3
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, label: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    del train  # no dropout: the signature matches the UNet's
    if self.num_classes > 0 and label is None:
      raise ValueError("a class-conditional MLPDenoiser needs labels")
    emb = ConditionEmbedding(self.hidden, self.num_classes)(t, label)
    h = nn.Dense(self.hidden)(x)
    for _ in range(self.num_blocks):
      y = nn.Dense(self.hidden)(nn.swish(nn.LayerNorm()(h))) + nn.Dense(self.hidden)(nn.swish(emb))
      h = h + nn.Dense(self.hidden)(nn.swish(y))
    return nn.Dense(x.shape[-1])(nn.swish(nn.LayerNorm()(h)))
