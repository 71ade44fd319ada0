"""Glow (Kingma & Dhariwal 2018) on the embedded 8x8 digits, uniformly dequantized; a few CPU minutes.

  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow
  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow --mode=eval    # bits/dim
  python -m jaxgen.main --config=configs/glow.py --workdir=runs/glow --mode=sample \
      --config.sample.temperature=0.7

The glow family's defaults (``jaxgen/families/flow.py``): L = 2 levels of K = 8 steps. On 8x8x1:
squeeze to 4x4x4, K steps (actnorm, 1x1 conv, coupling), factor out 2 channels; squeeze 4x4x2 to
2x2x8, K steps. Actnorm is initialised from the first training batch.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("glow")
  c.data.name = "digits"
  c.data.dequantize = True  # a density on continuous data; bits/dim bound the discrete NLL

  c.train.steps = 2000
  c.train.checkpoint_every = 1000
  c.eval.samples.every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  return c
