"""Sampling speed of the flows: samples/s of one compiled ``family.sample`` call (a single inverse
pass of the flow on ``z ~ N(0, T^2 I)``).

Models are configs/realnvp.py and configs/glow.py on digits (8x8x1) and configs/flow2d.py on
toy2d/moons, with weights initialised on the first training batch (speed does not depend on the
weights). Times are the median of ``repeats`` calls after compilation.

python experiments/benchmarks/sampling_flows.py [--quick]
"""

from __future__ import annotations

import argparse

from sampling_families import measure

CONFIGS = ("realnvp", "glow", "flow2d")


def run(quick: bool = False) -> list[dict]:
  """One row per flow (``sampling_families.measure``): ``{name, data, num, samples_per_s, ...}``."""
  return [measure(name, (256 if quick else 1024) * (4 if name == "flow2d" else 1), 3 if quick else 10)
          for name in CONFIGS]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
  args = parser.parse_args()
  print(f"{'flow':10s} {'data':14s} {'batch':>6s} {'samples/s':>12s} {'peak memory':>14s}")
  for row in run(args.quick):
    print(f"{row['name']:10s} {row['data']:14s} {row['num']:6d} {row['samples_per_s']:12.0f} {row['peak_memory']:>14s}")


if __name__ == "__main__":
  main()
