"""``audio:PATH``: a folder of mono ``.wav`` files (read with ``scipy.io.wavfile``), recursively.

Each file becomes one clip of ``T = data.seq_len`` samples (0: 1024) as the tfds audio sets
(:func:`jaxgen.data.audio.clip_codes`): samples scaled to ``[-1, 1]`` (16-bit PCM / 32768; 8-bit
``(v - 128) / 128``; 24/32-bit / 2^31; float as stored), the first ``T`` kept, zero-padded at the end,
mu-law encoded to 256 codes (``levels=256``).

Sample rate. ``data.sample_rate`` = 0 takes the files' rate, which must then be the same for all;
a rate > 0 is required of every file. A file at another rate is *rejected*, not resampled:
resampling is a modelling choice (the anti-aliasing filter sets what is left above the new
Nyquist frequency), and resampling some files silently would mix recordings of different
bandwidths in one data set; the error names the file and the one-line conversion (``sox``), so the
choice stays visible. A file that is not mono is rejected likewise (mixing channels down is a
choice too). With ``data.skip_bad_files=True`` such files are skipped and counted instead.

Split and labels as :mod:`jaxgen.data.files` (``test/``/``val/`` sub-folder or path hash;
``data.labels_from_folders``), decoded once through :mod:`jaxgen.data.cache`.

  python -m jaxgen.main --config=configs/wavenet.py --workdir=runs/birds \\
    --config.data.name=audio:~/data/birds --config.data.seq_len=16000 --config.data.labels_from_folders=True
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxgen.data import audio, cache, files, source
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

KIND = "audio"
EXTENSIONS = (".wav",)
DEFAULTS = {
    **audio.DEFAULTS, **files.DEFAULTS, **cache.DEFAULTS,
    "sample_rate": 0,  # audio folders: required rate in Hz (0 = the files' common rate)
}
#: Divisor that maps each stored sample type to [-1, 1] (uint8 is offset by 128 first).
_SCALES = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0**31, np.dtype(np.uint8): 128.0,
           np.dtype(np.float32): 1.0, np.dtype(np.float64): 1.0}


def _read(file: files.File) -> tuple[int, np.ndarray]:
  """``(rate, samples)`` of a .wav file; unreadable ones are ``BadFile``."""
  from scipy.io import wavfile  # pylint: disable=g-import-not-at-top

  try:
    with file.path.open("rb") as f:
      return wavfile.read(f)
  except Exception as e:  # scipy raises ValueError, EOFError, struct.error, ...
    raise files.BadFile(f"cannot be read as a .wav file ({type(e).__name__}: {e})") from None


class WavDecoder:
  """:class:`jaxgen.data.cache.Decoder` of .wav files to mu-law codes (module docstring)."""

  def __init__(self, where: str, seq_len: int, sample_rate: int):
    self._where, self._seq_len, self._rate = where, seq_len, sample_rate
    self.options = {"seq_len": seq_len, "sample_rate": sample_rate}

  def header(self, file: files.File) -> int:
    """The file's rate, after checking channels, sample type and (if set) rate."""
    rate, samples = _read(file)
    if samples.ndim != 1:
      raise files.BadFile(f"has {samples.shape[1]} channels, not 1",
                          "mix it down to mono (e.g. sox in.wav -c 1 out.wav)")
    if samples.dtype not in _SCALES:
      raise files.BadFile(f"holds {samples.dtype} samples", "convert it to 16-bit PCM "
                          "(e.g. sox in.wav -b 16 out.wav)")
    if self._rate and rate != self._rate:
      raise files.BadFile(f"has a sample rate of {rate} Hz, not data.sample_rate={self._rate}",
                          f"resample it (e.g. sox in.wav -r {self._rate} out.wav)")
    return int(rate)

  def layout(self, headers: Sequence[tuple[files.File, Any]]) -> tuple[tuple[int, ...], dict]:
    first = {}
    for file, rate in headers:
      first.setdefault(rate, file)
    if len(first) > 1:
      (ra, fa), (rb, fb) = list(first.items())[:2]
      raise UserError(f"{self._where}: files at different sample rates ({fa.name}: {ra} Hz, {fb.name}: "
                      f"{rb} Hz): convert them to one rate (e.g. sox in.wav -r RATE out.wav), or set "
                      "data.sample_rate to the rate to keep and data.skip_bad_files=True to skip the others")
    return (self._seq_len,), {"sample_rate": next(iter(first))}

  def decode(self, file: files.File, meta: dict) -> np.ndarray:
    del meta
    _, samples = _read(file)
    wave = samples.astype(np.float64)
    if samples.dtype == np.uint8:
      wave -= 128.0
    return audio.clip_codes(wave / _SCALES[samples.dtype], self._seq_len)


@source.register(KIND + ":", defaults=DEFAULTS)
def load(data) -> source.Splits:
  """The audio folder ``data.path`` (module docstring)."""
  where = f"{KIND}:{data.path}"
  root, listed = files.list_files(KIND, str(data.path), EXTENSIONS, bool(data.get("skip_bad_files", False)))
  rate = int(data.sample_rate)
  if rate < 0:
    raise UserError(f"data.sample_rate={rate} is negative: set the rate in Hz, or 0 for the files' rate")
  decoder = WavDecoder(where, audio.clip_length(data, where), rate)
  decoded = cache.decode_folder(KIND, root, listed, decoder, data)
  spec = DataSpec(name=str(data.name), modality="audio", shape=tuple(decoded.x.shape[1:]), levels=256,
                  sample_rate=int(decoded.meta["sample_rate"]))
  return files.folder_splits(KIND, root, [listed[i] for i in decoded.kept], decoded.x, spec, data)
