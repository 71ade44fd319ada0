"""Tests of the ``latent_diffusion`` family: diffusion in the latent space of a trained VAE.

One tiny VAE (configs/vae.py, 2-d latents) is trained for a few steps, then latent DDPM on top of
it; the flow-matching variant is traced only.
"""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxgen import pretrained, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.families import build

DIGITS01 = DataSpec(name="digits", modality="image", shape=(8, 8, 1), levels=2, value_range=(0.0, 1.0),
                    num_classes=10)
TINY_LD = {"model.mlp.hidden": 16, "model.mlp.num_blocks": 1, "model.num_timesteps": 20,
           "sample.steps": 2, "eval.bound_timesteps": 4, "eval.ode_steps": 2, "eval.metrics": ("heldout",)}


def files(directory: str) -> dict[str, tuple[int, int]]:
  """``{path: (size, mtime in ns)}`` of every file under ``directory``."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), directory)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
  """The workdir of a VAE trained for 4 steps (MLP, 2-d latents)."""
  workdir = str(tmp_path_factory.mktemp("vae") / "run")
  train.train_and_evaluate(tiny_config("vae", **{"model.hidden": (16,), "model.latent_dim": 2,
                                                 "eval.iwae_samples": 1, "eval.metrics": ("heldout",)}), workdir)
  return workdir


def test_latent_ddpm_trains_with_a_frozen_autoencoder_and_decodes_to_data(autoencoder, tmp_path):
  before = files(autoencoder)
  ae_before = pretrained.load(autoencoder, DIGITS01, tiny_config("vae").data, "test")
  config = tiny_config("latent_diffusion", **TINY_LD, **{"model.autoencoder_workdir": autoencoder})
  workdir = str(tmp_path / "ld")
  ts = train.train_and_evaluate(config, workdir)

  # The autoencoder is frozen: its files are untouched, only the diffusion network is trained.
  assert files(autoencoder) == before
  family = build(config, DIGITS01)
  chex.assert_trees_all_equal(family.autoencoder.params, ae_before.params)
  inner, _ = jax.eval_shape(family.diffusion.init, jax.random.key(0), {"x": jnp.zeros((2, 2))})
  chex.assert_trees_all_equal_shapes(ts.params, inner)
  assert jax.tree.structure(ts.params) == jax.tree.structure(inner)

  # The latent space: the training split encoded once, 2-d latents; a positive finite scale.
  mean, log_std = family.latent_cache()["z"]
  assert mean.shape[0] > 1000 and mean.shape[1:] == (2,) and log_std.shape == mean.shape
  scale = float(ts.state["model"]["latent"]["scale"])
  assert np.isfinite(scale) and scale > 0

  # Decoded samples have the data's shape and range.
  x = jax.jit(lambda p, s, k: family.sample(p, s, k, 5))(ts.ema_params, ts.state, jax.random.key(1))
  chex.assert_shape(x, (5, 8, 8, 1))
  assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  assert {"latent_nll_bound_nats", "latent_bits_per_dim", "model/loss"} <= set(results), sorted(results)
  assert np.isfinite(results["latent_nll_bound_nats"])
  # Bits per latent dimension (2 of them), no dequantization offset: the latents are continuous.
  assert results["latent_bits_per_dim"] == pytest.approx(results["latent_nll_bound_nats"] / (2 * math.log(2)), rel=1e-6)


def test_latent_flow_matching_and_checks(autoencoder):
  config = tiny_config("latent_diffusion", **TINY_LD, **{"model.autoencoder_workdir": autoencoder,
                                                          "model.diffusion": "flow_matching",
                                                          "model.scale_factor": 0.5})
  family = build(config, DIGITS01)
  batch = {"x": jnp.zeros((3, 8, 8, 1)), "label": jnp.zeros((3,), jnp.int32)}
  params, state = family.init(jax.random.key(0), batch)
  assert float(state["model"]["latent"]["scale"]) == 0.5
  samples = jax.eval_shape(lambda p, s, k: family.sample(p, s, k, 4), params, state, jax.random.key(1))
  chex.assert_shape(samples, (4, 8, 8, 1))
  metrics = jax.eval_shape(family.eval_metrics, params, state, batch, jax.random.key(2))
  assert {"latent_nll_nats", "latent_bits_per_dim", "model/loss"} <= set(metrics)
  with pytest.raises(UserError, match="other data"):
    build(tiny_config("latent_diffusion", **{"model.autoencoder_workdir": autoencoder, "data.scale": "[-1,1]"}),
          DIGITS01)
  with pytest.raises(UserError, match="autoencoder_workdir"):
    build(tiny_config("latent_diffusion", **{"model.autoencoder_workdir": ""}), DIGITS01)
