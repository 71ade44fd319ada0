"""The whole config checked before anything is built or trained: no error only after a long run.

``validate(config, workdir)`` reads only the config, the registries (families, evaluators) and
whether the workdir holds checkpoints (``train.init_from``), so it runs in milliseconds, before any data is read or device used. It returns nothing and raises one ``UserError`` naming the
field, its value and the fix. Checks that need the data (an evaluator's preconditions, the batch
size against the devices, a family's own options such as ``model.loss``) run at setup, before the
first step, where the data spec and the family exist (``evaluation.prepare``, ``parallel``,
``Family.__init__``).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from etils import epath

from jaxgen import optim, parallel
from jaxgen.errors import UserError

COMPUTE_DTYPES = ("float32", "bfloat16")  # train.compute_dtype


def _get(config: ml_collections.ConfigDict, key: str, default: Any = None) -> Any:
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return default
    node = node[part]
  return node


def _need(ok: bool, key: str, value: Any, problem: str, fix: str) -> None:
  if not ok:
    raise UserError(f"{key}={value!r} {problem}; {fix}")


def _at_least(config: ml_collections.ConfigDict, key: str, low: float, example: Any) -> None:
  value = _get(config, key)
  if value is not None:
    _need(value >= low, key, value, f"must be >= {low}", f"set e.g. --config.{key}={example}")


def _has_steps(workdir: str | os.PathLike | None) -> bool:
  """Whether ``<workdir>/checkpoints`` holds a step directory (local or remote)."""
  if workdir is None:
    return False
  steps = epath.Path(workdir) / "checkpoints"
  return steps.is_dir() and any(p.name.isdigit() for p in steps.iterdir())


def _train(config: ml_collections.ConfigDict, workdir: str | os.PathLike | None) -> None:
  _at_least(config, "train.steps", 1, 1000)
  _at_least(config, "train.batch_size", 1, 64)
  _at_least(config, "train.keep_checkpoints", 1, 3)
  for key in ("checkpoint_every", "log_every"):
    _at_least(config, f"train.{key}", 0, 0)
  decay = _get(config, "train.ema_decay")
  if decay is not None:
    _need(0 <= decay < 1, "train.ema_decay", decay, "must be in [0, 1) (0 disables EMA)",
          "set e.g. --config.train.ema_decay=0.999")
  _accelerators(config)
  init_from = _get(config, "train.init_from", "")
  if init_from and "://" not in init_from and not _has_steps(workdir):
    _need(os.path.exists(init_from), "train.init_from", init_from, "does not exist",
          "give the workdir of a trained run or one of its checkpoints/<step> directories")


def _accelerators(config: ml_collections.ConfigDict) -> None:
  """``train.compute_dtype``, ``train.grad_accum_steps`` and ``train.param_sharding``."""
  from jaxgen.families import FAMILIES  # pylint: disable=import-outside-toplevel

  dtype = _get(config, "train.compute_dtype", "float32")
  _need(dtype in COMPUTE_DTYPES, "train.compute_dtype", dtype, "is not a compute dtype",
        f"use one of {', '.join(COMPUTE_DTYPES)}")
  family = _get(config, "model.family", "")
  if dtype != "float32" and family in FAMILIES and not FAMILIES.get(family).mixed_precision:
    supported = ", ".join(n for n in FAMILIES.names() if FAMILIES.get(n).mixed_precision)
    raise UserError(f"train.compute_dtype={dtype!r}: family {family!r} computes in float32 only; "
                    f"use --config.train.compute_dtype=float32 (mixed precision: {supported})")
  _at_least(config, "train.grad_accum_steps", 1, 1)
  k, batch = _get(config, "train.grad_accum_steps", 1), _get(config, "train.batch_size", 1)
  _need(batch % k == 0, "train.grad_accum_steps", k, f"must divide train.batch_size={batch}",
        "set --config.train.batch_size to a multiple of it")
  sharding = _get(config, "train.param_sharding", "replicated")
  _need(sharding in parallel.PARAM_SHARDINGS, "train.param_sharding", sharding, "is not a sharding rule",
        f"use one of {', '.join(parallel.PARAM_SHARDINGS)}")


def _optim(config: ml_collections.ConfigDict) -> None:
  from jaxgen.families import FAMILIES  # pylint: disable=import-outside-toplevel

  family = _get(config, "model.family", "")
  trained = FAMILIES.get(family).networks if family in FAMILIES else ()
  used = {net: net if net in config.optim else "default" for net in trained}
  for name, cfg in config.optim.items():
    key = f"optim.{name}"
    _need(cfg.name in optim.OPTIMIZERS, f"{key}.name", cfg.name, "is not an optimizer",
          f"use one of {', '.join(optim.OPTIMIZERS)}")
    _need(cfg.schedule in optim.SCHEDULES, f"{key}.schedule", cfg.schedule, "is not a schedule",
          f"use one of {', '.join(optim.SCHEDULES)}")
    nets = [net for net, group in used.items() if group == name]
    if nets:
      _need(cfg.learning_rate > 0, f"{key}.learning_rate", cfg.learning_rate,
            f"must be > 0 (it trains {', '.join(nets)})", f"set e.g. --config.{key}.learning_rate=1e-3")
    else:
      _at_least(config, f"{key}.learning_rate", 0, 1e-3)
    for field in ("end_learning_rate", "warmup_steps", "grad_clip_norm", "weight_decay", "momentum", "decay_steps"):
      _at_least(config, f"{key}.{field}", 0, 0)
    for field in ("b1", "b2"):
      value = _get(config, f"{key}.{field}")
      if value is not None:
        _need(0 <= value < 1, f"{key}.{field}", value, "must be in [0, 1)", f"set e.g. --config.{key}.{field}=0.9")
    _need(cfg.get("eps", 1.0) > 0, f"{key}.eps", cfg.get("eps"), "must be > 0", f"set e.g. --config.{key}.eps=1e-8")
  warmup_within_horizon(config)


def warmup_within_horizon(config: ml_collections.ConfigDict, resumed: bool = False) -> None:
  """Every ``warmup_cosine`` group's ``warmup_steps`` below its horizon. ``resumed``: the horizons
  were taken from the checkpoint this run resumes (``optim.resolve_decay_steps``): checked again at
  setup."""
  for name, cfg in config.optim.items():
    if cfg.schedule == "warmup_cosine":
      key, horizon = f"optim.{name}", optim.horizon(cfg, config)
      where = "the horizon saved with the checkpoint this workdir resumes" if resumed else "the schedule horizon"
      _need(cfg.warmup_steps < horizon, f"{key}.warmup_steps", cfg.warmup_steps,
            f"must be below {where} ({horizon} steps)",
            f"lower it or raise --config.{key}.decay_steps" + ("" if resumed else " / --config.train.steps"))


def _sample_and_eval(config: ml_collections.ConfigDict) -> None:
  _at_least(config, "sample.num", 1, 64)
  temperature = _get(config, "sample.temperature")
  if temperature is not None:
    _need(temperature >= 0, "sample.temperature", temperature, "must be >= 0 (0: greedy, the mode)",
          "set e.g. --config.sample.temperature=1.0")
  _at_least(config, "eval.batch_size", 1, 256)
  _at_least(config, "eval.num_batches", 0, 0)
  _at_least(config, "eval.num_samples", 1, 1000)
  metrics = _get(config, "eval.metrics", ())
  for name, group in (_get(config, "eval") or {}).items():
    if isinstance(group, ml_collections.ConfigDict) and "every" in group:
      _at_least(config, f"eval.{name}.every", 0, 0)
  try:
    from jaxgen.evaluation import EVALUATORS  # pylint: disable=import-outside-toplevel
    from jaxgen.evaluation.features import SPACES  # pylint: disable=import-outside-toplevel
  except ImportError:  # an older jaxgen.evaluation without the registry
    EVALUATORS, SPACES = None, None
  features = _get(config, "eval.features")
  if SPACES is not None and features is not None:
    _need(features in SPACES, "eval.features", features, "is not a feature space", f"use one of {', '.join(SPACES)}")
  unknown = [name for name in metrics if EVALUATORS is not None and name not in EVALUATORS]
  if unknown:
    raise UserError(f"eval.metrics names {EVALUATORS.unknown(unknown[0])}")
  weights = _get(config, "eval.inception_weights", "")
  if weights and "://" not in weights and _get(config, "eval.features") == "inception":
    _need(os.path.isfile(weights), "eval.inception_weights", weights, "is not a file",
          "give the FID Inception weights (.pth or converted .npz) or --config.eval.inception_weights=''")


def validate(config: ml_collections.ConfigDict, workdir: str | os.PathLike | None = None) -> None:
  """Raises ``UserError`` for the first field that cannot work; see the module docstring.

  ``workdir``: the run's (None: a new run). ``train.init_from`` must exist only for a run without
  checkpoints of its own: one with them resumes and never reads it (its source may be gone)."""
  from jaxgen.families import FAMILIES  # pylint: disable=import-outside-toplevel

  family = FAMILIES.get(_get(config, "model.family", ""))  # UserError listing the families
  missing = sorted(set(family.defaults().get("model", {})) - set(config.model))
  if missing:
    raise UserError(f"model.family={config.model.family!r}, but config.model lacks its fields "
                    f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): another family's "
                    f"config cannot switch family; start from a config of {config.model.family!r} "
                    f"(configs/*.py) or config_defaults.base({config.model.family!r})")
  data = _get(config, "data.name", "")
  _need(isinstance(data, str) and bool(data.strip()), "data.name", data, "is empty",
        "name a data set, e.g. --config.data.name=digits")
  _train(config, workdir)
  _optim(config)
  _sample_and_eval(config)
