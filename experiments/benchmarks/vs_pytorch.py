"""jaxgen's training step against its PyTorch equivalent, timed in the same run (issue 16).

  pip install -e ".[bench]"          # PyTorch (CPU), only for this benchmark
  python experiments/benchmarks/vs_pytorch.py [--steps=5] [--rounds=2]

DCGAN at 64x64x3 (Radford et al. 2016; the PyTorch reference is pytorch/examples' ``dcgan``:
``nz = 100``, ``ngf = ndf = 64``, batch 64, BCE, Adam(2e-4, b1 = 0.5), one D and one G step,
6.3M parameters) against jaxgen's ``gan`` family through its trainer's compiled step on a 64x64x3
``arrays:`` data set with ``model.width=32`` (6.4M parameters: jaxgen's DCGAN has a 3x3 first
discriminator layer and output layer, so the widths that match the parameter count differ).
Both use every core (PyTorch: ``torch.get_num_threads()``; XLA:CPU: its own thread pool). The two
are timed alternately, ``--rounds`` rounds of ``--steps`` steps after a warm-up each, and the best
round of each is kept; the ratio ``PyTorch ms / jaxgen ms`` is the figure (> 1: jaxgen is faster).
Peak RSS of the process is printed at the end (both frameworks live in it).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments.benchmarks import train_throughput  # noqa: E402

CONFIGS = train_throughput.CONFIGS


def torch_dcgan_step(batch: int):
  """pytorch/examples' DCGAN at 64x64x3: returns ``(step(), parameter count)``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn

  nz, ngf, ndf = 100, 64, 64
  gen = nn.Sequential(
      nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
      nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
  disc = nn.Sequential(
      nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
  opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
  bce = nn.BCELoss()
  real = torch.rand(batch, 3, 64, 64) * 2 - 1
  ones, zeros = torch.ones(batch), torch.zeros(batch)

  def step():
    disc.zero_grad()
    fake = gen(torch.randn(batch, nz, 1, 1))
    loss_d = bce(disc(real).view(-1), ones) + bce(disc(fake.detach()).view(-1), zeros)
    loss_d.backward()
    opt_d.step()
    gen.zero_grad()
    loss_g = bce(disc(fake).view(-1), ones)
    loss_g.backward()
    opt_g.step()
    return float(loss_g.detach())

  count = sum(p.numel() for p in [*gen.parameters(), *disc.parameters()])
  return step, count


def jaxgen_dcgan(batch: int, tmpdir: str) -> tuple[str, list[str]]:
  """``(config path, overrides)`` of jaxgen's GAN on 64x64x3 random images (an ``arrays:`` file)."""
  path = os.path.join(tmpdir, "images64.npz")
  rng = np.random.default_rng(0)
  np.savez(path, x=rng.integers(0, 256, (4 * batch, 64, 64, 3), dtype=np.uint8))
  return os.path.join(CONFIGS, "gan.py"), [
      f"data.name=arrays:{path}", "model.width=32", "model.latent_dim=100", f"train.batch_size={batch}",
      "train.progress_bar=False", "eval.metrics=heldout"]


def time_torch(step, steps: int) -> float:
  step()  # warm-up
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
  parser.add_argument("--batch", type=int, default=64)
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel

  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  step, torch_params = torch_dcgan_step(args.batch)
  times = {"torch": [], "jaxgen": []}
  with tempfile.TemporaryDirectory() as tmpdir:
    config, overrides = jaxgen_dcgan(args.batch, tmpdir)
    for _ in range(args.rounds):
      times["torch"].append(time_torch(step, args.steps))
      times["jaxgen"].append(train_throughput.measure(config, args.steps, 1, overrides)["ms_per_step"])
      print(f"round: torch {times['torch'][-1]:.0f} ms, jaxgen {times['jaxgen'][-1]:.0f} ms", flush=True)
  torch_ms, jax_ms = min(times["torch"]), min(times["jaxgen"])
  print(f"{'model':24s} {'PyTorch ms':>10s} {'jaxgen ms':>10s} {'ratio':>6s}")
  print(f"{'DCGAN 64x64x3 b' + str(args.batch):24s} {torch_ms:10.0f} {jax_ms:10.0f} {torch_ms / jax_ms:5.2f}x"
        f"   (PyTorch {torch_params / 1e6:.2f}M params)")
  print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
  main()
