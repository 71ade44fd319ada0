"""Where a training step's time goes: the XLA profile of the trainer's compiled step, per HLO op.

  python experiments/benchmarks/step_profile.py configs/transformer.py [--steps=10] [--top=15]
  python experiments/benchmarks/step_profile.py configs/ddpm_cifar10.py --set=train.batch_size=8 --steps=2

Compiles the step as ``train_throughput.trainer_step`` does, runs ``--steps`` steps under
``jax.profiler`` and reads the trace back (``jax.profiler.ProfileData``). XLA:CPU runs each HLO
instruction of the optimized module as a "thunk" whose trace event carries the instruction's name,
on the thread that runs it (the client thread or the intra-op pool). Each event's time is summed per
instruction over every thread (the outermost event of that name, not a thunk's own sub-tasks):
*thread time*, which exceeds the wall time when two threads are busy; the shares are what to read.
Instructions are joined to the optimized HLO (``compiled.as_text()``) for their opcode, output
shape and the JAX op that made them (``metadata.op_name``; a fusion's from the convolution or dot
inside it): an op under ``transpose(jvp(...))`` belongs to the backward pass (``bwd``;
``bwd-param`` for a convolution or dot whose output is a parameter gradient: a parameter's size,
not led by the batch axis), one under ``jvp(...)`` alone to the forward pass (``fwd``), any other
to the update (optimizer, EMA, metrics).

Prints: wall ms per step, the thread time per category (convolution, dot, elementwise fusion,
copy/transpose, other opcodes; each fwd / bwd / bwd-param / update), the ``--top`` instructions,
and the peak memory.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import os
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments.benchmarks import train_throughput  # noqa: E402
from jaxgen import checkpoint as checkpoint_lib  # noqa: E402
from jaxgen import config_defaults, parallel, train  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402

#: ``name = shape opcode(`` of an HLO instruction line (the shape a tensor, a tuple or a token).
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+?\[[^\]]*\](?:\{[^}]*\})?|\([^)]*\)|\S+)\s+([\w-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_DIM_LABELS = re.compile(r"dim_labels=(\S+?)[,\s]")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
  """``{name: {opcode, shape, op_name, dim_labels, calls}}`` of every instruction of an HLO text."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    op_name, labels, calls = _OP_NAME.search(line), _DIM_LABELS.search(line), _CALLS.search(line)
    out[m.group(1)] = {"opcode": m.group(3), "shape": m.group(2).split("{")[0],
                       "op_name": op_name.group(1) if op_name else "",
                       "dim_labels": labels.group(1) if labels else "", "calls": calls.group(1) if calls else ""}
  return out


def fused_computations(hlo_text: str) -> dict[str, dict]:
  """``{computation name: {"opcodes": set, "op_names": {opcode: first op_name}}}`` of every
  computation (a fusion's body tells what the fusion holds and which JAX op made it)."""
  out, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if header and "=" not in line.split("{")[0]:
      current = out.setdefault(header.group(1), {"opcodes": set(), "op_names": {}})
      continue
    m = _INSTRUCTION.match(line)
    if m and current is not None:
      current["opcodes"].add(m.group(3))
      op_name = _OP_NAME.search(line)
      if op_name:
        current["op_names"].setdefault(m.group(3), op_name.group(1))
  return out


def category(info: dict, fused: dict[str, dict], batch: int, param_sizes: set[int]) -> str:
  """``"<kind> fwd|bwd|update"``: kind from the opcode (a fusion by what it holds); pass from the
  JAX op (of the fusion's convolution or dot when it holds one): under ``transpose(`` backward,
  under ``jvp(`` forward, else the optimizer, EMA and metrics. A backward convolution or dot whose
  output has a parameter's size (one of ``param_sizes``) and does not lead with the ``batch`` axis
  is a parameter gradient (``bwd-param``; also when XLA left it without an ``op_name``)."""
  opcode = info["opcode"]
  body = fused.get(info["calls"], {"opcodes": set(), "op_names": {}})
  inner = body["opcodes"]
  op_name = info["op_name"]
  if opcode == "convolution" or "convolution" in inner:
    kind, op_name = "convolution", body["op_names"].get("convolution", op_name)
  elif opcode == "dot" or "dot" in inner:
    kind, op_name = "dot", body["op_names"].get("dot", op_name)
  elif opcode in ("copy", "transpose") or (opcode == "fusion" and inner
                                             and inner <= {"copy", "transpose", "parameter", "bitcast"}):
    kind = "copy/transpose"
  elif opcode == "fusion":
    kind = "elementwise fusion"
  else:
    kind = opcode
  if not op_name and opcode == "fusion":
    op_name = next(iter(body["op_names"].values()), "")
  dims = [int(d) for d in re.findall(r"\d+", info["shape"].split("[", 1)[-1])]
  grad_of_param = (kind in ("convolution", "dot") and bool(dims) and dims[0] != batch
                   and math.prod(dims) in param_sizes)
  if grad_of_param and (not op_name or "transpose(" in op_name):  # XLA may drop a kernel gradient's op_name
    return f"{kind} bwd-param"
  if "transpose(" in op_name:
    return f"{kind} bwd"
  return f"{kind} {'fwd' if 'jvp(' in op_name else 'update'}"


def thread_times(xplane_path: str, names) -> dict[str, float]:
  """Summed duration (ns) per HLO instruction in ``names`` over the trace's events of that name on
  every thread, counting only the outermost of nested ones (a thunk's own sub-tasks)."""
  totals: dict[str, float] = collections.defaultdict(float)
  profile = jax.profiler.ProfileData.from_file(xplane_path)
  for plane in profile.planes:
    for line in plane.lines:
      end = -1.0
      for ev in sorted((e for e in line.events if e.name in names), key=lambda e: e.start_ns):
        if ev.start_ns < end:
          continue
        end = ev.start_ns + ev.duration_ns
        totals[ev.name] += ev.duration_ns
  return totals


def profile_step(config_path: str, overrides: list[str], steps: int) -> dict:
  """Compiles the trainer's step, runs ``steps`` steps (after one) under the profiler; returns the
  wall ms per step and ``{instruction: (ns, info)}``."""
  config = config_defaults.load(config_path, overrides)
  config.train.steps = steps + 2
  with tempfile.TemporaryDirectory() as workdir:
    train_throughput.provide_stage_one(config, workdir)
    exp = train.setup(config, os.path.join(workdir, "run"))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "run"), 1)
    ts = train.init_or_restore(exp, ckpt)
    ckpt.close()
    batch = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
    compiled = train.make_train_step(exp).lower(ts, batch).compile()
    param_sizes = {leaf.size for leaf in jax.tree.leaves(ts.params)}
    hlo = compiled.as_text()
    ts, _ = compiled(ts, batch)
    jax.block_until_ready(ts)
    trace_dir = os.path.join(workdir, "trace")
    jax.profiler.start_trace(trace_dir)
    t = time.perf_counter()
    for _ in range(steps):
      ts, metrics = compiled(ts, batch)
      jax.block_until_ready((ts, metrics))
    wall = time.perf_counter() - t
    jax.profiler.stop_trace()
    instructions, fused = hlo_instructions(hlo), fused_computations(hlo)
    trace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    totals = thread_times(trace, instructions)
  ops = {name: (ns / steps, instructions[name]) for name, ns in totals.items()}
  batch, sizes = config.train.batch_size, param_sizes
  return {"wall_ms": 1e3 * wall / steps, "ops": ops,
          "categories": {name: category(info, fused, batch, sizes) for name, (_, info) in ops.items()}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--set", action="append", default=[], help="config override key=value")
  args = parser.parse_args()
  r = profile_step(args.config, args.set, args.steps)
  total = sum(ns for ns, _ in r["ops"].values())
  print(f"{args.config} {' '.join(args.set)}: {r['wall_ms']:.1f} ms per step (wall, profiled), "
        f"{total / 1e6:.1f} ms thread time in {len(r['ops'])} HLO ops; load average {os.getloadavg()[0]:.1f}")
  by_category: dict[str, float] = collections.defaultdict(float)
  for name, (ns, _) in r["ops"].items():
    by_category[r["categories"][name]] += ns
  print(f"{'category':28s} {'thread ms':>10s} {'share':>6s}")
  for name, ns in sorted(by_category.items(), key=lambda kv: -kv[1]):
    print(f"{name:28s} {ns / 1e6:10.2f} {100 * ns / total:5.1f}%")
  print(f"\n{'instruction':34s} {'category':22s} {'thread ms':>10s} {'share':>6s}  shape, dim_labels, JAX op")
  for name, (ns, info) in sorted(r["ops"].items(), key=lambda kv: -kv[1][0])[:args.top]:
    op = info["op_name"].split("/")[-1] if info["op_name"] else ""
    print(f"{name[:34]:34s} {r['categories'][name]:22s} {ns / 1e6:10.2f} {100 * ns / total:5.1f}%  "
          f"{info['shape']} {info['dim_labels']} {op}")
  print(f"peak memory {peak_memory()}")


if __name__ == "__main__":
  main()
