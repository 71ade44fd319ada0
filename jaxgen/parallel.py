"""Data parallelism as ``jit`` over a ``Mesh``: batch sharded on the ``data`` axis, state replicated.

The same code runs single-process and multi-process (``jax.distributed``): every process loads its own
rows of the global batch and ``jax.make_array_from_process_local_data`` assembles the global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgen.errors import UserError

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process.

  ``Auto`` axes: XLA propagates shardings through the model code (gathers, cache updates, reshapes)
  as plain ``jit`` does; explicit-sharding axes would make every such op spell out its sharding.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, what: str = "train.batch_size") -> None:
  n = jax.device_count()
  if batch_size % n:
    raise UserError(
        f"{what}={batch_size} is not divisible by the number of devices ({n}); "
        f"set --config.{what} to a multiple of {n}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the mesh (no copy to other processes)."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:  # same result; device_put skips the cross-process shape bookkeeping
    return jax.device_put(dict(local_batch), sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
