"""The training state: one pytree that is jitted, donated, sharded and checkpointed whole."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


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
