"""Sweeps: one config run over many overrides (losses, sizes, learning rates, seeds), each point in
its own workdir, resumable, collected into one results table and plots.

The Python API for research scripts (the command line is ``python -m jaxgen.sweep``)::

  from jaxgen import sweeps
  rows = sweeps.run("configs/gan.py", [{"model.loss": l, "seed": s} for l in ("hinge", "wasserstein")
                                       for s in range(3)],
                    "runs/sweeps/gan", parallel=2, common_overrides={"train.steps": 200})
  # rows: one dict per point: "point" (its name), its overrides, "status", every final metric,
  # "steps", "wall_s", "steps_per_s", "error"; also written to runs/sweeps/gan/results.{csv,md}

Modules: ``points`` (declaring, validating and naming points), ``manifest`` (the sweep workdir and
each point's status), ``local`` (running points as processes with their share of the devices),
``slurm`` (a job array), ``results`` (the table), ``plots``, ``hparams`` (TensorBoard).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

from jaxgen import config_defaults
from jaxgen.errors import UserError
from jaxgen.sweeps import hparams, plots, results
from jaxgen.sweeps.local import Runner
from jaxgen.sweeps.manifest import Sweep
from jaxgen.sweeps.points import combine, declared, grid, parse_axis, to_text, validate

__all__ = ["Sweep", "collect", "declare", "grid", "prepare", "run", "run_point"]

#: The metric plotted when none is chosen: the first of these a point reports, else the first by name.
PREFERRED_METRICS = ("bits_per_dim", "nll_bound_nats", "nll_nats", "fid")


def declare(config_path: str, sweep_file: str | None = None, axes: Iterable[str] = ()) -> list[dict[str, Any]]:
  """The points of a sweep: ``get_sweep()`` of ``sweep_file`` (else of the config file, if it has
  one), each combined with every point of the product of ``axes`` (``"key=v1,v2"`` texts)."""
  listed = declared(sweep_file or config_path)
  if sweep_file and listed is None:
    raise UserError(f"--sweep={sweep_file} defines no get_sweep(); define one returning a list of override dicts")
  axes = list(axes)
  if listed is None and not axes:
    raise UserError(f"no sweep points: pass --axis=KEY=V1,V2,... or define get_sweep() in {config_path} "
                    "or in a --sweep=FILE")
  return combine(listed or [{}], grid(parse_axis(a) for a in axes))


def _common(overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, str]:
  if isinstance(overrides, Mapping):
    return {k: to_text(v) for k, v in overrides.items()}
  return dict(config_defaults.parse_override(o) for o in overrides)


def prepare(config_path: str, points: list[Mapping[str, Any]], workdir: str,
            common_overrides: Mapping[str, Any] | Iterable[str] = ()) -> Sweep:
  """The validated sweep (nothing written): every point's config is built first, so an unknown key
  or a bad value raises a ``UserError`` naming the point and the key before anything runs.
  ``common_overrides``: ``{"train.steps": 200}`` or ``["train.steps=200", "--config.seed=1"]``."""
  common, checked = validate(config_path, _common(common_overrides), list(points))
  sweep = Sweep(os.path.abspath(workdir), os.path.abspath(config_path), os.getcwd(), common, checked)
  sweep.check_same_config()
  return sweep


def pending(sweep: Sweep) -> list[int]:
  """Indices of the points that are not done (pending, failed, or interrupted while running)."""
  return [i for i, p in enumerate(sweep.points) if sweep.status(p)["status"] != "done"]


def run(config_path: str, points: list[Mapping[str, Any]], workdir: str, parallel: int = 1,
        common_overrides: Mapping[str, Any] | Iterable[str] = (), plot_metric: str = "",
        plot_axis: str = "") -> list[dict[str, Any]]:
  """Runs (or resumes) the sweep locally, ``parallel`` points at once, and returns ``collect``'s
  rows. Finished points are skipped; failed ones are retried; a failure does not stop the others
  (its row has ``status == "failed"`` and the one-line ``error``)."""
  if parallel < 1:
    raise UserError(f"parallel={parallel}: give the number of points to run at once (>= 1)")
  sweep = prepare(config_path, points, workdir, common_overrides)
  sweep.save()
  todo = [sweep.points[i] for i in pending(sweep)]
  print(f"sweep {sweep.workdir}: {len(sweep.points)} points, {len(todo)} to run, {parallel} at once", flush=True)
  others = sweep.other_point_dirs()
  if others:
    print(f"note: {len(others)} point folders in {sweep.workdir}/points are not in this sweep (kept, not in its "
          f"table): {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}", flush=True)
  Runner(sweep, parallel, echo=lambda line: print(line, flush=True)).run(todo)
  return collect(workdir, plot_metric, plot_axis)


def run_point(workdir: str, index: int) -> dict[str, Any]:
  """Runs point ``index`` of the sweep in ``workdir`` on this whole machine (a SLURM array task)
  unless it is done; returns its status."""
  sweep = Sweep.load(workdir)
  if not 0 <= index < len(sweep.points):
    raise UserError(f"--run_point={index}: the sweep in {workdir} has points 0..{len(sweep.points) - 1}")
  point = sweep.points[index]
  status = sweep.status(point)
  if status["status"] == "done":
    print(f"{point.name}: already done", flush=True)
    return status
  # Many tasks run at once on a cluster: each writes its own point's status, never the manifest.
  return Runner(sweep, 1, echo=lambda line: print(line, flush=True), save_manifest=False).run([point])[0]


def collect(workdir: str, plot_metric: str = "", plot_axis: str = "") -> list[dict[str, Any]]:
  """Writes ``results.csv``, ``results.md``, ``plots/`` and the TensorBoard hparams of the sweep in
  ``workdir`` (any time: unfinished points are listed as such) and returns the rows."""
  sweep = Sweep.load(workdir)
  sweep.save()
  table = results.rows(sweep)
  swept = results.axes(sweep)
  metrics = results.metric_names(table, swept)
  results.write_csv(os.path.join(sweep.workdir, "results.csv"), table, swept, metrics)
  with open(os.path.join(sweep.workdir, "results.md"), "w") as f:
    f.write(results.markdown(sweep, table, swept, metrics))
  keys = [k for k in swept if k != results.SEED]
  if plot_axis and plot_axis not in keys:
    if not keys:
      raise UserError(f"--plot_axis={plot_axis!r}: this sweep varies no key other than seed, so there is no axis "
                      "to plot a metric against (results.md has its mean over seeds); drop --plot_axis")
    raise UserError(f"--plot_axis={plot_axis!r} is not a swept key other than seed; swept: {', '.join(keys)}")
  if plot_metric and metrics and plot_metric not in metrics:
    raise UserError(f"--plot_metric={plot_metric!r} is not a final metric of this sweep; metrics: {', '.join(metrics)}")
  axis = plot_axis or (keys[0] if keys else "")
  metric = plot_metric or next((m for m in PREFERRED_METRICS if m in metrics), metrics[0] if metrics else "")
  summary = results.summarize(table, swept, metrics)
  os.makedirs(os.path.join(sweep.workdir, "plots"), exist_ok=True)
  if axis and metric and summary:
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{metric}_vs_{axis}")
    plots.metric_vs_axis(summary, keys, axis, metric, os.path.join(sweep.workdir, "plots", f"{name}.png"))
  plots.training_curves({p.name: sweep.point_dir(p) for p in sweep.points},
                        os.path.join(sweep.workdir, "plots", "training_curves.png"))
  hparams.write(sweep, table, metrics)
  return table
