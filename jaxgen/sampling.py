"""Sampling controls shared by every autoregressive model: temperature, top-k, top-p (nucleus).

All functions act on the last axis of ``logits [..., V]`` (V = number of categories) and are
jit-able. ``top_k`` must be a static Python int; ``temperature`` and ``top_p`` may be Python
numbers or traced scalars.

The controls are applied in this order (as in most language-model samplers):

1. **Temperature** ``T``: ``logits / T`` before the softmax, so ``p_i ∝ exp(l_i / T)``.
   ``T < 1`` sharpens, ``T > 1`` flattens, ``T = 0`` is greedy: only the argmax is kept.
2. **Top-k**: keep the ``k`` largest logits (exactly ``k``; ``k = 0`` disables).
3. **Top-p** (Holtzman et al. 2020): on the distribution left after steps 1-2, keep the smallest
   set of highest-probability tokens whose total mass is ``>= p`` (``p = 1`` disables). Token
   ``i`` is kept iff the mass of the tokens ranked strictly before it is ``< p``, so the most
   probable token is always kept.

Removed tokens get logit ``-inf``. Ties are broken deterministically: among equal logits the
lower token index ranks first (greedy picks it, top-k / top-p keep it first).

Class-conditional samplers of every family take their labels from ``sample.label`` through
:func:`labels_from_config` (-1: uniform at random, k: class k).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError

DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}  # off: plain ancestral sampling


def _ranks(logits: jax.Array) -> jax.Array:
  """Rank of each entry on the last axis, 0 = largest; ties ranked by lower index first."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def _greedy(logits: jax.Array) -> jax.Array:
  """Keep only the (first) argmax entry of the last axis."""
  best = jnp.argmax(logits, axis=-1)[..., None]
  keep = jnp.arange(logits.shape[-1]) == best
  return jnp.where(keep, logits, -jnp.inf)


def _top_p(logits: jax.Array, top_p) -> jax.Array:
  """Keep the smallest highest-probability set with mass ``>= top_p`` (module docstring)."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  sorted_probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # exclusive cumulative sum
  keep_sorted = (mass_before < top_p).at[..., 0].set(True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  keep = jnp.take_along_axis(keep_sorted, ranks, axis=-1)
  return jnp.where(keep, logits, -jnp.inf)


def process_logits(logits: jax.Array, *, temperature=1.0, top_k: int = 0, top_p=1.0) -> jax.Array:
  """Logits ``[..., V]`` after temperature, top-k and top-p; removed entries are ``-inf``.

  Args:
    logits: unnormalised log-probabilities, float ``[..., V]``.
    temperature: ``T >= 0``; logits are divided by ``T``; ``T == 0`` keeps only the argmax.
    top_k: static int; keep the ``k`` largest entries (0 disables).
    top_p: ``0 < p <= 1``; nucleus mass (1 disables).

  Returns:
    float ``[..., V]``; ``softmax`` of it is the sampling distribution.
  """
  logits = jnp.asarray(logits, jnp.float32)
  if isinstance(temperature, (int, float)):
    logits = _greedy(logits) if temperature == 0 else logits / temperature
  else:
    temperature = jnp.asarray(temperature, jnp.float32)
    safe = jnp.where(temperature > 0, temperature, 1.0)
    logits = jnp.where(temperature > 0, logits / safe, _greedy(logits))
  if top_k:
    logits = jnp.where(_ranks(logits) < top_k, logits, -jnp.inf)
  if not (isinstance(top_p, (int, float)) and top_p >= 1.0):
    logits = _top_p(logits, top_p)
  return logits


def probabilities(logits: jax.Array, **controls) -> jax.Array:
  """Sampling distribution ``softmax(process_logits(logits, **controls))``, ``[..., V]``."""
  return jax.nn.softmax(process_logits(logits, **controls), axis=-1)


def sample_logits(rng: jax.Array, logits: jax.Array, *, temperature=1.0, top_k: int = 0,
                  top_p=1.0) -> jax.Array:
  """One category per row of ``logits [..., V]`` under the controls: int32 ``[...]``."""
  processed = process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  return jax.random.categorical(rng, processed, axis=-1).astype(jnp.int32)


def controls_from_config(sample_config: Mapping[str, Any] | None) -> dict[str, Any]:
  """``dict(temperature, top_k, top_p)`` from ``config.sample`` (missing fields -> defaults).

  Raises:
    UserError: a control outside its range (``T >= 0``, ``k >= 0``, ``0 < p <= 1``).
  """
  sample_config = sample_config or {}
  controls = {name: sample_config.get(name, default) for name, default in DEFAULTS.items()}
  temperature = float(controls["temperature"])
  top_k = int(controls["top_k"])
  top_p = float(controls["top_p"])
  if temperature < 0:
    raise UserError(f"sample.temperature={temperature} is negative; use T >= 0 (0 = greedy)")
  if top_k < 0:
    raise UserError(f"sample.top_k={top_k} is negative; use k >= 0 (0 disables top-k)")
  if not 0.0 < top_p <= 1.0:
    raise UserError(f"sample.top_p={top_p} is outside (0, 1]; use 1.0 to disable nucleus sampling")
  return {"temperature": temperature, "top_k": top_k, "top_p": top_p}


def labels_from_config(sample_config, num_classes: int, rng: jax.Array, num: int) -> jax.Array | None:
  """Class labels int32 ``[num]`` for conditional sampling; the one meaning of ``sample.label``.

  ``sample.label = -1`` (or absent): each label drawn uniformly from ``0..num_classes-1`` with
  ``rng``; ``k >= 0``: class ``k`` for every sample. ``None`` for unconditional models
  (``num_classes == 0``), which take no other label. Any other value is a ``UserError``.
  """
  label = int(sample_config.get("label", -1))
  if not num_classes:
    if label != -1:
      raise UserError(f"sample.label={label} picks a class of a class-conditional model, and this model is "
                      "unconditional: use -1 (the default), or train one with --config.model.conditional=True")
    return None
  if not -1 <= label < num_classes:
    raise UserError(f"sample.label={label} but the data has {num_classes} classes: "
                    f"use -1 (random) or 0..{num_classes - 1}")
  if label >= 0:
    return jnp.full((num,), label, jnp.int32)
  return jax.random.randint(rng, (num,), 0, num_classes, jnp.int32)
