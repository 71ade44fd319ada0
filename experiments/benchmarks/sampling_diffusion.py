"""Sampling speed of DDPM: ancestral DDPM (all T = 1000 steps) vs DDIM with 100 and 50 steps.

The model is configs/ddpm.py's U-Net on digits (8x8x1) with weights initialised on the first
training batch (speed does not depend on the weights). Each sampler is one compiled ``lax.scan``;
the network cost is the same per step, so the time is about proportional to the number of steps.
Times are the median of ``repeats`` calls after compilation.

python experiments/benchmarks/sampling_diffusion.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from jaxgen import (
  config_defaults,  # noqa: E402
  families,  # noqa: E402
)
from jaxgen import data as data_lib  # noqa: E402
from jaxgen.timing import median_seconds, peak_memory  # noqa: E402

#: (sampler, steps): steps is ignored by the ancestral sampler, which always takes T steps.
SAMPLERS = (("ddpm", 1000), ("ddim", 100), ("ddim", 50))


def run(quick: bool = False) -> list[dict]:
  """One row per sampler: ``{name, data, num, steps, seconds_per_batch, samples_per_s, device,
  peak_memory}`` (``jaxgen.timing.peak_memory`` after the row)."""
  config = config_defaults.load(os.path.join(ROOT, "configs", "ddpm.py"))
  num = 16 if quick else 64
  data = data_lib.build(config)
  family = families.build(config, data.spec)
  params, state = jax.jit(family.init)(jax.random.key(0), data.train_batch(0))
  rows = []
  for sampler, steps in SAMPLERS:
    config.sample.sampler, config.sample.steps = sampler, steps  # read when sample is traced
    sample = jax.jit(lambda p, s, k: family.sample(p, s, k, num))
    seconds = median_seconds(sample, params, state, jax.random.key(1), repeats=1 if quick else 3)
    steps = config.model.num_timesteps if sampler == "ddpm" else steps
    rows.append({"name": f"{sampler} {steps} steps", "data": data.spec.name, "num": num,
                 "steps": steps, "seconds_per_batch": seconds, "samples_per_s": num / seconds,
                 "device": jax.devices()[0].device_kind, "peak_memory": peak_memory()})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a batch of 16 and one repeat")
  args = parser.parse_args()
  print(f"{'sampler':18s} {'data':8s} {'batch':>6s} {'s/batch':>9s} {'samples/s':>10s} {'peak memory':>14s}")
  for row in run(args.quick):
    print(f"{row['name']:18s} {row['data']:8s} {row['num']:6d} {row['seconds_per_batch']:9.3f} "
          f"{row['samples_per_s']:10.1f} {row['peak_memory']:>14s}")


if __name__ == "__main__":
  main()
