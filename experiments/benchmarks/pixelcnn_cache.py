"""PixelCNN generation: the cached generator (Ramachandran et al. 2017, ``sample.cache=True``)
against the recompute of the whole network at every sub-pixel (``sample.cache=False``).

  python experiments/benchmarks/pixelcnn_cache.py [--batch=16] [--repeats=3] [--shapes=8x8x1,28x28x1]
  python experiments/benchmarks/pixelcnn_cache.py --shapes=32x32x3 --set=model.features=33

The model is configs/pixelcnn.py's (4 gated blocks of 32 features, kernels 5 then 3, a 64-feature
head, a softmax over the levels; ``--config`` picks another, ``--set=a.b=v`` overrides a field; 3
channels need ``model.features`` a multiple of 3) with random weights (speed does not
depend on them), on ``HxWxC`` images of ``digits``' 17 levels at 8x8x1 and 256 levels otherwise
(MNIST / CIFAR-10 gray levels). Both samplers are one compiled loop with the same key and draw the
same samples (asserted). Both are compiled ahead of time; times are medians over ``--repeats``
rounds that call the two samplers alternately (the machine's load drifts), printed with the
speedup and the peak memory (``jaxgen.timing.peak_memory``).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import config_defaults, families
from jaxgen.data.spec import DataSpec
from jaxgen.timing import peak_memory

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def compare(config_path: str, overrides: list[str], shape: tuple[int, int, int], batch: int, repeats: int) -> dict:
  """Median seconds per batch of both samplers on ``shape`` images, and the speedup."""
  config = config_defaults.load(config_path, overrides)
  levels = 17 if shape == (8, 8, 1) else 256
  family = families.build(config, DataSpec("bench", "image", shape, levels=levels, value_range=(-1.0, 1.0)))
  params, _ = jax.jit(family.init)(jax.random.key(0), {"x": jnp.zeros((1, *shape))})
  key = jax.random.key(1)
  fns = {cache: jax.jit(lambda p, k, cache=cache: family.generate_raw(p, k, None, batch, cache=cache))
         .lower(params, key).compile() for cache in (False, True)}
  times, samples = {cache: [] for cache in fns}, {}
  for _ in range(repeats):
    for cache, fn in fns.items():
      start = time.perf_counter()
      samples[cache] = np.asarray(fn(params, key))
      times[cache].append(time.perf_counter() - start)
  assert (samples[False] == samples[True]).all(), "cached and recomputed samples differ"
  naive, cached = (float(np.median(times[cache])) for cache in (False, True))
  return {"shape": "x".join(map(str, shape)), "levels": levels, "naive_s": naive, "cached_s": cached,
          "speedup": naive / cached}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(CONFIGS / "pixelcnn.py"))
  parser.add_argument("--set", action="append", default=[], help="a config override a.b=v (repeatable)")
  parser.add_argument("--shapes", default="8x8x1,28x28x1", help="comma-separated HxWxC")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"batch {args.batch}, {args.repeats} alternating rounds, {jax.devices()[0].platform}")
  print(f"{'shape':>9s} {'levels':>6s} {'recompute s':>12s} {'cached s':>9s} {'speedup':>8s} {'peak memory':>14s}")
  for text in args.shapes.split(","):
    row = compare(args.config, args.set, tuple(int(n) for n in text.split("x")), args.batch, args.repeats)
    print(f"{row['shape']:>9s} {row['levels']:6d} {row['naive_s']:12.3f} {row['cached_s']:9.3f} "
          f"{row['speedup']:7.1f}x {peak_memory():>14s}", flush=True)


if __name__ == "__main__":
  main()
