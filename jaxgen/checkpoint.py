"""Checkpoints with orbax: save every N steps and at the end, keep K, resume from the latest good one.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed while
saving leaves no half-written step behind. A step that exists but fails to restore (corrupted files) is
moved aside to ``checkpoints/corrupted-<step>`` with a warning -- never deleted -- and the previous step
is tried.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Thin wrapper around ``ocp.CheckpointManager`` for one ``TrainState`` pytree."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as ``step`` (asynchronously; call ``wait`` before reading it back)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest checkpoint that restores cleanly, shaped/sharded like ``abstract_state``.

    ``abstract_state``: a pytree of ``jax.ShapeDtypeStruct`` with shardings. Returns ``None`` when
    there is no checkpoint at all.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:  # orbax raises many kinds on damaged files; any means "not usable"
        aside = os.path.join(self.directory, f"corrupted-{step}-{int(time.time())}")
        logging.warning("checkpoint step %d does not restore (%s: %s); moved to %s, trying the previous one",
                        step, type(e).__name__, str(e).splitlines()[0] if str(e) else "", aside)
        if jax.process_index() == 0:
          os.rename(os.path.join(self.directory, str(step)), aside)
        self.manager.reload()
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
