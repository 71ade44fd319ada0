"""Forward + backward time of a stride-2 transposed convolution: flax's ``nn.ConvTranspose`` against
jaxgen's sub-pixel form (:mod:`jaxgen.nn.conv_transpose`, the same function and parameters).

  python experiments/benchmarks/conv_transpose.py [--batch=64] [--repeats=1]

The layers are the DCGAN generator's upsampling stages at 64x64 output with ``model.width=32``
(16 -> 32 and 32 -> 64 pixels); the time is the fastest of two rounds (alternating forms) of the median of ``--repeats`` compiled calls of the
gradient of ``sum(y ** 2)`` with respect to the kernel, bias and input, both forms timed in the
same run, alternating. Prints milliseconds, the speedup, and the largest relative difference of
the outputs, plus the peak memory (``jaxgen.timing.peak_memory``).
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import conv_transpose
from jaxgen.timing import median_seconds, peak_memory

#: (input side, input channels, output channels) of the DCGAN width-32 generator at 64x64.
LAYERS = ((16, 128, 64), (32, 64, 32))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  print(f"{'layer':28s} {'flax ms':>10s} {'sub-pixel ms':>13s} {'speedup':>8s} {'max rel diff':>13s} "
        f"{'peak memory':>14s}")
  for side, cin, cout in LAYERS:
    x = jax.random.normal(jax.random.key(0), (args.batch, side, side, cin))
    forms = {name: layer(cout, (4, 4), strides=(2, 2), padding="SAME")
             for name, layer in (("flax", nn.ConvTranspose), ("ours", conv_transpose.ConvTranspose))}
    params = forms["flax"].init(jax.random.key(1), x)
    grads = {name: jax.jit(jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x) ** 2), argnums=(0, 1)))
             for name, m in forms.items()}
    times = {name: [] for name in forms}
    for _ in range(2):  # two rounds, alternating: the machine's load drifts
      for name, fn in grads.items():
        times[name].append(median_seconds(fn, params, x, repeats=args.repeats))
    flax_ms, ours_ms = (1e3 * min(times[n]) for n in ("flax", "ours"))
    ys = [forms[n].apply(params, x) for n in ("flax", "ours")]
    diff = float(jnp.max(jnp.abs(ys[0] - ys[1])) / jnp.max(jnp.abs(ys[0])))
    name = f"{side}->{2 * side}, {cin}->{cout} ch"
    print(f"{name:28s} {flax_ms:10.1f} {ours_ms:13.1f} {flax_ms / ours_ms:7.1f}x {diff:13.2e} {peak_memory():>14s}",
          flush=True)


if __name__ == "__main__":
  main()
