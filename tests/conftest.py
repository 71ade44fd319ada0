"""Shared test helpers: load a config from configs/ and shrink it to a few CPU seconds."""

from __future__ import annotations

import os
import subprocess

# The suite compiles hundreds of tiny programs, so XLA's compile time, not run time, is most of its
# CPU time, and LLVM's optimisation passes are most of that: at level 0 the suite takes about half the
# CPU time. Set before JAX starts a backend; subprocesses inherit it. What the tests assert (closed
# forms within tolerances, equalities of a program with itself such as resumed == uninterrupted)
# does not depend on LLVM's optimisations. Benchmarks and user runs keep XLA's default.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxgen import config_defaults  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """``configs/<name>.py`` with dotted-key overrides, e.g. ``load_config("gan", **{"train.steps": 4})``,
  through the one override parser (``config_defaults.load``)."""
  return config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"), overrides)


def tiny_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """A config that trains in seconds: small batches, few steps, no progress bar, small eval."""
  small = {
      "train.steps": 4, "train.batch_size": 16, "train.checkpoint_every": 2, "train.log_every": 2,
      "eval.samples.every": 0, "train.progress_bar": False, "data.num_points": 512,
      "sample.num": 16, "eval.batch_size": 32, "eval.num_batches": 2, "eval.num_samples": 64,
  }
  small.update(overrides)
  return load_config(name, **small)


def pixel_batch(family, n=2, seed=0):
  """``(batch, raw)``: ``n`` random images of ``family``'s raw levels (PixelCNN / PixelRNN) in model
  space, labels ``0, 1, 2, 0, ...``."""
  raw = np.random.default_rng(seed).integers(0, family.levels, (n, *family.spec.shape))
  return {"x": family.to_model_space(jnp.asarray(raw)), "label": jnp.arange(n, dtype=jnp.int32) % 3}, raw


def compiled_init(family, seed, batch):
  """``family.init``, compiled, with an "rbg" key: threefry initialisation of every layer compiles ~4x slower."""
  return jax.jit(family.init)(jax.random.key(seed, impl="rbg"), batch)


def raster_index(shape):
  """Position of each sub-pixel in generation order, ``[H, W, C]``."""
  return np.arange(int(np.prod(shape))).reshape(shape)


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "run")


#: The slowest test files (minutes each on 2 cores), run first. Under ``--dist loadfile`` each file goes
#: whole to one worker, in collection order: one of these collected last (alphabetically) kept the
#: other worker idle for minutes at the end of the suite.
SLOW_FILES = ("test_experiments.py", "test_gan.py", "test_train.py", "test_sweep.py", "test_multi_device.py",
              "test_bad_inputs.py", "test_cli.py", "test_accelerators.py", "test_diffusion.py",
              "test_reliability.py", "test_evaluation.py", "test_flow_matching.py", "test_cpu_auto.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the session (its pytest-xdist workers and their subprocesses): the
  many tiny runs of the same configs compile each program once. Tests of compilation counts use
  ``_cache_size``/chex, which count traces, not cache hits, so they still see every retrace."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is a folder of the session's one
    root = root.parent
  path = str(root / "xla_cache")
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  yield


@pytest.fixture
def mount_point(tmp_path):
  """A directory to mount a tmpfs on; skips where mounting is not permitted (non-root, containers)."""
  target = tmp_path / "mnt"
  target.mkdir()
  probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True, text=True)
  if probe.returncode:
    pytest.skip(f"mounting a tmpfs is not permitted here: {probe.stderr.strip()}")
  subprocess.run(["umount", str(target)], check=True)
  yield target
  subprocess.run(["umount", str(target)], capture_output=True)


# SGD, not Adam: Adam divides each gradient by its own magnitude, so for parameters whose true gradient
# is zero (biases in front of BatchNorm) it turns summation-order noise of 1e-9 into steps of size lr.
# Two steps: 4 devices agree with 1 to 6e-8 after them; a third amplified the summation-order noise
# to 1.4e-4 in one discriminator kernel once the generator's ConvTranspose took its sub-pixel form
# (the GAN's leaky ReLUs are not smooth at 0; with flax's layer it stayed at 2e-7).
GAN_SGD = {"train.steps": 2, "optim.gen.name": "sgd", "optim.disc.name": "sgd",
           "optim.gen.learning_rate": 0.05, "optim.disc.learning_rate": 0.05}
