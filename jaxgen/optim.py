"""Per-network optax optimizers built from ``config.optim.<network>`` (see ``config_defaults.optimizer``)."""

from __future__ import annotations

import jax
import ml_collections
import optax

from jaxgen.errors import UserError


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: constant | cosine | warmup_cosine | linear (decay to end_learning_rate)."""
  lr, end = cfg.learning_rate, cfg.end_learning_rate
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=end / lr if lr else 0.0)
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1), end)
  if cfg.schedule == "linear":
    return optax.linear_schedule(lr, end, max(total_steps, 1))
  raise UserError(f"unknown optim schedule {cfg.schedule!r}; use constant, cosine, warmup_cosine or linear")


def optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """One network's optimizer, with optional global-norm gradient clipping in front."""
  lr = schedule(cfg, total_steps)
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
    raise UserError(f"unknown optimizer {cfg.name!r}; use adam, adamw, sgd or rmsprop")
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx


def optimizers(config: ml_collections.ConfigDict, networks: tuple[str, ...]) -> dict[str, optax.GradientTransformation]:
  """``{network: optimizer}`` from ``config.optim.<network>``, else ``config.optim.default``."""
  return {net: optimizer(config.optim.get(net, config.optim.default), config.train.steps) for net in networks}
