"""Where a compiled step moves its bytes: each top-level op of an optimised XLA HLO module, by the
bytes of its operands plus its outputs, summed by op and by source line.

    XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text" python -m jaxgen.main ...  # any compiled step
    python experiments/benchmarks/hlo_bytes.py /tmp/dump/module_*.jit_step.*after_optimizations.txt [--top=30]

``gpu_check.py`` prints these tables for its GPT-2 row (the compiled step's ``as_text()``).

On a GPU every top-level op of the entry computation is one kernel (a fusion, a cuBLAS / cuDNN
call, a copy) that reads its operands from device memory and writes its outputs there, so these
sums bound the step's memory traffic; over the card's bandwidth they give the time of the
memory-bound part, beside the matrix products' FLOPs over its matrix rate: the two floors of the
step, whose sum against the measured time says what bounds it. The count is an upper bound where a
fusion reads only part of an operand (a slice, a gather). No library reads this off a compiled module (XLA's own
``cost_analysis()`` gives one total, not the split), hence the parser: it needs only the text
format's ``%name = shape op(operands), ..., metadata={op_name="..."}`` lines, and ``%t#k`` for
element ``k`` of a tuple-shaped value.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
from typing import NamedTuple

#: Bytes per element of the HLO element types.
ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4,
                 "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(ELEMENT_BYTES) + r")\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_NO_KERNEL = ("parameter", "constant", "bitcast", "tuple", "get-tuple-element")


class Op(NamedTuple):
  name: str
  kind: str  # the op, "fusion <kind>", or a custom call's target
  bytes: int  # operands read + outputs written
  source: str  # the JAX op_name of its metadata


def array_bytes(shape: str) -> list[int]:
  """Bytes of each array in an HLO shape (``f32[2,3]{1,0}`` -> ``[24]``; a tuple lists each element)."""
  return [math.prod(int(d) for d in dims.split(",") if d) * ELEMENT_BYTES[t] for t, dims in _ARRAY.findall(shape)]


def entry_ops(hlo_text: str) -> list[Op]:
  """The kernels of the module's ``ENTRY`` computation, with their bytes."""
  body = hlo_text[hlo_text.index("\nENTRY"):]
  sizes: dict[str, list[int]] = {}
  ops = []
  for line in body[body.index("{\n") + 2:].splitlines():
    match = _INSTRUCTION.match(line.strip())
    if not match:
      continue
    name, shape, op, rest = match.groups()
    sizes[name] = array_bytes(shape)
    if op in _NO_KERNEL:
      continue
    scratch = ("s8", "u8") if op == "custom-call" else ()  # a library call's tuple ends in its scratch buffer
    written = sum(size for (t, _), size in zip(_ARRAY.findall(shape), sizes[name]) if t not in scratch)
    read = sum(sizes[a][int(k)] if k else sum(sizes[a])
               for a, k in re.findall(r"%([\w.\-]+)(?:#(\d+))?", rest.split("), ")[0]) if a in sizes)
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    fusion = re.search(r"kind=(\w+)", rest)
    kind = target.group(1) if target else f"fusion {fusion.group(1)}" if op == "fusion" and fusion else op
    source = re.search(r'op_name="([^"]+)"', rest)
    ops.append(Op(name, kind, read + written, source.group(1) if source else ""))
  return ops


def totals(ops: list[Op], key) -> list[tuple[str, int, int]]:
  """``(key, number of ops, bytes)`` summed over ``ops`` by ``key(op)``, most bytes first."""
  size, count = collections.Counter(), collections.Counter()
  for op in ops:
    size[key(op)] += op.bytes
    count[key(op)] += 1
  return [(k, count[k], b) for k, b in size.most_common()]


def by_source(op: Op) -> str:
  """The op's JAX source with layer numbers folded (``block7/`` -> ``blockN/``)."""
  return op.kind.split()[0] + ": " + (re.sub(r"(block|layer)[0-9]+", r"\1N", op.source) or "(no source)")


def print_tables(ops: list[Op], top: int = 30, say=print) -> None:
  """The total, the bytes by op, and the ``top`` sources by bytes, as markdown tables."""
  say(f"{len(ops)} kernels, {sum(op.bytes for op in ops) / 1e9:.4g} GB read + written\n")
  say("| op | kernels | GB |\n| --- | --- | --- |")
  for kind, n, size in totals(ops, lambda op: op.kind):
    say(f"| {kind} | {n} | {size / 1e9:.4g} |")
  say("\n| source (layers folded) | kernels | GB |\n| --- | --- | --- |")
  for source, n, size in totals(ops, by_source)[:top]:
    say(f"| {source} | {n} | {size / 1e9:.4g} |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("hlo", help="an optimised HLO text dump (*after_optimizations.txt)")
  parser.add_argument("--top", type=int, default=30, help="rows of the by-source table")
  args = parser.parse_args(argv)
  with open(args.hlo) as f:
    print_tables(entry_ops(f.read()), args.top)


if __name__ == "__main__":
  main()
