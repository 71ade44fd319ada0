"""GANs: DCGAN or ResNet (images) and MLP GANs (2-D points); conditional, packed, spectrally normalised.

Two networks, ``disc`` and ``gen``, updated alternately each step: the discriminator (critic)
``model.n_critic`` times, then the generator once. Losses (``model.loss``): non-saturating
(Goodfellow et al. 2014), hinge (Miyato et al. 2018) or wasserstein with ``model.gradient_penalty``
(WGAN-GP, Gulrajani et al. 2017); see ``jaxgen.losses``. With real ``x``, fakes ``G(z)``,
``z ~ N(0, I_latent)``, critic outputs ``D`` (logits) and ``lambda = model.gradient_penalty``:

* discriminator loss ``mean_i L_D(D(x_i), D(G(z_i))) + lambda * E[(||grad D(x_hat)||_2 - 1)^2]``;
* generator loss ``mean_i L_G(D(G(z_i)))`` on a fresh ``z`` (and, conditional, uniform labels).

Latent space (the interpolation evaluator): ``sample_latent`` draws ``z``, ``decode_latent`` is ``G``
with BatchNorm's running averages; ``sample`` is the two composed.

Images, ``model.architecture = "dcgan"``: the generator maps ``z`` through a Dense layer to a
``[B, h0, w0, 2^k * gen_width]`` map and ``k`` stride-2 transposed convolutions (BatchNorm + ReLU) to
``[B, H, W, C]`` (tanh for data in [-1, 1], sigmoid for [0, 1]); ``k`` is the number of times
H halves while staying >= 4 (8 -> 1, 28 -> 2, 32 -> 3). The discriminator mirrors it with stride-2
convolutions + LeakyReLU(0.2) and a Dense logit (no BatchNorm: WGAN-GP forbids it and packing
changes batch statistics). ``"resnet"``: the SNGAN / WGAN-GP CIFAR ResNets (``jaxgen.nn.resnet_gan``).
Conditional: the generator sees ``concat(z, embed(label))``, the discriminator one-hot label planes
concatenated to its input (Mirza & Osindero 2014).
PacGAN (Lin et al. 2018): the discriminator judges ``model.pack`` samples at once, concatenated
along the channel (feature) axis.

Spectral normalisation (``model.spectral_norm``, Miyato et al. 2018): every weight matrix of the
discriminator (a conv kernel ``[kh, kw, in, out]`` as the matrix ``[kh * kw * in, out]``) is divided
by its largest singular value, estimated by one power iteration per evaluation from a vector ``u``
kept in the non-gradient collection ``state["disc"]["spectral"]`` (``flax.linen.SpectralNorm``).
``u`` advances on each critic evaluation of the discriminator's update (real batch, then fakes) and
is read-only elsewhere (generator update, gradient penalty, evaluation); it is checkpointed with the
rest of the state, so resumed runs repeat uninterrupted ones.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses, sampling
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn.conv_transpose import ConvTranspose
from jaxgen.nn.gan_generator import latent_to_map, num_upsamples, to_image
from jaxgen.nn.mlp import MLP
from jaxgen.nn.resnet_gan import ResNetDiscriminator, ResNetGenerator

#: The discriminator's non-gradient collection of power-iteration vectors (spectral norm).
SPECTRAL = "spectral"
LOSSES = ("non_saturating", "minimax", "hinge", "wasserstein")
ARCHITECTURES = ("dcgan", "resnet")


class ImageGenerator(nn.Module):
  shape: tuple[int, int, int]
  width: int
  num_classes: int
  out_activation: str

  @nn.compact
  def __call__(self, z, labels, train: bool):
    k = num_upsamples(self.shape[0])
    ch = self.width * 2**k
    x = latent_to_map(z, labels, self.num_classes, self.shape, ch)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    for _ in range(k):
      ch //= 2
      x = ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME")(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return to_image(x, self.shape[-1], self.out_activation)


class ImageDiscriminator(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    k = num_upsamples(x.shape[1])
    ch = self.width
    x = nn.leaky_relu(nn.Conv(ch, (3, 3), padding="SAME")(x), 0.2)
    for _ in range(k):
      ch *= 2
      x = nn.leaky_relu(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME")(x), 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


class PointGenerator(nn.Module):
  dims: int
  hidden: tuple[int, ...]
  num_classes: int

  @nn.compact
  def __call__(self, z, labels, train: bool):
    del train
    if self.num_classes:
      z = jnp.concatenate([z, nn.Embed(self.num_classes, z.shape[-1])(labels)], axis=-1)
    return MLP(self.hidden, self.dims)(z)


class PointDiscriminator(nn.Module):
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    return MLP(self.hidden, 1, activation=lambda y: nn.leaky_relu(y, 0.2))(x)[:, 0]


@FAMILIES.register("gan")
class GAN(Family):
  """Networks ``{"disc", "gen"}``; update groups: ``disc`` (``n_critic`` times), then ``gen``."""

  objective = "adversarial"

  networks = ("disc", "gen")
  latent_prior = "gaussian"  # z ~ N(0, I): interpolations are spherical

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "latent_dim": 32,  # z ~ N(0, I_latent_dim)
            "architecture": "dcgan",  # image nets: dcgan | resnet (the SNGAN / WGAN-GP CIFAR ResNets)
            # Image nets: dcgan: channels of the discriminator's first conv, doubled at each stride-2
            # conv (the generator mirrors it); resnet: channels of every block.
            "width": 64,
            "gen_width": 0,  # the generator's width (0 = model.width)
            "hidden": (256, 256),  # point nets (toy2d): MLP hidden widths of both networks
            "loss": "non_saturating",  # non_saturating | minimax | hinge | wasserstein (jaxgen.losses)
            "n_critic": 1,  # discriminator updates per generator update
            "gradient_penalty": 0.0,  # WGAN-GP weight lambda of E[(||grad D(x_hat)|| - 1)^2] (0 = off)
            "spectral_norm": False,  # spectrally normalise every discriminator weight (SNGAN)
            "conditional": False,  # class-conditional on batch["label"]
            "pack": 1,  # PacGAN: samples the discriminator judges together (divides train.batch_size)
        },
        "sample": {"label": -1},  # conditional models: class of every sample (-1 = uniform at random)
        # Adam(2e-4, b1=0.5) for both networks, as in Radford et al. 2016 (DCGAN).
        "optim": {"gen": config_defaults.optimizer(learning_rate=2e-4, b1=0.5),
                  "disc": config_defaults.optimizer(learning_rate=2e-4, b1=0.5)},
    }

  def __init__(self, config, spec):
    super().__init__(config, spec)
    m = config.model
    if m.loss not in LOSSES:
      raise UserError(f"model.loss={m.loss!r} is unknown; use one of {', '.join(LOSSES)}")
    if m.architecture not in ARCHITECTURES:
      raise UserError(f"model.architecture={m.architecture!r} is unknown; use one of {', '.join(ARCHITECTURES)}")
    self.num_classes = self.condition_classes()
    if spec.modality == "image":
      act = "tanh" if tuple(spec.value_range) == (-1.0, 1.0) else "sigmoid"
      gen_width = m.gen_width or m.width
      if m.architecture == "resnet":
        self.gen = ResNetGenerator(spec.shape, gen_width, self.num_classes, act)
        disc = ResNetDiscriminator(m.width)
      else:
        self.gen = ImageGenerator(spec.shape, gen_width, self.num_classes, act)
        disc = ImageDiscriminator(m.width)
    elif spec.modality == "points":
      self.gen = PointGenerator(spec.shape[0], tuple(m.hidden), self.num_classes)
      disc = PointDiscriminator(tuple(m.hidden))
    else:
      raise UserError(f"the gan family models images or points, not {spec.modality} ({spec.name})")
    # Spectral norm wraps the whole discriminator: every >= 2-D parameter inside it is normalised.
    self.disc = nn.SpectralNorm(disc, collection_name=SPECTRAL) if m.spectral_norm else disc
    for key in ("train.batch_size", "eval.batch_size"):  # the discriminator judges packs of m.pack
      size = config[key.split(".")[0]].batch_size
      if size % m.pack:
        raise UserError(f"{key}={size} is not divisible by model.pack={m.pack}; set --config.{key}="
                        f"{max(m.pack, size - size % m.pack)}")

  # --- helpers -------------------------------------------------------------------------------------

  def _labels(self, batch, rng, n):
    if not self.num_classes:
      return None
    return batch["label"] if batch is not None else jax.random.randint(rng, (n,), 0, self.num_classes)

  def _generate(self, params, state, rng, n, labels):
    """``(G(z), state)`` for training: BatchNorm on batch statistics, its running averages updated."""
    variables = {"params": params["gen"], **state.get("gen", {})}
    x, updates = self.gen.apply(variables, self.sample_latent(rng, n), labels, True, mutable=["batch_stats"])
    return x, {**state, "gen": updates}

  def critic_input(self, x, labels):
    """What the discriminator sees of samples ``x [B, ..., C]``: one-hot label planes appended
    (conditional) -> ``[B, ..., C']`` with ``C' = C + classes``, then packs of ``model.pack``
    consecutive samples -> ``[B / pack, ..., pack * C']``, sample ``j`` of a pack in channels
    ``[j * C', (j + 1) * C')``."""
    if self.num_classes:
      onehot = jax.nn.one_hot(labels, self.num_classes)
      onehot = jnp.broadcast_to(onehot.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (-1,)),
                                x.shape[:-1] + (self.num_classes,))
      x = jnp.concatenate([x, onehot], axis=-1)
    pack = self.config.model.pack
    if pack > 1:
      x = x.reshape((x.shape[0] // pack, pack) + x.shape[1:])
      x = jnp.moveaxis(x, 1, -2).reshape((x.shape[0],) + x.shape[2:-1] + (-1,))
    return x

  def _critic(self, params, state, x, labels, update=False):
    """``(logits [B / pack], state)`` of samples ``x [B, ...]``; with spectral norm and ``update``,
    one power iteration advances ``u`` in the returned state."""
    x = self.critic_input(x, labels)
    if not self.config.model.spectral_norm:
      return self.disc.apply({"params": params["disc"]}, x), state
    variables = {"params": params["disc"], **state["disc"]}
    if update:
      logits, updates = self.disc.apply(variables, x, update_stats=True, mutable=[SPECTRAL])
      return logits, {**state, "disc": updates}
    return self.disc.apply(variables, x, update_stats=False), state

  # --- contract -------------------------------------------------------------------------------------

  def init(self, rng, batch):
    n = batch["x"].shape[0]
    kg, kd = jax.random.split(rng)
    z = jnp.zeros((n, self.config.model.latent_dim))
    gvars = self.gen.init(kg, z, self._labels(batch, None, n), True)
    # The critic's input: (labelled, packed) samples, [1, ..., (C + classes) * pack].
    critic_input = jnp.zeros((1,) + batch["x"].shape[1:-1] + (
        (batch["x"].shape[-1] + self.num_classes) * self.config.model.pack,))
    state = {"gen": {k: v for k, v in gvars.items() if k != "params"}}
    if self.config.model.spectral_norm:
      dvars = self.disc.init(kd, critic_input, update_stats=False)
      state["disc"] = {SPECTRAL: dvars[SPECTRAL]}
    else:
      dvars = self.disc.init(kd, critic_input)
    return {"gen": gvars["params"], "disc": dvars["params"]}, state

  def disc_loss(self, params, state, batch, rng):
    m = self.config.model
    real = batch["x"]
    k_fake, k_gp = jax.random.split(rng)
    labels = self._labels(batch, None, real.shape[0])
    fake, state = self._generate(params, state, k_fake, real.shape[0], labels)
    fake = jax.lax.stop_gradient(fake)
    real_logits, state = self._critic(params, state, real, labels, update=True)
    fake_logits, state = self._critic(params, state, fake, labels, update=True)
    loss = losses.gan_discriminator_loss(m.loss, real_logits, fake_logits)
    metrics = {"real_logit": jnp.mean(real_logits), "fake_logit": jnp.mean(fake_logits)}
    if m.gradient_penalty > 0:
      gp = losses.gradient_penalty(lambda x: self._critic(params, state, x, labels)[0], real, fake, k_gp)
      metrics["gradient_penalty"] = gp
      loss = loss + m.gradient_penalty * gp
    return loss, (metrics, state)

  def gen_loss(self, params, state, batch, rng):
    n = batch["x"].shape[0]
    k_fake, k_lab = jax.random.split(rng)
    labels = self._labels(None, k_lab, n)
    fake, state = self._generate(params, state, k_fake, n, labels)
    logits, _ = self._critic(params, state, fake, labels)
    return losses.gan_generator_loss(self.config.model.loss, logits), ({}, state)

  def update_groups(self):
    return [UpdateGroup("disc", self.disc_loss, self.config.model.n_critic), UpdateGroup("gen", self.gen_loss)]

  def sample(self, params, state, rng, num):
    k_fake, k_lab = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.num_classes, k_lab, num)
    return self.decode_latent(params, state, self.sample_latent(k_fake, num), labels)

  # --- latent space (the interpolation evaluator) ---------------------------------------------------

  def sample_latent(self, rng, num):
    """``z ~ N(0, I)``, ``[num, latent_dim]``: the generator's input."""
    return jax.random.normal(rng, (num, self.config.model.latent_dim))

  def decode_latent(self, params, state, z, label=None):
    """``G(z[, label]) [B, *shape]`` in model space, BatchNorm on its running averages (as
    :meth:`sample`); ``label [B]`` is required by conditional models."""
    return self.gen.apply({"params": params["gen"], **state.get("gen", {})}, z, label, False)

  def eval_metrics(self, params, state, batch, rng):
    """Held-out terms per example ``[B]``, no likelihood: the discriminator's loss on test example
    ``i`` and a fresh fake, its logits on both (``disc/real_logit``, ``disc/fake_logit``), the
    WGAN-GP penalty where it is on, and the generator's loss on fresh fakes. Their means are the
    training losses on the test split; with ``model.pack`` > 1 a pack's value stands for each of
    its examples."""
    m = self.config.model
    k_fake, k_gp, k_g = jax.random.split(rng, 3)
    real = batch["x"]
    labels = self._labels(batch, None, real.shape[0])
    fake, state = self._generate(params, state, k_fake, real.shape[0], labels)
    real_logits, fake_logits = (self._critic(params, state, x, labels)[0] for x in (real, fake))
    real_part, fake_part = losses.gan_discriminator_terms(m.loss, real_logits, fake_logits)
    per_example = lambda v: jnp.repeat(v, m.pack)  # [B / pack] -> [B]
    out = {"disc/loss": per_example(real_part + fake_part), "disc/real_logit": per_example(real_logits),
           "disc/fake_logit": per_example(fake_logits)}
    if m.gradient_penalty > 0:
      # [B]: the gradient's norm is taken per example, also within a pack
      gp = losses.gradient_penalty_terms(lambda x: self._critic(params, state, x, labels)[0], real, fake, k_gp)
      out["disc/gradient_penalty"] = gp
      out["disc/loss"] = out["disc/loss"] + m.gradient_penalty * gp
    g, _ = self.gen_loss(params, state, batch, k_g)  # fresh fakes only: no test example in it
    return {**out, "gen/loss": g}
