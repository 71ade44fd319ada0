"""DDPM on the embedded ``digits`` (8x8, 17 grey levels): a tiny U-Net that trains in minutes on CPU.

  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm
  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm --mode=sample \
      --config.sample.sampler=ddpm
  python -m jaxgen.main --config=configs/ddpm.py --workdir=runs/ddpm --mode=eval

Variants import ``get_config`` and change a few fields (``ddpm_toy2d``, ``ddpm_mnist``,
``ddpm_cifar10``).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[-1,1]"  # the U-Net, clipping and the discretized decoder assume [-1, 1]

  c.model.family = "ddpm"
  c.model.network = "unet"  # unet (images) | mlp (points)
  c.model.num_timesteps = 1000
  c.model.schedule = "linear"  # linear | cosine
  c.model.prediction = "eps"  # eps | v
  c.model.variance = "small"  # reverse-process variance: small (posterior) | large (beta)
  c.model.clip_denoised = True  # clip the predicted x_0 to [-1, 1] (images)
  c.model.class_conditional = False
  c.model.label_dropout = 0.1  # classifier-free guidance: P(label -> null class) in training

  c.model.unet = ml_collections.ConfigDict()
  c.model.unet.channels = 32
  c.model.unet.ch_mult = (1, 2)  # 8x8, 4x4
  c.model.unet.num_res_blocks = 1
  c.model.unet.attn_resolutions = (4,)
  c.model.unet.num_heads = 1
  c.model.unet.dropout = 0.0

  c.model.mlp = ml_collections.ConfigDict()
  c.model.mlp.hidden = 128
  c.model.mlp.num_blocks = 3

  c.optim.default.learning_rate = 2e-3
  c.optim.default.schedule = "warmup_cosine"
  c.optim.default.warmup_steps = 100
  c.optim.default.grad_clip_norm = 1.0

  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.ema_decay = 0.995

  c.sample.sampler = "ddim"  # ddpm (ancestral, all T steps) | ddim
  c.sample.steps = 100  # ddim
  c.sample.eta = 0.0  # ddim: 0 deterministic, 1 = ancestral noise level
  c.sample.guidance_scale = 0.0  # classifier-free guidance w (conditional models)
  c.sample.label = -1  # conditional models: -1 cycles through the classes

  # The bound: 0 = all T terms (~10x slower); K > 0 = a stratified, unbiased K-timestep estimate.
  c.eval.bound_timesteps = 100
  return c
