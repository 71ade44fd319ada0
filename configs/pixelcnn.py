"""Gated PixelCNN on ``digits`` (8x8, 17 gray levels): trains in a few minutes on 2 CPU cores.

  python -m jaxgen.main --config=configs/pixelcnn.py --workdir=runs/pixelcnn
  python -m jaxgen.main --config=configs/pixelcnn.py --workdir=runs/pixelcnn --mode=sample \
      --config.sample.temperature=0.8 --config.sample.top_p=0.95

The model is the pixelcnn family's defaults (``jaxgen/families/pixelcnn.py``: 4 gated blocks of 32
features, a 17-way softmax per sub-pixel). ``model.output="logistic_mixture"`` swaps the softmax
for a discretized mixture of ``model.num_mixtures`` logistics; ``model.conditional=True``
conditions on the digit class (``sample.label`` picks the class to draw, -1 draws classes
uniformly at random).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("pixelcnn")
  c.data.name = "digits"  # discrete levels: data.dequantize stays False

  c.train.steps = 2000
  return c
