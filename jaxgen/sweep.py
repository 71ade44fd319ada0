"""Command line for sweeps (the Python API is ``jaxgen.sweeps``; the guide is docs/sweeps.md).

  python -m jaxgen.sweep --config=configs/gan.py --axis=model.loss=non_saturating,hinge,wasserstein \\
      --axis=seed=0,1,2 --workdir=runs/sweeps/gan_losses [--config.train.steps=200] [--parallel=2]

Points: ``get_sweep()`` of ``--sweep=FILE`` or of the config file, times the product of the
``--axis`` flags. ``--config.k=v`` flags apply to every point. Each point runs as
``python -m jaxgen.main --workdir=SWEEP/points/<name>``; rerunning the command resumes the sweep.
``--launcher=slurm`` writes a job array instead (``--submit`` submits it), ``--dry_run`` prints the
points and commands, ``--collect`` rewrites the results of a sweep (running or not). Exit status 1
when a point failed (each listed with its one-line error) or on a user error (one line).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from absl import app, flags

from jaxgen import config_defaults
from jaxgen.errors import UserError, fail

_CONFIG = flags.DEFINE_string("config", None, "The config file the points vary, e.g. configs/gan.py.")
_SWEEP = flags.DEFINE_string(
    "sweep", None, "A Python file whose get_sweep() returns the points (a list of override dicts); default: the "
    "config file's get_sweep(), if it has one.")
_AXIS = flags.DEFINE_multi_string(
    "axis", [], "KEY=V1,V2,...: values of one config key, parsed like --config.KEY=V; several --axis: their "
    "product (times the get_sweep() points, if any). Commas inside (...) or [...] do not split.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory: manifest.json, points/<name>/, results.")
_PARALLEL = flags.DEFINE_integer(
    "parallel", 1, "Points at once. Local: each gets its share of the GPUs or CPU cores (docs/sweeps.md); "
    "slurm: the most array tasks running at once.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Run here, or write a SLURM job array.")
_SUBMIT = flags.DEFINE_bool("submit", False, "With --launcher=slurm: sbatch the array, and a collect job after it.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the points and the commands; run and write nothing.")
_COLLECT = flags.DEFINE_bool("collect", False, "Only write the results of the sweep in --workdir (any time).")
_RUN_POINT = flags.DEFINE_integer("run_point", None, "Run point K of the sweep in --workdir (a SLURM array task).")
_PLOT_METRIC = flags.DEFINE_string(
    "plot_metric", "", "Final metric to plot against --plot_axis (default: bits_per_dim, nll_bound_nats, nll_nats "
    "or fid, the first reported, else the first by name).")
_PLOT_AXIS = flags.DEFINE_string("plot_axis", "", "Swept key on the x axis of that plot (default: the first but seed).")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM partition ('' = the cluster's default).")
_SLURM_TIME = flags.DEFINE_string("slurm_time", "04:00:00", "Time limit of each array task.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus", 1, "GPUs per array task (0 = none).")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus", 8, "CPU cores per array task.")
_SLURM_MEM = flags.DEFINE_string("slurm_mem", "32G", "Memory per array task.")


def _parse(argv: list[str]) -> list[str]:
  """absl parsing of the sweep's own flags; the ``--config.k=v`` overrides are handed to ``main``."""
  try:
    rest, overrides = config_defaults.split_command_line(argv, flags.FLAGS)
  except UserError as e:
    fail(str(e))
  return rest + overrides


def _print_plan(sweep, parallel: int) -> None:
  from jaxgen import sweeps
  from jaxgen.sweeps import local

  todo = set(sweeps.pending(sweep))
  print(f"{len(sweep.points)} points of {sweep.config} in {sweep.workdir} ({len(todo)} not done)")
  if _LAUNCHER.value == "local":
    for slot, share in enumerate(local.machine_shares(parallel)):
      print(f"  slot {slot} of {parallel}: {share.describe()}")
  for i, point in enumerate(sweep.points):
    print(f"[{i}] {point.name} ({sweep.status(point)['status']})\n    {shlex.join(sweep.command(point))}")


def _slurm(sweep, parallel: int) -> None:
  from jaxgen import sweeps
  from jaxgen.sweeps import slurm

  resources = slurm.Resources(_SLURM_PARTITION.value, _SLURM_TIME.value, _SLURM_GPUS.value, _SLURM_CPUS.value,
                              _SLURM_MEM.value)
  todo = sweeps.pending(sweep)
  if not todo:
    print("every point is done; results: python -m jaxgen.sweep --collect --workdir=" + sweep.workdir)
    return
  text = slurm.script(sweep, todo, resources, parallel)
  if _DRY_RUN.value:
    print(text)
    return
  sweep.save()
  path = slurm.script_path(sweep)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  print(f"wrote {path} ({len(todo)} array tasks)")
  if _SUBMIT.value:
    plot = [f"--{f.name}={f.value}" for f in (_PLOT_METRIC, _PLOT_AXIS) if f.value]
    array, after = slurm.submit(sweep, path, resources, plot)
    print(f"submitted array job {array}; job {after} collects the results after it")
  else:
    print(f"submit with: sbatch {path}")


def _terminate(*_) -> None:
  """SIGTERM: exit through ``SystemExit``, which stops the running points; repeats are ignored while
  they save their steps."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  sys.exit(128 + signal.SIGTERM)


def main(argv: list[str]) -> None:
  signal.signal(signal.SIGTERM, _terminate)
  from jaxgen import sweeps  # imports the config registries: slow, so after flag parsing

  overrides = argv[1:]
  try:
    if not _WORKDIR.value:
      raise UserError("--workdir is required, e.g. --workdir=runs/sweeps/gan_losses")
    if _PARALLEL.value < 1:
      raise UserError(f"--parallel={_PARALLEL.value}: give the number of points to run at once (>= 1)")
    slurm_only = [f"--{f.name}" for f in (_SUBMIT, _SLURM_PARTITION, _SLURM_TIME, _SLURM_GPUS, _SLURM_CPUS, _SLURM_MEM)
                  if flags.FLAGS[f.name].present]
    if slurm_only and _LAUNCHER.value != "slurm":
      raise UserError(f"{', '.join(slurm_only)} apply to a SLURM job array, and this sweep would run here "
                      "(--launcher=local): add --launcher=slurm, or drop them")
    if _COLLECT.value:
      sweeps.collect(_WORKDIR.value, _PLOT_METRIC.value, _PLOT_AXIS.value)
      print(f"wrote {_WORKDIR.value}/results.md, results.csv and plots/")
      return
    if _RUN_POINT.value is not None:
      sys.exit(0 if sweeps.run_point(_WORKDIR.value, _RUN_POINT.value)["status"] == "done" else 1)
    if not _CONFIG.value:
      raise UserError("--config is required, e.g. --config=configs/gan.py")
    points = sweeps.declare(_CONFIG.value, _SWEEP.value, _AXIS.value)
    if _DRY_RUN.value or _LAUNCHER.value == "slurm":
      sweep = sweeps.prepare(_CONFIG.value, points, _WORKDIR.value, overrides)
      if _DRY_RUN.value:
        _print_plan(sweep, _PARALLEL.value)
      if _LAUNCHER.value == "slurm":
        _slurm(sweep, _PARALLEL.value)
      return
    rows = sweeps.run(_CONFIG.value, points, _WORKDIR.value, _PARALLEL.value, overrides, _PLOT_METRIC.value,
                      _PLOT_AXIS.value)
  except UserError as e:
    fail(str(e))
  print(f"results: {_WORKDIR.value}/results.md, results.csv, plots/")
  failed = [r for r in rows if r["status"] != "done"]
  if failed:
    print(f"jaxgen: error: {len(failed)} of {len(rows)} points did not finish; rerun the same command to retry:",
          file=sys.stderr)
    for r in failed:
      log = os.path.join(_WORKDIR.value, "points", r["point"], "sweep.log")
      print(f"  {r['point']}: {r['status']}: {r['error']} (log: {log})", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
