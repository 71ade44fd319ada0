"""The sweep's figures: one metric against one swept key, and every point's training curves.

``metric_vs_axis``: x = the values of the swept key ``axis`` (a numeric axis on a linear scale, or
a log scale when its positive values span a factor of 100 or more; otherwise categories in order
of appearance), y = the metric's mean over the seeds of each group with error bars of one sample
standard deviation (none for a single seed); one line per combination of the other swept keys.

``training_curves``: one panel per logged training metric (``train/...`` in ``metrics.jsonl``,
steps/s left out), one line per point, against the step.
"""

from __future__ import annotations

import math
from typing import Any

from jaxgen.outputs import _pyplot
from jaxgen.sweeps.results import training_rows


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_vs_axis(summary: list[dict[str, Any]], keys: list[str], axis: str, metric: str, path: str) -> None:
  """Draws ``metric`` (mean ± std, from ``results.summarize`` grouped by ``keys``) against the
  swept key ``axis`` (one of ``keys``) into ``path``."""
  plt = _pyplot()
  others = [k for k in keys if k != axis]
  xs = list(dict.fromkeys(g[axis] for g in summary))
  numeric = all(_is_number(x) for x in xs)
  position = {x: x if numeric else i for i, x in enumerate(xs)}
  fig, ax = plt.subplots(figsize=(6, 4))
  series: dict[str, list[dict[str, Any]]] = {}
  for g in summary:
    if metric in g:
      series.setdefault(", ".join(f"{k}={g[k]}" for k in others), []).append(g)
  for label, groups in series.items():
    groups = sorted(groups, key=lambda g: position[g[axis]])
    ax.errorbar([position[g[axis]] for g in groups], [g[metric][0] for g in groups],
                yerr=[g[metric][1] or 0.0 for g in groups], marker="o", capsize=4, label=label or None)
  if numeric and min(xs) > 0 and max(xs) / min(xs) >= 100:
    ax.set_xscale("log")
  if not numeric:
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
  ax.set_xlabel(axis)
  ax.set_ylabel(f"{metric} (mean ± std over seeds)")
  if any(series):
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def training_curves(curves: dict[str, str], path: str) -> bool:
  """Draws the training metrics of ``{point name: point workdir}`` into ``path``; ``False`` (and no
  file) when no point has logged any yet."""
  logs = {name: training_rows(d) for name, d in curves.items()}
  keys = sorted({k for rows in logs.values() for r in rows for k in r
                 if k.startswith("train/") and k != "train/steps_per_second"})
  if not keys:
    return False
  plt = _pyplot()
  cols = min(3, len(keys))
  rows_n = math.ceil(len(keys) / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for name, rows in logs.items():
      points = [(r["step"], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), label=name, linewidth=1)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  if len(logs) <= 12:
    axes.flat[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True
