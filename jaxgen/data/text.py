"""Character-level text data: the embedded ``text/pystdlib`` corpus and ``tiny_shakespeare``.

Conventions shared by every text set (``text:PATH`` files included, :mod:`jaxgen.data.text_file`):

* A corpus is one long string. The first 90% of its characters are the training text, the last
  10% the test text (a split by position, no randomness; ``split_point``). Text files use
  ``data.test_fraction`` (default 0.1) instead of the fixed 10%.
* Characters become token ids by their index in ``vocab`` (a tuple of single characters sorted by
  code point); characters outside the vocabulary become ``unknown``.
* Examples are windows of ``T = data.seq_len`` consecutive tokens (0: ``DEFAULT_SEQ_LEN``),
  ``x`` int32 ``[N, T]``.
  Training windows start every ``data.stride`` characters (overlapping when ``stride < T``, so
  each character is seen at several positions); test windows do not overlap (each test character
  is scored once). The families shift internally: a window is the whole sequence to model,
  ``log p(x) = sum_t log p(x_t | x_<t)``, the first token conditioned on a start token only.

``text/pystdlib`` is available on every machine without a download: the source text of a fixed
list of pure-Python standard-library modules (``PYSTDLIB_MODULES``), read from the running
interpreter's ``sysconfig.get_paths()["stdlib"]`` and concatenated in that order. Its exact text
depends on the Python version, which ``pystdlib_origin()`` records (3.11.7: 1,340,554 characters).
The vocabulary is fixed whatever the version: newline plus the 95 printable ASCII characters
(96 tokens); anything else (tabs, form feeds, non-ASCII) becomes ``"?"``.

``tiny_shakespeare`` (Karpathy 2015) is read with ``tfds.data_source`` from a prepared
tensorflow-datasets directory (``data.data_dir``); its vocabulary is the sorted set of characters
of the whole text (``char_vocab``; 65 for the real data set), as in char-rnn and nanoGPT.
"""

from __future__ import annotations

import pathlib
import platform
import sysconfig
from typing import Any

import numpy as np

from jaxgen.data import source, tfds_common
from jaxgen.data.spec import DataSpec, RawData
from jaxgen.errors import UserError

#: Modules of ``text/pystdlib``, in concatenation order (each ``<name>.py`` under the stdlib).
PYSTDLIB_MODULES = (
    "argparse", "ast", "bisect", "calendar", "collections/__init__", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "enum", "fractions",
    "functools", "gettext", "heapq", "inspect", "pathlib", "pprint", "random", "shutil",
    "statistics", "string", "textwrap", "threading", "tokenize", "typing",
)
#: Newline plus printable ASCII, sorted by code point.
ASCII_VOCAB = ("\n",) + tuple(chr(c) for c in range(32, 127))
TEST_FRACTION = 0.1
DEFAULT_SEQ_LEN = 64
DEFAULTS = {
    "seq_len": 0,  # tokens per example (0 = the source's default, here DEFAULT_SEQ_LEN)
    "stride": 0,  # training windows start every `stride` tokens (0 = seq_len // 4)
}


def encode(text: str, vocab: tuple[str, ...], unknown: str | None = None) -> np.ndarray:
  """Token ids of ``text``, int32 ``[len(text)]``; ``vocab`` must be sorted by code point.

  Raises:
    ValueError: a character outside ``vocab`` and no ``unknown`` character to map it to.
  """
  codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  table = np.array([ord(c) for c in vocab], dtype=np.uint32)
  ids = np.minimum(np.searchsorted(table, codes), len(vocab) - 1)
  known = table[ids] == codes
  if not known.all():
    if unknown is None:
      raise ValueError(f"{int((~known).sum())} characters are outside the vocabulary")
    ids = np.where(known, ids, vocab.index(unknown))
  return ids.astype(np.int32)


def char_vocab(text: str) -> tuple[str, ...]:
  """The characters of ``text``, sorted by code point: the vocabulary of a corpus read as it is."""
  return tuple(sorted(set(text)))


def decode(tokens: np.ndarray, vocab: tuple[str, ...]) -> str:
  """Inverse of ``encode`` for one sequence of ids ``[T]``."""
  return "".join(vocab[int(t)] for t in np.asarray(tokens))


def windows(tokens: np.ndarray, seq_len: int, stride: int) -> np.ndarray:
  """Windows ``tokens[i*stride : i*stride + seq_len]`` of tokens ``[L]``: int32 ``[N, seq_len]``.

  ``N = (L - seq_len) // stride + 1``; the tail shorter than a window is dropped.
  """
  if len(tokens) < seq_len:
    raise UserError(f"the text has {len(tokens)} characters, fewer than data.seq_len={seq_len}; "
                    "use a shorter data.seq_len")
  view = np.lib.stride_tricks.sliding_window_view(tokens, seq_len)[::stride]
  return np.ascontiguousarray(view, dtype=np.int32)


def window_lengths(data_config: Any) -> tuple[int, int]:
  """``(seq_len, stride)`` from ``data.seq_len`` / ``data.stride`` (0 or missing: ``DEFAULT_SEQ_LEN``
  and T // 4)."""
  seq_len = int(data_config.get("seq_len", 0)) or DEFAULT_SEQ_LEN
  stride = int(data_config.get("stride", 0)) or max(1, seq_len // 4)
  if seq_len < 2 or stride < 1:
    raise UserError(f"data.seq_len={seq_len} / data.stride={stride}: use seq_len >= 2, stride >= 1")
  return seq_len, stride


def split_point(length: int, test_fraction: float = TEST_FRACTION) -> int:
  """Tokens ``[:split_point]`` are the training text, the rest the test text."""
  return int(round(length * (1.0 - test_fraction)))


def text_data(name: str, text: str, vocab: tuple[str, ...], data_config: Any,
              unknown: str | None = None) -> RawData:
  """RawData of a corpus under this module's conventions (split, vocabulary, windows)."""
  seq_len, stride = window_lengths(data_config)
  tokens = encode(text, vocab, unknown)
  split = split_point(len(tokens))
  spec = DataSpec(name=name, modality="text", shape=(seq_len,), levels=len(vocab), vocab=vocab)
  return RawData(train={"x": windows(tokens[:split], seq_len, stride)},
                 test={"x": windows(tokens[split:], seq_len, seq_len)}, spec=spec)


def _stdlib_dir() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def pystdlib_text() -> str:
  """The ``text/pystdlib`` corpus: the listed modules' sources, concatenated."""
  paths = [_stdlib_dir() / f"{name}.py" for name in PYSTDLIB_MODULES]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise UserError(f"text/pystdlib needs the Python standard library's sources, missing: "
                    f"{', '.join(missing)}; use a Python installation that ships .py files")
  return "".join(p.read_text(encoding="utf-8") for p in paths)


def pystdlib_origin() -> dict[str, Any]:
  """Where ``text/pystdlib`` came from: Python version, stdlib directory, modules, size."""
  return {"python_version": platform.python_version(), "stdlib": str(_stdlib_dir()),
          "modules": PYSTDLIB_MODULES, "num_chars": len(pystdlib_text())}


@source.register("text/pystdlib", defaults=DEFAULTS)
def load_pystdlib(data_config) -> RawData:
  return text_data("text/pystdlib", pystdlib_text(), ASCII_VOCAB, data_config, unknown="?")


@source.register("tiny_shakespeare", defaults={**DEFAULTS, **tfds_common.DEFAULTS})
def load_tiny_shakespeare(data_config) -> RawData:
  """``tiny_shakespeare`` from tfds: its train and test strings joined, then split as above.

  The tfds splits (train / validation / test = 90% / 5% / 5%) are joined so that the split by
  position is the same as for every other text set (nanoGPT's split of this text).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  data_dir = tfds_common.data_dir(data_config)
  splits = [tfds_common.open_split(
      lambda split=split: tfds.data_source("tiny_shakespeare", split=split, data_dir=data_dir,
                                           download=False), "tiny_shakespeare", split, data_dir)
            for split in ("train", "validation", "test")]
  text = "".join(_as_str(source[i]["text"]) for source in splits for i in range(len(source)))
  return text_data("tiny_shakespeare", text, char_vocab(text), data_config)


def _as_str(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
