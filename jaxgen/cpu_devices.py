"""The automatic ``--cpu_devices`` choice: into how many JAX devices to split a CPU-only host.

On a CPU, one JAX device runs a step's ops one after another, each op spread over the cores by
XLA's thread pool; the small ops of small models leave most cores idle. ``N`` devices (the
trainer's ``data`` mesh, batch sharded, state replicated) run ``N`` slices of the batch at once,
one stream of ops per device, and add an all-reduce of the gradients (and of any batch statistics)
per step. Whether that wins depends on the model: measured per family with
experiments/benchmarks/cpu_devices.py, table in docs/trainer.md, "Automatic CPU device choice".

Rule (``choose``), in order:
1. the backend is not the CPU (``JAX_PLATFORMS`` names another platform first, or, unset, an
   accelerator plugin of JAX is installed: ``jax_plugins`` entry points or namespace modules,
   ``libtpu``) -> leave JAX alone;
2. ``XLA_FLAGS`` sets ``--xla_force_host_platform_device_count``, ``jax_num_cpu_devices`` is set
   (``JAX_NUM_CPU_DEVICES``), or the run is multi-process (``--distributed``) -> leave JAX alone
   (the user chose);
3. the family is not in ``SPLIT_FAMILIES``, or its ``model.network`` is in ``ONE_DEVICE_NETWORKS``
   (measured not to gain) -> one device;
4. else ``N`` = the largest count ``<= min(cores, MAX_DEVICES)`` that divides ``train.batch_size /
   train.grad_accum_steps`` and ``eval.batch_size`` (cores: ``os.sched_getaffinity``, the cores
   this process may run on, so a pinned sweep point counts its own); ``N = 1`` -> one device.
Results equal the one-device run up to float summation order (the gradient all-reduce).
Nothing here starts a JAX backend: ``jax_num_cpu_devices`` can only be set before one starts.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import pkgutil

import ml_collections

#: Families whose default config trains faster on 2 CPU devices than on 1 (2-core host; table in
#: docs/trainer.md): long chains of small ops (attention and MLP blocks of the char transformer,
#: WaveNet's dilated convolutions over 512 samples, the DDPM U-Net's GroupNorm blocks). The others
#: lose: BatchNorm adds a cross-device reduction per layer (GAN), a millisecond step is dominated
#: by the all-reduce (MLP VAE), or one device's ops already fill the cores (PixelCNN, RealNVP).
SPLIT_FAMILIES = frozenset({"transformer", "wavenet", "ddpm"})
#: ``model.network`` values that keep one device even in those families: the MLP denoiser of 2-D
#: points (``configs/ddpm_toy2d.py``: 10.9 ms on 1 device, 16.1 ms on 2).
ONE_DEVICE_NETWORKS = frozenset({"mlp"})
#: No more devices than this: measured on 2 cores only; past a few cores one device's thread pool
#: already parallelises the ops of a step.
MAX_DEVICES = 8
#: The XLA flag that fixes the host device count (tests, users): its presence means "do not choose".
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@dataclasses.dataclass(frozen=True)
class Choice:
  """``devices``: the ``jax_num_cpu_devices`` to set, ``None`` = leave JAX's default; ``reason``: why."""

  devices: int | None
  reason: str


def accelerator_plugins() -> list[str]:
  """JAX's accelerator plugins installed here (as JAX discovers them), without starting a backend."""
  names = [entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")]
  namespace = importlib.util.find_spec("jax_plugins")
  if namespace is not None and namespace.submodule_search_locations:
    names += [module.name for module in pkgutil.iter_modules(namespace.submodule_search_locations)]
  if importlib.util.find_spec("libtpu") is not None:
    names.append("libtpu")
  return sorted(set(names))


def choose(config: ml_collections.ConfigDict, *, cores: int, platforms: str = "", plugins: tuple[str, ...] = (),
           xla_flags: str = "", num_cpu_devices: int = -1, distributed: bool = False) -> Choice:
  """The rule of the module docstring. ``platforms``: ``jax_platforms`` (comma-separated, "" =
  JAX picks); ``plugins``: ``accelerator_plugins()``; ``num_cpu_devices``: ``jax_num_cpu_devices``
  as set before (``JAX_NUM_CPU_DEVICES``; -1 = unset)."""
  first = platforms.split(",")[0].strip()
  if first and first != "cpu":
    return Choice(None, f"JAX_PLATFORMS={platforms}: not a CPU run")
  if not first and plugins:
    return Choice(None, f"accelerator plugin installed ({', '.join(plugins)}): JAX picks the backend")
  if DEVICE_COUNT_FLAG in xla_flags:
    return Choice(None, f"XLA_FLAGS sets {DEVICE_COUNT_FLAG}")
  if num_cpu_devices >= 0:
    return Choice(None, f"JAX_NUM_CPU_DEVICES={num_cpu_devices} is set")
  if distributed:
    return Choice(None, "multi-process run: one device per process")
  family, network = config.model.family, config.model.get("network", "")
  if family not in SPLIT_FAMILIES:
    return Choice(1, f"family {family} is not faster on several CPU devices")
  if network in ONE_DEVICE_NETWORKS:
    return Choice(1, f"family {family} with model.network={network} is not faster on several CPU devices")
  if min(cores, MAX_DEVICES) == 1:
    return Choice(1, "1 core: one device")
  micro = config.train.batch_size // max(1, config.train.grad_accum_steps)
  n = next(d for d in range(min(cores, MAX_DEVICES), 0, -1)
           if micro % d == 0 and config.eval.batch_size % d == 0)
  if n == 1:
    return Choice(1, f"{cores} core(s); no count in 2..{min(cores, MAX_DEVICES)} divides train.batch_size="
                     f"{config.train.batch_size} (per accumulation step) and eval.batch_size={config.eval.batch_size}")
  return Choice(n, f"family {family} on {cores} cores: one device per core, batch {config.train.batch_size} "
                   f"split {n} ways")


def choose_here(config: ml_collections.ConfigDict, distributed: bool = False) -> Choice:
  """``choose`` with this process's cores, ``jax_platforms``, plugins, ``XLA_FLAGS`` and
  ``jax_num_cpu_devices``."""
  import jax  # pylint: disable=import-outside-toplevel  (reading a config value starts no backend)

  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  return choose(config, cores=cores, platforms=jax.config.jax_platforms or "", plugins=tuple(accelerator_plugins()),
                xla_flags=os.environ.get("XLA_FLAGS", ""), num_cpu_devices=jax.config.jax_num_cpu_devices,
                distributed=distributed)
