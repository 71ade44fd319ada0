"""One results table for a sweep: a row per point, and a summary grouped over seeds.

A point's *final metrics* are those of its ``eval/step_<N>.json`` with the largest ``N`` (the
trainer writes ``N = train.steps`` at the end); they are reported for finished points only.
``steps_per_s`` is the median of the trainer's logged ``train/steps_per_second`` (each the rate
over one logging interval), leaving out the first interval (it includes compilation) when there
are more; ``wall_s`` is the wall time of all the point's attempts, start-up and evaluation included.

``results.csv``: one row per point: ``point`` (its name), its overrides (one column per swept
key), ``status``, every final metric, ``steps``, ``wall_s``, ``steps_per_s``, ``error``.
``results.md``: finished points grouped by every swept key except ``seed``; each metric (and
steps/s) as mean ± sample standard deviation (ddof=1) over the group's points, and ``n`` the
number of points (seeds) in the group; a metric that some of them lack shows its own count, ``(n=2)``.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from typing import Any

import numpy as np
from etils import epath

from jaxgen import metric_writer
from jaxgen.sweeps.manifest import Sweep

SEED = "seed"


def final_metrics(point_dir: str) -> dict[str, float] | None:
  """The ``eval/step_<N>.json`` of largest ``N`` in ``point_dir`` (with its ``step``), or ``None``."""
  paths = glob.glob(os.path.join(point_dir, "eval", "step_*.json"))
  steps = [int(m.group(1)) for p in paths if (m := re.fullmatch(r"step_(\d+)\.json", os.path.basename(p)))]
  if not steps:
    return None
  with open(os.path.join(point_dir, "eval", f"step_{max(steps)}.json")) as f:
    return json.load(f)


def training_rows(point_dir: str) -> list[dict[str, float]]:
  """The rows of ``metrics.jsonl`` that hold training metrics (``train/...``)."""
  path = epath.Path(point_dir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = [r for line in metric_writer.read_rows(path) if (r := metric_writer.parse_row(line)) is not None]
  return [r for r in rows if any(k.startswith("train/") for k in r)]


def steps_per_second(point_dir: str) -> float | None:
  rates = [r["train/steps_per_second"] for r in training_rows(point_dir) if "train/steps_per_second" in r]
  return float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else None


def axes(sweep: Sweep) -> list[str]:
  """The swept keys, in the order they first appear in the points."""
  return list(dict.fromkeys(k for p in sweep.points for k in p.values))


def rows(sweep: Sweep) -> list[dict[str, Any]]:
  """One dict per point (module docstring); metrics only for finished points."""
  out = []
  for point in sweep.points:
    status = sweep.status(point)
    metrics = final_metrics(sweep.point_dir(point)) if status["status"] == "done" else None
    metrics = dict(metrics or {})
    steps = metrics.pop("step", None)
    out.append({"point": point.name, **point.values, "status": status["status"], **metrics, "steps": steps,
                "wall_s": status.get("wall_s"), "steps_per_s": status.get("steps_per_s"),
                "error": status.get("error", "")})
  return out


def metric_names(table: list[dict[str, Any]], swept: list[str]) -> list[str]:
  """Every numeric final metric that appears in a row, sorted."""
  fixed = {"point", "status", "steps", "wall_s", "steps_per_s", "error", *swept}
  return sorted({k for row in table for k, v in row.items()
                 if k not in fixed and isinstance(v, (int, float)) and not isinstance(v, bool)})


def summarize(table: list[dict[str, Any]], swept: list[str], metrics: list[str]) -> list[dict[str, Any]]:
  """Finished rows grouped by every swept key but ``seed`` (groups in order of first appearance):
  ``{key: value, ..., "n": points, metric: (mean, std or None for one value, number of values)}``."""
  keys = [k for k in swept if k != SEED]
  groups: dict[str, list[dict[str, Any]]] = {}
  for row in table:
    if row["status"] == "done":
      groups.setdefault(json.dumps([row.get(k) for k in keys]), []).append(row)
  out = []
  for members in groups.values():
    group = {k: members[0].get(k) for k in keys}
    group["n"] = len(members)
    for m in metrics:
      values = np.array([r[m] for r in members if r.get(m) is not None], np.float64)
      if len(values):
        group[m] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None, len(values))
    out.append(group)
  return out


def format_stat(stat: tuple[float, float | None, int] | None, n: int) -> str:
  """``mean ± std`` (the mean alone for one value), with the number of values when some of the
  group's ``n`` points lack the metric."""
  if stat is None:
    return ""
  mean, std, count = stat
  text = f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"
  return text if count == n else f"{text} (n={count})"


def _cell(value: Any) -> str:
  return "" if value is None else str(value).replace("|", "\\|")


def markdown(sweep: Sweep, table: list[dict[str, Any]], swept: list[str], metrics: list[str]) -> str:
  """``results.md``: the grouped table, then the points that are not finished."""
  keys = [k for k in swept if k != SEED]
  columns = [*metrics, "steps_per_s"]
  done = sum(r["status"] == "done" for r in table)
  lines = [f"# Sweep of {os.path.relpath(sweep.config, sweep.cwd)}", "",
           f"{done} of {len(table)} points done. Final metrics as mean ± std (ddof=1) over the points of a "
           f"group{' (seeds)' if SEED in swept else ''}; n = number of points.", "",
           "| " + " | ".join([*keys, "n", *columns]) + " |", "|" + " --- |" * (len(keys) + 1 + len(columns))]
  for group in summarize(table, swept, columns):
    cells = [_cell(group[k]) for k in keys] + [str(group["n"])] + [format_stat(group.get(c), group["n"]) for c in columns]
    lines.append("| " + " | ".join(cells) + " |")
  waiting = [r for r in table if r["status"] != "done"]
  if waiting:
    lines += ["", "Not done:", ""]
    lines += [f"- `{r['point']}`: {r['status']}" + (f": {r['error']}" if r["error"] else "") for r in waiting]
  return "\n".join(lines) + "\n"


def write_csv(path: str, table: list[dict[str, Any]], swept: list[str], metrics: list[str]) -> None:
  columns = ["point", *swept, "status", *metrics, "steps", "wall_s", "steps_per_s", "error"]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns, extrasaction="ignore")
    writer.writeheader()
    for row in table:
      writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
