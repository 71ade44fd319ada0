"""The training state (one pytree that is jitted, donated, sharded and checkpointed whole), and the
check that an update left it finite.

``finite_flags(loss, grads, opt_state, params)`` runs inside the compiled step, once per update
group: ``bool[4]``, whether the loss, the gradient, the updated optimizer state and the updated
params are all finite (``jnp.isfinite`` reduced over every element: one fused pass, no transfer).
The host reads the flags with the step's metrics and ``check_finite`` stops the run, naming the
step, the term and which of the four went non-finite first, before anything of that step is saved.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import NonFiniteLossError

#: What ``finite_flags`` checks, in the order a NaN propagates through one update.
TERMS = ("loss", "gradient", "optimizer state", "params")


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly where it stopped.

  ``step``: int32 scalar, the number of completed optimizer steps.
  ``params`` / ``opt_state`` / ``ema_params``: ``{network: pytree}`` (one optax state per network).
  ``state``: ``{network: {collection: pytree}}``, non-gradient Flax collections (BatchNorm stats...).
  No RNG is stored: randomness is ``fold_in(key(config.seed), step)``, so a resumed run repeats an
  uninterrupted one.
  """

  step: jax.Array
  params: dict[str, Any]
  state: dict[str, Any]
  opt_state: dict[str, Any]
  ema_params: dict[str, Any]


def all_finite(tree: Any) -> jax.Array:
  """bool scalar: every floating-point element of ``tree`` is finite (integer leaves always are)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def finite_flags(loss: jax.Array, grads: Any, opt_state: Any, params: Any) -> jax.Array:
  """``bool[4]`` in the order of ``TERMS``: the loss, the gradient, the optimizer state after the
  update and the params after the update are finite. Call inside the compiled step (cheap: one
  reduction per leaf, fused by XLA); several updates of one network combine with ``&``."""
  return jnp.stack([jnp.all(jnp.isfinite(loss)), all_finite(grads), all_finite(opt_state), all_finite(params)])


def check_finite(step: int, flags: Mapping[str, Any], metrics: Mapping[str, Any],
                 last_saved: int | None) -> None:
  """Raises ``NonFiniteLossError`` unless every ``flags[network]`` (``bool[4]``, see
  ``finite_flags``) is all true. ``metrics``: the step's host metrics; ``<net>/loss`` and
  ``<net>/grad_norm`` are quoted in the message. ``last_saved``: the newest checkpoint's step.

  The message names the step, the network's loss term, and the first of loss, gradient, optimizer
  state, params that went non-finite, e.g. ``non-finite gradient at step 12: disc/loss=0.69,
  disc/grad_norm=inf (...)``.
  """
  bad = {net: [t for t, ok in zip(TERMS, np.asarray(f).reshape(-1)) if not ok] for net, f in sorted(flags.items())}
  bad = {net: terms for net, terms in bad.items() if terms}
  if not bad:
    return
  net, terms = next(iter(bad.items()))
  quoted = [f"{k}={float(np.asarray(metrics[k])):.4g}" for k in (f"{net}/loss", f"{net}/grad_norm") if k in metrics]
  others = "".join(f"; {n}: {', '.join(t)}" for n, t in list(bad.items())[1:])
  kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved else "no checkpoint was written"
  raise NonFiniteLossError(
      f"non-finite {terms[0]} at step {step}: {', '.join(quoted) or net + '/loss'} (non-finite {net}: "
      f"{', '.join(terms)}{others}); training stopped and {kept}. Lower the learning rate "
      "or clip gradients (--config.optim.<network>.grad_clip_norm=1.0)")
