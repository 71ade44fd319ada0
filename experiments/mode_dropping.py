"""The course's Example 3 (mode dropping seen through log-likelihood, FID, precision and recall) with
real models (issue 13, part 3).

  python experiments/mode_dropping.py --out=results/mode_dropping --parallel=2
  python experiments/mode_dropping.py --out=/tmp/md --quick                # smoke run

Data: two well-separated 2-D Gaussian clusters, A at (-4, 0) and B at (+4, 0), standard deviation
0.5, written offline as ``arrays:`` files (``<workdir>/data/*.npz``, seeded, so a rerun resumes):
2000 training points per cluster and one held-out set of 500 per cluster (``x_test``, with the
cluster as ``label_test``) shared by all three models.

Models: the 2-D coupling flow of ``configs/flow2d.py`` (exact likelihood, so the three are
comparable), one sweep each over seeds:
* Model 1 trained on both clusters;
* Model 2 trained on cluster A only (mode dropping);
* Model 3 trained on both clusters blurred (each training point plus N(0, 1.5^2) noise): it covers
  both, spread too thin.

Columns (mean ± std over seeds): held-out log-likelihood in nats per point on A, on B and overall
(from the ``per_example_nll`` file of each run), and FID, precision and recall (k = 3) of
``--num_samples`` samples against the 1000 held-out points, in data space. The script then checks
the course's claims on the measured means and prints each as holds / does not hold:
Model 2 has high precision (within 0.1 of Model 1's), recall about 0.5 (0.35 .. 0.65) and a very
low likelihood on B (below Model 1's by more than 10 nats); Model 3 has lower precision than Model
1 and high recall (within 0.1 of Model 1's), and a lower overall likelihood; the course's
log-likelihood column rates Model 2 "moderate" above Model 3's "low". Figure ``samples.png``:
each model's samples over the held-out points (seed 0).

Wall time at full size (3 models x 3 seeds x 3000 flow2d steps) on this 2-core CPU: 397 s with
``--parallel=1`` at load 3-5 (docs/results.md).
"""

from __future__ import annotations

import os
import time

import _common
import jax
import numpy as np
from absl import app, flags

from jaxgen.errors import one_line_errors
from jaxgen.evaluation import per_example_nll

SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per model (0 .. seeds-1)", lower_bound=1)
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "samples scored per run", lower_bound=1)

CENTERS, STD, BLUR = np.array([[-4.0, 0.0], [4.0, 0.0]]), 0.5, 1.5
#: --quick: also a tiny flow (the compilation dominates a 3-step run).
QUICK_MODEL = {"model.num_layers": 2, "model.hidden": 8, "model.depth": 1, "train.batch_size": 64}
MODELS = {"model1": "both clusters", "model2": "cluster A only", "model3": "both, blurred"}
COLUMNS = ["model", "trained on", "LL A", "LL B", "LL overall", "FID", "precision", "recall", "n"]


def datasets(root: str, num_train: int = 2000, num_test: int = 500) -> dict[str, str]:
  """Writes the three training sets (with the shared held-out set) and returns ``{model: path}``."""
  rng = np.random.default_rng(0)
  draw = lambda n: (np.concatenate([c + STD * rng.standard_normal((n, 2)) for c in CENTERS]).astype(np.float32),
                    np.repeat(np.arange(2, dtype=np.int32), n))
  x, label = draw(num_train)
  x_test, label_test = draw(num_test)
  blurred = (x + BLUR * rng.standard_normal(x.shape)).astype(np.float32)
  sets = {"model1": (x, label), "model2": (x[label == 0], label[label == 0]), "model3": (blurred, label)}
  os.makedirs(os.path.join(root, "data"), exist_ok=True)
  paths = {}
  for model, (xs, ls) in sets.items():
    paths[model] = os.path.abspath(os.path.join(root, "data", f"{model}.npz"))
    np.savez(paths[model], x=xs, label=ls, x_test=x_test, label_test=label_test)
  return paths


def score(row: dict, num: int) -> dict:
  """Per-cluster held-out log-likelihood, FID / precision / recall of one run."""
  data = np.load(row["config"].data.name.split(":", 1)[1])
  nll = np.load(os.path.join(row["dir"], "eval", per_example_nll.FILE.format(step=row["steps"])))["nll_nats"]
  out = {"train_clusters": ",".join("AB"[c] for c in np.unique(data["label"])),
         "ll_a": -float(nll[data["label_test"] == 0].mean()), "ll_b": -float(nll[data["label_test"] == 1].mean()),
         "ll_overall": -float(nll.mean())}
  saved, _ = _common.restore(row)
  draw, _ = _common.timed_sampler(saved.family, saved.params, saved.state, num, 1)
  fake = draw(jax.random.key(row["seed"]))
  metrics = _common.sample_metrics(data["x_test"], fake)
  return {**out, "fid": metrics["fid"], "precision": metrics["precision"], "recall": metrics["recall"],
          "samples": fake}


def claims(means: dict[str, dict[str, float]]) -> list[tuple[str, bool]]:
  """The course's claims (module docstring), each with whether the measured means bear it out."""
  m1, m2, m3 = means["model1"], means["model2"], means["model3"]
  return [("Model 2: high precision (within 0.1 of Model 1's)", m2["precision"] >= m1["precision"] - 0.1),
          ("Model 2: recall about 0.5 (0.35 .. 0.65)", 0.35 <= m2["recall"] <= 0.65),
          ("Model 2: very low likelihood on the dropped cluster B (> 10 nats below Model 1)",
           m2["ll_b"] < m1["ll_b"] - 10),
          ("Model 3: lower precision than Model 1", m3["precision"] < m1["precision"]),
          ("Model 3: high recall (within 0.1 of Model 1's)", m3["recall"] >= m1["recall"] - 0.1),
          ("Model 3: lower overall likelihood than Model 1", m3["ll_overall"] < m1["ll_overall"]),
          ("Model 2: higher overall likelihood than Model 3 (the course's 'moderate' against 'low')",
           m2["ll_overall"] > m3["ll_overall"])]


def figure(records: list[dict], test: np.ndarray, path: str) -> str:
  plt = _common.pyplot()
  first = [r for r in records if r["seed"] == min(x["seed"] for x in records)]
  fig, axes = plt.subplots(1, len(first), figsize=(4 * len(first), 3.5), squeeze=False, sharey=True)
  for ax, rec in zip(axes[0], first):
    ax.scatter(test[:, 0], test[:, 1], s=2, c="0.7", label="held-out data")
    ax.scatter(rec["samples"][:, 0], rec["samples"][:, 1], s=2, c="tab:red", label="samples")
    ax.set_title(f"{rec['model']}: {MODELS[rec['model']]}")
    ax.set_xlim(-9, 9)
    ax.set_ylim(-6, 6)
  axes[0][0].legend(fontsize=7, loc="lower left")
  return _common.save_figure(fig, path)


def main(argv) -> None:
  del argv
  start, quick = time.time(), _common.QUICK.value
  root = _common.workdir("mode_dropping")
  paths = datasets(root)
  seeds, num = range(1 if quick else SEEDS.value), 64 if quick else NUM_SAMPLES.value
  common = {"eval.metrics": ("heldout", "per_example_nll"), "train.progress_bar": False,
            **({**_common.quick_overrides(_common.config_path("flow2d")), **QUICK_MODEL} if quick else {})}
  jobs = {m: (_common.config_path("flow2d"), [{"data.name": f"arrays:{p}", "seed": s} for s in seeds], common)
          for m, p in paths.items()}
  runs = _common.run_sweeps(jobs, root, _common.PARALLEL.value)
  records = [{"model": m, "seed": row["seed"], "status": row["status"], **score(row, num)}
             for m in MODELS for row in runs[m] if row["status"] == "done"]
  keys = ("ll_a", "ll_b", "ll_overall", "fid", "precision", "recall")
  means = {m: {k: float(np.mean([r[k] for r in records if r["model"] == m])) for k in keys} for m in MODELS}
  table = [{"model": m, "trained on": MODELS[m], "n": sum(r["model"] == m for r in records),
            **{c: _common.mean_std([r[k] for r in records if r["model"] == m])
               for c, k in zip(COLUMNS[2:8], keys)}} for m in MODELS]
  verdicts = claims(means) if all(r["n"] for r in table) else []
  title = ("Example 3, measured: flow2d on two 2-D clusters; LL = held-out log-likelihood, nats per point "
           "(higher is better); FID / precision / recall in data space vs the 1000 held-out points")
  out = _common.OUT.value
  csv_rows = [{k: v for k, v in r.items() if k != "samples"} for r in records]
  written = _common.write_tables(out, COLUMNS, table, csv_rows, _common.header(title, start))
  lines = [f"- {text}: {'holds' if ok else 'does NOT hold'}" for text, ok in verdicts]
  with open(written[0], "a") as f:
    f.write("\nThe course's claims on these means:\n\n" + "\n".join(lines) + "\n")
  print("\n".join(lines))
  data = np.load(paths["model1"])
  written.append(figure(records, data["x_test"], os.path.join(out, "samples.png")))
  for path in written:
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(one_line_errors(main))
