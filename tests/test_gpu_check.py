"""experiments/benchmarks/gpu_check.sh --dry_run on the CPU: the table has one row per registered
family, rows that ran did not fail, and the time guard skips what would start after the budget;
hlo_bytes.py (the byte profile of a compiled step) against closed-form byte counts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import ROOT
from jaxgen.families import FAMILIES


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_dry_run_prints_one_row_per_family_within_its_budget():
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable}  # this interpreter
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


def test_sections_runs_only_the_parts_named(capsys):
  """``--sections=gpt2_small,fid_10k,glow_scan``: those rows alone, no family row (what an XLA-flag
  comparison of one row uses); the optional Glow row lowers its three variants; the GPT-2 row's
  compiled step is followed by its byte table, whose rows add up to its total."""
  gpu_check = _load("gpu_check")
  gpu_check.main(["--dry_run", "--sections=gpt2_small,fid_10k,glow_scan"])
  out, profile = capsys.readouterr().out.split("## gpt2_small: where its compiled step moves bytes (hlo_bytes.py)")
  rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
  assert [r[0] for r in rows if r[0] not in ("family", "section", "---")] == ["gpt2_small", "fid_10k", "glow_scan"]
  glow = next(r for r in rows if r[0] == "glow_scan")
  assert [cell.split(":")[0] for cell in glow[2:5]] == ["K=8 unrolled", "K=8 scan", "K=32 scan"], glow
  assert all("lowered in" in cell for cell in glow[2:5]), glow
  lines = profile.strip().splitlines()
  kernels, total = lines[0].split(" kernels, ")
  by_op = [line.strip("| ").split(" | ") for line in lines[4:lines.index("", 2)]]  # under its header
  assert sum(int(n) for _, n, _ in by_op) == int(kernels) > 0, profile
  total_gb = float(total.split()[0])
  assert total_gb > 0 and abs(sum(float(gb) for _, _, gb in by_op) - total_gb) <= 1e-3 * total_gb, profile
  with pytest.raises(SystemExit):
    gpu_check.main(["--dry_run", "--sections=fid"])


def test_hlo_bytes_counts_operands_and_outputs_of_each_kernel():
  """A compiled elementwise fusion reads two f32[500, 400] arrays and writes one: 2.4 MB. In the GPU
  form, an operand ``%t#k`` is element ``k`` of a tuple, and a library call's s8 scratch is not data."""
  hlo_bytes = _load("hlo_bytes")
  x = jnp.ones((500, 400))
  text = jax.jit(lambda x, y: jnp.sin(x) * y).lower(x, x).compile().as_text()
  (op,) = [op for op in hlo_bytes.entry_ops(text) if op.source.endswith("/mul")]
  assert op.bytes == 3 * 500 * 400 * 4, op

  gpu_text = """HloModule m

ENTRY %main (p: bf16[64,32], w: bf16[32,16]) -> f32[64,16] {
  %p = bf16[64,32]{1,0} parameter(0)
  %w = bf16[32,16]{1,0} parameter(1)
  %mm = (bf16[64,16]{1,0}, s8[1048576]{0}) custom-call(%p, %w), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(step)/block3/dot_general"}
  ROOT %c = f32[64,16]{1,0} fusion(%mm#0), kind=kLoop, calls=%f, metadata={op_name="jit(step)/block7/convert"}
}
"""
  ops = hlo_bytes.entry_ops(gpu_text)
  assert [(op.kind, op.bytes) for op in ops] == [("__cublas$lt$matmul", (64 * 32 + 32 * 16 + 64 * 16) * 2),
                                                 ("fusion kLoop", 64 * 16 * (2 + 4))]
  assert [hlo_bytes.by_source(op) for op in ops] == ["__cublas$lt$matmul: jit(step)/blockN/dot_general",
                                                     "fusion: jit(step)/blockN/convert"]
