"""Mode coverage vs quality on 2-D mixtures, the protocol of VEEGAN / PacGAN (Lin et al. 2018,
Table 1) (issue 13, part 2).

  python experiments/mode_coverage.py --out=results/mode_coverage --parallel=2
  python experiments/mode_coverage.py --out=/tmp/mc --quick --rows=gan,flow2d --datasets=toy2d/ring8   # smoke

Data: ``toy2d/ring8`` (8 modes on the unit circle, std 0.01) and ``toy2d/grid25`` (25 modes on
{-4,-2,0,2,4}^2, std 0.05), 20,000 training points each (``jaxgen/data/toy2d.py``).
Rows, each one sweep per data set over seeds 0..``--seeds``-1 (5):
* GAN: ``configs/gan.py`` on points (MLP generator and discriminator, ``model.hidden`` (256, 256),
  non-saturating loss, Adam 2e-4, 3000 steps), batch 96 (held-out batch 192) for every GAN row
  (divisible by 2, 3, 4);
* PacGAN2/3/4: the same with ``model.pack`` = 2, 3, 4 (the discriminator judges packs of samples);
* WGAN-GP: ``model.loss=wasserstein``, ``model.gradient_penalty=10``, ``model.n_critic=5``;
* the likelihood families on the same data: VAE (``configs/vae.py`` with the MLP encoder/decoder
  and a Gaussian decoder), the 2-D coupling flow (``configs/flow2d.py``), DDPM with its MLP
  denoiser (``configs/ddpm_toy2d.py``), each at its config's steps.
Columns (mean ± std over seeds): modes captured, % high-quality samples (within 3 std of a mode),
reverse KL of the high-quality samples' mode histogram to uniform (the ``mode_coverage``
evaluator), precision and recall (k = 3, data space) of 2500 samples against 2500 held-out points,
and the held-out NLL in nats per point where the family has one (exact, or a bound), all measured by
the runs' own evaluators; published: PacGAN's Table 1 where the issue quotes it.

Where this differs from the published protocol: PacGAN's generator has four hidden layers of 400
units with batch norm and its discriminator three layers of 200 maxout units; here both are the
family's MLP (256, 256), without batch norm; training is 3000 steps of batch 96, not their
schedule; 2500 samples as in the paper. So the numbers are comparable in kind, not digit for digit.
Figure ``samples.png``: 2500 samples of each row (seed 0) over the held-out data.

Wall time at full size (2 data sets x 8 rows x 5 seeds = 80 points, 2 at once): not run; about 45
to 90 minutes on this 2-core CPU at a quiet time, from the quick run's start-up cost and the
per-step times of docs/benchmarks.md (docs/results.md).
"""

from __future__ import annotations

import os
import time

import _common
import jax
import numpy as np
from absl import app, flags

from jaxgen.errors import UserError, one_line_errors

ROWS_FLAG = flags.DEFINE_list("rows", [], "a subset of the rows (default: all)")
DATASETS = flags.DEFINE_list("datasets", ["toy2d/ring8", "toy2d/grid25"], "the Gaussian-mixture sets")
SEEDS = flags.DEFINE_integer("seeds", 5, "seeds per row (0 .. seeds-1)", lower_bound=1)

#: Batches divisible by packs of 2, 3 and 4 (the held-out batch too: the packed critic scores it).
GAN = {"train.batch_size": 96, "eval.batch_size": 192}
#: row key -> (label, config, overrides)
ROWS = {
    "gan": ("GAN", "gan", GAN),
    "pacgan2": ("PacGAN2", "gan", {**GAN, "model.pack": 2}),
    "pacgan3": ("PacGAN3", "gan", {**GAN, "model.pack": 3}),
    "pacgan4": ("PacGAN4", "gan", {**GAN, "model.pack": 4}),
    "wgan_gp": ("WGAN-GP", "gan", {**GAN, "model.loss": "wasserstein", "model.gradient_penalty": 10.0,
                                   "model.n_critic": 5}),
    "vae": ("VAE", "vae", {"model.architecture": "mlp", "model.decoder": "gaussian", "data.binarize": "none"}),
    "flow2d": ("flow2d", "flow2d", {}),
    "ddpm_mlp": ("DDPM (MLP)", "ddpm_toy2d", {}),
}
#: PacGAN (Lin et al. 2018) Table 1, as quoted by issue 13: (data set, row) -> modes, % high quality, reverse KL.
PUBLISHED = {("toy2d/grid25", "gan"): "17.3 / 94.8% / 0.70", ("toy2d/grid25", "pacgan4"): "24.8 / 93.6% / 0.04",
             ("toy2d/ring8", "pacgan2"): "7.9 / 95.6% / —"}
COLUMNS = ["data", "row", "modes", "high quality %", "reverse KL", "precision", "recall", "NLL nats/point",
           "published (modes / HQ / KL)", "n"]


def main(argv) -> None:
  del argv
  start, quick = time.time(), _common.QUICK.value
  rows = ROWS_FLAG.value or list(ROWS)
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    raise UserError(f"--rows: {', '.join(unknown)} unknown; choose from {', '.join(ROWS)}")
  num = 64 if quick else 2500
  common = {"eval.metrics": ("heldout", "mode_coverage", "precision_recall"), "eval.num_samples": num,
            "train.progress_bar": False}
  seeds = range(1 if quick else SEEDS.value)
  jobs = {f"{data.split('/')[-1]}_{row}": (_common.config_path(ROWS[row][1]),
                                           [{"seed": s} for s in seeds],
                                           {**common, **ROWS[row][2], "data.name": data,
                                            **(_common.quick_overrides(_common.config_path(ROWS[row][1])) if quick else {})})
          for data in DATASETS.value for row in rows}
  runs = _common.run_sweeps(jobs, _common.workdir("mode_coverage"), _common.PARALLEL.value)
  records, table = [], []
  for data in DATASETS.value:
    for row in rows:
      mine = runs[f"{data.split('/')[-1]}_{row}"]
      done = [r for r in mine if r["status"] == "done"]
      for r in mine:
        kind, _ = _common.likelihood(r)
        records.append({"data": data, "row": row, "seed": r["seed"], "status": r["status"], "likelihood": kind,
                        **{k: r.get(k) for k in ("modes", "high_quality", "reverse_kl", "precision", "recall")},
                        "nll_nats": r.get("nll_nats", r.get("nll_bound_nats")), "error": r["error"]})
      col = lambda key, scale=1.0: _common.mean_std([None if r.get(key) is None else r[key] * scale for r in done])
      kind = _common.likelihood(done[0])[0] if done else "?"
      table.append({"data": data, "row": ROWS[row][0], "modes": col("modes"),
                    "high quality %": col("high_quality", 100.0), "reverse KL": col("reverse_kl"),
                    "precision": col("precision"), "recall": col("recall"),
                    "NLL nats/point": "—" if kind in ("none", "?") else
                    f"{_common.mean_std([r.get('nll_nats', r.get('nll_bound_nats')) for r in done])} ({kind})",
                    "published (modes / HQ / KL)": PUBLISHED.get((data, row), ""), "n": f"{len(done)} of {len(mine)}"})
  title = (f"Mode coverage vs quality on 2-D mixtures: {len(rows)} rows x {len(DATASETS.value)} data sets, "
           f"{num} samples per run")
  out = _common.OUT.value
  written = _common.write_tables(out, COLUMNS, table, records, _common.header(title, start))
  written.append(figure(runs, rows, num, os.path.join(out, "samples.png")))
  for path in written:
    print(f"wrote {path}")


def figure(runs: dict, rows: list[str], num: int, path: str) -> str:
  """Seed 0's samples of every row over its data set's held-out points, a row of panels per set."""
  plt = _common.pyplot()
  fig, axes = plt.subplots(len(DATASETS.value), len(rows), figsize=(2.6 * len(rows), 2.8 * len(DATASETS.value)),
                           squeeze=False)
  for i, data in enumerate(DATASETS.value):
    for j, row in enumerate(rows):
      ax = axes[i][j]
      done = [r for r in runs[f"{data.split('/')[-1]}_{row}"] if r["status"] == "done"]
      if done:
        saved, pipeline = _common.restore(done[0])
        real = pipeline.held_out(num)["x"]
        fake = np.asarray(jax.jit(lambda p, s, k: saved.family.sample(p, s, k, num))(
            saved.params, saved.state, jax.random.key(done[0]["seed"])))
        ax.scatter(real[:, 0], real[:, 1], s=1, c="0.6")
        ax.scatter(fake[:, 0], fake[:, 1], s=1, c="tab:red")
        lim = 1.5 if data.endswith("ring8") else 5.5
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
      ax.set_title(f"{ROWS[row][0]} ({data.split('/')[-1]})", fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
  return _common.save_figure(fig, path)


if __name__ == "__main__":
  app.run(one_line_errors(main))
