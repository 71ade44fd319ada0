"""The automatic CPU device choice (``--cpu_devices=auto``, ``jaxgen/cpu_devices.py``): the rule on
configs, and a command-line run that takes it (2 devices on a 2-core host) ending with the params of
a one-device run up to float summation order, its train step compiled once."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, load_config
from jaxgen import config_defaults, cpu_devices, train


def _config(name="transformer", **overrides):
  return load_config(name, **overrides)


def test_split_family_gets_the_largest_count_dividing_both_batches():
  config = _config()  # train.batch_size 12, eval.batch_size 256
  assert cpu_devices.choose(config, cores=2).devices == 2
  assert cpu_devices.choose(config, cores=4).devices == 4
  # 8 cores: 8 does not divide 12, 6 does not divide 256 -> 4.
  assert cpu_devices.choose(config, cores=8).devices == 4
  # Capped at MAX_DEVICES = 8 although 12, 16, 24 and 48 divide both batches too.
  big = _config(**{"train.batch_size": 48, "eval.batch_size": 48})
  assert cpu_devices.MAX_DEVICES == 8 and cpu_devices.choose(big, cores=64).devices == 8
  assert cpu_devices.choose(config, cores=1) == cpu_devices.Choice(1, "1 core: one device")  # no divisibility to blame


@pytest.mark.parametrize("name", ["wavenet", "ddpm"])
def test_other_split_families_default_configs_split_on_two_cores(name):
  assert cpu_devices.choose(_config(name), cores=2).devices == 2


def test_batch_not_divisible_keeps_one_device():
  odd = _config(**{"train.batch_size": 15})
  choice = cpu_devices.choose(odd, cores=2)
  assert choice.devices == 1 and "train.batch_size=15" in choice.reason
  # Gradient accumulation: each micro-batch is split, 12 / 2 = 6 per step over 4 cores -> 3 would
  # divide 6 but not eval.batch_size 256 -> 2.
  accum = _config(**{"train.grad_accum_steps": 2})
  assert cpu_devices.choose(accum, cores=4).devices == 2
  assert cpu_devices.choose(_config(**{"eval.batch_size": 255}), cores=2).devices == 1


def test_family_measured_slower_keeps_one_device():
  for name in ("gan", "vae", "pixelcnn", "ddpm_toy2d"):  # the last: ddpm's MLP denoiser of points
    config = _config(name)
    choice = cpu_devices.choose(config, cores=2)
    assert choice.devices == 1 and config.model.family in choice.reason, name


@pytest.mark.parametrize("kwargs", [
    {"platforms": "gpu"}, {"platforms": "tpu,cpu"}, {"plugins": ("cuda12",)},
    {"xla_flags": "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"},
    {"num_cpu_devices": 4}, {"num_cpu_devices": 0},  # JAX_NUM_CPU_DEVICES
    {"distributed": True},
])
def test_non_cpu_backend_or_explicit_setting_is_left_alone(kwargs):
  assert cpu_devices.choose(_config(), cores=2, **kwargs).devices is None


def test_jax_num_cpu_devices_set_by_the_user_is_left_alone(monkeypatch):
  """``JAX_NUM_CPU_DEVICES=4`` (read into ``jax.config`` at import) is the user's choice, as the XLA flag."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(type(jax.config), "jax_num_cpu_devices", 4, raising=False)
  assert cpu_devices.choose_here(_config()).devices is None


def test_cpu_forced_by_jax_platforms_decides_despite_a_plugin():
  assert cpu_devices.choose(_config(), cores=2, platforms="cpu", plugins=("cuda12",)).devices == 2


# A tiny transformer under SGD (as tests/test_multi_device.py's two-device test), 3 steps with a checkpoint
# between them; only the held-out evaluator (no sampling) to keep the run short.
TINY_TRANSFORMER = [
    "train.steps=3", "train.batch_size=16", "train.checkpoint_every=2", "train.log_every=1",
    "train.progress_bar=False", "eval.batch_size=32", "eval.num_batches=1", "eval.metrics=heldout",
    "eval.samples.every=0", "sample.num=2", "data.seq_len=16", "model.num_layers=1", "model.num_heads=2",
    "model.width=16", "optim.model.name=sgd", "optim.model.learning_rate=0.05", "optim.model.warmup_steps=0",
]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the automatic choice splits only with >= 2 cores")
def test_command_line_auto_choice_matches_one_device(tmp_path):
  workdir = str(tmp_path / "auto")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["JAX_LOG_COMPILES"] = "1"
  proc = subprocess.run([sys.executable, "-m", "jaxgen.main", "--config=configs/transformer.py", f"--workdir={workdir}",
                         *(f"--config.{o}" for o in TINY_TRANSFORMER)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r"--cpu_devices=auto: 2 CPU device\(s\)", proc.stderr), proc.stderr[-3000:]
  assert proc.stderr.count("Compiling jit(step)") == 1  # the train step, across the checkpoint
  config = config_defaults.load(os.path.join(ROOT, "configs", "transformer.py"), TINY_TRANSFORMER)
  auto = train.restore_for_inference(train.setup(config, workdir))
  assert jax.device_count() == 1  # this process: JAX's default
  one = train.train_and_evaluate(config, str(tmp_path / "one"))
  assert int(auto.step) == 3
  leaves = jax.tree.leaves(jax.device_get(one.params))
  assert len(leaves) == len(jax.tree.leaves(auto.params))
  for a, b in zip(jax.tree.leaves(jax.device_get(auto.params)), leaves):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
