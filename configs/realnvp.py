"""RealNVP (Dinh et al. 2017) on the embedded 8x8 digits, uniformly dequantized; a few CPU minutes.

  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp
  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp --mode=eval    # bits/dim
  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp --mode=sample \
      --config.sample.temperature=0.7

Scales on 8x8x1: checkerboard couplings at 8x8x1, squeeze to 4x4x4, channel couplings, factor out
2 channels; 4x4x2 likewise down to 2x2x8, factor out 4; the last scale 2x2x4 (checkerboard).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[-1,1]"
  c.data.dequantize = True  # a density on continuous data; bits/dim bound the discrete NLL

  c.model.family = "realnvp"
  c.model.num_scales = 3
  c.model.couplings = 3  # per half-scale; the last scale has couplings + 1
  c.model.hidden = 64  # conditioner channels
  c.model.depth = 2  # conditioner ReLU conv layers (3x3 then 1x1)
  c.model.logit_alpha = 0.05  # logit pre-transform (0 = off); its log-det is part of the NLL

  c.optim.default = config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=100.0)

  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  return c
