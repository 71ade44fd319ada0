"""Audio data sets from tensorflow-datasets: ``spoken_digit`` and ``speech_commands``.

Both are read from a prepared tensorflow-datasets directory (``data.data_dir``, ``""`` = the tfds
default) with ``tfds.builder(...).as_data_source`` (random access to the ``array_record`` files),
converted once and held in memory:

* the ``audio`` feature (mono, variable length; integer samples are 16-bit PCM) becomes a waveform
  ``w = pcm / 32768`` in ``[-1, 1)`` (float samples are taken as already in ``[-1, 1]``);
* each clip is cut to ``T = data.seq_len`` samples (0: 1024): its *first* ``T`` samples, zero-padded
  (silence) at the end when it is shorter. Both sets are trimmed or centred on the utterance, so
  the start holds the sound and the padding is silence;
* ``x`` = ``audio.mu_law_encode(w)``: 256 mu-law codes (``levels=256``), padding = code 128. The
  codes are stored as uint8 ``[N, T]`` (a quarter of the memory of int32); the pipeline hands the
  model int32 batches;
* ``label`` = the ``ClassLabel`` (int32), ``num_classes`` and ``sample_rate`` from the builder's
  feature metadata (spoken_digit: 10 digits at 8 kHz; speech_commands: 12 classes at 16 kHz).

Memory: ``N * T`` bytes, e.g. 85,511 speech_commands training clips at ``T = 16000`` (1 s): 1.4 GB.

Splits. ``spoken_digit`` (the Free Spoken Digit Dataset) has a single tfds split, ``train``; its
README defines the official test set: the recordings numbered 0-4 (of 0-49) of every speaker and
digit, read from the ``audio/filename`` feature ``{digit}_{speaker}_{index}.wav``. So the test set
is 10%, with every speaker and digit in both sets. ``speech_commands`` uses the tfds splits named by
``data.train_split`` / ``data.test_split`` (any tfds split syntax, e.g. ``"train[:10%]"``).

TensorFlow is needed to read these sets, although nothing here uses it: constructing a tfds
``Audio`` feature calls ``tf.dtypes.as_dtype`` (tensorflow/datasets#11233). Preparing them needs it
too, with ``pydub`` (the builders decode the .wav files with it) and ``importlib_resources``
(imported by tfds 4.9.10 when preparing, though declared only for Python < 3.9).
"""

from __future__ import annotations

import re

import numpy as np

from jaxgen.data import audio, source, tfds_common
from jaxgen.data.spec import DataSpec, RawData
from jaxgen.errors import UserError

#: FSDD's README: "Recordings numbered 0-4 (inclusive) are in the test and 5-49 are in the training set."
FSDD_NUM_TEST_INDICES = 5
_FSDD_FILENAME = re.compile(r"^(\d+)_([^_]+)_(\d+)\.wav$")
#: What preparing (and reading) these sets needs besides tensorflow-datasets (module docstring).
PACKAGES = "tensorflow-cpu pydub importlib_resources"
DEFAULTS = {**tfds_common.DEFAULTS, **audio.DEFAULTS, "train_split": "train", "test_split": "test"}


def _builder(name: str, data_dir: str | None):
  """The tfds builder of ``name`` (its metadata only; reads nothing)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    return tfds.builder(name, data_dir=data_dir)
  except ModuleNotFoundError as e:  # tfds.features.Audio imports TensorFlow (module docstring)
    raise UserError(f"reading the tensorflow-datasets audio set {name!r} needs TensorFlow "
                    f"({e}): pip install tensorflow-cpu") from None


def _spec(builder, seq_len: int) -> DataSpec:
  """256 mu-law levels; ``num_classes`` and ``sample_rate`` from the builder's features."""
  features = builder.info.features
  label = features["label"] if "label" in features else None
  return DataSpec(name=builder.name, modality="audio", shape=(seq_len,), levels=256,
                  num_classes=int(getattr(label, "num_classes", 0) or 0),
                  sample_rate=int(features["audio"].sample_rate or 0))


def _read(builder, split: str, data_dir: str | None, spec: DataSpec,
          keep: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """Every example of ``split`` (tfds split syntax) in the prepared files' order, converted one at
  a time (module docstring): ``"x"`` uint8 ``[N, T]``, ``"label"`` int32 ``[N]`` when
  ``spec.num_classes``, and each feature named in ``keep`` as an object array ``[N]``."""
  examples = tfds_common.open_split(lambda: builder.as_data_source(split=split), spec.name, split,
                                     data_dir, PACKAGES)
  n = len(examples)
  out = {"x": np.zeros((n, *spec.shape), np.uint8)}
  fields = (("label",) if spec.num_classes else ()) + keep
  out.update({key: np.zeros((n,), np.int32 if key == "label" else object) for key in fields})
  for i in range(n):
    example = examples[i]
    out["x"][i] = audio.clip_codes(example["audio"], spec.shape[0])
    for key in fields:
      out[key][i] = example[key]
  return out


def fsdd_index(filename: str | bytes) -> int:
  """The recording number in an FSDD file name ``{digit}_{speaker}_{index}.wav``: 32 for
  ``7_jackson_32.wav``."""
  filename = filename.decode("utf-8") if isinstance(filename, bytes) else str(filename)
  match = _FSDD_FILENAME.match(filename)
  if match is None:
    raise UserError(f"spoken_digit file name {filename!r} is not FSDD's "
                    "{digit}_{speaker}_{index}.wav: the prepared data set is not the Free Spoken "
                    "Digit Dataset; prepare it again")
  return int(match.group(3))


@source.register("spoken_digit", defaults=DEFAULTS)
def load_spoken_digit(data_config) -> RawData:
  """``spoken_digit`` with FSDD's official split (recordings 0-4 are the test set); the
  ``data.train_split`` / ``data.test_split`` settings do not apply."""
  data_dir = tfds_common.data_dir(data_config)
  builder = _builder("spoken_digit", data_dir)
  spec = _spec(builder, audio.clip_length(data_config, "spoken_digit"))
  examples = _read(builder, "train", data_dir, spec, keep=("audio/filename",))
  names = examples.pop("audio/filename")
  test = np.array([fsdd_index(name) < FSDD_NUM_TEST_INDICES for name in names], bool)
  return RawData(train={k: v[~test] for k, v in examples.items()},
                 test={k: v[test] for k, v in examples.items()}, spec=spec)


@source.register("speech_commands", defaults=DEFAULTS)
def load_speech_commands(data_config) -> RawData:
  """``speech_commands`` (Warden 2018; 1 s clips, 10 words + silence + unknown): the tfds splits
  ``data.train_split`` and ``data.test_split``."""
  data_dir = tfds_common.data_dir(data_config)
  builder = _builder("speech_commands", data_dir)
  spec = _spec(builder, audio.clip_length(data_config, "speech_commands"))
  train, test = (_read(builder, str(data_config.get(key, default)), data_dir, spec)
                 for key, default in (("train_split", "train"), ("test_split", "test")))
  return RawData(train=train, test=test, spec=spec)
