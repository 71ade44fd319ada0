"""A coupling flow on 2-D points (``toy2d/*``): actnorm + MLP affine couplings; about a CPU minute.

  python -m jaxgen.main --config=configs/flow2d.py --workdir=runs/flow2d
  python -m jaxgen.main --config=configs/flow2d.py --workdir=runs/flow2d_8g --config.data.name=toy2d/8gaussians

The model (``model.*``: couplings, conditioner width and depth, actnorm) is the flow2d family's
defaults (``jaxgen/families/flow.py``); its held-out ``nll_nats`` is the exact NLL per point, and
the ``density_plot`` evaluator draws ``exp(-nll_nats)`` on a grid beside the data at the end of
training (``samples/density_step_<N>.png``).
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("flow2d")
  c.data.name = "toy2d/moons"

  c.train.steps = 3000
  c.train.batch_size = 256
  c.train.checkpoint_every = 1000
  c.eval.samples.every = 1000
  c.train.ema_decay = 0.99  # short runs: a 0.999 average still lags far behind the weights
  c.sample.num = 1000
  c.eval.metrics = ("heldout", "samples", "density_plot")
  return c
