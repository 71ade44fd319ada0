"""DDPM on the embedded ``digits`` (8x8, 17 grey levels): a tiny U-Net that trains in minutes on CPU.

  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm
  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm --mode=sample \
      --config.sample.sampler=dpm_solver --config.sample.steps=20
  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm --mode=eval

The model, the samplers (``sample.sampler``: ddpm | ddim | dpm_solver | heun | euler) and the bound
are the ddpm family's defaults (``jaxgen/families/ddpm.py``). Variants import ``get_config`` and
change a few fields (``ddpm_toy2d``, ``ddpm_mnist``, ``ddpm_cifar10``).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("ddpm")

  c.optim.default.learning_rate = 2e-3
  c.optim.default.schedule = "warmup_cosine"
  c.optim.default.warmup_steps = 100
  c.optim.default.grad_clip_norm = 1.0

  c.train.steps = 2000
  c.train.ema_decay = 0.995
  return c
