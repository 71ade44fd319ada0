"""Gated PixelCNN on CIFAR-10 (tfds ``cifar10``, 32x32x3, 256 levels); not run in CI.

Sized like the Gated PixelCNN of van den Oord et al. (2016b: 3.03 bits/dim on CIFAR-10 with 15
layers): a 7x7 mask-A block, 15 gated 5x5 blocks of 126 features per stack (a multiple of the 3
channel groups), a 1020-feature output head (the paper uses 1024), a 256-way softmax per
sub-pixel in R, G, B order. ``--config.model.output=logistic_mixture`` (10 mixtures) is the
PixelCNN++-style alternative. Sampling 3072 sub-pixels recomputes the network per step.

  python -m jaxgen.main --config=configs/pixelcnn_cifar10.py --workdir=runs/pixelcnn_cifar10
"""

from __future__ import annotations

import ml_collections

from configs import pixelcnn


def get_config() -> ml_collections.ConfigDict:
  c = pixelcnn.get_config()
  c.data.name = "cifar10"
  c.model.features = 126
  c.model.num_blocks = 15
  c.model.kernel_size = 5
  c.model.first_kernel_size = 7
  c.model.head_features = 1020
  c.model.num_mixtures = 10
  c.optim.default.learning_rate = 3e-4
  c.train.steps = 300_000
  c.train.checkpoint_every = 5000
  c.eval.samples.every = 20_000
  c.sample.num = 16
  return c
