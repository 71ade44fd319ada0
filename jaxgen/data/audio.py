"""``audio/tones``: a synthesized, deterministic 1-D audio data set, and mu-law companding.

Clips are ``data.seq_len`` samples (0: ``DEFAULT_SEQ_LEN`` = 1024) at ``SAMPLE_RATE`` = 8000 Hz, of four kinds
(the label, ``num_classes=4``):

0. ``tone``: a harmonic tone, ``f0`` from a fixed set of notes (A minor pentatonic, 220-880 Hz),
   harmonics ``1..6`` with amplitudes ``h^-rolloff`` and random phases, under an ADSR envelope;
1. ``chirp``: a sine whose frequency glides exponentially between two notes of the set, ADSR;
2. ``pluck``: a harmonic tone whose harmonic ``h`` decays as ``exp(-h t / tau)`` (sharp attack);
3. ``tremolo``: a harmonic tone with 15-40 Hz amplitude modulation, ADSR.

Peaks are scaled to ``[0.3, 0.9]`` and the waveform is mu-law encoded (``mu = 255``) to int32
codes in ``{0..255}`` (``levels=256``). The set is fixed: it is drawn from its own seed
(``SEED``), not ``config.seed``, so every run and every user sees the same clips; labels cycle
through the kinds, so the classes are balanced. ``NUM_TRAIN`` / ``NUM_TEST`` clips.

Also the conventions every audio source shares: ``mu_law_encode`` / ``mu_law_decode``,
``clip_codes`` (cut or pad a clip to ``seq_len`` samples) and ``clip_length`` (``data.seq_len``).
"""

from __future__ import annotations

import numpy as np

from jaxgen.data import source
from jaxgen.data.spec import DataSpec, RawData
from jaxgen.errors import UserError

SAMPLE_RATE = 8000
DEFAULT_SEQ_LEN = 1024
NUM_TRAIN = 2048
NUM_TEST = 256
SEED = 20160912  # WaveNet's arXiv date; the data set's own seed
KINDS = ("tone", "chirp", "pluck", "tremolo")
NOTES = 220.0 * 2.0 ** (np.array([0, 3, 5, 7, 10, 12, 15, 17, 19, 22, 24]) / 12.0)  # A minor pentatonic
MU = 255
PCM_SCALE = 32768.0  # 16-bit PCM full scale
DEFAULTS = {"seq_len": 0}  # samples per clip (0 = the source's default, here DEFAULT_SEQ_LEN)


def mu_law_encode(x: np.ndarray, mu: int = MU) -> np.ndarray:
  """Waveform in ``[-1, 1]`` -> int32 codes in ``{0..mu}``.

  ``y = sign(x) log(1 + mu |x|) / log(1 + mu)``, code ``= round((y + 1) / 2 * mu)``; the inverse of
  ``jaxgen.outputs.mu_law_decode``. (Two lines of numpy; no installed library provides it.)
  """
  x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
  y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
  return np.round((y + 1.0) / 2.0 * mu).astype(np.int32)


def mu_law_decode(codes: np.ndarray, mu: int = MU) -> np.ndarray:
  """Codes in ``{0..mu}`` -> waveform: ``sign(y) ((1+mu)^|y| - 1) / mu`` with ``y = 2 c / mu - 1``."""
  y = 2.0 * np.asarray(codes, np.float64) / mu - 1.0
  return np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1.0) / mu


def clip_codes(pcm: np.ndarray, seq_len: int) -> np.ndarray:
  """One mono clip's samples ``[L]`` -> mu-law codes uint8 ``[seq_len]``.

  Integer samples are 16-bit PCM (divided by 32768); float samples are taken as already in
  ``[-1, 1]``. The first ``seq_len`` samples are kept, zero-padded (silence, code 128) at the end
  when ``L < seq_len``.
  """
  pcm = np.asarray(pcm)
  if pcm.ndim != 1:
    raise UserError(f"audio clips of shape {pcm.shape} are not mono: only mono audio is read")
  wave = pcm.astype(np.float64) / (PCM_SCALE if np.issubdtype(pcm.dtype, np.integer) else 1.0)
  padded = np.zeros(seq_len)
  padded[:min(len(wave), seq_len)] = wave[:seq_len]
  return mu_law_encode(padded).astype(np.uint8)


def clip_length(data_config, what: str) -> int:
  """``data.seq_len`` (0 or missing: ``DEFAULT_SEQ_LEN``), checked to be >= 2."""
  length = int(data_config.get("seq_len", 0)) or DEFAULT_SEQ_LEN
  if length < 2:
    raise UserError(f"data.seq_len={length} is too short for {what}: use a length >= 2 (e.g. 4096)")
  return length


def _adsr(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
  """``[n, T]`` attack-decay-sustain-release envelopes with random times and sustain level."""
  total = t[-1] + 1.0 / SAMPLE_RATE
  attack = rng.uniform(0.005, 0.2, (n, 1)) * total
  decay = rng.uniform(0.05, 0.3, (n, 1)) * total
  release = rng.uniform(0.1, 0.3, (n, 1)) * total
  sustain = rng.uniform(0.4, 0.9, (n, 1))
  rise = np.clip(t / attack, 0.0, 1.0)
  fall = 1.0 - (1.0 - sustain) * np.clip((t - attack) / decay, 0.0, 1.0)
  tail = np.clip((total - t) / release, 0.0, 1.0)
  return rise * fall * tail


def _harmonic(rng: np.random.Generator, f0: np.ndarray, t: np.ndarray, decay_tau=None) -> np.ndarray:
  """``[n, T]`` sums of harmonics 1..6 of ``f0 [n, 1]`` with amplitude ``h^-rolloff``."""
  n = f0.shape[0]
  rolloff = rng.uniform(0.8, 2.0, (n, 1))
  wave = np.zeros((n, t.shape[0]))
  for h in range(1, 7):
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 1))
    partial = h ** -rolloff * np.sin(2.0 * np.pi * h * f0 * t + phase)
    if decay_tau is not None:
      partial = partial * np.exp(-h * t / decay_tau)
    wave += partial
  return wave


def _chirp(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
  """``[n, T]`` sines gliding exponentially from one note to a different one:
  ``f(t) = f0 r^(t/D)`` with ``r = f1 / f0`` and clip duration ``D``, so the phase is
  ``2 pi f0 D (r^(t/D) - 1) / log r``."""
  i0 = rng.integers(0, len(NOTES), (n, 1))
  i1 = (i0 + rng.integers(1, len(NOTES), (n, 1))) % len(NOTES)
  f0, ratio = NOTES[i0], NOTES[i1] / NOTES[i0]
  duration = t[-1] + 1.0 / SAMPLE_RATE
  return np.sin(2.0 * np.pi * f0 * duration * (ratio ** (t / duration) - 1.0) / np.log(ratio))


def synthesize(num: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``num`` clips: (waveforms float64 ``[num, seq_len]``, peaks in [0.3, 0.9]; labels int32 ``[num]``).

  Labels cycle through ``KINDS``; all randomness comes from ``rng``.
  """
  t = np.arange(seq_len) / SAMPLE_RATE
  labels = np.arange(num, dtype=np.int32) % len(KINDS)
  waves = np.zeros((num, seq_len))
  for kind in range(len(KINDS)):
    at = labels == kind
    n = int(at.sum())
    f0 = rng.choice(NOTES, (n, 1))
    if kind == 0:
      wave = _harmonic(rng, f0, t) * _adsr(rng, n, t)
    elif kind == 1:
      wave = _chirp(rng, n, t) * _adsr(rng, n, t)
    elif kind == 2:
      wave = _harmonic(rng, f0, t, decay_tau=rng.uniform(0.1, 0.5, (n, 1)) * seq_len / SAMPLE_RATE)
    else:
      rate = rng.uniform(15.0, 40.0, (n, 1))
      depth = rng.uniform(0.3, 0.8, (n, 1))
      tremolo = 1.0 - depth * 0.5 * (1.0 + np.sin(2.0 * np.pi * rate * t))
      wave = _harmonic(rng, f0, t) * _adsr(rng, n, t) * tremolo
    peak = rng.uniform(0.3, 0.9, (n, 1))
    waves[at] = wave * peak / np.maximum(np.abs(wave).max(axis=1, keepdims=True), 1e-9)
  return waves, labels


@source.register("audio/tones", defaults=DEFAULTS)
def load(data_config) -> RawData:
  """The ``audio/tones`` clips (module docstring); ``data_config.seq_len`` sets the clip length."""
  length = clip_length(data_config, "audio/tones")
  splits = {}
  for index, (split, num) in enumerate((("train", NUM_TRAIN), ("test", NUM_TEST))):
    waves, labels = synthesize(num, length, np.random.default_rng([SEED, index]))
    splits[split] = {"x": mu_law_encode(waves), "label": labels}
  spec = DataSpec(name="audio/tones", modality="audio", shape=(length,), levels=MU + 1,
                  num_classes=len(KINDS), sample_rate=SAMPLE_RATE)
  return RawData(train=splits["train"], test=splits["test"], spec=spec)
