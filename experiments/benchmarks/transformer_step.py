"""Milliseconds per training step of the character-level transformer (configs/transformer.py).

The reference point is nanoGPT's CPU "baby GPT" (4 layers, 4 heads, width 128, context 64,
batch 12, no dropout, AdamW): about 45-50 ms per step on a 2-core CPU; the target is < 40 ms.
A step is the family's loss, its gradient and the AdamW update (with gradient clipping), jitted
with the state donated, on batches from the embedded ``text/pystdlib`` corpus; the time is the
median over timed steps after compilation and warm-up, printed with the peak memory
(``jaxgen.timing.peak_memory``).

python experiments/benchmarks/transformer_step.py [--steps=N] [--eval_after=2000] [--cpu_devices=2]
``--eval_after=N`` also trains N steps and prints the held-out loss (nats and bits per character).
``--cpu_devices=N`` splits the CPU into N JAX devices, as ``python -m jaxgen.main --cpu_devices=N``
does: the batch is sharded over them (the trainer's mesh), parameters and optimizer state are
replicated, so each device runs half the batch's ops while the other runs the other half.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import config_defaults, families, optim, parallel
from jaxgen.data import text
from jaxgen.timing import peak_memory

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "transformer.py"


def make_step(family, tx, replicated):
  """``(params, opt_state, x, step) -> (params, opt_state, loss)``, jitted, state donated and
  placed with the ``replicated`` sharding."""
  loss_fn = family.update_groups()[0].loss_fn

  def step(params, opt_state, x, index):
    rng = jax.random.fold_in(jax.random.key(0), index)
    (loss, _), grads = jax.value_and_grad(
        lambda p: loss_fn({"model": p}, {}, {"x": x}, rng), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1), out_shardings=replicated)


def run(quick: bool = False, steps: int = 0, eval_after: int = 0) -> list[dict]:
  """Time ``steps`` steps (default 50, quick 10); optionally train ``eval_after`` and evaluate."""
  config = config_defaults.load(str(CONFIG))
  steps = steps or (10 if quick else 50)
  raw = text.load_pystdlib(config.data)
  family = families.build(config, raw.spec)
  tx = optim.optimizer(config.optim.model, max(eval_after, steps))
  batches = np.random.default_rng(0)
  train_x = raw.train["x"]

  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size)

  def batch():
    rows = train_x[batches.integers(0, len(train_x), config.train.batch_size)]
    return jax.device_put(rows, parallel.batch_sharding(mesh))

  params, _ = family.init(jax.random.key(config.seed), {"x": batch()})
  params, opt_state = jax.device_put((params["model"], tx.init(params["model"])),
                                     parallel.replicated(mesh))
  step = make_step(family, tx, parallel.replicated(mesh))
  for i in range(3):  # compile + warm up
    params, opt_state, loss = step(params, opt_state, batch(), i)
  loss.block_until_ready()
  times = []
  for i in range(steps):
    x = batch()
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, 3 + i)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  row = {"name": "transformer 4L/4H/128w ctx64 batch12 adamw", "devices": jax.device_count(),
         "ms_per_step": 1e3 * float(np.median(times)), "ms_per_step_min": 1e3 * min(times)}
  if eval_after:
    for i in range(3 + steps, eval_after):
      params, opt_state, loss = step(params, opt_state, batch(), i)
      loss.block_until_ready()  # unbounded queues of sharded steps deadlock XLA:CPU (README)
    nll = jax.jit(lambda p, x: family.token_nll({"model": p}, x).mean())
    test_x = raw.test["x"]
    val = float(np.mean([nll(params, jnp.asarray(test_x[i:i + 256]))
                         for i in range(0, len(test_x) - 255, 256)]))
    row.update(train_steps=eval_after, val_nats_per_char=val, val_bits_per_char=val / math.log(2))
  row["peak_memory"] = peak_memory()
  return [row]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=0)
  parser.add_argument("--eval_after", type=int, default=0)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="split the CPU into this many JAX devices (0 = JAX's default, one)")
  args = parser.parse_args()
  if args.cpu_devices:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  for row in run(args.quick, args.steps, args.eval_after):
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
  main()
