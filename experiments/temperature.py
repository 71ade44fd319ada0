"""Temperature: quality vs diversity, the course's Example 2 at scale (issue 13, part 4).

  python experiments/temperature.py --out=results/temperature
  python experiments/temperature.py --out=/tmp/t --quick --models=realnvp      # smoke run

Models (``--models``): PixelCNN and RealNVP on ``digits`` (the family comparison's sweeps, in the
same ``<workdir>``: nothing trains again after ``experiments/compare_families.py``) and the
character transformer of ``configs/transformer.py`` (``text/pystdlib``), seed 0 (``--seeds``),
each at its config. For every temperature ``T`` of ``--temperatures`` the model samples with
``sample.temperature = T`` (PixelCNN and the transformer divide the logits by ``T``; the flow
draws ``z ~ N(0, T^2 I)``):
* images: FID, precision and recall (k = 3) of ``--num_samples`` samples against the 1500 training
  images in the digits classifier's feature space (quality ~ precision, diversity ~ recall);
* text: bits/char of the sampled windows under the model itself at ``T = 1`` (lower = more
  predictable text) and the distinct-4-gram ratio over all sampled characters (higher = more
  diverse); the held-out windows' own values are printed as the reference.
Figure ``quality_vs_diversity.png``: precision against recall (images) and bits/char against the
distinct-4-gram ratio (text), one line per model, each point labelled with its ``T``.

Wall time at full size (``--train_steps=1000``, reusing the family comparison's points): 156 s on
this 2-core CPU, 88 s of it the transformer's training; 62 s once every point exists
(docs/results.md).
"""

from __future__ import annotations

import os
import time

import _common
import jax
import numpy as np
from absl import app, flags

from jaxgen.errors import UserError, one_line_errors

MODELS = flags.DEFINE_list("models", ["pixelcnn", "realnvp", "transformer"], "models to sweep the temperature of")
TEMPERATURES = flags.DEFINE_list("temperatures", ["0.5", "0.7", "0.85", "1.0", "1.2", "1.5"], "temperatures")
SEEDS = flags.DEFINE_integer("seeds", 1, "seeds per model (0 .. seeds-1)", lower_bound=1)
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1500, "image samples per temperature (text: 256 windows)", lower_bound=1)
TRAIN_STEPS = flags.DEFINE_integer("train_steps", 0, "training steps of every model (0: each config's; "
                                   "give the family comparison's value to reuse its points)")

NGRAM = 4
COLUMNS = ["model", "T", "FID", "precision", "recall", "sample bits/char", f"distinct {NGRAM}-grams", "n"]


def distinct_ngrams(tokens: np.ndarray, n: int = NGRAM) -> float:
  """Distinct n-grams / all n-grams over the windows ``tokens [B, T]`` (n-grams within a window)."""
  grams = np.stack([tokens[:, i:tokens.shape[1] - n + 1 + i] for i in range(n)], axis=-1).reshape(-1, n)
  return len({g.tobytes() for g in grams}) / len(grams)


def sweep_temperature(row: dict, temperatures: list[float], num: int, real: np.ndarray | None) -> list[dict]:
  """One record per temperature of a finished run (module docstring)."""
  saved, pipeline = _common.restore(row)
  family, out = saved.family, []
  text = pipeline.spec.modality == "text"
  bits = jax.jit(lambda x: family.eval_metrics(saved.params, saved.state, {"x": x}, jax.random.key(0))["bits_per_char"])
  for t in temperatures:
    family.config.sample.temperature = t  # read when the sampler is traced
    batch = min(num, 256)
    fn = jax.jit(lambda p, s, k, batch=batch: family.sample(p, s, k, batch))
    fake = _common.draw_samples(lambda key, fn=fn: np.asarray(fn(saved.params, saved.state, key)), num, batch,
                                row["seed"])
    rec = {"model": row["family"], "seed": row["seed"], "T": t}
    if text:
      rec.update({"sample_bits_per_char": float(np.mean(bits(fake))), "distinct_ngrams": distinct_ngrams(fake)})
    else:
      m = _common.sample_metrics(real, _common.digits_features(fake, pipeline.spec).features)
      rec.update({k: m[k] for k in ("fid", "precision", "recall")})
    out.append(rec)
  return out


def text_reference(row: dict, num: int) -> str:
  """The held-out windows' bits/char under the model and distinct-4-gram ratio."""
  saved, pipeline = _common.restore(row)
  x = np.concatenate([b["x"][b["mask"] > 0] for b in pipeline.split_batches("test", num, 1)])
  nll = saved.family.eval_metrics(saved.params, saved.state, {"x": x}, jax.random.key(0))["bits_per_char"]
  return (f"held-out text ({len(x)} windows): {float(np.mean(nll)):.3f} bits/char under the model, "
          f"distinct {NGRAM}-gram ratio {distinct_ngrams(x):.3f}")


def figure(records: list[dict], path: str) -> str:
  plt = _common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for model in dict.fromkeys(r["model"] for r in records):
    mine = sorted((r for r in records if r["model"] == model and r["seed"] == 0), key=lambda r: r["T"])
    text = "distinct_ngrams" in mine[0]
    ax, (kx, ky) = (axes[1], ("distinct_ngrams", "sample_bits_per_char")) if text else (axes[0], ("recall", "precision"))
    ax.plot([r[kx] for r in mine], [r[ky] for r in mine], marker="o", label=model)
    for r in mine:
      ax.annotate(f"T={r['T']:g}", (r[kx], r[ky]), fontsize=7)
  axes[0].set(xlabel="recall (diversity)", ylabel="precision (quality)", title="digits")
  axes[1].set(xlabel=f"distinct {NGRAM}-gram ratio (diversity)", ylabel="bits/char of samples under the model",
              title="text")
  for ax in axes:
    if ax.lines:
      ax.legend(fontsize=8)
  return _common.save_figure(fig, path)


def main(argv) -> None:
  del argv
  start, quick = time.time(), _common.QUICK.value
  unknown = sorted(set(MODELS.value) - {"pixelcnn", "realnvp", "transformer"})
  if unknown:
    raise UserError(f"--models: {', '.join(unknown)} unknown; choose from pixelcnn, realnvp, transformer")
  temperatures = [0.5, 1.0, 1.5] if quick else [float(t) for t in TEMPERATURES.value]
  images, spec = _common.split_images(_common.classifier_config(), "train")
  real = _common.digits_features(images, spec).features
  runs = _common.train_families(MODELS.value, range(SEEDS.value), _common.workdir("families"), quick,
                                _common.PARALLEL.value, TRAIN_STEPS.value)
  records, notes = [], []
  for model in MODELS.value:
    for row in runs[model]:
      if row["status"] != "done":
        notes.append(f"{model} seed {row['seed']}: {row['status']}: {row['error']}")
        continue
      row["family"] = model
      text = row["config"].data.name.startswith("text")
      num = (8 if quick else 256) if text else (32 if quick else NUM_SAMPLES.value)
      records += sweep_temperature(row, temperatures, num, real)
      if text and row["seed"] == 0:
        notes.append(text_reference(row, num))
  keys = {"FID": "fid", "precision": "precision", "recall": "recall", "sample bits/char": "sample_bits_per_char",
          f"distinct {NGRAM}-grams": "distinct_ngrams"}
  table = []
  for model in dict.fromkeys(r["model"] for r in records):
    for t in temperatures:
      mine = [r for r in records if r["model"] == model and r["T"] == t]
      table.append({"model": model, "T": f"{t:g}", "n": len(mine),
                    **{c: _common.mean_std([r.get(k) for r in mine]) for c, k in keys.items()}})
  title = "Temperature vs quality and diversity (images: digits-classifier features vs 1500 training images)"
  out = _common.OUT.value
  written = _common.write_tables(out, COLUMNS, table, records, _common.header(title, start))
  with open(written[0], "a") as f:
    f.write("".join(f"\n{n}\n" for n in notes))
  print("\n".join(notes))
  written.append(figure(records, os.path.join(out, "quality_vs_diversity.png")))
  for path in written:
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(one_line_errors(main))
