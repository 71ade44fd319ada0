"""Running points on this machine: each point is its own ``python -m jaxgen.main`` process, up to
``parallel`` at once, each with its share of the devices.

Device rule (``shares``): one share per point running at once (a *slot*), P = ``parallel``.
- GPUs (those in ``CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi -L`` lists; G of them):
  P <= G: slot i sees GPUs ``[i*(G//P), (i+1)*(G//P))`` through ``CUDA_VISIBLE_DEVICES`` (the G mod P
  left over stay idle); P > G: slot i sees GPU ``i mod G``, shared by ceil(P/G) slots, each capped
  at 0.9/ceil(P/G) of its memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``).
- CPU only (C = the cores this process may run on): P <= C: slot i is pinned (``sched_setaffinity``)
  to C//P cores of its own, ``OMP_NUM_THREADS=C//P``; P > C: slot i is pinned to core ``i mod C``.
  XLA sizes its CPU thread pool from the cores a process may use; a slot of one core also runs
  XLA's Eigen kernels single-threaded (``--xla_cpu_multi_thread_eigen=false`` added to XLA_FLAGS).
  ``--cpu_devices`` is not passed: each point chooses as ``jaxgen.main`` does (``auto``: one JAX
  device per core of its slot for the families that gain from it, ``jaxgen/cpu_devices.py``).
- P = 1: the point gets the whole machine; nothing is set.

Stopping: on an exception in the sweep's main thread (Ctrl-C; SIGTERM, which the command line turns
into one) the running points get SIGTERM (the trainer saves the current step and exits) and keep
the status ``running``: the next run of the sweep resumes them. A point preempted on its own (exit
status 75: its step is saved) keeps ``running`` too, while the sweep goes on with the others. Two runs of one point at once (a
second sweep on the same workdir) are refused by the trainer's workdir lock. A sweep killed outright
(SIGKILL) takes its points with it: each gets SIGTERM from the kernel (``preemption.stop_with_parent``),
saves its step and exits, so a rerun finds no orphan holding the lock.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from typing import Any, Callable

from jaxgen import preemption
from jaxgen.errors import Preempted
from jaxgen.sweeps import results
from jaxgen.sweeps.manifest import Sweep
from jaxgen.sweeps.points import Point

EIGEN_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"
ERROR_PREFIX = "jaxgen: error:"
HEADER = "[jaxgen.sweep]"


@dataclasses.dataclass(frozen=True)
class Share:
  """What one slot's points get: extra environment variables and the cores to pin them to."""

  env: dict[str, str]
  cpus: tuple[int, ...] | None = None

  def describe(self) -> str:
    pinned = [f"taskset -c {','.join(map(str, self.cpus))}"] if self.cpus else []
    return " ".join(pinned + [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]) or "(whole machine)"


def visible_gpus() -> list[str]:
  """The GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
  if shutil.which("nvidia-smi") is None:
    return []
  out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
  count = sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0
  return [str(i) for i in range(count)]


def available_cpus() -> list[int]:
  return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def shares(parallel: int, cpus: list[int], gpus: list[str], xla_flags: str = "") -> list[Share]:
  """One ``Share`` per slot, by the rule of the module docstring; ``xla_flags``: the XLA_FLAGS the
  sweep itself runs with (kept)."""
  if parallel == 1:
    return [Share({})]
  if gpus:
    if parallel <= len(gpus):
      k = len(gpus) // parallel
      return [Share({"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * k:(i + 1) * k])}) for i in range(parallel)]
    fraction = f"{0.9 / math.ceil(parallel / len(gpus)):.2f}"
    return [Share({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], "XLA_PYTHON_CLIENT_MEM_FRACTION": fraction})
            for i in range(parallel)]
  k = max(1, len(cpus) // parallel)
  slots = [tuple(cpus[i * k:(i + 1) * k]) if parallel <= len(cpus) else (cpus[i % len(cpus)],)
           for i in range(parallel)]
  single = {"XLA_FLAGS": f"{xla_flags} {EIGEN_SINGLE_THREAD}".strip()} if k == 1 else {}
  return [Share({"OMP_NUM_THREADS": str(len(s)), **single}, s) for s in slots]


def machine_shares(parallel: int) -> list[Share]:
  """``shares`` for this machine."""
  return shares(parallel, available_cpus(), visible_gpus(), os.environ.get("XLA_FLAGS", ""))


def one_line_error(text: str, returncode: int) -> str:
  """The last ``jaxgen: error:`` line of a point's output (without the prefix), else how it ended."""
  lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(HEADER)]
  errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
  if errors:
    return errors[-1][len(ERROR_PREFIX):].strip()
  how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
  return f"{how}: {lines[-1]}" if lines else how


class Runner:
  """Runs points of ``sweep`` locally, ``parallel`` at once; ``echo`` gets one line per event."""

  def __init__(self, sweep: Sweep, parallel: int = 1, echo: Callable[[str], None] = print,
               save_manifest: bool = True):
    self.sweep, self.parallel, self.echo, self.save_manifest = sweep, parallel, echo, save_manifest
    self._lock = threading.Lock()
    self._procs: set[subprocess.Popen] = set()
    self._stopping = False

  def run(self, points: list[Point], slot_shares: list[Share] | None = None) -> list[dict[str, Any]]:
    """Runs ``points`` (a share each from ``slot_shares``, default ``machine_shares``) and returns
    their statuses (see the module docstring for stopping)."""
    free = queue.SimpleQueue()
    for share in slot_shares or machine_shares(self.parallel):
      free.put(share)

    def job(point: Point) -> dict[str, Any]:
      share = free.get()
      try:
        return self.run_point(point, share)
      finally:
        free.put(share)

    pool = concurrent.futures.ThreadPoolExecutor(self.parallel)
    try:
      futures = [pool.submit(job, p) for p in points]
      for future in concurrent.futures.as_completed(futures):
        future.result()
      return [f.result() for f in futures]
    except BaseException:
      self._stop()
      raise
    finally:
      pool.shutdown(wait=True, cancel_futures=True)

  def _stop(self) -> None:
    with self._lock:
      self._stopping = True
      for proc in self._procs:
        proc.terminate()

  def run_point(self, point: Point, share: Share) -> dict[str, Any]:
    """Trains ``point`` (resuming from its checkpoints) and records its status. Exit status 0 of the
    trainer means trained to ``train.steps`` and evaluated (an evaluator set that reports no number
    writes no eval file). A point recorded for other overrides may hold a final evaluation made
    under them; it is renamed ``step_<N>.before-<time>.json`` (kept, but no longer a final
    metric), so the trainer, finding the run trained and the file missing, evaluates it again under
    the current overrides (and does so on the next run if this one is interrupted first)."""
    sweep = self.sweep
    os.makedirs(sweep.point_dir(point), exist_ok=True)
    recorded = sweep.recorded(point)
    final = os.path.join(sweep.point_dir(point), "eval", f"step_{point.steps}.json")
    if recorded and recorded.get("overrides") != sweep.overrides(point) and os.path.exists(final):
      os.replace(final, final.replace(".json", f".before-{int(time.time())}.json"))
    with open(sweep.log_path(point), "a") as log:
      self._record(point, status="running", error="", attempts=recorded.get("attempts", 0) + 1,
                   started=time.time())
      self.echo(f"{point.name}: started ({share.describe()})")
      start, offset = time.time(), log.tell()
      code = self._attempt(sweep.command(point), log, share)
      wall = recorded.get("wall_s", 0.0) + time.time() - start
      if code is None or code == Preempted.EXIT_CODE:  # the sweep is stopping, or the point was preempted
        self.echo(f"{point.name}: stopped; it resumes from its last checkpoint when the sweep runs again")
        return self._record(point, wall_s=wall)  # still "running"
    if code == 0:
      status = self._record(point, status="done", wall_s=wall,
                            steps_per_s=results.steps_per_second(sweep.point_dir(point)))
      self.echo(f"{point.name}: done in {wall:.1f} s")
    else:
      with open(sweep.log_path(point)) as f:
        f.seek(offset)
        error = one_line_error(f.read(), code)
      status = self._record(point, status="failed", error=error, wall_s=wall)
      self.echo(f"{point.name}: FAILED: {error}")
    return status

  def _record(self, point: Point, **fields: Any) -> dict[str, Any]:
    """Writes the point's status file; the local runner (not a SLURM task: ``save_manifest``
    False) also rewrites the manifest snapshot."""
    with self._lock:
      status = self.sweep.set_status(point, **fields)
      if self.save_manifest:
        self.sweep.save()
    return status

  def _attempt(self, command: list[str], log, share: Share) -> int | None:
    """Runs ``command`` with its output appended to ``log``; its exit status, or ``None`` when the
    sweep is stopping."""
    log.write(f"{HEADER} {time.strftime('%Y-%m-%d %H:%M:%S')} {share.describe()} {shlex.join(command)}\n")
    log.flush()
    with self._lock:
      if self._stopping:
        return None
      proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.sweep.cwd,
                              env={**os.environ, **share.env, preemption.PARENT_ENV: str(os.getpid())})
      if share.cpus and hasattr(os, "sched_setaffinity"):
        try:
          os.sched_setaffinity(proc.pid, share.cpus)
        except ProcessLookupError:  # it has already exited
          pass
      self._procs.add(proc)
    code = proc.wait()
    with self._lock:
      self._procs.discard(proc)
      return None if self._stopping else code
