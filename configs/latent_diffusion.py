"""Latent diffusion on the embedded ``digits``: DDPM in the 16-d latent space of configs/vae.py's VAE.

  python -m jaxgen.main --config=configs/vae.py --workdir=runs/vae
  python -m jaxgen.main --config=configs/latent_diffusion.py --workdir=runs/latent_diffusion
Flow matching in the same latent space instead of DDPM:
  --config.model.diffusion=flow_matching

The data fields must be the autoencoder's (checked when it is loaded); the rest is the
latent_diffusion family's defaults (``jaxgen/families/latent_diffusion.py``).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("latent_diffusion")
  c.data.scale = "[0,1]"  # configs/vae.py's data
  c.data.binarize = "dynamic"
  c.model.autoencoder_workdir = "runs/vae"

  c.optim.default.learning_rate = 1e-3
  c.optim.default.schedule = "warmup_cosine"
  c.optim.default.warmup_steps = 100
  c.optim.default.grad_clip_norm = 1.0

  c.train.steps = 3000
  c.train.batch_size = 128
  c.train.ema_decay = 0.995
  return c
