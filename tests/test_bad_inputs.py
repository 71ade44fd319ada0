"""A hostile but fair user at the command line: every bad input below exits with status 1, prints
exactly one ``jaxgen: error:`` line naming the problem, no traceback, and leaves a trained run's
workdir as it was (every file byte for byte, no new checkpoint).

The cases run once per module (the ``outcomes`` fixture), two at a time; each parametrized test
then checks its own case. Each case is its own process running ``jaxgen/main.py`` as ``__main__``
(what ``python -m jaxgen.main`` does), forked from a server that has imported jaxgen once
(``multiprocessing``'s forkserver, no JAX backend started): a fresh interpreter spends ~1.3 of its
~1.5 s importing, and the cases are most of this file's time. The trained run is a real
``python -m jaxgen.main`` process (as are test_cli.py's).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import traceback

import pytest

from conftest import ROOT

TINY = ["--config.train.steps=4", "--config.train.batch_size=16", "--config.train.checkpoint_every=2",
        "--config.train.log_every=2", "--config.train.progress_bar=False", "--config.sample.num=16",
        "--config.eval.batch_size=32", "--config.eval.num_batches=2", "--config.eval.num_samples=64",
        "--config.eval.metrics=heldout"]
VAE = ["--config=configs/vae.py", *TINY]

CONFIG_FILES = {
    "syntax.py": "def get_config(:\n  pass\n",
    "raises.py": "def get_config():\n  raise ValueError('no such option')\n",
    "no_get_config.py": "from jaxgen import config_defaults\nc = config_defaults.base('vae')\n",
    "empty.py": "",
    "returns_none.py": "def get_config():\n  c = 1\n",
    "bad_import.py": "import no_such_module_xyz\n",
}

# (id, arguments, fragments of the error line[, marks]). "{tmp}" is a scratch directory holding
# CONFIG_FILES; "--workdir" is added (the case's copy of the trained run) unless given.
CASES = [
    # The config file.
    ("config_missing", ["--config=configs/no_such.py", *TINY], ["configs/no_such.py", "not found"]),
    ("config_syntax_error", ["--config={tmp}/syntax.py"], ["syntax.py", "syntax error at line 1"]),
    ("config_raises", ["--config={tmp}/raises.py"], ["raises.py", "ValueError", "no such option"]),
    ("config_without_get_config", ["--config={tmp}/no_get_config.py"], ["defines no get_config()"]),
    ("config_empty", ["--config={tmp}/empty.py"], ["empty.py", "defines no get_config()"]),
    ("config_returns_none", ["--config={tmp}/returns_none.py"], ["returned NoneType", "return c"]),
    ("config_bad_import", ["--config={tmp}/bad_import.py"], ["fails to load", "no_such_module_xyz"]),
    ("config_flag_missing", [*TINY], ["--config is required"]),
    # Overrides.
    ("unknown_key", [*VAE, "--config.train.stepz=3"], ["unknown config key 'train.stepz' (did you mean 'train.steps'?)"]),
    ("unknown_group", [*VAE, "--config.trian.steps=3"], ["unknown config key 'trian.steps'", "'trian'",
                                                          "(did you mean 'train'?)"]),
    ("int_not_a_number", [*VAE, "--config.model.latent_dim=abc"], ["model.latent_dim", "not a number"]),
    ("bool_not_a_bool", [*VAE, "--config.train.progress_bar=maybe"], ["progress_bar", "not a bool"]),
    ("tuple_not_ints", [*VAE, "--config.model.hidden=abc"], ["model.hidden", "sequence of int"]),
    ("override_without_value", [*VAE, "--config.train.steps"], ["has no value", "--config.KEY=VALUE"]),
    ("override_of_a_group", [*VAE, "--config.train=3"], ["--config.train is a group"]),
    # Flags.
    ("workdir_flag_missing", [*VAE], ["--workdir is required"], [], None),
    ("mode_unknown", [*VAE, "--mode=fit"], ["--mode=fit", "train|sample|eval"]),
    ("flag_unknown", [*VAE, "--stepz=3"], ["Unknown command line flag 'stepz'"]),
    ("positional_argument", [*VAE, "train"], ["unexpected argument 'train'"]),
    ("cpu_devices_negative", [*VAE, "--cpu_devices=-2"], ["--cpu_devices=-2", ">= 1"]),
    ("workdir_is_a_file", [*VAE, "--workdir={tmp}/syntax.py/run"], ["not writable", "--workdir"]),
    ("workdir_too_long", [*VAE, "--workdir={tmp}/" + "d" * 300], ["--workdir is too long", "255"]),
    # Whole-config validation, before anything is built.
    ("steps_zero", [*VAE, "--config.train.steps=0"], ["train.steps=0", ">= 1"]),
    ("keep_zero", [*VAE, "--config.train.keep_checkpoints=0"], ["train.keep_checkpoints=0", ">= 1"]),
    ("keep_negative", [*VAE, "--config.train.keep_checkpoints=-1"], ["train.keep_checkpoints=-1"]),
    ("ema_decay_one", [*VAE, "--config.train.ema_decay=1.0"], ["train.ema_decay=1.0", "[0, 1)"]),
    ("learning_rate_negative", [*VAE, "--config.optim.model.learning_rate=-1e-3"], ["optim.model.learning_rate=-0.001"]),
    ("learning_rate_zero", [*VAE, "--config.optim.model.learning_rate=0"], ["optim.model.learning_rate=0.0", "> 0"]),
    ("optimizer_unknown", [*VAE, "--config.optim.model.name=adamax"], ["optim.model.name='adamax'", "adamw"]),
    ("schedule_unknown", [*VAE, "--config.optim.model.schedule=exp"], ["optim.model.schedule='exp'", "cosine"]),
    ("adam_b1_one", [*VAE, "--config.optim.model.b1=1.0"], ["optim.model.b1=1.0", "[0, 1)"]),
    ("warmup_past_horizon", [*VAE, "--config.optim.model.schedule=warmup_cosine", "--config.optim.model.warmup_steps=10"],
     ["optim.model.warmup_steps=10", "horizon (4 steps)"]),
    ("batch_size_zero", [*VAE, "--config.train.batch_size=0"], ["train.batch_size=0"]),
    ("sample_num_zero", [*VAE, "--mode=sample", "--config.sample.num=0"], ["sample.num=0", ">= 1"]),
    ("eval_num_samples_zero", [*VAE, "--config.eval.num_samples=0"], ["eval.num_samples=0"]),
    ("eval_every_negative", [*VAE, "--config.eval.heldout.every=-1"], ["eval.heldout.every=-1", ">= 0"]),
    ("metric_unknown", [*VAE, "--config.eval.metrics=heldout,fidd"], ["unknown evaluator 'fidd' (did you mean 'fid'?); available:"]),
    ("features_unknown", [*VAE, "--config.eval.features=pixels"], ["eval.features='pixels'", "inception"]),
    ("inception_weights_missing", [*VAE, "--config.eval.features=inception", "--config.eval.inception_weights=/no/w.npz"],
     ["eval.inception_weights='/no/w.npz'", "is not a file"]),
    ("family_unknown", [*VAE, "--config.model.family=vqgan"], ["unknown model family 'vqgan' (did you mean 'gan'?); available:"]),
    ("family_switched", [*VAE, "--config.model.family=gan"], ["model.family='gan'", "lacks its fields", "loss"]),
    ("size_zero", [*VAE, "--config.model.latent_dim=0"], ["vae model with model.latent_dim=0", ">= 1"]),
    ("size_negative", [*VAE, "--config.model.latent_dim=-3"], ["model.latent_dim=-3 (TypeError)"]),
    ("distributed_without_coordinator", [*VAE, "--distributed"], ["--distributed:", "--coordinator_address"]),
    ("data_name_empty", [*VAE, "--config.data.name="], ["data.name=''", "is empty"]),
    ("init_from_missing", [*VAE, "--config.train.init_from=/no/such/run"], ["train.init_from='/no/such/run'"], [],
     "empty"),  # a run with checkpoints of its own resumes without it (test_reliability.py)
    # Checked at setup, before the first step.
    ("data_set_unknown", [*VAE, "--config.data.name=no_such_set"], ["no_such_set", "digits"]),
    ("batch_not_divisible_by_devices", [*VAE, "--config.train.batch_size=6", "--cpu_devices=4"],
     ["train.batch_size=6", "not divisible"]),
    ("gan_loss_unknown", ["--config=configs/gan.py", *TINY, "--config.model.loss=foo"], ["model.loss='foo'", "hinge"]),
    ("gan_pack_not_dividing_eval_batch", ["--config=configs/gan.py", *TINY, "--config.model.pack=3",
                                          "--config.train.batch_size=6", "--config.eval.batch_size=32"],
     ["eval.batch_size=32 is not divisible by model.pack=3", "--config.eval.batch_size=30"]),
    ("warmup_past_saved_horizon", [*VAE, "--config.train.steps=20", "--config.optim.model.schedule=warmup_cosine",
                                   "--config.optim.model.warmup_steps=10"],  # 10 < 20, but this run's horizon is 4
     ["optim.model.warmup_steps=10", "horizon saved with the checkpoint this workdir resumes (4 steps)",
      "--config.optim.model.decay_steps"]),
    ("temperature_negative", [*VAE, "--config.sample.temperature=-1"], ["sample.temperature=-1.0", ">= 0"]),
    ("temperature_of_a_gan", ["--config=configs/gan.py", *TINY, "--config.sample.temperature=0.5"],
     ["sample.temperature=0.5 changes nothing in gan samples", "leave it at 1.0"]),
    ("zero_flow_layers", ["--config=configs/flow2d.py", *TINY, "--config.model.num_layers=0"],
     ["model.num_layers=0", "sizes must be >= 1"]),
    ("zero_wavenet_cycles", ["--config=configs/wavenet.py", *TINY, "--config.data.seq_len=64",
                             "--config.model.num_cycles=0"], ["model.num_cycles=0", "sizes must be >= 1"]),
    ("zero_scanned_glow_steps", ["--config=configs/glow.py", *TINY, "--config.model.scan_steps=True",
                                 "--config.model.steps_per_level=0", "--config.optim.default.warmup_steps=0"],
     ["model.steps_per_level=0", "an array of size 0", "sizes must be >= 1"]),  # no exception, empty arrays
    ("sample_label_of_an_unconditional_model", [*VAE, "--mode=sample", "--config.sample.label=3"],
     ["sample.label=3", "unconditional", "--config.model.conditional=True"]),
    ("mode_coverage_without_modes", [*VAE, "--config.eval.metrics=mode_coverage"], ["mode_coverage"]),
    ("sample_without_checkpoint", [*VAE, "--mode=sample"], ["does not exist", "no checkpoint", "train first"], [],
     "empty"),
    ("eval_without_checkpoint", [*VAE, "--mode=eval"], ["does not exist", "no checkpoint", "train first"], [], "empty"),
    ("data_set_unknown_in_a_new_workdir", [*VAE, "--config.data.name=no_such_set"], ["no_such_set"], [],
     "empty"),  # the workdir this run made is removed again
    ("workdir_locked_by_another_host", [*VAE, "--config.train.steps=6"], ["in use by another run", "host elsewhere"],
     [], "locked"),
    ("tfds_not_prepared", [*VAE, "--config.data.name=mnist", "--config.data.data_dir={tmp}/tfds"], ["mnist"]),
    # A checkpoint of another model: refused, naming the keys (phase 2 passes the config to the Checkpointer).
    ("other_model_train", [*VAE, "--config.model.latent_dim=32"], ["model.latent_dim: 16 -> 32", "--workdir=NEW",
                                                                    "init_from"]),
    ("other_model_sample", [*VAE, "--mode=sample", "--config.model.latent_dim=32"], ["model.latent_dim"]),
    ("other_model_eval", [*VAE, "--mode=eval", "--config.model.latent_dim=32"], ["model.latent_dim"]),
    ("other_family", ["--config=configs/gan.py", *TINY], ["model.family: 'vae' -> 'gan'", "--workdir=NEW",
                                                          "a config of family 'vae' (e.g. --config=configs/vae.py)"]),
    # NaN / inf while training on (only checkpoints/ must stay as they were: metrics may be logged).
    ("nan_loss", [*VAE, "--config.train.steps=8", "--config.optim.model.learning_rate=1e30"],
     ["non-finite", "step", "the last good checkpoint (step 4) is kept"], [], "trains"),
]
CASES = [case + ([], None)[len(case) - 3:] for case in CASES]  # (id, args, fragments, marks, workdir kind)


#: What the forkserver imports before forking each case: jaxgen's registries and everything the
#: command line loads, and this module (its ``_main`` is each case's process).
PRELOAD = ["jaxgen.data", "jaxgen.evaluation", "jaxgen.families", "jaxgen.train", "jaxgen.validate", __name__]


def _main(args: list[str], out_path: str, err_path: str) -> None:
  """``python -m jaxgen.main *args`` in this (forked) process: stdout / stderr to the two files, the
  exit status as Python's (``SystemExit`` code; an uncaught exception prints its traceback, 1)."""
  os.chdir(ROOT)
  for fd, path in ((1, out_path), (2, err_path)):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
  sys.argv = [os.path.join(ROOT, "jaxgen", "main.py"), *args]
  code = 0
  try:
    runpy.run_module("jaxgen.main", run_name="__main__", alter_sys=True)
  except SystemExit as e:
    if isinstance(e.code, int) or e.code is None:
      code = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def _run_main(context, args: list[str], scratch: str) -> subprocess.CompletedProcess:
  """A case's process (``_main``, forked from ``context``'s preloaded server) as a ``CompletedProcess``."""
  out_path, err_path = scratch + ".out", scratch + ".err"
  process = context.Process(target=_main, args=(args, out_path, err_path))
  process.start()
  process.join(timeout=600)
  if process.exitcode is None:
    process.kill()
    process.join()
  with open(out_path) as out, open(err_path) as err:
    return subprocess.CompletedProcess(args, process.exitcode, out.read(), err.read())


def _snapshot(directory: str) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  """Trains one tiny VAE run, then runs every case on its own copy of it, two at a time."""
  base = tmp_path_factory.mktemp("bad_inputs")
  for name, text in CONFIG_FILES.items():
    (base / name).write_text(text)
  trained = str(base / "trained")
  os.makedirs(base / "cases")  # each case's workdir copy and its stdout / stderr
  proc = subprocess.run([sys.executable, "-m", "jaxgen.main", *VAE, f"--workdir={trained}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload(PRELOAD)  # the server starts (and imports these) at the first case

  def run(case):
    name, args, _, _, kind = case
    args = [a.replace("{tmp}", str(base)) for a in args]
    workdir = str(base / "cases" / name)
    if kind != "empty":
      shutil.copytree(trained, workdir)
    if kind == "locked":
      with open(os.path.join(workdir, "lock.json"), "w") as f:
        f.write('{"host": "elsewhere", "pid": 1, "time": 0, "argv": ["python", "-m", "jaxgen.main"]}')
    before = _snapshot(workdir) if os.path.isdir(workdir) else None  # None: no directory (not even an empty one)
    if not any(a.startswith("--workdir") for a in args) and name != "workdir_flag_missing":
      args.append(f"--workdir={workdir}")
    proc = _run_main(context, args, str(base / "cases" / f"{name}.log"))
    after = _snapshot(workdir) if os.path.isdir(workdir) else None
    return name, (proc, before, after)

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    return dict(pool.map(run, CASES))


def test_there_are_at_least_forty_cases():
  assert len({case[0] for case in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("name,fragments,kind", [pytest.param(c[0], c[2], c[4], id=c[0], marks=c[3]) for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(outcomes, name, fragments, kind):
  proc, before, after = outcomes[name]
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("jaxgen: error:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  if kind == "trains":
    before = {k: v for k, v in before.items() if k.startswith("checkpoints")}
    after = {k: v for k, v in after.items() if k.startswith("checkpoints")}
  assert after == before, "the workdir changed"
