"""Gated PixelCNN on ``digits`` (8x8, 17 gray levels): trains in a few minutes on 2 CPU cores.

  python -m jaxgen.main --config=configs/pixelcnn.py --workdir=runs/pixelcnn
  python -m jaxgen.main --config=configs/pixelcnn.py --workdir=runs/pixelcnn --mode=sample \
      --config.sample.temperature=0.8 --config.sample.top_p=0.95

``model.output="logistic_mixture"`` swaps the per-sub-pixel softmax for a discretized mixture of
``model.num_mixtures`` logistics; ``model.conditional=True`` conditions on the digit class
(``sample.label`` picks the class to draw, -1 draws classes uniformly).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[-1,1]"
  c.data.dequantize = False  # PixelCNN models the discrete levels

  c.model.family = "pixelcnn"
  c.model.features = 32  # per stack, a multiple of the image channels
  c.model.num_blocks = 4  # mask-B gated blocks after the mask-A block
  c.model.kernel_size = 3  # odd
  c.model.first_kernel_size = 5  # odd; the mask-A block's kernel
  c.model.head_features = 64
  c.model.output = "softmax"  # softmax | logistic_mixture
  c.model.num_mixtures = 5  # logistic_mixture only
  c.model.conditional = False  # class-conditional (needs labels)

  c.optim.default.learning_rate = 1e-3
  c.optim.default.grad_clip_norm = 1.0
  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.checkpoint_every = 500
  c.train.ema_decay = 0.999

  c.sample.num = 64
  c.sample.temperature = 1.0
  c.sample.top_k = 0  # 0 disables
  c.sample.top_p = 1.0  # 1 disables
  c.sample.label = -1  # conditional models: the class to draw (-1 = uniform)
  return c
