"""Stage 2 of the VQ-VAE: a gated PixelCNN prior over the 4x4 code grids of ``configs/vqvae.py``.

python -m jaxgen.main --config=configs/vqvae.py --workdir=runs/vqvae              # stage 1
python -m jaxgen.main --config=configs/vqvae_prior.py --workdir=runs/vqvae_prior  # stage 2
(another stage-1 run: --config.model.vqvae_workdir=DIR). Samples are prior codes decoded by the
VQ-VAE; the held-out nll_bound_nats / bits_per_dim are the two-stage bound (prior NLL of the codes
+ reconstruction term). The data settings must equal the VQ-VAE's. The network and sampling fields
are PixelCNN's (``jaxgen/families/pixelcnn.py``); model.conditional=True gives a class-conditional
prior (sample.label picks the class).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("vqvae_prior")
  c.model.vqvae_workdir = "runs/vqvae"
  c.train.steps = 2000
  c.eval.metrics = ("heldout", "samples", "fid", "precision_recall")  # FID, P/R: digits classifier
  return c
