"""Image data sets from tensorflow-datasets (any name not otherwise registered, or ``tfds:NAME``),
read by random access (``tfds.data_source``).

Reading needs no TensorFlow, but the data set must have been prepared once in the
``array_record`` file format (a download, and for most builders TensorFlow); an unprepared set is
a ``UserError`` with the command (:mod:`jaxgen.data.tfds_common`).

Feature mapping: ``image`` -> ``"x"`` (uint8 ``[H, W, C]``, ``levels=256``; ``binarized_mnist``:
``{0, 1}``, ``levels=2``), ``label`` (a ClassLabel) -> ``"label"`` (int32, ``num_classes`` from the
builder's info). Other features are dropped. The image options of :mod:`jaxgen.data.image_ops`
apply (CelebA at 64x64 with the DCGAN centre crop: ``data.name=celeb_a``, ``data.center_crop=108``,
``data.image_size=64``); with ``data.image_size`` set, data sets of variable image size are read too.
Splits: ``data.train_split`` / ``data.test_split`` (tfds split syntax, e.g. ``"train[:90%]"``).

Decoded (and resized) examples are kept in memory as they are read while the split fits
``data.cache_max_bytes``, so from the second epoch on a batch costs an array gather instead of
record decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxgen.data import cache, image_ops, source, tfds_common
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.registry import did_you_mean

_BINARY = ("binarized_mnist",)
DEFAULTS = {
    **tfds_common.DEFAULTS, **image_ops.DEFAULTS,
    "train_split": "train",  # tensorflow-datasets split names (any tfds split syntax)
    "test_split": "test",
    "cache_max_bytes": cache.DEFAULTS["cache_max_bytes"],
}


class TfdsSource:
  """One split of a tfds image data set: ``len(source)`` examples, ``source.get(indices)`` raw arrays.

  Only the requested examples are read. When the split's decoded images fit ``cache_max_bytes``
  every example read is kept, so each is decoded at most once per process.
  """

  def __init__(self, name: str, split: str, data_dir: str | None, options: image_ops.ImageOptions,
               cache_max_bytes: int):
    import tensorflow_datasets as tfds  # ~0.3 s; only paid by runs that use tfds

    try:
      self._source = tfds_common.open_split(
          lambda: tfds.data_source(name, split=split, data_dir=data_dir, download=False), name, split,
          data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      hint = did_you_mean(name, [n for n in source.SOURCES.names() if not n.endswith(":")])
      raise UserError(
          f"unknown data set {name!r}{hint}: it is neither a registered data source "
          f"({', '.join(source.SOURCES.names())}) nor <kind>:<path> nor a tensorflow-datasets "
          "builder (any tfds name is accepted, e.g. mnist, fashion_mnist, cifar10, celeb_a, "
          "binarized_mnist): fix data.name") from None
    self._options = options
    features = self._source.dataset_info.features
    if "image" not in features:
      raise UserError(f"tensorflow-datasets data set {name!r} has no 'image' feature ({features}); "
                      "only image data sets are read from tfds by this source: pick another data.name")
    shape = tuple(features["image"].shape)
    if None in shape[:2] and options.size is None:
      raise UserError(f"tensorflow-datasets data set {name!r} has images of varying size {shape}: set "
                      "data.image_size (e.g. 64) to resize and crop them to one size")
    if shape[2] is None and not options.channels:
      raise UserError(f"tensorflow-datasets data set {name!r} has a varying channel count: set "
                      "data.channels to 1 or 3")
    binary = name.split("/")[0].split(":")[0] in _BINARY
    if binary and not options.is_identity:
      raise UserError(f"{name!r} holds binary images: data.image_size / data.center_crop / "
                      "data.channels do not apply; leave them at 0")
    try:  # a varying side is checked when the image is read
      out_shape = shape if options.is_identity else options.output_shape(
          shape[0] or 1 << 30, shape[1] or 1 << 30, "L" if shape[2] == 1 else "RGB")
    except ValueError as e:
      raise UserError(f"the images of {name!r} {e}: use a smaller data.center_crop") from None
    num_classes = 0
    if "label" in features and hasattr(features["label"], "num_classes"):
      num_classes = int(features["label"].num_classes)
    self.spec = DataSpec(name=name, modality="image", shape=out_shape, levels=2 if binary else 256,
                         num_classes=num_classes)
    self._batch_read = True
    n = len(self._source)
    self._cache = None
    if n * int(np.prod(out_shape)) <= cache_max_bytes:
      self._cache = {"x": np.zeros((n, *out_shape), np.uint8), "label": np.zeros((n,), np.int32)}
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
    try:
      out = {"x": np.stack([self._options.apply_array(np.asarray(e["image"], np.uint8)) for e in examples])}
    except ValueError as e:  # an image smaller than data.center_crop
      raise UserError(f"an image of {self.spec.name!r} {e}: use a smaller data.center_crop") from None
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


@source.register(source.FALLBACK_KIND, defaults=DEFAULTS)
def load(data: Any) -> source.Splits:
  """The tfds image set ``data.path`` (its name), splits ``data.train_split`` / ``data.test_split``."""
  options = image_ops.ImageOptions.from_config(data)
  data_dir, budget = tfds_common.data_dir(data), int(data.cache_max_bytes)
  train, test = (TfdsSource(str(data.path), str(split), data_dir, options, budget)
                 for split in (data.train_split, data.test_split))
  return source.Splits(train, test, train.spec)
