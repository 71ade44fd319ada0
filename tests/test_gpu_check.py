"""experiments/benchmarks/gpu_check.sh --dry_run on the CPU: the table has one row per registered
family, rows that ran did not fail, and the time guard skips what would start after the budget."""

from __future__ import annotations

import os
import subprocess

from conftest import ROOT
from jaxgen.families import FAMILIES


def test_dry_run_prints_one_row_per_family_within_its_budget():
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([os.path.join(ROOT, "experiments", "benchmarks", "gpu_check.sh"), "--dry_run",
                         "--time_budget=6"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [line.strip("| ").split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")]
  by_name = {}
  for cells in rows:
    by_name.setdefault(cells[0], []).append(cells[1:])
  # jaxgen's own families (other test files register toy ones in this process, not in the script's).
  names = [name for name in FAMILIES.names() if FAMILIES.get(name).__module__.startswith("jaxgen.")]
  for name in names:
    assert len(by_name.get(name, [])) == 1, (name, proc.stdout)
  ran = [cells for name in names for cells in by_name[name] if not cells[0].startswith("skipped")]
  assert ran and all("lowered in" in cells[2] for cells in ran), proc.stdout  # lowered, never "error:"
  assert by_name["fid_10k"] == [["skipped: time budget (6 s) spent"]], proc.stdout  # started after the budget
  assert "total" in proc.stdout.splitlines()[-1]
