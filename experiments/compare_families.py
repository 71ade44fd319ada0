"""The course's family comparison, measured (issue 13, part 1): every registered image family on
``digits`` at its default config, over seeds, one row per family, and the bar chart "sample
quality by FID (lower is better)".

  python experiments/compare_families.py --out=results/compare_families --parallel=2
  python experiments/compare_families.py --out=/tmp/cf --quick --families=gan,pixelcnn   # smoke run
  python experiments/compare_families.py --out=/tmp/cf --list                            # what would run

Families: every registered family whose own config ``configs/<family>.py`` trains on ``digits``
(``_common.image_families``; a family added later with its config appears by itself), each at
that config (its ``train.steps``), seeds 0..``--seeds``-1, one sweep per family in
``<workdir>/<family>`` (rerunning resumes; ``experiments/likelihood_ood.py`` reuses these points).
Two-stage families (vqvae_prior, latent_diffusion) are trained on their stage-1 run of the same seed.

Columns (mean ± std (ddof=1) over the seeds that finished):
* density: what the run's held-out metrics report (``_common.LIKELIHOODS``): exact (``nll_nats``),
  bound (``nll_bound_nats``), an AIS estimate (rbm, dbn), an estimate (avb), or none;
  objective: declared by the family class (``objective``) where it has one, else derived (*) from
  what it reports and its networks: a discriminator -> adversarial, an AIS estimate -> contrastive
  divergence, exact -> max likelihood, bound -> likelihood bound; bits/dim of the test split
  (297 images), labelled with the density type, and "binarized data" for the families whose config
  binarizes the digits (vae, rbm, dbn; latent_diffusion reports none): a likelihood of other data, not comparable
  with the 17-level ones;
* FID, KID, precision, recall (k = 3), density, coverage (k = 5): ``--num_samples`` samples against
  the 1500 images of the **training split** (the same reference for every family: the 297 test
  images are too few), in the shipped digits classifier's feature space;
* digits: the classes the classifier assigns to at least 1% of the samples; a run is *collapsed*
  when fewer than 5 digits are;
* samples/s: the jitted sampler at a batch of ``--sample_batch`` (median of 3 timed calls after
  the compiling one), measured here, in this one process, for every family;
* train s: the point's wall time (start-up, training and its evaluation), steps/s: the trainer's
  median rate; unstable: runs that failed (diverged: a non-finite loss stops the trainer) or collapsed.

Wall time at full size on the 2-core CPU of this project, with ``--train_steps=1000`` (each
config's 2000-5000 steps would not fit): about 40 minutes of points on a quiet machine (10-150 s a
point; flow_matching's exact ODE likelihood of the test split makes its points the slowest, and
load multiplies them: 855-4982 s at load ~15), then 768 s of scoring (docs/results.md).
"""

from __future__ import annotations

import os
import time

import _common
import numpy as np
from absl import app, flags

from jaxgen.errors import UserError, one_line_errors
from jaxgen.families.base import FAMILIES, MaximumLikelihoodFamily

FAMILIES_FLAG = flags.DEFINE_list("families", [], "a subset of the image families (default: all of them)")
LIST = flags.DEFINE_bool("list", False, "print the families that would run, and exit")
SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per family (0 .. seeds-1)", lower_bound=1)
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1500, "samples scored per run", lower_bound=1)
SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 256, "batch of the sampler (and of the samples/s timing)")
TRAIN_STEPS = flags.DEFINE_integer("train_steps", 0, "training steps of every family (0: each config's)")

COLUMNS = ["family", "explicit density", "objective", "bits/dim", "FID", "KID", "precision", "recall", "density",
           "coverage", "digits", "samples/s", "train s", "steps/s", "n", "unstable"]
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "digits", "samples_per_s")
COLLAPSED_BELOW = 5


def objective(name: str, kind: str) -> str:
  """The family's declared objective, else the derivation of the module docstring (marked *)."""
  cls = FAMILIES.get(name)
  if getattr(cls, "objective", ""):
    return cls.objective
  if "disc" in cls.networks:
    return "adversarial*"
  if "AIS" in kind:
    return "contrastive divergence*"
  if kind == "exact" or issubclass(cls, MaximumLikelihoodFamily):
    return "max likelihood*"
  return "likelihood bound*" if kind in ("bound", "estimate") else "other*"


def sizes(quick: bool) -> tuple[int, int]:
  """``(samples per run, sampler batch)``."""
  return (32, 16) if quick else (NUM_SAMPLES.value, min(SAMPLE_BATCH.value, NUM_SAMPLES.value))


def score(row: dict, real: np.ndarray, quick: bool) -> dict:
  """Sample metrics, digits covered and samples/s of a finished run."""
  saved, pipeline = _common.restore(row)
  num, batch = sizes(quick)
  draw, rate = _common.timed_sampler(saved.family, saved.params, saved.state, batch, 1 if quick else 3)
  fake = _common.draw_samples(draw, num, batch, row["seed"])
  feats = _common.digits_features(fake, pipeline.spec)
  counts = np.bincount(np.argmax(feats.logits, axis=1), minlength=10)
  return {**_common.sample_metrics(real, feats.features), "digits": int(np.sum(counts >= 0.01 * len(fake))),
          "samples_per_s": rate}


def run(names: list[str], quick: bool) -> list[dict]:
  """One record per (family, seed): status, likelihood, sample metrics, timings."""
  seeds = range(1 if quick else SEEDS.value)
  runs = _common.train_families(names, seeds, _common.workdir("families"), quick, _common.PARALLEL.value,
                                TRAIN_STEPS.value)
  images, spec = _common.split_images(_common.classifier_config(), "train")
  real = _common.digits_features(images, spec).features
  records = []
  for name in names:
    for row in runs[name]:
      kind, bpd = _common.likelihood(row)
      rec = {"family": name, "seed": row["seed"], "status": row["status"], "density_type": kind,
             "binarized": row["config"].data.binarize != "none",
             "bits_per_dim": bpd, "train_s": row["wall_s"], "steps_per_s": row["steps_per_s"],
             "steps": row["steps"], "error": row["error"]}
      if row["status"] == "done":
        rec.update(score(row, real, quick))
        rec["collapsed"] = rec["digits"] < COLLAPSED_BELOW
      records.append(rec)
  return records


def summarize(records: list[dict]) -> list[dict]:
  """One markdown row per family (``COLUMNS``), mean ± std over its finished seeds."""
  rows = []
  for name in dict.fromkeys(r["family"] for r in records):
    mine = [r for r in records if r["family"] == name]
    done = [r for r in mine if r["status"] == "done"]
    kind = done[0]["density_type"] if done else "?"
    col = lambda key, d=3: _common.mean_std([r.get(key) for r in done], d)
    failed, collapsed = len(mine) - len(done), sum(r["collapsed"] for r in done)
    rows.append({"family": name, "explicit density": kind, "objective": objective(name, kind) if done else "?",
                 "bits/dim": "—" if kind == "none" else
                 _common.bits_per_dim_cell([r.get("bits_per_dim") for r in done], kind, mine[0]["binarized"]),
                 "FID": col("fid"), "KID": col("kid"), "precision": col("precision", 2),
                 "recall": col("recall", 2), "density": col("density", 2), "coverage": col("coverage", 2),
                 "digits": col("digits", 2), "samples/s": col("samples_per_s"), "train s": col("train_s"),
                 "steps/s": col("steps_per_s"), "n": len(done),
                 "unstable": f"{failed} failed, {collapsed} collapsed of {len(mine)}"})
  return rows


def figure(records: list[dict], path: str) -> str:
  """The bar chart of FID (mean, error bars: std over seeds), lowest first."""
  plt = _common.pyplot()
  names = list(dict.fromkeys(r["family"] for r in records))
  fids = {n: [r["fid"] for r in records if r["family"] == n and r.get("fid") is not None] for n in names}
  names = sorted((n for n in names if fids[n]), key=lambda n: np.mean(fids[n]))
  means = [np.mean(fids[n]) for n in names]
  stds = [np.std(fids[n], ddof=1) if len(fids[n]) > 1 else 0.0 for n in names]
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
  ax.bar(names, means, yerr=stds, capsize=3, color="tab:blue")
  ax.set_ylabel("FID (digits classifier, vs 1500 training images)")
  ax.set_title("Sample quality by FID (lower is better)")
  ax.tick_params(axis="x", rotation=45)
  return _common.save_figure(fig, path)


def main(argv) -> None:
  del argv
  start = time.time()
  everything = _common.image_families()
  names = FAMILIES_FLAG.value or everything
  unknown = sorted(set(names) - set(everything))
  if unknown:
    raise UserError(f"--families: {', '.join(unknown)} are not image families; choose from {', '.join(everything)}")
  if LIST.value:
    print("\n".join(names))
    return
  quick = _common.QUICK.value
  records = run(names, quick)
  seeds = 1 if quick else SEEDS.value
  rows = summarize(records)
  title = (f"Family comparison on digits: {len(names)} families x {seeds} seed(s), {sizes(quick)[0]} samples "
           "each vs the 1500 training images (digits-classifier features)")
  if any(row["objective"].endswith("*") for row in rows):
    title += "; * = derived, not declared"
  paths = _common.write_tables(_common.OUT.value, COLUMNS, rows, records, _common.header(title, start))
  paths.append(figure(records, os.path.join(_common.OUT.value, "fid.png")))
  for path in paths:
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(one_line_errors(main))
