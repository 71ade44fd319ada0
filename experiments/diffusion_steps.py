"""How few steps each sampler needs: FID / precision / recall against the number of sampling steps
for DDPM (ancestral), DDIM, DPM-Solver++(2M), EDM Heun, and flow matching (Euler, Heun; before
and after reflow), with samples/s from the same run (issue 17).

  python experiments/diffusion_steps.py --out=results/diffusion_steps            # digits
  python experiments/diffusion_steps.py --out=results/diffusion_steps_toy2d --data=toy2d/moons
  python experiments/diffusion_steps.py --out=/tmp/ds --quick                    # tiny budgets

Models (trained, or resumed, under ``--workdir``): configs/ddpm.py and configs/flow_matching.py
(their ``_toy2d`` variants for ``toy2d/*``) on the same data (no dequantization: DDPM's
setting), then a reflow of the flow model (``model.reflow_from``; learning rate 5e-4). For every
sampler and step count, ``--num_samples`` samples from the EMA params are scored against as many
training examples (at most the training set's size) in the space of ``eval.features`` (digits: the
shipped classifier; points: the points themselves). ``nfe``: network evaluations per sample (Heun: 2 per step; EDM Heun 2n - 1);
DDPM "ancestral" with fewer than T steps is the respaced chain, i.e. DDIM with eta = 1.
``samples/s``: the wall time of the compiled draw of ``--num_samples`` samples (compiled ahead, the
samples of that draw are the ones scored). Step counts above 100 run for DDPM ancestral only
(``LONG_CHAIN``). Writes ``table.csv``, ``table.md`` and ``fid_vs_nfe.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from jaxgen import config_defaults, families, train  # noqa: E402
from jaxgen import data as data_lib  # noqa: E402
from jaxgen.errors import UserError, one_line_errors  # noqa: E402
from jaxgen.evaluation import features  # noqa: E402
from jaxgen.evaluation.gaussian import fid_from_features  # noqa: E402
from jaxgen.evaluation.manifold import manifold_metrics  # noqa: E402

STEPS = (1, 2, 4, 8, 16, 32, 50, 100, 1000)
#: Step counts above 100 run for the original DDPM chain only: the ODE samplers have converged by
#: 100 (see the toy2d table in docs/diffusion.md), and 1000 steps of each would be ~85% of the run.
LONG_CHAIN = "DDPM ancestral"
#: (row name, model, sample overrides).
SAMPLERS = (
    ("DDPM ancestral", "ddpm", {"sampler": "ddim", "eta": 1.0}),
    ("DDIM", "ddpm", {"sampler": "ddim", "eta": 0.0}),
    ("DPM-Solver++(2M)", "ddpm", {"sampler": "dpm_solver"}),
    ("EDM Heun", "ddpm", {"sampler": "heun"}),
    ("FM Euler", "flow", {"sampler": "euler"}),
    ("FM Heun", "flow", {"sampler": "heun"}),
    ("FM reflow Euler", "reflow", {"sampler": "euler"}),
    ("FM reflow Heun", "reflow", {"sampler": "heun"}),
)
COLUMNS = ("sampler", "steps", "nfe", "fid", "precision", "recall", "samples_per_s")


def _configs(data: str, quick: bool, workdir: str, train_steps: int = 0, reflow_pairs: int = 0) -> dict:
  """The three models' configs: ``{name: (config, workdir)}``; ``train_steps > 0`` shortens the
  training of all three, ``reflow_pairs > 0`` sets the reflow's pairs."""
  suffix = "_toy2d" if data.startswith("toy2d/") else ""
  # No evaluation at the end of training (``eval.metrics=()``): this script scores the samplers.
  common = {"data.name": data, "data.dequantize": False, "eval.metrics": ()}
  if train_steps:
    common["train.steps"] = train_steps
  if quick:
    common.update({"train.steps": 10, "train.checkpoint_every": 0, "train.log_every": 0,
                   "train.progress_bar": False, "eval.num_batches": 1})
  load = lambda name, extra: config_defaults.load(os.path.join(ROOT, "configs", f"{name}{suffix}.py"),
                                                  {**common, **extra})
  flow_dir = os.path.join(workdir, "flow_matching")
  reflow = {"model.reflow_from": flow_dir, "optim.default.learning_rate": 5e-4}
  if reflow_pairs:
    reflow["model.reflow_pairs"] = reflow_pairs
  if quick:
    reflow.update({"model.reflow_pairs": 64, "model.reflow_steps": 4})
  elif not train_steps:
    reflow["train.steps"] = 1000
  return {"ddpm": (load("ddpm", {}), os.path.join(workdir, "ddpm")),
          "flow": (load("flow_matching", {}), flow_dir),
          "reflow": (load("flow_matching", reflow), os.path.join(workdir, "flow_matching_reflow"))}


def _reference(pipeline, num: int) -> np.ndarray:
  """The first ``num`` training examples of the stream, in model space."""
  batches = [pipeline.train_batch(s)["x"] for s in range(-(-num // pipeline.local_batch_size))]
  return np.concatenate(batches)[:num]


def run(data: str = "digits", quick: bool = False, workdir: str = "", num_samples: int = 1500,
        steps: tuple[int, ...] = STEPS, train_steps: int = 0, reflow_pairs: int = 0) -> list[dict]:
  """Trains / resumes the models, then one row per (sampler, steps): the ``COLUMNS``."""
  workdir = workdir or os.path.join("runs", "diffusion_steps", data.replace("/", "_"))
  configs = _configs(data, quick, workdir, train_steps, reflow_pairs)
  config = configs["ddpm"][0]
  pipeline = data_lib.build(config)  # the data of all three models
  if not 1 <= num_samples <= pipeline.num_train:
    raise UserError(f"--num_samples={num_samples}: the samples are scored against as many of the "
                    f"{pipeline.num_train} training examples of {data}; give 1 to {pipeline.num_train}")
  models = {}
  for name in ("ddpm", "flow", "reflow"):  # reflow reads the flow model's checkpoint
    state = train.train_and_evaluate(*configs[name])
    models[name] = (families.build(configs[name][0], pipeline.spec), state)
  real = _reference(pipeline, num_samples)
  real_features = features.extract(config, pipeline.spec, real).features
  rows = []
  for label, model, overrides in SAMPLERS:
    family, state = models[model]
    for n in steps:
      if (model == "ddpm" and n > family.config.model.num_timesteps) or (n > 100 and label != LONG_CHAIN):
        continue
      family.config.sample.update({**overrides, "steps": n})  # read when the sampler is traced
      args = (state.ema_params, state.state, jax.random.key(n))
      draw = jax.jit(lambda p, s, k, family=family: family.sample(p, s, k, num_samples)).lower(*args).compile()
      start = time.perf_counter()  # one timed draw, compiled beforehand: its samples are scored
      fake = np.asarray(jax.block_until_ready(draw(*args)))
      seconds = time.perf_counter() - start
      fake_features = features.extract(config, family.spec, fake).features
      pr = manifold_metrics(real_features, fake_features, pr_k=3, dc_k=None,
                            block_size=config.eval.block_size)
      rows.append({"sampler": label, "steps": n, "nfe": family.num_evaluations(),
                   "fid": fid_from_features(real_features, fake_features),
                   "precision": pr["precision"], "recall": pr["recall"],
                   "samples_per_s": num_samples / seconds})
      print(" ".join(f"{rows[-1][c]:.4g}" if isinstance(rows[-1][c], float) else str(rows[-1][c])
                     for c in COLUMNS), flush=True)
  return rows


def write(rows: list[dict], out: str, header: str) -> list[str]:
  """``table.csv``, ``table.md`` and ``fid_vs_nfe.png`` in ``out``; returns their paths."""
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, name) for name in ("table.csv", "table.md", "fid_vs_nfe.png")]
  with open(paths[0], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + " |"
            for r in rows]
  with open(paths[1], "w") as f:
    f.write("\n".join(lines) + "\n")
  import matplotlib  # pylint: disable=import-outside-toplevel
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for label, _, _ in SAMPLERS:
    mine = [r for r in rows if r["sampler"] == label]
    for ax, key in zip(axes, ("fid", "recall")):
      ax.plot([r["nfe"] for r in mine], [r[key] for r in mine], marker="o", label=label)
  for ax, key in zip(axes, ("FID (lower is better)", "recall")):
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel(key)
  axes[0].set_yscale("log")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths[2], dpi=100)
  plt.close(fig)
  return paths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for table.md, table.csv, fid_vs_nfe.png")
  parser.add_argument("--data", default="digits", help="digits or a toy2d/* set")
  parser.add_argument("--workdir", default="", help="where the models train (default runs/diffusion_steps/<data>)")
  parser.add_argument("--num_samples", type=int, default=1500, help="samples per row and reference size")
  parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="sampling step counts")
  parser.add_argument("--train_steps", type=int, default=0, help="training steps of every model (0: the configs')")
  parser.add_argument("--reflow_pairs", type=int, default=0, help="pairs of the reflow (0: the family's 10000)")
  parser.add_argument("--quick", action="store_true", help="10 training steps, 64 samples, 1, 2, 4 steps")
  args = parser.parse_args()
  start = time.time()
  steps = (1, 2, 4) if args.quick else tuple(int(n) for n in args.steps.split(","))
  num = 64 if args.quick else args.num_samples
  workdir = args.workdir or (os.path.join(args.out, "runs") if args.quick else "")
  print(" ".join(COLUMNS))
  rows = run(args.data, args.quick, workdir, num, steps, args.train_steps, args.reflow_pairs)
  header = (f"Sampling steps on {args.data}: {len(rows)} rows, {num} samples each, "
            f"{jax.devices()[0].device_kind}, {time.time() - start:.0f} s in all "
            f"(`python experiments/diffusion_steps.py {' '.join(sys.argv[1:])}`).")
  for path in write(rows, args.out, header):
    print(f"wrote {path}")


if __name__ == "__main__":
  one_line_errors(main)()
