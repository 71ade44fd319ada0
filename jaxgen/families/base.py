"""The family contract: everything a model family gives the one generic trainer.

A *family* (GAN, VAE, PixelCNN, flow, diffusion, ...) is a class registered by name
(``config.model.family``). It owns one or more Flax (linen) networks and exposes

* ``init(rng, batch) -> (params, state)``
    ``params``: ``{network_name: params_pytree}`` -- what the optimizers train.
    ``state``:  ``{network_name: {collection: pytree}}`` -- non-gradient Flax collections
    (BatchNorm statistics, EMA codebooks, actnorm initialisation); ``{}`` when there is none.
    Integer leaves are step counters (a KL warm-up's step): under gradient accumulation every
    micro-batch sees the update's value and they advance once per update, while float leaves
    thread through the micro-batches; keep PRNG keys as JAX key arrays, not raw integers.
* ``update_groups() -> [UpdateGroup]``, in order. Each group names one network and a *pure* loss
    ``loss_fn(params, state, batch, rng) -> (scalar_loss, (metrics, new_state))``.
    The trainer differentiates the loss w.r.t. ``params[group.network]`` only and applies that
    network's optax optimizer; ``repeats`` times with fresh randomness (a GAN: ``disc`` then ``gen``).
* ``sample(params, state, rng, num) -> array``: ``num`` samples in *model space* (the preprocessed
    scale of ``batch["x"]``); controls (temperature, steps, ...) come from ``config.sample``.
    Class-conditional families (``model.conditional``) read ``sample.label``: ``-1`` draws the
    labels uniformly at random from the sample key, ``k >= 0`` draws class ``k`` for every sample
    (:func:`jaxgen.sampling.labels_from_config`).
* ``eval_metrics(params, state, batch, rng) -> {name: [B] array or scalar}``: held-out metrics
    per example; the trainer averages them with ``batch["mask"]`` so padded examples do not count
    (a scalar counts as the value of every example of the batch). Names shared by every family:
    ``nll_nats`` (the model's exact negative log-likelihood of the raw data in nats per example;
    for a density on dequantized images, of the dequantized data: :mod:`jaxgen.evaluation.likelihood`),
    ``nll_bound_nats`` (an upper bound on it: negative ELBO, diffusion bound), ``bits_per_dim``
    (of whichever of the two the family has); text may add ``bits_per_char``.
* ``defaults() -> dict`` (a classmethod): every ``config.model`` field the family reads and its
    ``config.sample`` controls, declared once in the family's file (see :meth:`Family.defaults`).

Mixed precision: a family whose networks take ``dtype=self.compute_dtype`` (the Flax modules' compute
dtype, from ``train.compute_dtype``) sets ``mixed_precision = True``. Its params stay float32 (Flax's
``param_dtype``), so the gradients and the optimizer state are float32; the networks cast their
outputs to float32 before any loss or likelihood is summed.

A batch is a dict of arrays with a leading batch axis: ``"x"`` (float images ``[B, H, W, C]``,
points ``[B, D]`` or integer tokens ``[B, T]``) and, where the data set has classes, ``"label"``
(int32 ``[B]``). All functions must be pure and jit-able: the trainer compiles them once.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.registry import Registry

PyTree = Any
Params = Mapping[str, PyTree]
State = Mapping[str, PyTree]
Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]
LossFn = Callable[[Params, State, Batch, jax.Array], tuple[jax.Array, tuple[Metrics, State]]]


@dataclasses.dataclass(frozen=True)
class UpdateGroup:
  """One optimizer update: differentiate ``loss_fn`` w.r.t. ``params[network]``.

  ``loss_fn(params, state, batch, rng) -> (loss, (metrics, new_state))`` sees the parameters of
  every network (a generator loss needs the discriminator) but only ``network`` is updated.
  ``new_state`` replaces ``state`` (return the input ``state`` when nothing changes).
  Metric names are prefixed with ``network/`` by the trainer.
  """

  network: str
  loss_fn: LossFn
  repeats: int = 1


class Family(abc.ABC):
  """Base class of all model families; see the module docstring for the contract."""

  #: Names of the networks, e.g. ``("disc", "gen")``; each gets its own optimizer
  #: (``config.optim.<name>``, falling back to ``config.optim.default``).
  networks: tuple[str, ...] = ("model",)
  #: Whether the networks compute in ``train.compute_dtype`` (module docstring); the config check
  #: refuses ``train.compute_dtype`` other than float32 for the families that do not.
  mixed_precision: bool = False
  #: The training objective in a few words, for tables that compare families (e.g. "ELBO").
  objective: str = ""
  #: Whether ``sample.temperature`` changes this family's samples (a latent's scale, the logits'
  #: temperature); setup refuses a temperature other than 1 for the families whose samplers have none.
  sample_temperature: bool = False

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    self.config = config
    self.spec = spec

  @classmethod
  def defaults(cls) -> dict:
    """This family's config defaults, declared once in its own file: a nested dict with any of the
    groups ``model`` (every ``config.model`` field the family reads, documented there), ``sample``
    (its sampling controls), ``optim`` (per-network optimizers), ``train`` and ``eval``.
    ``config_defaults.base(name)`` merges them over the shared defaults, so a config file sets only
    what differs."""
    return {}

  @property
  def compute_dtype(self) -> jnp.dtype:
    """``train.compute_dtype`` as a dtype: what the networks' forward pass computes in."""
    return jnp.dtype(self.config.train.get("compute_dtype", "float32"))

  def sampling_controls(self) -> dict[str, Any]:
    """``temperature``, ``top_k``, ``top_p`` of ``config.sample`` for :func:`jaxgen.sampling.sample_logits`,
    read each time a sampler is traced: a sampler traced after ``config.sample`` changes uses the
    new values (what a temperature sweep over one restored model does). The families that sample
    from logits (transformer, PixelCNN, PixelRNN, WaveNet) also call it once at construction, so
    bad controls fail before any training."""
    return sampling.controls_from_config(self.config.sample)

  def condition_classes(self) -> int:
    """Classes to condition on: ``spec.num_classes`` when ``config.model.conditional`` is set, else 0.

    Raises a ``UserError`` when the model is conditional and the data set has no labels.
    """
    if not self.config.model.conditional:
      return 0
    if self.spec.num_classes <= 0:
      raise UserError(f"model.conditional=True but data set {self.spec.name!r} has no labels; "
                      "set --config.model.conditional=False")
    return self.spec.num_classes

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, State]:
    """Initial ``(params, state)`` from an example batch (shapes only matter)."""

  @abc.abstractmethod
  def update_groups(self) -> Sequence[UpdateGroup]:
    """The ordered optimizer updates of one training step."""

  @abc.abstractmethod
  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    """``num`` samples in model space, shape ``[num, *spec.shape]``."""

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """Held-out metrics of one batch (``[B]`` per example, or scalars); by default the losses of
    every update group."""
    out = {}
    for group in self.update_groups():
      loss, (metrics, _) = group.loss_fn(params, state, batch, rng)
      out[f"{group.network}/loss"] = loss
      out.update({f"{group.network}/{k}": v for k, v in metrics.items()})
    return out


class MaximumLikelihoodFamily(Family):
  """A one-network family trained by exact maximum likelihood.

  Subclasses give ``per_example_metrics(params, batch) -> {"nll_nats": [B], ...}``; training
  minimises the batch mean of ``nll_nats`` (every metric is logged as its mean) and evaluation
  reports every metric per example.
  """

  @abc.abstractmethod
  def per_example_metrics(self, params: Params, batch: Batch) -> Metrics:
    """Per-example ``[B]`` metrics, the exact ``"nll_nats"`` among them."""

  def update_groups(self) -> Sequence[UpdateGroup]:
    def loss_fn(params, state, batch, rng):
      del rng
      metrics = {k: jax.numpy.mean(v) for k, v in self.per_example_metrics(params, batch).items()}
      return metrics["nll_nats"], (metrics, state)

    return [UpdateGroup("model", loss_fn)]

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    return self.per_example_metrics(params, batch)


FAMILIES: Registry[type[Family]] = Registry("model family")


def build(config: ml_collections.ConfigDict, spec: DataSpec) -> Family:
  """The family named by ``config.model.family``, constructed for this data."""
  return FAMILIES.get(config.model.family)(config, spec)
