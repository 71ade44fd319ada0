"""The registry of data sources: ``config.data.name`` -> a train and a test :class:`Source` and the
raw :class:`DataSpec`.

A data source is one file in ``jaxgen/data/`` that registers a *loader* under a name, together with
the ``config.data`` fields it reads and their defaults (``config_defaults.base`` merges the defaults
of every registered source into ``config.data``)::

  from jaxgen.data import source
  from jaxgen.data.spec import DataSpec, RawData

  @source.register("toy/line", defaults={"line_points": 64})
  def load(data) -> RawData:
    x = np.linspace(-1, 1, data.line_points, dtype=np.float32)[:, None] * [1, 2]
    spec = DataSpec(name="toy/line", modality="points", shape=(2,))
    return RawData(train={"x": x[::2]}, test={"x": x[1::2]}, spec=spec)

Names (``resolve``), in this order:

1. an exact registered name: ``digits``, ``toy2d/ring8``, ``text/pystdlib``, ``audio/tones``,
   ``tiny_shakespeare``, ``spoken_digit``, ...;
2. ``<kind>:<path>`` where ``<kind>:`` is registered (a name ending in ``:``): ``images:``,
   ``text:``, ``arrays:``, ``audio:``, ``tfds:``; the loader finds ``<path>`` in ``data.path``;
3. anything else is ``tfds:<name>``, a tensorflow-datasets name (``mnist``, ``celeb_a``,
   ``cifar10:3.0.2``, ``huggingface:mnist``, ...). A ``<word>:<path>`` whose word is close to a kind,
   or whose text is a path (``image:/data``: a kind misspelt), is refused with the closest kind.

A loader is called with a copy of ``config.data`` plus ``seed`` (``config.seed`` unless
``data.seed`` >= 0 is set) and, for a kind, ``path``. It returns :class:`RawData` (arrays in memory) or
:class:`Splits` (any two random-access :class:`Source`\\ s). Heavy imports (tensorflow-datasets,
TensorFlow, Pillow, scipy) belong inside the loader, so that importing ``jaxgen.data`` stays cheap.

``load`` checks what a loader returns against the conventions of :mod:`jaxgen.data.spec` on the
first examples of each split (a known modality, examples of ``spec.shape``, integer images / tokens
in ``{0, ..., levels - 1}``): a loader's mistake is one error before training, not a traceback at
the first batch or silently wrong data.

Two sources may declare the same field only with the same default (``register`` checks it);
a default may be an ``ml_collections.FieldReference`` to give the field a type other than its
value's (``data.image_size``: an int or an ``(H, W)`` pair).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from typing import Any, Callable, Mapping, Protocol

import ml_collections
import numpy as np

from jaxgen.data.spec import DataSpec, RawData
from jaxgen.errors import UserError
from jaxgen.registry import Registry

Batch = dict[str, np.ndarray]
#: The kind a name without a registered ``<kind>:`` prefix is read with.
FALLBACK_KIND = "tfds:"
#: ``DataSpec.modality`` values (:mod:`jaxgen.data.spec`).
MODALITIES = ("image", "points", "text", "audio")
#: Examples of each split ``load`` checks against the spec.
CHECKED_EXAMPLES = 8
#: A tensorflow-datasets version after ``<name>:`` (``3.0.2``, ``3.*.*``).
_TFDS_VERSION = re.compile(r"\d+(\.(\d+|\*)){0,2}")


class Source(Protocol):
  """Random access to the raw examples of one split."""

  def __len__(self) -> int:
    ...

  def get(self, indices: np.ndarray) -> Batch:
    """Raw examples at ``indices`` (int ``[b]``): ``"x"`` ``[b, ...]``, optionally ``"label"``."""
    ...


class ArraySource:
  """A split held as arrays with a leading example axis (in memory or memory-mapped).

  ``rows`` (int ``[n]``), when given, selects the split's examples: example ``i`` of the split is
  row ``rows[i]`` of the arrays, so two splits can share one array.
  """

  def __init__(self, arrays: Batch, rows: np.ndarray | None = None):
    self._arrays = arrays
    self._rows = None if rows is None else np.asarray(rows, np.int64)

  def __len__(self) -> int:
    return len(self._arrays["x"]) if self._rows is None else len(self._rows)

  def get(self, indices: np.ndarray) -> Batch:
    rows = indices if self._rows is None else self._rows[indices]
    return {k: np.asarray(v[rows]) for k, v in self._arrays.items()}


@dataclasses.dataclass(frozen=True)
class Splits:
  """What a loader returns: the two splits and the spec of the raw examples (before
  :class:`~jaxgen.data.preprocess.Preprocessor`)."""

  train: Source
  test: Source
  spec: DataSpec


Loader = Callable[[ml_collections.ConfigDict], "RawData | Splits"]


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One registry entry: the loader and the ``config.data`` defaults it declares."""

  name: str
  load: Loader
  defaults: Mapping[str, Any]


SOURCES: Registry[DataSource] = Registry("data source")


def same_default(a: Any, b: Any) -> bool:
  """Whether two declarations of a ``data.*`` field give it the same default (value and type)."""
  if isinstance(a, ml_collections.FieldReference) or isinstance(b, ml_collections.FieldReference):
    return (isinstance(a, ml_collections.FieldReference) and isinstance(b, ml_collections.FieldReference)
            and a.get() == b.get() and a.get_type() == b.get_type())
  return type(a) is type(b) and a == b


def register(name: str, defaults: Mapping[str, Any] | None = None) -> Callable[[Loader], Loader]:
  """Decorator: registers ``loader`` under ``name`` (a kind when it ends in ``:``) with the
  ``config.data`` fields it reads and their ``defaults``; returns the loader unchanged.

  Raises:
    ValueError: ``name`` is taken, or a field is already declared with another default.
  """
  defaults = dict(defaults or {})

  def decorator(loader: Loader) -> Loader:
    for other in SOURCES.names():
      for key, value in SOURCES.get(other).defaults.items():
        if key in defaults and not same_default(defaults[key], value):
          raise ValueError(f"data source {name!r} declares data.{key}={defaults[key]!r}, but "
                           f"{other!r} declares it with the default {value!r}: use one default")
    SOURCES.register(name)(DataSource(name, loader, defaults))
    return loader

  return decorator


def default_config() -> dict[str, Any]:
  """The ``config.data`` defaults of every registered source (fresh copies)."""
  merged: dict[str, Any] = {}
  for name in SOURCES.names():
    merged.update(copy.deepcopy(dict(SOURCES.get(name).defaults)))
  return merged


def resolve(name: str) -> tuple[DataSource, str | None]:
  """The entry that reads ``config.data.name`` and, for a kind, the path after ``<kind>:``."""
  if name in SOURCES and not name.endswith(":"):
    return SOURCES.get(name), None
  kind, colon, path = name.partition(":")
  if colon and kind + ":" in SOURCES:
    if not path:
      raise UserError(f"data.name={name!r} names no path: write --config.data.name={kind}:PATH")
    return SOURCES.get(kind + ":"), path
  kinds = [k for k in SOURCES.names() if k.endswith(":")]
  close = difflib.get_close_matches(kind + ":", kinds, n=1) if colon else []
  # Not "<name>:<version>" nor a tfds namespace ("huggingface:mnist"): a path after a misspelt kind.
  if colon and not _TFDS_VERSION.fullmatch(path) and (close or path.startswith(("/", ".", "~"))):
    hint = f" (did you mean {close[0]}{path}?)" if close else ""
    raise UserError(f"data.name={name!r}: {kind + ':'!r} is not a data source kind ({', '.join(kinds)}): fix "
                    f"data.name{hint}; a tensorflow-datasets name with a namespace is written tfds:NAMESPACE:NAME")
  return SOURCES.get(FALLBACK_KIND), name


def load(data: ml_collections.ConfigDict) -> Splits:
  """The splits of ``data.name`` (``data``: a copy of ``config.data`` with ``seed``; the loader's
  ``path`` is set on it)."""
  entry, path = resolve(str(data.name))
  if path is not None:
    data.path = path
  loaded = entry.load(data)
  if isinstance(loaded, RawData):
    loaded = Splits(ArraySource(loaded.train), ArraySource(loaded.test), loaded.spec)
  for split, fraction in (("train", "smaller"), ("test", "larger")):
    if not len(getattr(loaded, split)):
      raise UserError(f"data set {data.name!r} has an empty {split} split: give it more examples "
                      f"(where data.test_fraction makes the splits, a {fraction} one; where the data "
                      f"has its own test split, such as a test/ folder, give that split files)")
  _check_examples(entry.name, loaded)
  return loaded


def _check_examples(name: str, splits: Splits) -> None:
  """Raises ``UserError`` when the first examples of a split break the conventions of ``splits.spec``
  (module docstring): a known modality; ``x`` of shape ``[n, *spec.shape]``; numbers for points;
  integers in ``{0, ..., levels - 1}`` for images (``levels >= 2``) and tokens (``levels >= 1``)."""
  spec = splits.spec
  fix = f"fix the loader of data source {name!r} (the conventions: jaxgen/data/spec.py)"
  if spec.modality not in MODALITIES:
    raise UserError(f"DataSpec.modality={spec.modality!r} is not one of {', '.join(MODALITIES)}: {fix}")
  least = {"image": 2, "points": 0}.get(spec.modality, 1)
  if spec.levels < least:
    raise UserError(f"DataSpec.levels={spec.levels} of {spec.modality} data: it needs >= {least} (the number "
                    f"of raw values, 256 for 8-bit images); {fix}")
  for split in ("train", "test"):
    part = getattr(splits, split)
    x = np.asarray(part.get(np.arange(min(len(part), CHECKED_EXAMPLES)))["x"])
    kinds = "biuf" if spec.modality == "points" else "biu"
    problem = ""
    if x.shape[1:] != tuple(spec.shape):
      problem = f"examples of shape {x.shape[1:]}, not DataSpec.shape={tuple(spec.shape)}"
    elif x.dtype.kind not in kinds:
      problem = f"{x.dtype} {spec.modality} examples ({'numbers' if kinds == 'biuf' else 'integers'} expected)"
    elif kinds == "biu" and (x.min() < 0 or x.max() >= spec.levels):
      problem = f"values in [{x.min()}, {x.max()}], outside {{0, ..., levels - 1 = {spec.levels - 1}}}"
    if problem:
      raise UserError(f"data set {spec.name!r}: the {split} split holds {problem}; {fix}")
