"""Folders of files (``images:PATH``, ``audio:PATH``): listing, the train/test split, folder labels.

Listing (``list_files``): every file below ``PATH`` (recursively, through symbolic links to folders,
each real folder once; files and folders whose names start with ``.`` are skipped) with an
extension the source reads (any case), sorted by its path relative to ``PATH`` (``/``-separated,
e.g. ``cat/001.png``). Paths are ``etils.epath`` paths.

Split (``split_files``):

* If ``PATH`` has a ``test/`` sub-folder (else a ``val/`` one), its files are the test split and
  the training split is ``PATH/train/`` when that exists, else every other file (when both
  ``test/`` and ``val/`` exist, ``val/`` is not read).
* Otherwise file ``f`` is a test file when ``u(f) < data.test_fraction``, where ``u(f)`` is the
  first 8 bytes of SHA-256 of ``f``'s relative path read as a fraction of ``2**64``. Each file's
  side depends on its own path only, so adding files never moves another one.

Labels (``data.labels_from_folders=True``): the first folder of a file's path below its split
folder (``PATH``, ``PATH/train``, ``PATH/test``, ...) names its class, e.g. ``test/cat/1.png`` ->
``cat``; class ids number the sorted names of the classes of both splits (``num_classes`` of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Sequence

import numpy as np
from absl import logging
from etils import epath

from jaxgen.data import source
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

#: The ``config.data`` fields of folder sources.
DEFAULTS = {
    "labels_from_folders": False,  # folders: class labels from the first sub-folder's name
    "test_fraction": 0.1,  # files, arrays: share of examples in the test split (no test/ folder)
    "skip_bad_files": False,  # folders: skip (and count) unreadable files instead of stopping
}
TEST_FOLDERS = ("test", "val")


@dataclasses.dataclass(frozen=True)
class File:
  """One listed file: its path, its ``/``-separated path relative to the root, size and mtime."""

  path: epath.Path
  name: str
  size: int
  mtime_ns: int


class BadFile(Exception):
  """A file the source cannot read: ``problem`` follows the file name in the message, ``fix`` says
  what to do about it (default: replace or remove it)."""

  def __init__(self, problem: str, fix: str = ""):
    super().__init__(problem)
    self.problem, self.fix = problem, fix or "replace or remove it"


def _stat(path: epath.Path) -> tuple[int, int]:
  """``(size, mtime in ns)``; local files give nanosecond mtimes, remote ones what their store has."""
  if "://" not in str(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
  st = path.stat()
  return int(st.length), int(st.mtime * 1e9)


def user_path(path: str) -> epath.Path:
  """``path`` as the user wrote it: ``~`` expanded and made absolute, unless it is a URL
  (``gs://...``)."""
  return epath.Path(path if "://" in path else os.path.abspath(os.path.expanduser(path)))


def _walk(root: epath.Path):
  """``(folder, subfolders, names)`` below ``root``, top-down. A local folder is walked with
  ``os.walk(followlinks=True)`` (epath's walk does not follow symbolic links to folders, a common
  way to assemble class folders), each real folder once, so a link to an ancestor cannot loop."""
  if "://" in str(root):
    yield from root.walk()
    return
  seen = set()
  for folder, subfolders, names in os.walk(root, followlinks=True):
    real = os.path.realpath(folder)
    if real in seen:
      subfolders[:] = []
      continue
    seen.add(real)
    yield folder, subfolders, names


def list_files(kind: str, path: str, extensions: Sequence[str],
               skip_bad: bool = False) -> tuple[epath.Path, list[File]]:
  """``(root, files)`` of the folder ``path`` (module docstring) for the source ``kind``. A listed
  name that cannot be opened (a broken symbolic link) stops with one line, or with ``skip_bad``
  (``data.skip_bad_files``) is left out with a warning."""
  root = user_path(path)
  if not root.exists():
    raise UserError(f"{kind}:{path}: no such folder (relative paths start at {os.getcwd()}); "
                    f"fix the path in --config.data.name={kind}:PATH")
  if not root.is_dir():
    raise UserError(f"{kind}:{path} is a file; {kind}:PATH reads a folder of "
                    f"{'/'.join(extensions)} files: give the folder that holds it")
  files, broken = [], []
  for folder, subfolders, names in _walk(root):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    for name in names:
      if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
        path_ = epath.Path(folder) / name
        relative = path_.relative_to(root).as_posix()
        try:
          files.append(File(path_, relative, *_stat(path_)))
        except OSError as e:
          if not skip_bad:
            raise UserError(f"{kind}:{path}: file {relative} cannot be opened ({e.strerror}; a broken "
                            "symbolic link?): remove or fix it, or set data.skip_bad_files=True to "
                            "skip it") from None
          broken.append(relative)
  if broken:
    logging.warning("%s:%s: skipped %d files that cannot be opened: %s", kind, path, len(broken),
                    ", ".join(broken[:5]))
  if not files:
    raise UserError(f"{kind}:{path} holds no {'/'.join(extensions)} files (searched recursively, "
                    f"hidden ones skipped): point --config.data.name={kind}:PATH at a folder of them")
  return root, sorted(files, key=lambda f: f.name)


def hash_fraction(name: str) -> float:
  """``u(name)`` in ``[0, 1)``: SHA-256 of the UTF-8 name, first 8 bytes over ``2**64``. A file
  name that is not UTF-8 (Python holds its bytes as surrogate escapes) hashes its own bytes."""
  digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclasses.dataclass(frozen=True)
class Split:
  """The split of a list of files: ``train`` / ``test`` indices into it (int64, in order),
  ``labels`` int32 ``[len(files)]`` (None without folder labels) and the sorted class names."""

  train: np.ndarray
  test: np.ndarray
  labels: np.ndarray | None
  class_names: tuple[str, ...]


def split_files(kind: str, root: epath.Path, files: Sequence[File], data_config: Any) -> Split:
  """The train/test split and folder labels of ``files`` (module docstring)."""
  top = [f.name.split("/", 1)[0] if "/" in f.name else "" for f in files]
  test_folder = next((d for d in TEST_FOLDERS if d in top), None)
  if test_folder is not None:
    train_folder = "train" if "train" in top else None
    is_test = np.array([t == test_folder for t in top], bool)
    used = np.array([t == test_folder or (t == train_folder if train_folder else t not in TEST_FOLDERS)
                     for t in top], bool)
    below = [f.name.split("/", 1)[1] if t in (test_folder, train_folder) else f.name
             for f, t in zip(files, top)]
  else:
    fraction = float(data_config.get("test_fraction", DEFAULTS["test_fraction"]))
    if not 0.0 < fraction < 1.0:
      raise UserError(f"data.test_fraction={fraction} is not in (0, 1): set e.g. 0.1, or put the "
                      f"test files in a test/ sub-folder of {root}")
    is_test = np.array([hash_fraction(f.name) < fraction for f in files], bool)
    used = np.ones(len(files), bool)
    below = [f.name for f in files]
  labels, class_names = None, ()
  if data_config.get("labels_from_folders", False):
    for f, rest, use in zip(files, below, used):
      if use and "/" not in rest:
        raise UserError(f"{kind}:{root}: {f.name} is not in a class sub-folder, and "
                        "data.labels_from_folders=True: move it into one (e.g. cat/) or set "
                        "data.labels_from_folders=False")
    classes = [rest.split("/", 1)[0] if use else "" for rest, use in zip(below, used)]
    class_names = tuple(sorted({c for c, use in zip(classes, used) if use}))
    ids = {c: i for i, c in enumerate(class_names)}
    labels = np.array([ids.get(c, -1) for c in classes], np.int32)
  train, test = np.flatnonzero(used & ~is_test), np.flatnonzero(used & is_test)
  return Split(train, test, labels, class_names)


def folder_splits(kind: str, root: epath.Path, kept: Sequence[File], x: np.ndarray, spec: DataSpec,
                  data_config: Any) -> source.Splits:
  """Train and test ``ArraySource``s over ``x`` (row ``i`` decoded from
  ``kept[i]``), split and labelled by ``split_files``; ``spec.num_classes`` is set from the labels."""
  split = split_files(kind, root, kept, data_config)
  arrays = {"x": x}
  if split.labels is not None:
    arrays["label"] = split.labels
    spec = dataclasses.replace(spec, num_classes=len(split.class_names))
    logging.info("%s:%s: %d classes from folder names: %s", kind, root, len(split.class_names),
                 ", ".join(split.class_names))
  return source.Splits(source.ArraySource(arrays, split.train), source.ArraySource(arrays, split.test),
                       spec)
