"""Likelihood for model comparison and out-of-distribution detection (issue 13, part 5).

  python experiments/likelihood_ood.py --out=results/likelihood_ood --parallel=2
  python experiments/likelihood_ood.py --out=/tmp/ood --quick --families=pixelcnn      # smoke run

Models: the family sweeps of ``experiments/compare_families.py`` (the same points, in the same
``<workdir>``: run that first and nothing is trained again), keeping the families whose held-out
metrics report a likelihood of the data: exact (``nll_nats``) or a bound (``nll_bound_nats``);
AIS estimates (rbm, dbn), avb's estimate and latent-only likelihoods (latent_diffusion) have no
per-example value of the data and are left out.
Each run's ``per_example_nll`` evaluator has written the held-out NLL of every one of the 297 test
images (``eval/per_example_nll_step_<N>.npy``).

* bits/dim: the mean of that file (= the ``heldout`` evaluator's), labelled exact or bound: a lower
  bound on the likelihood is not comparable with an exact one, only bounds with bounds; and
  "binarized data" for the families whose config binarizes the digits (vae): other data;
* OOD sets, built offline from the 297 raw test images on the digits grid (17 levels) and passed
  through each model's own preprocessing: uniform noise (every pixel uniform on the 17 levels),
  inverted digits (``16 - x``), shuffled pixels (each image's 64 pixels permuted), constant images
  (one level per image, uniform on the 17);
* AUROC of telling the OOD set from the test set (sklearn's ``roc_auc_score``; 1 = perfect,
  0.5 = chance, < 0.5 = the OOD set looks *more* likely) with two scores per example: its NLL
  (bits/dim, higher = more OOD), and the typicality score ``|NLL - mean training NLL|``
  (Nalisnick et al. 2019, per example: the mean over 297 training images stands in for the
  entropy). Cells read "NLL / typicality", mean ± std over seeds. Constant images are the known
  failure of likelihood (smooth images get high likelihood): the table reports what was measured.
* blank bits/dim: the bits/dim of the blank image (every pixel at level 0, the digits' background),
  the one constant image that looks like the data's commonest pixel: where it is below the test
  images' bits/dim, the model finds an empty image more likely than a digit (Nalisnick et al.'s
  failure); ``table.csv`` holds the constant image of every level (``constant_bits/<level>``);
* figure ``nll_histograms.png``: the per-example bits/dim of each set, one panel per family (seed 0),
  the blank image's bits/dim as a dashed line.

Wall time at full size (the family comparison's 27 likelihood points, ``--seeds=3
--train_steps=1000``): 791-869 s of scoring on this 2-core CPU at load 1-2, flow_matching's ODE
likelihood and DDPM's bound the slowest (docs/results.md).
"""

from __future__ import annotations

import os
import time

import _common
import jax
import ml_collections
import numpy as np
from absl import app, flags

from jaxgen.data import preprocess, source
from jaxgen.errors import UserError, one_line_errors
from jaxgen.evaluation import per_example_nll
from jaxgen.evaluation.context import EVAL_STREAM

FAMILIES_FLAG = flags.DEFINE_list("families", [], "a subset of the image families (default: all of them; "
                                  "those without a likelihood are left out of the table)")
SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per family (0 .. seeds-1)", lower_bound=1)
TRAIN_STEPS = flags.DEFINE_integer("train_steps", 0, "training steps of every family (0: each config's)")

OOD_SETS = ("uniform noise", "inverted", "shuffled pixels", "constant")
BATCH = 256


def ood_sets(test: np.ndarray, levels: int, seed: int = 0) -> dict[str, np.ndarray]:
  """The raw OOD sets (module docstring), each shaped and typed as the raw ``test`` images."""
  rng = np.random.default_rng(seed)
  flat = test.reshape(len(test), -1)
  return {"uniform noise": rng.integers(0, levels, test.shape).astype(test.dtype),
          "inverted": (levels - 1 - test).astype(test.dtype),
          "shuffled pixels": rng.permuted(flat, axis=1).reshape(test.shape),
          "constant": np.broadcast_to(rng.integers(0, levels, (len(test),) + (1,) * (test.ndim - 1)),
                                      test.shape).astype(test.dtype)}


def raw_splits(config) -> source.Splits:
  """The raw splits of ``config``'s data (before preprocessing)."""
  return source.load(ml_collections.ConfigDict({**config.data.to_dict(), "seed": config.seed}))


def nll_bits(saved, config, raw: np.ndarray, labels: np.ndarray, stream: int) -> np.ndarray:
  """Per-example held-out bits/dim of raw examples (the model's preprocessing, batches of at most
  ``BATCH``, the last padded with masked rows; noise and keys from ``stream``)."""
  pre = preprocess.Preprocessor(raw_splits(config).spec, config.data)
  family, key = saved.family, jax.random.fold_in(jax.random.key(config.seed), EVAL_STREAM)
  fn = jax.jit(lambda b, k: family.eval_metrics(saved.params, saved.state, b, k))

  size = min(BATCH, len(raw))

  def batches():
    for i, lo in enumerate(range(0, len(raw), size)):
      idx = np.arange(lo, lo + size)
      real = idx < len(raw)
      idx = np.where(real, idx, 0)
      batch = pre({"x": raw[idx], "label": labels[idx]}, np.random.default_rng([config.seed, stream, i]),
                  slice(0, size), size)
      yield {**batch, "mask": real.astype(np.float32)}

  per_batch = lambda b, i: (fn({k: v for k, v in b.items() if k != "mask"}, jax.random.fold_in(key, 1000 * stream + i)),
                            b["mask"])
  return per_example_nll.collect(per_batch, batches())["bits_per_dim"]


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
  """AUROC of telling ``outside`` (label 1) from ``inside`` by a score (higher = outside)."""
  from sklearn.metrics import roc_auc_score  # pylint: disable=import-outside-toplevel

  return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def score(row: dict, quick: bool) -> dict:
  """The test bits/dim (from the evaluator's file) and the AUROCs of one run (``quick``: OOD sets
  and the typicality reference of the first 64 test / training images only)."""
  path = os.path.join(row["dir"], "eval", per_example_nll.FILE.format(step=row["steps"]))
  record = np.load(path)
  test_bits = record["bits_per_dim"]
  saved, _ = _common.restore(row)
  raw = raw_splits(row["config"])
  test = raw.test.get(np.arange(len(raw.test)))
  test, labels = test["x"], test.get("label", np.zeros(len(test["x"]), np.int32))
  if quick:
    test, labels = test[:64], labels[:64]
  train = raw.train.get(np.arange(len(test)))
  typical = float(np.mean(nll_bits(saved, row["config"], train["x"], train.get("label", labels), 1)))
  out = {"test_bits_per_dim": float(np.mean(test_bits)), "test_nll_nats_mean": float(np.mean(record[record.dtype.names[0]])),
         "train_bits_per_dim": typical, "bits": {"test": test_bits}}
  levels = np.broadcast_to(np.arange(raw.spec.levels).reshape(-1, *(1,) * (test.ndim - 1)),
                           (raw.spec.levels, *test.shape[1:])).astype(test.dtype)
  out["constant_bits_by_level"] = nll_bits(saved, row["config"], levels, labels[:len(levels)], 9)
  for k, (name, x) in enumerate(ood_sets(test, raw.spec.levels, row["seed"]).items()):
    bits = nll_bits(saved, row["config"], x, labels, 10 + k)
    out["bits"][name] = bits
    out[f"auroc_nll/{name}"] = auroc(test_bits, bits)
    out[f"auroc_typicality/{name}"] = auroc(np.abs(test_bits - typical), np.abs(bits - typical))
  return out


def figure(records: list[dict], path: str, columns: int = 3) -> str:
  """Per-example bits/dim of every set, one panel per family (its first seed), ``columns`` panels a
  row, on a log axis (OOD examples of the flows reach 10^4-10^5 bits/dim, the digits ~2)."""
  plt = _common.pyplot()
  first = [r for r in records if r["seed"] == min(x["seed"] for x in records)]
  rows = -(-len(first) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
  for ax, rec in zip(axes.flat, first):
    every = np.maximum(np.concatenate(list(rec["bits"].values())), 1e-3)  # bits/dim of discrete data are > 0
    bins = np.geomspace(float(every.min()), float(every.max()) * 1.001, 50)
    for name, bits in rec["bits"].items():
      ax.hist(np.maximum(bits, 1e-3), bins=bins, alpha=0.5, label=name)
    ax.axvline(float(rec["constant_bits_by_level"][0]), color="k", ls="--", lw=1, label="blank image")
    ax.set_xscale("log")
    ax.set_title(f"{rec['family']} ({rec['density_type']})")
    ax.set_xlabel("bits/dim (per example)")
  for ax in list(axes.flat)[len(first):]:
    ax.axis("off")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  return _common.save_figure(fig, path)


def main(argv) -> None:
  del argv
  start, quick = time.time(), _common.QUICK.value
  everything = _common.image_families()
  names = FAMILIES_FLAG.value or everything
  unknown = sorted(set(names) - set(everything))
  if unknown:
    raise UserError(f"--families: {', '.join(unknown)} are not image families; choose from {', '.join(everything)}")
  runs = _common.train_families(names, range(1 if quick else SEEDS.value), _common.workdir("families"), quick,
                                _common.PARALLEL.value, TRAIN_STEPS.value)
  records = []
  for name in names:
    for row in runs[name]:
      kind, _ = _common.likelihood(row)
      if row["status"] == "done" and kind in ("exact", "bound"):
        records.append({"family": name, "seed": row["seed"], "density_type": kind,
                        "binarized": row["config"].data.binarize != "none",
                        "heldout_nll_nats": row.get("nll_nats", row.get("nll_bound_nats")), **score(row, quick)})
  if not records:
    raise UserError("no finished run with a likelihood among --families; add a likelihood family")
  table = []
  for name in dict.fromkeys(r["family"] for r in records):
    mine = [r for r in records if r["family"] == name]
    cell = lambda key: _common.mean_std([r[key] for r in mine], 3)
    table.append({"family": name, "density": mine[0]["density_type"], "n": len(mine),
                  "test bits/dim": _common.bits_per_dim_cell([r["test_bits_per_dim"] for r in mine],
                                                             mine[0]["density_type"], mine[0]["binarized"]),
                  "blank bits/dim": _common.mean_std([float(r["constant_bits_by_level"][0]) for r in mine], 3),
                  **{s: f"{cell(f'auroc_nll/{s}')} / {cell(f'auroc_typicality/{s}')}" for s in OOD_SETS}})
  title = ("Test bits/dim and OOD AUROC (digits test vs each set; cells: NLL score / typicality score) "
           f"of {len(table)} likelihood families")
  csv_rows = [{**{k: v for k, v in r.items() if k not in ("bits", "constant_bits_by_level")},
               **{f"constant_bits/{level}": float(b) for level, b in enumerate(r["constant_bits_by_level"])}}
              for r in records]
  paths = _common.write_tables(_common.OUT.value, ["family", "density", "n", "test bits/dim", "blank bits/dim",
                                                   *OOD_SETS], table,
                               csv_rows, _common.header(title, start))
  paths.append(figure(records, os.path.join(_common.OUT.value, "nll_histograms.png")))
  for path in paths:
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(one_line_errors(main))
