"""Flow matching / rectified flow on the embedded ``digits``: the DDPM U-Net as velocity network.

  python -m jaxgen.main --config=configs/flow_matching.py --workdir=runs/flow_matching
  python -m jaxgen.main --config=configs/flow_matching.py --workdir=runs/flow_matching --mode=sample \
      --config.sample.sampler=euler --config.sample.steps=8
Reflow (a second training on the first model's own noise / sample pairs, straighter paths):
  python -m jaxgen.main --config=configs/flow_matching.py --workdir=runs/flow_matching_reflow \
      --config.model.reflow_from=runs/flow_matching

The path, time sampling, samplers and the likelihood ODE are the flow_matching family's defaults
(``jaxgen/families/flow_matching.py``). The data are dequantized, so the held-out ``nll_nats`` /
``bits_per_dim`` (exact likelihood through the ODE, Hutchinson trace) bound the likelihood of
the 17-level digits.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("flow_matching")
  c.data.dequantize = True

  c.optim.default.learning_rate = 2e-3
  c.optim.default.schedule = "warmup_cosine"
  c.optim.default.warmup_steps = 100
  c.optim.default.grad_clip_norm = 1.0

  c.train.steps = 2000
  c.train.ema_decay = 0.995
  return c
