"""Command line: ``python -m jaxgen.main --config=configs/gan.py --workdir=runs/gan [--mode=train]``.

Kept short on purpose: parse flags, optionally join a multi-process run, hand (config, workdir) to
``jaxgen.train``. Any ``--config.a.b=value`` overrides a config field. User errors (unknown config
key, unknown data set, bad batch size, unwritable workdir, missing config file, NaN loss) print one
line ``jaxgen: error: ...`` and exit with status 1.
"""

from __future__ import annotations

import logging as logging_std
import os
import runpy
import sys

import ml_collections

from absl import app, flags, logging
from ml_collections import config_flags

from jaxgen.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/gan.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-process runs; see launch/).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (auto on SLURM / TPU VMs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (auto on SLURM / TPU VMs).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (auto on SLURM / TPU VMs).")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0,
    "Split the host CPU into this many JAX devices (jax_num_cpu_devices; 0 = JAX's default, one). The "
    "data-parallel mesh then runs one stream of ops per device at once: for small models on an N-core "
    "CPU, N devices are usually faster than one. Same results up to float summation order; "
    "train.batch_size must be divisible by it. No effect on GPU/TPU runs.")


def _fail(message: str) -> None:
  print(f"jaxgen: error: {message}", file=sys.stderr)
  sys.exit(1)


def _unknown_override(argv: list[str]) -> str:
  """The first ``--config.a.b`` override that names no field of the config file (for the message)."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:
    config = runpy.run_path(path)["get_config"]()
  except Exception:  # the file itself is broken: let the generic message stand
    return "?"
  for arg in argv:
    if arg.startswith("--config."):
      key = arg.split("=", 1)[0][len("--config."):]
      node = config
      for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
          return key
        node = node[part]
  return "?"


def _parse(argv: list[str]) -> list[str]:
  """absl flag parsing, with config errors turned into one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # ml_collections: an override names a field that does not exist
    hint = " ".join(str(e).replace("\\n", " ").split()).strip("'\"")
    _fail(f"unknown config key {_unknown_override(argv)!r} ({hint}); see the config file for the available fields")


class _QuietOrbax(logging_std.Filter):
  """Orbax logs every save step at INFO; keep its warnings and errors only."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv: list[str]) -> None:
  del argv
  logging.get_absl_logger().addFilter(_QuietOrbax())
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/gan.py")
  if not isinstance(config, ml_collections.ConfigDict):  # config_flags defers file errors to first use
    path = flags.FLAGS["config"].config_filename.split(":")[0]
    if not os.path.exists(path):
      _fail(f"config file {path!r} not found (paths are relative to {os.getcwd()}); e.g. --config=configs/gan.py")
    error = getattr(config, "_error", None)
    cause = getattr(error, "__cause__", None) or error
    _fail(f"cannot load --config={flags.FLAGS['config'].config_filename}: {' '.join(str(cause).split())}")
  if not _WORKDIR.value:
    _fail("--workdir is required, e.g. --workdir=runs/gan")
  if _CPU_DEVICES.value < 0:
    _fail(f"--cpu_devices={_CPU_DEVICES.value} is negative: give a device count >= 1 (0 = JAX's default)")
  import jax  # imported after flag parsing (slow), configured before any backend starts

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from jaxgen import train  # importing the data sets is slow too

  try:
    if _MODE.value == "train":
      train.train_and_evaluate(config, _WORKDIR.value)
    elif _MODE.value == "sample":
      train.sample(config, _WORKDIR.value)
    else:
      train.evaluate(config, _WORKDIR.value)
  except UserError as e:
    logging.flush()
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
