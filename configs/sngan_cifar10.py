"""SNGAN on CIFAR-10 (tensorflow-datasets), sized like Miyato et al. 2018 (table 4, ResNet, hinge loss).

Not run in CI: 50k generator updates with 5 discriminator updates each, batch 64. Reported there for
this setting (unconditional ResNet, hinge loss): Inception score 8.22, FID 21.7.

  python -m jaxgen.main --config=configs/sngan_cifar10.py --workdir=runs/sngan_cifar10

Networks (jaxgen/nn/resnet_gan.py): generator z (128) -> 4x4x256 -> 3 up-blocks of 256 channels
-> 32x32x3; discriminator: 4 residual blocks of 128 channels (two downsample), ReLU, global sum
pooling, Dense; every discriminator weight spectrally normalised. Adam(2e-4, b1=0, b2=0.9).
Differences from the paper: constant learning rate (the paper decays it linearly to 0), Flax's default
initialisers. Setting model.gen_width=128, model.loss=wasserstein, model.spectral_norm=False and
model.gradient_penalty=10 gives the WGAN-GP CIFAR-10 ResNet of Gulrajani et al. 2017 (appendix F).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("gan")
  c.data.name = "cifar10"
  c.model.architecture = "resnet"
  c.model.latent_dim = 128
  c.model.width = 128
  c.model.gen_width = 256
  c.model.loss = "hinge"
  c.model.spectral_norm = True
  c.model.n_critic = 5
  c.optim.gen = config_defaults.optimizer(learning_rate=2e-4, b1=0.0, b2=0.9)
  c.optim.disc = config_defaults.optimizer(learning_rate=2e-4, b1=0.0, b2=0.9)
  c.train.steps = 50_000
  c.train.checkpoint_every = 5_000
  c.train.ema_decay = 0.0  # the paper evaluates the generator's own weights
  c.eval.samples.every = 5_000
  c.eval.num_samples = 50_000
  c.eval.metrics = ("heldout", "samples", "fid", "is")
  return c
