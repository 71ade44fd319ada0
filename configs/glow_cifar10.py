"""Glow on CIFAR-10 (tensorflow-datasets), sized like Kingma & Dhariwal 2018 (3.35 bits/dim there).

Not run in CI (days of accelerator time). As in the paper: L = 3 levels of K = 32 steps, coupling
networks of 512 channels, affine coupling, Adam at 1e-3 with a linear warm-up. Differences: no
learned prior for the factored-out halves, and the coupling network has no actnorm inside. Each
level's steps run as one ``nn.scan`` (``model.scan_steps``: faster to compile and to run on a GPU).

  python -m jaxgen.main --config=configs/glow_cifar10.py --workdir=runs/glow_cifar10
"""

from __future__ import annotations

import ml_collections

from configs import glow


def get_config() -> ml_collections.ConfigDict:
  c = glow.get_config()
  c.data.name = "cifar10"
  c.model.num_levels = 3
  c.model.steps_per_level = 32
  c.model.hidden = 512
  # One nn.scan over each level's 32 steps: on an H100 it compiles in 6 s (unrolled, 22 s at K = 8
  # and minutes at 32) and steps faster (K = 8: 14.3 against 23.8 ms); docs/benchmarks.md.
  c.model.scan_steps = True
  c.optim.default.warmup_steps = 5000
  c.optim.default.end_learning_rate = 1e-3  # constant after warm-up
  c.train.steps = 1_000_000
  c.train.checkpoint_every = 10_000
  c.eval.samples.every = 20_000
  c.eval.heldout.every = 20_000
  c.train.ema_decay = 0.9999
  c.sample.temperature = 0.7  # the paper's samples use reduced temperature
  c.eval.batch_size = 500
  return c
