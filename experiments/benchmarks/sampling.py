"""Sampling speed of every family, one section per family file, in one run.

  python experiments/benchmarks/sampling.py [--quick] [--only transformer,diffusion]

Sections (each also runs alone as a script): transformer (KV-cache vs naive, 256 tokens),
pixelcnn_wavenet (WaveNet queue cache vs naive at 4096 samples, PixelCNN images/s),
diffusion (DDPM 1000 steps vs DDIM 50 / 100 steps per batch), flows (samples/s), families (GAN
variants, latent-variable and energy-based families: samples/s).
"""

from __future__ import annotations

import argparse
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ["transformer", "pixelcnn_wavenet", "diffusion", "flows", "families"]


def load(section: str):
  path = os.path.join(HERE, f"sampling_{section}.py")
  spec = importlib.util.spec_from_file_location(f"sampling_{section}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
  parser.add_argument("--only", default=",".join(SECTIONS))
  args = parser.parse_args()
  for section in args.only.split(","):
    if not os.path.exists(os.path.join(HERE, f"sampling_{section}.py")):
      print(f"== {section}: no benchmark file")
      continue
    print(f"== {section}", flush=True)
    for row in load(section).run(quick=args.quick):
      print("  " + "  ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
  main()
