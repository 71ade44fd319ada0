"""One convolution's forward pass, input gradient and kernel gradient: XLA:CPU against PyTorch.

  pip install -e ".[bench]"
  python experiments/benchmarks/conv_grads.py [--batch=4] [--rounds=2]

The layers are the largest convolutions of the conv families at 32x32x3 (issue 16): PixelCNN's
gated 5x5 convolution of ``configs/pixelcnn_cifar10.py`` (126 -> 252 channels at 32x32) and the
DDPM U-Net's 3x3 256 -> 256 at 16x16 (``configs/ddpm_cifar10.py``), stride 1, SAME padding. Each
of the three is timed on its own: ``lax.conv_general_dilated`` jitted, and ``jax.vjp`` of it with
respect to the input or the kernel; PyTorch's ``conv2d`` and ``aten.convolution_backward`` with
one output mask each, on 1 thread. The figure is the process CPU time per call (every thread's,
best of 3 per round, ``--rounds`` alternating rounds): on a machine shared with other jobs it
varies less than the wall time. A kernel gradient has the forward pass's FLOPs. "kernel grad
per tap" computes the same gradient as ``k * k`` matmuls, one per kernel tap, of the shifted input
against the output gradient (checked against ``jax.vjp`` first): XLA:CPU's matmul path instead of
its weight-gradient convolution. Prints the peak
memory (``jaxgen.timing.peak_memory``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.timing import peak_memory

#: (name, spatial side, input channels, output channels, kernel side).
LAYERS = (("pixelcnn 5x5", 32, 126, 252, 5), ("ddpm unet 3x3", 16, 256, 256, 3))


def cpu_ms(fn, repeats: int = 3) -> float:
  """Best process CPU milliseconds of ``fn()`` over ``repeats`` calls after one untimed call."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.process_time()
    fn()
    best = min(best, time.process_time() - start)
  return 1e3 * best


def calls(batch: int, side: int, cin: int, cout: int, k: int) -> dict:
  """``{"<framework> <pass>": fn}`` of both frameworks on the same arrays."""
  import torch  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, side, side, cin)).astype(np.float32)
  w = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
  g = np.ones((batch, side, side, cout), np.float32)

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def kernel_grad_per_tap(x, g):
    """The kernel gradient as ``k * k`` matmuls, one per tap ``(i, j)``: the input shifted by the
    tap, ``[Cin, N H W]``, against ``g [N H W, Cout]`` (stride 1, SAME padding)."""
    p, g2 = k // 2, g.reshape(-1, cout)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return jnp.stack([jnp.stack([xp[:, i:i + side, j:j + side, :].reshape(-1, cin).T @ g2 for j in range(k)])
                      for i in range(k)])

  fwd = jax.jit(conv)
  d_x = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  d_w = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  d_w_per_tap = jax.jit(kernel_grad_per_tap)
  g_check = rng.standard_normal(g.shape).astype(np.float32)
  np.testing.assert_allclose(d_w_per_tap(x, g_check), d_w(x, w, g_check), rtol=2e-3, atol=2e-3)
  xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
  wt = torch.tensor(w).permute(3, 2, 0, 1).contiguous()
  gt = torch.tensor(g).permute(0, 3, 1, 2).contiguous()
  pad = (k // 2, k // 2)

  def torch_backward(mask):
    return lambda: torch.ops.aten.convolution_backward(gt, xt, wt, None, (1, 1), pad, (1, 1), False, (0, 0), 1, mask)

  return {"jax forward": lambda: fwd(x, w).block_until_ready(),
          "torch forward": lambda: torch.nn.functional.conv2d(xt, wt, padding=pad),
          "jax input grad": lambda: d_x(x, w, g).block_until_ready(),
          "torch input grad": torch_backward((True, False, False)),
          "jax kernel grad": lambda: d_w(x, w, g).block_until_ready(),
          "torch kernel grad": torch_backward((False, True, False)),
          "jax kernel grad per tap": lambda: d_w_per_tap(x, g).block_until_ready()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(1)
  print(f"batch {args.batch}; CPU ms per call (best of rounds); PyTorch {torch.__version__} on 1 thread")
  print(f"{'layer':16s} {'pass':19s} {'XLA:CPU':>8s} {'PyTorch':>8s} {'ratio':>6s} {'peak memory':>14s}")
  for name, side, cin, cout, k in LAYERS:
    fns = calls(args.batch, side, cin, cout, k)
    best = {label: float("inf") for label in fns}
    with torch.no_grad():
      for _ in range(args.rounds):  # alternating: the machine's load drifts
        for label, fn in fns.items():
          best[label] = min(best[label], cpu_ms(fn))
    for part in ("forward", "input grad", "kernel grad", "kernel grad per tap"):
      jax_ms, torch_ms = best[f"jax {part}"], best[f"torch {part.removesuffix(' per tap')}"]
      print(f"{name:16s} {part:19s} {jax_ms:8.1f} {torch_ms:8.1f} {torch_ms / jax_ms:5.2f}x {peak_memory():>14s}",
            flush=True)
  print("ratio = PyTorch CPU ms / XLA:CPU CPU ms (> 1: XLA is faster)")


if __name__ == "__main__":
  main()
