"""A sweep as one SLURM job array: one array task per point, each running exactly its point.

``script`` gives ``SWEEP/slurm/sweep.sbatch``; array task ``K`` runs
``python -m jaxgen.sweep --workdir=SWEEP --run_point=K``, which reads point ``K`` from the manifest,
runs it (resuming from its checkpoints) and records its status and log like a local run. The array
lists only the points not done yet, at most ``--parallel`` of them at once (``%P``) when P > 1.
Resources per task come from flags (``--slurm_partition``, ``--slurm_time``, ``--slurm_gpus``,
``--slurm_cpus``, ``--slurm_mem``). Preemption and time limits: ``--signal=B:TERM@120`` has SLURM
send SIGTERM to the batch shell 120 s before it kills the task; the shell stops the point (the
trainer saves the current step) and requeues the task (``--requeue``, ``scontrol requeue``).

``submit`` runs ``sbatch`` on it, then a collect job that starts after every task has ended
(``--dependency=afterany:<array job>``) and writes the results table.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys

from jaxgen.errors import UserError
from jaxgen.sweeps.manifest import Sweep


@dataclasses.dataclass(frozen=True)
class Resources:
  """What each array task asks for (empty / 0: the cluster's default)."""

  partition: str = ""
  time: str = "04:00:00"
  gpus: int = 1
  cpus: int = 8
  mem: str = "32G"


def script_path(sweep: Sweep) -> str:
  return os.path.join(sweep.workdir, "slurm", "sweep.sbatch")


def _python_module(sweep: Sweep, *args: str) -> str:
  return shlex.join([sys.executable, "-m", "jaxgen.sweep", f"--workdir={sweep.workdir}", *args])


def script(sweep: Sweep, indices: list[int], resources: Resources, parallel: int = 1) -> str:
  """The array script for the points ``indices`` of ``sweep``."""
  name = os.path.basename(sweep.workdir.rstrip("/"))
  array = ",".join(map(str, indices)) + (f"%{parallel}" if parallel > 1 else "")
  options = [f"--job-name=jaxgen-sweep-{name}", f"--array={array}",
             f"--output={os.path.join(sweep.workdir, 'slurm', '%A_%a.out')}",
             *([f"--partition={resources.partition}"] if resources.partition else []),
             *([f"--time={resources.time}"] if resources.time else []),
             *([f"--gpus={resources.gpus}"] if resources.gpus else []),
             *([f"--cpus-per-task={resources.cpus}"] if resources.cpus else []),
             *([f"--mem={resources.mem}"] if resources.mem else []),
             "--signal=B:TERM@120", "--requeue"]
  run = _python_module(sweep) + ' --run_point="$SLURM_ARRAY_TASK_ID"'
  return "\n".join([
      "#!/usr/bin/env bash",
      f"# jaxgen sweep of {sweep.config}: array task K runs point K of {sweep.workdir}/manifest.json.",
      "# Written by python -m jaxgen.sweep --launcher=slurm; submit with: sbatch " + script_path(sweep),
      *(f"#SBATCH {o}" for o in options),
      "set -euo pipefail",
      f"cd {shlex.quote(sweep.cwd)}",
      "# 120 s before a time limit or preemption: stop the point (it saves its step and resumes from it), requeue",
      "point=",
      "trap 'kill -TERM \"$point\" 2>/dev/null; wait \"$point\" || true; "
      "scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"; exit 0' TERM",
      f"{run} &",
      "point=$!",
      'wait "$point"',
      "",
  ])


def submit(sweep: Sweep, path: str, resources: Resources, collect_flags: list[str]) -> tuple[str, str]:
  """``sbatch`` of the array script at ``path``, then of the collect job after it: their job ids."""
  if shutil.which("sbatch") is None:
    raise UserError(f"sbatch not found: run on a SLURM login node, or submit {path} yourself with sbatch")
  array = _sbatch([path])
  collect = shlex.join(collect_flags)
  wrap = f"cd {shlex.quote(sweep.cwd)} && {_python_module(sweep, '--collect')} {collect}".strip()
  after = _sbatch([f"--dependency=afterany:{array}", "--job-name=jaxgen-sweep-collect",
                   f"--output={os.path.join(sweep.workdir, 'slurm', 'collect_%j.out')}",
                   *([f"--partition={resources.partition}"] if resources.partition else []), f"--wrap={wrap}"])
  return array, after


def _sbatch(args: list[str]) -> str:
  proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
  if proc.returncode != 0:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    raise UserError(f"sbatch {shlex.join(args)} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
  return proc.stdout.strip().split(";")[0]
