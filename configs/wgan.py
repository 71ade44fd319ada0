"""The original WGAN on the embedded 8x8 digits (Arjovsky et al. 2017, algorithm 1).

python -m jaxgen.main --config=configs/wgan.py --workdir=runs/wgan
Critic loss D(G(z)) - D(x), generator loss -D(G(z)); n_critic = 5 critic updates per generator update;
RMSProp (no momentum) with learning rate 5e-5 for both networks; after each critic update every critic
weight is clipped to [-0.01, 0.01] (optim.disc.clip_params, jaxgen/param_constraints.py).
The paper's default c = 0.01, lr = 5e-5, batch 64. Details: docs/families_gan.md.
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("gan")
  c.model.loss = "wasserstein"
  c.model.n_critic = 5
  c.optim.gen = config_defaults.optimizer(name="rmsprop", learning_rate=5e-5, momentum=0.0)
  c.optim.disc = config_defaults.optimizer(name="rmsprop", learning_rate=5e-5, momentum=0.0, clip_params=0.01)
  c.train.steps = 3000
  c.eval.samples.every = 1000
  c.eval.metrics = ("heldout", "samples", "fid", "kid", "precision_recall", "density_coverage")
  return c
