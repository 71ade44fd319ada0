"""Command line: ``python -m jaxgen.main --config=configs/gan.py --workdir=runs/gan [--mode=train]``.

Kept short on purpose: parse flags, load and validate the config, choose the number of CPU devices
from it (``--cpu_devices=auto``, ``jaxgen.cpu_devices``; before JAX starts a backend), optionally join
a multi-process run, lock the workdir (train mode), hand (config, workdir) to ``jaxgen.train`` (or, for
``--mode=reference_stats``, to ``jaxgen.evaluation.reference_stats``, which reads no checkpoint). Every
``--config.a.b=value`` argument is taken out of the command line before absl parses the rest and
applied by ``config_defaults.load``, the one override parser (shared with tests, benchmarks and
sweeps). Exit status: 0 done; 1 a user error, printed as one line ``jaxgen: error: ...`` (bad
config, unknown key or data set, unwritable or locked workdir, incompatible checkpoint, a storage
failure writing any file of the run, NaN); 75 preempted (SIGTERM / SIGINT: the step was saved;
rerun to resume); 130 interrupted without a save (a second Ctrl-C).
"""

from __future__ import annotations

import contextlib
import logging as logging_std
import sys

from absl import app, flags, logging

from jaxgen import config_defaults, cpu_devices, preemption, validate, workdir
from jaxgen.errors import Preempted, UserError, fail

_CONFIG = flags.DEFINE_string("config", None, "Path to a config file, e.g. configs/gan.py; override any field "
                              "with --config.a.b=value.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (or gs://bucket/path) for checkpoints, logs and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "reference_stats"],
                          "What to do (reference_stats: FID reference statistics of a data split, "
                          "docs/evaluation.md).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-process runs; see launch/).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (auto on SLURM / TPU VMs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (auto on SLURM / TPU VMs).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (auto on SLURM / TPU VMs).")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto",
    "CPU-only hosts: split the CPU into this many JAX devices (jax_num_cpu_devices; the data-parallel "
    "mesh then runs one stream of ops per device at once; train.batch_size (when training) and eval.batch_size must be divisible by it). "
    "auto (default): one device per core for the families measured faster that way, else one "
    "(jaxgen/cpu_devices.py, docs/trainer.md); 0 = JAX's default, one. Same results up to float "
    "summation order. No effect on GPU/TPU runs.")

_OVERRIDES: list[str] = []  # the --config.a.b=value arguments, in command-line order


def _fail(message: str, status: int = 1, prefix: str = "error") -> None:
  logging.flush()  # the log lines before it, then the one error line
  fail(message, status, prefix)


def _parse(argv: list[str]) -> list[str]:
  """absl flag parsing of everything but the config overrides; errors as one line."""
  try:
    rest, overrides = config_defaults.split_command_line(argv, flags.FLAGS)
  except UserError as e:
    _fail(str(e))
  _OVERRIDES.extend(overrides)
  return rest


class _QuietOrbax(logging_std.Filter):
  """Orbax logs every save step at INFO and its failures with tracebacks at ERROR; the
  checkpointer reports those failures itself as one line, so keep orbax's warnings only (but not
  the one every read-only manager of --mode=sample / eval logs)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    return record.levelno == logging_std.WARNING and not record.getMessage().startswith("Given directory is read only")


def _quiet_unraisable(unraisable) -> None:
  """Orbax's abandoned coroutines of a failed restore would print tracebacks at exit."""
  logging.debug("ignored: %s", unraisable.exc_value)


def _cpu_devices() -> int | None:
  """--cpu_devices as a count (0: JAX's default), or ``None`` for auto; a bad value fails."""
  value = _CPU_DEVICES.value.strip().lower()
  if value == "auto":
    return None
  try:
    count = int(value)
  except ValueError:
    count = -1
  if count < 0:
    _fail(f"--cpu_devices={_CPU_DEVICES.value} is not a device count: give auto or a count >= 1 (0 = JAX's default)")
  return count


def _device_count(requested: int | None, config) -> int | None:
  """The jax_num_cpu_devices to set (``None``/0: leave JAX's default): ``requested``, or for auto the
  rule of ``jaxgen.cpu_devices``, logged in one line."""
  if requested is not None:
    return requested
  choice = cpu_devices.choose_here(config, _DISTRIBUTED.value)
  logging.info("--cpu_devices=auto: %s (%s)", "JAX's default" if choice.devices is None else
               f"{choice.devices} CPU device(s)", choice.reason)
  return choice.devices


def _run(config, root, devices: int | None) -> None:
  import jax  # imported after flag parsing (slow), configured before any backend starts

  if devices:
    jax.config.update("jax_num_cpu_devices", devices)
  if _DISTRIBUTED.value:
    try:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except (ValueError, RuntimeError) as e:  # missing or inconsistent flags, no coordinator
      raise UserError(f"--distributed: {' '.join(str(e).split())}; give --coordinator_address=HOST:PORT, "
                      "--num_processes=N and --process_id=0..N-1 (or run under SLURM / launch/)") from None
  from jaxgen import train  # importing the data sets is slow too

  mode = _MODE.value
  with workdir.RunLock(root) if mode == "train" else contextlib.nullcontext():
    if mode == "train":
      train.train_and_evaluate(config, str(root))
    elif mode == "sample":
      train.sample(config, str(root))
    elif mode == "reference_stats":
      from jaxgen.evaluation import reference_stats  # pylint: disable=import-outside-toplevel

      print(f"wrote {reference_stats.compute(config, str(root))}")
    else:
      train.evaluate(config, str(root))


def main(argv: list[str]) -> None:
  del argv
  preemption.stop_with_parent()  # a sweep's point stops with its sweep
  logging.get_absl_logger().addFilter(_QuietOrbax())
  logging_std.getLogger("asyncio").setLevel(logging_std.CRITICAL)
  sys.unraisablehook = _quiet_unraisable
  if not _CONFIG.value:
    _fail("--config is required, e.g. --config=configs/gan.py")
  if not _WORKDIR.value:
    _fail("--workdir is required, e.g. --workdir=runs/gan")
  requested = _cpu_devices()
  created = None  # the workdir, when this run made it
  try:
    config = config_defaults.load(_CONFIG.value, _OVERRIDES)
    root = workdir.path(_WORKDIR.value)
    validate.validate(config, root)
    if _MODE.value in ("sample", "eval") and not root.exists():  # a mistyped path: no empty directory left
      raise UserError(f"--workdir={root} does not exist, so it holds no checkpoint to {_MODE.value} from: train "
                      "first with --mode=train and the same --workdir, or fix the path")
    created = None if root.exists() else root
    workdir.prepare(root)
    _run(config, root, _device_count(requested, config))
  except UserError as e:
    if created is not None:  # refused at setup (an unknown data set): no empty workdir left behind
      workdir.remove_if_empty(created)
    _fail(str(e))
  except Preempted as e:
    _fail(str(e), Preempted.EXIT_CODE, "preempted")
  except OSError as e:  # metrics, samples, eval files (the checkpointer reports its own failures)
    cause = workdir.storage_cause(e)
    if cause is None:
      raise
    _fail(f"cannot write {e.filename or _WORKDIR.value}: {cause}; the checkpoints saved so far are intact. "
          "Free space or fix the storage, then rerun the same command to resume")
  except KeyboardInterrupt:
    _fail("stopped before the current step was saved; rerun the same command to resume from the last "
          "checkpoint", 130, "interrupted")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
