"""The workdir: one ``etils.epath.Path`` for local and remote runs, checked up front, and its lock.

``path(workdir)`` is the one way to turn ``--workdir`` into a path: a local path becomes absolute,
a remote one (``gs://bucket/run``, any ``scheme://``) is kept as it is -- never passed through
``os.path`` (``os.path.abspath("gs://b/r")`` is ``$PWD/gs:/b/r``, a local directory). Every file
of a run (checkpoints, ``config.json``, metrics, samples, eval) is built from it with ``/``.

``Lock``: ``<workdir>/lock.json`` holds the owner (host, pid, process start time, start time,
command). A second run on the same workdir stops with an error naming the first; a lock whose
owner is on this host and no longer runs (dead pid, or a pid reused by another process) is stale
and taken over with a warning. Locally the file is created atomically (``O_EXCL``); on remote
stores, which have no exclusive create through ``epath``, it is written and read back (two runs
started within the same second may both pass: documented in docs/reliability.md).

``write_atomic(path, data)``: a file written whole or not at all (config, eval, manifests, reference
statistics, samples).

``storage_cause(e)``: whether an exception is a storage failure (disk full, read-only, permission,
quota, a file size limit, remote unavailable) rather than a bug or damaged data, as the short cause a one-line error
names.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

from absl import logging
from etils import epath

from jaxgen.errors import UserError

LOCK_NAME = "lock.json"
#: Seconds after which a local lock file that cannot be read (empty, cut short) counts as stale.
UNREADABLE_GRACE_S = 10.0
# Room for the longest path jaxgen writes below the workdir (an orbax temporary step directory,
# e.g. checkpoints/123456.orbax-checkpoint-tmp-1700000000/state.orbax-.../ocdbt.process_0/d/<32 hex>).
_SUFFIX_ROOM = 256
_PATH_MAX = 4096
_NAME_MAX = 255
_STORAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO,
                   errno.ENOTCONN, errno.ETIMEDOUT, errno.ENODEV, errno.EFBIG}
_STORAGE_MARKERS = {  # tensorstore / remote status text -> what to tell the user
    "no space left": "no space left on device", "os_error_code='28'": "no space left on device",
    "resource_exhausted": "storage quota or space exhausted", "read-only file system": "read-only file system",
    "os_error_code='30'": "read-only file system", "permission denied": "permission denied",
    "permission_denied": "permission denied", "os_error_code='13'": "permission denied",
    "unauthenticated": "not authenticated to the storage", "unavailable": "storage unavailable",
    "deadline_exceeded": "storage timed out", "disk quota": "disk quota exceeded",
    "input/output error": "input/output error",
    "file too large": "file too large", "os_error_code='27'": "file too large",  # ulimit -f, FAT32's 4 GiB
}


def is_remote(workdir: str | os.PathLike) -> bool:
  """Whether ``workdir`` names a remote store (``gs://...``, ``s3://...``)."""
  return "://" in os.fspath(workdir)


def path(workdir: str | os.PathLike) -> epath.Path:
  """``--workdir`` as an ``epath.Path``: absolute when local, untouched when remote.

  Raises ``UserError`` for an empty path and for one too long for the file system once jaxgen's
  own sub-paths are added (a component over 255 bytes, or the whole over 4096 - 256 bytes).
  """
  text = os.fspath(workdir)
  if not text:
    raise UserError("--workdir is empty; pass --workdir=DIR, e.g. --workdir=runs/gan")
  if not is_remote(text):
    text = os.path.abspath(os.path.expanduser(text))
  longest = max((len(part.encode()) for part in text.split("/")), default=0)
  if longest > _NAME_MAX or len(text.encode()) > _PATH_MAX - _SUFFIX_ROOM:
    raise UserError(f"--workdir is too long ({len(text.encode())} bytes, longest name {longest}): names "
                    f"must be <= {_NAME_MAX} bytes and the path <= {_PATH_MAX - _SUFFIX_ROOM}; use a shorter --workdir")
  return epath.Path(text)


def write_atomic(target: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` to ``target`` whole or not at all: a reader, or a rerun after a kill or a full
  disk mid-write, finds the old file or the new one, never a part (an empty ``config.json``).

  Locally through a temporary file beside it and ``os.replace`` (removed if the write fails); a
  remote object store (``gs://``) publishes an object only once it is written whole, so the write
  goes straight there. epath has no atomic write of its own.
  """
  target = epath.Path(target)
  if is_remote(target):
    target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
    return
  tmp = target.with_name(f"{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # unique across nodes
  try:
    tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    os.replace(tmp, target)
  except OSError as e:  # named by the file the caller asked for, not the removed temporary
    tmp.unlink(missing_ok=True)
    raise OSError(e.errno, e.strerror, str(target)) from None
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def storage_cause(e: BaseException) -> str | None:
  """A short cause when ``e`` is a storage failure (not damaged data, not a bug), else None."""
  if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
    return e.strerror.lower() if e.strerror else errno.errorcode[e.errno]
  text = str(e).lower()
  return next((cause for marker, cause in _STORAGE_MARKERS.items() if marker in text), None)


def prepare(root: epath.Path) -> None:
  """Creates ``root`` and checks that a file can be written in it; ``UserError`` naming the cause."""
  probe = root / f".write_test_{uuid.uuid4().hex}"
  try:
    root.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UserError(f"workdir {root} is not writable ({e.strerror or e}); pass --workdir=DIR you can write to") from None


def remove_if_empty(root: epath.Path) -> None:
  """Removes the directory ``root`` if it holds nothing (a run refused before it wrote anything)."""
  try:
    if root.is_dir() and not any(root.iterdir()):
      root.rmdir()
  except OSError:  # in use, or not ours to remove: leave it
    pass


def _process_start(pid: int) -> str | None:
  """The start time of process ``pid`` in clock ticks since boot (Linux), to tell pid reuse apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int, start: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: alive
    pass
  now = _process_start(pid)
  return start is None or now is None or now == start


def _describe(owner: dict[str, Any]) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("time", 0)))
  return (f"host {owner.get('host')}, pid {owner.get('pid')}, started {started}: "
          f"{' '.join(owner.get('argv', []))[:200]}")


class Lock:
  """``with Lock(root):`` -- this process owns ``root`` until the block ends.

  ``acquire`` raises ``UserError`` naming the owner when another live run holds the lock.
  """

  def __init__(self, root: epath.Path):
    self.path = root / LOCK_NAME
    pid = os.getpid()
    self.owner = {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid),
                  "time": time.time(), "argv": sys.argv, "token": uuid.uuid4().hex}
    self.held = False

  def _read(self) -> dict[str, Any] | None:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):  # unreadable or half-written: an owner we cannot name
      return {}

  def _stale(self, owner: dict[str, Any]) -> bool:
    if not owner and not is_remote(self.path):
      # Unreadable: a run writes its lock right after creating it, so one still empty or cut short
      # after UNREADABLE_GRACE_S was left by a run killed (or out of space) in between.
      try:
        return time.time() - os.stat(self.path).st_mtime > UNREADABLE_GRACE_S
      except FileNotFoundError:
        return True
    if owner.get("host") != self.owner["host"] or not isinstance(owner.get("pid"), int):
      return False  # another machine (or an unreadable remote lock): cannot tell, assume it runs
    return not _alive(owner["pid"], owner.get("pid_start"))

  def _refuse(self, owner: dict[str, Any]) -> UserError:
    if not owner:  # empty or cut short: a run writing it right now, or one that died doing so
      after = f"delete {self.path}" if is_remote(self.path) else f"rerun after {UNREADABLE_GRACE_S:.0f} s: it is stale then"
      return UserError(f"workdir {self.path.parent} is in use by another run (its lock {self.path} is empty or "
                       f"unreadable: that run may be starting); wait for it, or pass another --workdir (if no run "
                       f"is starting there, {after})")
    return UserError(f"workdir {self.path.parent} is in use by another run ({_describe(owner)}); wait "
                     f"for it or stop it, or pass another --workdir (if that run is gone, delete {self.path})")

  def acquire(self) -> None:
    owner = self._read()
    if owner is not None:
      if not self._stale(owner):
        raise self._refuse(owner)
      logging.warning("taking over the stale lock %s of a run that no longer runs (%s)", self.path, _describe(owner))
      self.path.unlink(missing_ok=True)
    text = json.dumps(self.owner)
    try:
      if is_remote(self.path):
        self.path.write_text(text)
      else:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
          with open(fd, "w") as f:
            f.write(text)
        except OSError:  # e.g. no space left: remove the empty lock this process created
          self.path.unlink(missing_ok=True)
          raise
    except FileExistsError:  # another run created it since we looked
      raise self._refuse(self._read() or {}) from None
    except OSError as e:
      raise UserError(f"cannot create the lock {self.path} ({e.strerror or e}); pass --workdir=DIR you can write to") from None
    if (self._read() or {}).get("token") != self.owner["token"]:
      raise self._refuse(self._read() or {})
    self.held = True

  def release(self) -> None:
    """Removes the lock file if this process still owns it."""
    if self.held and (self._read() or {}).get("token") == self.owner["token"]:
      self.path.unlink(missing_ok=True)
    self.held = False

  def __enter__(self) -> Lock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


class RunLock:
  """The workdir lock of a (possibly multi-process) run: process 0 holds it, and every process
  learns whether it got it, so all of them stop together when another run owns the workdir."""

  def __init__(self, root: epath.Path):
    self.lock = Lock(root)

  def __enter__(self) -> RunLock:
    import jax  # pylint: disable=import-outside-toplevel

    if jax.process_count() == 1:
      self.lock.acquire()
      return self
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    error = None
    if jax.process_index() == 0:
      try:
        self.lock.acquire()
      except UserError as e:
        error = e
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if error is not None:
      raise error
    if not int(ok):
      raise UserError(f"workdir {self.lock.path.parent} is in use by another run (see process 0's message); "
                      "pass another --workdir")
    return self

  def __exit__(self, *exc) -> None:
    self.lock.release()
