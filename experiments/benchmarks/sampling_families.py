"""Sampling speed of the families whose sampler is one network pass, a Gibbs chain or a two-stage
decode: the GAN variants, the latent-variable families and the energy-based ones.

Each row is one compiled ``family.sample`` call of ``num`` samples from ``configs/<name>.py`` on its
embedded data, weights initialised on the first training batch (speed does not depend on them);
``chain`` says what one sample costs (Gibbs steps of ``rbm`` / ``dbn``, PixelCNN steps of the
``vqvae_prior`` over the code grid, diffusion steps of ``latent_diffusion``; a single pass
otherwise). Two-stage configs get a one-step stage-1 run in a temporary directory
(``train_throughput.provide_stage_one``). Times are the median of ``repeats`` calls after
compilation. :func:`measure` also serves ``sampling_flows.py``.

python experiments/benchmarks/sampling_families.py [--quick] [--only gan,rbm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Iterator

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]
import train_throughput  # noqa: E402

from jaxgen import config_defaults, families  # noqa: E402
from jaxgen import data as data_lib  # noqa: E402
from jaxgen.timing import median_seconds, peak_memory  # noqa: E402

CONFIGS = ("gan", "sngan", "wgan", "vae_conv", "vqvae", "vqvae_prior", "aae", "avb", "latent_diffusion", "rbm",
           "dbn")


def _chain(config) -> str:
  """What one sample costs, from the config's sampling controls."""
  s = config.sample
  if "gibbs_steps" in s:
    return f"{s.gibbs_steps} Gibbs steps"
  if config.model.family == "vqvae_prior":
    return "PixelCNN over the code grid + decode"
  if "sampler" in s:
    return f"{s.sampler} {s.steps} steps + decode"
  return "one pass"


def measure(name: str, num: int, repeats: int) -> dict:
  """``{name, data, num, chain, seconds_per_batch, samples_per_s, device, peak_memory}`` of
  ``configs/<name>.py`` (``peak_memory``: ``jaxgen.timing.peak_memory`` after the measurement)."""
  config = config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"))
  with tempfile.TemporaryDirectory() as tmp:
    train_throughput.provide_stage_one(config, tmp)
    data = data_lib.build(config)
    family = families.build(config, data.spec)
    params, state = jax.jit(family.init)(jax.random.key(0), data.train_batch(0))
    sample = jax.jit(lambda p, s, k: family.sample(p, s, k, num))
    seconds = median_seconds(sample, params, state, jax.random.key(1), repeats=repeats)
  return {"name": name, "data": data.spec.name, "num": num, "chain": _chain(config), "seconds_per_batch": seconds,
          "samples_per_s": num / seconds, "device": jax.devices()[0].device_kind, "peak_memory": peak_memory()}


def run(quick: bool = False, only: tuple[str, ...] = CONFIGS) -> Iterator[dict]:
  """One row per config (:func:`measure`), as it is measured: batches of 256 (64 with ``quick``)."""
  for name in only:
    yield measure(name, 64 if quick else 256, 1 if quick else 3)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a batch of 64 and one repeat")
  parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated config names")
  args = parser.parse_args()
  print(f"{'config':17s} {'data':8s} {'batch':>6s} {'s/batch':>9s} {'samples/s':>10s} {'peak memory':>14s}  chain")
  for row in run(args.quick, tuple(args.only.split(","))):
    print(f"{row['name']:17s} {row['data']:8s} {row['num']:6d} {row['seconds_per_batch']:9.3f} "
          f"{row['samples_per_s']:10.1f} {row['peak_memory']:>14s}  {row['chain']}", flush=True)


if __name__ == "__main__":
  main()
