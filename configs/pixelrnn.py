"""PixelRNN (Diagonal BiLSTM) on ``digits`` (8x8, 17 gray levels), the same data, outputs and
steps as ``configs/pixelcnn.py`` so their bits/dim compare directly.

  python -m jaxgen.main --config=configs/pixelrnn.py --workdir=runs/pixelrnn
  python -m jaxgen.main --config=configs/pixelrnn.py --workdir=runs/pixelrnn --mode=sample \
      --config.sample.temperature=0.8 --config.sample.top_p=0.95

Row LSTM instead: --config.model.architecture=row_lstm. The network is the pixelrnn family's
defaults (``jaxgen/families/pixelrnn.py``: 2 residual layers of F = 32, a 17-way softmax per
sub-pixel). Paper-sized (van den Oord et al. 2016a: 7x7 mask-A input, 12 layers of F = 128, a
256-way softmax; 7 layers on MNIST):
  --config.data.name=cifar10 --config.model.first_kernel_size=7 --config.model.num_layers=12
  --config.model.features=126 --config.model.head_features=1020 --config.train.batch_size=16
(``features`` and the head a multiple of the 3 channel groups: 126 for the paper's 128).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("pixelrnn")
  c.data.name = "digits"  # discrete levels: data.dequantize stays False

  c.train.steps = 2000
  return c
