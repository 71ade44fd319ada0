"""Image data sets from tensorflow-datasets, read by random access (``tfds.data_source``).

Reading needs no TensorFlow, but the data set must have been prepared once in the
``array_record`` file format (a download, and for most builders TensorFlow), e.g.::

  python -c "import tensorflow_datasets as tfds; tfds.data_source('mnist', split='train')"

Feature mapping: ``image`` -> ``"x"`` (uint8 ``[H, W, C]``, ``levels=256``; ``binarized_mnist``:
``{0, 1}``, ``levels=2``), ``label`` (a ClassLabel) -> ``"label"`` (int32, ``num_classes`` from the
builder's info). Other features are dropped.
"""

from __future__ import annotations

import numpy as np

from jaxgen.data.spec import EMBEDDED, DataSpec
from jaxgen.errors import UserError

#: Splits whose decoded images take at most this many bytes are kept in memory as they are read,
#: so that from the second epoch on a batch costs an array gather instead of record decoding.
CACHE_BYTES = 1 << 30
_BINARY = ("binarized_mnist",)


def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = f", data_dir={data_dir!r}" if data_dir else ""
  return ("prepare it once (needs network access; most builders also need `pip install "
          "tensorflow`): python -c \"import tensorflow_datasets as tfds; "
          f"tfds.data_source({name!r}, split='train'{where})\"")


class TfdsSource:
  """One split of a tfds data set: ``len(source)`` examples, ``source.get(indices)`` raw arrays.

  Only the requested examples are read. When the split is small (``CACHE_BYTES``) every example
  read is kept, so each is decoded at most once per process.
  """

  def __init__(self, name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds  # ~0.3 s; only paid by runs that use tfds

    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError:
      raise UserError(
          f"unknown data set {name!r}: it is neither embedded ({', '.join(EMBEDDED.names())}) "
          "nor a tensorflow-datasets builder (any tfds name is accepted, e.g. mnist, "
          "fashion_mnist, cifar10, celeb_a, binarized_mnist): fix data.name") from None
    except (NotImplementedError, AssertionError, FileNotFoundError) as e:
      raise UserError(
          f"tensorflow-datasets data set {name!r} (split {split!r}) is not prepared in the "
          f"array_record format under data_dir={data_dir or 'the tfds default'}: "
          f"{_prepare_hint(name, data_dir)} ({type(e).__name__}: {str(e).splitlines()[0]})"
      ) from None
    except ValueError as e:  # a bad config name or split, e.g. "celeb_a/foo" or "train[:x]"
      raise UserError(f"data.name={name!r} / split {split!r}: {str(e).splitlines()[0]}") from None
    features = self._source.dataset_info.features
    if "image" not in features or None in features["image"].shape:
      raise UserError(
          f"tensorflow-datasets data set {name!r} has no fixed-size 'image' feature "
          f"({features}); only such image data sets are read from tfds: pick another data.name")
    shape = tuple(int(d) for d in features["image"].shape)
    num_classes = 0
    if "label" in features and hasattr(features["label"], "num_classes"):
      num_classes = int(features["label"].num_classes)
    binary = name.split("/")[0].split(":")[0] in _BINARY
    self.spec = DataSpec(name=name, modality="image", shape=shape, levels=2 if binary else 256,
                         num_classes=num_classes)
    self._batch_read = True
    n = len(self._source)
    self._cache = None
    if n * int(np.prod(shape)) <= CACHE_BYTES:
      self._cache = {"x": np.zeros((n, *shape), np.uint8), "label": np.zeros((n,), np.int32)}
      self._cached = np.zeros((n,), bool)

  def __len__(self) -> int:
    return len(self._source)

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    keys = [int(i) for i in indices]
    examples = None
    if self._batch_read:
      try:
        examples = self._source.__getitems__(keys)  # one parallel array_record read
      except TypeError:
        # tfds.testing.mock_data's __getitems__ is broken (missing argument); read one by one.
        self._batch_read = False
    if examples is None:
      examples = [self._source[k] for k in keys]
    out = {"x": np.stack([np.asarray(e["image"], np.uint8) for e in examples])}
    if self.spec.num_classes:
      out["label"] = np.array([e["label"] for e in examples], np.int32)
    return out

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Raw examples ``indices`` (int ``[b]``): ``"x"`` uint8 ``[b, H, W, C]``, ``"label"`` ``[b]``."""
    indices = np.asarray(indices, np.int64)
    if self._cache is None:
      return self._read(indices)
    missing = np.unique(indices[~self._cached[indices]])
    if missing.size:
      for key, value in self._read(missing).items():
        self._cache[key][missing] = value
      self._cached[missing] = True
    out = {"x": self._cache["x"][indices]}
    if self.spec.num_classes:
      out["label"] = self._cache["label"][indices]
    return out
