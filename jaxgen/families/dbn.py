"""Deep belief network (``dbn``, Hinton, Osindero & Teh 2006): RBMs stacked by greedy layer-wise
training (the maths of each: :mod:`jaxgen.nn.rbm`).

Layers. ``model.layers = (H_1, ..., H_L)``: RBM ``l`` (``l = 0 .. L-1``) has visibles ``x_l`` and
hiddens ``x_{l+1}`` of size ``H_{l+1}``; ``x_0 = v`` is the flattened example (``model.visible``
units, as in the ``rbm`` family), every higher visible layer is Bernoulli.

Greedy training, one network ``model`` holding every layer's params (``layer_<l>``). Layer ``l``
trains during the steps ``[l S, (l + 1) S)`` (``S = model.steps_per_layer``; the top layer keeps
training after ``L S``) by the CD / PCD update of the ``rbm`` family, on the *hidden probabilities*
of the layer below: ``x_{l} = p(x_l = 1 | x_{l-1})`` of the deterministic up-pass through the
lower layers (constant: ``stop_gradient``). The step counter lives in the state
(``{"model": {"schedule": {"step": int32}, "chains": {"layer_<l>": [P, H_l]}}}``, the chains with
``model.persistent``), so a resumed run continues in the same layer with the same chains, also
across layer boundaries. The other layers get exactly zero gradient; ``optim.default`` must be plain
SGD (``momentum=0``), whose zero updates leave them unchanged (momentum or Adam would keep moving a
finished layer). Logged: the CD surrogate (not a likelihood), ``layer``, and the active layer's
``recon_error`` and ``free_energy`` on its input.

Generative model: ``p(x_{L-1}, x_L)`` is the top RBM, ``p(x_l | x_{l+1})`` for ``l < L-1`` the
lower RBMs' visible conditionals (a sigmoid belief net). Sampling: ``sample.gibbs_steps`` block
Gibbs steps of the top RBM from noise, a hidden draw ``x_L``, then a down pass drawing each
``x_l ~ p(x_l | x_{l+1})``; ``sample.final_mean`` returns ``E[v | x_1]`` instead of the last draw.

Likelihood (Salakhutdinov & Murray 2008, sec. 4): with the factorial up-pass
``q(x_{l+1} | x_l) = p_l(x_{l+1} | x_l)``,

    log p(v) >= E_q[ sum_{l < L-1} log p(x_l | x_{l+1}) - F_top(x_{L-1}) ] + sum_l H(q(. | x_l)) - log Z_top

(``H``: the entropy of the factorial Bernoulli). :meth:`DBNFamily.unnormalized_log_prob` is one
sample of the bracket plus the entropies; the ``ais`` evaluator subtracts ``log Z_top`` estimated by
AIS and reports ``ais_nll_bound_nats`` (an estimated upper bound on the NLL; for ``L = 1`` the RBM's
exact ``-F(v)``). Held-out metrics (``eval_metrics``): ``recon_error``, the squared error of the
mean-field up-down reconstruction through every layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_defaults, losses
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup
from jaxgen.families.rbm import check_visible_data, sample_defaults
from jaxgen.nn.rbm import RBM


@FAMILIES.register("dbn")
class DBNFamily(Family):
  """Greedily trained stacked RBMs, network ``model`` (module docstring; config in :meth:`defaults`)."""

  objective = "greedy layer-wise contrastive divergence"

  #: What the ``ais`` evaluator reports: the variational bound with the top RBM's ``log Z``.
  ais_metric = "nll_bound_nats"

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "visible": "bernoulli",  # the data's units: bernoulli (binary data) | gaussian (real data)
            "layers": (128, 128),  # hidden units of each RBM, bottom to top
            "steps_per_layer": 1500,  # S: layer l trains during steps [l S, (l + 1) S); the top one after too
            "cd_k": 1,  # Gibbs steps per update (the k of CD-k / PCD-k)
            "persistent": True,  # PCD (else CD-k from the layer's data)
            "persistent_chains": 64,  # PCD: chains per layer
        },
        "sample": sample_defaults(),
        # Plain SGD: a frozen layer's zero gradient must give a zero update.
        "optim": {"default": config_defaults.optimizer(name="sgd", learning_rate=0.05, momentum=0.0)},
        "eval": {"metrics": ("heldout", "samples", "ais")},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    m = config.model
    check_visible_data(str(m.visible), spec)
    self.sizes = (spec.dims, *(int(h) for h in m.layers))
    self.steps_per_layer, self.cd_k = int(m.steps_per_layer), int(m.cd_k)
    self.persistent, self.num_chains = bool(m.persistent), int(m.persistent_chains)
    if len(self.sizes) < 2 or min(self.sizes) < 1:
      raise UserError(f"model.layers={tuple(m.layers)} must list at least one positive layer size, e.g. (128, 128)")
    if self.steps_per_layer < 1 or self.cd_k < 1 or (self.persistent and self.num_chains < 1):
      raise UserError(f"model.steps_per_layer={self.steps_per_layer}, model.cd_k={self.cd_k} and "
                      f"model.persistent_chains={self.num_chains} must be positive: raise them")
    optim = config.optim.get("model", config.optim.default)
    if optim.name != "sgd" or optim.momentum != 0:
      raise UserError(f"dbn trains one layer at a time and needs plain SGD, whose zero updates leave the other "
                      f"layers unchanged (optimizer {optim.name!r}, momentum {optim.momentum}): set "
                      "optim.default.name=sgd and optim.default.momentum=0")
    self.rbms = [RBM(str(m.visible))] + [RBM("bernoulli")] * (self.num_layers - 1)

  @property
  def num_layers(self) -> int:
    return len(self.sizes) - 1

  def _flat(self, batch) -> jax.Array:
    x = batch["x"]
    return x.reshape(x.shape[0], -1).astype(jnp.float32)

  def up(self, params, v: jax.Array, layers: int) -> jax.Array:
    """The hidden probabilities of RBM ``layers - 1`` in the deterministic up-pass (``v`` if 0)."""
    for l in range(layers):
      v = self.rbms[l].hidden_probs(params[f"layer_{l}"], v)
    return v

  def init(self, rng, batch):
    x, params, chains = self._flat(batch), {}, {}
    for l, rbm in enumerate(self.rbms):
      params[f"layer_{l}"] = rbm.init(jax.random.fold_in(rng, 2 * l), self.sizes[l + 1], x)
      chains[f"layer_{l}"] = rbm.noise(jax.random.fold_in(rng, 2 * l + 1), self.num_chains, self.sizes[l])
      x = rbm.hidden_probs(params[f"layer_{l}"], x)
    state = {"schedule": {"step": jnp.zeros((), jnp.int32)}}
    if self.persistent:
      state["chains"] = chains
    return {"model": params}, {"model": state}

  def active_layer(self, step: jax.Array) -> jax.Array:
    """The layer trained at ``step``: ``min(step // S, L - 1)``."""
    return jnp.minimum(step // self.steps_per_layer, self.num_layers - 1)

  def update_groups(self):
    def train_layer(l):
      def branch(params, chains, v, rng):
        x = jax.lax.stop_gradient(self.up(params, v, l))
        p, rbm = params[f"layer_{l}"], self.rbms[l]
        loss, negative = rbm.cd_surrogate(p, x, chains[f"layer_{l}"] if self.persistent else x, rng, self.cd_k)
        frozen = jax.lax.stop_gradient(p)
        metrics = {"recon_error": jnp.mean(rbm.reconstruction_error(frozen, x)),
                   "free_energy": jnp.mean(rbm.free_energy(frozen, x))}
        return loss, metrics, {**chains, f"layer_{l}": negative} if self.persistent else chains

      return branch

    branches = [train_layer(l) for l in range(self.num_layers)]

    def loss_fn(params, state, batch, rng):
      s = state["model"]
      step = s["schedule"]["step"]
      layer = self.active_layer(step)
      loss, metrics, chains = jax.lax.switch(layer, branches, params["model"], s.get("chains", {}),
                                             self._flat(batch), rng)
      new_state = {"schedule": {"step": step + 1}}
      if self.persistent:
        new_state["chains"] = chains
      return loss, ({**metrics, "layer": layer.astype(jnp.float32)}, {"model": new_state})

    return [UpdateGroup("model", loss_fn)]

  def eval_metrics(self, params, state, batch, rng):
    """Per-example ``recon_error`` of the mean-field up-down pass through every layer."""
    p, v = params["model"], self._flat(batch)
    x = self.up(p, v, self.num_layers)
    for l in reversed(range(self.num_layers)):
      x = self.rbms[l].visible_mean(p[f"layer_{l}"], x)
    return {"recon_error": jnp.sum((v - x) ** 2, axis=-1)}

  def sample(self, params, state, rng, num):
    """``num`` samples in model space (module docstring)."""
    p, cfg, top = params["model"], self.config.sample, self.num_layers - 1
    key_start, key_chain, key_hidden, key_down = jax.random.split(rng, 4)
    rbm, p_top = self.rbms[top], p[f"layer_{top}"]
    x = rbm.gibbs(p_top, rbm.noise(key_start, num, self.sizes[top]), key_chain, int(cfg.gibbs_steps))
    x = rbm.sample_hidden(p_top, x, key_hidden)  # x_L
    for l in reversed(range(self.num_layers)):
      if l == 0 and cfg.final_mean:
        x = self.rbms[0].visible_mean(p["layer_0"], x)
      else:
        x = self.rbms[l].sample_visible(p[f"layer_{l}"], x, jax.random.fold_in(key_down, l))
    return x.reshape(num, *self.spec.shape)

  # --- the protocol of the ais evaluator ---------------------------------------------------------

  def ais_visible(self, params, batch) -> jax.Array:
    """The top RBM's visible vectors for the data: up-pass hidden probabilities ``[B, H_{L-1}]``."""
    return self.up(params["model"], self._flat(batch), self.num_layers - 1)

  def log_partition_ais(self, params, rng, chains: int, betas, data_mean) -> tuple[jax.Array, jax.Array]:
    """``(log Z_top, standard error)`` of the top RBM by AIS from the base-rate model of ``data_mean``."""
    top = self.num_layers - 1
    return self.rbms[top].log_partition_ais(params["model"][f"layer_{top}"], rng, chains, betas,
                                            self.rbms[top].base_rate(data_mean))

  def unnormalized_log_prob(self, params, batch, rng) -> jax.Array:
    """One-sample estimate of the bound plus ``log Z_top`` (module docstring): ``[B]``."""
    p, x = params["model"], self._flat(batch)
    total = jnp.zeros(x.shape[:1])
    for l in range(self.num_layers - 1):
      rbm, p_l = self.rbms[l], p[f"layer_{l}"]
      logits = rbm.hidden_logits(p_l, x)
      h = jax.random.bernoulli(jax.random.fold_in(rng, l), jax.nn.sigmoid(logits)).astype(jnp.float32)
      entropy = -losses.bernoulli_log_prob(jax.nn.sigmoid(logits), logits)
      total = total + rbm.visible_log_prob(p_l, x, h) + entropy
      x = h
    top = self.num_layers - 1
    return total - self.rbms[top].free_energy(p[f"layer_{top}"], x)
