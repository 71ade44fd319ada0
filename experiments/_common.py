"""What the course-comparison experiments share (issue 13): the family sweeps, restoring a trained
point, sampling speed, sample metrics against one reference, and the table writers.

* ``image_families()``: every registered family whose own config ``configs/<family>.py`` trains on
  ``digits`` (a family added later, with its config, appears by itself).
* ``train_families(...)``: one sweep (``jaxgen.sweeps.run``) per family over seeds, in
  ``<root>/<family>``; rerunning resumes (done points are skipped). A two-stage family (a config
  field ``model.<x>_workdir`` set to ``runs/<name>``) is trained after ``<name>``'s sweep and
  pointed at its point of the same seed. The sweeps' evaluators are the config's own that need no
  feature space (``heldout``, ``ais``), plus ``per_example_nll``; the sample metrics are measured
  afterwards by the scripts, against one reference for every family.
* ``sample_metrics(real, fake)``: FID, KID, precision / recall (k = 3), density / coverage (k = 5)
  of two feature sets (the evaluators' kernels and default k).

Flags shared by the scripts: ``--out`` (tables and figures), ``--quick`` (tiny budgets, for the
test), ``--workdir`` (where the sweeps train), ``--parallel`` (points at once).
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import queue
import sys
import time
from typing import Any, Iterable

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from jaxgen import config_defaults, families, sweeps  # noqa: E402
from jaxgen import data as data_lib  # noqa: E402
from jaxgen.evaluation import features  # noqa: E402
from jaxgen.evaluation.gaussian import fid_from_features  # noqa: E402
from jaxgen.evaluation.kid import kid  # noqa: E402
from jaxgen.evaluation.manifold import manifold_metrics  # noqa: E402
from jaxgen.sweeps import local  # noqa: E402

OUT = flags.DEFINE_string("out", None, "directory for table.md, table.csv and the figures", required=True)
QUICK = flags.DEFINE_bool("quick", False, "tiny budgets (a few steps, few samples): a smoke run for the test")
WORKDIR = flags.DEFINE_string("workdir", "", "where the sweeps train (default runs/experiments; "
                              "--quick: <out>/runs)")
PARALLEL = flags.DEFINE_integer("parallel", 1, "sweep points run at once", lower_bound=1)

#: Evaluators the family sweeps keep from a config (they need no feature space).
KEPT_EVALUATORS = ("heldout", "ais")
#: Overrides of every point in --quick runs: a smoke test, not a measurement.
QUICK_OVERRIDES = {"train.steps": 3, "train.checkpoint_every": 0, "train.log_every": 0,
                   "eval.ais.chains": 4, "eval.ais.betas": 20}


def workdir(name: str) -> str:
  """The sweeps' root for experiment ``name``: ``--workdir``, else ``runs/experiments/<name>``
  (``<out>/runs/<name>`` with ``--quick``)."""
  if WORKDIR.value:
    return WORKDIR.value
  return os.path.join(OUT.value, "runs", name) if QUICK.value else os.path.join("runs", "experiments", name)


def config_path(name: str) -> str:
  return os.path.join(ROOT, "configs", f"{name}.py")


def image_families() -> list[str]:
  """Registered families whose config ``configs/<family>.py`` trains on ``digits``, sorted."""
  return [name for name in families.FAMILIES.names()
          if os.path.isfile(config_path(name)) and config_defaults.load(config_path(name)).data.name == "digits"]


def prerequisites(name: str) -> dict[str, str]:
  """``{"model.<x>_workdir": config name}`` of a two-stage family's config (``runs/vqvae`` -> ``vqvae``)."""
  model = config_defaults.load(config_path(name)).model
  return {f"model.{k}": os.path.basename(str(v).rstrip("/")) for k, v in model.items()
          if k.endswith("_workdir") and v}


def quick_overrides(config: str) -> dict[str, Any]:
  """``QUICK_OVERRIDES``, and no learning-rate warm-up in the config at ``config`` (a warm-up must
  end within ``train.steps``)."""
  optim = config_defaults.load(config).optim
  return {**QUICK_OVERRIDES, **{f"optim.{name}.warmup_steps": 0 for name, o in optim.items() if o.get("warmup_steps")}}


def family_overrides(name: str, quick: bool, train_steps: int = 0) -> dict[str, Any]:
  """The common overrides of family ``name``'s sweep (the same in every script, so the scripts
  share finished points)."""
  config = config_defaults.load(config_path(name))
  metrics = tuple(m for m in config.eval.metrics if m in KEPT_EVALUATORS) + ("per_example_nll",)
  out: dict[str, Any] = {"eval.metrics": metrics, "train.progress_bar": False}
  if train_steps:
    out["train.steps"] = train_steps
  if quick:
    out.update(quick_overrides(config_path(name)))
  return out


def _rows(root: str) -> list[dict[str, Any]]:
  """``sweeps.collect``'s rows of the sweep in ``root``, each with its point's workdir ``"dir"``
  and whole ``"config"``."""
  rows = sweeps.collect(root)
  sweep = sweeps.Sweep.load(root)
  for row, point in zip(rows, sweep.points):
    row["dir"] = sweep.point_dir(point)
    row["config"] = config_defaults.load(sweep.config, sweep.overrides(point))
  return rows


def run_sweeps(jobs: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]], root: str, parallel: int,
               after: dict[str, list[str]] | None = None) -> dict[str, list[dict[str, Any]]]:
  """Runs (or resumes) the sweeps ``{name: (config path, points, common overrides)}`` in
  ``<root>/<name>``, ``parallel`` sweeps at once, each on its share of the machine
  (``jaxgen.sweeps.local.machine_shares``; a sweep's points run one after another on it). A sweep
  waits for those named in ``after[name]``; ``jobs[name]`` may be a function of their rows, called
  then. Returns ``{name: rows}`` (``_rows``)."""
  after = after or {}
  slots: queue.SimpleQueue = queue.SimpleQueue()
  for share in local.machine_shares(parallel):
    slots.put(share)
  futures: dict[str, concurrent.futures.Future] = {}

  def one(name: str) -> list[dict[str, Any]]:
    done = {n: futures[n].result() for n in after.get(name, ())}
    job = jobs[name](done) if callable(jobs[name]) else jobs[name]
    config, points, common = job
    workdir = os.path.join(root, name)
    sweep = sweeps.prepare(config, points, workdir, common)
    sweep.save()
    todo = [sweep.points[i] for i in sweeps.pending(sweep)]
    print(f"{name}: {len(sweep.points)} points, {len(todo)} to run", flush=True)
    if todo:
      share = slots.get()
      try:
        local.Runner(sweep, 1, echo=lambda line: print(f"{name} {line}", flush=True)).run(todo, [share])
      finally:
        slots.put(share)
    return _rows(workdir)

  for name, job in jobs.items():  # a bad override stops everything before anything runs
    if not callable(job):
      sweeps.prepare(job[0], job[1], os.path.join(root, name), job[2])
  with concurrent.futures.ThreadPoolExecutor(max(1, len(jobs))) as pool:
    for name in jobs:  # prerequisites are submitted first (the caller's order)
      futures[name] = pool.submit(one, name)
    return {name: f.result() for name, f in futures.items()}


def train_families(names: Iterable[str], seeds: Iterable[int], root: str, quick: bool, parallel: int,
                   train_steps: int = 0) -> dict[str, list[dict[str, Any]]]:
  """Trains (or resumes) every family of ``names`` over ``seeds`` (module docstring), ``parallel``
  sweeps at once; returns ``{family: rows}`` (``_rows``); a prerequisite not in ``names`` is
  trained too."""
  seeds, todo, order = list(seeds), list(names), []
  while todo:  # prerequisites first
    name = todo.pop(0)
    if name in order:
      continue
    needs = [n for n in prerequisites(name).values() if n not in order]
    if needs:
      todo[:0] = needs + [name]
      continue
    order.append(name)

  def job(name):
    def points(done):
      return (config_path(name),
              [{"seed": seed, **{key: next(r["dir"] for r in done[needed] if r["seed"] == seed)
                                 for key, needed in prerequisites(name).items()}} for seed in seeds],
              family_overrides(name, quick, train_steps))
    return points

  return run_sweeps({name: job(name) for name in order}, root, parallel,
                    {name: list(prerequisites(name).values()) for name in order})


#: How a run's final metrics say what likelihood it has: (NLL key, its bits/dim key, label).
LIKELIHOODS = (("nll_nats", "bits_per_dim", "exact"), ("nll_bound_nats", "bits_per_dim", "bound"),
               ("ais_nll_nats", "ais_bits_per_dim", "exact (AIS estimate)"),
               ("ais_nll_bound_nats", "ais_bits_per_dim", "bound (AIS estimate)"),
               ("neg_elbo_estimate_nats", "neg_elbo_estimate_bits_per_dim", "estimate"))


def likelihood(row: dict[str, Any]) -> tuple[str, float | None]:
  """``(label, held-out bits/dim)`` of a run's final metrics (``LIKELIHOODS``); ``("none", None)``
  when it reports no likelihood of the data (a GAN)."""
  for nll, bpd, label in LIKELIHOODS:
    if row.get(nll) is not None:
      return label, row.get(bpd)
  return "none", None


def restore(row: dict[str, Any]):
  """``(pretrained.Pretrained, data pipeline)`` of a finished sweep point: its family and EMA params."""
  from jaxgen import pretrained  # pylint: disable=import-outside-toplevel

  pipeline = data_lib.build(row["config"])
  return pretrained.load(row["dir"], pipeline.spec, row["config"].data, "point"), pipeline


def timed_sampler(family, params, state, batch: int, repeats: int):
  """``(draw, samples_per_second)``: ``draw(key)`` -> ``batch`` samples (jitted), and its rate
  (median of ``repeats`` timed calls after the compiling one)."""
  import jax  # pylint: disable=import-outside-toplevel

  from jaxgen.timing import median_seconds  # pylint: disable=import-outside-toplevel

  fn = jax.jit(lambda p, s, k: family.sample(p, s, k, batch))
  draw = lambda key: np.asarray(fn(params, state, key))
  seconds = median_seconds(fn, params, state, jax.random.key(0), repeats=repeats)
  return draw, batch / seconds


def draw_samples(draw, num: int, batch: int, seed: int) -> np.ndarray:
  """``num`` samples from ``draw`` (``batch`` per call), keys ``fold_in(key(seed), i)``."""
  import jax  # pylint: disable=import-outside-toplevel

  key = jax.random.key(seed)
  return np.concatenate([draw(jax.random.fold_in(key, i)) for i in range(-(-num // batch))])[:num]


def sample_metrics(real: np.ndarray, fake: np.ndarray, block_size: int = 1024) -> dict[str, float]:
  """FID, KID (mean), precision, recall, density, coverage of feature sets ``real``, ``fake``."""
  kid_mean, _ = kid(real, fake)
  return {"fid": fid_from_features(real, fake), "kid": kid_mean,
          **manifold_metrics(real, fake, pr_k=3, dc_k=5, block_size=block_size)}


def classifier_config():
  """A config whose ``eval.features`` is the shipped digits classifier."""
  return config_defaults.apply_overrides(config_defaults.base(), {"eval.features": "digits_classifier"})


def digits_features(x: np.ndarray, spec) -> features.Features:
  """Digits-classifier features (and logits) of model-space images ``x`` of data ``spec``."""
  return features.extract(classifier_config(), spec, x)


def split_images(config, split: str) -> tuple[np.ndarray, Any]:
  """Every example of ``split`` (``train`` or ``test``) of ``config``'s data in model space, in
  order, and the model-space spec."""
  pipeline = data_lib.build(config)
  parts = [b["x"][b["mask"] > 0] for b in pipeline.split_batches(split, 256)]
  return np.concatenate(parts), pipeline.spec


def mean_std(values: Iterable[float | None], digits: int = 3) -> str:
  """``mean ± std`` (ddof=1) of the finite values, the mean alone for one, ``—`` for none; followed
  by `` (n=k)`` when only ``k`` of the values are finite (a run without the metric, or with a NaN /
  inf one: the mode-coverage reverse KL of a run with no high-quality sample), as the sweeps'
  tables mark it."""
  given = list(values)
  v = np.array([x for x in given if x is not None and np.isfinite(x)], np.float64)
  if not len(v):
    return "—"
  text = f"{v.mean():.{digits}g}" if len(v) == 1 else f"{v.mean():.{digits}g} ± {v.std(ddof=1):.2g}"
  return text if len(v) == len(given) else f"{text} (n={len(v)})"


def bits_per_dim_cell(values: Iterable[float | None], kind: str, binarized: bool) -> str:
  """Held-out bits/dim over runs (``mean_std``, 4 digits) labelled with the likelihood ``kind`` and,
  for a config that binarizes the data, "binarized data": a likelihood of other data than the
  17-level digits, not comparable with theirs."""
  return f"{mean_std(values, 4)} ({kind}{', binarized data' if binarized else ''})"


def write_tables(out: str, columns: list[str], md_rows: list[dict[str, str]], csv_rows: list[dict[str, Any]],
                 header: str) -> list[str]:
  """``table.md`` (``header``, then ``md_rows`` under ``columns``) and ``table.csv`` (``csv_rows``,
  one per run, every key); prints the markdown; returns the paths."""
  os.makedirs(out, exist_ok=True)
  lines = [header, "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
  lines += ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in columns) + " |" for r in md_rows]
  md = os.path.join(out, "table.md")
  with open(md, "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)
  fields = list(dict.fromkeys(k for r in csv_rows for k in r))
  path = os.path.join(out, "table.csv")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows(csv_rows)
  return [md, path]


def pyplot():
  """matplotlib's pyplot on the Agg backend (files only)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def save_figure(fig, path: str) -> str:
  """Lays out ``fig``, writes it to ``path`` (100 dpi) and closes it; returns ``path``."""
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  pyplot().close(fig)
  return path


def header(title: str, start: float) -> str:
  """The table's first line: what, the command, the device and the wall time so far."""
  import jax  # pylint: disable=import-outside-toplevel

  quick = " **--quick: tiny budgets, the numbers are not meaningful.**" if QUICK.value else ""
  return (f"{title} (`python {' '.join(sys.argv)}`; {time.strftime('%Y-%m-%d')}, "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores, {time.time() - start:.0f} s).{quick}")
