"""Restricted Boltzmann machines (Smolensky 1986; Hinton 2002): energy, free energy, block Gibbs
sampling, the contrastive-divergence surrogate, and annealed importance sampling of ``log Z``.

Units. Visible ``v [B, V]``: Bernoulli ``{0, 1}`` or Gaussian reals; hidden ``h [B, H]``: Bernoulli.
Parameters ``{"w": [V, H], "visible_bias": b [V], "hidden_bias": c [H]}``, plus ``"log_sigma" [V]``
(per-visible standard deviation ``sigma = exp(log_sigma)``, learned) for Gaussian visibles. With
``v^ = v`` (Bernoulli) or ``v^ = v / sigma`` (Gaussian):

    Bernoulli:  E(v, h) = -b.v - c.h - v^ W h
    Gaussian:   E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c.h - v^ W h
    p(v, h) = exp(-E(v, h)) / Z

Free energy ``F(v) = -log sum_h exp(-E(v, h))``, so ``p(v) = exp(-F(v)) / Z``:

    Bernoulli:  F(v) = -b.v - sum_j softplus(c_j + (v^ W)_j)
    Gaussian:   F(v) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - sum_j softplus(c_j + (v^ W)_j)

Conditionals (the layers are conditionally independent given the other):
``p(h_j = 1 | v) = sigmoid(c_j + (v^ W)_j)``; ``p(v_i = 1 | h) = sigmoid(b_i + (W h)_i)``
(Bernoulli) or ``v | h ~ N(b + sigma * W h, sigma^2)`` (Gaussian). One *block Gibbs step* draws
``h ~ p(h | v)`` then ``v ~ p(v | h)``; it leaves ``p(v)`` invariant.

Contrastive divergence. ``d F(v) / d theta`` is minus the sufficient statistics with the hidden
units at their conditional means, e.g. ``d F / d W = -v^T p(h | v)``, so the log-likelihood gradient
``-E_data[dF] + E_model[dF]`` is *positive minus negative statistics*. :func:`cd_surrogate` returns
``mean_data F(v) - mean_neg F(v-)`` with the negative particles ``v-`` held constant
(``stop_gradient``): its value is no likelihood (it measures nothing useful, and may go negative),
but its gradient is exactly minus (positive - negative statistics), so gradient *descent* on it is
the CD / PCD update. The negative particles come from ``k`` Gibbs steps started at the data (CD-k,
Hinton 2002) or at the persistent chains of the previous update (PCD, Tieleman 2008).

Annealed importance sampling (Salakhutdinov & Murray 2008). Intermediate joints
``p_beta(v, h) ∝ exp(-(1 - beta) E_A(v) - beta E(v, h))`` from a base ``A`` with independent
visibles (``E_A``: Bernoulli with logits ``a``, Gaussian ``N(a, sigma^2)``; ``a`` fitted to data,
the "base-rate model") and no coupling, to the RBM at ``beta = 1``. Summing out ``h``:

    log p*_beta(v) = -(1 - beta) E_A(v) - beta E_vis(v) + sum_j softplus(beta (c_j + (v^ W)_j))

with ``E_vis`` the visible term of ``F`` (``-b.v``, or the Gaussian quadratic), and
``log Z_0 = log sum_v exp(-E_A(v)) + H log 2``. Chains start exactly in ``p_0``; at ``beta_k`` the
importance weight gains ``log p*_k(v) - log p*_{k-1}(v)`` and ``v`` moves by one Gibbs step of
``p_beta_k``. ``log Z ≈ log Z_0 + log mean_m w_m`` (``Z`` unbiased; ``log Z`` biased low by Jensen,
which biases the log-likelihood *up*), standard error by the delta method
``std(w) / (sqrt(M) mean(w))``.

Random keys: :func:`gibbs` step ``t`` uses ``fold_in(key, t)``, split into the hidden and visible
draws (``jax.random.split``); draws are ``uniform < probability`` (``jax.random.bernoulli``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from jaxgen import losses
from jaxgen.errors import UserError

VISIBLE = ("bernoulli", "gaussian")
#: Salakhutdinov & Murray's schedule: 500 betas in [0, 0.5), 4000 in [0.5, 0.9), 10000 in [0.9, 1].
AIS_SEGMENTS = ((0.0, 0.5, 500), (0.5, 0.9, 4000), (0.9, 1.0, 10000))
#: Clip of the base-rate model's probabilities (Bernoulli visibles): logits stay within +-log(1/eps).
BASE_RATE_EPS = 1e-3


def ais_betas(num: int) -> np.ndarray:
  """``num + 1`` inverse temperatures ``0 = beta_0 < ... < beta_num = 1``, spaced as
  Salakhutdinov & Murray (2008) spaced their 14,500 (in proportion, at least one per segment)."""
  if num < len(AIS_SEGMENTS):
    raise UserError(f"eval.ais.betas={num} is too few: use at least {len(AIS_SEGMENTS)} (the paper used 14500)")
  total = sum(n for _, _, n in AIS_SEGMENTS)
  counts = [max(1, round(num * n / total)) for _, _, n in AIS_SEGMENTS[:-1]]
  counts.append(num - sum(counts))
  parts = [np.linspace(lo, hi, n, endpoint=False) for (lo, hi, _), n in zip(AIS_SEGMENTS, counts)]
  return np.concatenate([*parts, [1.0]])


@dataclasses.dataclass(frozen=True)
class RBM:
  """The maths of one RBM with ``visible`` units (module docstring); params are explicit pytrees."""

  visible: str = "bernoulli"  # bernoulli | gaussian

  def __post_init__(self):
    if self.visible not in VISIBLE:
      raise UserError(f"model.visible={self.visible!r} is not one of {list(VISIBLE)}: set one of them")

  @property
  def gaussian(self) -> bool:
    return self.visible == "gaussian"

  def init(self, rng: jax.Array, num_hidden: int, data: jax.Array) -> dict:
    """Params for ``data [N, V]`` (Hinton 2010): ``W ~ N(0, 0.01^2)``, ``c = 0``, visible biases from
    the data (Bernoulli: ``logit`` of the clipped mean; Gaussian: the mean, ``sigma`` the std
    floored at 0.1)."""
    mean = jnp.mean(data, axis=0)
    params = {"w": 0.01 * jax.random.normal(rng, (data.shape[-1], num_hidden)),
              "hidden_bias": jnp.zeros((num_hidden,))}
    if self.gaussian:
      params["visible_bias"] = mean
      params["log_sigma"] = jnp.log(jnp.maximum(jnp.std(data, axis=0), 0.1))
    else:
      params["visible_bias"] = self.base_rate(mean)
    return params

  def base_rate(self, mean: jax.Array) -> jax.Array:
    """The base model's visible parameters ``a`` for data of mean ``mean [V]``: Bernoulli logits of
    the mean clipped to ``[eps, 1 - eps]``; the mean itself for Gaussian visibles."""
    if self.gaussian:
      return mean
    p = jnp.clip(mean, BASE_RATE_EPS, 1.0 - BASE_RATE_EPS)
    return jnp.log(p) - jnp.log1p(-p)

  # --- energies ----------------------------------------------------------------------------------

  def _scaled(self, params, v):
    return v * jnp.exp(-params["log_sigma"]) if self.gaussian else v

  def hidden_logits(self, params, v: jax.Array) -> jax.Array:
    """``c + v^ W``: ``[B, H]``."""
    return params["hidden_bias"] + self._scaled(params, v) @ params["w"]

  def hidden_probs(self, params, v: jax.Array) -> jax.Array:
    """``p(h = 1 | v)``: ``[B, H]``."""
    return jax.nn.sigmoid(self.hidden_logits(params, v))

  def _visible_energy(self, params, v, bias):
    """The ``h``-free part of the energy with visible bias (or mean) ``bias``: ``[B]``."""
    if self.gaussian:
      return jnp.sum(0.5 * ((v - bias) * jnp.exp(-params["log_sigma"])) ** 2, axis=-1)
    return -v @ bias

  def free_energy(self, params, v: jax.Array) -> jax.Array:
    """``F(v)``: ``[B]`` (module docstring)."""
    return (self._visible_energy(params, v, params["visible_bias"])
            - jnp.sum(jax.nn.softplus(self.hidden_logits(params, v)), axis=-1))

  def energy(self, params, v: jax.Array, h: jax.Array) -> jax.Array:
    """``E(v, h)``: ``[B]``."""
    return (self._visible_energy(params, v, params["visible_bias"])
            - jnp.sum(h * self.hidden_logits(params, v), axis=-1))

  # --- conditionals and Gibbs sampling -----------------------------------------------------------

  def _visible_natural(self, params, h):
    """Bernoulli: the logits ``b + W h``; Gaussian: the mean ``b + sigma * W h``. ``[B, V]``."""
    wh = h @ params["w"].T
    return params["visible_bias"] + (jnp.exp(params["log_sigma"]) * wh if self.gaussian else wh)

  def visible_mean(self, params, h: jax.Array) -> jax.Array:
    """``E[v | h]``: probabilities (Bernoulli) or the mean (Gaussian), ``[B, V]``."""
    natural = self._visible_natural(params, h)
    return natural if self.gaussian else jax.nn.sigmoid(natural)

  def _draw_visible(self, params, natural, key):
    if self.gaussian:
      return natural + jnp.exp(params["log_sigma"]) * jax.random.normal(key, natural.shape)
    return jax.random.bernoulli(key, jax.nn.sigmoid(natural)).astype(jnp.float32)

  def visible_log_prob(self, params, v: jax.Array, h: jax.Array) -> jax.Array:
    """``log p(v | h)``: ``[B]``."""
    natural = self._visible_natural(params, h)
    if self.gaussian:
      return losses.gaussian_log_prob(v, natural, params["log_sigma"])
    return losses.bernoulli_log_prob(v, natural)

  def sample_hidden(self, params, v: jax.Array, key: jax.Array) -> jax.Array:
    return jax.random.bernoulli(key, self.hidden_probs(params, v)).astype(jnp.float32)

  def sample_visible(self, params, h: jax.Array, key: jax.Array) -> jax.Array:
    return self._draw_visible(params, self._visible_natural(params, h), key)

  def gibbs_step(self, params, v: jax.Array, key: jax.Array) -> jax.Array:
    """One block Gibbs step ``v -> h ~ p(h | v) -> v' ~ p(v | h)``."""
    key_h, key_v = jax.random.split(key)
    return self.sample_visible(params, self.sample_hidden(params, v, key_h), key_v)

  def gibbs(self, params, v: jax.Array, key: jax.Array, steps: int) -> jax.Array:
    """``steps`` block Gibbs steps from ``v``; step ``t`` uses ``fold_in(key, t)``."""
    return jax.lax.fori_loop(0, steps, lambda t, v: self.gibbs_step(params, v, jax.random.fold_in(key, t)), v)

  def noise(self, key: jax.Array, num: int, num_visible: int) -> jax.Array:
    """Chain starts: uniform random bits (Bernoulli) or standard normals (Gaussian), ``[num, V]``."""
    if self.gaussian:
      return jax.random.normal(key, (num, num_visible))
    return jax.random.bernoulli(key, 0.5, (num, num_visible)).astype(jnp.float32)

  # --- training ----------------------------------------------------------------------------------

  def cd_surrogate(self, params, v: jax.Array, start: jax.Array, key: jax.Array, steps: int
                   ) -> tuple[jax.Array, jax.Array]:
    """``(mean F(v) - mean F(v-), v-)``: the CD surrogate and the negative particles ``v-``, drawn by
    ``steps`` Gibbs steps from ``start`` (the data for CD-k, the persistent chains for PCD) and held
    constant. Its gradient is ``-(positive - negative statistics)`` (module docstring)."""
    negative = jax.lax.stop_gradient(self.gibbs(params, start, key, steps))
    return jnp.mean(self.free_energy(params, v)) - jnp.mean(self.free_energy(params, negative)), negative

  def reconstruction_error(self, params, v: jax.Array) -> jax.Array:
    """``|v - E[v | h = p(h | v)]|^2`` per example (a monitor, not an objective): ``[B]``."""
    return jnp.sum((v - self.visible_mean(params, self.hidden_probs(params, v))) ** 2, axis=-1)

  def pseudo_log_likelihood(self, params, v: jax.Array) -> jax.Array:
    """Bernoulli visibles: ``sum_i log p(v_i | v_-i) = sum_i log sigmoid(F(v with bit i flipped) -
    F(v))``, exact over all ``V`` bits, in nats per example: ``[B]`` (a monitor)."""
    logits = self.hidden_logits(params, v)  # [B, H]
    sign = 1.0 - 2.0 * v  # flipping bit i adds sign_i to v_i
    flipped = logits[:, None, :] + sign[:, :, None] * params["w"][None]  # [B, V, H]
    delta_f = (-sign * params["visible_bias"]
               - jnp.sum(jax.nn.softplus(flipped), axis=-1) + jnp.sum(jax.nn.softplus(logits), axis=-1)[:, None])
    return jnp.sum(jax.nn.log_sigmoid(delta_f), axis=-1)

  # --- annealed importance sampling ----------------------------------------------------------------

  def _annealed_log_p(self, params, v, beta, base):
    """``log p*_beta(v)`` of the AIS path from the base ``base [V]`` (module docstring): ``[B]``."""
    return (-(1.0 - beta) * self._visible_energy(params, v, base)
            - beta * self._visible_energy(params, v, params["visible_bias"])
            + jnp.sum(jax.nn.softplus(beta * self.hidden_logits(params, v)), axis=-1))

  def _annealed_step(self, params, v, beta, base, key):
    """One Gibbs step of ``p_beta``: ``h ~ sigmoid(beta (c + v^ W))``, then ``v`` from the visible
    natural parameter ``(1 - beta) a + beta (b + [sigma] W h)``."""
    key_h, key_v = jax.random.split(key)
    h = jax.random.bernoulli(key_h, jax.nn.sigmoid(beta * self.hidden_logits(params, v))).astype(jnp.float32)
    return self._draw_visible(params, (1.0 - beta) * base + beta * self._visible_natural(params, h), key_v)

  def _base_log_partition(self, params, base, num_hidden):
    if self.gaussian:
      log_visible = jnp.sum(params["log_sigma"]) + 0.5 * base.shape[-1] * math.log(2.0 * math.pi)
    else:
      log_visible = jnp.sum(jax.nn.softplus(base))
    return log_visible + num_hidden * math.log(2.0)

  def ais_log_weights(self, params, key: jax.Array, chains: int, betas: jax.Array,
                      base: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log w [chains], log Z_0)`` of AIS along ``betas [K + 1]`` (``0 .. 1``) from the base model
    with visible parameters ``base [V]`` (:meth:`base_rate`). Step ``k`` uses ``fold_in(key, k)``."""
    v = self._draw_visible(params, jnp.broadcast_to(base, (chains, base.shape[-1])), jax.random.fold_in(key, 0))

    def body(carry, inputs):
      v, log_w = carry
      k, beta_prev, beta = inputs
      log_w = log_w + self._annealed_log_p(params, v, beta, base) - self._annealed_log_p(params, v, beta_prev, base)
      return (self._annealed_step(params, v, beta, base, jax.random.fold_in(key, k)), log_w), None

    betas = jnp.asarray(betas, jnp.float32)
    inner = jnp.arange(1, betas.shape[0] - 1)
    (v, log_w), _ = jax.lax.scan(body, (v, jnp.zeros((chains,))), (inner, betas[:-2], betas[1:-1]))
    log_w = log_w + self._annealed_log_p(params, v, betas[-1], base) - self._annealed_log_p(params, v, betas[-2], base)
    return log_w, self._base_log_partition(params, base, params["w"].shape[-1])

  def log_partition_ais(self, params, key: jax.Array, chains: int, betas: jax.Array,
                        base: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log Z estimate, its standard error)`` by AIS (module docstring)."""
    log_w, log_z0 = self.ais_log_weights(params, key, chains, betas, base)
    log_mean_w = jax.scipy.special.logsumexp(log_w) - math.log(chains)
    relative = jnp.exp(log_w - log_mean_w)  # w / mean(w)
    return log_z0 + log_mean_w, jnp.std(relative, ddof=1) / math.sqrt(chains)
