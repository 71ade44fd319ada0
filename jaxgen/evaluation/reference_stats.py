"""FID reference statistics: the Gaussian ``(mu, sigma)`` of a data split's features, computed once
by ``--mode=reference_stats`` and read by FID (``--config.eval.reference_stats=PATH``).

Published FIDs compare 50k samples with the statistics of the *training* set. ``compute`` streams
the split ``eval.reference_stats_split`` (every example once, in order, no random flips:
``Pipeline.split_batches``) through the feature network of ``eval.features`` (``features.network``:
each device computes the features of its rows of a global batch of ``eval.batch_size``) into the
streaming accumulator of ``gaussian`` (memory ``O(F^2)`` whatever the split's size), and process 0
writes an ``.npz``:

* ``mu`` float64 ``[F]``, ``sigma`` float64 ``[F, F]`` (divisor ``N - 1``), ``count`` (``N``);
* ``feature_network`` (the space: ``inception``, ``digits_classifier``, ``data``) and
  ``feature_weights_sha256`` (of its weights, ``""`` for ``data``);
* ``data_name``, ``data_modality``, ``data_shape`` (one example's model-space shape), ``data_levels``,
  ``data_value_range`` (the model-space range: what ``eval.features=data`` features are in),
  ``data_dequantized`` (absent in files written before dequantized images were converted to 8 bits
  by their bin: those are warned about on dequantized data), ``split``.

``check`` (FID's precondition, before training) refuses a file made with another feature network
or another example shape, and in the ``data`` space one of examples scaled to another range. A file
of another data set or quantization (``data_name``, ``data_levels``) is logged as a warning, not
refused: the same files under another path, or 8-bit references for a 5-bit run, are deliberate.
pytorch-fid and clean-fid ``.npz`` files hold only ``mu`` and ``sigma``: they are accepted when ``F`` matches the configured network's, with a logged line saying that
their network and image size could not be checked. Checkpoints are never read or written here.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile

import jax
import ml_collections
import numpy as np
import tqdm
from etils import epath

from jaxgen import data as data_lib
from jaxgen import outputs, parallel
from jaxgen import workdir as workdir_lib
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import features
from jaxgen.evaluation.gaussian import GaussianAccumulator

_log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Reference:
  """The contents of a reference file; the identity fields are empty for a file that has only
  ``mu`` and ``sigma`` (pytorch-fid, clean-fid)."""

  mu: np.ndarray
  sigma: np.ndarray
  count: int = 0
  network: str = ""
  sha256: str = ""
  data_shape: tuple[int, ...] = ()
  data_name: str = ""
  data_levels: int = 0
  dequantized: bool | None = None  # None: a file written before data_dequantized was recorded
  value_range: tuple[float, ...] = ()  # the model-space range the examples were scaled to

  def describe(self) -> str:
    return _describe(self.network, self.sha256, self.data_shape)


def _describe(network: str, sha256: str, shape: tuple[int, ...]) -> str:
  weights = f" (weights sha256 {sha256[:12]})" if sha256 else ""
  return f"{network} features{weights} of {list(shape)} examples"


def load(path: str) -> Reference:
  """Reads a reference file (see the module docstring); ``UserError`` when it cannot be used."""
  file = epath.Path(path)
  if not file.exists():
    raise UserError(f"eval.reference_stats={path} does not exist: make it with --mode=reference_stats "
                    "or give a pytorch-fid / clean-fid .npz")
  try:
    with np.load(io.BytesIO(file.read_bytes()), allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # empty, cut short, not an .npz
    raise UserError(f"eval.reference_stats={path} is not a readable .npz file ({type(e).__name__}); give a "
                    "file written by --mode=reference_stats, pytorch-fid or clean-fid") from None
  if "mu" not in arrays or "sigma" not in arrays:
    raise UserError(f"eval.reference_stats={path} holds {sorted(arrays)}, not 'mu' and 'sigma'; give a file "
                    "written by --mode=reference_stats, pytorch-fid or clean-fid")
  mu, sigma = np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise UserError(f"eval.reference_stats={path}: mu {mu.shape} and sigma {sigma.shape} are not [F] and [F, F]; "
                    "give a file written by --mode=reference_stats, pytorch-fid or clean-fid")
  if "feature_network" not in arrays:
    return Reference(mu, sigma)
  return Reference(mu, sigma, int(arrays["count"]), str(arrays["feature_network"]),
                   str(arrays["feature_weights_sha256"]), tuple(int(d) for d in arrays["data_shape"]),
                   str(arrays["data_name"]), int(arrays.get("data_levels", 0)),
                   bool(arrays["data_dequantized"]) if "data_dequantized" in arrays else None,
                   tuple(float(v) for v in arrays.get("data_value_range", ())))  # absent in older files


def check(config: ml_collections.ConfigDict, spec: DataSpec) -> Reference:
  """The file ``eval.reference_stats``, checked against the feature network of ``eval.features``
  and the data's example shape: a one-line ``UserError`` naming both when they differ."""
  path = str(config.eval.reference_stats)
  reference = load(path)
  net = features.network(config, spec)
  ours = _describe(net.space, net.sha256, tuple(spec.shape))
  fix = "make one with --mode=reference_stats and this config, or give a file made with this network and size"
  if reference.network:
    if (reference.network, reference.sha256, reference.data_shape) != (net.space, net.sha256, tuple(spec.shape)):
      raise UserError(f"eval.reference_stats={path} holds {reference.describe()}, but this run scores "
                      f"{ours}; {fix}")
  elif reference.mu.shape[0] != net.dim:
    raise UserError(f"eval.reference_stats={path} holds {reference.mu.shape[0]}-d statistics, but this run "
                    f"scores {ours} ({net.dim}-d); {fix}")
  else:
    _log.warning("eval.reference_stats=%s holds only mu and sigma (pytorch-fid / clean-fid): its feature "
                 "network and image size could not be checked; it must be of %s", path, ours)
  value_range = tuple(float(v) for v in spec.value_range)
  if net.space == "data" and reference.value_range and reference.value_range != value_range:
    raise UserError(f"eval.reference_stats={path} holds data features of examples scaled to "
                    f"{list(reference.value_range)}, but this run's are scaled to {list(value_range)} "
                    f"(data.scale); {fix}")
  other = [f"{what} {theirs!r} (this run: {mine!r})" for what, theirs, mine in
           (("data set", reference.data_name, spec.name), ("levels", reference.data_levels, spec.levels))
           if theirs and theirs != mine]
  if other:
    _log.warning("eval.reference_stats=%s was made from other data, %s: FID will compare the samples with "
                 "that data", path, ", ".join(other))
  if spec.dequantized and reference.network and reference.dequantized is None:
    _log.warning("eval.reference_stats=%s predates the 8-bit conversion of dequantized images by their bin "
                 "(jaxgen.outputs.to_uint8): remake it with --mode=reference_stats for FIDs comparable "
                 "with this run's samples", path)
  return reference


def output_path(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """``eval.reference_stats_out``, or ``<workdir>/reference_stats/<split>.npz``."""
  if config.eval.reference_stats_out:
    return epath.Path(config.eval.reference_stats_out)
  return workdir_lib.path(workdir) / "reference_stats" / f"{config.eval.reference_stats_split}.npz"


def _write(path: epath.Path, data: bytes) -> None:
  """``data`` to ``path`` (its folder created); a path that cannot be written is one line."""
  try:
    outputs.write_file(path, data)
  except OSError as e:
    raise UserError(f"cannot write the reference statistics to {path.parent} ({e.strerror or e}): set "
                    "--config.eval.reference_stats_out to a writable file path") from None


def compute(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """``--mode=reference_stats``: the statistics of split ``eval.reference_stats_split``, written (by
  process 0) to ``output_path``, which is returned."""
  cfg = config.eval
  split = cfg.reference_stats_split
  if split not in SPLITS:
    raise UserError(f"eval.reference_stats_split={split!r} is not a split; use one of {', '.join(SPLITS)}")
  parallel.check_batch_size(cfg.batch_size, "eval.batch_size")
  path = output_path(config, workdir)
  if jax.process_index() == 0:  # a path that cannot be written fails now, not after the long pass
    probe = path.parent / f".{path.name}.probe"
    _write(probe, b"")
    probe.unlink()
  mesh = parallel.make_mesh()
  pipe = data_lib.build(config, process_index=jax.process_index(), process_count=jax.process_count())
  spec = pipe.spec
  if not features.resolve(config, spec):
    raise UserError(f"--mode=reference_stats needs a feature space, which {spec.modality} data ({spec.name}) "
                    "does not have; it is for image and point data")
  features.check_space(config, spec, "reference_stats", needs_logits=False)
  if not features.available(config, spec):
    raise UserError(f"reference statistics of {spec.name} are in the Inception space, which needs its weights: "
                    "set --config.eval.inception_weights=PATH (or --config.eval.features=data)")
  net = features.network(config, spec, mesh)
  size = pipe.num_train if split == "train" else pipe.num_test
  acc = GaussianAccumulator()
  batches = pipe.split_batches(split, cfg.batch_size // jax.process_count())
  bar = tqdm.tqdm(total=size, unit="example", dynamic_ncols=True,
                  disable=not config.train.progress_bar or jax.process_index() != 0)
  for i, local in enumerate(batches):
    inputs = parallel.global_batch({"x": net.to_input(local["x"])}, mesh)["x"]
    real = min(cfg.batch_size, size - i * cfg.batch_size)  # padding rows come last
    acc.update(net.of_inputs(inputs).features[:real])
    bar.update(real)
  bar.close()
  mu, sigma = acc.finalize()
  if jax.process_index() == 0:
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma, count=np.int64(acc.count), feature_network=np.array(net.space),
             feature_weights_sha256=np.array(net.sha256), data_name=np.array(spec.name),
             data_modality=np.array(spec.modality), data_shape=np.array(spec.shape, np.int64),
             data_value_range=np.array(spec.value_range, np.float64),
             data_levels=np.int64(spec.levels), data_dequantized=np.bool_(spec.dequantized), split=np.array(split))
    _write(path, buffer.getvalue())
  _log.info("reference statistics of %d %s examples of %s (%s) -> %s", acc.count, split, spec.name,
            _describe(net.space, net.sha256, tuple(spec.shape)), path)
  return path
