"""Adversarial Variational Bayes on the embedded 8x8 digits: an implicit posterior z = E(x, eps)
(8-dimensional code, 8 noise inputs), a discriminator T(x, z) for the log-density ratio inside the
ELBO, conv networks and a discretized logistic decoder over the 17 gray levels. Everything else is
the family's defaults (``jaxgen/families/avb.py``).

python -m jaxgen.main --config=configs/avb.py --workdir=runs/avb
Held-out neg_elbo_estimate_nats uses the learned T (an estimate, not a bound); samples are judged
by FID / precision / recall in the digits classifier's space.
Paper-sized variant (not run in CI): --config.data.name=mnist --config.model.latent_dim=32
  --config.model.noise_dim=32 --config.train.steps=50000
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("avb")
  c.train.steps = 2000
  c.eval.metrics = ("heldout", "samples", "fid", "precision_recall")
  return c
