"""One vs several CPU devices for the trainer's step, in one process, under the same machine load.

  python experiments/benchmarks/cpu_devices.py                              # the default rows
  python experiments/benchmarks/cpu_devices.py transformer gan --chunks=12 [--devices=2]

The process splits the CPU into ``--devices`` JAX devices (default: the cores it may run on); the
one-device step runs on a mesh of device 0 alone, the split step on all of them (the trainer's
``data`` mesh: batch sharded, state replicated). Both are the trainer's own compiled step on the
config's own batches; chunks of steps alternate between the two and the medians of ms/step over
the chunks are reported, so load from other processes (which varies over seconds) hits both
alike. Table and the rule derived from it: docs/trainer.md, "Automatic CPU device choice"
(``jaxgen/cpu_devices.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments.benchmarks import train_throughput  # noqa: E402
from jaxgen import checkpoint as checkpoint_lib  # noqa: E402
from jaxgen import config_defaults, parallel, train  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402

#: config name -> steps per chunk (chunks of ~0.2-0.5 s on 2 cores).
DEFAULT_ROWS = {"transformer": 10, "gan": 5, "vae": 50, "pixelcnn": 5, "realnvp": 5, "ddpm": 3, "ddpm_toy2d": 50,
                "wavenet": 5}


def compiled_run(name: str, devices: int, steps: int, tmpdir: str) -> list:
  """``[compiled step, state, batches]`` of ``configs/<name>.py`` on a mesh of the first ``devices``."""
  train_throughput.use_devices(devices)
  config = config_defaults.load(os.path.join(train_throughput.CONFIGS, f"{name}.py"), [])
  train_throughput.provide_stage_one(config, tmpdir)
  exp = train.setup(config, os.path.join(tmpdir, f"{name}_{devices}"))
  ckpt = checkpoint_lib.Checkpointer(exp.workdir, 1)
  ts = train.init_or_restore(exp, ckpt)
  ckpt.close()
  batches = [parallel.global_batch(exp.data.train_batch(i), exp.mesh) for i in range(steps)]
  return [train.make_train_step(exp).lower(ts, batches[0]).compile(), ts, batches]


def measure(name: str, devices: int, steps: int, chunks: int) -> tuple[float, float]:
  """Median ms/step on one device and on ``devices``, over ``chunks`` alternating chunks of ``steps``."""
  with tempfile.TemporaryDirectory() as tmpdir:
    runs = {n: compiled_run(name, n, steps, tmpdir) for n in (1, devices)}
    times = {1: [], devices: []}
    for c in range(chunks + 1):  # chunk 0 warms up
      for n in (1, devices) if c % 2 else (devices, 1):
        step, ts, batches = runs[n]
        jax.block_until_ready(ts)
        t, previous = time.perf_counter(), None
        for batch in batches:
          ts, metrics = step(ts, batch)
          jax.block_until_ready(previous)  # at most two steps in flight, as the trainer
          previous = metrics
        jax.block_until_ready((ts, metrics))
        if c:
          times[n].append(1000 * (time.perf_counter() - t) / steps)
        runs[n][1] = ts
  return statistics.median(times[1]), statistics.median(times[devices])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("configs", nargs="*", help=f"config names (default: {', '.join(DEFAULT_ROWS)})")
  parser.add_argument("--devices", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--chunks", type=int, default=10, help="timed chunks per device count")
  args = parser.parse_args()
  jax.config.update("jax_num_cpu_devices", args.devices)
  print(f"{'config':12s} {'1 device ms':>11s} {f'{args.devices} devices ms':>12s} {'ratio':>6s} {'load':>5s} {'peak memory':>14s}")
  for name in args.configs or DEFAULT_ROWS:
    one, split = measure(name, args.devices, DEFAULT_ROWS.get(name, 5), args.chunks)
    print(f"{name:12s} {one:11.2f} {split:12.2f} {one / split:6.2f} {os.getloadavg()[0]:5.1f} {peak_memory():>14s}", flush=True)


if __name__ == "__main__":
  main()
