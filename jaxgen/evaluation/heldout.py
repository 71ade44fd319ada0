"""``heldout``: the family's held-out metrics, mask-weighted means over the test split.

``family.eval_metrics`` (per example ``[B]``, or a scalar counting for every example) from the EMA
params on ``eval.num_batches`` global batches of ``eval.batch_size`` test examples (0 = the whole
split); padding rows (``batch["mask"] == 0``) do not count. Reports every metric the family returns
(``nll_nats``, ``nll_bound_nats``, ``bits_per_dim``, ``gen/loss``, ...) and ``num_eval_examples``.
Batch ``i`` uses ``fold_in(EVAL_STREAM, i)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen import parallel
from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register
from jaxgen.evaluation.context import EVAL_STREAM, to_host


@register("heldout")
class HeldOut(Evaluator):

  def check(self, config, spec, family) -> None:
    if family is None:
      raise UserError("evaluator 'heldout' scores a model on the test split; it cannot score arrays of samples")

  def run(self, ctx) -> dict[str, float]:
    cfg, exp = ctx.config.eval, ctx.exp
    family, eval_stream = ctx.family, exp.stream(EVAL_STREAM)

    def per_batch(ts, batch, index):
      m = family.eval_metrics(ts.ema_params, ts.state, batch, jax.random.fold_in(eval_stream, index))
      mask = batch["mask"]
      return {k: jnp.sum(jnp.broadcast_to(v, mask.shape) * mask) for k, v in m.items()}, jnp.sum(mask)

    eval_step = ctx.cached("heldout_step", lambda: jax.jit(per_batch))
    sums, count = {}, 0.0
    for i, local in enumerate(ctx.data.eval_batches(cfg.batch_size // jax.process_count(), cfg.num_batches)):
      s, n = eval_step(ctx.ts, parallel.global_batch(local, exp.mesh), i)
      for k, v in s.items():
        sums[k] = sums.get(k, 0.0) + float(to_host(v))
      count += float(to_host(n))
    results = {k: v / count for k, v in sums.items()}
    results["num_eval_examples"] = count
    return results
