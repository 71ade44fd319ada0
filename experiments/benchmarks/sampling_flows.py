"""Sampling speed of the flows: samples/s of one compiled ``family.sample`` call (a single inverse
pass of the flow on ``z ~ N(0, T^2 I)``).

Models are configs/realnvp.py and configs/glow.py on digits (8x8x1) and configs/flow2d.py on
toy2d/moons, with weights initialised on the first training batch (speed does not depend on the
weights). Times are the median of ``repeats`` calls after compilation.

python experiments/benchmarks/sampling_flows.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from jaxgen import data as data_lib  # noqa: E402
from jaxgen import families  # noqa: E402
from jaxgen.timing import median_seconds  # noqa: E402

CONFIGS = ("realnvp", "glow", "flow2d")


def run(quick: bool = False) -> list[dict]:
  """One row per flow: ``{name, data, num, samples_per_s, device}``."""
  rows = []
  for name in CONFIGS:
    config = runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))["get_config"]()
    num = (256 if quick else 1024) * (4 if name == "flow2d" else 1)
    data = data_lib.build(config)
    family = families.build(config, data.spec)
    params, state = family.init(jax.random.key(0), data.train_batch(0))
    sample = jax.jit(lambda p, s, k, family=family, num=num: family.sample(p, s, k, num))
    seconds = median_seconds(sample, params, state, jax.random.key(1), repeats=3 if quick else 10)
    rows.append({"name": name, "data": data.spec.name, "num": num, "samples_per_s": num / seconds,
                 "device": jax.devices()[0].device_kind})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
  args = parser.parse_args()
  print(f"{'flow':10s} {'data':14s} {'batch':>6s} {'samples/s':>12s}")
  for row in run(args.quick):
    print(f"{row['name']:10s} {row['data']:14s} {row['num']:6d} {row['samples_per_s']:12.0f}")


if __name__ == "__main__":
  main()
