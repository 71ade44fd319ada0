"""Image-folder input throughput: decode and cache (images/s), and the input-wait share of a DCGAN step.

  python experiments/benchmarks/data_throughput.py                      # 10,000 PNGs of 64x64, 10 DCGAN steps
  python experiments/benchmarks/data_throughput.py --num=2000 --steps=0  # decode figures only

Writes ``--num`` generated 64x64 RGB PNGs (smooth random colour fields plus noise, ~9 KB each) to a
temporary folder, then measures ``data.build`` of ``images:<folder>``:

* first run, disk cache: decoding every file into a new memory-mapped ``.npy`` (``cache_max_bytes=0``);
* cached run: the same folder again (the manifest matches: only listing and ``stat``);
* in memory: decoding at every start (the default when the images fit ``cache_max_bytes``);
* batch reads: ``train_batch`` (gather + scale + random flip) from memory and from the memory map.

Then ``configs/gan.py`` (DCGAN) at 64x64 on the folder, through ``train_throughput.measure``: the
trainer's compiled step fed by the real pipeline; "input wait" is the share of wall time spent
getting the next batch. The peak memory (``jaxgen.timing.peak_memory``) is reported after
decoding and beside each DCGAN row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
from PIL import Image  # noqa: E402
from train_throughput import measure  # noqa: E402

from jaxgen import config_defaults, data  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402


def write_pngs(folder: str, num: int, size: int = 64) -> float:
  """``num`` PNGs of ``size x size`` in 10 class folders; returns the mean file size in bytes."""
  rng = np.random.default_rng(0)
  total = 0
  for i in range(num):
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.int16)
    pixels = np.clip(field + rng.integers(-8, 9, field.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, f"class{i % 10}", f"{i:05d}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)
    total += os.path.getsize(path)
  return total / num


def timed_build(folder: str, **options) -> tuple[float, data.Pipeline]:
  c = config_defaults.base()
  c.data.name = f"images:{folder}"
  c.data.random_flip = True
  c.train.batch_size = 64
  for key, value in options.items():
    c.data[key] = value
  t = time.perf_counter()
  pipeline = data.build(c)
  return time.perf_counter() - t, pipeline


def batch_rate(pipeline: data.Pipeline, steps: int = 200) -> float:
  t = time.perf_counter()
  for step in range(steps):
    pipeline.train_batch(step)
  return steps * 64 / (time.perf_counter() - t)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num", type=int, default=10_000, help="PNG files to generate")
  parser.add_argument("--steps", type=int, default=10, help="timed DCGAN steps (0: skip the DCGAN part)")
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()
  print(f"CPU cores: {os.cpu_count()} (shared machine: other processes may load it)")
  with tempfile.TemporaryDirectory() as tmp:
    folder, cache_dir = os.path.join(tmp, "pngs"), os.path.join(tmp, "cache")
    t = time.perf_counter()
    mean_bytes = write_pngs(folder, args.num)
    print(f"wrote {args.num} PNGs of 64x64x3 ({mean_bytes / 1024:.1f} KB each) in {time.perf_counter() - t:.1f} s")
    disk = {"cache_max_bytes": 0, "cache_dir": cache_dir}
    rows = [("first run, disk cache", *timed_build(folder, **disk)),
            ("cached run (reused)", *timed_build(folder, **disk)),
            ("in memory (no cache)", *timed_build(folder))]
    print(f"{'build of images:<folder>':28s} {'seconds':>8s} {'images/s':>9s}")
    for label, seconds, _ in rows:
      print(f"{label:28s} {seconds:8.2f} {args.num / seconds:9.0f}")
    print(f"batch reads (64, flip): memory {batch_rate(rows[2][2]):.0f} images/s, "
          f"memory map {batch_rate(rows[1][2]):.0f} images/s")
    print(f"peak memory after decoding: {peak_memory()}")
    del rows
    if args.steps:
      print(f"\nDCGAN (configs/gan.py) at 64x64 on the folder, batch 64, {args.steps} timed steps:")
      print(f"{'cache':12s} {'compile s':>9s} {'ms/step':>8s} {'input wait':>10s} {'peak memory':>14s}")
      for label, extra in (("memory", []), ("memory map", ["data.cache_max_bytes=0", f"data.cache_dir={cache_dir}"])):
        r = measure(os.path.join(HERE, "..", "..", "configs", "gan.py"), args.steps, args.warmup,
                    [f"data.name=images:{folder}", "data.random_flip=True", "train.batch_size=64", *extra])
        print(f"{label:12s} {r['compile_s']:9.1f} {r['ms_per_step']:8.0f} {100 * r['input_wait_share']:9.1f}% "
              f"{peak_memory():>14s}",
              flush=True)


if __name__ == "__main__":
  main()
