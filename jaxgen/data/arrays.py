"""``arrays:PATH``: examples stored as numpy arrays, in a ``.npz`` or a ``.npy`` file.

``x`` is the ``.npy``'s array, or the ``.npz``'s array ``x``; a ``.npz`` may add ``label`` (int
``[N]``), ``x_test`` and ``label_test``. What ``x`` is follows from its dtype and rank:

* uint8 ``[N, H, W, C]``: images with 256 levels (``modality="image"``; the image preprocessing
  options apply, ``data.random_flip`` included);
* float ``[N, D]``: points (``modality="points"``, float32);
* integer ``[N, T]``: tokens (``modality="text"``, ``levels`` = largest token + 1, no vocabulary).

Test split: ``x_test`` (and ``label_test`` when there are labels) if present, else the rows ``i``
with ``u(str(i)) < data.test_fraction`` (``u`` the path hash of :mod:`jaxgen.data.files`: a fixed
pseudo-random subset, whatever the order of the rows). ``num_classes`` = largest label + 1. A
local ``.npy`` is memory-mapped, so it may be larger than memory.

  python -m jaxgen.main --config=configs/flow2d.py --workdir=runs/mine --config.data.name=arrays:points.npz
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np

from jaxgen.data import files, image_ops, source
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

KIND = "arrays"
DEFAULTS = {"test_fraction": files.DEFAULTS["test_fraction"],
            "random_flip": image_ops.DEFAULTS["random_flip"]}


def _open(path: str, where: str) -> dict[str, np.ndarray]:
  """The file's arrays by name (a ``.npy`` holds ``x`` only)."""
  file = files.user_path(path)
  suffix = file.suffix.lower()
  if not file.exists():
    raise UserError(f"{where}: no such file; fix the path in --config.data.name={KIND}:PATH")
  if suffix not in (".npz", ".npy"):
    raise UserError(f"{where} is not a .npz or .npy file: save the arrays with np.savez(path, x=..., "
                    "label=...) or np.save(path, x)")
  try:
    if suffix == ".npy":
      local = "://" not in path
      return {"x": np.load(file, mmap_mode="r") if local else np.load(io.BytesIO(file.read_bytes()))}
    npz = np.load(io.BytesIO(file.read_bytes()))
    if not isinstance(npz, np.lib.npyio.NpzFile):  # a .npy's bytes under a .npz name
      raise ValueError("it holds a single .npy array, not a .npz archive; name it .npy")
    with npz:
      return {key: npz[key] for key in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{where} cannot be read as {suffix} ({type(e).__name__}: {e}); save it again "
                    "with np.savez / np.save (no pickled objects)") from None


def _spec(x: np.ndarray, test: np.ndarray | None, name: str, where: str) -> DataSpec:
  shape = tuple(int(d) for d in x.shape[1:])
  if x.dtype == np.uint8 and x.ndim == 4:
    return DataSpec(name=name, modality="image", shape=shape, levels=256)
  if np.issubdtype(x.dtype, np.floating) and x.ndim == 2:
    for key, part in (("x", x), ("x_test", test)):
      bad = 0 if part is None else int(np.count_nonzero(~np.isfinite(part).all(axis=1)))
      if bad:
        raise UserError(f"{where}: {bad} rows of {key} hold NaN or inf: drop them "
                        f"({key}[np.isfinite({key}).all(axis=1)]) or fill them")
    return DataSpec(name=name, modality="points", shape=shape)
  if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:
    parts = [p for p in ([x] if test is None else [x, test]) if p.size]
    if not parts:
      raise UserError(f"{where}: x has no tokens (shape {x.shape}): save at least one row")
    lowest, highest = min(int(p.min()) for p in parts), max(int(p.max()) for p in parts)
    if lowest < 0:
      raise UserError(f"{where}: tokens must be >= 0, found {lowest}: shift them")
    return DataSpec(name=name, modality="text", shape=shape, levels=highest + 1)
  raise UserError(f"{where}: x of dtype {x.dtype} and shape {x.shape} is none of uint8 images "
                  "[N, H, W, C], float points [N, D], integer tokens [N, T]: convert it (float "
                  "images in [0, 1]: np.round(x * 255).astype(np.uint8), in [-1, 1]: "
                  "np.round((x + 1) * 127.5).astype(np.uint8); one channel: x[..., None])")


def _check(arrays: dict[str, np.ndarray], where: str) -> None:
  x = arrays["x"]
  if "x_test" in arrays:
    xt = arrays["x_test"]
    # Same kind (float / int), and uint8 images need uint8 test images (their 256-level tables).
    if (xt.shape[1:] != x.shape[1:] or xt.dtype.kind != x.dtype.kind
        or (x.ndim == 4 and (x.dtype == np.uint8) != (xt.dtype == np.uint8))):
      raise UserError(f"{where}: x_test ({xt.dtype} {xt.shape}) does not match x ({x.dtype} "
                      f"{x.shape}) in dtype and example shape: save matching arrays")
  for key, data in (("label", "x"), ("label_test", "x_test")):
    if key in arrays:
      label = arrays[key]
      if not np.issubdtype(label.dtype, np.integer) or label.shape != (len(arrays[data]),) or (
          len(label) and label.min() < 0):
        raise UserError(f"{where}: {key} must hold one integer >= 0 per row of {data} (shape "
                        f"({len(arrays[data])},)), it is {label.dtype} {label.shape}: fix it")
  if "x_test" in arrays and ("label" in arrays) != ("label_test" in arrays):
    raise UserError(f"{where}: labels for one split only (label, label_test): save both or neither")


@source.register(KIND + ":", defaults=DEFAULTS)
def load(data) -> source.Splits:
  """The arrays of ``data.path`` (module docstring)."""
  where = f"{KIND}:{data.path}"
  arrays = _open(str(data.path), where)
  if "x" not in arrays:
    raise UserError(f"{where} has no array 'x' (it has: {', '.join(sorted(arrays)) or 'none'}): "
                    "save it with np.savez(path, x=examples[, label=labels, x_test=..., label_test=...])")
  _check(arrays, where)
  spec = _spec(arrays["x"], arrays.get("x_test"), str(data.name), where)
  train = {"x": arrays["x"]}
  if "label" in arrays:
    train["label"] = arrays["label"]
  if "x_test" in arrays:
    test = {"x": arrays["x_test"]}
    if "label_test" in arrays:
      test["label"] = arrays["label_test"]
    splits = (source.ArraySource(train), source.ArraySource(test))
  else:
    fraction = float(data.test_fraction)
    if not 0.0 < fraction < 1.0:
      raise UserError(f"data.test_fraction={fraction} is not in (0, 1): set e.g. 0.1, or save x_test")
    is_test = np.array([files.hash_fraction(str(i)) < fraction for i in range(len(train["x"]))], bool)
    splits = (source.ArraySource(train, np.flatnonzero(~is_test)),
              source.ArraySource(train, np.flatnonzero(is_test)))
  labels = [arrays[key] for key in ("label", "label_test") if key in arrays and len(arrays[key])]
  if labels:
    spec = dataclasses.replace(spec, num_classes=max(int(label.max()) for label in labels) + 1)
  return source.Splits(*splits, spec)
