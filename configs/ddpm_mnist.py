"""DDPM on MNIST (tensorflow-datasets, 28x28x1), a CIFAR-10-style U-Net scaled to 28x28.

Not run in CI (hours on one accelerator). Levels 256, so the decoder bins have width 2/255.

  python -m jaxgen.main --config=configs/ddpm_mnist.py --workdir=runs/ddpm_mnist
"""

from __future__ import annotations

import ml_collections

from configs import ddpm


def get_config() -> ml_collections.ConfigDict:
  c = ddpm.get_config()
  c.data.name = "mnist"
  c.model.unet.channels = 64
  c.model.unet.ch_mult = (1, 2, 2)  # 28, 14, 7
  c.model.unet.num_res_blocks = 2
  c.model.unet.attn_resolutions = (7,)
  c.model.unet.dropout = 0.1
  c.optim.default.learning_rate = 2e-4
  c.optim.default.warmup_steps = 5000
  c.optim.default.end_learning_rate = 2e-4
  c.train.steps = 100_000
  c.train.batch_size = 128
  c.train.checkpoint_every = 5_000
  c.eval.samples.every = 10_000
  c.train.ema_decay = 0.9999
  c.eval.batch_size = 64
  return c
