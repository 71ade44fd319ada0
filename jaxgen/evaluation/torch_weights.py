"""Read a PyTorch ``state_dict`` file (``.pth``) into numpy arrays, without torch and safely.

Hand-written because no maintained library reads ``.pth`` files without torch itself, and
``torch.load`` unpickles arbitrary code. A ``.pth`` is a pickle whose tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls on storages that the
pickle names by *persistent id* ``("storage", torch.FloatStorage, key, location, numel)``. We
unpickle with a restricted ``pickle.Unpickler`` whose ``find_class`` only resolves
``collections.OrderedDict``, the tensor-rebuild functions and the storage types, each mapped to a
local numpy emulation; any other global (``os.system``, ...) is refused. Two layouts exist:

* zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian entry ``<root>/data/<key>``
  per storage (and ``<root>/byteorder`` when big-endian);
* legacy (torch < 1.6): consecutive pickles ``magic, protocol, sys_info, object, storage keys``,
  then for each key an int64 element count and the raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable

import numpy as np

from jaxgen.errors import UserError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

#: torch storage class name -> numpy dtype (little-endian unless the file says otherwise).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
  """Stands in for ``torch.FloatStorage`` etc. during unpickling."""

  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Tensor:
  """A tensor as unpickled: a strided view of a storage, materialized once all bytes are read
  (legacy files store the bytes *after* the pickle that refers to them)."""

  def __init__(self, storage: Callable[[], np.ndarray], offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def numpy(self) -> np.ndarray:
    flat = self.storage()
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=tuple(s * flat.dtype.itemsize for s in self.stride))
    return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """Emulates ``torch._utils._rebuild_tensor_v2``."""
  del requires_grad, backward_hooks, metadata
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
  """Emulates ``torch._utils._rebuild_tensor`` (older files)."""
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  """Emulates ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
  del requires_grad, backward_hooks
  return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals in ``_ALLOWED``; a storage becomes a callable that returns its
  flat numpy array from ``read_storage(dtype, key)`` (cached)."""

  def __init__(self, file: BinaryIO, read_storage: Callable[[np.dtype, str], np.ndarray]):
    super().__init__(file)
    self._read_storage = read_storage
    self._cache: dict[str, np.ndarray] = {}
    self.storage_dtypes: dict[str, np.dtype] = {}

  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED:
      raise UserError(f"refusing to load {module}.{name} from a .pth file: only state_dicts of "
                      "tensors are read, never code")
    return _ALLOWED[(module, name)]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise UserError(f"unsupported persistent id in .pth file: {pid!r}")
    dtype, key = pid[1].dtype, str(pid[2])
    view = pid[5] if len(pid) > 5 else None  # legacy storage views: (view_key, offset, size)
    self.storage_dtypes[key] = dtype

    def storage() -> np.ndarray:
      if key not in self._cache:
        self._cache[key] = self._read_storage(dtype, key)
      flat = self._cache[key]
      return flat if view is None else flat[view[1]:view[1] + view[2]]

    return storage


def _load_zip(file: BinaryIO) -> Any:
  with zipfile.ZipFile(file) as archive:
    names = archive.namelist()
    pkl = next((n for n in names if n.endswith("data.pkl")), None)
    if pkl is None:
      raise UserError("not a PyTorch checkpoint: the zip archive has no data.pkl")
    root = pkl[:-len("data.pkl")]
    order = ">" if (root + "byteorder" in names
                    and archive.read(root + "byteorder").strip() == b"big") else "<"

    def read_storage(dtype: np.dtype, key: str) -> np.ndarray:
      raw = archive.read(f"{root}data/{key}")
      return np.frombuffer(raw, dtype.newbyteorder(order)).astype(dtype.newbyteorder("="))

    obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl)), read_storage).load()
    return _materialize(obj)


def _load_legacy(file: BinaryIO) -> Any:
  def header() -> Any:
    return _RestrictedUnpickler(file, lambda dtype, key: None).load()

  if header() != _LEGACY_MAGIC:
    raise UserError("not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
  header()  # protocol version
  if not header().get("little_endian", True):
    raise UserError("big-endian legacy .pth files are not supported")
  data: dict[str, bytes] = {}
  unpickler = _RestrictedUnpickler(
      file, lambda dtype, key: np.frombuffer(data[key], dtype.newbyteorder("<")))
  obj = unpickler.load()
  for key in header():  # the storage keys, in the order their bytes follow
    (numel,) = struct.unpack("<q", file.read(8))
    data[key] = file.read(numel * unpickler.storage_dtypes[key].itemsize)
  return _materialize(obj)


def _materialize(obj: Any) -> Any:
  if isinstance(obj, _Tensor):
    return obj.numpy()
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  return obj


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """``{name: numpy array}`` from a ``.pth`` state_dict (zip or legacy format), torch-free."""
  with open(path, "rb") as f:
    is_zip = zipfile.is_zipfile(f)
    f.seek(0)
    obj = _load_zip(f) if is_zip else _load_legacy(f)
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise UserError(f"{path} does not hold a state_dict of tensors")
  return obj
