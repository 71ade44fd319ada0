"""The deterministic, per-process-sharded input pipeline: ``build(config) -> Pipeline``.

Order of training examples
--------------------------
The training stream is the concatenation of epochs ``e = 0, 1, ...``, epoch ``e`` being the
permutation ``default_rng([seed, 0, e]).permutation(N)`` of the ``N`` training examples. The global
batch of step ``s`` is items ``[s*B, (s+1)*B)`` of that stream (``B = train.batch_size``; a batch may
straddle two epochs), and its random preprocessing (dequantization, dynamic binarization, random
flips) uses ``default_rng([seed, 1, s])``. So a batch depends on ``(seed, s)`` only: a resumed run sees exactly
the batches of an uninterrupted one, whatever the number of processes. Process ``p`` of ``P`` gets
rows ``[p*B/P, (p+1)*B/P)`` and reads only those examples.

grain's samplers are not used: its per-process sharding splits the data set, not each global batch,
so the batches would change with the process count.
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np

from jaxgen.data import source as source_lib
from jaxgen.data.preprocess import Preprocessor
from jaxgen.data.source import Batch, Source
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

# Independent random streams under one seed: default_rng([seed, stream, counter]).
_PERMUTATION, _TRAIN_NOISE, _EVAL_NOISE, _HELD_OUT_NOISE, _TRAIN_SPLIT_NOISE = range(5)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, n: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, _PERMUTATION, epoch]).permutation(n)


def train_indices(seed: int, n: int, positions: np.ndarray) -> np.ndarray:
  """Training-example index at each ``position`` (int ``[b]``) of the epoch-concatenated stream."""
  epochs, offsets = np.divmod(positions, n)
  out = np.empty_like(positions)
  for epoch in np.unique(epochs):
    at = epochs == epoch
    out[at] = _epoch_permutation(seed, n, int(epoch))[offsets[at]]
  return out


class Pipeline:
  """Batches of one data set in model space for process ``process_index`` of ``process_count``.

  Attributes:
    spec: the model-space :class:`DataSpec`.
    local_batch_size: ``train.batch_size // process_count`` rows per training batch.
    num_train, num_test: split sizes.
  """

  def __init__(self, train: Source, test: Source, preprocess: Preprocessor, *, seed: int,
               batch_size: int, prefetch: int, process_index: int, process_count: int):
    self.spec: DataSpec = preprocess.spec
    self._train, self._test, self._preprocess = train, test, preprocess
    self._seed = seed
    self._batch_size = batch_size
    self._prefetch = prefetch
    self._process_index, self._process_count = process_index, process_count
    self.local_batch_size = batch_size // process_count
    self.num_train, self.num_test = len(train), len(test)

  def _noise(self, *stream: int) -> np.random.Generator | None:
    """The Generator of one random stream, or None when preprocessing draws nothing."""
    if not self._preprocess.uses_noise:
      return None
    return np.random.default_rng([self._seed, *stream])

  def _local_rows(self, global_size: int) -> slice:
    local = global_size // self._process_count
    return slice(self._process_index * local, (self._process_index + 1) * local)

  def train_batch(self, step: int) -> Batch:
    """This process's rows of global training batch ``step``: ``"x"`` ``[local_batch_size, ...]``
    (float32; int32 tokens for text/audio) and ``"label"`` int32 when the set has classes."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    rows = self._local_rows(self._batch_size)
    positions = np.arange(rows.start, rows.stop, dtype=np.int64) + step * self._batch_size
    raw = self._train.get(train_indices(self._seed, self.num_train, positions))
    return self._preprocess(raw, self._noise(_TRAIN_NOISE, step), rows, self._batch_size, train=True)

  def iterate_train(self, start_step: int = 0, transform: Callable[[Batch], Any] | None = None
                    ) -> Iterator[tuple[int, Any]]:
    """Yields ``(step, transform(train_batch(step)))`` for ``step = start_step, start_step + 1, ...``.

    A background thread prepares up to ``data.prefetch`` batches ahead (none when 0), ``transform``
    included (the trainer passes the host -> device transfer, so it overlaps with compute too); it
    stops when the iterator is closed or garbage-collected, and its errors are raised here.
    """
    transform = transform or (lambda batch: batch)
    if self._prefetch <= 0:
      step = start_step
      while True:
        yield step, transform(self.train_batch(step))
        step += 1
    ready: queue.Queue = queue.Queue(maxsize=self._prefetch)
    stop = threading.Event()

    def put(item) -> bool:
      while not stop.is_set():
        try:
          ready.put(item, timeout=0.1)
          return True
        except queue.Full:
          pass
      return False

    def produce():
      step = start_step
      try:
        while put((step, transform(self.train_batch(step)))):
          step += 1
      except BaseException as e:  # handed to the consumer, which raises it
        put(e)

    thread = threading.Thread(target=produce, name="jaxgen-data", daemon=True)
    thread.start()
    try:
      while True:
        item = ready.get()
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      thread.join(timeout=10)

  def eval_batches(self, batch_size: int, num_batches: int = 0) -> Iterator[Batch]:
    """The test split in order: ``split_batches("test", batch_size, num_batches)``."""
    return self.split_batches("test", batch_size, num_batches)

  def split_batches(self, split: str, batch_size: int, num_batches: int = 0) -> Iterator[Batch]:
    """Split ``split`` (``"train"`` or ``"test"``) in its own order, ``batch_size`` rows per
    process per batch, without random flips (for evaluation and reference statistics).

    Global batch ``i`` holds examples ``[i*G, (i+1)*G)``, ``G = batch_size * process_count``,
    and this process gets rows ``[p*batch_size, (p+1)*batch_size)`` of it. Every example
    appears exactly once; the last batch is padded to full size (repeating example 0). Every
    batch carries ``"mask"`` float32 ``[batch_size]``: 1 for real examples, 0 for padding. Random
    preprocessing of batch ``i`` uses ``default_rng([seed, 2, i])`` for the test split and
    ``default_rng([seed, 4, i])`` for the training split, so it is the same every time.
    ``num_batches > 0`` stops after that many batches.
    """
    if batch_size <= 0:
      raise UserError(f"eval batch size {batch_size} must be positive: raise eval.batch_size")
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data, size = (self._test, self.num_test) if split == "test" else (self._train, self.num_train)
    stream = _EVAL_NOISE if split == "test" else _TRAIN_SPLIT_NOISE
    global_size = batch_size * self._process_count
    total = -(-size // global_size)
    if num_batches > 0:
      total = min(total, num_batches)
    rows = self._local_rows(global_size)
    for i in range(total):
      positions = np.arange(rows.start, rows.stop, dtype=np.int64) + i * global_size
      real = positions < size
      batch = self._preprocess(data.get(np.where(real, positions, 0)), self._noise(stream, i), rows,
                               global_size)
      batch["mask"] = real.astype(np.float32)
      yield batch

  def held_out(self, num: int) -> Batch:
    """The first ``min(num, num_test)`` test examples in model space, the same on every process
    (random preprocessing from ``default_rng([seed, 3])``)."""
    num = min(num, self.num_test)
    return self._preprocess(self._test.get(np.arange(num)), self._noise(_HELD_OUT_NOISE),
                            slice(0, num), num)


def _data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config.data`` with ``seed`` = ``config.seed`` unless ``data.seed`` is set (>= 0), for loaders."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  if data.get("seed", -1) < 0:
    data.seed = config.seed
  return data


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> Pipeline:
  """The input pipeline for ``config`` (see the module docstring), for one process.

  ``config.data.name`` is resolved by the data-source registry (:mod:`jaxgen.data.source`).
  """
  batch_size = int(config.train.batch_size)
  if batch_size <= 0 or batch_size % process_count:
    raise UserError(
        f"train.batch_size={batch_size} is not a positive multiple of the process count "
        f"{process_count}: set --config.train.batch_size to a multiple of {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
  if config.seed < 0:
    raise UserError(f"seed={config.seed} is negative: set --config.seed to a number >= 0")
  data = _data_config(config)
  splits = source_lib.load(data)
  return Pipeline(splits.train, splits.test, Preprocessor(splits.spec, data), seed=int(config.seed),
                  batch_size=batch_size, prefetch=int(data.prefetch), process_index=process_index,
                  process_count=process_count)
