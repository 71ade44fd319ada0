"""Bernoulli-Bernoulli RBM on dynamically binarized ``digits`` (8x8 = 64 visible units), trained by
persistent contrastive divergence (PCD-1); the ``ais`` evaluator reports the held-out
log-likelihood estimated by annealed importance sampling (``ais_nll_nats``, ``ais_bits_per_dim``,
with ``ais_log_z`` and its standard error).

  python -m jaxgen.main --config=configs/rbm.py --workdir=runs/rbm
  python -m jaxgen.main --config=configs/rbm.py --workdir=runs/rbm --mode=sample --config.sample.gibbs_steps=5000

CD-k from the data instead of PCD: --config.model.persistent=False --config.model.cd_k=10.
Gaussian-Bernoulli RBM on real-valued (dequantized) pixels: --config.model.visible=gaussian
  --config.data.binarize=none --config.data.dequantize=True --config.optim.default.learning_rate=0.005
Paper-sized (Salakhutdinov & Murray 2008, MNIST, 500 hidden units, CD-25 / PCD, 14,500 betas):
  --config.data.name=binarized_mnist --config.model.hidden=500 --config.model.cd_k=25
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("rbm")
  c.data.name = "digits"
  c.data.binarize = "dynamic"

  c.train.steps = 3000
  return c
