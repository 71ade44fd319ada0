"""A coupling flow on 2-D points (``toy2d/*``): actnorm + MLP affine couplings; about a CPU minute.

  python -m jaxgen.main --config=configs/flow2d.py --workdir=runs/flow2d
  python -m jaxgen.main --config=configs/flow2d.py --workdir=runs/flow2d_8g --config.data.name=toy2d/8gaussians

The flow2d family's ``plot_density(params, state, points, path)`` draws the model density beside
the data.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "toy2d/moons"

  c.model.family = "flow2d"
  c.model.num_layers = 8  # couplings, alternating which coordinate is transformed
  c.model.hidden = 64
  c.model.depth = 2  # MLP ReLU layers per conditioner
  c.model.actnorm = True  # data-initialised actnorm before each coupling

  c.optim.default = config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=100.0)

  c.train.steps = 3000
  c.train.batch_size = 256
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  c.sample.num = 1000
  return c
