"""Decode a folder once into one uint8 array ``[N, *shape]``: in memory, or a reused ``.npy`` file.

``decode_folder`` runs a :class:`Decoder` over the listed files (``jaxgen.data.files``) in two
passes, each on a thread pool: ``header`` (cheap: size, mode, rate) of every file, ``layout`` (the
common example shape, or a ``UserError`` naming two files that disagree), then ``decode`` of every
file into its row. A file that fails either pass (``BadFile``) stops the run with one line naming
it, or with ``data.skip_bad_files=True`` is skipped, counted and logged.

Where the array lives:

* in memory when ``N * prod(shape)`` bytes fit ``data.cache_max_bytes``: decoded at every start;
* otherwise in a memory-mapped ``.npy`` file in ``data.cache_dir`` (``""``: ``$XDG_CACHE_HOME/jaxgen``
  or ``~/.cache/jaxgen``; a local directory), with an index ``<kind>-<hash of the root>.json``
  holding the *manifest*: the root, every file's relative path, size and mtime (ns), the decoding
  options and ``skip_bad_files``. A later run whose manifest is equal reuses the file (loaded into
  memory if it now fits the budget); any change (a file added, removed or rewritten, another
  option) rebuilds it and deletes the old one. Files are written under temporary names and renamed,
  so a killed build leaves no half-written cache, and processes that build at once each leave a
  complete one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from absl import logging
from etils import epath

from jaxgen.data.files import BadFile, File
from jaxgen.errors import UserError

VERSION = 1
DEFAULTS = {
    "cache_max_bytes": 1 << 30,  # folders, tfds images: decoded bytes kept in memory (more: .npy cache)
    "cache_dir": "",  # folders: where .npy caches live ("" = $XDG_CACHE_HOME/jaxgen or ~/.cache/jaxgen)
}


class Decoder(Protocol):
  """How one source reads its files (see the module docstring)."""

  #: Everything besides the files that the decoded values depend on (JSON-able).
  options: dict[str, Any]

  def header(self, file: File) -> Any:
    """Cheap per-file facts for ``layout``; raises ``BadFile``."""
    ...

  def layout(self, headers: Sequence[tuple[File, Any]]) -> tuple[tuple[int, ...], dict[str, Any]]:
    """``(shape of one example, meta)`` from the headers of the readable files; raises
    ``UserError`` when they disagree. ``meta`` (JSON-able) is stored with the cache."""
    ...

  def decode(self, file: File, meta: dict[str, Any]) -> np.ndarray:
    """One file -> uint8 array of the layout's shape; raises ``BadFile``."""
    ...


@dataclasses.dataclass(frozen=True)
class Decoded:
  """``x`` uint8 ``[M, *shape]`` (in memory or memory-mapped), ``kept`` int64 ``[M]``: the index in
  the file list of each row, ``meta`` from the layout, the ``skipped`` files' names, the ``.npy``
  path (``""`` in memory)."""

  x: np.ndarray
  kept: np.ndarray
  meta: dict[str, Any]
  skipped: tuple[str, ...]
  path: str


def cache_dir(data_config: Any) -> epath.Path:
  """``data.cache_dir`` or the user cache directory's ``jaxgen`` folder; must be local."""
  text = str(data_config.get("cache_dir", "") or "")
  if not text:
    text = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "jaxgen")
  if "://" in text:
    raise UserError(f"data.cache_dir={text!r} is not a local directory; .npy caches are "
                    "memory-mapped: set --config.data.cache_dir to a local directory")
  return epath.Path(os.path.expanduser(text))


def _map(fn: Callable[[int], Any], n: int) -> list[Any]:
  """``[fn(0), ..., fn(n - 1)]`` on a thread pool (Pillow, zlib and file reads release the GIL)."""
  with concurrent.futures.ThreadPoolExecutor() as pool:
    return list(pool.map(fn, range(n)))


def _guarded(fn: Callable[[File], Any], file: File) -> tuple[Any, BadFile | None]:
  try:
    return fn(file), None
  except BadFile as e:
    return None, e


class _Bad:
  """Collects bad files: raises for the first unless ``skip``."""

  def __init__(self, kind: str, root: epath.Path, skip: bool):
    self._where, self._skip = f"{kind}:{root}", skip
    self.names: list[str] = []

  def check(self, file: File, error: BadFile | None) -> bool:
    """Whether ``file`` is good; a bad one raises, or is recorded when skipping."""
    if error is None:
      return True
    if not self._skip:
      raise UserError(f"{self._where}: file {file.name} {error.problem}; {error.fix}, or set "
                      "data.skip_bad_files=True to skip and count such files")
    self.names.append(file.name)
    return False


def _log_skipped(kind: str, root: epath.Path, names: Sequence[str]) -> None:
  """The warning that counts the skipped bad files, whether just decoded or read from the cache."""
  if names:
    logging.warning("%s:%s: skipped %d bad files (data.skip_bad_files=True): %s%s", kind, root,
                    len(names), ", ".join(names[:5]), " ..." if len(names) > 5 else "")


def decode_folder(kind: str, root: epath.Path, files: Sequence[File], decoder: Decoder,
                  data_config: Any) -> Decoded:
  """The decoded files, from the cache when it is current (module docstring)."""
  skip = bool(data_config.get("skip_bad_files", False))
  budget = int(data_config.get("cache_max_bytes", DEFAULTS["cache_max_bytes"]))
  manifest = json.loads(json.dumps({
      "version": VERSION, "kind": kind, "root": str(root), "options": decoder.options,
      "skip_bad_files": skip, "files": [[f.name, f.size, f.mtime_ns] for f in files]}))
  directory = cache_dir(data_config)
  index_path = directory / f"{kind}-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"
  decoded = _reuse(index_path, manifest, budget)
  if decoded is not None:
    _log_skipped(kind, root, decoded.skipped)
    return decoded

  bad = _Bad(kind, root, skip)
  headers = _map(lambda i: _guarded(decoder.header, files[i]), len(files))
  rows = [i for i, (_, error) in enumerate(headers) if bad.check(files[i], error)]
  if not rows:
    raise UserError(f"{kind}:{root}: none of its {len(files)} files is readable (skipped: "
                    f"{', '.join(bad.names[:3])} ...): point data.name at a folder of good files")
  shape, meta = decoder.layout([(files[i], headers[i][0]) for i in rows])
  size = len(rows) * int(np.prod(shape))
  in_memory = size <= budget
  if in_memory:
    x = np.empty((len(rows), *shape), np.uint8)
  else:
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
    path = directory / f"{index_path.stem}-{digest}.npy"
    tmp = f"{path}.{os.getpid()}.tmp"
    logging.info("decoding %d files of %s:%s into %s", len(rows), kind, root, path)
    x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *shape))

  def fill(j: int) -> BadFile | None:
    array, error = _guarded(lambda f: decoder.decode(f, meta), files[rows[j]])
    if error is None:
      if array.shape != tuple(shape):
        return BadFile(f"decodes to shape {array.shape}, not the {tuple(shape)} of its header")
      x[j] = array
    return error

  try:
    errors = _map(fill, len(rows))
    good = [j for j, error in enumerate(errors) if bad.check(files[rows[j]], error)]
  except BaseException:
    if not in_memory:
      os.remove(tmp)
    raise
  kept = np.asarray(rows, np.int64)[good]
  _log_skipped(kind, root, bad.names)
  if in_memory:
    return Decoded(x if len(good) == len(rows) else x[good], kept, meta, tuple(bad.names), "")
  if len(good) != len(rows):
    x = _compact(x, good, tmp)
  x.flush()
  os.replace(tmp, path)
  index = {"manifest": manifest, "data": path.name, "kept": kept.tolist(), "meta": meta,
           "skipped": bad.names}
  previous = _read_index(index_path)
  index_tmp = f"{index_path}.{os.getpid()}.tmp"
  with open(index_tmp, "w") as f:
    json.dump(index, f)
  os.replace(index_tmp, index_path)
  if previous is not None and previous.get("data") not in (None, path.name):
    (directory / previous["data"]).unlink(missing_ok=True)
  return Decoded(np.load(path, mmap_mode="r"), kept, meta, tuple(bad.names), str(path))


def _compact(x: np.memmap, good: list[int], tmp: str) -> np.memmap:
  """The rows ``good`` of ``x`` (whose file is ``tmp``) in a new file at ``tmp``."""
  x.flush()
  os.replace(tmp, f"{tmp}.full")  # x stays mapped
  out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(good), *x.shape[1:]))
  for start in range(0, len(good), 1024):
    out[start:start + 1024] = x[good[start:start + 1024]]
  os.remove(f"{tmp}.full")
  return out


def _read_index(path: epath.Path) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _reuse(index_path: epath.Path, manifest: dict[str, Any], budget: int) -> Decoded | None:
  """The cached array when the index at ``index_path`` has this ``manifest`` and its file reads."""
  index = _read_index(index_path)
  if index is None or index.get("manifest") != manifest:
    return None
  path = index_path.parent / index["data"]
  try:
    x = np.load(path, mmap_mode="r")
  except (OSError, ValueError):
    return None
  if x.shape[0] != len(index["kept"]):
    return None
  if x.nbytes <= budget:
    x = np.array(x)
  return Decoded(x, np.asarray(index["kept"], np.int64), index["meta"], tuple(index["skipped"]),
                 str(path))
