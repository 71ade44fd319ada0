"""The command line as a user runs it: overrides, modes, and several processes (several devices in
one process: test_multi_device.py; bad inputs and their one-line errors: test_bad_inputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

from conftest import GAN_SGD as SGD
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
  # The reference run's evaluation is not compared (the two processes' is what runs sharded): heldout only.
  one = train.train_and_evaluate(tiny_config("gan", **SGD, **{"eval.metrics": ("heldout",)}), str(tmp_path / "one"))
  assert int(two.step) == SGD["train.steps"]
  for a, b in zip(jax.tree.leaves(jax.device_get(two.params)), jax.tree.leaves(jax.device_get(one.params))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
