"""The VAE family: its loss against the ELBO and a numpy reference, IWAE tightening, collapse diagnostics."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import special

from conftest import ROOT, compiled_init, tiny_config
from jaxgen import config_defaults, families, losses, train
from jaxgen.data.spec import DataSpec
from jaxgen.evaluation import interpolation
from jaxgen.families import vae

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(-1.0, 1.0), num_classes=10)
BINARY = DataSpec("digits", "image", (8, 8, 1), levels=2, value_range=(0.0, 1.0), num_classes=10)
SMALL = {"model.features": (8,), "model.hidden": (32,)}


def final_eval(workdir, step=4):
  """The results the trainer wrote at the end of a ``tiny_config`` run (``eval/step_4.json``)."""
  with open(os.path.join(workdir, "eval", f"step_{step}.json")) as f:
    return json.load(f)


def build(config_name, spec, **overrides):
  config = config_defaults.load(os.path.join(ROOT, "configs", f"{config_name}.py"), overrides)
  family = families.build(config, spec)
  x = np.random.default_rng(0).integers(0, spec.levels, (6, *spec.shape))
  lo, hi = spec.value_range
  batch = {"x": jnp.asarray(lo + (hi - lo) * x / (spec.levels - 1), jnp.float32),
           "label": jnp.arange(6, dtype=jnp.int32)}
  params, state = compiled_init(family, 0, batch)
  return family, params, state, batch


def test_beta_one_loss_is_the_negative_elbo_of_the_plain_vae():
  """β = 1, no warm-up, no free bits: the loss is -mean ELBO from ``elbo_terms`` with the same noise;
  β = 3 adds exactly 2 x the mean KL, and half-way through a warm-up the KL weight is β / 2."""
  family, params, state, batch = build("vae", BINARY)
  rng = jax.random.key(1)
  encode = lambda x: family.encode(params, x)  # noqa: E731
  log_lik = lambda x, z: family.log_lik(params, x, z)  # noqa: E731
  rec, kl = vae.elbo_terms(encode, log_lik, batch["x"], rng)
  loss, (metrics, new_state) = family.loss(params, state, batch, rng)
  assert float(loss) == pytest.approx(-float(jnp.mean(losses.elbo(rec, kl))), rel=1e-5)
  assert int(new_state["model"]["schedule"]["step"]) == 1

  beta3, *_ = build("vae", BINARY, **{"model.beta": 3.0})
  assert float(beta3.loss(params, state, batch, rng)[0]) == pytest.approx(float(loss + 2 * jnp.mean(kl)), rel=1e-5)
  warm, *_ = build("vae", BINARY, **{"model.beta": 3.0, "model.kl_warmup_steps": 10})
  half = {"model": {"schedule": {"step": jnp.asarray(5, jnp.int32)}}}
  warm_loss, (warm_metrics, _) = warm.loss(params, half, batch, rng)
  assert float(warm_metrics["kl_weight"]) == pytest.approx(1.5)
  assert float(warm_loss) == pytest.approx(float(loss + 0.5 * jnp.mean(kl)), rel=1e-5)


def _discretized_logistic_log_prob(k, mean, log_scale, levels):
  """numpy/scipy reference: mass of bin k of a logistic on [-1, 1], edge bins open."""
  s = np.exp(np.maximum(log_scale, -7.0))
  centre, delta = -1.0 + 2.0 * k / (levels - 1), 1.0 / (levels - 1)
  upper = np.where(k == levels - 1, 1.0, special.expit((centre + delta - mean) / s))
  lower = np.where(k == 0, 0.0, special.expit((centre - delta - mean) / s))
  return np.log(upper - lower)


def test_conv_vae_loss_equals_its_objective_in_numpy():
  """β-VAE with free bits and a discretized logistic decoder: the loss of the module docstring."""
  beta, free_bits = 2.5, 0.3
  family, params, state, batch = build("vae_conv", DIGITS, **SMALL, **{"model.beta": beta, "model.free_bits": free_bits})
  rng = jax.random.key(2)
  loss, _ = jax.jit(family.loss)(params, state, batch, rng)

  mean, log_std = (np.asarray(a, np.float64) for a in jax.jit(family.encode)(params, batch["x"]))
  z = mean + np.exp(log_std) * np.asarray(jax.random.normal(rng, mean.shape))  # the loss's noise
  out = np.asarray(jax.jit(family.decode)(params, jnp.asarray(z, jnp.float32)), np.float64)
  k = np.round((np.asarray(batch["x"]) + 1) / 2 * 16)
  rec = _discretized_logistic_log_prob(k, out[..., 0], out[..., 1], 17).reshape(6, -1).sum(-1)
  kl = 0.5 * (mean**2 + np.exp(2 * log_std) - 1) - log_std  # [B, L]
  expected = -rec.mean() + beta * np.maximum(free_bits, kl.mean(0)).sum()
  assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_conv_vae_iwae_bound_tightens_with_k():
  """The IWAE_K upper bound on -log p(x), averaged over 16 draws, decreases as K grows (K = 1 is
  the ELBO with the closed-form KL)."""
  family, params, state, batch = build("vae_conv", DIGITS, **SMALL)
  bounds = []
  for k in (1, 8, 64):
    family.config.eval.iwae_samples = k
    fn = jax.jit(jax.vmap(lambda key: family.eval_metrics(params, state, batch, key)["nll_bound_nats"]))
    bounds.append(np.asarray(fn(jax.random.split(jax.random.key(k), 16))).mean(0))
  bounds = np.stack(bounds)  # [3, B]
  assert np.all(np.diff(bounds.mean(1)) < 0), bounds
  assert np.all(bounds[-1] < bounds[0]), bounds


def test_active_units_of_an_encoder_whose_mean_ignores_its_input():
  """MLP encoder; the mean of latents 1 and 3 is made constant (zero output weights) and latent 2
  varies with variance ~1e-3 < 0.01: exactly the others are active, as counted by numpy."""
  family, params, _, batch = build("vae", BINARY, **{"model.latent_dim": 5})
  mlp = params["model"]["encoder"]["MLP_0"]
  last = sorted(mlp)[-1]  # the output Dense: [hidden, 2L], mean columns first
  x = jnp.asarray(np.random.default_rng(1).random((64, 8, 8, 1)) < 0.5, jnp.float32)
  spread = np.std(np.asarray(family.encode(params, x)[0]), axis=0)
  kernel = mlp[last]["kernel"].at[:, 1].set(0.0).at[:, 3].set(0.0).at[:, 2].multiply(0.03 / spread[2])
  mlp = {**mlp, last: {**mlp[last], "kernel": kernel}}
  params = {"model": {**params["model"], "encoder": {"MLP_0": mlp}}}
  means = np.asarray(family.encode(params, x)[0])
  variances = means.var(axis=0)
  assert variances[1] == variances[3] == 0 and 0 < variances[2] < 0.01
  assert int(vae.active_units(jnp.asarray(means))) == int(np.sum(variances > 0.01)) == 2
  # The mask drops examples: the first 32 copies of one example have no variance at all.
  same = jnp.asarray(np.repeat(means[:1], 64, axis=0)).at[32:].set(means[32:])
  mask = jnp.asarray(np.arange(64) < 32, jnp.float32)
  assert int(vae.active_units(same, mask)) == 0
  assert int(vae.active_units(same)) == 2


def test_conditional_conv_vae_trains_and_reports_bounds_and_diagnostics(workdir):
  config = tiny_config("vae_conv", **{"eval.iwae_samples": 2, **SMALL, "eval.metrics": ("heldout", "interpolation"), "model.conditional": True,
                                      "model.kl_warmup_steps": 2})
  ts = train.train_and_evaluate(config, workdir)
  assert int(ts.state["model"]["schedule"]["step"]) == 4
  results = final_eval(workdir)
  # Discretized logistic over the 17 raw levels: discrete bits/dim = nats / (64 ln 2).
  assert results["bits_per_dim"] == pytest.approx(results["nll_bound_nats"] / (64 * math.log(2)), rel=1e-6)
  assert results["kl_nats"] == pytest.approx(sum(results[f"kl_dim_{j}"] for j in range(16)), rel=1e-5)
  assert 0 <= results["active_units"] <= 16
  assert results["neg_elbo_nats"] == pytest.approx(results["recon_nats"] + results["kl_nats"], rel=1e-5)
  # The interpolation grid: 8 rows of input | 10 path steps | input, 8x8 cells with 1-pixel gaps.
  png = Image.open(os.path.join(workdir, "samples", "interpolation_step_4.png"))
  cols, rows = 12 * 9 + 1, 8 * 9 + 1
  assert png.size == (cols * (512 // cols), rows * (512 // cols))


# --- latent interpolation (jaxgen/evaluation/interpolation.py) -------------------------------------


def test_slerp_and_lerp_paths():
  a = jnp.array([[3.0, 0.0], [1.0, 2.0]])
  b = jnp.array([[0.0, 3.0], [1.0, 2.0]])  # row 0: orthogonal, equal norms; row 1: identical
  t = jnp.linspace(0.0, 1.0, 5)
  for path_fn in (interpolation.slerp, interpolation.lerp):
    path = np.asarray(path_fn(a, b, t))
    np.testing.assert_array_equal(path[:, 0], a)
    np.testing.assert_array_equal(path[:, -1], b)
    np.testing.assert_allclose(path[1], np.broadcast_to(a[1], (5, 2)), rtol=1e-6)
  sl = np.asarray(interpolation.slerp(a, b, t))[0]
  np.testing.assert_allclose(np.linalg.norm(sl, axis=-1), 3.0, rtol=1e-6)  # stays on the circle
  np.testing.assert_allclose(sl[2], 3.0 * np.array([math.sqrt(0.5), math.sqrt(0.5)]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(interpolation.lerp(a, b, t))[0, 2], [1.5, 1.5])


class _IdentityAutoencoder:
  """A latent family whose latent is the image itself: decode(encode(x)) == x."""

  latent_prior = "gaussian"

  def encode_latent(self, params, state, batch):
    return batch["x"].reshape(batch["x"].shape[0], -1)

  def decode_latent(self, params, state, z, label=None):
    return z.reshape(z.shape[0], 8, 8, 1)


def test_interpolation_endpoints_reproduce_inputs_and_reconstructions():
  x = jnp.asarray(np.random.default_rng(0).random((6, 8, 8, 1)), jnp.float32)
  paths = interpolation.interpolate(_IdentityAutoencoder(), None, None, batch={"x": x}, pairs=3, steps=4)
  np.testing.assert_allclose(paths[:, 0], x[:3], rtol=1e-6)
  np.testing.assert_allclose(paths[:, -1], x[3:], rtol=1e-6)
  family, params, state, _ = build("vae_conv", DIGITS, **SMALL)  # a real encoder: reconstructions
  batch = {"x": x * 2 - 1}
  paths = jax.jit(lambda p, b: interpolation.interpolate(family, p, state, batch=b, pairs=3, steps=4))(params, batch)
  recon = jax.jit(lambda p, x: family.decode_mean(p, family.encode(p, x)[0]))(params, batch["x"])
  np.testing.assert_allclose(paths[:, 0], recon[:3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(paths[:, -1], recon[3:], rtol=1e-5, atol=1e-6)
