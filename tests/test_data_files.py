"""The user-file sources (images:, text:, arrays:, audio:) and tfds image options, on files made here:
decoded values, splits, labels, the decode cache, random flips (exact on resume) and bad input."""

from __future__ import annotations

import hashlib
import os
import string

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy.io import wavfile

from conftest import tiny_config
from jaxgen import config_defaults, train
from jaxgen.data import audio, build, files, image_folder, text
from jaxgen.errors import UserError


def make_config(name, batch_size=4, **data):
  c = config_defaults.base()
  c.data.name = name
  c.train.batch_size = batch_size
  c.data.scale = "[0,1]"
  for key, value in data.items():
    c.data[key] = value
  return c


def raw_pixels(batch):
  """Model-space images in [0, 1] (no dequantization) back to uint8: exact, x = raw / 255."""
  return np.round(batch["x"].astype(np.float64) * 255).astype(np.uint8)


def write_images(root, names, size=(5, 7), mode="RGB", seed=0):
  """Random images at ``root/<name>``; returns {name: uint8 pixels as written}."""
  rng = np.random.default_rng(seed)
  written = {}
  for name in names:
    h, w = size
    array = rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)
    written[name] = array if array.ndim == 3 else array[..., None]
  return written


def all_examples(p, split="test"):
  batches = list(p.split_batches(split, 64))
  return {k: np.concatenate([b[k] for b in batches])[np.concatenate([b["mask"] for b in batches]) > 0]
          for k in batches[0]}


# --------------------------------------------------------------------------------- image folders


def test_png_folder_with_test_folder_classes_and_odd_sizes(tmp_path):
  names = [f"{split}/{cls}/{i}.png" for split, n in (("train", 3), ("test", 2))
           for cls in ("dog", "cat") for i in range(n)]
  pixels = write_images(tmp_path, names)
  p = build(make_config(f"images:{tmp_path}", labels_from_folders=True))
  assert p.spec.shape == (5, 7, 3) and p.spec.levels == 256 and p.spec.num_classes == 2
  assert (p.num_train, p.num_test) == (6, 4)
  for split in ("train", "test"):
    expected = sorted(n for n in names if n.startswith(split))  # sorted relative paths
    got = all_examples(p, split)
    np.testing.assert_array_equal(raw_pixels(got), [pixels[n] for n in expected])
    np.testing.assert_array_equal(got["label"], [("cat", "dog").index(n.split("/")[1]) for n in expected])


def test_jpeg_folder_decodes_as_pillow_and_close_to_the_source(tmp_path):
  names = [f"{cls}/{i}.jpg" for cls in ("a", "b") for i in range(4)] + ["val/a/9.jpeg"]
  colours = {n: np.array([25 * k, 255 - 20 * k, 100 + 10 * k], np.uint8) for k, n in enumerate(names)}
  for n in names:  # flat colours, which JPEG keeps within a few levels
    (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.tile(colours[n], (6, 3, 1))).save(tmp_path / n, quality=95)
  p = build(make_config(f"images:{tmp_path}", labels_from_folders=True))
  assert (p.num_train, p.num_test) == (8, 1)  # val/ is the test split
  got = all_examples(p, "train")
  train_names = sorted(n for n in names if not n.startswith("val/"))
  decoded = [np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in train_names]
  np.testing.assert_array_equal(raw_pixels(got), decoded)
  np.testing.assert_allclose(raw_pixels(got), [np.tile(colours[n], (6, 3, 1)) for n in train_names], atol=3)
  np.testing.assert_array_equal(got["label"], [0] * 4 + [1] * 4)


def test_center_crop_and_image_size_geometry(tmp_path):
  write_images(tmp_path, ["train/a.png", "test/a.png"], size=(9, 7))
  pixels = np.asarray(Image.open(tmp_path / "test/a.png"))
  held = lambda **o: raw_pixels(build(make_config(f"images:{tmp_path}", **o)).held_out(1))[0]
  np.testing.assert_array_equal(held(center_crop=(5, 3)), pixels[2:7, 2:5])  # corner ((9-5)//2, (7-3)//2)
  np.testing.assert_array_equal(held(image_size=7), pixels[1:8, 0:7])  # shorter side 7 already: crop only
  # Downscaling by 2: left half colour A, right half B; output columns beyond the filter's reach are exact.
  two = np.zeros((16, 12, 3), np.uint8)
  two[:, :6], two[:, 6:] = (200, 10, 30), (5, 250, 90)
  Image.fromarray(two).save(tmp_path / "train/a.png")
  Image.fromarray(two).save(tmp_path / "test/a.png")
  out = held(image_size=6)  # 16x12 -> 8x6 -> central 6x6
  assert out.shape == (6, 6, 3)
  np.testing.assert_array_equal(out[:, 0], np.tile([200, 10, 30], (6, 1)))
  np.testing.assert_array_equal(out[:, 5], np.tile([5, 250, 90], (6, 1)))
  assert held(image_size=(4, 8)).shape == (4, 8, 3)


def test_mixed_sizes_and_channels(tmp_path):
  write_images(tmp_path, ["test/a.png", "train/a.png"], size=(8, 8))
  write_images(tmp_path, ["test/b.png"], size=(8, 10), mode="L", seed=1)
  with pytest.raises(UserError, match=r"mixed sizes \(test/a.png is 8x8, test/b.png is 8x10.*data.image_size"):
    build(make_config(f"images:{tmp_path}"))
  with pytest.raises(UserError, match=r"mixed channel counts.*test/b.png has 1, mode L.*data.channels"):
    build(make_config(f"images:{tmp_path}", image_size=8))
  p = build(make_config(f"images:{tmp_path}", image_size=8, channels=1))
  assert p.spec.shape == (8, 8, 1)
  got = raw_pixels(all_examples(p, "test"))[..., 0]
  np.testing.assert_array_equal(got[1], np.asarray(Image.open(tmp_path / "test/b.png"))[:, 1:9])  # central 8x8
  rgb = np.asarray(Image.open(tmp_path / "test/a.png")).astype(np.float64)
  np.testing.assert_allclose(got[0], rgb @ [0.299, 0.587, 0.114], atol=0.5 + 1e-9)  # ITU-R 601-2 luma
  assert build(make_config(f"images:{tmp_path}", image_size=8, channels=3)).spec.shape == (8, 8, 3)


def test_hash_split_is_stable_when_files_are_added(tmp_path):
  write_images(tmp_path, [f"{i:03d}.png" for i in range(40)], size=(2, 2))
  listed = lambda: files.list_files("images", str(tmp_path), image_folder.EXTENSIONS)
  config = make_config("").data
  config.test_fraction = 0.25

  def test_names():
    root, found = listed()
    split = files.split_files("images", root, found, config)
    return {found[i].name for i in split.test}, {found[i].name for i in split.train}

  test_before, train_before = test_names()
  write_images(tmp_path, [f"new_{i:03d}.png" for i in range(60)], size=(2, 2))
  test_after, train_after = test_names()
  assert test_before <= test_after and train_before <= train_after
  assert test_after.isdisjoint(train_after) and len(test_after | train_after) == 100
  assert 10 <= len(test_after) <= 40  # ~25 of 100
  expected = {n for n in test_after if files.hash_fraction(n) < 0.25}  # the rule, restated
  assert expected == test_after


def count_decodes(monkeypatch):
  calls = []
  decode = image_folder.ImageDecoder.decode
  monkeypatch.setattr(image_folder.ImageDecoder, "decode",
                      lambda self, file, meta: calls.append(file.name) or decode(self, file, meta))
  return calls


def test_disk_cache_reused_when_unchanged_rebuilt_when_changed(tmp_path, monkeypatch):
  folder, cache_dir = tmp_path / "images", tmp_path / "cache"
  pixels = write_images(folder, [f"test/{i}.png" for i in range(5)] + ["train/0.png"], size=(3, 4))
  calls = count_decodes(monkeypatch)
  config = lambda **o: make_config(f"images:{folder}", cache_dir=str(cache_dir), **{"cache_max_bytes": 0, **o})
  first = all_examples(build(config()))
  assert sorted(calls) == sorted(pixels) and len([f for f in os.listdir(cache_dir) if f.endswith(".npy")]) == 1
  np.testing.assert_array_equal(raw_pixels(first), [pixels[f"test/{i}.png"] for i in range(5)])
  calls.clear()
  again = build(config())
  assert calls == [] and isinstance(again._test._arrays["x"], np.memmap)  # reused, memory-mapped
  chex.assert_trees_all_equal(all_examples(again), first)
  # A rewritten file (new pixels, new mtime) rebuilds; the old cache file is removed.
  new = write_images(folder, ["test/2.png"], size=(3, 4), seed=7)
  os.utime(folder / "test/2.png", ns=(1, os.stat(folder / "test/2.png").st_mtime_ns + 10**9))
  changed = raw_pixels(all_examples(build(config())))
  assert sorted(calls) == sorted(pixels)
  np.testing.assert_array_equal(changed[2], new["test/2.png"])
  assert len([f for f in os.listdir(cache_dir) if f.endswith(".npy")]) == 1
  for option in ({"image_size": 2}, {"channels": 1}):  # another preprocessing option rebuilds
    calls.clear()
    build(config(**option))
    assert len(calls) == 6
  calls.clear()
  write_images(folder, ["test/5.png"], size=(3, 4))  # an added file rebuilds
  assert build(config()).num_test == 6 and len(calls) == 7
  calls.clear()
  assert build(config(cache_max_bytes=10**6)).num_test == 6 and calls == []  # fits: read into memory


@pytest.mark.parametrize("cache_max_bytes", [10**6, 0])
def test_skip_bad_files_counts_and_skips(tmp_path, cache_max_bytes, caplog):
  pixels = write_images(tmp_path / "d", [f"test/{i}.png" for i in range(4)] + ["train/0.png"], size=(3, 3))
  (tmp_path / "d/test/1.png").write_bytes(b"not a png")  # unreadable header
  good = (tmp_path / "d/test/3.png").read_bytes()
  (tmp_path / "d/test/3.png").write_bytes(good[:len(good) // 2])  # truncated: fails to decode
  config = lambda **o: make_config(f"images:{tmp_path / 'd'}", cache_dir=str(tmp_path / "c"),
                                   cache_max_bytes=cache_max_bytes, **o)
  with pytest.raises(UserError, match=r"file test/1.png cannot be read as an image.*skip_bad_files=True"):
    build(config())
  for _ in range(2):  # decoded, then (cache_max_bytes=0) read back from the .npy cache: counted both times
    caplog.clear()
    got = raw_pixels(all_examples(build(config(skip_bad_files=True))))
    np.testing.assert_array_equal(got, [pixels["test/0.png"], pixels["test/2.png"]])
    assert "skipped 2 bad files (data.skip_bad_files=True): test/1.png, test/3.png" in caplog.text
  write_images(tmp_path / "d", ["test/1.png"], size=(3, 3))  # now only the truncated file is bad
  with pytest.raises(UserError, match=r"file test/3.png cannot be read as an image \(OSError: .*truncated"):
    build(config())
  if cache_max_bytes == 0:  # the cache file being written was removed
    assert not [f for f in os.listdir(tmp_path / "c") if f.endswith(".tmp")]


def test_symlinked_class_folders_odd_names_and_broken_links(tmp_path, caplog):
  # Class folders linked into place are read (each real folder once: a link back to an ancestor does
  # not loop); a file name that is not UTF-8 is listed and split by its bytes; a broken link is
  # skipped with data.skip_bad_files=True.
  pixels = write_images(tmp_path / "store", ["cat/0.png", "cat/1.png", "dog/0.png"], size=(2, 2))
  (tmp_path / "d").mkdir()
  os.symlink(tmp_path / "store" / "cat", tmp_path / "d" / "cat")
  os.symlink(tmp_path / "store" / "dog", tmp_path / "d" / "dog")
  os.symlink(tmp_path / "d", tmp_path / "store" / "dog" / "loop")
  os.symlink(tmp_path / "nowhere.png", tmp_path / "d" / "cat" / "2.png")
  odd = os.fsencode(tmp_path / "store" / "dog") + b"/caf\xe9.png"
  Image.fromarray(pixels["dog/0.png"]).save(odd.decode("utf-8", "surrogateescape"))
  p = build(make_config(f"images:{tmp_path / 'd'}", labels_from_folders=True, skip_bad_files=True,
                        test_fraction=0.5))
  assert p.spec.num_classes == 2 and p.num_train + p.num_test == 4
  assert "skipped 1 files that cannot be opened: cat/2.png" in caplog.text
  both = {k: np.concatenate([all_examples(p, s)[k] for s in ("train", "test")]) for k in ("x", "label")}
  np.testing.assert_array_equal(np.bincount(both["label"]), [2, 2])
  name = "dog/caf\udce9.png"
  assert files.hash_fraction(name) == int.from_bytes(hashlib.sha256(b"dog/caf\xe9.png").digest()[:8],
                                                     "big") / 2.0**64


# -------------------------------------------------------------------------------------- flips


def test_random_flip_mirrors_training_batches_only(tmp_path):
  write_images(tmp_path, [f"{i:02d}.png" for i in range(16)], size=(3, 5))
  plain = build(make_config(f"images:{tmp_path}", batch_size=16, test_fraction=0.2))
  flips = build(make_config(f"images:{tmp_path}", batch_size=16, test_fraction=0.2, random_flip=True))
  mirrored = []
  for step in range(8):
    a, b = plain.train_batch(step)["x"], flips.train_batch(step)["x"]
    same = np.all(a == b, axis=(1, 2, 3))
    mirror = np.all(a[:, :, ::-1] == b, axis=(1, 2, 3))
    assert np.all(same | mirror)
    mirrored.append(mirror & ~same)
    chex.assert_trees_all_equal(flips.train_batch(step), build(make_config(
        f"images:{tmp_path}", batch_size=16, test_fraction=0.2, random_flip=True)).train_batch(step))
  assert 0.3 < np.mean(mirrored) < 0.7
  chex.assert_trees_all_equal(all_examples(plain), all_examples(flips))  # evaluation: never flipped
  shards = [build(make_config(f"images:{tmp_path}", batch_size=16, test_fraction=0.2, random_flip=True),
                  process_index=i, process_count=2).train_batch(3) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([s["x"] for s in shards]), flips.train_batch(3)["x"])


def test_random_flip_resume_equals_uninterrupted(tmp_path):
  """An image folder with random flips: 2N steps at once == N steps, stop, resume (bit for bit)."""
  write_images(tmp_path / "imgs", [f"{c}/{i}.png" for c in "ab" for i in range(10)], size=(6, 6))
  config = lambda steps, every: tiny_config("vae", **{
      "data.name": f"images:{tmp_path / 'imgs'}", "data.random_flip": True, "data.test_fraction": 0.2,
      "train.steps": steps, "train.checkpoint_every": every, "train.batch_size": 8,
      "model.hidden": (16,), "model.latent_dim": 2, "eval.num_batches": 1, "eval.iwae_samples": 2})
  full = train.train_and_evaluate(config(6, 6), str(tmp_path / "full"))
  train.train_and_evaluate(config(3, 3), str(tmp_path / "split"))
  resumed = train.train_and_evaluate(config(6, 3), str(tmp_path / "split"))
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))


# ---------------------------------------------------------------------------------------- text


def test_text_file_characters_windows_and_split(tmp_path):
  corpus = "Größe: 5 €, naïve café — ok?\n" * 12  # non-ASCII characters, 348 characters
  (tmp_path / "t.txt").write_text(corpus, encoding="utf-8")
  p = build(make_config(f"text:{tmp_path / 't.txt'}", seq_len=16, stride=5))
  vocab = tuple(sorted(set(corpus)))
  assert p.spec.modality == "text" and p.spec.vocab == vocab and p.spec.levels == len(vocab)
  split = round(len(corpus) * 0.9)
  assert (p.num_train, p.num_test) == ((split - 16) // 5 + 1, (len(corpus) - split - 16) // 16 + 1)
  decode = lambda row: "".join(vocab[t] for t in row)
  train = all_examples(p, "train")["x"]
  assert [decode(r) for r in train] == [corpus[i * 5:i * 5 + 16] for i in range(p.num_train)]
  test = all_examples(p, "test")["x"]
  assert [decode(r) for r in test] == [corpus[split + 16 * i:split + 16 * (i + 1)] for i in range(p.num_test)]
  chex.assert_type(p.train_batch(0)["x"], np.int32)
  b = build(make_config(f"text:{tmp_path / 't.txt'}", seq_len=16, tokenizer="bytes"))
  raw = corpus.encode("utf-8")
  assert b.spec.levels == 256
  np.testing.assert_array_equal(all_examples(b, "train")["x"][1], list(raw[4:20]))  # stride 16 // 4


def test_tinyshakespeare_vocabulary_as_a_plain_file(tmp_path):
  chars = "\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase  # tinyshakespeare's 65
  rng = np.random.default_rng(0)
  corpus = "".join(rng.permutation(list(chars * 3)))
  (tmp_path / "input.txt").write_text(corpus)
  p = build(make_config(f"text:{tmp_path / 'input.txt'}", seq_len=8))
  assert p.spec.levels == 65 and "".join(p.spec.vocab) == "".join(sorted(chars))
  # The tfds tiny_shakespeare rule gives the same vocabulary and tokens on the same text.
  with tfds.testing.mock_data(num_examples=2):
    from_tfds = text.load_tiny_shakespeare(make_config("tiny_shakespeare", seq_len=8, stride=2).data)
    joined = "".join(text._as_str(tfds.data_source("tiny_shakespeare", split=s)[i]["text"])
                     for s in ("train", "validation", "test") for i in range(2))
  (tmp_path / "tfds.txt").write_text(joined)
  plain = build(make_config(f"text:{tmp_path / 'tfds.txt'}", seq_len=8, stride=2))
  assert plain.spec.vocab == from_tfds.spec.vocab
  np.testing.assert_array_equal(all_examples(plain, "train")["x"], from_tfds.train["x"])
  np.testing.assert_array_equal(all_examples(plain, "test")["x"], from_tfds.test["x"])


# -------------------------------------------------------------------------------------- arrays


def test_npz_images_with_labels_and_test_arrays(tmp_path):
  rng = np.random.default_rng(0)
  x, xt = rng.integers(0, 256, (10, 4, 6, 3), dtype=np.uint8), rng.integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
  np.savez(tmp_path / "a.npz", x=x, label=np.arange(10) % 4, x_test=xt, label_test=np.array([0, 5, 1]))
  p = build(make_config(f"arrays:{tmp_path / 'a.npz'}", batch_size=10))
  assert p.spec.modality == "image" and p.spec.shape == (4, 6, 3) and p.spec.num_classes == 6
  got = all_examples(p, "test")
  np.testing.assert_array_equal(raw_pixels(got), xt)
  np.testing.assert_array_equal(got["label"], [0, 5, 1])
  np.testing.assert_array_equal(raw_pixels(all_examples(p, "train")), x)


def test_points_and_tokens_with_a_hashed_split(tmp_path):
  points = np.random.default_rng(0).standard_normal((200, 3))
  np.savez(tmp_path / "p.npz", x=points)
  p = build(make_config(f"arrays:{tmp_path / 'p.npz'}", test_fraction=0.2))
  assert p.spec.modality == "points" and p.spec.shape == (3,)
  is_test = np.array([files.hash_fraction(str(i)) < 0.2 for i in range(200)])
  np.testing.assert_array_equal(all_examples(p, "test")["x"], points[is_test].astype(np.float32))
  np.testing.assert_array_equal(all_examples(p, "train")["x"], points[~is_test].astype(np.float32))
  np.savez(tmp_path / "t16.npz", x=np.ones((4, 9), np.uint16), x_test=np.ones((2, 9), np.uint8))
  assert build(make_config(f"arrays:{tmp_path / 't16.npz'}")).spec.modality == "text"  # any integer tokens
  tokens = np.random.default_rng(1).integers(0, 7, (50, 9)).astype(np.int64)
  np.save(tmp_path / "t.npy", tokens)
  q = build(make_config(f"arrays:{tmp_path / 't.npy'}"))
  assert q.spec.modality == "text" and q.spec.levels == 7 and q.spec.shape == (9,)
  both = np.concatenate([all_examples(q, s)["x"] for s in ("train", "test")])
  assert sorted(map(tuple, both)) == sorted(map(tuple, tokens))


# --------------------------------------------------------------------------------------- audio


def write_wav(path, samples, rate=8000):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  wavfile.write(path, rate, samples)


def test_wav_folder_codes_labels_and_rate(tmp_path):
  rng = np.random.default_rng(0)
  clips = {}
  for name, length in (("hi/0.wav", 50), ("hi/1.wav", 20), ("lo/0.wav", 33), ("test/lo/2.wav", 40)):
    clips[name] = rng.integers(-32768, 32768, length).astype(np.int16)
    write_wav(tmp_path / name, clips[name])
  clips["lo/f.wav"] = rng.uniform(-1, 1, 45).astype(np.float32)
  write_wav(tmp_path / "lo/f.wav", clips["lo/f.wav"])
  p = build(make_config(f"audio:{tmp_path}", seq_len=32, labels_from_folders=True))
  assert p.spec.modality == "audio" and p.spec.shape == (32,) and p.spec.sample_rate == 8000
  assert p.spec.num_classes == 2 and (p.num_train, p.num_test) == (4, 1)

  def expected(samples):  # the convention, restated: [-1, 1], first 32 samples, zero-padded, mu-law
    wave = samples / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float64)
    return audio.mu_law_encode(np.pad(wave[:32], (0, max(0, 32 - len(wave)))))

  train = all_examples(p, "train")
  names = ["hi/0.wav", "hi/1.wav", "lo/0.wav", "lo/f.wav"]
  np.testing.assert_array_equal(train["x"], [expected(clips[n]) for n in names])
  np.testing.assert_array_equal(train["label"], [0, 0, 1, 1])
  np.testing.assert_array_equal(all_examples(p, "test")["x"], [expected(clips["test/lo/2.wav"])])


# --------------------------------------------------------------------------------------- tfds


def test_tfds_images_center_crop_and_resize():
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    reference = tfds.data_source("mnist", split="test")
    p = build(make_config("mnist", center_crop=20))
    assert p.spec.shape == (20, 20, 1)
    np.testing.assert_array_equal(raw_pixels(p.held_out(8)),
                                  [reference[i]["image"][4:24, 4:24] for i in range(8)])
    q = build(make_config("tfds:mnist", image_size=(8, 12), channels=3))
    assert q.spec.shape == (8, 12, 3) and q.spec.name == "mnist"
    x = raw_pixels(q.held_out(8))
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey replicated to RGB


# ----------------------------------------------------------------------------------- bad input


def _bad_inputs(tmp):
  """(name, data options, expected message pattern) after writing each bad input under ``tmp``."""
  (tmp / "empty").mkdir()
  write_images(tmp / "corrupt", ["a.png", "b.png"], size=(2, 2))
  write_images(tmp / "flat", ["cat/a.png", "a.png"], size=(2, 2))
  (tmp / "corrupt" / "b.png").write_bytes(b"\x89PNG garbage")
  (tmp / "latin1.txt").write_bytes("caf\u00e9 ok".encode("latin-1"))
  (tmp / "short.txt").write_text("abc" * 10)
  np.savez(tmp / "nox.npz", images=np.zeros((2, 2, 2, 1), np.uint8))
  np.savez(tmp / "rank.npz", x=np.zeros((4, 3, 3), np.uint8))
  np.savez(tmp / "dtype.npz", x=np.zeros((4, 3), np.complex64))
  write_wav(tmp / "stereo" / "a.wav", np.zeros((10, 2), np.int16))
  write_wav(tmp / "rate" / "a.wav", np.zeros(10, np.int16), rate=16000)
  write_wav(tmp / "rates" / "a.wav", np.zeros(10, np.int16), rate=16000)
  write_wav(tmp / "rates" / "b.wav", np.zeros(10, np.int16), rate=8000)
  np.savez(tmp / "whole.npz", x=np.zeros((64, 3), np.float32))
  (tmp / "truncated.npz").write_bytes((tmp / "whole.npz").read_bytes()[:100])
  np.save(tmp / "single.npy", np.zeros((4, 3), np.float32))
  os.rename(tmp / "single.npy", tmp / "single.npz")
  np.save(tmp / "no_tokens.npy", np.zeros((0, 16), np.int64))
  np.savez(tmp / "wide_test.npz", x=np.zeros((4, 2, 2, 1), np.uint8), x_test=np.zeros((2, 2, 2, 1), np.uint16))
  np.save(tmp / "float_images.npy", np.zeros((4, 2, 2, 1), np.float32))
  np.savez(tmp / "nan.npz", x=np.zeros((4, 2)), x_test=np.array([[0.0, np.nan], [np.inf, 1.0], [1.0, 1.0]]))
  write_images(tmp / "dangling", ["a.png"], size=(2, 2))
  write_images(tmp / "only_test", ["test/a.png"], size=(2, 2))
  os.symlink(tmp / "nowhere.png", tmp / "dangling" / "b.png")
  return [
      (f"images:{tmp / 'missing'}", {}, "no such folder"),
      (f"images:{tmp / 'latin1.txt'}", {}, "is a file"),
      (f"images:{tmp / 'empty'}", {}, "holds no .png/.jpg"),
      (f"images:{tmp / 'corrupt'}", {}, "file b.png cannot be read as an image"),
      (f"images:{tmp / 'corrupt'}", {"image_size": -3}, "data.image_size=-3"),
      (f"images:{tmp / 'corrupt'}", {"channels": 2}, "data.channels=2"),
      (f"images:{tmp / 'flat'}", {"labels_from_folders": True}, ": a.png is not in a class sub-folder"),
      (f"text:{tmp / 'latin1.txt'}", {}, "not UTF-8: byte 0xe9 at byte offset 3 .*data.tokenizer=bytes"),
      (f"text:{tmp / 'short.txt'}", {"seq_len": 8}, "its test part \\(3\\) is shorter than data.seq_len=8"),
      (f"text:{tmp / 'short.txt'}", {"tokenizer": "words"}, "data.tokenizer='words'"),
      (f"arrays:{tmp / 'nox.npz'}", {}, "has no array 'x' \\(it has: images\\)"),
      (f"arrays:{tmp / 'rank.npz'}", {}, "uint8 and shape \\(4, 3, 3\\) is none of"),
      (f"arrays:{tmp / 'dtype.npz'}", {}, "complex64"),
      (f"arrays:{tmp / 'short.txt'}", {}, "not a .npz or .npy file"),
      (f"audio:{tmp / 'stereo'}", {}, "file a.wav has 2 channels, not 1; mix it down"),
      (f"audio:{tmp / 'rate'}", {"sample_rate": 8000},
       "a.wav has a sample rate of 16000 Hz, not data.sample_rate=8000"),
      (f"audio:{tmp / 'rates'}", {}, "different sample rates \\(a.wav: 16000 Hz, b.wav: 8000 Hz\\)"),
      (f"audio:{tmp / 'rates'}", {"skip_bad_files": True},
       "set data.sample_rate to the rate to keep and data.skip_bad_files=True"),
      (f"arrays:{tmp / 'truncated.npz'}", {}, "truncated.npz cannot be read as .npz \\(BadZipFile"),
      (f"arrays:{tmp / 'single.npz'}", {}, "single .npy array, not a .npz archive; name it .npy"),
      (f"arrays:{tmp / 'no_tokens.npy'}", {}, "x has no tokens \\(shape \\(0, 16\\)\\)"),
      (f"arrays:{tmp / 'wide_test.npz'}", {}, "x_test \\(uint16 .* does not match x \\(uint8"),
      (f"arrays:{tmp / 'float_images.npy'}", {}, "in \\[0, 1\\]: np.round\\(x \\* 255\\).astype\\(np.uint8\\)"),
      (f"images:{tmp / 'dangling'}", {}, "file b.png cannot be opened .*a broken symbolic link"),
      (f"arrays:{tmp / 'nan.npz'}", {}, "2 rows of x_test hold NaN or inf: drop them"),
      ("images:", {}, "names no path"),
      (f"images:{tmp / 'only_test'}", {}, "has an empty train split: .*test_fraction makes the splits, a smaller one; .*a test/ folder"),
      (f"arrays:{tmp / 'whole.npz'}", {"test_fraction": 1e-9}, "has an empty test split: .*test_fraction makes the splits, a larger one"),
  ]


def test_every_bad_input_is_one_user_error_line(tmp_path):
  for name, options, pattern in _bad_inputs(tmp_path):
    with pytest.raises(UserError, match=pattern) as e:
      build(make_config(name, **options))
    assert "\n" not in str(e.value), str(e.value)


def test_split_helper_rejects_unknown_split():
  with pytest.raises(ValueError, match="split"):
    next(build(make_config("digits")).split_batches("validation", 8))
