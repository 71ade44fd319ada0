"""TensorBoard's HParams view of a sweep: ``tensorboard --logdir SWEEP`` lists every finished point
with its overrides as hyperparameters and its final metrics.

Each finished point gets a run ``points/<name>/hparams`` (rewritten at each collect) with the
HParams plugin's records (tensorboardX): the experiment (every swept key and every final metric of
the sweep, the same in each run), the point's session (its own values) and its final metrics as
scalars ``final/<metric>`` at its last step. Its training curves stay in ``points/<name>/tensorboard``.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from jaxgen.sweeps.manifest import Sweep


def _hparam(value: Any) -> Any:
  return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def write(sweep: Sweep, table: list[dict[str, Any]], metrics: list[str]) -> None:
  """Writes (or rewrites) the ``hparams`` run of every finished point of ``table`` (``results.rows``)."""
  from tensorboardX import SummaryWriter
  from tensorboardX.summary import hparams

  examples: dict[str, Any] = {}  # one value of each swept key, for its type in the experiment
  for point in sweep.points:
    for k, v in point.values.items():
      examples.setdefault(k, _hparam(v))
  experiment = hparams(examples, {f"final/{m}": 0.0 for m in metrics})[0]
  for point, row in zip(sweep.points, table):
    run = os.path.join(sweep.point_dir(point), "hparams")
    shutil.rmtree(run, ignore_errors=True)
    if row["status"] != "done":
      continue
    final = {f"final/{m}": float(row[m]) for m in metrics if row.get(m) is not None}
    _, session_start, session_end = hparams({k: _hparam(v) for k, v in point.values.items()}, final)
    with SummaryWriter(run) as writer:
      for summary in (experiment, session_start, session_end):
        writer.file_writer.add_summary(summary)
      for tag, value in final.items():
        writer.add_scalar(tag, value, row["steps"])
