"""``text:PATH``: one UTF-8 text file as a text data set (the conventions of :mod:`jaxgen.data.text`).

Tokens (``data.tokenizer``):

* ``chars`` (default): the file's own characters, sorted by code point, are the vocabulary
  (``text.char_vocab``, as nanoGPT's ``shakespeare_char`` and the tfds ``tiny_shakespeare`` set:
  the tinyshakespeare text as a plain file gives the same 65 characters);
* ``bytes``: the 256 byte values (token ``b`` is shown as ``chr(b)``, i.e. read as Latin-1); any
  file is accepted.

Split and windows as every text set: the first ``1 - data.test_fraction`` of the tokens train
(windows of ``data.seq_len`` starting every ``data.stride``), the rest test (non-overlapping
windows). The windows are not materialised: a split holds its tokens once, and ``get`` gathers
the rows, so memory is about the file's size whatever the stride.

  python -m jaxgen.main --config=configs/transformer.py --workdir=runs/shakespeare \\
    --config.data.name=text:input.txt --config.data.seq_len=256
"""

from __future__ import annotations

import os

import numpy as np

from jaxgen.data import files, source, text
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

KIND = "text"
TOKENIZERS = ("chars", "bytes")
DEFAULTS = {
    **text.DEFAULTS,
    "tokenizer": "chars",  # text files: chars (the file's characters) | bytes (256 byte values)
    "test_fraction": files.DEFAULTS["test_fraction"],
}


class WindowSource:
  """Windows ``tokens[i*stride : i*stride + seq_len]`` (int32) of one split's tokens ``[L]``."""

  def __init__(self, tokens: np.ndarray, seq_len: int, stride: int):
    self._tokens, self._seq_len, self._stride = tokens, seq_len, stride

  def __len__(self) -> int:
    return (len(self._tokens) - self._seq_len) // self._stride + 1

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    starts = np.asarray(indices, np.int64)[:, None] * self._stride
    return {"x": self._tokens[starts + np.arange(self._seq_len)].astype(np.int32)}


def _read(path: str) -> bytes:
  file = files.user_path(path)
  if not file.exists():
    raise UserError(f"{KIND}:{path}: no such file (relative paths start at {os.getcwd()}); fix the "
                    f"path in --config.data.name={KIND}:PATH")
  if file.is_dir():
    raise UserError(f"{KIND}:{path} is a folder; {KIND}:PATH reads one UTF-8 text file: name the file")
  return file.read_bytes()


def tokenize(raw: bytes, tokenizer: str, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
  """``(tokens [L] (uint8 or wider), vocab)`` of a file's bytes (module docstring)."""
  if tokenizer == "bytes":
    return np.frombuffer(raw, np.uint8), tuple(chr(b) for b in range(256))
  if tokenizer != "chars":
    raise UserError(f"data.tokenizer={tokenizer!r} is not one of {list(TOKENIZERS)}: set one of them")
  try:
    corpus = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{where} is not UTF-8: byte 0x{raw[e.start]:02x} at byte offset {e.start} "
                    f"({e.reason}); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or set "
                    "data.tokenizer=bytes") from None
  vocab = text.char_vocab(corpus)
  return text.encode(corpus, vocab).astype(np.min_scalar_type(max(len(vocab) - 1, 0))), vocab


@source.register(KIND + ":", defaults=DEFAULTS)
def load(data) -> source.Splits:
  """The text file ``data.path`` (module docstring)."""
  where = f"{KIND}:{data.path}"
  tokens, vocab = tokenize(_read(str(data.path)), str(data.tokenizer), where)
  seq_len, stride = text.window_lengths(data)
  fraction = float(data.test_fraction)
  if not 0.0 < fraction < 1.0:
    raise UserError(f"data.test_fraction={fraction} is not in (0, 1): set e.g. 0.1")
  split = text.split_point(len(tokens), fraction)
  for part, length in (("training", split), ("test", len(tokens) - split)):
    if length < seq_len:
      raise UserError(f"{where} has {len(tokens)} tokens: its {part} part ({length}) is shorter than "
                      f"data.seq_len={seq_len}; use a shorter data.seq_len or a longer text")
  spec = DataSpec(name=str(data.name), modality="text", shape=(seq_len,), levels=len(vocab), vocab=vocab)
  return source.Splits(WindowSource(tokens[:split], seq_len, stride),
                       WindowSource(tokens[split:], seq_len, seq_len), spec)
