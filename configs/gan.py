"""DCGAN on the embedded 8x8 digits (non-saturating loss, Adam(2e-4, b1=0.5) as in Radford et al. 2016).

python -m jaxgen.main --config=configs/gan.py --workdir=runs/gan
Variants from the command line: --config.data.name=toy2d/grid25 (MLP GAN), --config.model.loss=hinge,
--config.model.loss=wasserstein --config.model.gradient_penalty=10 --config.model.n_critic=5 (WGAN-GP),
--config.model.conditional=True, --config.model.pack=2 (PacGAN2).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[-1,1]"

  c.model.family = "gan"
  c.model.latent_dim = 32
  c.model.width = 64  # image nets: channels of the first conv (doubled at each stride-2 conv)
  c.model.hidden = (256, 256)  # point nets (toy2d)
  c.model.loss = "non_saturating"  # non_saturating | minimax | hinge | wasserstein
  c.model.n_critic = 1
  c.model.gradient_penalty = 0.0
  c.model.conditional = False
  c.model.pack = 1

  c.optim.gen = config_defaults.optimizer(learning_rate=2e-4, b1=0.5)
  c.optim.disc = config_defaults.optimizer(learning_rate=2e-4, b1=0.5)

  c.train.steps = 3000
  c.train.batch_size = 64
  c.train.checkpoint_every = 500
  c.train.sample_every = 1000
  c.train.ema_decay = 0.999

  c.eval.num_samples = 1000
  # digits: in the shipped digits classifier's feature space; toy2d: in data space (add "mode_coverage"
  # for toy2d/ring8, grid25, 8gaussians; "is" for images)
  c.eval.metrics = ("fid", "kid", "precision_recall", "density_coverage")

  c.sample.num = 64
  c.sample.label = -1  # conditional models: class to draw (-1 = uniform over classes)
  return c
