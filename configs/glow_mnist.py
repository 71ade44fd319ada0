"""Glow on MNIST (tensorflow-datasets), sized like Kingma & Dhariwal 2018 (1.05 bits/dim there).

Not run in CI (about a day of accelerator time). K = 32 steps per level, coupling networks of 512
channels, Adam at 1e-3 with warm-up. 28x28 halves only twice (28 -> 14 -> 7), so L = 2 here
instead of padding to 32x32 for L = 3.

  python -m jaxgen.main --config=configs/glow_mnist.py --workdir=runs/glow_mnist
"""

from __future__ import annotations

import ml_collections

from configs import glow


def get_config() -> ml_collections.ConfigDict:
  c = glow.get_config()
  c.data.name = "mnist"
  c.model.num_levels = 2  # 28 -> 14 -> 7: the most that halves evenly
  c.model.steps_per_level = 32
  c.model.hidden = 512
  c.optim.default.warmup_steps = 5000
  c.optim.default.end_learning_rate = 1e-3
  c.train.steps = 200_000
  c.train.checkpoint_every = 10_000
  c.eval.samples.every = 20_000
  c.eval.heldout.every = 20_000
  c.train.ema_decay = 0.9999
  c.eval.batch_size = 500
  return c
