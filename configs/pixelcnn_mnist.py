"""Gated PixelCNN on binarized MNIST (tfds ``binarized_mnist``, 28x28x1, 2 levels); not run in CI.

Sized like the PixelCNN of van den Oord et al. (2016a, Table 4: 81.30 nats on binarized MNIST,
a 7x7 mask-A layer then 3x3 mask-B layers): 15 gated blocks of 64 features. The data must be
prepared once for tfds (see ``jaxgen.data.tfds_images``). ``--config.data.name=mnist`` models
the 256 gray levels instead (a 256-way softmax per pixel).

  python -m jaxgen.main --config=configs/pixelcnn_mnist.py --workdir=runs/pixelcnn_mnist
"""

from __future__ import annotations

import ml_collections

from configs import pixelcnn


def get_config() -> ml_collections.ConfigDict:
  c = pixelcnn.get_config()
  c.data.name = "binarized_mnist"
  c.model.features = 64
  c.model.num_blocks = 15
  c.model.first_kernel_size = 7
  c.model.head_features = 256
  c.optim.default.learning_rate = 3e-4
  c.train.steps = 200_000
  c.train.checkpoint_every = 5000
  c.eval.samples.every = 10_000
  c.sample.num = 16
  return c
