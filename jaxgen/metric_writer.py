"""Scalar metrics to JSONL (``metrics.jsonl``) and TensorBoard event files, from process 0 only.

TensorBoard events are written with tensorboardX, which needs no TensorFlow. ``metrics.jsonl``
goes through ``etils.epath``: locally it is appended to; on a remote store (``gs://``, ``s3://``),
which cannot append, it is kept in memory and rewritten whole at each write (a few thousand short
rows). On a remote store the event file goes through epath the same way (registered as
tensorboardX's writer for the scheme: its own ``gs://`` writer needs google-cloud-storage).
Storage errors (disk full, read-only) are ``OSError``s naming the file.

Resume: a run restored from step ``s`` drops the rows of steps ``> s`` written by the interrupted
run (those steps are trained again), a row cut off by a kill and a damaged one (not JSON, not
UTF-8), so the file has one row per logged step and kind. Its new event file starts with
TensorBoard's purge marker at step ``s + 1`` (a ``SessionLog.START``), so TensorBoard drops the
interrupted run's events of those steps too.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from typing import Mapping

import jax
import numpy as np
from etils import epath

from jaxgen import workdir as workdir_lib


class _RemoteEventFile:
  """One TensorBoard event file on a remote store: buffered, written whole at each flush."""

  def __init__(self, path: str):
    self._path, self._buffer = epath.Path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    self._path.write_bytes(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _RemoteEventFiles:
  """tensorboardX's writer factory interface (``record_writer.register_writer_factory``)."""

  def open(self, path: str) -> _RemoteEventFile:
    return _RemoteEventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def parse_row(row: str) -> dict | None:
  """A complete row of ``metrics.jsonl`` (``{"step": int, name: value, ...}``); None for a blank or
  damaged one, or one cut off by a kill or a full disk mid-write (or still being written)."""
  try:
    parsed = json.loads(row) if row.endswith("\n") else None
    int(parsed["step"])
    return parsed
  except (ValueError, KeyError, TypeError):
    return None


def read_rows(path: epath.Path) -> list[str]:
  """The lines of ``path``, each with its newline; bytes that are not UTF-8 (a damaged block) become
  U+FFFD, so their rows do not parse."""
  return path.read_bytes().decode(errors="replace").splitlines(keepends=True)


@contextlib.contextmanager
def _naming(path):
  """Storage errors (disk full, read-only) name ``path``: a failed flush names no file."""
  try:
    yield
  except OSError as e:
    raise OSError(e.errno, e.strerror, e.filename or str(path)) from None


class MetricWriter:
  def __init__(self, workdir: str, filename: str = "metrics.jsonl", resume_step: int | None = None,
               redo: str = ""):
    """``resume_step``: the rows of later steps are dropped, and with ``redo`` (a prefix, ``"eval/"``)
    the rows of that step holding such metrics (they are computed again)."""
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from tensorboardX import SummaryWriter, record_writer  # imported lazily: processes > 0 never write

    root = workdir_lib.path(workdir)
    self._path = root / filename
    self._remote = workdir_lib.is_remote(root)
    if self._remote:  # tensorboardX picks a writer by the text before ':'
      record_writer.register_writer_factory(str(root).split(":", 1)[0], _RemoteEventFiles())
    rows = read_rows(self._path) if self._path.exists() else []
    if resume_step is not None:
      def keep(row: dict) -> bool:
        step = int(row["step"])
        return step < resume_step or step == resume_step and not (redo and any(k.startswith(redo) for k in row))

      kept = [r for r in rows if (row := parse_row(r)) is not None and keep(row)]
      if len(kept) != len(rows):
        workdir_lib.write_atomic(self._path, "".join(kept))
      rows = kept
    self._rows = rows if self._remote else None
    self._file = None if self._remote else self._path.open("a")
    # tensorboardX names the event file by the second and truncates an existing one: the suffix keeps
    # a writer opened within the same second from erasing the last one's events, in start order.
    redone = bool(redo) and resume_step is not None  # the resumed step's events are purged too, its kept rows rewritten
    self._tb = SummaryWriter(str(root / "tensorboard"),
                             purge_step=None if resume_step is None else resume_step + (0 if redone else 1),
                             filename_suffix=f".{time.time_ns()}")
    for row in map(parse_row, rows if redone else []):
      if row is not None and int(row["step"]) == resume_step:
        for k, v in row.items():
          if k != "step":
            self._tb.add_scalar(k, v, resume_step)

  def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
    if not self.active:
      return
    scalars = {prefix + k: float(np.asarray(v)) for k, v in scalars.items()}
    row = json.dumps({"step": int(step), **scalars}) + "\n"
    with _naming(self._path):
      if self._remote:
        self._rows.append(row)
        self._path.write_text("".join(self._rows))
      else:
        self._file.write(row)
        self._file.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))
    with _naming(self._tb.logdir):
      self._tb.flush()

  def close(self) -> None:
    if self.active:
      if self._file is not None:
        with _naming(self._path):  # flushes what a failed write left in the buffer
          self._file.close()
      with _naming(self._tb.logdir):
        self._tb.close()
