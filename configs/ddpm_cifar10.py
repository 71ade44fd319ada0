"""DDPM on CIFAR-10 (tensorflow-datasets), sized like Ho et al. 2020 (35.7M parameters).

Not run in CI: 800k steps of batch 128 take days on one accelerator (Ho et al.: 10.8 h per 100k
steps on a TPU v3-8). Reported there: FID 3.17, IS 9.46, NLL <= 3.75 bits/dim (L_simple).

  python -m jaxgen.main --config=configs/ddpm_cifar10.py --workdir=runs/ddpm_cifar10
"""

from __future__ import annotations

import ml_collections

from configs import ddpm


def get_config() -> ml_collections.ConfigDict:
  c = ddpm.get_config()
  c.data.name = "cifar10"
  c.model.unet.channels = 128
  c.model.unet.ch_mult = (1, 2, 2, 2)  # 32, 16, 8, 4
  c.model.unet.num_res_blocks = 2
  c.model.unet.attn_resolutions = (16,)
  c.model.unet.dropout = 0.1
  c.optim.default.learning_rate = 2e-4
  c.optim.default.warmup_steps = 5000
  c.optim.default.end_learning_rate = 2e-4  # Ho et al.: constant after warm-up
  c.train.steps = 800_000
  c.train.batch_size = 128
  c.train.checkpoint_every = 10_000
  c.eval.samples.every = 50_000
  c.train.ema_decay = 0.9999
  c.eval.batch_size = 64
  c.eval.bound_timesteps = 0  # the full bound, as reported by Ho et al.
  c.eval.num_samples = 50_000
  c.eval.metrics = ("heldout", "samples", "fid")
  return c
