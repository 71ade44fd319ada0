"""Errors a user can fix, and the one way a run stops early on purpose.

``jaxgen.main`` prints a ``UserError`` as one line ``jaxgen: error: ...`` and exits with status 1;
``Preempted`` as one line ``jaxgen: preempted: ...`` and exits with ``Preempted.EXIT_CODE``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, NoReturn


class UserError(Exception):
  """Bad input (config, data set name, workdir, ...): the message names the problem and the fix."""


class NonFiniteLossError(UserError):
  """Training produced a NaN or inf loss, gradient, optimizer state or parameter; nothing after the
  last good checkpoint is saved."""


class Preempted(Exception):
  """SIGTERM / SIGINT: the run finished its current step, saved a checkpoint and stopped.

  Exit status 75 (``EX_TEMPFAIL`` of sysexits.h: "try again later"), so a launcher can tell a
  preemption (requeue) from a failure (status 1) and from a finished run (status 0).
  """

  EXIT_CODE = 75

  def __init__(self, signal_name: str, step: int, saved: bool):
    what = f"checkpoint of step {step} saved" if saved else f"stopped at step {step} (nothing new to save)"
    super().__init__(f"{signal_name} received; {what}; rerun the same command to resume")
    self.signal_name, self.step, self.saved = signal_name, step, saved


def fail(message: str, status: int = 1, prefix: str = "error") -> NoReturn:
  """Ends an entry point: one line ``jaxgen: <prefix>: <message>`` on stderr, exit ``status``."""
  print(f"jaxgen: {prefix}: {message}", file=sys.stderr)
  sys.exit(status)


def one_line_errors(main: Callable[..., Any]) -> Callable[..., Any]:
  """``main`` for a script's entry point: a ``UserError`` becomes ``fail``'s one line and exit
  status 1, as in ``jaxgen.main`` (no traceback)."""

  @functools.wraps(main)
  def guarded(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      fail(str(e))

  return guarded
