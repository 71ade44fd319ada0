"""Wall-clock timing of compiled JAX functions and peak memory, shared by the benchmarks in ``experiments/``."""

from __future__ import annotations

import resource
import sys
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


def peak_rss_bytes() -> int:
  """The process's peak resident set size so far (``getrusage``'s ``ru_maxrss``: KiB on Linux,
  bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory() -> str:
  """Peak memory so far, for a benchmark's report: the first device's ``peak_bytes_in_use``
  (``memory_stats()``: GPUs, TPUs) as ``"N MiB device"``, else (XLA:CPU has no memory stats; its
  buffers live in the process) the process's peak RSS as ``"N MiB RSS"``. Neither is ever reset,
  so a script that measures several sizes reports the largest so far."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return f"{stats['peak_bytes_in_use'] / 2**20:.0f} MiB device"
  return f"{peak_rss_bytes() / 2**20:.0f} MiB RSS"
