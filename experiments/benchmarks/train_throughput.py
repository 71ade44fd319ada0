"""Training throughput of configs: compile time, steady-state steps/s and examples/s, input wait share.

  python experiments/benchmarks/train_throughput.py                      # every family's default config
  python experiments/benchmarks/train_throughput.py configs/gan.py configs/vae.py [--steps=300]
  python experiments/benchmarks/train_throughput.py configs/vae.py --steps=2000   # ~1 ms steps: measure long
  python experiments/benchmarks/train_throughput.py configs/transformer.py --cpu_devices=2

Runs the real pipeline (prefetch thread included) and the trainer's own compiled step. "input wait"
is the share of wall time the loop spends getting the next batch and placing it on the devices;
the device works asynchronously meanwhile, so a share near 0 means input is not the bottleneck.
"peak memory" is the peak so far (``jaxgen.timing.peak_memory``: device memory on an accelerator,
the process's RSS on a CPU; never reset, so with several configs it is the largest so far). "CPU ms"
is the process's CPU time per step (every thread's, the input thread's too): on a machine shared
with other jobs it varies less than the wall time.
Steps of a millisecond (the digits VAE, 2-D flows) need ~2000 steps for a stable figure.
Two-stage configs (``vqvae_prior``, ``latent_diffusion``) whose stage-1 workdir does not exist get
a stage-1 run of one step in a temporary directory (speed does not depend on the weights); the DBN
measures its first layer's step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from jaxgen import checkpoint as checkpoint_lib  # noqa: E402
from jaxgen import config_defaults, parallel, train  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
#: The default rows: every family's default config on its embedded data.
ALL_CONFIGS = ("gan", "sngan", "wgan", "vae", "vae_conv", "vqvae", "vqvae_prior", "aae", "avb", "rbm", "dbn",
               "pixelcnn", "pixelrnn", "transformer", "wavenet", "realnvp", "glow", "flow2d", "ddpm",
               "flow_matching", "latent_diffusion")
#: Two-stage models: the ``config.model`` field naming the stage-1 workdir -> the stage-1 config.
STAGE_ONE = {"vqvae_workdir": "vqvae", "autoencoder_workdir": "vae"}


def use_devices(devices: int) -> None:
  """Every mesh jaxgen builds from now on (``parallel.make_mesh``: the trainer's, the evaluators')
  spans the first ``devices`` devices of this process: how one process times a step on 1 and on N
  of its devices (a benchmark's switch; the trainer itself always uses every device)."""
  parallel.make_mesh = lambda: jax.make_mesh((devices,), (parallel.DATA_AXIS,), devices=jax.devices()[:devices],
                                             axis_types=(jax.sharding.AxisType.Auto,))


def provide_stage_one(config, tmpdir: str) -> None:
  """Points a two-stage ``config``'s stage-1 workdir field at a one-step stage-1 run in ``tmpdir``
  when the named workdir does not exist (benchmarks only: the weights do not matter)."""
  for field, name in STAGE_ONE.items():
    if field in config.model and not os.path.exists(config.model[field]):
      workdir = os.path.join(tmpdir, name)
      train.train_and_evaluate(config_defaults.load(os.path.join(CONFIGS, f"{name}.py"), [
          "train.steps=1", "train.checkpoint_every=1", "train.progress_bar=False", "eval.metrics=heldout",
          "eval.num_batches=1"]), workdir)
      config.model[field] = workdir


@contextlib.contextmanager
def trainer_step(config_path: str, overrides: list[str], horizon: int):
  """The trainer's compiled step of a config, ready to time: yields ``(run, info)``.

  ``run(steps, warmup) -> dict`` times ``steps`` steps after ``warmup`` untimed ones on the real
  input pipeline (wall ms and the process's CPU ms per step, every thread's), continuing the same
  state and batch stream on every call (so a caller can alternate it with another benchmark);
  ``info`` holds the config's family, data, batch, compile seconds, data spec and parameter count.
  ``horizon``: ``train.steps`` (the schedules' length).
  """
  config = config_defaults.load(config_path, overrides)
  config.train.steps = horizon
  with tempfile.TemporaryDirectory() as workdir:
    provide_stage_one(config, workdir)
    workdir = os.path.join(workdir, "run")
    exp = train.setup(config, workdir)
    ckpt = checkpoint_lib.Checkpointer(workdir, 1)
    ts = train.init_or_restore(exp, ckpt)
    ckpt.close()
    step = train.make_train_step(exp)
    batch0 = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
    t = time.perf_counter()
    compiled = step.lower(ts, batch0).compile()
    compile_s = time.perf_counter() - t
    batches = exp.data.iterate_train(0, transform=lambda b: parallel.global_batch(b, exp.mesh))
    current = {"ts": ts}

    def run(steps: int, warmup: int) -> dict:
      ts, wait, previous, t0, cpu0 = current["ts"], 0.0, None, time.perf_counter(), time.process_time()
      for i in range(warmup + steps):
        if i == warmup:
          jax.block_until_ready(ts)
          wait, t0, cpu0 = 0.0, time.perf_counter(), time.process_time()
        t = time.perf_counter()
        _, batch = next(batches)
        wait += time.perf_counter() - t
        ts, metrics = compiled(ts, batch)
        # As the trainer (which checks each step's loss one step late): at most two steps in flight.
        # Unbounded queues of sharded steps deadlock XLA:CPU's in-process collectives with several
        # CPU devices (README, "--cpu_devices").
        jax.block_until_ready(previous)
        previous = metrics
      jax.block_until_ready((ts, metrics))
      total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
      current["ts"] = ts
      return {"steps_per_s": steps / total, "ms_per_step": 1000 * total / steps,
              "cpu_ms_per_step": 1000 * cpu / steps,
              "examples_per_s": steps * config.train.batch_size / total, "input_wait_share": wait / total}

    info = {"config": config_path, "family": config.model.family, "data": config.data.name, "spec": exp.data.spec,
            "batch": config.train.batch_size, "compile_s": compile_s,
            "params": sum(x.size for x in jax.tree.leaves(ts.params))}
    try:
      yield run, info
    finally:
      batches.close()


def measure(config_path: str, steps: int, warmup: int, overrides: list[str]) -> dict:
  """One timing of ``steps`` steps after ``warmup`` (``trainer_step``'s ``info`` and ``run`` fields)."""
  with trainer_step(config_path, overrides, warmup + steps + 1) as (run, info):
    return {**info, **run(steps, warmup)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("configs", nargs="*", help="config files (default: every family's, ALL_CONFIGS)")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--set", action="append", default=[], help="config override key=value (all configs), parsed as --config.key=value")
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="split the CPU into this many JAX devices, as jaxgen.main --cpu_devices")
  args = parser.parse_args()
  if args.cpu_devices:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
  header = (f"{'config':28s} {'batch':>5s} {'compile s':>9s} {'steps/s':>8s} {'ms/step':>8s} {'CPU ms':>8s} "
            f"{'examples/s':>10s} {'input wait':>10s} {'peak memory':>14s}")
  print(header)
  for path in args.configs or [os.path.relpath(os.path.join(CONFIGS, f"{name}.py")) for name in ALL_CONFIGS]:
    r = measure(path, args.steps, args.warmup, args.set)
    print(f"{r['config']:28s} {r['batch']:5d} {r['compile_s']:9.2f} {r['steps_per_s']:8.1f} {r['ms_per_step']:8.2f} "
          f"{r['cpu_ms_per_step']:8.2f} "
          f"{r['examples_per_s']:10.0f} {100 * r['input_wait_share']:9.1f}% {peak_memory():>14s}", flush=True)


if __name__ == "__main__":
  main()
