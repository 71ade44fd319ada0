"""The workdir: local and remote paths through etils.epath, the write check, and the lock."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
import time

import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath

fsspec = pytest.importorskip("fsspec")  # etils[epath]'s backend for remote paths
from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

from jaxgen import checkpoint, workdir  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402


class FakeGCS(MemoryFileSystem):
  """An in-memory stand-in for Google Cloud Storage: ``gs://bucket/...`` paths, nothing on disk."""

  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs = [""]


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
  """``gs://`` paths served by ``FakeGCS`` through epath's fsspec backend; the test runs in an empty
  directory, so a path mangled into a local one (``./gs:/bucket``) would show up there."""
  FakeGCS.store, FakeGCS.pseudo_dirs = {}, [""]
  for name in FakeGCS.protocol:
    fsspec.register_implementation(name, FakeGCS, clobber=True)
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else epath reads gs:// with TensorFlow
  monkeypatch.chdir(tmp_path)
  yield FakeGCS.store
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  assert os.listdir(tmp_path) == [], "a remote path was written to the local disk"


def test_local_paths_are_absolute_and_remote_ones_untouched(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(workdir.path("runs/gan")) == str(tmp_path / "runs" / "gan")
  remote = workdir.path("gs://bucket/runs/gan")
  assert os.fspath(remote) == "gs://bucket/runs/gan"  # os.path.abspath would give $PWD/gs:/bucket/...
  assert os.fspath(remote / "checkpoints" / "4") == "gs://bucket/runs/gan/checkpoints/4"


@pytest.mark.parametrize("text,fragment", [("", "empty"), ("x" * 256, "longest name 256"),
                                           ("/tmp/" + "/".join(["y" * 200] * 20), "too long")])
def test_bad_workdir_paths(text, fragment):
  with pytest.raises(UserError, match=fragment):
    workdir.path(text)


def test_remote_workdir_prepare_and_lock(fake_gcs):
  root = workdir.path("gs://bucket/runs/gan")
  workdir.prepare(root)
  with workdir.Lock(root) as lock:
    owner = json.loads((root / "lock.json").read_text())
    assert owner["pid"] == os.getpid() and owner["token"] == lock.owner["token"]
    assert any(key.endswith("bucket/runs/gan/lock.json") for key in fake_gcs)  # in the fake bucket
    with pytest.raises(UserError, match=f"in use by another run .*pid {os.getpid()}"):
      workdir.Lock(root).acquire()
  assert not (root / "lock.json").exists()
  # The checkpointer lists the bucket through epath too (orbax writes gs:// with google-cloud-storage,
  # which a fake cannot stand in for: reading only).
  ckpt = checkpoint.Checkpointer("gs://bucket/runs/gan", 1, None, read_only=True)
  assert os.fspath(ckpt.directory) == "gs://bucket/runs/gan/checkpoints"
  assert ckpt.steps() == [] and ckpt.restore_latest({}) is None


def test_lock_refuses_a_live_owner_and_names_it(tmp_path):
  root = workdir.path(str(tmp_path))
  with workdir.Lock(root):
    with pytest.raises(UserError) as err:
      workdir.Lock(root).acquire()
  message = str(err.value)
  assert f"pid {os.getpid()}" in message and "--workdir" in message and str(root / "lock.json") in message
  assert not (root / "lock.json").exists()


def _write_owner(root, **owner):
  (root / "lock.json").write_text(json.dumps({"host": workdir.socket.gethostname(), "time": 0, "argv": ["x"], **owner}))


def test_stale_locks_are_taken_over(tmp_path):
  root = workdir.path(str(tmp_path))
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _write_owner(root, pid=dead.pid, pid_start=None)  # the owner exited (e.g. kill -9)
  with workdir.Lock(root):
    assert json.loads((root / "lock.json").read_text())["pid"] == os.getpid()
  _write_owner(root, pid=os.getpid(), pid_start="0")  # a live pid, but another process than the owner (reused)
  with workdir.Lock(root):
    assert json.loads((root / "lock.json").read_text())["token"]


def test_an_unreadable_lock_is_stale_after_a_grace_and_a_failed_write_leaves_none(tmp_path, monkeypatch):
  root = workdir.path(str(tmp_path))
  (root / "lock.json").write_text("")  # created, never written: its run was killed or out of space
  with pytest.raises(UserError, match="in use by another run") as err:  # it may be being written right now
    workdir.Lock(root).acquire()
  assert "lock.json is empty or unreadable" in str(err.value) and "rerun after 10 s" in str(err.value)
  assert "None" not in str(err.value)  # no owner to name: not "host None, pid None, started 1970-01-01"
  old = time.time() - workdir.UNREADABLE_GRACE_S - 1
  os.utime(root / "lock.json", (old, old))
  with workdir.Lock(root):
    assert json.loads((root / "lock.json").read_text())["pid"] == os.getpid()

  class Full:  # the lock file on a full disk: created, then the write fails
    def __init__(self, fd):
      self.fd = fd
    def __enter__(self):
      return self
    def __exit__(self, *exc):
      os.close(self.fd)
    def write(self, text):
      raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(workdir, "open", lambda file, *args, **kwargs: Full(file) if isinstance(file, int)
                      else builtins.open(file, *args, **kwargs), raising=False)
  with pytest.raises(UserError, match=r"cannot create the lock .*No space left on device"):
    workdir.Lock(root).acquire()
  assert not (root / "lock.json").exists()  # so the rerun after freeing space is not refused


def test_a_write_cut_short_leaves_the_saved_file(tmp_path, monkeypatch):
  """config.json rewritten on a full disk: the earlier file stays whole and no temporary is left."""
  import ml_collections
  from etils import epath

  from jaxgen import train

  train.save_config(ml_collections.ConfigDict({"seed": 1}), str(tmp_path))
  saved = (tmp_path / "config.json").read_text()

  def full_disk(self, text, *args, **kwargs):  # writes a part, then the disk is full
    with open(self, "w") as f:
      f.write(text[:3])
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(epath.Path, "write_text", full_disk)
  with pytest.raises(OSError, match="No space left") as e:
    train.save_config(ml_collections.ConfigDict({"seed": 2}), str(tmp_path))
  assert e.value.filename == str(tmp_path / "config.json")  # what jaxgen.main's one line names
  assert (tmp_path / "config.json").read_text() == saved
  assert json.loads(saved) == {"seed": 1}
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_a_file_size_limit_is_a_storage_error():
  """``ulimit -f`` or a file system's largest file (EFBIG): a storage failure, from Python (metrics,
  samples: a one-line error, not a traceback) or in tensorstore's text (a checkpoint save)."""
  assert workdir.storage_cause(OSError(errno.EFBIG, "File too large", "metrics.jsonl")) == "file too large"
  text = ('OUT_OF_RANGE: Error writing "c/0" in OCDBT database at local file "/r/": Failed to write 389881 '
          "bytes to file 4: File too large [os_error_code='27']")
  assert workdir.storage_cause(ValueError(text)) == "file too large"
  assert workdir.storage_cause(ValueError("OUT_OF_RANGE: index 7 is past the end")) is None


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
  root = workdir.path(str(tmp_path))
  (root / "lock.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0, "argv": ["train"]}))
  with pytest.raises(UserError, match="host elsewhere, pid 1"):
    workdir.Lock(root).acquire()
  assert json.loads((root / "lock.json").read_text())["host"] == "elsewhere"  # left as it was


def test_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(UserError, match="is not writable .*--workdir"):
    workdir.prepare(workdir.path(str(blocker / "run")))


# --- a run on a remote workdir ---------------------------------------------------------------------


def test_every_writer_reaches_a_remote_path(fake_gcs):
  """PNG grid and scatter (1, 2, 3 coordinates), text (with and without a vocabulary), wav, the
  density plot: encoded in memory, written through epath."""
  import io
  import wave

  import numpy as np
  from PIL import Image

  from jaxgen import outputs
  from jaxgen.data.spec import DataSpec

  root = workdir.path("gs://bucket/run/samples")
  image = DataSpec("digits", "image", (8, 8, 1), levels=17)
  assert outputs.write_samples(np.zeros((4, 8, 8, 1)), image, root / "img") == ["gs://bucket/run/samples/img.png"]
  assert Image.open(io.BytesIO((root / "img.png").read_bytes())).size == (256 // 19 * 19,) * 2  # 2x2 grid of 8+1 px
  points = DataSpec("ring8", "points", (2,))
  outputs.write_samples(np.zeros((5, 2)), points, root / "pts", data=np.ones((7, 2)))
  assert (root / "pts.png").read_bytes().startswith(b"\x89PNG")
  for d in (1, 3):  # one coordinate: two histograms; more than two: the first two
    outputs.write_samples(np.full((5, d), np.nan), DataSpec("p", "points", (d,)), root / f"pts{d}",
                          data=np.ones((7, d)))
    assert (root / f"pts{d}.png").read_bytes().startswith(b"\x89PNG")
  text = DataSpec("chars", "text", (3,), levels=2, vocab=("a", "b"))
  outputs.write_samples(np.array([[0, 1, 1], [1, 0, 0]]), text, root / "txt")
  assert (root / "txt.txt").read_text() == "--- sample 0\nabb\n--- sample 1\nbaa\n"
  tokens = DataSpec("ids", "text", (3,), levels=12)  # integer token arrays have no vocabulary
  outputs.write_samples(np.array([[0, 11, 1]]), tokens, root / "ids")
  assert (root / "ids.txt").read_text() == "--- sample 0\n0 11 1\n"
  audio = DataSpec("tones", "audio", (4,), levels=3, sample_rate=8000)
  paths = outputs.write_samples(np.array([[0, 1, 2, 1]]), audio, root / "clip")
  with wave.open(io.BytesIO(workdir.path(paths[0]).read_bytes())) as f:
    assert (f.getframerate(), f.getnframes()) == (8000, 4)
    np.testing.assert_array_equal(np.frombuffer(f.readframes(4), "<i2"), [-32767, 0, 32767, 0])
  outputs.write_density_plot(np.zeros((3, 2)), np.ones((4, 4)), (0, 1, 0, 1), root / "density.png")
  assert (root / "density.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_on_a_remote_workdir_writes_there(fake_gcs, tmp_path_factory, monkeypatch):
  """A tiny VAE trained on ``gs://bucket/run``, resumed, and sampled: config.json, metrics.jsonl,
  TensorBoard events, samples and eval JSON all land in the fake bucket and nothing on the local disk.
  Only the checkpoints are redirected to a local directory: orbax writes ``gs://`` with tensorstore's
  own GCS driver, which an fsspec fake cannot stand in for."""
  import io

  from PIL import Image

  from conftest import tiny_config
  from jaxgen import train

  local = str(tmp_path_factory.mktemp("checkpoints"))
  real = checkpoint.Checkpointer
  monkeypatch.setattr(checkpoint, "Checkpointer",
                      lambda root, *a, **k: real(local if workdir.is_remote(root) else root, *a, **k))
  run = "gs://bucket/run"
  overrides = {"eval.metrics": ("heldout", "samples"), "train.log_every": 2}
  train.train_and_evaluate(tiny_config("vae", **overrides), run)
  train.train_and_evaluate(tiny_config("vae", **overrides, **{"train.steps": 6}), run)  # resumed from step 4
  train.sample(tiny_config("vae", **overrides), run)
  root = workdir.path(run)
  assert json.loads((root / "config.json").read_text())["train"]["steps"] == 6
  rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/model/loss" in r] == [2, 4, 6]
  assert [r["step"] for r in rows if "eval/num_eval_examples" in r] == [4, 6]
  assert json.loads((root / "eval" / "step_6.json").read_text())["step"] == 6
  for name in ("step_4.png", "step_6.png", "sample_step_6_seed_0.png"):
    assert Image.open(io.BytesIO((root / "samples" / name).read_bytes())).size[0] >= 64
  events = list((root / "tensorboard").iterdir())
  assert len(events) == 2 and all(e.name.startswith("events.out.tfevents") and e.stat().length > 0 for e in events)
  assert sorted(os.listdir(os.path.join(local, "checkpoints"))) == ["2", "4", "6"]
