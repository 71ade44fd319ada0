"""The command line as a user runs it: overrides, modes, and several devices (bad inputs and their
one-line errors: test_bad_inputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np

from conftest import ROOT, tiny_config
from jaxgen import train

TINY = ["--config.train.steps=4", "--config.train.batch_size=16", "--config.train.checkpoint_every=2",
        "--config.train.log_every=2", "--config.train.progress_bar=False", "--config.sample.num=16",
        "--config.eval.batch_size=32", "--config.eval.num_batches=2"]


def run_cli(*args, env=None):
  full_env = {**os.environ, **(env or {})}
  return subprocess.run([sys.executable, "-m", "jaxgen.main", *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=600)


def test_train_then_sample_then_eval_with_overrides(tmp_path):
  workdir = str(tmp_path / "vae")
  args = ["--config=configs/vae.py", f"--workdir={workdir}", "--config.seed=3", "--config.data.name=toy2d/grid25",
          "--config.model.decoder=gaussian", "--config.data.binarize=none", "--config.model.hidden=32,32", *TINY]
  proc = run_cli(*args)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["seed"] == 3 and saved["data"]["name"] == "toy2d/grid25" and saved["train"]["steps"] == 4
  assert saved["model"]["hidden"] == [32, 32]  # a tuple field, parsed by config_defaults.parse_value
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert not os.path.exists(os.path.join(workdir, "lock.json"))  # released when the run ends

  proc = run_cli(*args, "--mode=sample")
  assert proc.returncode == 0, proc.stderr
  assert os.path.exists(os.path.join(workdir, "samples", "sample_step_4_seed_3.png"))

  proc = run_cli(*args, "--mode=eval")
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert results["step"] == 4 and np.isfinite(results["nll_bound_nats"])


# SGD, not Adam: Adam divides each gradient by its own magnitude, so for parameters whose true gradient
# is zero (biases in front of BatchNorm) it turns summation-order noise of 1e-9 into steps of size lr.
# Two steps: 4 devices agree with 1 to 6e-8 after them; a third amplified the summation-order noise
# to 1.4e-4 in one discriminator kernel once the generator's ConvTranspose took its sub-pixel form
# (the GAN's leaky ReLUs are not smooth at 0; with flax's layer it stayed at 2e-7).
SGD = {"train.steps": 2, "optim.gen.name": "sgd", "optim.disc.name": "sgd",
       "optim.gen.learning_rate": 0.05, "optim.disc.learning_rate": 0.05}

MULTI_DEVICE_SCRIPT = f"SGD = {SGD!r}\n" + """
import sys, numpy as np, jax
sys.path.insert(0, "tests")
from conftest import tiny_config
from jaxgen import train
from jaxgen.errors import UserError
assert jax.device_count() == 4, jax.devices()
try:
  train.setup(tiny_config("gan", **{"train.batch_size": 6}), sys.argv[1] + "/bad")
except UserError as e:
  print("ERROR:", e)
ts = train.train_and_evaluate(tiny_config("gan", **SGD), sys.argv[1] + "/run")
leaves = jax.tree.leaves(jax.device_get(ts.params))
np.savez(sys.argv[1] + "/params.npz", *leaves)
"""


def test_four_devices_match_one_device(tmp_path):
  """Data parallel over 4 (host) devices gives the single-device params up to float tolerance."""
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env={**os.environ, **env})
  assert proc.returncode == 0, proc.stderr
  assert "ERROR: train.batch_size=6 is not divisible by the number of devices (4)" in proc.stdout
  ts = train.train_and_evaluate(tiny_config("gan", **SGD), str(tmp_path / "single"))
  multi = np.load(tmp_path / "params.npz")
  single = jax.tree.leaves(jax.device_get(ts.params))
  assert len(single) == len(multi.files)
  for i, leaf in enumerate(single):
    np.testing.assert_allclose(multi[f"arr_{i}"], leaf, rtol=2e-4, atol=2e-5)
  chex.assert_tree_all_finite(single)


# Tiny autoregressive models (gathers, KV cache and queue updates under a sharded batch), SGD.
AUTOREGRESSIVE = {
    "transformer": {"data.seq_len": 16, "model.num_layers": 1, "model.num_heads": 2, "model.width": 16,
                    "sample.num": 2, "optim.model.name": "sgd", "optim.model.learning_rate": 0.05},
    "pixelcnn": {"model.features": 8, "model.num_blocks": 1, "model.head_features": 8, "sample.num": 2,
                 "optim.default.name": "sgd", "optim.default.learning_rate": 0.05},
    "wavenet": {"data.seq_len": 32, "model.dilation_cycle": 3, "model.num_cycles": 1,
                "model.residual_channels": 8, "model.dilation_channels": 8, "model.skip_channels": 8,
                "sample.num": 2, "optim.default.name": "sgd", "optim.default.learning_rate": 0.05},
}

TWO_DEVICE_SCRIPT = f"AUTOREGRESSIVE = {AUTOREGRESSIVE!r}\n" + """
import sys, numpy as np, jax
jax.config.update("jax_num_cpu_devices", 2)  # what --cpu_devices=2 does
sys.path.insert(0, "tests")
from conftest import tiny_config
from jaxgen import train
assert jax.device_count() == 2, jax.devices()
for name, overrides in AUTOREGRESSIVE.items():
  ts = train.train_and_evaluate(tiny_config(name, **overrides), sys.argv[1] + "/" + name)
  np.savez(sys.argv[1] + f"/{name}.npz", *jax.tree.leaves(jax.device_get(ts.params)))
"""


def test_autoregressive_families_on_two_cpu_devices_match_one_device(tmp_path):
  """Training (and the final sampling: KV cache, WaveNet queues, PixelCNN) with the batch sharded
  over 2 CPU devices gives the single-device params up to float tolerance."""
  proc = subprocess.run([sys.executable, "-c", TWO_DEVICE_SCRIPT, str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name, overrides in AUTOREGRESSIVE.items():
    ts = train.train_and_evaluate(tiny_config(name, **overrides), str(tmp_path / "single" / name))
    two = np.load(tmp_path / f"{name}.npz")
    one = jax.tree.leaves(jax.device_get(ts.params))
    assert len(one) == len(two.files)
    for i, leaf in enumerate(one):
      np.testing.assert_allclose(two[f"arr_{i}"], leaf, rtol=2e-4, atol=2e-5, err_msg=name)
    assert os.listdir(tmp_path / name / "samples")  # generation ran on the 2-device mesh


def test_two_processes_match_one_process(tmp_path):
  """launch/local.sh runs 2 jax.distributed CPU processes, each reading half of every batch; the
  checkpointed params equal a single-process run up to float tolerance."""
  workdir = str(tmp_path / "two")
  args = ["--config=configs/gan.py", f"--workdir={workdir}", *TINY, *(f"--config.{k}={v}" for k, v in SGD.items())]
  env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
         "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "JAXGEN_PORT": str(20000 + os.getpid() % 20000)}
  proc = subprocess.run(["bash", "launch/local.sh", "2", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = tiny_config("gan", **SGD)
  two = train.restore_for_inference(train.setup(config, workdir))
  one = train.train_and_evaluate(config, str(tmp_path / "one"))
  assert int(two.step) == SGD["train.steps"]
  for a, b in zip(jax.tree.leaves(jax.device_get(two.params)), jax.tree.leaves(jax.device_get(one.params))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
