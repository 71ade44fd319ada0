"""Runs from the command line that meet other runs, signals and storage faults: the workdir lock,
SIGTERM, a file system that fills up mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest

from conftest import ROOT, tiny_config
from jaxgen import train, workdir

ARGS = ["--config=configs/gan.py", "--config.train.batch_size=16", "--config.train.progress_bar=False",
        "--config.sample.num=16", "--config.eval.batch_size=32", "--config.eval.num_batches=2",
        "--config.eval.num_samples=64", "--config.eval.metrics=heldout", "--config.train.log_every=1"]


def _start(workdir_path, *extra):
  return subprocess.Popen([sys.executable, "-m", "jaxgen.main", f"--workdir={workdir_path}", *ARGS, *extra],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=180):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not predicate():
    time.sleep(0.05)
  return predicate()


def _rows(workdir_path):
  path = os.path.join(workdir_path, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path):
  run = str(tmp_path / "run")
  first = _start(run, "--config.train.steps=100000")
  try:
    assert _wait_for(lambda: os.path.exists(os.path.join(run, workdir.LOCK_NAME)), first), first.communicate()
    second = subprocess.run([sys.executable, "-m", "jaxgen.main", f"--workdir={run}", *ARGS,
                             "--config.train.steps=4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1, second.stderr
    lines = [l for l in second.stderr.splitlines() if l.startswith("jaxgen: error:")]
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert "in use by another run" in lines[0] and f"pid {first.pid}" in lines[0]
    assert first.poll() is None, "the first run was disturbed"
  finally:
    first.kill()
    first.communicate()
  # Killed with SIGKILL, the first run leaves its lock behind; the next run on this host takes it over.
  with workdir.Lock(workdir.path(run)):
    pass


def test_sigterm_saves_the_step_exits_75_and_resumes_bit_for_bit(tmp_path):
  steps = 30
  run = str(tmp_path / "run")
  proc = _start(run, f"--config.train.steps={steps}", "--config.train.checkpoint_every=1000")
  assert _wait_for(lambda: len(_rows(run)) >= 3, proc), proc.communicate()
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 75, stderr[-2000:]
  lines = [l for l in stderr.splitlines() if l.startswith("jaxgen: preempted:")]
  assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in stderr, stderr[-2000:]
  saved = sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
  assert len(saved) == 1 and 3 <= saved[0] < steps, saved  # the stop step, not a periodic one
  assert f"step {saved[0]}" in lines[0]
  overrides = {"train.steps": steps, "train.checkpoint_every": 1000, "train.log_every": 1, "eval.metrics": ("heldout",)}
  resumed = train.train_and_evaluate(tiny_config("gan", **overrides), run)
  reference = train.train_and_evaluate(tiny_config("gan", **overrides), str(tmp_path / "reference"))
  chex.assert_trees_all_equal(jax.device_get(reference), jax.device_get(resumed))
  assert [r["step"] for r in _rows(run) if "train/disc/loss" in r] == list(range(1, steps + 1))  # one row per step


@pytest.mark.parametrize("checkpoint_every,fails", [(2, r"cannot save checkpoint step \d+ in .*/run/checkpoints"),
                                                    (0, "cannot write .*/run/(metrics.jsonl|tensorboard)")])
def test_disk_full_mid_run_is_one_line_quickly_and_the_last_checkpoint_restores(tmp_path, mount_point,
                                                                                checkpoint_every, fails):
  """The workdir's file system fills up while the run trains: whichever write fails first (a
  checkpoint; with checkpoints only at the end, the metrics) ends the run with one line and status 1
  within seconds, and the last checkpoint saved before restores."""
  subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], check=True)
  run = str(mount_point / "run")
  proc = _start(run, "--config.train.steps=100000", f"--config.train.checkpoint_every={checkpoint_every}")
  try:
    started = os.path.join(run, "checkpoints", "4") if checkpoint_every else None
    assert _wait_for(lambda: os.path.isdir(started) if started else len(_rows(run)) >= 3, proc), proc.communicate()
    with open(mount_point / "filler", "wb", buffering=0) as f:  # take every free byte
      try:
        while f.write(b"\0" * (1 << 16)):
          pass
      except OSError:
        pass
    filled = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    seconds = time.monotonic() - filled
  finally:
    proc.kill()
  assert proc.returncode == 1, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith("jaxgen: error:")]
  assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
  assert "no space left on device" in lines[0] and re.search(fails, lines[0]), lines[0]
  assert seconds < 30, seconds
  if checkpoint_every:
    os.remove(mount_point / "filler")
    saved = max(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
    config = tiny_config("gan", **{"eval.metrics": ("heldout",)})
    restored = train.restore_for_inference(train.setup(config, run))
    assert int(restored.step) == saved >= 4


AGREEMENT_SCRIPT = r"""
import os, signal, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
from jaxgen import preemption
with preemption.StopSignal() as stop:
  for step in range(1, 12):
    if jax.process_index() == 1 and step == 4:
      os.kill(os.getpid(), signal.SIGTERM)  # only process 1 is signalled, between steps 4 and 5
    if stop.should_stop(step):
      print(f"stop at {step} ({stop.reason})", flush=True)
      break
  else:
    print("never stopped", flush=True)
"""


def test_two_processes_agree_on_the_stop_step_when_only_one_is_signalled():
  """The real all-process reduction of two jax.distributed CPU processes: one SIGTERM, one step."""
  port = str(20000 + os.getpid() % 20000)
  procs = [subprocess.Popen([sys.executable, "-c", AGREEMENT_SCRIPT, port, str(i)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  # Process 1 raised its flag at step 4; it is read one call later, by both processes alike.
  said = [[line for line in out.splitlines() if line.startswith(("stop at", "never"))] for out, _ in outs]
  assert said == [["stop at 5 (a stop signal on another process)"], ["stop at 5 (SIGTERM)"]]


def test_a_point_gets_sigterm_when_its_sweep_is_killed(tmp_path):
  # The "sweep" starts a child as the local runner does (JAXGEN_SWEEP_PID = its pid), then is killed
  # with SIGKILL: the kernel sends the child SIGTERM (prctl PR_SET_PDEATHSIG), which the trainer
  # turns into "save the step and exit 75". Without the request the child would sleep on, orphaned.
  flag = tmp_path / "got_sigterm"
  child = ("import os, signal, sys, time\n"
           "from jaxgen import preemption\n"
           "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('1'), os._exit(75)))\n"
           "preemption.stop_with_parent()\n"
           "open(sys.argv[1] + '.ready', 'w').write('1')\n"
           "time.sleep(60)\n")
  parent = ("import os, subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]],"
            " env={**os.environ, 'JAXGEN_SWEEP_PID': str(os.getpid())})\n"
            "time.sleep(60)\n")
  proc = subprocess.Popen([sys.executable, "-c", parent, child, str(flag)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
  deadline = time.time() + 50
  while not os.path.exists(f"{flag}.ready"):
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  assert not flag.exists()
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  while not flag.exists():
    assert time.time() < deadline, "the orphaned child never got SIGTERM"
    time.sleep(0.05)
