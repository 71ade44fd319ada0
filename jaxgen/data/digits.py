"""``digits``: scikit-learn's bundled 8x8 handwritten digits (UCI optdigits, 1797 images).

Raw ``x`` is uint8 ``[N, 8, 8, 1]`` with 17 gray levels ``{0, ..., 16}`` (``levels=17``), ``label``
is the digit (10 classes). The split is fixed and uses no randomness: the first 1500 images (in the
file's order) are the training set, the last 297 the test set (27 to 33 of each digit).
"""

from __future__ import annotations

import gzip
import importlib.util
import pathlib

import numpy as np

from jaxgen.data import source
from jaxgen.data.spec import DataSpec, RawData

NUM_TRAIN = 1500


def _digits_csv() -> pathlib.Path:
  """The file ``sklearn.datasets.load_digits`` reads, located without importing scikit-learn.

  ``load_digits`` itself is avoided because importing scikit-learn costs ~1 s of start-up, and
  the file is a plain CSV: 64 pixel columns then the label, one image per row.
  """
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("the digits data set ships with scikit-learn: pip install scikit-learn")
  return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


@source.register("digits")
def load(data_config) -> RawData:
  del data_config  # nothing to configure
  with gzip.open(_digits_csv(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
  images = table[:, :64].reshape(-1, 8, 8, 1)
  labels = table[:, 64].astype(np.int32)
  spec = DataSpec(name="digits", modality="image", shape=(8, 8, 1), levels=17, num_classes=10)
  return RawData(
      train={"x": images[:NUM_TRAIN], "label": labels[:NUM_TRAIN]},
      test={"x": images[NUM_TRAIN:], "label": labels[NUM_TRAIN:]},
      spec=spec,
  )
