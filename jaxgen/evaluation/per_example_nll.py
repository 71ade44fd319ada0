"""``per_example_nll``: the held-out negative log-likelihood of every test example, saved as a ``.npy``.

The values are ``heldout``'s (``EvalContext.heldout_values``, computed once when both run: EMA
params, global batches of ``eval.batch_size`` test examples, ``eval.num_batches`` of them (0 = the
whole split), batch ``i`` with ``fold_in(EVAL_STREAM, i)``), padding rows
(``batch["mask"] == 0``) dropped. So the file holds one row per test example, in
the split's order, and its mean is ``heldout``'s ``nll_nats`` (or ``nll_bound_nats``) up to
float rounding.

Writes ``eval/per_example_nll_step_<N>.npy``: a structured array ``[num_test]`` (float64 fields)
``(<kind>, "bits_per_dim")`` where ``<kind>`` is ``nll_nats`` for an exact NLL or
``nll_bound_nats`` for an upper bound (whichever the family reports; ``np.load`` reads it, no
pickle). Every process computes it (the arrays are replicated); process 0 writes it. Reports no
numbers. A family that reports neither (a GAN) gets no file and one logged warning, so a sweep over
every family may list this evaluator for all of them.

``collect`` is the loop, shared with scripts that score other arrays than the test split
(``experiments/likelihood_ood.py``).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping

import jax
import numpy as np
from etils import epath

from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register

_log = logging.getLogger(__name__)

#: The likelihood keys of ``eval_metrics``: exact first, then the bound.
KINDS = ("nll_nats", "nll_bound_nats")
FILE = "per_example_nll_step_{step}.npy"


def collect(per_batch: Callable[[Mapping[str, np.ndarray], int], tuple[Mapping[str, jax.Array], jax.Array]],
            batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """``{name: float64 [N]}``: of every batch ``i``, ``per_batch(batch, i) -> (metrics, mask)``
  (per-example ``[B]`` metrics or scalars, and the ``[B]`` mask of the same rows), the rows with
  ``mask == 0`` dropped, concatenated."""
  parts: dict[str, list[np.ndarray]] = {}
  for i, batch in enumerate(batches):
    metrics, mask = per_batch(batch, i)
    keep = np.asarray(mask) > 0
    for name, value in metrics.items():
      value = np.broadcast_to(np.asarray(value, np.float64), keep.shape)
      parts.setdefault(name, []).append(value[keep])
  return {name: np.concatenate(values) for name, values in parts.items()}


def as_record(metrics: Mapping[str, np.ndarray]) -> np.ndarray | None:
  """The structured array of the module docstring from ``collect``'s output, or ``None`` when
  there is no NLL in it."""
  kind = next((k for k in KINDS if k in metrics), None)
  if kind is None:
    return None
  if "bits_per_dim" not in metrics:
    raise UserError(f"the family reports {kind} but no bits_per_dim; report both in eval_metrics")
  out = np.zeros(len(metrics[kind]), [(kind, np.float64), ("bits_per_dim", np.float64)])
  out[kind], out["bits_per_dim"] = metrics[kind], metrics["bits_per_dim"]
  return out


@register("per_example_nll")
class PerExampleNLL(Evaluator):

  def check(self, config, spec, family) -> None:
    if family is None:
      raise UserError("evaluator 'per_example_nll' scores a model on the test split; it cannot score "
                      "arrays of samples")

  def run(self, ctx) -> dict[str, float]:
    values = ctx.heldout_values  # shared with ``heldout``: one pass over the test split
    record = as_record(values)
    if record is None:
      _log.warning("per_example_nll: family %r reports no nll_nats or nll_bound_nats; no file written",
                   ctx.config.model.family)
    elif ctx.is_writer:
      path = epath.Path(ctx.path("eval", FILE.format(step=ctx.step)))
      path.parent.mkdir(parents=True, exist_ok=True)
      with path.open("wb") as f:
        np.save(f, record)
    return {}
