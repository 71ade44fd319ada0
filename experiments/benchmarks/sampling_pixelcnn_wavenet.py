"""Generation speed of WaveNet (Fast-WaveNet queues vs naive recompute), PixelCNN and PixelRNN (images/s).

* WaveNet: configs/wavenet.py's model (32 residual / 32 dilation / 64 skip channels, dilations
  1..128, receptive field 257) conditioned on a label, generating ``length`` samples
  (4096; 1024 with ``--quick``) for a batch of one clip. Both samplers are one compiled
  ``lax.scan`` with the same key and controls and draw the same tokens (asserted); the naive one
  recomputes the 256-position window at every step. Target: cached >= 10x faster than naive.
* PixelCNN and PixelRNN: configs/pixelcnn.py's and configs/pixelrnn.py's models on digits (8x8x1,
  17 levels): 64 sequential network evaluations per batch of images in one compiled loop.

Random weights (speed does not depend on them). Times are the median of ``repeats`` calls after
one compiling call. ``python experiments/benchmarks/sampling_pixelcnn_wavenet.py [--quick]``
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import config_defaults, families
from jaxgen.data.spec import DataSpec
from jaxgen.timing import median_seconds, peak_memory

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _wavenet(length: int, repeats: int) -> dict:
  config = config_defaults.load(str(CONFIGS / "wavenet.py"))
  spec = DataSpec("audio/tones", "audio", (length,), levels=256, num_classes=4, sample_rate=8000)
  family = families.build(config, spec)
  params, _ = jax.jit(family.init)(jax.random.key(0), {"x": jnp.zeros((1, length), jnp.int32),
                                                        "label": jnp.zeros((1,), jnp.int32)})
  labels = jnp.array([1], jnp.int32)
  fns = {naive: jax.jit(lambda p, k, naive=naive: family.generate(p, k, labels, 1, length, naive=naive))
         for naive in (False, True)}
  key = jax.random.key(1)
  assert (np.asarray(fns[False](params, key)) == np.asarray(fns[True](params, key))).all()
  seconds = {naive: median_seconds(fn, params, key, repeats=repeats) for naive, fn in fns.items()}
  return {
      "name": f"wavenet R={family.net.receptive_field}, {length} samples, batch 1",
      "samples_per_s_cached": length / seconds[False],
      "samples_per_s_naive": length / seconds[True],
      "speedup": seconds[True] / seconds[False],
      "peak_memory": peak_memory(),
  }


def _pixel_model(name: str, batch: int, repeats: int) -> dict:
  """Images/s of configs/<name>.py (pixelcnn | pixelrnn) on digits."""
  config = config_defaults.load(str(CONFIGS / f"{name}.py"))
  spec = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(-1.0, 1.0), num_classes=10)
  family = families.build(config, spec)
  params, state = jax.jit(family.init)(jax.random.key(0), {"x": jnp.zeros((1, 8, 8, 1))})
  fn = jax.jit(lambda p, k: family.sample(p, state, k, batch))
  seconds = median_seconds(fn, params, jax.random.key(1), repeats=repeats)
  return {
      "name": f"{name} digits 8x8x1 (64 steps), batch {batch}",
      "images_per_s": batch / seconds,
      "seconds_per_batch": seconds,
      "peak_memory": peak_memory(),
  }


def run(quick: bool = False) -> list[dict]:
  """Rows: WaveNet ``{name, samples_per_s_cached, samples_per_s_naive, speedup}``, PixelCNN and
  PixelRNN ``{name, images_per_s, seconds_per_batch}``; each with ``peak_memory`` (``jaxgen.timing``)."""
  repeats = 1 if quick else 3
  return [_wavenet(1024 if quick else 4096, repeats),
          *(_pixel_model(name, 16 if quick else 64, repeats) for name in ("pixelcnn", "pixelrnn"))]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  for row in run(parser.parse_args().quick):
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
  main()
