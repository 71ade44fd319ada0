"""The sweep workdir: its manifest, each point's status, and the command that runs a point.

  SWEEP/manifest.json                    the config, the common overrides and every point with its
                                         overrides, status (pending | running | done | failed),
                                         one-line error, attempts, started (time of the last attempt),
                                         wall time (all attempts) and steps/s. A snapshot: rewritten
                                         by the local runner at each change and by --collect
  SWEEP/points/<name>/                   the point's --workdir (checkpoints/, metrics.jsonl, eval/, ...)
  SWEEP/points/<name>/sweep_status.json  the point's status, written only by the process that runs it
                                         (the source of truth: SLURM tasks on many nodes each write
                                         their own file, never the shared manifest)
  SWEEP/points/<name>/sweep.log          stdout and stderr of every attempt, appended

A status recorded for other overrides than the point's current ones (the common ``--config.k=v``
flags changed between two runs of the sweep) counts as pending: the point runs again, and when it
is already trained to its steps it is evaluated again under the new overrides (the local runner
renames the earlier final evaluation aside first), so its final metrics never come from other
settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from jaxgen import workdir as workdir_lib
from jaxgen.errors import UserError
from jaxgen.sweeps.points import Point

MANIFEST = "manifest.json"


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` to ``path`` atomically (a reader sees the old file or the new one, never half)."""
  workdir_lib.write_atomic(path, json.dumps(obj, indent=2))


@dataclasses.dataclass
class Sweep:
  """A validated sweep: absolute ``workdir``, ``config`` path and ``cwd`` (where points run), the
  common overrides (``--config.k=v`` texts for every point) and the points."""

  workdir: str
  config: str
  cwd: str
  common: dict[str, str]
  points: list[Point]

  def point_dir(self, point: Point) -> str:
    return os.path.join(self.workdir, "points", point.name)

  def log_path(self, point: Point) -> str:
    return os.path.join(self.point_dir(point), "sweep.log")

  def overrides(self, point: Point) -> dict[str, str]:
    return {**self.common, **point.overrides}

  def command(self, point: Point) -> list[str]:
    """``python -m jaxgen.main`` for ``point``: its workdir, the common overrides, then its own."""
    return [sys.executable, "-m", "jaxgen.main", f"--config={self.config}", f"--workdir={self.point_dir(point)}",
            *(f"--config.{k}={v}" for k, v in self.overrides(point).items())]

  def recorded(self, point: Point) -> dict[str, Any]:
    """The point's ``sweep_status.json`` as written, whatever overrides it was recorded for
    (``{}`` when there is none)."""
    try:
      with open(os.path.join(self.point_dir(point), "sweep_status.json")) as f:
        return json.load(f)
    except FileNotFoundError:
      return {}

  def status(self, point: Point) -> dict[str, Any]:
    """``{"status": ..., "error", "attempts", "started", "wall_s", "steps_per_s"}`` of the point."""
    status = self.recorded(point)
    return status if status and status.get("overrides") == self.overrides(point) else {"status": "pending"}

  def set_status(self, point: Point, **fields: Any) -> dict[str, Any]:
    """Records ``fields`` for the point's current overrides; ``attempts`` and ``wall_s`` carry over
    from a status recorded for other overrides (they count every attempt)."""
    status = self.recorded(point)
    if status.get("overrides") != self.overrides(point):  # recorded for other overrides: pending
      status = {"status": "pending", **{k: v for k, v in status.items() if k in ("attempts", "wall_s")}}
    status = {**status, **fields, "overrides": self.overrides(point)}
    write_json(os.path.join(self.point_dir(point), "sweep_status.json"), status)
    return status

  def other_point_dirs(self) -> list[str]:
    """Names of the folders in ``points/`` that belong to none of this sweep's points (points of an
    earlier, wider run of the sweep: kept on disk, left out of the manifest and the table)."""
    root = os.path.join(self.workdir, "points")
    names = {p.name for p in self.points}
    return sorted(d for d in (os.listdir(root) if os.path.isdir(root) else []) if d not in names)

  def save(self) -> None:
    """Writes ``manifest.json``: the sweep and each point's current status."""
    os.makedirs(self.workdir, exist_ok=True)
    points = []
    for p in self.points:
      status = {k: v for k, v in self.status(p).items() if k != "overrides"}
      points.append({**dataclasses.asdict(p), "workdir": self.point_dir(p), **status})
    write_json(os.path.join(self.workdir, MANIFEST),
               {"config": self.config, "cwd": self.cwd, "common": self.common, "points": points})

  @classmethod
  def load(cls, workdir: str) -> Sweep:
    """The sweep whose manifest is in ``workdir``."""
    path = os.path.join(workdir, MANIFEST)
    if not os.path.isfile(path):
      raise UserError(f"no sweep in {workdir!r} (no {MANIFEST}); start one with "
                      "python -m jaxgen.sweep --config=... --axis=... --workdir=...")
    with open(path) as f:
      m = json.load(f)
    fields = [f.name for f in dataclasses.fields(Point)]
    points = [Point(**{k: p[k] for k in fields}) for p in m["points"]]
    return cls(os.path.abspath(workdir), m["config"], m["cwd"], m["common"], points)

  def check_same_config(self) -> None:
    """Refuses to reuse a workdir that holds a sweep of another config file."""
    path = os.path.join(self.workdir, MANIFEST)
    if os.path.isfile(path):
      with open(path) as f:
        other = json.load(f)["config"]
      if other != self.config:
        raise UserError(f"{self.workdir} holds a sweep of {other}, not {self.config}; "
                        "pass another --workdir")
