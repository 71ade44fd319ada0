"""Mutation testing of chosen jaxgen modules: does the test suite notice a realistic one-line bug?

Each *mutant* changes one expression on one line of a library module (AST-based, re-inserted at
the node's exact columns, so the rest of the file is untouched):

* comparison swaps ``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``is``/``is not``, ``in``/``not in``;
* arithmetic swaps ``+``/``-``, ``*``/``/``, ``**``/``*``, ``//``/``/``, and dropping the right
  term of ``a + b`` / ``a - b``;
* constants ``0 -> 1``, ``1 -> 0``, other ints ``n -> n + 1``, floats ``c -> 2c``, ``True``/``False``;
* negation dropped (``-x -> x``, ``not x -> x``), ``and``/``or`` swapped, an ``if``/``while``
  condition negated;
* ``min``/``max``-like and ``any``/``all`` calls swapped; a call of ``fold_in``, ``exp``, ``log``,
  ``sqrt``, ``stop_gradient``, ... replaced by its first argument (the same key every step, a lost
  transform); the first two positional arguments of a call swapped when both are plain names.

Docstrings, f-strings, messages of ``raise`` and logging calls are never mutated. Every mutant is
applied to a scratch copy of the repository (the working tree is never touched), and the tests
mapped to its module (``TESTS`` below) run there with ``pytest -x`` under a timeout. A mutant is
*killed* when they fail (or time out), *survived* when they pass.

Usage (not part of CI; see docs/testing.md):

    nice -n 10 python tools/mutate.py jaxgen/losses.py jaxgen/sampling.py --sample 30 --out runs/mutate
    python tools/mutate.py --rerun runs/mutate/report.json --out runs/mutate2   # survivors only
    python tools/mutate.py --rerun runs/mutate/report.json --tests "tests/test_train.py -k nan" --out runs/mutate3

``--sample N`` draws N mutants per module at random (``--seed``) instead of all of them.
Writes ``report.json`` and ``report.md`` (killed / survived / per-module score, each survivor as
``file:line`` with the original and mutated line) to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPY = ("jaxgen", "tests", "configs", "pyproject.toml", "README.md", "docs")
SOURCE = ROOT  # where mutants are generated and applied: the scratch copy once it exists

# Module (path prefix) -> pytest arguments of the fast tests that should catch its bugs; the most
# specific prefix wins.
TESTS = {
    "jaxgen/train.py": ["tests/test_trainer_contract.py",
                        "tests/test_train.py::test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint"],
    "jaxgen/losses.py": ["tests/test_losses.py", "tests/test_objectives.py",
                         "tests/test_gan.py::test_adversarial_losses_match_their_formulas_at_nonzero_logits",
                         "tests/test_gan.py::test_training_losses_equal_the_documented_objective",
                         "tests/test_vae.py::test_beta_one_loss_is_the_negative_elbo_of_the_plain_vae"],
    "jaxgen/sampling.py": ["tests/test_sampling.py", "tests/test_metric_boundaries.py"],
    "jaxgen/diffusion.py": ["tests/test_objectives.py", "tests/test_diffusion.py", "tests/test_samplers.py",
                            "-k", "not end_to_end"],
    "jaxgen/evaluation/": ["tests/test_metric_boundaries.py", "tests/test_evaluation.py"],
    "jaxgen/families/": ["tests/test_objectives.py"],
}
# Families also run their own test file, tests/test_<family>.py (or the aliases below) when present,
# without its end-to-end runs.
FAMILY_TESTS = {"flow": "tests/test_flows.py", "vqvae_prior": "tests/test_vqvae.py", "ddpm": "tests/test_diffusion.py"}

CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
            ast.FloorDiv: ast.Div}
CALL_SWAP = {"minimum": "maximum", "maximum": "minimum", "min": "max", "max": "min", "argmin": "argmax",
             "argmax": "argmin", "any": "all", "all": "any", "logical_and": "logical_or",
             "logical_or": "logical_and"}
UNWRAP = {"fold_in", "exp", "log", "sqrt", "abs", "square", "stop_gradient", "log1p", "expm1", "relu",
          "sigmoid", "softplus", "tanh", "log_softmax", "softmax", "floor", "round", "clip", "mean", "sum"}


@dataclasses.dataclass
class Mutant:
  path: str  # relative to the repository root
  line: int  # 1-based
  col: int  # byte offsets of the replaced expression on that line
  end_col: int
  operator: str
  original: str  # the whole original line
  mutated: str  # the whole mutated line
  status: str = "pending"  # killed | survived | timeout | invalid
  seconds: float = 0.0


def _segment(text: str, node: ast.AST) -> str:
  return text.encode()[node.col_offset:node.end_col_offset].decode()


def _quiet_nodes(tree: ast.AST) -> set[int]:
  """ids of nodes never mutated: docstrings, f-strings, raise messages, logging, annotations."""
  quiet: set[int] = set()

  def mark(node):
    quiet.update(id(n) for n in ast.walk(node))

  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        mark(body[0])
      if not isinstance(node, ast.Module):
        for d in node.decorator_list:
          mark(d)
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if node.returns is not None:
          mark(node.returns)
        for a in node.args.args + node.args.kwonlyargs:
          if a.annotation is not None:
            mark(a.annotation)
    elif isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert, ast.Import, ast.ImportFrom)):
      mark(node)
    elif isinstance(node, ast.AnnAssign):
      mark(node.annotation)
    elif isinstance(node, ast.Call):
      f = node.func
      name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
      owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
      if owner == "logging" or name in ("print", "UserError", "ValueError", "TypeError", "KeyError"):
        mark(node)
  return quiet


def _replacements(node: ast.AST) -> list[tuple[str, ast.AST]]:
  """(operator name, mutated copy of node) for every mutation of this one node."""
  out = []

  def copy():
    return ast.parse(ast.unparse(node), mode="eval").body

  if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMP_SWAP:
    m = copy()
    m.ops = [CMP_SWAP[type(node.ops[0])]()]
    out.append(("compare", m))
  elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
    m = copy()
    m.op = BIN_SWAP[type(node.op)]()
    out.append(("arith", m))
    if isinstance(node.op, (ast.Add, ast.Sub)):
      out.append(("drop_term", copy().left))
  elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
    if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
      out.append(("drop_negation", copy().operand))
  elif isinstance(node, ast.BoolOp):
    m = copy()
    m.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    out.append(("bool_op", m))
  elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)) and node.value is not None:
    v = node.value
    if isinstance(v, bool):
      new = not v
    elif isinstance(v, int):
      new = {0: 1, 1: 0}.get(v, v + 1)
    elif isinstance(v, float) and (v == 0.0 or abs(v) >= 1e-6):
      new = {0.0: 1.0, 1.0: 0.0}.get(v, 2 * v)
    else:
      return out
    out.append(("constant", ast.Constant(new)))
  elif isinstance(node, ast.Call):
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    if name in CALL_SWAP:
      m = copy()
      if isinstance(m.func, ast.Attribute):
        m.func.attr = CALL_SWAP[name]
      else:
        m.func.id = CALL_SWAP[name]
      out.append(("call_swap", m))
    if name in UNWRAP and node.args and not isinstance(node.args[0], ast.Starred):
      out.append(("unwrap", copy().args[0]))
    if (len(node.args) >= 2 and all(isinstance(a, (ast.Name, ast.Attribute)) for a in node.args[:2])
        and ast.unparse(node.args[0]) != ast.unparse(node.args[1])):
      m = copy()
      m.args[0], m.args[1] = m.args[1], m.args[0]
      out.append(("swap_args", m))
  return out


def _condition_mutants(node: ast.AST) -> list[tuple[str, ast.AST, ast.AST]]:
  if isinstance(node, (ast.If, ast.While, ast.IfExp)) and node.test.lineno == node.test.end_lineno:
    return [("negate_condition", node.test, ast.UnaryOp(ast.Not(), ast.parse(ast.unparse(node.test), mode="eval").body))]
  return []


def mutants_of(path: str, functions: tuple[str, ...] = ()) -> list[Mutant]:
  """Every mutant of ``path``; only inside the named top-level functions when ``functions`` is given."""
  with open(os.path.join(SOURCE, path), encoding="utf-8") as f:
    source = f.read()
  lines = source.splitlines()
  tree = ast.parse(source)
  quiet = _quiet_nodes(tree)
  spans = [(n.lineno, n.end_lineno) for n in tree.body
           if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in functions]
  found = []
  for node in ast.walk(tree):
    if functions and not any(a <= getattr(node, "lineno", 0) <= b for a, b in spans):
      continue
    cands = [(op, node, new) for op, new in _replacements(node)] + _condition_mutants(node)
    for op, target, new in cands:
      if id(target) in quiet or not hasattr(target, "lineno") or target.lineno != target.end_lineno:
        continue
      line = lines[target.lineno - 1]
      raw = line.encode()
      text = ast.unparse(new)
      if not isinstance(new, (ast.Name, ast.Constant, ast.Attribute, ast.Call, ast.Subscript)):
        text = f"({text})"
      mutated = (raw[:target.col_offset] + text.encode() + raw[target.end_col_offset:]).decode()
      if mutated == line:
        continue
      new_source = "\n".join(lines[:target.lineno - 1] + [mutated] + lines[target.lineno:]) + "\n"
      try:
        compile(new_source, path, "exec")
      except SyntaxError:
        continue
      found.append(Mutant(path, target.lineno, target.col_offset, target.end_col_offset, op, line, mutated))
  found.sort(key=lambda m: (m.line, m.col, m.operator, m.mutated))
  return found


def tests_for(path: str) -> list[str]:
  best = max((p for p in TESTS if path.startswith(p)), key=len, default=None)
  if best is None:
    raise SystemExit(f"no tests mapped to {path}; add it to TESTS in tools/mutate.py")
  tests = list(TESTS[best])
  if path.startswith("jaxgen/families/"):
    fam = os.path.splitext(os.path.basename(path))[0]
    own = FAMILY_TESTS.get(fam, f"tests/test_{fam}.py")
    if os.path.exists(os.path.join(ROOT, own)):
      tests += [own, "-k", "not end_to_end and not trains and not learns and not wgan and not samples_are"]
  # Test files not written yet are left out (a rerun of the survivors picks them up).
  return [t for t in tests if not t.startswith("tests/") or os.path.exists(os.path.join(ROOT, t.split("::")[0]))]


def _expand(paths: list[str]) -> list[tuple[str, tuple[str, ...]]]:
  """``path`` or ``path:func1,func2`` (a directory: its modules) -> ``[(module, functions)]``."""
  out = []
  for p in paths:
    p, _, funcs = p.partition(":")
    functions = tuple(f for f in funcs.split(",") if f)
    p = os.path.relpath(os.path.abspath(p), ROOT)
    if os.path.isdir(os.path.join(SOURCE, p)):
      out += sorted((os.path.join(p, f), functions) for f in os.listdir(os.path.join(SOURCE, p))
                    if f.endswith(".py") and f != "__init__.py")
    else:
      out.append((p, functions))
  return out


def _pytest(scratch: str, tests: list[str], timeout: float) -> tuple[str, float]:
  env = dict(os.environ, PYTHONPATH=scratch, JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")
  cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *tests]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return "timeout", time.perf_counter() - start
  status = "survived" if proc.returncode == 0 else "killed"
  if proc.returncode not in (0, 1):  # 2+: collection error / interrupted -- still a detected mutant
    status = "killed"
  return status, time.perf_counter() - start


def make_scratch(ref: str) -> str:
  """A copy of the repository to mutate: the library at git ``ref`` (a consistent snapshot while
  others edit the working tree; ``""`` = the working tree) and the tests of the working tree."""
  scratch = tempfile.mkdtemp(prefix="jaxgen_mutate_")
  for name in COPY:
    src = os.path.join(ROOT, name)
    if ref and name != "tests":
      archive = subprocess.run(["git", "archive", ref, name], cwd=ROOT, capture_output=True, check=True).stdout
      subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
    elif os.path.isdir(src):
      shutil.copytree(src, os.path.join(scratch, name), ignore=shutil.ignore_patterns("__pycache__"))
    elif os.path.exists(src):
      shutil.copy(src, scratch)
  return scratch


def run(mutants: list[Mutant], scratch: str, out_dir: str, timeout_factor: float,
        tests_override: list[str] | None = None) -> None:
  baseline: dict[tuple[str, ...], float] = {}
  try:
    for i, m in enumerate(mutants):
      tests = tuple(tests_override or tests_for(m.path))
      if tests not in baseline:
        status, secs = _pytest(scratch, list(tests), 1800)
        if status != "survived":
          raise SystemExit(f"the unmutated tests {tests} fail; fix them before mutating")
        baseline[tests] = secs
        print(f"baseline {' '.join(tests)}: {secs:.1f}s", flush=True)
      target = os.path.join(scratch, m.path)
      with open(target, encoding="utf-8") as f:
        pristine = f.read()
      lines = pristine.splitlines()
      if m.line > len(lines) or lines[m.line - 1] != m.original:  # the file changed since: find the line
        same = [i + 1 for i, line in enumerate(lines) if line == m.original]
        if len(same) != 1:
          m.status = "invalid"
          continue
        m.line = same[0]
      lines[m.line - 1] = m.mutated
      with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
      try:
        m.status, m.seconds = _pytest(scratch, list(tests), max(60.0, timeout_factor * baseline[tests]))
      finally:
        with open(target, "w", encoding="utf-8") as f:
          f.write(pristine)
      print(f"[{i + 1}/{len(mutants)}] {m.status:8s} {m.path}:{m.line} {m.operator}: {m.mutated.strip()}",
            flush=True)
      write_report(mutants, out_dir)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  write_report(mutants, out_dir)


def write_report(mutants: list[Mutant], out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump([dataclasses.asdict(m) for m in mutants], f, indent=1)
  done = [m for m in mutants if m.status in ("killed", "timeout", "survived")]
  rows = ["| module | killed | survived | score |", "|---|---|---|---|"]
  for path in sorted({m.path for m in done}):
    ms = [m for m in done if m.path == path]
    killed = sum(m.status != "survived" for m in ms)
    rows.append(f"| {path} | {killed} | {len(ms) - killed} | {killed}/{len(ms)} |")
  killed = sum(m.status != "survived" for m in done)
  rows.append(f"| **all** | {killed} | {len(done) - killed} | {killed}/{len(done)} |")
  surv = [f"- `{m.path}:{m.line}` ({m.operator})\n  - `{m.original.strip()}`\n  + `{m.mutated.strip()}`"
          for m in done if m.status == "survived"]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("# Mutation report\n\n" + "\n".join(rows) + "\n\n## Survivors\n\n" + "\n".join(surv) + "\n")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("paths", nargs="*", help="modules or directories under jaxgen/; 'module.py:f,g' keeps "
                      "the mutants inside top-level functions or classes f and g")
  parser.add_argument("--sample", type=int, default=0, help="mutants drawn per module (0 = all)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rerun", help="a previous report.json: rerun its survivors only")
  parser.add_argument("--timeout-factor", type=float, default=3.0, help="timeout = factor x baseline (>= 60 s)")
  parser.add_argument("--tests", help="pytest arguments (one shell-quoted string) for every mutant instead of the "
                      "TESTS map, e.g. \"tests/test_train.py -k 'nan or resume'\"")
  parser.add_argument("--list", action="store_true", help="only print the mutants")
  parser.add_argument("--ref", default="HEAD", help="git ref of the library to mutate ('' = working tree)")
  parser.add_argument("--out", default="runs/mutate")
  args = parser.parse_args()
  global SOURCE
  SOURCE = make_scratch(args.ref)
  if args.rerun:
    with open(args.rerun) as f:
      mutants = [Mutant(**{**m, "status": "pending", "seconds": 0.0}) for m in json.load(f) if m["status"] == "survived"]
  else:
    rng = random.Random(args.seed)
    mutants = []
    for path, functions in _expand(args.paths):
      ms = mutants_of(path, functions)
      if args.sample and len(ms) > args.sample:
        ms = sorted(rng.sample(ms, args.sample), key=lambda m: (m.line, m.col))
      mutants += ms
  if args.list:
    for m in mutants:
      print(f"{m.path}:{m.line} {m.operator}: {m.mutated.strip()}")
    print(f"{len(mutants)} mutants")
    shutil.rmtree(SOURCE, ignore_errors=True)
    return
  run(mutants, SOURCE, args.out, args.timeout_factor, shlex.split(args.tests) if args.tests else None)


if __name__ == "__main__":
  main()
