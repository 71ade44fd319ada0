"""Adversarial autoencoder on the embedded 8x8 digits: MLP encoder / decoder (discretized logistic
over the 17 gray levels), an 8-dimensional code matched to N(0, I) by a latent discriminator.
Everything else is the family's defaults (``jaxgen/families/aae.py``).

python -m jaxgen.main --config=configs/aae.py --workdir=runs/aae
10-component mixture prior (the paper's prior-matching demonstration), optionally label-conditioned:
  --config.model.prior=mixture [--config.model.conditional=True --config.sample.label=3]
Paper-sized variant (not run in CI): --config.data.name=mnist --config.model.latent_dim=8
  --config.train.steps=50000 --config.train.batch_size=100
No likelihood: held-out recon_nats / mse and the latent GAN's disc/loss, gen/loss; sample metrics
(FID, precision / recall in the digits classifier's space) judge the samples.
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("aae")
  c.train.steps = 2000
  c.eval.metrics = ("heldout", "samples", "fid", "precision_recall")
  return c
