"""Glow (Kingma & Dhariwal 2018) on the embedded 8x8 digits, uniformly dequantized; a few CPU minutes.

  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow
  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow --mode=eval    # bits/dim
  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow --mode=sample \
      --config.sample.temperature=0.7

Levels on 8x8x1: squeeze to 4x4x4, K steps (actnorm, 1x1 conv, coupling), factor out 2 channels;
squeeze 4x4x2 to 2x2x8, K steps. Actnorm is initialised from the first training batch.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[-1,1]"
  c.data.dequantize = True

  c.model.family = "glow"
  c.model.num_levels = 2  # L: each level squeezes once
  c.model.steps_per_level = 8  # K
  c.model.hidden = 64  # conditioner channels
  c.model.depth = 2  # conditioner ReLU conv layers (3x3 then 1x1)
  c.model.logit_alpha = 0.0  # Glow models the scaled pixels directly

  c.optim.default = config_defaults.optimizer(learning_rate=1e-3, warmup_steps=200,
                                              schedule="warmup_cosine", end_learning_rate=1e-4,
                                              grad_clip_norm=100.0)

  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  return c
