"""``heldout``: the family's held-out metrics, means over the test split.

``family.eval_metrics`` (per example ``[B]``, or a scalar counting for every example) from the EMA
params on ``eval.num_batches`` global batches of ``eval.batch_size`` test examples (0 = the whole
split); padding rows (``batch["mask"] == 0``) do not count. Reports the mean of every metric the
family returns (``nll_nats``, ``nll_bound_nats``, ``bits_per_dim``, ``gen/loss``, ...) and
``num_eval_examples``. Batch ``i`` uses ``fold_in(EVAL_STREAM, i)``. The per-example values
(``EvalContext.heldout_values``) are computed once per evaluation and shared with
``per_example_nll``.
"""

from __future__ import annotations

from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register


@register("heldout")
class HeldOut(Evaluator):

  def check(self, config, spec, family) -> None:
    if family is None:
      raise UserError("evaluator 'heldout' scores a model on the test split; it cannot score arrays of samples")

  def run(self, ctx) -> dict[str, float]:
    values = ctx.heldout_values
    count = len(next(iter(values.values()))) if values else 0
    results = {k: float(v.mean()) for k, v in values.items()}
    results["num_eval_examples"] = float(count)
    return results
