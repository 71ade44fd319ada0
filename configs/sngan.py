"""SNGAN on the embedded 8x8 digits: spectrally normalised discriminator + hinge loss (Miyato et al. 2018).

python -m jaxgen.main --config=configs/sngan.py --workdir=runs/sngan
The DCGAN networks and optimizers of configs/gan.py (Adam(2e-4, b1=0.5), one discriminator update per
generator update, as Miyato et al.'s standard-CNN setting); only the loss and the normalisation differ,
so the two configs compare the effect of spectral normalisation + hinge at equal steps.
Paper-sized ResNet on CIFAR-10: configs/sngan_cifar10.py. Details: docs/families_gan.md.
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("gan")
  c.model.loss = "hinge"
  c.model.spectral_norm = True
  c.train.steps = 3000
  c.eval.samples.every = 1000
  c.eval.metrics = ("heldout", "samples", "fid", "kid", "precision_recall", "density_coverage")
  return c
