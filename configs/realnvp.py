"""RealNVP (Dinh et al. 2017) on the embedded 8x8 digits, uniformly dequantized; a few CPU minutes.

  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp
  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp --mode=eval    # bits/dim
  python -m jaxgen.main --config=configs/realnvp.py --workdir=runs/realnvp --mode=sample \
      --config.sample.temperature=0.7

The realnvp family's defaults (``jaxgen/families/flow.py``): 3 scales of 3 couplings per
half-scale. On 8x8x1: checkerboard couplings at 8x8x1, squeeze to 4x4x4, channel couplings,
factor out 2 channels; 4x4x2 likewise down to 2x2x8, factor out 4; the last scale 2x2x4
(checkerboard).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("realnvp")
  c.data.name = "digits"
  c.data.dequantize = True  # a density on continuous data; bits/dim bound the discrete NLL

  c.train.steps = 2000
  c.train.checkpoint_every = 1000
  c.eval.samples.every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  return c
