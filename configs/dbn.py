"""Deep belief network on dynamically binarized ``digits``: two RBMs of 128 hidden units stacked by
greedy layer-wise PCD training (layer 0 on the pixels for 1500 steps, then layer 1 on layer 0's
hidden probabilities); the ``ais`` evaluator reports the variational lower bound on the held-out
log-likelihood with the top RBM's log Z estimated by AIS (``ais_nll_bound_nats``, ``ais_bits_per_dim``).

  python -m jaxgen.main --config=configs/dbn.py --workdir=runs/dbn
  python -m jaxgen.main --config=configs/dbn.py --workdir=runs/dbn --mode=sample --config.sample.gibbs_steps=5000

Three layers: --config.model.layers=128,128,256 --config.train.steps=4500. Paper-sized (Hinton et al.
2006 / Salakhutdinov & Murray 2008, MNIST 500-500-2000): --config.data.name=binarized_mnist
  --config.model.layers=500,500,2000 --config.model.steps_per_layer=50000 --config.train.steps=150000
``train.steps`` should be ``len(model.layers) * model.steps_per_layer`` (the top layer keeps training
after that).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("dbn")
  c.data.name = "digits"
  c.data.binarize = "dynamic"

  c.train.steps = 3000  # 2 layers x model.steps_per_layer
  return c
