"""Adversarial autoencoder: each update group changes only its network (through the trainer's step),
the three losses against numpy, the mixture prior and its label conditioning."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_vae import _discretized_logistic_log_prob, final_eval

from conftest import ROOT, compiled_init, tiny_config
from jaxgen import checkpoint, config_defaults, families, parallel, train
from jaxgen.data.spec import DataSpec
from jaxgen.families import aae

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(-1.0, 1.0), num_classes=10)
SMALL = {"model.architecture": "mlp", "model.hidden": (16,), "model.disc_hidden": (16,)}  # cheap to compile


def test_each_update_group_changes_only_its_network(workdir):
  """One trainer step per group alone: that group's network moves, the other two stay bit-identical."""
  exp = train.setup(tiny_config("aae", **SMALL), workdir)
  groups = exp.family.update_groups()
  assert [g.network for g in groups] == ["dec", "disc", "enc"]
  batch = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
  for group in groups:
    ts = train.init_or_restore(exp, checkpoint.Checkpointer(os.path.join(workdir, group.network), 1))
    before = jax.device_get(ts.params)
    exp.family.update_groups = lambda group=group: [group]
    after = jax.device_get(train.make_train_step(exp)(ts, batch)[0].params)
    for net in before:
      same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[net]), jax.tree.leaves(after[net])))
      assert same == (net != group.network), (group.network, net)


def _setup(**overrides):
  config = config_defaults.load(os.path.join(ROOT, "configs", "aae.py"), {**SMALL, **overrides})
  family = families.build(config, DIGITS)
  x = np.random.default_rng(0).integers(0, 17, (6, 8, 8, 1)) / 8.0 - 1.0
  batch = {"x": jnp.asarray(x, jnp.float32), "label": jnp.array([0, 3, 3, 7, 9, 1], jnp.int32)}
  params, state = compiled_init(family, 0, batch)
  return family, params, state, batch


@pytest.mark.parametrize("conditional", [False, True])
def test_losses_equal_their_objectives_in_numpy(conditional):
  lam = 2.5
  overrides = {"model.adversarial_weight": lam}
  if conditional:
    overrides.update({"model.prior": "mixture", "model.conditional": True})
  family, params, state, batch = _setup(**overrides)
  rng = jax.random.key(4)
  z = np.asarray(jax.jit(family.encode)(params, batch["x"]))
  out = np.asarray(jax.jit(family.decoder_out)(params["dec"], jnp.asarray(z)), np.float64)
  k = np.round((np.asarray(batch["x"]) + 1) * 8)
  recon = -_discretized_logistic_log_prob(k, out[..., 0], out[..., 1], 17).reshape(6, -1).sum(-1).mean()
  label = batch["label"] if conditional else None
  critic = jax.jit(family.critic)
  fake = np.asarray(critic(params, jnp.asarray(z), label), np.float64)
  real_z = family.prior_sample(rng, 6, label)  # the prior draw the disc loss makes with this key
  real = np.asarray(critic(params, real_z, label), np.float64)
  log_sig = lambda t: -np.logaddexp(0.0, -t)  # noqa: E731  log sigmoid

  assert float(jax.jit(family.recon_loss)(params, state, batch, rng)[0]) == pytest.approx(recon, rel=1e-4)
  disc = -(log_sig(real) + log_sig(-fake)).mean()
  assert float(jax.jit(family.disc_loss)(params, state, batch, rng)[0]) == pytest.approx(disc, rel=1e-4)
  enc = recon - lam * log_sig(fake).mean()
  assert float(jax.jit(family.enc_loss)(params, state, batch, rng)[0]) == pytest.approx(enc, rel=1e-4)
  # Held out, per example [B] (so padding rows can be dropped): their means are the two losses.
  held = jax.jit(family.eval_metrics)(params, state, batch, rng)
  np.testing.assert_allclose(held["disc/loss"], -(log_sig(real) + log_sig(-fake)), rtol=1e-4)
  np.testing.assert_allclose(held["gen/loss"], -log_sig(fake), rtol=1e-4)
  # The discriminator's loss does not reach the encoder (codes are held fixed).
  g = jax.grad(lambda p: family.disc_loss({**params, "enc": p}, state, batch, rng)[0])(params["enc"])
  assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(g))


def test_mixture_prior_and_its_label_conditioning():
  means = np.asarray(aae.mixture_means(10, 4))
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), aae.MIXTURE_RADIUS, rtol=1e-6)
  np.testing.assert_allclose(means[3, :2], aae.MIXTURE_RADIUS * np.array([math.cos(0.6 * math.pi), math.sin(0.6 * math.pi)]), atol=1e-6)
  z = np.asarray(aae.sample_prior("mixture", jax.random.key(0), 20000, 4, 10))
  component = np.round(np.arctan2(z[:, 1], z[:, 0]) / (0.2 * math.pi)).astype(int) % 10  # nearest angle
  np.testing.assert_allclose(np.bincount(component, minlength=10) / 20000, 0.1, atol=0.01)
  np.testing.assert_allclose(z[:, 2:].mean(0), 0.0, atol=0.02)  # off the circle's plane: N(0, std^2)
  np.testing.assert_allclose(z[:, 2:].std(0), aae.MIXTURE_STD, rtol=0.03)
  z7 = np.asarray(aae.sample_prior("mixture", jax.random.key(1), 2000, 4, 10, jnp.full((2000,), 7, jnp.int32)))
  np.testing.assert_allclose(z7.mean(0), means[7], atol=0.05)  # every draw from component 7
  np.testing.assert_allclose(z7.std(0), aae.MIXTURE_STD, rtol=0.05)
  g = np.asarray(aae.sample_prior("gaussian", jax.random.key(2), 20000, 3))
  np.testing.assert_allclose(g.mean(0), 0.0, atol=0.03)
  np.testing.assert_allclose(g.std(0), 1.0, atol=0.03)


def test_conditional_needs_the_mixture_prior():
  from jaxgen.errors import UserError

  with pytest.raises(UserError, match="model.prior=mixture"):
    _setup(**{"model.conditional": True})


def test_aae_trains_and_reports_held_out_losses(workdir):
  config = tiny_config("aae", **SMALL, **{"eval.metrics": ("heldout",)})
  train.train_and_evaluate(config, workdir)
  results = final_eval(workdir)
  assert results["recon_nats"] > 0 and results["mse"] >= 0
  assert math.isfinite(results["disc/loss"]) and math.isfinite(results["gen/loss"])
  assert "nll_bound_nats" not in results and "bits_per_dim" not in results  # no likelihood
