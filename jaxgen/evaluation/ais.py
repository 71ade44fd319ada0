"""``ais``: held-out log-likelihood of an energy-based model by annealed importance sampling
(Salakhutdinov & Murray 2008).

The family (``rbm``, ``dbn``) gives

* ``ais_visible(params, batch) -> [B, V]``: the data as the visible vectors of the RBM whose
  partition function is estimated (the top RBM of a DBN sees the lower layers' hidden probabilities);
* ``log_partition_ais(params, rng, chains, betas, data_mean) -> (log Z, standard error)``;
* ``unnormalized_log_prob(params, batch, rng) -> [B]``: ``log p(v) + log Z`` (RBM: ``-F(v)``), or a
  stochastic lower bound on it (DBN: the variational bound of the up-pass);
* ``ais_metric``: ``"nll_nats"`` or ``"nll_bound_nats"``, which of the two that makes the result.

Steps, with the EMA params:

1. the base-rate model: the mean of ``ais_visible`` over ``eval.num_batches`` batches of the
   training split (0 = all of it);
2. ``log Z`` from ``eval.ais.chains`` chains over ``eval.ais.betas`` intermediate distributions
   (spaced as the paper's 14,500; :func:`jaxgen.nn.rbm.ais_betas`);
3. ``nll = log Z - unnormalized_log_prob`` averaged over the held-out batches (as ``heldout``).

Keys: ``fold_in(EVAL_STREAM, step)`` split in two, the first for AIS, the second folded with the
batch index for the up-pass draws of ``unnormalized_log_prob``.

Reports ``ais_log_z``, ``ais_log_z_stderr`` and ``ais_<ais_metric>`` with ``ais_bits_per_dim``
(bits/dim of the raw data: :func:`jaxgen.evaluation.likelihood.continuous_nll_to_bits_per_dim`, no
offset for binary data). All are *estimates*: ``Z`` is unbiased, ``log Z`` is biased low (Jensen),
so the NLL tends to be *under*-estimated; the paper reports ``log Z`` with ``+-3`` standard errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen import parallel
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.evaluation.base import Evaluator, register
from jaxgen.evaluation.context import EVAL_STREAM, to_host
from jaxgen.nn.rbm import ais_betas

PROTOCOL = ("ais_visible", "log_partition_ais", "unnormalized_log_prob")


@register("ais")
class AIS(Evaluator):

  @classmethod
  def defaults(cls) -> dict:
    return {
        "every": 0,
        "chains": 100,  # independent AIS runs (the paper: 100)
        "betas": 14500,  # intermediate distributions (the paper: 14,500)
    }

  def check(self, config, spec, family) -> None:
    if family is None or not all(hasattr(family, name) for name in PROTOCOL):
      raise UserError("evaluator 'ais' estimates the partition function of an energy-based model "
                      "(families rbm, dbn); remove it from config.eval.metrics")
    settings = self.settings(config)
    if int(settings.chains) < 2:
      raise UserError(f"eval.ais.chains={settings.chains}: use at least 2 (for a standard error)")
    ais_betas(int(settings.betas))

  def _masked_sums(self, ctx, split: str, name: str, fn, key: jax.Array):
    """Sums over ``split`` of ``fn(params, batch, key_i) [B, ...]`` (``key_i = fold_in(key, i)`` for
    batch ``i``) weighted by the mask, and the number of examples."""
    cfg, exp = ctx.config.eval, ctx.exp

    def per_batch(params, batch, key):
      mask = batch["mask"]
      return jnp.tensordot(mask, fn(params, batch, key), axes=1), jnp.sum(mask)

    step = ctx.cached(f"ais_{name}", lambda: jax.jit(per_batch))
    total, count = 0.0, 0.0
    batches = ctx.data.split_batches(split, cfg.batch_size // jax.process_count(), cfg.num_batches)
    for i, local in enumerate(batches):
      s, n = step(ctx.ts.ema_params, parallel.global_batch(local, exp.mesh), jax.random.fold_in(key, i))
      total, count = total + to_host(s), count + float(to_host(n))
    return total, count

  def run(self, ctx) -> dict[str, float]:
    family, settings = ctx.family, self.settings(ctx.config)
    chains, betas = int(settings.chains), jnp.asarray(ais_betas(int(settings.betas)))
    key_z, key_bound = jax.random.split(ctx.key(EVAL_STREAM))
    total, count = self._masked_sums(ctx, "train", "base", lambda p, b, k: family.ais_visible(p, b), key_bound)
    estimate = ctx.cached(f"ais_log_z_{chains}", lambda: jax.jit(
        lambda p, k, b, m: family.log_partition_ais(p, k, chains, b, m)))
    log_z, stderr = (float(to_host(x)) for x in estimate(ctx.ts.ema_params, key_z, betas, jnp.asarray(total / count)))
    unnormalized, n = self._masked_sums(ctx, "test", "unnormalized", family.unnormalized_log_prob, key_bound)
    nll = log_z - float(unnormalized) / n
    return {"ais_log_z": log_z, "ais_log_z_stderr": stderr, f"ais_{family.ais_metric}": nll,
            "ais_bits_per_dim": float(likelihood.continuous_nll_to_bits_per_dim(nll, ctx.spec))}
