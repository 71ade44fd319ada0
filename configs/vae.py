"""VAE on the embedded 8x8 digits: MLP encoder / decoder, Bernoulli decoder on dynamically binarized
pixels in [0, 1] (the family's defaults, ``jaxgen/families/vae.py``, are a conv VAE with a
discretized logistic decoder: ``configs/vae_conv.py``).

python -m jaxgen.main --config=configs/vae.py --workdir=runs/vae
Gaussian decoder on dequantized data (a density, bits/dim with the model-space offset):
  --config.model.decoder=gaussian --config.data.dequantize=True --config.data.binarize=none
β-VAE / KL warm-up / free bits: --config.model.beta=4 --config.model.kl_warmup_steps=1000
  --config.model.free_bits=0.25
Reports the held-out IWAE bound (eval.iwae_samples) and ELBO in nats and bits/dim, and the
posterior-collapse diagnostics (KL per latent dimension, active units).
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base("vae")
  c.data.scale = "[0,1]"
  c.data.binarize = "dynamic"

  c.model.architecture = "mlp"
  c.model.decoder = "bernoulli"

  c.train.steps = 3000
  c.eval.samples.every = 1000
  return c
