"""VQ-VAE on the embedded 8x8 digits: a 4x4 grid of codes from a codebook of 32, EMA codebook with
dead-code restarts, discretized logistic decoder over the 17 raw gray levels. Everything else is
the family's defaults (``jaxgen/families/vqvae.py``).

python -m jaxgen.main --config=configs/vqvae.py --workdir=runs/vqvae
Then its prior over codes (a PixelCNN on the code grids; samples are decoded codes):
python -m jaxgen.main --config=configs/vqvae_prior.py --workdir=runs/vqvae_prior \
    --config.model.vqvae_workdir=runs/vqvae
Codebook loss instead of EMA: --config.model.codebook=loss --config.model.dead_code_threshold=0

Reports reconstruction (recon_nats, mse), codebook usage and perplexity; its bits/dim bound uses
the uniform prior over codes (the prior's config reports the two-stage bound).
Paper-sized variant (not run in CI), e.g. CIFAR-10 from tfds: --config.data.name=cifar10
--config.model.features=(128,256) --config.model.embedding_dim=64 --config.model.num_codes=512
--config.train.steps=100000 --config.train.batch_size=128 (an 8x8 code grid).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("vqvae")
  c.train.steps = 2000
  c.eval.metrics = ("heldout", "samples", "fid", "precision_recall")  # FID, P/R: digits classifier
  return c
