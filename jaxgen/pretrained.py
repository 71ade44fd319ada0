"""Trained runs as building blocks: a family and its EMA parameters restored from a workdir, and
the training split encoded once by a frozen encoder.

Latent diffusion loads its autoencoder this way, reflow its teacher flow, the VQ-VAE prior its
VQ-VAE. The newest complete checkpoint of ``<workdir>/checkpoints`` (logged, with how to pin it),
or the one a ``<workdir>/checkpoints/<step>`` path names (pinned: the second stage keeps it while
the first trains on, so its resume stays exact), is read with :class:`jaxgen.checkpoint.Checkpointer`,
read-only (the trained run's files never change), its arrays checked against their stored digests;
the family is rebuilt for the caller's data from the config saved with that checkpoint (or the
run's ``config.json``), over today's defaults of its family (fields added since keep their
defaults).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from jaxgen import checkpoint as checkpoint_lib
from jaxgen import config_defaults
from jaxgen import data as data_lib
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families.base import Family, build

#: ``config.data`` fields that must agree between a trained run and the run that builds on it.
DATA_FIELDS = ("name", "scale", "dequantize", "binarize")


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A trained run: its config, the family built from it, the EMA params / state of its newest
  checkpoint (``{network: pytree}``, ``{network: {collection: pytree}}``) and that step."""

  config: ml_collections.ConfigDict
  family: Family
  params: Any
  state: Any
  step: int


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs use; dicts recursively."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _config(saved: dict, where: str) -> ml_collections.ConfigDict:
  saved = _tuples(saved)
  config = config_defaults.base(saved.get("model", {}).get("family", ""))
  try:
    config_defaults.merge(config, saved)
  except (TypeError, ValueError) as e:
    raise UserError(f"the config saved in {where} does not fit today's config fields ({e}); "
                    "retrain that run") from None
  return config


def load(workdir: str, spec: DataSpec, data_config: ml_collections.ConfigDict, knob: str,
         family: str | tuple[str, ...] = ()) -> Pretrained:
  """The run in ``workdir``, built for ``spec``; ``knob`` names the config field that pointed here
  (for the messages). ``UserError`` when the run is missing or untrained, of another family than
  ``family`` (when given), or trained on other data than ``data_config`` describes."""
  if not workdir:
    raise UserError(f"{knob} is empty; set --config.{knob}=WORKDIR of a trained run")
  run, step, pinned = checkpoint_lib.step_dir(workdir, knob)
  ckpt = checkpoint_lib.Checkpointer(run, config=None, read_only=True)
  try:
    if not pinned:
      logging.info("%s: step %d of %s, its newest; pin it with --config.%s=%s to keep using this "
                   "step when that run trains on", knob, step, run, knob, ckpt.directory / str(step))
    elif ckpt.meta(step) is None:
      raise UserError(f"{knob}={workdir!r} is not a complete checkpoint (steps there: "
                      f"{', '.join(map(str, sorted(ckpt.steps()))) or 'none'}); give one of them or the workdir")
    saved, where = ckpt.meta(step).get("config"), str(ckpt.directory / str(step))
    if saved is None:  # a checkpoint saved without its config: the run's config.json
      where = run / "config.json"
      saved = json.loads(where.read_text())
    config = _config(saved, where)
    wanted = (family,) if isinstance(family, str) else tuple(family)
    if wanted and config.model.family not in wanted:
      raise UserError(f"{knob}={workdir!r} is a {config.model.family!r} run; it must be one of "
                      f"{', '.join(wanted)}")
    differ = [f"data.{k}: {config.data[k]!r} there, {data_config[k]!r} here" for k in DATA_FIELDS
              if k in config.data and k in data_config and config.data[k] != data_config[k]]
    if differ:
      raise UserError(f"{knob}={workdir!r} was trained on other data ({'; '.join(differ)}); "
                      "set the same data.* fields here")
    state, damaged = ckpt.restore_as_saved(step)
    if damaged:
      raise UserError(f"checkpoint {ckpt.directory / str(step)} is damaged ({damaged[0]} does not match "
                      "its checksum); retrain that run")
  finally:
    ckpt.close()
  return Pretrained(config, build(config, spec), state["ema_params"], state["state"], step)


def encode_training_split(config: ml_collections.ConfigDict,
                          encode: Callable[[jax.Array], Any]) -> dict[str, Any]:
  """``{"z": encode(x), ["label": int32 [N]]}`` of all ``N`` training examples of ``config``'s
  data, each once (the batches of steps ``0, 1, ...`` cover epoch 0 of the training stream), with
  ``encode: [B, ...] -> pytree of [B, ...]`` (jit it). Every process encodes the whole split, so
  the result is the same everywhere; random preprocessing is that of those steps."""
  pipeline = data_lib.build(config)
  parts = []
  for step in range(-(-pipeline.num_train // pipeline.local_batch_size)):
    batch = pipeline.train_batch(step)
    part = {"z": encode(batch["x"])}
    if "label" in batch:
      part["label"] = jnp.asarray(batch["label"])
    parts.append(part)
  return jax.tree.map(lambda *a: jnp.concatenate(a)[:pipeline.num_train], *parts)
