"""DDPM on 2-D points (``toy2d/*``) with a residual MLP denoiser; trains in about a minute on CPU.

  python -m jaxgen.main --config=configs/ddpm_toy2d.py --workdir=runs/ddpm_toy2d
"""

from __future__ import annotations

import ml_collections

from configs import ddpm


def get_config() -> ml_collections.ConfigDict:
  c = ddpm.get_config()
  c.data.name = "toy2d/moons"
  c.model.network = "mlp"
  c.model.num_timesteps = 200
  c.model.clip_denoised = False  # points are not confined to [-1, 1]
  c.optim.default.learning_rate = 1e-3
  c.train.steps = 5000
  c.train.batch_size = 256
  c.sample.num = 1000
  c.sample.steps = 50
  c.eval.bound_timesteps = 0  # all 200 terms: cheap for an MLP
  return c
