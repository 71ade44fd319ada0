"""Stopping on SIGTERM / SIGINT at a step boundary, every process at the same step.

Schedulers preempt jobs with SIGTERM and a grace period (SLURM ``--signal=TERM@120``, Kubernetes
``terminationGracePeriodSeconds``, TPU maintenance events); Ctrl-C sends SIGINT. ``StopSignal``
turns either into a flag; the training loop asks ``should_stop(step)`` after dispatching each step
and, when it says so, saves a checkpoint of that step and raises ``errors.Preempted`` (exit status
75). A second Ctrl-C interrupts at once (Python's default ``KeyboardInterrupt``).

Several processes must stop at the same step (the checkpoint is a collective save). With one
process ``should_stop`` is the local flag. With several, each call contributes the local flag to a
max over all processes (a tiny jitted reduction, dispatched asynchronously) and returns the result
of the *previous* call's reduction: every process reads the same value at the same loop iteration,
so all agree on the stop step, one step after the first signal, without stalling the device.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import parallel

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Set by a sweep in each point's environment to the sweep's pid (``stop_with_parent``).
PARENT_ENV = "JAXGEN_SWEEP_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_parent() -> None:
  """A sweep's point: SIGTERM (save the step, exit 75) when the sweep process dies, even by SIGKILL,
  instead of training on as an orphan that holds the point's workdir lock.

  Applies when ``$JAXGEN_SWEEP_PID`` is set, on Linux (``prctl(PR_SET_PDEATHSIG)``: the kernel
  signals the child when the thread that started it ends; the sweep's thread waits for the point
  until it exits). If the sweep is already gone, the process stops at once. No-op elsewhere.
  """
  parent = os.environ.get(PARENT_ENV)
  if not parent or not sys.platform.startswith("linux"):
    return
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
  if os.getppid() != int(parent):  # the sweep died before the request: no signal will come
    os.kill(os.getpid(), signal.SIGTERM)


class StopSignal:
  """Installs handlers for ``signals`` on construction; ``restore()`` puts the previous ones back.

  Use as a context manager around the training loop. Handlers can only be installed from the
  main thread; elsewhere (e.g. a loop run in a worker thread) the object is inert.
  """

  def __init__(self, signals: tuple[signal.Signals, ...] = SIGNALS):
    self.received: str | None = None  # name of the first signal, e.g. "SIGTERM"
    self._previous: dict[signal.Signals, Any] = {}
    self._pending: Any = None  # the all-process reduction dispatched by the last should_stop
    try:
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread
      self.restore()

  def _handle(self, signum: int, frame) -> None:
    del frame
    if self.received is None:
      self.received = signal.Signals(signum).name
      if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
        signal.signal(signal.SIGINT, signal.default_int_handler)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after ``step``; call once per step on every process, in step order."""
    del step  # the agreement is by call order, identical on every process
    if jax.process_count() == 1:
      return self.received is not None
    previous, self._pending = self._pending, any_process(self.received is not None)
    return previous is not None and bool(np.asarray(previous.addressable_data(0)))

  @property
  def reason(self) -> str:
    """What stopped the run, for the message: this process's signal, or another process's."""
    return self.received or "a stop signal on another process"

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def __enter__(self) -> StopSignal:
    return self

  def __exit__(self, *exc) -> None:
    self.restore()


def any_process(flag: bool) -> jax.Array:
  """``max`` of ``flag`` over all processes, as a replicated int32 scalar, dispatched but not read
  (read it later with ``np.asarray(x.addressable_data(0))``)."""
  mesh = _mesh()
  local = np.full((jax.local_device_count(),), flag, np.int32)
  flags = jax.make_array_from_process_local_data(parallel.batch_sharding(mesh), local)
  return _max(mesh)(flags)


@functools.cache
def _mesh() -> jax.sharding.Mesh:
  return parallel.make_mesh()


@functools.cache
def _max(mesh: jax.sharding.Mesh):
  return jax.jit(jnp.max, out_shardings=parallel.replicated(mesh))
