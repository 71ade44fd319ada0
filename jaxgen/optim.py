"""Per-network optax optimizers built from ``config.optim.<network>`` (see ``config_defaults.optimizer``).

Decaying schedules run over an explicit horizon, ``optim.<network>.decay_steps``: 0 means "the
``train.steps`` of the run that started the workdir". ``resolve_decay_steps`` replaces 0 by that
number before the optimizers are built, taking it from the config saved with the latest checkpoint
when there is one, so a run extended with a larger ``train.steps`` continues the same schedule
(the step-``k`` learning rate is that of the first run for every ``k``), and equals an uninterrupted
run with the same ``decay_steps``. Past the horizon a decaying schedule stays at its final value.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import optax

from jaxgen import param_constraints
from jaxgen.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: constant | cosine | warmup_cosine | linear, decaying to
  ``end_learning_rate`` over ``total_steps`` (the horizon) and constant after it."""
  lr, end = cfg.learning_rate, cfg.end_learning_rate
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=end / lr if lr else 0.0)
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1), end)
  if cfg.schedule == "linear":
    return optax.linear_schedule(lr, end, max(total_steps, 1))
  raise UserError(f"unknown optim schedule {cfg.schedule!r}; use one of {', '.join(SCHEDULES)}")


def optimizer(cfg: ml_collections.ConfigDict, total_steps: int, repeats: int = 1) -> optax.GradientTransformation:
  """One network's optimizer, with optional global-norm gradient clipping in front and parameter
  clipping (``clip_params``) after it.

  ``repeats``: updates of this network per training step (a WGAN critic: ``n_critic``). The
  optimizer counts updates, so the schedule is read at ``count // repeats``: horizons and warm-up
  stay in training steps whatever the number of repeats."""
  per_step = schedule(cfg, total_steps)
  lr = per_step if repeats == 1 else (lambda count: per_step(count // repeats))
  if cfg.name == "adam":
    tx = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    # Decay matrices and kernels only, not biases, norms' scales or other vectors (as GPT-2 / nanoGPT).
    tx = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                     mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
  elif cfg.name == "sgd":
    tx = optax.sgd(lr, momentum=cfg.momentum or None)
  elif cfg.name == "rmsprop":
    tx = optax.rmsprop(lr, momentum=cfg.momentum, eps=cfg.eps)
  else:
    raise UserError(f"unknown optimizer {cfg.name!r}; use one of {', '.join(OPTIMIZERS)}")
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  if cfg.clip_params > 0:  # WGAN weight clipping: every parameter kept in [-c, c] after the update
    tx = optax.chain(tx, param_constraints.clip_params(cfg.clip_params))
  return tx


def horizon(cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> int:
  """The schedule horizon of one optimizer group: ``decay_steps``, else (0) ``train.steps``."""
  return int(cfg.get("decay_steps", 0) or config.train.steps)


def resolve_decay_steps(config: ml_collections.ConfigDict, saved: Mapping[str, Any] | None) -> None:
  """Sets every ``config.optim.<group>.decay_steps`` that is 0 (in place).

  ``saved``: the config (a plain dict) stored with the checkpoint this run resumes, or None for a
  fresh run. A group takes the saved run's horizon (its ``decay_steps``, else its ``train.steps``),
  so extending a run keeps its schedule; a fresh run takes ``config.train.steps``.
  """
  saved_optim = (saved or {}).get("optim", {})
  saved_steps = (saved or {}).get("train", {}).get("steps")
  with config.unlocked():
    for name, cfg in config.optim.items():
      if cfg.get("decay_steps", 0) > 0:
        continue
      before = (saved_optim.get(name, {}).get("decay_steps") or saved_steps) if saved is not None else None
      cfg.decay_steps = int(before or config.train.steps)


def optimizers(config: ml_collections.ConfigDict, networks: tuple[str, ...],
               repeats: Mapping[str, int] | None = None) -> dict[str, optax.GradientTransformation]:
  """``{network: optimizer}`` from ``config.optim.<network>``, else ``config.optim.default``, each
  scheduled over its ``horizon`` in training steps; ``repeats``: updates per step of each network
  (default 1)."""
  groups = {net: config.optim.get(net, config.optim.default) for net in networks}
  repeats = repeats or {}
  return {net: optimizer(cfg, horizon(cfg, config), repeats.get(net, 1)) for net, cfg in groups.items()}
