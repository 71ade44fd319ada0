"""Weights of the FID Inception network: from pytorch-fid's ``.pth`` or a converted ``.npz``.

The standard file is ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release
``fid_weights``); as for every torch-hub file, ``6726825d`` is the start of its SHA-256, which is
checked: another file would give FIDs that cannot be compared with published ones, and a mismatch
raises a ``UserError`` saying so. It is read without torch and without unpickling code
(``torch_weights``). ``experiments/convert_inception_weights.py`` converts it once to an ``.npz``
holding the Flax variables under ``/``-joined names (``params/Mixed_5b/branch1x1/conv/kernel``)
plus ``source_sha256``, checked again on load. Nothing is ever downloaded.

Layout conversion: conv ``[O, I, kh, kw] -> [kh, kw, I, O]``; BatchNorm ``weight, bias,
running_mean, running_var -> params scale, bias, batch_stats mean, var``; ``fc.weight [1008, 2048]
-> fc kernel [2048, 1008]``. ``fc.bias`` and ``num_batches_tracked`` are not used (the logits are
unbiased, see ``inception.InceptionV3``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import zipfile

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluation.inception import InceptionV3
from jaxgen.evaluation.torch_weights import load_state_dict

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def sha256_of(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def check_sha256(sha256: str, path: str) -> None:
  """Raises ``UserError`` unless ``sha256`` is that of pytorch-fid's FID Inception weights."""
  if not sha256.startswith(FID_WEIGHTS_SHA256_PREFIX):
    found = f"SHA-256 {sha256[:8]}..." if sha256 else "records no source SHA-256, so it"
    raise UserError(
        f"{path}: {found} is not that of the FID Inception weights "
        f"{FID_WEIGHTS_NAME} (expected {FID_WEIGHTS_SHA256_PREFIX}...): other weights give FIDs "
        "that cannot be compared with published ones")


def state_dict_to_variables(state_dict: dict[str, np.ndarray]) -> dict:
  """PyTorch names and layouts -> Flax ``{"params": ..., "batch_stats": ...}`` (flat dict keys)."""
  flat = {}
  for name, value in state_dict.items():
    *module, leaf = name.split(".")
    if name == "fc.weight":
      flat[("params", "fc", "kernel")] = value.T
    elif leaf == "weight" and module[-1] == "conv":
      flat[("params", *module, "kernel")] = value.transpose(2, 3, 1, 0)
    elif leaf in _BN and module[-1] == "bn":
      collection, flax_leaf = _BN[leaf]
      flat[(collection, *module, flax_leaf)] = value
    elif leaf == "num_batches_tracked" or name == "fc.bias":
      continue
    else:
      raise UserError(f"unexpected tensor {name!r} in the Inception state_dict")
  return flat


def _expected_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(InceptionV3(resize=False).init, jax.random.key(0),
                          jnp.zeros((1, 75, 75, 3)))
  return {k: v.shape for k, v in flax.traverse_util.flatten_dict(shapes).items()}


def _to_variables(flat: dict, path: str) -> dict:
  """Checks names and shapes against the module and returns nested float32 variables."""
  expected = _expected_shapes()
  missing = sorted("/".join(k) for k in expected.keys() - flat.keys())
  extra = sorted("/".join(k) for k in flat.keys() - expected.keys())
  wrong = sorted("/".join(k) for k in expected.keys() & flat.keys()
                 if tuple(flat[k].shape) != expected[k])
  if missing or extra or wrong:
    raise UserError(f"{path} does not match the FID Inception network: missing {missing[:3]}, "
                    f"unexpected {extra[:3]}, wrong shapes {wrong[:3]}")
  return flax.traverse_util.unflatten_dict(
      {k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


def save_npz(flat: dict, sha256: str, path: str) -> None:
  """Writes flat Flax variables (as from ``state_dict_to_variables``) and the source hash."""
  arrays = {"/".join(k): np.asarray(v, np.float32) for k, v in flat.items()}
  np.savez(path, source_sha256=np.array(sha256), **arrays)


@functools.lru_cache(maxsize=2)
def load_inception_variables(path: str, check_hash: bool = True) -> dict:
  """Flax variables of ``InceptionV3`` from a ``.pth`` (pytorch-fid) or converted ``.npz``.

  With ``check_hash``, the ``.pth`` file's (or the ``.npz``'s recorded source) SHA-256 must start
  with ``6726825d``. Raises ``UserError`` for a missing file, a wrong hash or wrong contents.
  """
  if not os.path.isfile(path):
    raise UserError(f"Inception weights {path!r} not found: give the path of {FID_WEIGHTS_NAME} "
                    "or of its .npz conversion (experiments/convert_inception_weights.py)")
  try:
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as npz:
        sha256 = str(npz["source_sha256"]) if "source_sha256" in npz.files else ""
        flat = {tuple(k.split("/")): npz[k] for k in npz.files if k != "source_sha256"}
    else:
      if check_hash:  # before unpickling: a wrong file is named by its hash, not by a pickle error
        check_sha256(sha256_of(path), path)
      flat = state_dict_to_variables(load_state_dict(path))
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
    raise UserError(f"Inception weights {path!r} cannot be read ({type(e).__name__}: {str(e)[:80]}): give "
                    f"{FID_WEIGHTS_NAME} or its .npz conversion (experiments/convert_inception_weights.py)") from None
  if check_hash and path.endswith(".npz"):
    check_sha256(sha256, path)
  return _to_variables(flat, path)


@functools.partial(jax.jit, static_argnames="resize")
def _apply(variables, images, resize: bool):
  return InceptionV3(resize=resize).apply(variables, images)


def inception_features(variables: dict, images, batch_size: int = 64,
                       resize: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """``(pool3 [N, 2048], logits [N, 1008])`` of images ``[N, H, W, C]`` in [0, 1].

  ``C`` is 3, or 1 (gray, repeated to RGB). Batches are padded to ``batch_size`` so that one
  compilation serves every batch.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise UserError(f"Inception features need images [N, H, W, 1 or 3], got {images.shape}")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  pools, logits = [], []
  for start in range(0, images.shape[0], batch_size):
    batch = images[start:start + batch_size]
    n = batch.shape[0]
    batch = np.pad(batch, ((0, batch_size - n), (0, 0), (0, 0), (0, 0)))
    pool, logit = _apply(variables, batch, resize)
    pools.append(np.asarray(pool)[:n])
    logits.append(np.asarray(logit)[:n])
  return np.concatenate(pools), np.concatenate(logits)
