"""Convolutional VAE on the embedded 8x8 digits with a discretized logistic decoder over the 17 raw
gray levels: held-out bits/dim (an upper bound via IWAE) comparable with PixelCNN's on the same data.
Everything else is the family's defaults (``jaxgen/families/vae.py``).

python -m jaxgen.main --config=configs/vae_conv.py --workdir=runs/vae_conv
β-VAE, KL warm-up, free bits (posterior-collapse remedies; watch kl_dim_* and active_units):
  --config.model.beta=4 --config.model.kl_warmup_steps=1000 --config.model.free_bits=0.25
Class-conditional: --config.model.conditional=True --config.sample.label=3

Paper-sized variant (not run in CI): a tfds set or an image folder, e.g.
  --config.data.name=mnist --config.model.features=(32,64) --config.model.latent_dim=32
  --config.train.steps=50000 --config.train.batch_size=128
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("vae")
  c.train.steps = 2000
  c.eval.metrics = ("heldout", "samples", "fid", "precision_recall")  # FID, P/R: digits classifier
  return c
