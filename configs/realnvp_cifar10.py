"""RealNVP on CIFAR-10 (tensorflow-datasets), sized like Dinh et al. 2017 (3.49 bits/dim there).

Not run in CI (days of accelerator time). As in the paper for CIFAR-10: two scales (one
downscale), batch 64, Adam at 1e-3, logit pre-transform with alpha = 0.05. The paper's coupling
networks are 8 residual blocks of 64 feature maps with batch norm; ours are plain ReLU conv stacks
(``model.depth`` layers of ``model.hidden`` channels), so the numbers are not exactly comparable.

  python -m jaxgen.main --config=configs/realnvp_cifar10.py --workdir=runs/realnvp_cifar10
"""

from __future__ import annotations

import ml_collections

from configs import realnvp


def get_config() -> ml_collections.ConfigDict:
  c = realnvp.get_config()
  c.data.name = "cifar10"
  c.model.num_scales = 2
  c.model.hidden = 128
  c.model.depth = 8
  c.optim.default.weight_decay = 5e-5
  c.optim.default.name = "adamw"
  c.train.steps = 500_000
  c.train.checkpoint_every = 10_000
  c.eval.samples.every = 20_000
  c.eval.heldout.every = 20_000
  c.train.ema_decay = 0.9999
  c.eval.batch_size = 500
  return c
