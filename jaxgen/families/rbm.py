"""Restricted Boltzmann machine (``rbm``), trained by contrastive divergence (the maths:
:mod:`jaxgen.nn.rbm`).

Data. Each example is flattened to ``v [V]`` (``V = spec.dims``). Bernoulli visibles
(``model.visible="bernoulli"``) model binary images (``data.binarize=static|dynamic``: values in
``{0, 1}``); Gaussian visibles model real vectors: images (with ``data.dequantize=True`` the density
bounds the discrete likelihood, as for the flows) or 2-D points.

Training: one update group ``model`` whose "loss" is the CD surrogate ``mean F(v) - mean F(v-)``
(negative particles ``v-`` constant): it is *not* a likelihood and its value says little, but its
gradient is minus the positive-minus-negative statistics, so the optimizer performs the CD-k
(``model.persistent=False``: ``model.cd_k`` Gibbs steps from the data) or persistent CD update
(``model.persistent=True``: ``model.cd_k`` steps from the persistent chains). Logged monitors:
``free_energy`` (mean ``F`` of the batch), ``recon_error`` (squared error of the mean-field
reconstruction ``E[v | p(h | v)]``) and, for Bernoulli visibles, ``pseudo_log_likelihood`` (exact
over all bits, nats per example).

State: with PCD, ``{"model": {"chains": {"visible": [model.persistent_chains, V]}}}``, started from
noise at init and replaced by every update's negative particles. It is checkpointed with the params,
so a resumed run continues the same chains bit for bit.

Held-out metrics (``eval_metrics``, per example): ``free_energy``, ``recon_error`` and (Bernoulli)
``pseudo_log_likelihood``. ``log p(v) = -F(v) - log Z`` needs the partition function: the ``ais``
evaluator (:mod:`jaxgen.evaluation.ais`, in ``eval.metrics`` by default) estimates ``log Z`` by
annealed importance sampling and reports the held-out log-likelihood as an estimate.

Sampling: ``sample.gibbs_steps`` block Gibbs steps from noise (random bits / standard normals);
with ``sample.final_mean`` the returned images are the conditional means ``E[v | h]`` (pixel
probabilities) of one more hidden draw, as RBM papers show them, else the last visible draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_defaults
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.nn.rbm import RBM


def check_visible_data(visible: str, spec: DataSpec) -> None:
  """``UserError`` unless RBM visibles of kind ``visible`` can model the data of ``spec``."""
  if visible == "bernoulli" and not (spec.modality == "image" and spec.levels == 2):
    raise UserError(f"model.visible='bernoulli' models binary images and {spec.name!r} is not binary: "
                    "set data.binarize=dynamic (or static), or model.visible=gaussian")
  if visible == "gaussian" and spec.modality not in ("image", "points"):
    raise UserError(f"model.visible='gaussian' models real vectors, not {spec.modality} tokens: "
                    "use an image or points data set")


def sample_defaults() -> dict:
  """The ``config.sample`` controls of the Gibbs samplers (RBM and DBN)."""
  return {
      "gibbs_steps": 1000,  # block Gibbs steps from noise
      "final_mean": True,  # return E[v | h] of a last hidden draw instead of the last visible draw
  }


@FAMILIES.register("rbm")
class RBMFamily(Family):
  """One RBM, network ``model`` (module docstring; config in :meth:`defaults`)."""

  objective = "contrastive divergence"

  #: What the ``ais`` evaluator reports: ``-F(v) - log Z`` is the exact log-likelihood given ``Z``.
  ais_metric = "nll_nats"

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "visible": "bernoulli",  # bernoulli (binary data) | gaussian (real data, learned sigma)
            "hidden": 128,  # hidden units
            "cd_k": 1,  # Gibbs steps per update (the k of CD-k / PCD-k)
            "persistent": True,  # PCD: negative chains persist across updates (else CD-k from the data)
            "persistent_chains": 64,  # PCD: number of persistent chains
        },
        "sample": sample_defaults(),
        "optim": {"default": config_defaults.optimizer(name="sgd", learning_rate=0.05, momentum=0.5)},
        "eval": {"metrics": ("heldout", "samples", "ais")},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m = config.model
    check_visible_data(str(m.visible), spec)
    self.rbm = RBM(str(m.visible))
    self.hidden, self.cd_k = int(m.hidden), int(m.cd_k)
    self.persistent, self.num_chains = bool(m.persistent), int(m.persistent_chains)
    if self.hidden < 1 or self.cd_k < 1 or (self.persistent and self.num_chains < 1):
      raise UserError(f"model.hidden={self.hidden}, model.cd_k={self.cd_k} and model.persistent_chains="
                      f"{self.num_chains} must be positive: raise them")

  def _flat(self, batch) -> jax.Array:
    x = batch["x"]
    return x.reshape(x.shape[0], -1).astype(jnp.float32)

  def init(self, rng, batch):
    key_params, key_chains = jax.random.split(rng)
    v = self._flat(batch)
    params = self.rbm.init(key_params, self.hidden, v)
    if not self.persistent:
      return {"model": params}, {}
    chains = self.rbm.noise(key_chains, self.num_chains, v.shape[-1])
    return {"model": params}, {"model": {"chains": {"visible": chains}}}

  def monitors(self, params, v: jax.Array) -> dict[str, jax.Array]:
    """Per-example ``free_energy``, ``recon_error`` and (Bernoulli) ``pseudo_log_likelihood``."""
    out = {"free_energy": self.rbm.free_energy(params, v), "recon_error": self.rbm.reconstruction_error(params, v)}
    if not self.rbm.gaussian:
      out["pseudo_log_likelihood"] = self.rbm.pseudo_log_likelihood(params, v)
    return out

  def update_groups(self):
    def loss_fn(params, state, batch, rng):
      p, v = params["model"], self._flat(batch)
      start = state["model"]["chains"]["visible"] if self.persistent else v
      loss, negative = self.rbm.cd_surrogate(p, v, start, rng, self.cd_k)
      metrics = {k: jnp.mean(x) for k, x in self.monitors(jax.lax.stop_gradient(p), v).items()}
      new_state = {"model": {"chains": {"visible": negative}}} if self.persistent else state
      return loss, (metrics, new_state)

    return [UpdateGroup("model", loss_fn)]

  def eval_metrics(self, params, state, batch, rng):
    return self.monitors(params["model"], self._flat(batch))

  def sample(self, params, state, rng, num):
    """``num`` samples in model space (module docstring)."""
    p, cfg = params["model"], self.config.sample
    key_start, key_chain, key_last = jax.random.split(rng, 3)
    v = self.rbm.gibbs(p, self.rbm.noise(key_start, num, self.spec.dims), key_chain, int(cfg.gibbs_steps))
    if cfg.final_mean:
      v = self.rbm.visible_mean(p, self.rbm.sample_hidden(p, v, key_last))
    return v.reshape(num, *self.spec.shape)

  # --- the protocol of the ais evaluator ---------------------------------------------------------

  def ais_visible(self, params, batch) -> jax.Array:
    """The data as the RBM's visible vectors ``[B, V]`` (their mean fits the AIS base model)."""
    del params
    return self._flat(batch)

  def log_partition_ais(self, params, rng, chains: int, betas, data_mean) -> tuple[jax.Array, jax.Array]:
    """``(log Z, standard error)`` by AIS from the base-rate model of ``data_mean [V]``."""
    return self.rbm.log_partition_ais(params["model"], rng, chains, betas, self.rbm.base_rate(data_mean))

  def unnormalized_log_prob(self, params, batch, rng) -> jax.Array:
    """``-F(v)``, so that ``log p(v) = -F(v) - log Z``: ``[B]``."""
    del rng
    return -self.rbm.free_energy(params["model"], self._flat(batch))
