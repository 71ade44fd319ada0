"""Sweeps (``jaxgen.sweeps``, ``python -m jaxgen.sweep``): declaring, naming and validating points;
a parallel sweep's table (checked against numpy on the points' own eval files), a run-time failure,
resuming a killed sweep to the params of an uninterrupted one, and the SLURM array script."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT
from jaxgen import sweeps
from jaxgen.errors import UserError
from jaxgen.sweeps import local, points, results

# A VAE that trains in seconds; only keys every config keeps (seed, train.*, model.*, eval.* sizes).
TINY = ["--config.train.steps=4", "--config.train.batch_size=16", "--config.train.checkpoint_every=2",
        "--config.train.log_every=2", "--config.train.progress_bar=False", "--config.eval.batch_size=32",
        "--config.eval.num_batches=1", "--config.model.hidden=(16,)"]
VAE = "--config=configs/vae.py"
# Three points in two groups over seeds (the two that compile different programs first, so the
# second seed finds its program in the compilation cache), and one that passes validation but cannot
# start (no such data set).
SWEEP_FILE = """
def get_sweep():
  return [{"model.latent_dim": 2, "seed": 0}, {"model.latent_dim": 4, "seed": 0},
          {"model.latent_dim": 2, "seed": 1}, {"data.name": "nope"}]
"""
TWO_SEEDS = ["--axis=model.latent_dim=2", "--axis=seed=0,1"]  # its two points of latent_dim 2, as a grid


def sweep_cli(*args, env=None, **kwargs):
  return subprocess.run([sys.executable, "-m", "jaxgen.sweep", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, **(env or {})}, **kwargs)


def read_json(*parts):
  with open(os.path.join(*parts)) as f:
    return json.load(f)


def final_eval(workdir, name):
  return read_json(workdir, "points", name, "eval", "step_4.json")


def checkpoint_arrays(workdir, name):
  """Every array of every pytree item of the point's step-4 checkpoint, read back with orbax."""
  step = os.path.join(workdir, "points", name, "checkpoints", "4")
  items = sorted(i for i in os.listdir(step) if os.path.exists(os.path.join(step, i, "_METADATA")))
  assert items, os.listdir(step)
  return [np.asarray(x) for i in items for x in jax.tree.leaves(ocp.StandardCheckpointer().restore(
      os.path.join(step, i)))]


def attempts_in_log(workdir, name):
  with open(os.path.join(workdir, "points", name, "sweep.log")) as f:
    return sum(line.startswith(local.HEADER) and "--mode=" not in line for line in f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The 4-point sweep of SWEEP_FILE, two points at once, never interrupted."""
  tmp = tmp_path_factory.mktemp("sweep")
  (tmp / "sweep_def.py").write_text(SWEEP_FILE)
  workdir = str(tmp / "ref")
  proc = sweep_cli(VAE, f"--sweep={tmp / 'sweep_def.py'}", f"--workdir={workdir}", "--parallel=2", *TINY)
  return workdir, proc


# --- declaring, validating and naming points (no training) ---------------------------------------


def test_axes_and_lists_expand_to_the_expected_points(tmp_path):
  grid = sweeps.declare("configs/vae.py", axes=["model.latent_dim=2,4", "seed=0,1,2"])
  assert grid == [{"model.latent_dim": d, "seed": s} for d in ("2", "4") for s in ("0", "1", "2")]
  assert points.split_values("(16,), (8, 8),'a,b',\"c\"") == ["(16,)", "(8, 8)", "a,b", "c"]  # as a shell unquotes

  sweep_file = tmp_path / "s.py"
  sweep_file.write_text('def get_sweep():\n  return [{"model.hidden": (8, 8)}, {"optim.model.learning_rate": 2e-4}]\n')
  listed = sweeps.declare("configs/vae.py", str(sweep_file), ["seed=0,1"])
  assert listed == [{"model.hidden": (8, 8), "seed": "0"}, {"model.hidden": (8, 8), "seed": "1"},
                    {"optim.model.learning_rate": 2e-4, "seed": "0"}, {"optim.model.learning_rate": 2e-4, "seed": "1"}]
  sweep = sweeps.prepare("configs/vae.py", listed + [{"model.hidden": "(4,4)", "seed": 0}], str(tmp_path / "w"),
                         ["train.steps=7"])
  assert [p.values for p in sweep.points] == [
      {"model.hidden": [8, 8], "seed": 0}, {"model.hidden": [8, 8], "seed": 1},
      {"optim.model.learning_rate": 0.0002, "seed": 0}, {"optim.model.learning_rate": 0.0002, "seed": 1},
      {"model.hidden": [4, 4], "seed": 0}]
  assert {p.steps for p in sweep.points} == {7} and sweep.common == {"train.steps": "7"}
  assert sweep.command(sweep.points[2])[-2:] == ["--config.optim.model.learning_rate=0.0002", "--config.seed=0"]
  assert not os.path.exists(tmp_path / "w")  # preparing writes nothing

  # One value, one text: a rerun spelling a flag differently does not count as a change.
  spelled = sweeps.prepare("configs/vae.py", [{"model.hidden": "(16, )"}], str(tmp_path / "w"),
                           ["train.progress_bar=False", "optim.model.learning_rate=2e-4", "data.name=digits"])
  assert spelled.common == {"train.progress_bar": "false", "optim.model.learning_rate": "0.0002", "data.name": "digits"}
  assert spelled.points[0].overrides == {"model.hidden": "(16,)"}
  # numpy values (np.logspace, np.arange) are the Python numbers they hold
  lrs = sweeps.prepare("configs/vae.py", [{"optim.model.learning_rate": lr, "seed": s}
                                          for lr, s in zip(np.logspace(-4, -3, 2), np.arange(2))], str(tmp_path / "w"))
  assert [p.values for p in lrs.points] == [{"optim.model.learning_rate": 1e-4, "seed": 0},
                                            {"optim.model.learning_rate": 1e-3, "seed": 1}]

  # Folders of points an earlier, wider run had: kept, and named so the narrower rerun says so.
  os.makedirs(tmp_path / "w" / "points" / "seed-9")
  os.makedirs(tmp_path / "w" / "points" / lrs.points[0].name)
  assert lrs.other_point_dirs() == ["seed-9"]

  with pytest.raises(UserError, match="'model.hidden' is set both by get_sweep"):
    sweeps.declare("configs/vae.py", str(sweep_file), ["seed=0", "model.hidden=(2,)"])
  with pytest.raises(UserError, match="points 0 and 1 are the same"):
    sweeps.prepare("configs/vae.py", [{"seed": 1}, {"seed": "1"}], str(tmp_path / "w"))


def test_names_are_readable_stable_distinct_and_safe():
  gan = [{"model.loss": loss, "seed": s} for loss in ("non_saturating", "hinge") for s in (0, 1)]
  assert points.names(gan) == ["loss-non_saturating_seed-0", "loss-non_saturating_seed-1", "loss-hinge_seed-0",
                               "loss-hinge_seed-1"]
  assert points.names(gan[::-1]) == points.names(gan)[::-1]  # a name does not depend on the order of points
  lrs = [{"optim.gen.learning_rate": 2e-4, "optim.disc.learning_rate": 1e-3, "model.hidden": [64, 64]}]
  assert points.names(lrs) == ["gen.learning_rate-0.0002_disc.learning_rate-0.001_hidden-64x64"]

  clash = [{"data.name": "toy2d/ring8"}, {"data.name": "toy2d-ring8"}, {"data.name": "Toy2d-ring8"},
           {"data.name": "x" * 200, "seed": 0}, {"data.name": "x" * 200, "seed": 1}, {}]
  named = points.names(clash)
  assert len({n.lower() for n in named}) == len(named)  # distinct even on case-insensitive file systems
  assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) and len(n) <= points.MAX_NAME for n in named), named
  assert named[0].startswith("name-toy2d-ring8_") and named[-1] == "base"
  assert points.names(clash) == named


def test_bad_override_stops_the_sweep_before_anything_runs(tmp_path):
  workdir = tmp_path / "sweep"
  proc = sweep_cli(VAE, "--axis=model.latent_dim=2,4", "--axis=model.latentdim=3", f"--workdir={workdir}", *TINY)
  assert proc.returncode == 1, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("jaxgen: error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert "sweep point 0" in errors[0] and "'model.latentdim'" in errors[0], errors[0]
  assert not workdir.exists()
  with pytest.raises(UserError, match=r"sweep point 1 .*model\.latent_dim.*'four'"):
    sweeps.run("configs/vae.py", [{"model.latent_dim": 2}, {"model.latent_dim": "four"}], str(workdir))
  assert not workdir.exists()
  # SLURM flags on a sweep that would run here (no --launcher=slurm): refused, nothing trains.
  proc = sweep_cli(VAE, "--axis=seed=0,1", f"--workdir={workdir}", "--slurm_partition=gpu", "--submit", *TINY)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert ("jaxgen: error: --submit, --slurm_partition apply to a SLURM job array, and this sweep would run here "
          "(--launcher=local): add --launcher=slurm") in proc.stderr
  assert not workdir.exists()


def test_device_shares_split_cores_or_gpus():
  two = local.shares(2, [0, 1], [], "--xla_foo=1")
  assert [s.cpus for s in two] == [(0,), (1,)]
  assert all(s.env == {"OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_foo=1 --xla_cpu_multi_thread_eigen=false"}
             for s in two)
  three = local.shares(3, list(range(8)), [])
  assert [s.cpus for s in three] == [(0, 1), (2, 3), (4, 5)] and three[0].env == {"OMP_NUM_THREADS": "2"}
  assert [s.cpus for s in local.shares(3, [4, 5], [])] == [(4,), (5,), (4,)]
  gpus = local.shares(2, [0, 1], ["0", "1", "2", "3", "4"])
  assert [s.env for s in gpus] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
  shared = local.shares(3, [0, 1], ["3"])
  assert {s.env["CUDA_VISIBLE_DEVICES"] for s in shared} == {"3"}
  assert shared[0].env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.30" and shared[0].cpus is None
  assert local.shares(1, [0, 1], ["0"]) == [local.Share({})]


# --- running sweeps ------------------------------------------------------------------------------


def _event_values(run_dir):
  """(tag -> value) of the scalars and the hparams session of a TensorBoard run, read from the
  TFRecord framing (u64 length, u32 crc, data, u32 crc) with tensorboardX's protos."""
  from tensorboardX.proto import event_pb2, plugin_hparams_pb2

  out = {}
  for name in os.listdir(run_dir):
    with open(os.path.join(run_dir, name), "rb") as f:
      data = f.read()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 16 + length
      for v in event.summary.value:
        if v.tag == "_hparams_/session_start_info":
          info = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
          out["hparams"] = {k: getattr(h, h.WhichOneof("kind")) for k, h in info.session_start_info.hparams.items()}
        elif v.HasField("simple_value"):
          out[v.tag] = v.simple_value
  return out


def test_parallel_sweep_writes_the_table_and_records_the_failure(reference):
  workdir, proc = reference
  assert proc.returncode == 1, proc.stderr  # one point failed; the three others finished
  manifest = read_json(workdir, "manifest.json")
  status = {p["name"]: p for p in manifest["points"]}
  good = ["latent_dim-2_seed-0", "latent_dim-4_seed-0", "latent_dim-2_seed-1"]
  assert list(status) == good + ["name-nope"]
  assert [status[n]["status"] for n in good] == ["done"] * 3
  failed = status["name-nope"]
  assert failed["status"] == "failed" and "nope" in failed["error"] and "\n" not in failed["error"]
  assert f"  name-nope: failed: {failed['error']}" in proc.stderr
  spans = sorted((status[n]["started"], status[n]["started"] + status[n]["wall_s"]) for n in good)
  assert spans[1][0] < spans[0][1]  # two points ran at the same time
  assert {re.search(r"taskset -c (\d)", open(os.path.join(workdir, "points", n, "sweep.log")).read()).group(1)
          for n in good} == {"0", "1"}  # each pinned to its own core

  evals = {n: final_eval(workdir, n) for n in good}
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["point"] for r in rows] == good + ["name-nope"]
  metrics = sorted(k for k in evals[good[0]] if k != "step")
  assert "bits_per_dim" in metrics
  for row in rows[:3]:
    assert row["status"] == "done" and row["steps"] == "4"
    for m in metrics:
      if m in evals[row["point"]]:
        assert float(row[m]) == evals[row["point"]][m], (row["point"], m)
  assert rows[3]["status"] == "failed" and rows[3]["error"] == failed["error"] and rows[3]["bits_per_dim"] == ""

  table = open(os.path.join(workdir, "results.md")).read()
  header = next(line for line in table.splitlines() if line.startswith("| model.latent_dim"))
  columns = [c.strip() for c in header.strip("|").split("|")]
  assert columns[:3] == ["model.latent_dim", "data.name", "n"]
  by_group = {}
  for line in table.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if line.startswith("| ") and cells[0] in ("2", "4"):
      by_group[cells[0]] = dict(zip(columns, cells))
  assert by_group["2"]["n"] == "2" and by_group["4"]["n"] == "1"
  for m in ("bits_per_dim", "nll_bound_nats"):
    x = np.array([evals[n][m] for n in ("latent_dim-2_seed-0", "latent_dim-2_seed-1")])
    assert by_group["2"][m] == f"{x.mean():.4g} ± {x.std(ddof=1):.2g}"
    assert by_group["4"][m] == f"{evals['latent_dim-4_seed-0'][m]:.4g}"
  assert "`name-nope`: failed: " in table

  for png in ("bits_per_dim_vs_model.latent_dim.png", "training_curves.png"):
    with open(os.path.join(workdir, "plots", png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for name, values in zip(good, ({"model.latent_dim": 2.0, "seed": 0.0}, {"model.latent_dim": 4.0, "seed": 0.0},
                                  {"model.latent_dim": 2.0, "seed": 1.0})):
    logged = _event_values(os.path.join(workdir, "points", name, "hparams"))
    assert logged["hparams"] == values
    assert logged["final/bits_per_dim"] == pytest.approx(evals[name]["bits_per_dim"], rel=1e-6)
  assert not os.path.exists(os.path.join(workdir, "points", "name-nope", "hparams"))


def _group_exists(pgid):
  """Whether any process (zombies included) of process group ``pgid`` is left (Linux /proc)."""
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
          return True
    except OSError:
      continue
  return False


def test_killed_sweep_resumes_to_the_params_of_an_uninterrupted_one(reference, tmp_path):
  ref, _ = reference
  workdir = str(tmp_path / "sweep")
  first, second = os.path.join(workdir, "points", "latent_dim-2_seed-0"), os.path.join(workdir, "points",
                                                                                         "latent_dim-2_seed-1")
  args = [sys.executable, "-m", "jaxgen.sweep", VAE, *TWO_SEEDS, f"--workdir={workdir}", *TINY]
  output = tmp_path / "first_run.txt"
  with open(output, "w") as out:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

  def status(d):
    path = os.path.join(d, "sweep_status.json")
    return read_json(path)["status"] if os.path.exists(path) else "pending"

  deadline = time.time() + 400
  while not (status(first) == "done" and os.path.isdir(os.path.join(second, "checkpoints", "2"))):
    assert proc.poll() is None and time.time() < deadline, output.read_text()[-3000:]
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the point it is running
  proc.wait()
  while _group_exists(proc.pid):  # until the killed point is reaped (a zombie still holds its workdir lock)
    assert time.time() < deadline
    time.sleep(0.1)
  assert status(second) == "running" and not os.path.exists(os.path.join(second, "eval", "step_4.json"))

  again = sweep_cli(VAE, *TWO_SEEDS, f"--workdir={workdir}", *TINY)
  with open(os.path.join(second, "sweep.log")) as f:
    assert again.returncode == 0, again.stderr + f.read()[-3000:]
  assert attempts_in_log(workdir, "latent_dim-2_seed-0") == 1  # done: skipped
  assert attempts_in_log(workdir, "latent_dim-2_seed-1") == 2  # interrupted: resumed
  for name in ("latent_dim-2_seed-0", "latent_dim-2_seed-1"):
    assert final_eval(workdir, name) == final_eval(ref, name)
    resumed, uninterrupted = checkpoint_arrays(workdir, name), checkpoint_arrays(ref, name)
    assert len(resumed) == len(uninterrupted) > 0
    for a, b in zip(resumed, uninterrupted):
      np.testing.assert_array_equal(a, b, err_msg=name)


def test_slurm_array_task_runs_exactly_its_point(reference, tmp_path):
  ref, _ = reference
  workdir = tmp_path / "sweep"
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "sbatch").write_text('#!/usr/bin/env bash\necho "$@" >> "$(dirname "$0")/calls"\n'
                               'echo $((100 + $(wc -l < "$(dirname "$0")/calls")))\n')
  (fake / "sbatch").chmod(0o755)
  proc = sweep_cli(VAE, *TWO_SEEDS, f"--workdir={workdir}", "--launcher=slurm", "--submit", "--parallel=2",
                   "--slurm_partition=gpu", "--slurm_time=01:00:00", "--slurm_gpus=2", "--slurm_cpus=4",
                   "--slurm_mem=8G", *TINY, env={"PATH": f"{fake}:{os.environ['PATH']}"})
  assert proc.returncode == 0, proc.stderr
  script = workdir / "slurm" / "sweep.sbatch"
  options = [line.split(" ", 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
  for option in ("--array=0,1%2", "--partition=gpu", "--time=01:00:00", "--gpus=2", "--cpus-per-task=4",
                 "--mem=8G", "--signal=B:TERM@120", "--requeue"):
    assert option in options, options
  calls = (fake / "calls").read_text().splitlines()
  assert calls[0] == f"--parsable {script}"
  assert "--dependency=afterany:101" in calls[1] and "--collect" in calls[1]
  assert not (workdir / "points").exists()  # writing and submitting runs nothing here

  task = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600,
                        env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"})
  assert task.returncode == 0, task.stderr
  assert os.listdir(workdir / "points") == ["latent_dim-2_seed-1"]
  assert final_eval(str(workdir), "latent_dim-2_seed-1") == final_eval(ref, "latent_dim-2_seed-1")
  assert read_json(workdir, "points", "latent_dim-2_seed-1", "sweep_status.json")["status"] == "done"


def test_rerun_with_other_eval_settings_re_evaluates_the_trained_point(tmp_path):
  # A trained point rerun with new eval settings: the trainer alone would keep the old eval file
  # (it only finishes a missing one), so the sweep renames it aside and the trainer evaluates again;
  # attempts and wall time add up.
  common = [flag.removeprefix("--config.") for flag in TINY] + ["eval.metrics=('heldout',)"]

  def run(*extra):
    sweep = sweeps.prepare("configs/vae.py", [{"seed": 0}], str(tmp_path / "sweep"), [*common, *extra])
    status = local.Runner(sweep, echo=lambda line: None).run_point(sweep.points[0], local.Share({}))
    assert status["status"] == "done", status
    return status

  first = run()
  one_batch = final_eval(str(tmp_path / "sweep"), "seed-0")
  second = run("eval.num_batches=2")
  assert final_eval(str(tmp_path / "sweep"), "seed-0")["bits_per_dim"] != one_batch["bits_per_dim"]
  assert attempts_in_log(str(tmp_path / "sweep"), "seed-0") == 2 and second["attempts"] == 2
  (aside,) = (tmp_path / "sweep" / "points" / "seed-0" / "eval").glob("step_4.before-*.json")
  assert json.loads(aside.read_text()) == one_batch  # kept, and not a final metric any more
  assert results.final_metrics(str(tmp_path / "sweep" / "points" / "seed-0"))["bits_per_dim"] != one_batch["bits_per_dim"]
  assert second["wall_s"] > first["wall_s"]
  with pytest.raises(UserError, match="varies no key other than seed, so there is no axis"):
    sweeps.collect(str(tmp_path / "sweep"), plot_axis="seed")  # a seed-only sweep: nothing to plot against
  assert (tmp_path / "sweep" / "results.md").exists()  # the table is written before the plot is refused


def test_a_point_whose_evaluators_report_no_number_is_done(tmp_path):
  # eval.metrics=("samples",) writes a grid and no eval file; exit status 0 of the trainer is what
  # says the point trained to its steps and was evaluated.
  sweep = sweeps.prepare("configs/vae.py", [{"seed": 0}], str(tmp_path / "w"), ["eval.metrics=('samples',)"])
  sweep.command = lambda point: [sys.executable, "-c", "pass"]  # a trainer that succeeds
  status = local.Runner(sweep, echo=lambda line: None).run_point(sweep.points[0], local.Share({}))
  assert status["status"] == "done" and status["attempts"] == 1


def test_training_rows_skip_a_row_cut_short(tmp_path):
  """A point stopped by a full disk mid-row (or still writing one): the table and the training curves
  read its whole rows instead of failing on the partial one."""
  (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "train/a": 1.0}\n{"step": 1, "eval/b": 2.0}\n'
                                           b'\xff\n{"step": 2, "train/a": 3.0}\n{"step": 3, "tra')
  assert results.training_rows(str(tmp_path)) == [{"step": 1, "train/a": 1.0}, {"step": 2, "train/a": 3.0}]
