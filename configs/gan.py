"""DCGAN on the embedded 8x8 digits (non-saturating loss, Adam(2e-4, b1=0.5) as in Radford et al. 2016).

python -m jaxgen.main --config=configs/gan.py --workdir=runs/gan
The model's fields and their defaults are declared in jaxgen/families/gan.py (GAN.defaults).
Variants from the command line: --config.data.name=toy2d/grid25 (MLP GAN), --config.model.loss=hinge,
--config.model.loss=wasserstein --config.model.gradient_penalty=10 --config.model.n_critic=5 (WGAN-GP),
--config.model.conditional=True (with --config.sample.label=3 for threes), --config.model.pack=2 (PacGAN2).
SNGAN and the original WGAN: configs/sngan.py, configs/wgan.py (docs/families_gan.md).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("gan")
  c.train.steps = 3000
  c.eval.samples.every = 1000
  # digits: in the shipped digits classifier's feature space; toy2d: in data space (add "mode_coverage"
  # for toy2d/ring8, grid25, 8gaussians; "is" for images)
  c.eval.metrics = ("heldout", "samples", "fid", "kid", "precision_recall", "density_coverage")
  return c
