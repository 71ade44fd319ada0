"""Data parallelism as ``jit`` over a ``Mesh``: batch sharded on the ``data`` axis, state replicated
or (``train.param_sharding="fsdp"``) sharded on the same axis.

The same code runs single-process and multi-process (``jax.distributed``): every process loads its own
rows of the global batch and ``jax.make_array_from_process_local_data`` assembles the global array.

FSDP (fully sharded data parallel, ZeRO-3): every array of the train state (params, optimizer
state, EMA) is split over the ``N`` devices along its largest dimension divisible by ``N``; an array
with no such dimension (scalars, small biases) stays replicated. Each device holds ``~1/N`` of the
state; inside the jitted step XLA's SPMD partitioner all-gathers a weight where it is used and
reduce-scatters its gradient, so the step computes the same numbers as the replicated one (up to
the summation order of the gradient reduction).
"""

from __future__ import annotations

from typing import Any

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


def fsdp(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
  """The FSDP rule for one array of ``shape``: its largest dimension divisible by the number of
  devices (the first of equal ones) split over the ``data`` axis; replicated when there is none."""
  n = mesh.shape[DATA_AXIS]
  divisible = [d for d in range(len(shape)) if shape[d] % n == 0 and shape[d] >= n]
  if not divisible:
    return replicated(mesh)
  dim = max(divisible, key=lambda d: (shape[d], -d))
  return NamedSharding(mesh, P(*(DATA_AXIS if d == dim else None for d in range(len(shape)))))


PARAM_SHARDINGS = ("replicated", "fsdp")  # train.param_sharding


def state_sharding(tree: Any, mesh: Mesh, rule: str) -> Any:
  """A ``NamedSharding`` for every array of ``tree`` (arrays or ``jax.ShapeDtypeStruct``): ``rule``
  ``"replicated"`` (every device a full copy) or ``"fsdp"`` (:func:`fsdp`)."""
  if rule == "fsdp":
    return jax.tree.map(lambda x: fsdp(x.shape, mesh), tree)
  return jax.tree.map(lambda _: replicated(mesh), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, what: str = "train.batch_size", micro_batches: int = 1) -> None:
  """``batch_size`` splits into ``micro_batches`` (``train.grad_accum_steps``) equal parts, each
  split evenly over the devices; else a ``UserError``."""
  n = jax.device_count() * micro_batches
  if batch_size % n:
    parts = f"the number of devices ({n})" if micro_batches == 1 else (
        f"train.grad_accum_steps={micro_batches} x {jax.device_count()} devices")
    raise UserError(f"{what}={batch_size} is not divisible by {parts}; set --config.{what} to a multiple of {n}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the mesh (no copy to other processes)."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:  # same result; device_put skips the cross-process shape bookkeeping
    return jax.device_put(dict(local_batch), sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
