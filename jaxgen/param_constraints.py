"""Constraints on parameters, written as optax transformations that run after an optimizer.

``clip_params(c)`` is the weight clipping of the original WGAN (Arjovsky et al. 2017, algorithm 1):
after each optimizer update every parameter is clipped to ``[-c, c]``, which keeps the critic in a
compact set of functions (hence K-Lipschitz for some K). As an optax transformation chained after
the optimizer, ``optax.chain(optax.rmsprop(lr), clip_params(c))``, it returns updates ``u'``
such that ``params + u'`` (as ``optax.apply_updates`` computes it in floating point) lies in
``[-c, c]``: ``u' = u`` where ``params + u`` is inside, else ``params + u' = clip(params + u, -c, c)``
up to rounding (two units in the last place of ``|params| + c``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _clipped_update(p: jax.Array, u: jax.Array, bound: float) -> jax.Array:
  """``u'`` with ``fl(p + u')`` in ``[-bound, bound]``: ``u`` where ``p + u`` is inside, else
  ``clip(p + u) - p``, nudged by one ulp where rounding would land ``p + u'`` just outside."""
  t = p + u
  d = jnp.where(jnp.abs(t) <= bound, u, jnp.clip(t, -bound, bound) - p)
  d = jnp.where(p + d > bound, jnp.nextafter(d, jnp.asarray(-jnp.inf, d.dtype)), d)
  return jnp.where(p + d < -bound, jnp.nextafter(d, jnp.asarray(jnp.inf, d.dtype)), d)


def clip_params(bound: float) -> optax.GradientTransformation:
  """Updates that leave every parameter in ``[-bound, bound]`` (chain it after the optimizer)."""
  if bound <= 0:
    raise ValueError(f"clip_params needs a positive bound, got {bound}")

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("clip_params needs the params: call update(updates, state, params)")
    return jax.tree.map(lambda u, p: _clipped_update(p, u, bound), updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)
