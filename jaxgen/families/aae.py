"""Adversarial autoencoder (Makhzani et al. 2016): an autoencoder whose code distribution is matched
to a prior by a GAN on the latent space.

Networks. ``enc``: deterministic encoder ``z = E(x) [B, L]``; ``dec``: decoder ``p(x|z)`` (one of
:mod:`jaxgen.nn.pixel_likelihood`); both from :mod:`jaxgen.nn.autoencoder` (``mlp`` by default:
on digits the conv pair let the deterministic codes drift in scale and reconstructed worse).
``disc``: an MLP ``D(z) -> logit`` (``model.disc_hidden``) that tells prior samples from codes.

Prior ``p(z)`` (``model.prior``): ``gaussian`` ``N(0, I_L)``, or ``mixture`` of
``C = model.prior_components`` Gaussians with means ``r (cos 2 pi c / C, sin 2 pi c / C, 0, ..., 0)``
(``r = MIXTURE_RADIUS``) and standard deviation ``MIXTURE_STD`` in every dimension, equally weighted
(the paper's 10-component prior, shown to be matched). ``model.conditional`` (mixture only, ``C`` =
the number of classes): the label-conditioned prior of the paper's Figure 6 -- the discriminator
also sees the one-hot label, and the prior sample of an example with label ``y`` comes from
component ``y``, so sampling with ``sample.label = y`` draws class ``y``.

Three update groups per step, in order (``d = D`` logits, ``lambda = model.adversarial_weight``,
means over the batch, non-saturating GAN losses of :mod:`jaxgen.losses`):

1. reconstruction, network ``dec``: ``-log p(x | E(x))``;
2. discriminator, network ``disc``: ``-log sigmoid(d(z_p)) - log(1 - sigmoid(d(sg E(x))))``,
   ``z_p ~ p(z)``;
3. encoder as generator, network ``enc``: ``-log p(x | E(x)) - lambda log sigmoid(d(E(x)))``.

The trainer updates one network per group, so the encoder's reconstruction gradient of the paper's
reconstruction phase is taken in group 3, together with its regularisation-phase (generator)
gradient, in one optimizer step; the decoder's in group 1.

No likelihood (the encoder is deterministic): held-out metrics are ``recon_nats`` (``-log p(x|E(x))``
per example, not a bound on ``-log p(x)``), ``mse`` of the decoder mean, and the losses
``disc/loss``, ``gen/loss`` on test codes against fresh prior samples.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses, sampling
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, UpdateGroup
from jaxgen.families.vae import LatentAutoencoderFamily
from jaxgen.nn.autoencoder import with_label
from jaxgen.nn.mlp import MLP

PRIORS = ("gaussian", "mixture")
MIXTURE_RADIUS = 4.0
MIXTURE_STD = 0.5


def mixture_means(components: int, latent_dim: int) -> jax.Array:
  """``[C, L]``: component ``c`` at ``MIXTURE_RADIUS (cos 2 pi c / C, sin 2 pi c / C, 0, ...)``."""
  angle = 2.0 * math.pi * jnp.arange(components) / components
  circle = MIXTURE_RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
  return jnp.pad(circle, ((0, 0), (0, latent_dim - 2)))


def sample_prior(kind: str, rng: jax.Array, num: int, latent_dim: int, components: int = 0,
                 labels: jax.Array | None = None) -> jax.Array:
  """``num`` draws ``[num, L]`` from the prior; mixture components uniform, or ``labels`` ``[num]``."""
  k_comp, k_noise = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num, latent_dim))
  if kind == "gaussian":
    return noise
  if labels is None:
    labels = jax.random.randint(k_comp, (num,), 0, components)
  return mixture_means(components, latent_dim)[labels] + MIXTURE_STD * noise


class LatentDiscriminator(nn.Module):
  """``(z [B, L], onehot [B, C] | None) -> logit [B]``."""

  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, z, onehot=None):
    return MLP(self.hidden, 1, activation=lambda y: nn.leaky_relu(y, 0.2))(with_label(z, onehot))[:, 0]


@FAMILIES.register("aae")
class AAE(LatentAutoencoderFamily):
  """Networks ``dec``, ``disc``, ``enc`` (module docstring); config: :meth:`defaults`."""

  objective = "adversarial + reconstruction"

  networks = ("dec", "disc", "enc")

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "architecture": "mlp",  # mlp (images or points) | conv (images); mlp trains stabler here
            "hidden": (256, 256),  # widths of the encoder's MLP (head, for conv; reversed in the decoder)
            "features": (16, 32),  # conv: channels of the stride-2 stages (H, W divisible by 2^len)
            "latent_dim": 8,
            "decoder": "logistic",  # bernoulli | gaussian | logistic (jaxgen.nn.pixel_likelihood)
            "prior": "gaussian",  # gaussian | mixture (of prior_components Gaussians on a circle)
            "prior_components": 10,  # mixture only
            "disc_hidden": (64, 64),  # the latent discriminator's MLP
            "adversarial_weight": 1.0,  # lambda: weight of the generator loss in the encoder's update
            "conditional": False,  # label-conditioned mixture prior (components = classes)
        },
        "sample": {"label": -1},  # conditional prior: the class to draw (-1 = uniform)
        "optim": {"dec": config_defaults.optimizer(learning_rate=1e-3), "enc": config_defaults.optimizer(learning_rate=1e-3),
                  "disc": config_defaults.optimizer(learning_rate=2e-4, b1=0.5)},
    }

  def __init__(self, config, spec):
    m = config.model
    super().__init__(config, spec, int(m.latent_dim))
    if m.prior not in PRIORS:
      raise UserError(f"model.prior={m.prior!r}; use one of {', '.join(PRIORS)}")
    if m.prior == "mixture" and (m.latent_dim < 2 or m.prior_components < 1):
      raise UserError("the mixture prior needs model.latent_dim >= 2 and model.prior_components >= 1")
    self.num_classes = self.condition_classes()
    if self.num_classes and (m.prior != "mixture" or m.prior_components != self.num_classes):
      raise UserError(f"model.conditional=True puts class y on mixture component y: set --config.model.prior=mixture "
                      f"--config.model.prior_components={self.num_classes}")
    self.latent_prior = m.prior
    self.disc = LatentDiscriminator(tuple(m.disc_hidden))

  def _onehot(self, label):
    return jax.nn.one_hot(label, self.num_classes) if self.num_classes else None

  def _label(self, batch):
    return batch["label"] if self.num_classes else None

  def init(self, rng, batch):
    k_ae, k_disc = jax.random.split(rng)
    ae = self.init_autoencoder(k_ae, batch)
    z = jnp.zeros((batch["x"].shape[0], self.latent_dim))
    onehot = self._onehot(self._label(batch))
    return {"enc": ae["encoder"], "dec": ae["decoder"], "disc": self.disc.init(k_disc, z, onehot)["params"]}, {}

  # --- pieces --------------------------------------------------------------------------------------

  def encode(self, params, x):
    """The code ``z = E(x)``, ``[B, L]``."""
    return self.encoder.apply({"params": params["enc"]}, x)

  def critic(self, params, z, label=None):
    """Discriminator logits ``[B]``."""
    return self.disc.apply({"params": params["disc"]}, z, self._onehot(label))

  def prior_sample(self, rng, num, labels=None):
    m = self.config.model
    return sample_prior(m.prior, rng, num, self.latent_dim, m.prior_components, labels)

  def encode_latent(self, params, state, batch):
    return self.encode(params, batch["x"])

  def decode_latent(self, params, state, z, label=None):
    return self.decoder_mean(params["dec"], z)

  # --- the three update groups ---------------------------------------------------------------------

  def recon_loss(self, params, state, batch, rng):
    del rng
    rec = self.decoder_log_lik(params["dec"], batch["x"], self.encode(params, batch["x"]))
    return -jnp.mean(rec), ({"recon_nats": -jnp.mean(rec)}, state)

  def disc_loss(self, params, state, batch, rng):
    label = self._label(batch)
    fake = jax.lax.stop_gradient(self.encode(params, batch["x"]))
    real = self.prior_sample(rng, fake.shape[0], label)
    real_logits, fake_logits = self.critic(params, real, label), self.critic(params, fake, label)
    loss = losses.gan_discriminator_loss("non_saturating", real_logits, fake_logits)
    return loss, ({"real_logit": jnp.mean(real_logits), "fake_logit": jnp.mean(fake_logits)}, state)

  def enc_loss(self, params, state, batch, rng):
    del rng
    label = self._label(batch)
    z = self.encode(params, batch["x"])
    recon = -jnp.mean(self.decoder_log_lik(params["dec"], batch["x"], z))
    adversarial = losses.gan_generator_loss("non_saturating", self.critic(params, z, label))
    loss = recon + self.config.model.adversarial_weight * adversarial
    return loss, ({"recon_nats": recon, "adversarial": adversarial}, state)

  def update_groups(self):
    return [UpdateGroup("dec", self.recon_loss), UpdateGroup("disc", self.disc_loss), UpdateGroup("enc", self.enc_loss)]

  # --- sampling and evaluation ---------------------------------------------------------------------

  def sample(self, params, state, rng, num):
    k_label, k_z = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.num_classes, k_label, num)
    return self.decoder_mean(params["dec"], self.prior_sample(k_z, num, labels))

  def eval_metrics(self, params, state, batch, rng):
    """Per example ``[B]``: reconstruction nats (of the raw data) and squared error, the discriminator's loss on the
    code of test example ``i`` against a fresh prior draw, and the encoder's adversarial loss."""
    x, label = batch["x"], self._label(batch)
    z = self.encode(params, x)
    rec = self.decoder_log_lik(params["dec"], x, z) - self.raw_offset_nats()  # of the raw data
    mse = jnp.mean(((self.decoder_mean(params["dec"], z) - x) ** 2).reshape(x.shape[0], -1), -1)
    prior_logits = self.critic(params, self.prior_sample(rng, z.shape[0], label), label)
    code_logits = self.critic(params, z, label)
    prior_part, code_part = losses.gan_discriminator_terms("non_saturating", prior_logits, code_logits)
    gen = losses.gan_generator_terms("non_saturating", code_logits)
    return {"recon_nats": -rec, "mse": mse, "disc/loss": prior_part + code_part, "gen/loss": gen}
