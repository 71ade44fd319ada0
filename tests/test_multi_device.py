"""Several JAX devices in one process (the batch sharded over a ``data`` mesh) give the one-device
params up to float tolerance: 4 host devices for the GAN, 2 CPU devices (what ``--cpu_devices=2``
does) for the autoregressive families. Each runs in a subprocess: the device count is fixed when
JAX starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np

from conftest import GAN_SGD as SGD
from conftest import ROOT, tiny_config
from jaxgen import train

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
# evaluation splits only eval batches: a train.batch_size of 6 (as trained on another device count) is fine
print("EVAL:", train.evaluate(tiny_config("gan", **SGD, **{"train.batch_size": 6, "eval.metrics": ("heldout",)}),
                              sys.argv[1] + "/run")["disc/loss"])
"""


def test_four_devices_match_one_device(tmp_path):
  """Data parallel over 4 (host) devices gives the single-device params up to float tolerance."""
  env = {"XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4", "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env={**os.environ, **env})
  assert proc.returncode == 0, proc.stderr
  assert "ERROR: train.batch_size=6 is not divisible by the number of devices (4)" in proc.stdout
  trained = json.loads((tmp_path / "run" / "eval" / "step_2.json").read_text())
  assert f"EVAL: {trained['disc/loss']!r}" in proc.stdout  # --mode=eval repeats the run's own evaluation
  # The reference run's evaluation is not compared (the 4-device run's is what runs sharded): heldout only.
  ts = train.train_and_evaluate(tiny_config("gan", **SGD, **{"eval.metrics": ("heldout",)}), str(tmp_path / "single"))
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
