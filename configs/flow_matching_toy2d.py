"""Flow matching on 2-D points (``toy2d/*``) with the residual MLP; about a CPU minute.

  python -m jaxgen.main --config=configs/flow_matching_toy2d.py --workdir=runs/flow_matching_toy2d

The held-out ``nll_nats`` is the exact log-likelihood through the ODE with the exact divergence.
"""

from __future__ import annotations

import ml_collections

from configs import flow_matching


def get_config() -> ml_collections.ConfigDict:
  c = flow_matching.get_config()
  c.data.name = "toy2d/moons"
  c.data.dequantize = False
  c.model.network = "mlp"
  c.optim.default.learning_rate = 1e-3
  c.train.steps = 5000
  c.train.batch_size = 256
  c.sample.num = 1000
  return c
