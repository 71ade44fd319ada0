"""Wall-clock timing of compiled JAX functions, shared by the benchmarks in ``experiments/``."""

from __future__ import annotations

import time

import jax
import numpy as np


def median_seconds(fn, *args, repeats: int) -> float:
  """Median wall time of ``fn(*args)`` over ``repeats`` calls, after one untimed call (compilation);
  every call is waited for with ``jax.block_until_ready`` (JAX dispatches asynchronously)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))
