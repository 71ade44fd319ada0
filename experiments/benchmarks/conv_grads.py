"""One convolution's forward pass, input gradient and kernel gradient: XLA:CPU against PyTorch.

  pip install -e ".[bench]"
  python experiments/benchmarks/conv_grads.py [--batch=4] [--rounds=2]

  python experiments/benchmarks/conv_grads.py --layers=dcgan --batch=64   # the 64x64 DCGAN's layers

``--layers=families`` (default): the largest convolutions of the conv families at 32x32x3 (issue 16): PixelCNN's
gated 5x5 convolution of ``configs/pixelcnn_cifar10.py`` (126 -> 252 channels at 32x32) and the
DDPM U-Net's 3x3 256 -> 256 at 16x16 (``configs/ddpm_cifar10.py``), stride 1, SAME padding.
``--layers=dcgan``: every convolution of ``gan`` at 64x64x3 with ``model.width=32`` (the model
``vs_pytorch.py`` times): the discriminator's 3x3 input layer and 4x4 stride-2 convolutions, the
generator's 4x4 stride-2 transposed convolutions (``jaxgen.nn.conv_transpose.ConvTranspose``, the
sub-pixel form, against PyTorch's ``conv_transpose2d``) and its 3x3 output layer. Then, for the
DCGAN, each kernel gradient's contraction over ``N = batch x H x W`` as a plain matmul, XLA:CPU's
dot against numpy's BLAS: the reason its kernel gradients are slow. Each
of the three passes is timed on its own: ``lax.conv_general_dilated`` jitted, and ``jax.vjp`` of it with
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

from jaxgen.nn.conv_transpose import ConvTranspose
from jaxgen.timing import peak_memory

PASSES = ("forward", "input grad", "kernel grad")  # what every layer times in both frameworks
#: --layers -> ((name, input side, input channels, output channels, kernel side, kind), ...); kind:
#: "conv" (stride 1, SAME), "strided" (stride 2, SAME), "transposed" (stride 2, SAME: side doubles).
LAYERS = {
    "families": (("pixelcnn 5x5", 32, 126, 252, 5, "conv"), ("ddpm unet 3x3", 16, 256, 256, 3, "conv")),
    "dcgan": (("D 3x3 3->32 @64", 64, 3, 32, 3, "conv"), ("D 4x4/2 32->64 @64", 64, 32, 64, 4, "strided"),
              ("D 4x4/2 64->128 @32", 32, 64, 128, 4, "strided"),
              ("D 4x4/2 128->256 @16", 16, 128, 256, 4, "strided"),
              ("D 4x4/2 256->512 @8", 8, 256, 512, 4, "strided"),
              ("G 4x4/2T 512->256 @4", 4, 512, 256, 4, "transposed"),
              ("G 4x4/2T 256->128 @8", 8, 256, 128, 4, "transposed"),
              ("G 4x4/2T 128->64 @16", 16, 128, 64, 4, "transposed"),
              ("G 4x4/2T 64->32 @32", 32, 64, 32, 4, "transposed"), ("G 3x3 32->3 @64", 64, 32, 3, 3, "conv")),
}


def cpu_ms(fn, repeats: int = 3) -> float:
  """Best process CPU milliseconds of ``fn()`` over ``repeats`` calls after one untimed call."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.process_time()
    fn()
    best = min(best, time.process_time() - start)
  return 1e3 * best


def calls(batch: int, side: int, cin: int, cout: int, k: int, kind: str) -> dict:
  """``{"<framework> <pass>": fn}`` of both frameworks on the same arrays."""
  import torch  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  stride = 1 if kind == "conv" else 2
  out_side = side * 2 if kind == "transposed" else side // stride
  x = rng.standard_normal((batch, side, side, cin)).astype(np.float32)
  w = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
  g = np.ones((batch, out_side, out_side, cout), np.float32)

  def conv(x, w):
    if kind == "transposed":
      return ConvTranspose(cout, (k, k), (2, 2)).apply({"params": {"kernel": w, "bias": jnp.zeros(cout)}}, x)
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def kernel_grad_per_tap(x, g):
    """The kernel gradient as ``k * k`` matmuls, one per tap ``(i, j)``: the input shifted by the
    tap, ``[Cin, N H W]``, against ``g [N H W, Cout]`` (stride 1, SAME padding)."""
    p, g2 = k // 2, g.reshape(-1, cout)
    xp = jnp.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    return jnp.stack([jnp.stack([xp[:, i:i + side, j:j + side, :].reshape(-1, cin).T @ g2 for j in range(k)])
                      for i in range(k)])

  fwd = jax.jit(conv)
  d_x = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  d_w = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
  # PyTorch's weights: [out, in, kh, kw] for a convolution, [in, out, kh, kw] for a transposed one;
  # a transposed convolution's kernel is flipped relative to the correlation XLA's lhs-dilated form applies.
  wt = torch.tensor(w).permute(2, 3, 0, 1).flip(2, 3) if kind == "transposed" else torch.tensor(w).permute(3, 2, 0, 1)
  wt = wt.contiguous()
  gt = torch.tensor(g).permute(0, 3, 1, 2).contiguous()
  pad = (k // 2, k // 2) if kind == "conv" else (1, 1)  # SAME at stride 2 with k = 4: one row each side
  torch_conv = torch.nn.functional.conv_transpose2d if kind == "transposed" else torch.nn.functional.conv2d
  np.testing.assert_allclose(torch_conv(xt, wt, stride=stride, padding=pad).permute(0, 2, 3, 1).numpy(),
                             fwd(x, w), rtol=2e-3, atol=2e-3)  # the same function in both frameworks

  def torch_backward(mask):
    return lambda: torch.ops.aten.convolution_backward(
        gt, xt, wt, None, (stride, stride), pad, (1, 1), kind == "transposed", (0, 0), 1, mask)

  fns = {"jax forward": lambda: fwd(x, w).block_until_ready(),
         "torch forward": lambda: torch_conv(xt, wt, stride=stride, padding=pad),
         "jax input grad": lambda: d_x(x, w, g).block_until_ready(),
         "torch input grad": torch_backward((True, False, False)),
         "jax kernel grad": lambda: d_w(x, w, g).block_until_ready(),
         "torch kernel grad": torch_backward((False, True, False))}
  if kind == "conv":
    d_w_per_tap = jax.jit(kernel_grad_per_tap)
    g_check = rng.standard_normal(g.shape).astype(np.float32)
    reference = d_w(x, w, g_check)  # sums over N H W terms: a tolerance on the scale of the largest
    np.testing.assert_allclose(d_w_per_tap(x, g_check), reference, rtol=2e-3, atol=1e-4 * float(jnp.abs(reference).max()))
    fns["jax kernel grad per tap"] = lambda: d_w_per_tap(x, g).block_until_ready()
  return fns


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--layers", choices=sorted(LAYERS), default="families")
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(1)
  print(f"batch {args.batch}; CPU ms per call (best of rounds); PyTorch {torch.__version__} on 1 thread")
  print(f"{'layer':22s} {'pass':19s} {'XLA:CPU':>8s} {'PyTorch':>8s} {'ratio':>6s} {'peak memory':>14s}")
  jax_totals, torch_totals = [], []  # per layer: {pass: best CPU ms}
  for name, side, cin, cout, k, kind in LAYERS[args.layers]:
    fns = calls(args.batch, side, cin, cout, k, kind)
    best = {label: float("inf") for label in fns}
    with torch.no_grad():
      for _ in range(args.rounds):  # alternating: the machine's load drifts
        for label, fn in fns.items():
          best[label] = min(best[label], cpu_ms(fn))
    jax_totals.append({part: best[f"jax {part}"] for part in PASSES})
    torch_totals.append({part: best[f"torch {part}"] for part in PASSES})
    for part in [p for p in (*PASSES, "kernel grad per tap") if f"jax {p}" in fns]:
      jax_ms, torch_ms = best[f"jax {part}"], best[f"torch {part.removesuffix(' per tap')}"]
      print(f"{name:22s} {part:19s} {jax_ms:8.1f} {torch_ms:8.1f} {torch_ms / jax_ms:5.2f}x {peak_memory():>14s}",
            flush=True)
  for part in PASSES:  # every layer has these three ("per tap" only the stride-1 ones)
    jax_ms, torch_ms = (sum(t[part] for t in totals) for totals in (jax_totals, torch_totals))
    print(f"{'all layers':22s} {part:19s} {jax_ms:8.1f} {torch_ms:8.1f} {torch_ms / jax_ms:5.2f}x")
  print("ratio = PyTorch CPU ms / XLA:CPU CPU ms (> 1: XLA is faster)")
  if args.layers == "dcgan":
    contractions(args.batch, args.rounds)


def contractions(batch: int, rounds: int) -> None:
  """A kernel gradient's contraction over ``N = batch x H x W`` as a plain matmul ``x^T g`` (``x
  [N, Cin]``, ``g [N, Cout]``) at the DCGAN's shapes: XLA:CPU's dot against numpy's BLAS."""
  print("kernel-gradient contractions x^T g, x [N, Cin], g [N, Cout]; CPU ms per call (best of rounds)")
  print(f"{'N':>8s} {'Cin':>5s} {'Cout':>5s} {'where':34s} {'XLA:CPU':>8s} {'BLAS':>8s} {'ratio':>6s}")
  rng = np.random.default_rng(0)
  shapes = ((batch * 64 * 64, 3, 32, "D 3x3 @64, one tap"), (batch * 32 * 32, 64, 32, "G 64->32 @32, one tap"),
            (batch * 16 * 16, 128, 64, "G 128->64 @16, one tap"),
            (batch * 32 * 32, 512, 64, "D 4x4/2 32->64 @64, all 16 taps"))
  dot = jax.jit(lambda x, g: x.T @ g)
  for n, cin, cout, where in shapes:
    x = rng.standard_normal((n, cin)).astype(np.float32)
    g = rng.standard_normal((n, cout)).astype(np.float32)
    xla_ms, blas_ms = float("inf"), float("inf")
    for _ in range(rounds):
      xla_ms = min(xla_ms, cpu_ms(lambda: dot(x, g).block_until_ready()))
      blas_ms = min(blas_ms, cpu_ms(lambda: x.T @ g))
    print(f"{n:8d} {cin:5d} {cout:5d} {where:34s} {xla_ms:8.1f} {blas_ms:8.1f} {blas_ms / xla_ms:5.2f}x", flush=True)


if __name__ == "__main__":
  main()
