"""Vector quantisation (van den Oord et al. 2017): nearest codes, straight-through estimator, EMA
codebook with dead-code restarts, code usage and perplexity.

Shapes: encoder outputs ``z [N, D]`` (a grid ``[B, h, w, D]`` flattened), codebook ``e [K, D]``,
codes ``k [N]`` int32 in ``{0..K-1}``.

* Quantisation: ``k_n = argmin_j ||z_n - e_j||^2``, ``q_n = e_{k_n}``.
* Straight-through: the decoder reads ``z + sg(q - z)`` (value ``q``, gradient passed to ``z``
  unchanged), so ``d loss / d z`` equals the decoder's gradient at the quantised point ``q``.
* EMA codebook (non-gradient state ``{"codebook", "cluster_size", "embed_sum"}``; decay ``g``,
  ``n_j = #{n : k_n = j}``, ``s_j = sum_{n : k_n = j} z_n`` over the batch):

      N_j <- g N_j + (1 - g) n_j,     m_j <- g m_j + (1 - g) s_j,
      e_j <- m_j / N~_j,              N~_j = (N_j + eps) / (sum_i N_i + K eps) * sum_i N_i

  (``N~`` is the Laplace-smoothed count of Sonnet's ``VectorQuantizerEMA``, so an unused code's
  vector stays finite). ``N_j = 1``, ``m_j = e_j`` at initialisation.
* Dead-code restarts: after the update, every code with ``N_j < threshold`` is moved onto an encoder
  output drawn uniformly from the batch (``e_j = m_j = z_r``, ``N_j = 1``), so codes the encoder
  never reaches come back into use (as in Jukebox, Dhariwal et al. 2020).
* Usage: the fraction of codes used in the batch; perplexity ``exp(-sum_j p_j log p_j)``,
  ``p_j = n_j / N``: ``K`` for uniform usage, 1 when one code takes everything.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_stats(rng: jax.Array, num_codes: int, dim: int) -> dict[str, jax.Array]:
  """EMA state: codebook ``~ N(0, 1) [K, D]``, ``cluster_size = 1``, ``embed_sum = codebook``."""
  codebook = jax.random.normal(rng, (num_codes, dim))
  return {"codebook": codebook, "cluster_size": jnp.ones((num_codes,)), "embed_sum": jnp.copy(codebook)}


def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """``argmin_j ||z_n - e_j||^2`` for every row: ``[N, D], [K, D] -> int32 [N]``."""
  d = jnp.sum(z**2, -1, keepdims=True) - 2.0 * z @ codebook.T + jnp.sum(codebook**2, -1)
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """``z + sg(q - z)``: the value of ``q`` with the gradient of the identity in ``z``."""
  return z + jax.lax.stop_gradient(q - z)


def code_counts(codes: jax.Array, num_codes: int, weights: jax.Array | None = None) -> jax.Array:
  """``n_j``: how often each code occurs in ``codes [N]`` (each counted with its weight ``[N]``,
  default 1), float ``[K]``."""
  return jnp.zeros((num_codes,)).at[codes].add(1.0 if weights is None else weights)


def ema_update(stats: dict[str, jax.Array], z: jax.Array, codes: jax.Array, decay: float,
               eps: float = 1e-5) -> dict[str, jax.Array]:
  """One EMA step of the codebook (module docstring) from encoder outputs ``z [N, D]`` and their
  codes ``[N]``; no gradient flows through it."""
  z = jax.lax.stop_gradient(z)
  num_codes = stats["codebook"].shape[0]
  counts = code_counts(codes, num_codes)
  sums = jnp.zeros_like(stats["embed_sum"]).at[codes].add(z)
  cluster = decay * stats["cluster_size"] + (1.0 - decay) * counts
  embed_sum = decay * stats["embed_sum"] + (1.0 - decay) * sums
  total = jnp.sum(cluster)
  smoothed = (cluster + eps) / (total + num_codes * eps) * total
  return {"codebook": embed_sum / smoothed[:, None], "cluster_size": cluster, "embed_sum": embed_sum}


def restart_dead_codes(stats: dict[str, jax.Array], z: jax.Array, rng: jax.Array,
                       threshold: float) -> tuple[dict[str, jax.Array], jax.Array]:
  """Codes with ``cluster_size < threshold`` moved onto random rows of ``z [N, D]``; returns the new
  stats and the number of codes restarted."""
  z = jax.lax.stop_gradient(z)
  dead = stats["cluster_size"] < threshold
  fresh = z[jax.random.randint(rng, dead.shape, 0, z.shape[0])]
  new = {"codebook": jnp.where(dead[:, None], fresh, stats["codebook"]),
         "embed_sum": jnp.where(dead[:, None], fresh, stats["embed_sum"]),
         "cluster_size": jnp.where(dead, 1.0, stats["cluster_size"])}
  return new, jnp.sum(dead)


def perplexity(counts: jax.Array) -> jax.Array:
  """``exp(H(p))`` of the code distribution ``p = counts / sum(counts)`` (0 log 0 = 0)."""
  p = counts / jnp.maximum(jnp.sum(counts), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def usage(counts: jax.Array) -> jax.Array:
  """Fraction of the codes used at least once."""
  return jnp.mean(counts > 0)
