"""The README's "Extending jaxgen" examples (a family, a metric, a data source), run as written.

The code blocks are taken from README.md itself and run in a subprocess (their registrations must
not leak into the other tests' registries), which trains the example family on the example data
source with the example evaluator through ``--mode=train`` and ``--mode=eval``'s functions.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import scipy.stats

ROOT = pathlib.Path(__file__).resolve().parent.parent

DRIVER = """
import json, sys
import jax, numpy as np
from jaxgen import config_defaults, data, train
from jaxgen.evaluation.context import evaluate_samples

config = config_defaults.base("diag_gaussian")
config_defaults.apply_overrides(config, {
    "data.name": "toy/line", "data.line_points": 64, "train.steps": 300, "train.batch_size": 16,
    "train.checkpoint_every": 0, "train.progress_bar": False, "train.ema_decay": 0.0,
    "optim.default.learning_rate": 0.05, "eval.metrics": ("heldout", "mean_gap"),
    "eval.num_samples": 4000, "eval.batch_size": 32})
pipeline = data.build(config)
batch = pipeline.train_batch(0)
fam = train.setup(config, sys.argv[1]).family
params = {"model": {"mean": jax.numpy.array([0.5, -1.0]), "log_std": jax.numpy.array([0.1, -0.3])}}
nll = fam.per_example_metrics(params, batch)["nll_nats"]
ts = train.train_and_evaluate(config, sys.argv[1])
evaluated = train.evaluate(config, sys.argv[1])
gap = evaluate_samples(["mean_gap"], np.array([[3.0, 4.0], [5.0, 8.0]]), np.array([[0.0, 0.0], [2.0, 4.0]]),
                       pipeline.spec)
print("RESULT " + json.dumps({
    "spec": [pipeline.spec.modality, list(pipeline.spec.shape)], "batch": batch["x"].tolist(),
    "nll": np.asarray(nll).tolist(), "mean": np.asarray(ts.params["model"]["mean"]).tolist(),
    "train_mean": np.asarray(pipeline.held_out(1000)["x"]).mean(0).tolist(),
    "final": json.load(open(sys.argv[1] + "/eval/step_300.json")), "evaluated": evaluated, "gap": gap}))
"""


def _extending_blocks() -> list[str]:
  text = (ROOT / "README.md").read_text()
  section = text.split("## Extending jaxgen", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_extension_examples_train_and_evaluate(tmp_path):
  blocks = _extending_blocks()
  assert len(blocks) == 3, "README's Extending section should hold a family, a metric and a data source"
  script = tmp_path / "extend.py"
  script.write_text("\n".join(blocks) + textwrap.dedent(DRIVER))
  out = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.split("RESULT ", 1)[1])

  # The data source: points on y = 2x + 1, served as 2-D points.
  assert r["spec"] == ["points", [2]]
  x = np.array(r["batch"])
  np.testing.assert_allclose(x[:, 1], 2 * x[:, 0] + 1, atol=1e-6)
  # The family's NLL is the diagonal Gaussian's, checked against scipy.
  expected = -scipy.stats.norm.logpdf(x, [0.5, -1.0], np.exp([0.1, -0.3])).sum(1)
  np.testing.assert_allclose(r["nll"], expected, rtol=1e-5)
  # Training fits the mean (the MLE is the data mean), and the metric sees it: the gap between
  # sample and data means is small after training (it is ~1 at the initial mean 0).
  np.testing.assert_allclose(r["mean"], r["train_mean"], atol=0.15)
  assert r["final"]["mean_gap"] < 0.2
  assert {"nll_nats", "bits_per_dim", "mean_gap"} <= set(r["final"])
  assert r["evaluated"]["mean_gap"] == r["final"]["mean_gap"]  # --mode=eval: the same samples, same numbers
  # The metric itself on arrays: |(4, 6) - (1, 2)| = 5.
  assert abs(r["gap"]["mean_gap"] - 5.0) < 1e-9
