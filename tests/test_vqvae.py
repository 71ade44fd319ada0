"""VQ-VAE and its prior over codes: straight-through gradient, the EMA codebook update and dead-code
restarts against numpy, perplexity, the loss against a numpy reference, the prior's causality and
two-stage sampling / bound."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_vae import _discretized_logistic_log_prob, final_eval

from conftest import ROOT, compiled_init, tiny_config
from jaxgen import checkpoint as checkpoint_lib
from jaxgen import config_defaults, families, pretrained, train
from jaxgen import data as data_lib
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn import vector_quantizer as vq

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(-1.0, 1.0), num_classes=10)
VQ_TINY = {"model.features": (8,), "eval.metrics": ("heldout",)}


def _family(**overrides):
  config = config_defaults.load(os.path.join(ROOT, "configs", "vqvae.py"), {"model.features": (8,), **overrides})
  family = families.build(config, DIGITS)
  x = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)) / 8.0 - 1.0
  batch = {"x": jnp.asarray(x, jnp.float32), "label": jnp.arange(4, dtype=jnp.int32)}
  params, state = compiled_init(family, 0, batch)
  return family, params, state, batch


def test_straight_through_gradient_is_the_decoder_gradient_at_the_quantised_point():
  family, params, state, batch = _family()
  z_e = jax.jit(family.encode)(params, batch["x"])
  _, q = jax.jit(family.quantize)(params, state, z_e)
  assert not np.allclose(z_e, q)

  def through(z):
    return jnp.sum(family.log_lik(params, batch["x"], vq.straight_through(z, q)))

  def at(p):
    return jnp.sum(family.log_lik(params, batch["x"], p))

  value, grad = jax.jit(jax.value_and_grad(through))(z_e)
  assert float(value) == pytest.approx(float(jax.jit(at)(q)), rel=1e-6)  # the decoder sees q
  np.testing.assert_allclose(grad, jax.jit(jax.grad(at))(q), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(grad)).max() > 0


def test_ema_codebook_update_and_dead_code_restart_follow_their_formulas():
  rng = np.random.default_rng(0)
  k, d, n, decay, eps = 5, 3, 12, 0.9, 1e-5
  stats = {"codebook": rng.normal(size=(k, d)), "cluster_size": rng.uniform(0.5, 3.0, k), "embed_sum": rng.normal(size=(k, d))}
  z = rng.normal(size=(n, d))
  codes = np.array([0, 0, 1, 3, 3, 3, 0, 1, 1, 3, 0, 0])  # code 2 and 4 unused
  new = vq.ema_update(jax.tree.map(jnp.asarray, stats), jnp.asarray(z), jnp.asarray(codes), decay, eps)

  onehot = np.eye(k)[codes]  # [N, K]
  cluster = decay * stats["cluster_size"] + (1 - decay) * onehot.sum(0)
  embed = decay * stats["embed_sum"] + (1 - decay) * onehot.T @ z
  smoothed = (cluster + eps) / (cluster.sum() + k * eps) * cluster.sum()
  np.testing.assert_allclose(new["cluster_size"], cluster, rtol=1e-6)
  np.testing.assert_allclose(new["embed_sum"], embed, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["codebook"], embed / smoothed[:, None], rtol=1e-5, atol=1e-6)

  threshold = np.sort(cluster)[1] + 1e-6  # the two rarest codes are dead
  restarted, count = vq.restart_dead_codes(new, jnp.asarray(z), jax.random.key(0), threshold)
  dead = cluster < threshold
  assert int(count) == 2
  for j in range(k):
    if dead[j]:  # moved onto an encoder output of the batch, with a count of 1
      assert np.min(np.abs(z - np.asarray(restarted["codebook"][j])).sum(-1)) < 1e-6
      assert float(restarted["cluster_size"][j]) == 1.0
    else:
      np.testing.assert_array_equal(restarted["codebook"][j], new["codebook"][j])


def test_perplexity_and_usage():
  assert float(vq.perplexity(jnp.full((16,), 7.0))) == pytest.approx(16.0, rel=1e-5)
  assert float(vq.perplexity(jnp.array([0.0, 5.0, 0.0]))) == pytest.approx(1.0)
  p = np.array([1.0, 3.0, 0.0, 4.0])
  assert float(vq.perplexity(jnp.asarray(p))) == pytest.approx(np.exp(-np.sum(p[p > 0] / 8 * np.log(p[p > 0] / 8))), rel=1e-5)
  assert float(vq.usage(jnp.asarray(p))) == 0.75
  np.testing.assert_array_equal(vq.code_counts(jnp.array([2, 0, 2]), 4), [1, 0, 2, 0])


def test_vqvae_loss_equals_its_objective_in_numpy():
  """loss = mean_b[-log p(x|q)] + beta * mean_b ||z_e - q||^2 with brute-force nearest codes, and the
  new state is the EMA update of those codes."""
  beta = 0.4
  family, params, state, batch = _family(**{"model.commitment": beta, "model.dead_code_threshold": 0.0})
  loss, (_, new_state) = jax.jit(family.loss)(params, state, batch, jax.random.key(3))
  z_e = np.asarray(jax.jit(family.encode)(params, batch["x"]), np.float64)  # [B, h, w, D]
  codebook = np.asarray(state["model"]["vq_stats"]["codebook"], np.float64)
  codes = np.argmin(((z_e[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
  q = codebook[codes]
  out = np.asarray(jax.jit(family.decode)(params, jnp.asarray(q, jnp.float32)), np.float64)
  k = np.round((np.asarray(batch["x"]) + 1) * 8)
  rec = _discretized_logistic_log_prob(k, out[..., 0], out[..., 1], 17).reshape(4, -1).sum(-1)
  expected = -rec.mean() + beta * ((z_e - q) ** 2).reshape(4, -1).sum(-1).mean()
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  counts = np.bincount(codes.reshape(-1), minlength=32)
  np.testing.assert_allclose(new_state["model"]["vq_stats"]["cluster_size"], 0.99 * 1.0 + 0.01 * counts, rtol=1e-6)


# --- trained runs: the VQ-VAE (stage 1) and its prior over codes (stage 2) ------------------------


@pytest.fixture(scope="module")
def vqvae_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vqvae"))
  train.train_and_evaluate(tiny_config("vqvae", **VQ_TINY), workdir)
  return workdir


def test_vqvae_trains_and_reports_its_uniform_prior_bound(vqvae_workdir):
  config = tiny_config("vqvae", **VQ_TINY)
  results = final_eval(vqvae_workdir)
  grid = 16  # 4x4 codes
  assert results["nll_bound_nats"] == pytest.approx(results["recon_nats"] + grid * math.log(32), rel=1e-5)
  assert results["bits_per_dim"] == pytest.approx(results["nll_bound_nats"] / (64 * math.log(2)), rel=1e-6)
  assert 1.0 <= results["perplexity"] <= 32 and 0 < results["usage"] <= 1
  ts = train.restore_for_inference(train.setup(config, vqvae_workdir))
  assert not np.allclose(ts.state["model"]["vq_stats"]["cluster_size"], 1.0)  # EMA counts moved from 1


def _prior(vqvae_workdir, **overrides):
  return tiny_config("vqvae_prior", **{"model.vqvae_workdir": vqvae_workdir, "model.features": 8, "eval.metrics": ("heldout",),
                                       "model.num_blocks": 1, "model.head_features": 16, **overrides})


def test_prior_over_codes_is_causal(vqvae_workdir):
  """d logits(i, j) / d input(i', j') == 0 at and after (i, j) in raster order, != 0 somewhere before."""
  family = families.build(_prior(vqvae_workdir), DIGITS)
  h, w = family.vq.grid
  x = jax.random.uniform(jax.random.key(1), (h, w, 1), minval=-1.0, maxval=1.0)
  params = family.prior.net.init(jax.random.key(0), x[None])
  proj = jax.random.normal(jax.random.key(2), (family.vq.num_codes,))
  jac = np.asarray(jax.jit(jax.jacrev(lambda x: family.prior.net.apply(params, x[None])[0, ..., 0, :] @ proj))(x))
  jac = jac.reshape(h * w, h * w)  # [output position, input position], raster order
  later = np.arange(h * w)[None, :] >= np.arange(h * w)[:, None]
  assert np.all(jac[later] == 0.0)
  assert np.any(jac[~later] != 0.0)


def test_two_stage_sample_decodes_the_codes_the_prior_drew(vqvae_workdir):
  """A prior whose output bias makes code c certain everywhere samples VQ-decode(all c)."""
  family = families.build(_prior(vqvae_workdir), DIGITS)
  params, state = family.init(jax.random.key(0), {"x": jnp.zeros((2, 8, 8, 1))})
  sample = jax.jit(family.sample, static_argnums=3)
  images = []
  for c in (3, 17):
    def force(path, p, c=c):
      name = jax.tree_util.keystr(path)
      if "['out']" in name:
        return jnp.zeros_like(p).at[..., c].set(100.0) if "bias" in name else jnp.zeros_like(p)
      return p
    samples = sample(jax.tree_util.tree_map_with_path(force, params), state, jax.random.key(5), 3)
    expected = jax.jit(family.decode_codes)(jnp.full((3, *family.vq.grid), c, jnp.int32))
    np.testing.assert_allclose(samples, expected, rtol=1e-6)
    images.append(samples)
  assert not np.allclose(images[0], images[1])


def test_prior_trains_on_cached_codes_and_reports_the_two_stage_bound(vqvae_workdir, workdir):
  config = _prior(vqvae_workdir)
  train.train_and_evaluate(config, workdir)
  results = final_eval(workdir)
  assert results["nll_bound_nats"] == pytest.approx(results["prior_nll_nats"] + results["recon_nats"], rel=1e-5)
  assert results["bits_per_dim"] == pytest.approx(results["nll_bound_nats"] / (64 * math.log(2)), rel=1e-6)
  assert results["uniform_prior_nats"] == pytest.approx(16 * math.log(32), rel=1e-6)
  # The cache holds the codes of the whole training split, in the order of the first epoch.
  family = families.build(config, DIGITS)
  cache = family.code_cache()
  assert family.code_cache() is cache and cache["codes"].shape == (1500, 4, 4)
  first = data_lib.build(config).train_batch(0)
  np.testing.assert_array_equal(cache["codes"][:16], jax.jit(family.encode_codes)(first["x"]))
  np.testing.assert_array_equal(cache["label"][:16], first["label"])


def test_prior_refuses_other_data_and_missing_runs(vqvae_workdir, tmp_path):
  with pytest.raises(UserError, match="data.scale"):
    families.build(_prior(vqvae_workdir, **{"data.scale": "[0,1]"}), DIGITS)
  with pytest.raises(UserError, match="no checkpoint"):
    families.build(_prior(str(tmp_path)), DIGITS)
  with pytest.raises(UserError, match="output=softmax"):
    families.build(_prior(vqvae_workdir, **{"model.output": "logistic_mixture"}), DIGITS)
  # Latent diffusion needs a VAE's Gaussian encoder: a VQ-VAE run is named, not a traceback.
  with pytest.raises(UserError, match=r"model.autoencoder_workdir=.* is a 'vqvae' run; it must be one of vae"):
    families.build(tiny_config("latent_diffusion", **{"model.autoencoder_workdir": vqvae_workdir}), DIGITS)


def test_a_pinned_stage_one_step_is_kept_while_that_run_trains_on(vqvae_workdir):
  # <workdir>/checkpoints/<step> names one step (exact resume of the second stage even after the
  # first trains on); the workdir alone is its newest step. The tiny run saved steps 2 and 4.
  config = tiny_config("vqvae", **VQ_TINY)
  newest = pretrained.load(vqvae_workdir, DIGITS, config.data, "model.vqvae_workdir", "vqvae")
  pinned = pretrained.load(os.path.join(vqvae_workdir, "checkpoints", "2"), DIGITS, config.data,
                           "model.vqvae_workdir", "vqvae")
  assert (newest.step, pinned.step) == (4, 2)
  restored = checkpoint_lib.Checkpointer(vqvae_workdir, config=None, read_only=True).restore_as_saved(2)[0]
  jax.tree.map(np.testing.assert_array_equal, pinned.params, restored["ema_params"])
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(pinned.params), jax.tree.leaves(newest.params)))
  with pytest.raises(UserError, match=r"checkpoints/3' is not a complete checkpoint \(steps there: 2, 4\)"):
    pretrained.load(os.path.join(vqvae_workdir, "checkpoints", "3"), DIGITS, config.data, "model.vqvae_workdir")
