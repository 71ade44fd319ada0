"""VAE on the embedded 8x8 digits: Bernoulli decoder on dynamically binarized pixels in [0, 1].

python -m jaxgen.main --config=configs/vae.py --workdir=runs/vae
Gaussian decoder on dequantized data (a density, bits/dim with the model-space offset):
  --config.model.decoder=gaussian --config.data.dequantize=True --config.data.binarize=none
Reports the held-out ELBO and IWAE bound (eval.iwae_samples) in nats and bits/dim.
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base()
  c.data.name = "digits"
  c.data.scale = "[0,1]"
  c.data.binarize = "dynamic"

  c.model.family = "vae"
  c.model.hidden = (256, 256)
  c.model.latent_dim = 16
  c.model.decoder = "bernoulli"  # bernoulli | gaussian

  c.optim.model = config_defaults.optimizer(learning_rate=1e-3)

  c.train.steps = 3000
  c.train.batch_size = 64
  c.train.checkpoint_every = 500
  c.train.sample_every = 1000
  c.train.ema_decay = 0.999

  c.eval.iwae_samples = 100
  return c
