"""WaveNet: exact causality and receptive field, NLL vs a slow reference, Fast-WaveNet generation
== naive generation token for token, mu-law, the ``audio/tones`` set, the tfds audio sets
(``spoken_digit``, ``speech_commands``) on data made here, and the whole loop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import wave
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special
import tensorflow_datasets as tfds

from conftest import load_config, tiny_config
from jaxgen import families, outputs, train
from jaxgen.data import audio, tfds_audio
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.wavenet import WaveNet

SPEC = DataSpec("audio/tones", "audio", (40,), levels=256, num_classes=4, sample_rate=8000)


def _family(kernel_size=2, conditional=True, spec=SPEC, **sample):
  config = load_config("wavenet", **{
      "model.residual_channels": 8, "model.dilation_channels": 8, "model.skip_channels": 16,
      "model.kernel_size": kernel_size, "model.dilation_cycle": 3, "model.num_cycles": 2,
      "model.conditional": conditional, **{f"sample.{k}": v for k, v in sample.items()}})
  return families.build(config, spec)


def _init(fam, batch):
  # Compiled, with an "rbg" key: threefry initialisation of every layer compiles ~4x slower.
  return jax.jit(fam.init)(jax.random.key(0, impl="rbg"), batch)


def _batch(n=2, length=40, seed=0):
  x = np.random.default_rng(seed).integers(0, 256, (n, length))
  return {"x": jnp.asarray(x, jnp.int32), "label": jnp.arange(n, dtype=jnp.int32) % 4}


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_causal_with_exact_receptive_field(kernel_size):
  """d logits_t / d x_s is exactly 0 for s >= t and for s < t - R, non-zero for t-R <= s < t,
  with R = 2 + sum_l (k-1) d_l (here dilations 1,2,4,1,2,4)."""
  fam = _family(kernel_size)
  batch = _batch(n=1)
  params, _ = _init(fam, batch)
  r = 2 + (kernel_size - 1) * 14
  assert fam.net.receptive_field == r
  e = jax.random.normal(jax.random.key(1), (40, 8))
  proj = jax.random.normal(jax.random.key(2), (256,))

  def out(e):
    return fam.net.apply(params["model"], e[None], batch["label"], method=WaveNet.from_embeddings)[0] @ proj

  jac = np.abs(np.asarray(jax.jit(jax.jacrev(out))(e))).sum(-1)  # [t, s]
  t, s = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
  inside = (s < t) & (s >= t - r)
  np.testing.assert_array_equal(jac[~inside], 0.0)
  assert np.all(jac[inside] > 0.0)


def test_nll_equals_sum_of_slow_per_position_log_probs():
  """log p(x) == sum_t log softmax(logits_t)[x_t], logits_t from a separate pass on a copy of x
  whose positions >= t are replaced by random tokens (scipy log-softmax)."""
  fam = _family()
  batch = _batch()
  params, state = _init(fam, batch)
  metrics = jax.jit(fam.eval_metrics)(params, state, batch, jax.random.key(1))
  net = jax.jit(lambda x: fam.net.apply(params["model"], x, batch["label"]))
  x = np.asarray(batch["x"])
  rng = np.random.default_rng(1)
  expected = np.zeros(2)
  for t in range(40):
    corrupted = np.where(np.arange(40) >= t, rng.integers(0, 256, x.shape), x)
    lp = scipy.special.log_softmax(np.asarray(net(jnp.asarray(corrupted)), np.float64)[:, t], axis=-1)
    expected += lp[np.arange(2), x[:, t]]
  chex.assert_shape(metrics["nll_nats"], (2,))
  np.testing.assert_allclose(metrics["nll_nats"], -expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"], -expected / (40 * math.log(2)), rtol=1e-5)


def test_uniform_model_is_exactly_8_bits_per_dim():
  fam = _family()
  batch = _batch(n=3)
  params, state = _init(fam, batch)
  params = {"model": jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.zeros_like(p) if "out_logits" in jax.tree_util.keystr(path) else p, params["model"])}
  metrics = jax.jit(fam.eval_metrics)(params, state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["bits_per_dim"], 8.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["nll_nats"], 40 * math.log(256), rtol=1e-6)


@pytest.mark.parametrize("kernel_size,conditional,controls", [
    (2, True, {"temperature": 0.8, "top_k": 40, "top_p": 0.9}),
    (3, False, {"temperature": 1.3}),
])
def test_fast_generation_equals_naive_token_for_token(kernel_size, conditional, controls):
  """Same key and controls: the queue-based scan and the windowed recompute draw the same tokens
  (40 steps, past the receptive field); each compiles once; the fast step-by-step logits equal the
  teacher-forced full pass on the generated sequence."""
  chex.clear_trace_counter()  # the counters are per function across the parametrized cases
  fam = _family(kernel_size, conditional, **controls)
  batch = _batch()
  params, _ = _init(fam, batch)
  labels = jnp.array([1, 3, 0], jnp.int32) if conditional else None

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fast(params, rng):
    return fam.generate(params, rng, labels, 3, 40)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def naive(params, rng):
    return fam.generate(params, rng, labels, 3, 40, naive=True)

  for seed in (1, 2):
    a, b = fast(params, jax.random.key(seed)), naive(params, jax.random.key(seed))
    chex.assert_shape(a, (3, 40))
    np.testing.assert_array_equal(a, b)
  assert len(np.unique(np.asarray(a))) > 10  # actually random, not a constant sequence

  def step(carry, t):
    queues, prev = carry
    logits, queues = fam.net.apply(params["model"], prev, t, queues, labels, method=WaveNet.step)
    return (queues, a[:, t]), logits

  queues = fam.net.apply(params["model"], 3, method=WaveNet.init_queues)
  _, step_logits = jax.jit(lambda q: jax.lax.scan(step, (q, jnp.zeros(3, jnp.int32)), jnp.arange(40)))(queues)
  full = jax.jit(lambda x: fam.net.apply(params["model"], x, labels))(a)
  np.testing.assert_allclose(jnp.swapaxes(step_logits, 0, 1), full, atol=1e-5, rtol=1e-5)


def test_sample_uses_config_label_and_controls():
  """``sample`` draws every clip with ``sample.label``; greedy (T=0) equals top_k=1."""
  greedy = _family(label=2, temperature=0.0)
  top1 = _family(label=2, top_k=1)
  batch = _batch()
  params, state = _init(greedy, batch)
  a = jax.jit(lambda p, k: greedy.sample(p, state, k, 2))(params, jax.random.key(1))
  b = jax.jit(lambda p, k: top1.sample(p, state, k, 2))(params, jax.random.key(7))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, greedy.generate(params, jax.random.key(9), jnp.full((2,), 2), 2, 40))
  with pytest.raises(UserError, match="sample.label=4"):
    _family(label=4).sample(params, state, jax.random.key(0), 2)


def test_mu_law_worked_values_and_round_trip():
  np.testing.assert_array_equal(audio.mu_law_encode(np.array([-1.0, 0.0, 1.0])), [0, 128, 255])
  # y(0.5) = log(1 + 127.5) / log(256) = 0.87570; code = round((1 + y) / 2 * 255) = round(239.15).
  assert audio.mu_law_encode(np.array([0.5]))[0] == 239
  x = np.linspace(-1.0, 1.0, 20001)
  codes = audio.mu_law_encode(x)
  assert codes.min() == 0 and codes.max() == 255 and np.all(np.diff(codes) >= 0)
  # The code is the nearest one in the companded domain (error <= half a step of 2/255) ...
  y = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255)
  assert np.max(np.abs(y - (2.0 * codes / 255 - 1.0))) <= 1.0 / 255 + 1e-12
  # ... and decoding (ours and jaxgen.outputs') lands within that step's quantization interval.
  for decode in (audio.mu_law_decode, outputs.mu_law_decode):
    back = decode(codes)
    c = codes.astype(np.float64)
    half_bin = np.maximum(decode(c + 0.5) - decode(c), decode(c) - decode(c - 0.5))
    assert np.all(np.abs(back - x) <= half_bin + 1e-12)
    np.testing.assert_array_equal(audio.mu_law_encode(back), codes)


def test_audio_tones_is_fixed_balanced_and_harmonic():
  data = audio.load(ml_collections.ConfigDict({"seq_len": 512, "seed": 123}))
  again = audio.load(ml_collections.ConfigDict({"seq_len": 512, "seed": 7}))  # config.seed ignored
  np.testing.assert_array_equal(data.train["x"], again.train["x"])
  assert data.spec.shape == (512,) and data.spec.levels == 256 and data.spec.sample_rate == 8000
  chex.assert_shape(data.train["x"], (audio.NUM_TRAIN, 512))
  chex.assert_shape(data.test["x"], (audio.NUM_TEST, 512))
  assert data.train["x"].dtype == np.int32 and data.train["x"].min() >= 0 and data.train["x"].max() <= 255
  np.testing.assert_array_equal(np.bincount(data.train["label"]), [audio.NUM_TRAIN // 4] * 4)
  assert not np.array_equal(data.train["x"][:4], data.test["x"][:4])
  # Tones: the strongest FFT bin is a harmonic (1..6) of a note of the set, within one bin (15.6 Hz).
  tones = audio.mu_law_decode(data.train["x"][data.train["label"] == 0][:20])
  peak_hz = np.argmax(np.abs(np.fft.rfft(tones * np.hanning(512), axis=1)), axis=1) * 8000 / 512
  harmonics = (audio.NOTES[:, None] * np.arange(1, 7)).reshape(-1)
  assert np.all(np.min(np.abs(peak_hz[:, None] - harmonics[None]), axis=1) <= 8000 / 512)
  with pytest.raises(UserError, match="seq_len"):
    audio.load(ml_collections.ConfigDict({"seq_len": 1}))


def test_bad_data_raises_user_error():
  with pytest.raises(UserError, match="audio"):
    _family(spec=DataSpec("digits", "image", (8, 8, 1), levels=17))
  with pytest.raises(UserError, match="no labels"):
    _family(spec=DataSpec("a", "audio", (40,), levels=256))


def test_end_to_end_writes_wav(workdir):
  config = tiny_config("wavenet", **{"data.seq_len": 64, "model.dilation_cycle": 3, "model.num_cycles": 1,
                                     "model.residual_channels": 8, "model.dilation_channels": 8,
                                     "model.skip_channels": 8, "sample.num": 2})
  ts = train.train_and_evaluate(config, workdir)
  assert int(ts.step) == 4
  wavs = sorted(f for f in os.listdir(os.path.join(workdir, "samples")) if f.endswith(".wav"))
  assert wavs
  with wave.open(os.path.join(workdir, "samples", wavs[0])) as f:
    assert f.getframerate() == 8000 and f.getnframes() == 64
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert math.isclose(results["bits_per_dim"], results["nll_nats"] / (64 * math.log(2)), rel_tol=1e-5)


# --- tensorflow-datasets audio sets (jaxgen.data.tfds_audio), on data made here -------------------

# tfds's Audio feature imports TensorFlow when a builder is constructed, mock_data included: the
# `test` extra installs it (with pydub, which the spoken_digit builder decodes .wav files with).


def _fsdd_examples(seed=0):
  """Decoded spoken_digit examples as tfds gives them (int64 PCM, int label, bytes file name):
  2 speakers x 10 digits x recordings (0, 4, 5, 49), 20-119 samples each, full int16 range."""
  rng = np.random.default_rng(seed)
  examples = []
  for speaker in ("jackson", "theo"):
    for digit in range(10):
      for index in (0, 4, 5, 49):
        pcm = rng.integers(-32768, 32768, rng.integers(20, 120)).astype(np.int64)
        examples.append({"audio": pcm, "label": digit, "audio/filename": f"{digit}_{speaker}_{index}.wav".encode()})
  examples[0]["audio"][:2] = [-32768, 32767]  # both ends of the 16-bit range
  return examples


def _fsdd_mock(examples):
  """``tfds.testing.mock_data`` whose spoken_digit 'train' split holds ``examples``."""
  def as_data_source(builder, split, **kwargs):
    assert builder.name == "spoken_digit" and split == "train"  # the only tfds split of the set
    return examples
  return tfds.testing.mock_data(as_data_source_fn=as_data_source)


def _expected_codes(pcm, seq_len):
  """Independent statement of the convention: pcm / 32768, first seq_len samples, zero-padded."""
  w = np.asarray(pcm, np.float64)[:seq_len] / 32768.0
  return audio.mu_law_encode(np.pad(w, (0, seq_len - len(w))))


def test_spoken_digit_conversion_and_official_split():
  examples = _fsdd_examples()
  with _fsdd_mock(examples):
    raw = tfds_audio.load_spoken_digit(ml_collections.ConfigDict({"seq_len": 64, "data_dir": ""}))
  assert raw.spec == DataSpec("spoken_digit", "audio", (64,), levels=256, num_classes=10, sample_rate=8000)
  # FSDD's README: recordings 0-4 are the test set, 5-49 the training set; every example is in one.
  is_test = np.array([int(e["audio/filename"].split(b"_")[2][:-4]) < 5 for e in examples])
  for split, at in ((raw.train, ~is_test), (raw.test, is_test)):
    chex.assert_shape(split["x"], (40, 64))
    assert split["x"].dtype == np.uint8 and split["label"].dtype == np.int32
    selected = [e for e, keep in zip(examples, at) if keep]
    np.testing.assert_array_equal(split["x"], [_expected_codes(e["audio"], 64) for e in selected])
    np.testing.assert_array_equal(split["label"], [e["label"] for e in selected])
  np.testing.assert_array_equal(np.bincount(raw.test["label"]), [4] * 10)
  lengths = np.array([len(e["audio"]) for e in examples])
  assert (lengths < 64).any() and (lengths > 64).any()  # both padding and cropping happened
  assert raw.test["x"][0, :2].tolist() == [0, 255]  # -32768 -> -1 -> code 0; 32767 -> code 255
  assert raw.test["x"][0, lengths[0]:].tolist() == [128] * (64 - lengths[0])  # padding is silence

  examples[3]["audio/filename"] = b"recording.wav"
  with _fsdd_mock(examples), pytest.raises(UserError, match="recording.wav"):
    tfds_audio.load_spoken_digit(ml_collections.ConfigDict({"seq_len": 64}))


def test_speech_commands_under_mock_data_matches_the_tfds_examples():
  """The generic path on tfds's own random mock (int16 clips of 5-49 samples): every example of
  the named splits, converted as documented; metadata from the builder (16 kHz, 12 classes)."""
  config = ml_collections.ConfigDict({"seq_len": 32, "data_dir": "", "train_split": "validation",
                                      "test_split": "test"})
  with tfds.testing.mock_data(num_examples=6):
    raw = tfds_audio.load_speech_commands(config)
    source = tfds.data_source("speech_commands", split="validation")
    examples = [source[i] for i in range(len(source))]
  assert raw.spec == DataSpec("speech_commands", "audio", (32,), levels=256, num_classes=12, sample_rate=16000)
  assert examples[0]["audio"].dtype == np.int16
  assert {len(e["audio"]) > 32 for e in examples} == {True, False}
  np.testing.assert_array_equal(raw.train["x"], [_expected_codes(e["audio"], 32) for e in examples])
  np.testing.assert_array_equal(raw.train["label"], [e["label"] for e in examples])
  chex.assert_shape([raw.train["x"], raw.test["x"]], (6, 32))


def test_tfds_audio_not_prepared_is_a_user_error(tmp_path):
  config = ml_collections.ConfigDict({"seq_len": 64, "data_dir": str(tmp_path)})
  with pytest.raises(UserError, match=r"spoken_digit .*not prepared.*download_and_prepare"):
    tfds_audio.load_spoken_digit(config)
  with pytest.raises(UserError, match="seq_len=1"):
    tfds_audio.load_spoken_digit(ml_collections.ConfigDict({"seq_len": 1}))


def test_without_tensorflow_the_error_names_the_fix():
  """In a process where TensorFlow cannot be imported, reading spoken_digit is one UserError."""
  script = ("import sys, tensorflow_datasets as tfds; tfds.builder; sys.modules['tensorflow'] = None\n"
            "from jaxgen.data import tfds_audio\n"
            "tfds_audio.load_spoken_digit({'seq_len': 64})")
  proc = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "jaxgen.errors.UserError: reading the tensorflow-datasets audio set 'spoken_digit' needs TensorFlow" in proc.stderr
  assert proc.stderr.rstrip().endswith("pip install tensorflow-cpu")


def test_spoken_digit_prepared_from_wav_files(tmp_path):
  """The real tfds path, network excepted: the spoken_digit builder prepares array_record files from
  .wav files written here in FSDD's layout, and the loader reads them back sample for sample."""
  recordings = tmp_path / "download" / "free-spoken-digit-dataset-1.0.9" / "recordings"
  recordings.mkdir(parents=True)
  pcm = {}
  for example in _fsdd_examples()[::3]:
    name = example["audio/filename"].decode()
    pcm[name] = example["audio"].astype("<i2")
    with wave.open(str(recordings / name), "wb") as f:
      f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000), f.writeframes(pcm[name].tobytes())
  data_dir = str(tmp_path / "tfds")
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         return_value=str(tmp_path / "download")):
    tfds.builder("spoken_digit", data_dir=data_dir, file_format="array_record").download_and_prepare()
  raw = tfds_audio.load_spoken_digit(ml_collections.ConfigDict({"seq_len": 64, "data_dir": data_dir}))
  source = tfds.data_source("spoken_digit", split="train", data_dir=data_dir)
  names = [source[i]["audio/filename"].decode() for i in range(len(source))]  # the prepared order
  assert sorted(names) == sorted(pcm)
  is_test = np.array([int(n.split("_")[2][:-4]) < 5 for n in names])
  for split, at in ((raw.train, ~is_test), (raw.test, is_test)):
    selected = [n for n, keep in zip(names, at) if keep]
    np.testing.assert_array_equal(split["x"], [_expected_codes(pcm[n], 64) for n in selected])
    np.testing.assert_array_equal(split["label"], [int(n[0]) for n in selected])


def test_spoken_digit_config_end_to_end_writes_wav(workdir):
  config = tiny_config("wavenet_spoken_digit", **{
      "data.seq_len": 48, "model.dilation_cycle": 3, "model.num_cycles": 1, "model.residual_channels": 8,
      "model.dilation_channels": 8, "model.skip_channels": 8, "sample.num": 2, "sample.label": 7,
      "eval.samples.every": 0})
  assert config.data.name == "spoken_digit" and config.model.conditional
  with _fsdd_mock(_fsdd_examples()):
    ts = train.train_and_evaluate(config, workdir)
  assert int(ts.step) == 4
  wavs = sorted(f for f in os.listdir(os.path.join(workdir, "samples")) if f.endswith(".wav"))
  assert len(wavs) == 2
  with wave.open(os.path.join(workdir, "samples", wavs[0])) as f:
    assert f.getframerate() == 8000 and f.getnframes() == 48
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert math.isclose(results["bits_per_dim"], results["nll_nats"] / (48 * math.log(2)), rel_tol=1e-5)
  assert 0.0 < results["bits_per_dim"] < 8.5  # 4 steps from a near-uniform start (8 bits)
