"""Exact boundaries of the metrics and sampling controls, on points placed exactly on them.

* precision / recall (Kynkäänniemi et al. 2019): a point at exactly ``r_k`` is inside (``<=``);
  density / coverage (Naeem et al. 2020): strictly inside (``<``);
* top-p: token ``i`` is kept iff the mass ranked before it is ``< p``; ``p = 1`` keeps everything;
* mode coverage: a sample at exactly ``3 std`` of a mode is of high quality, ``3.02 std`` is not;
* ``sample.label``: ``-1 .. K-1`` allowed, ``-2`` and ``K`` refused;
* the dequantization offset ``D log(levels / (hi - lo))`` in each continuous family's bits/dim
  (flows, DDPM; the VAE / VQ-VAE Gaussian decoder's bits/dim).

All coordinates are small integers (or halves), so every squared distance is exact in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import load_config
from jaxgen import evaluation as ev
from jaxgen import families, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation.mode_coverage import ModeCoverage
from jaxgen.evaluation.precision_recall import PrecisionRecall
from jaxgen.nn import pixel_likelihood

# k = 1. Real radii: every real point's nearest real neighbour is 4 away.
REAL = np.array([[0, 0], [4, 0], [20, 0], [24, 0]], np.float32)
# Fake radii: p, s are 3 apart; q, t are 5 apart.
FAKE = np.array([[0, 4],  # p: exactly r(a) = 4 from a -> inside the real manifold (only with <=)
                 [0, 7],  # s: 7 from a, sqrt(65) from b -> outside
                 [20, 5],  # q: 5 from c > 4 -> outside; c is exactly r(q) = 5 from q -> c is recalled
                 [20, 10]], np.float32)  # t: outside


@pytest.mark.parametrize("block_size", [3, 1000])  # 3: the real set is padded to two blocks
def test_precision_recall_count_points_exactly_on_a_radius(block_size):
  precision, recall = ev.precision_recall(REAL, FAKE, k=1, block_size=block_size)
  assert (precision, recall) == (0.25, 0.25)  # p only; c only
  # Swapped roles: recall(X, Y) = precision(Y, X).
  assert ev.precision_recall(FAKE, REAL, k=1, block_size=block_size) == (0.25, 0.25)


def test_k_must_be_between_1_and_the_smaller_set_size_minus_1():
  assert ev.precision_recall(REAL, FAKE[:3], k=2)[0] >= 0.0  # k = min(N, M) - 1 is allowed
  for k in (0, 3):
    with pytest.raises(UserError, match="nearest neighbours"):
      ev.precision_recall(REAL, FAKE[:3], k=k)
  with pytest.raises(UserError, match="nearest neighbours"):
    ev.density_coverage(REAL, FAKE, k=0)


def test_precision_recall_evaluator_defaults_follow_the_paper():
  """Kynkäänniemi et al. use k = 3; ``every = 0`` runs it only at the end of training."""
  assert PrecisionRecall.defaults() == {"every": 0, "k": 3}
  config = ml_collections.ConfigDict({"eval": {"precision_recall": PrecisionRecall.defaults()}})
  assert PrecisionRecall().min_samples(config) == 4  # k + 1: k neighbours besides the point itself


def test_density_and_coverage_need_strictly_inside():
  # No fake is strictly within 4 of a real point (p is exactly on a's radius): density 0, coverage 0.
  assert ev.density_coverage(REAL, FAKE, k=1) == (0.0, 0.0)
  # Move p 1 closer to a: now strictly inside a's ball, a is covered; density 1 / (k M).
  fake = FAKE.copy()
  fake[0] = (0, 3)
  assert ev.density_coverage(REAL, fake, k=1) == (0.25, 0.25)


def test_top_p_keeps_the_token_whose_preceding_mass_is_just_below_p():
  logits = np.zeros(4, np.float32)  # probabilities 1/4 each; mass before token i is i/4 exactly
  for p, kept in ((0.25, 1), (0.5, 2), (0.5 + 1e-6, 3), (0.75, 3), (1.0, 4)):
    out = np.asarray(sampling.process_logits(logits, top_p=p))
    np.testing.assert_array_equal(np.isfinite(out), np.arange(4) < kept, err_msg=f"p={p}")
    traced = jax.jit(lambda q: sampling.process_logits(logits, top_p=q))(p)
    np.testing.assert_array_equal(np.isfinite(traced), np.arange(4) < kept, err_msg=f"traced p={p}")


def test_top_p_one_disables_the_nucleus_even_when_the_mass_rounds_to_one():
  logits = np.array([0.0, -120.0, -130.0], np.float32)  # the first token has mass 1.0 in float32
  np.testing.assert_array_equal(sampling.process_logits(logits, top_p=1.0), logits)
  np.testing.assert_array_equal(np.isfinite(sampling.process_logits(logits, top_p=0.999)), [True, False, False])


def test_sample_label_range_boundaries():
  rng = jax.random.key(0)
  for label in (-1, 0, 9):
    labels = sampling.labels_from_config(ml_collections.ConfigDict({"label": label}), 10, rng, 5)
    assert labels.shape == (5,) and 0 <= int(labels.min()) and int(labels.max()) <= 9
    if label >= 0:
      np.testing.assert_array_equal(labels, np.full(5, label))
  for label in (-2, 10):
    with pytest.raises(UserError):
      sampling.labels_from_config(ml_collections.ConfigDict({"label": label}), 10, rng, 5)
  assert sampling.labels_from_config(ml_collections.ConfigDict({"label": -1}), 0, rng, 5) is None  # unconditional
  with pytest.raises(UserError, match="this model is unconditional"):  # which takes no class
    sampling.labels_from_config(ml_collections.ConfigDict({"label": 3}), 0, rng, 5)
  # An absent sample.label means -1: labels at random, not class 0.
  absent = np.asarray(sampling.labels_from_config(ml_collections.ConfigDict({}), 10, rng, 200))
  np.testing.assert_array_equal(np.bincount(absent, minlength=10) > 0, np.ones(10, bool))
  assert sampling.controls_from_config(ml_collections.ConfigDict({"top_p": 1.0, "top_k": 0, "temperature": 0.0})) == {
      "temperature": 0.0, "top_k": 0, "top_p": 1.0}


def test_mode_coverage_threshold_is_inclusive_at_three_std():
  means = np.array([[0, 0], [10, 0], [20, 0]], np.float32)
  std = 0.5  # 3 std = 1.5 exactly
  samples = np.array([[1.5, 0],  # exactly 3 std from mode 0: high quality
                      [0, 1.49],  # just inside, mode 0
                      [10, -1.49],  # just inside, mode 1
                      [20, 1.51],  # just outside mode 2
                      [0, -1.6]], np.float32)  # outside mode 0
  out = ev.mode_coverage(samples, means, std)
  assert out["modes"] == 2
  assert out["high_quality"] == pytest.approx(3 / 5)
  # p = (2/3, 1/3, 0): KL(p || uniform over 3) = 2/3 log 2 + 1/3 log 1.
  assert out["reverse_kl"] == pytest.approx(2 / 3 * math.log(2), rel=1e-6)
  assert ev.mode_coverage(samples, means, std, threshold=3.02)["high_quality"] == pytest.approx(4 / 5)
  assert ModeCoverage.defaults()["threshold"] == 3.0  # VEEGAN / PacGAN: within 3 standard deviations


# --- the dequantization offset of each continuous-density family ------------------------------------

def _spec(levels):
  return DataSpec("digits", "image", (8, 8, 1), levels=levels, dequantized=True, num_classes=10)


LOG_P = np.array([-40.0, 25.0])  # model-space log-densities (nats) of the two examples, stand-ins
BATCH = {"x": jnp.zeros((2, 8, 8, 1)), "label": jnp.arange(2), "mask": jnp.ones(2)}


def _offset_nats(levels):
  return 64 * math.log(levels / 2)  # D log(levels / (hi - lo)), D = 64, range [-1, 1]


@pytest.mark.parametrize("levels", [17, 256])
def test_flow_nll_and_bits_per_dim_carry_the_dequantization_offset(levels):
  """A flow's model-space NLL is ``-log p(x)``; of the raw data, plus ``D log(levels / 2)``;
  bits/dim are the raw-data NLL over ``D ln 2``, in training and in evaluation."""
  family = families.build(load_config("realnvp"), _spec(levels))
  family.log_prob = lambda params, state, x: jnp.asarray(LOG_P)  # the density is checked in test_flows
  raw_nll = -LOG_P + _offset_nats(levels)
  out = family.eval_metrics({}, {}, BATCH, jax.random.key(0))
  np.testing.assert_allclose(out["nll_nats"], raw_nll, rtol=1e-6)
  np.testing.assert_allclose(out["bits_per_dim"], raw_nll / (64 * math.log(2)), rtol=1e-6)
  loss, (metrics, _) = family.update_groups()[0].loss_fn({}, {}, BATCH, jax.random.key(0))
  np.testing.assert_allclose(float(loss), np.mean(-LOG_P), rtol=1e-6)  # trained in model space
  np.testing.assert_allclose(float(metrics["bits_per_dim"]), np.mean(raw_nll) / (64 * math.log(2)), rtol=1e-6)


@pytest.mark.parametrize("levels", [17, 256])
def test_ddpm_bound_carries_the_dequantization_offset_in_its_decoder_term(levels, monkeypatch):
  """Dequantized images: Gaussian decoder plus ``D log(levels / 2)`` on the decoder term; the bound is
  prior + diffusion + decoder and each bits/dim is its nats over ``D ln 2``."""
  from jaxgen import diffusion  # pylint: disable=import-outside-toplevel

  terms = {"prior": jnp.array([0.5, 1.0]), "diffusion": jnp.array([30.0, 10.0]), "decoder": jnp.array([-50.0, 20.0])}
  seen = {}

  def stub(sched, model_fn, x0, rng, prediction, variance, clip, levels, value_range, num_terms):
    seen["levels"] = levels
    return dict(terms)

  monkeypatch.setattr(diffusion, "variational_bound", stub)
  family = families.build(load_config("ddpm", **{"model.num_timesteps": 4, "sample.steps": 4}), _spec(levels))
  family._simple_loss = lambda params, batch, rng, train: jnp.zeros(2)  # checked in test_objectives
  out = family.eval_metrics({}, {}, BATCH, jax.random.key(0))
  assert seen["levels"] == 0  # dequantized: the continuous (Gaussian) decoder, not the discretized one
  decoder = np.asarray(terms["decoder"]) + _offset_nats(levels)
  total = np.asarray(terms["prior"]) + np.asarray(terms["diffusion"]) + decoder
  np.testing.assert_allclose(out["nll_bound_nats"], total, rtol=1e-6)
  bpd = lambda nats: nats / (64 * math.log(2))
  np.testing.assert_allclose(out["bits_per_dim"], bpd(total), rtol=1e-6)
  np.testing.assert_allclose(out["bpd_decoder"], bpd(decoder), rtol=1e-6)
  np.testing.assert_allclose(out["bpd_prior"], bpd(np.asarray(terms["prior"])), rtol=1e-6)
  np.testing.assert_allclose(out["bpd_diffusion"], bpd(np.asarray(terms["diffusion"])), rtol=1e-6)


def test_vae_and_vqvae_bits_per_dim_add_the_offset_only_for_a_gaussian_decoder():
  """``pixel_likelihood.bits_per_dim`` (VAE, VQ-VAE): a Gaussian decoder is a density in model space,
  bits/dim ``(nll + D log(levels / (hi - lo))) / (D ln 2)``; Bernoulli / logistic are discrete."""
  spec = DataSpec("digits", "image", (8, 8, 1), levels=17, value_range=(0.0, 1.0), dequantized=True)
  nll = np.array([10.0, -30.0])
  np.testing.assert_allclose(pixel_likelihood.bits_per_dim("gaussian", spec, nll),
                             (nll + 64 * math.log(17)) / (64 * math.log(2)), rtol=1e-6)
  for kind in ("bernoulli", "logistic"):
    np.testing.assert_allclose(pixel_likelihood.bits_per_dim(kind, spec, nll), nll / (64 * math.log(2)), rtol=1e-6)


@pytest.mark.parametrize("name, nats, bits", [
    ("vae", ("nll_bound_nats", "neg_elbo_nats", "recon_nats"), ("nll_bound_nats", "bits_per_dim")),
    ("vqvae", ("nll_bound_nats", "recon_nats"), ("nll_bound_nats", "bits_per_dim")),
    ("avb", ("neg_elbo_estimate_nats", "recon_nats"), ("neg_elbo_estimate_nats", "neg_elbo_estimate_bits_per_dim")),
    ("aae", ("recon_nats",), None),
])
def test_gaussian_decoders_report_nats_of_the_raw_data(name, nats, bits):
  """A Gaussian decoder is a density over model space; its families' held-out nats are of the raw
  data, as flows' and diffusion's: the same model-space images on a grid of 33 levels instead of 17
  cost ``D log(33 / 17)`` nats more per example, and bits/dim are those nats over ``D ln 2``."""
  from conftest import compiled_init  # pylint: disable=import-outside-toplevel

  config = load_config(name, **{"model.decoder": "gaussian"})
  x = np.random.default_rng(0).uniform(0.0, 1.0, (4, 8, 8, 1)).astype(np.float32)
  batch = {"x": jnp.asarray(x), "label": jnp.zeros((4,), jnp.int32)}
  out = {}
  for levels in (17, 33):
    family = families.build(config, DataSpec("digits", "image", (8, 8, 1), levels=levels, value_range=(0.0, 1.0),
                                             dequantized=True))
    params, state = compiled_init(family, 0, batch)
    out[levels] = jax.device_get(jax.jit(family.eval_metrics)(params, state, batch, jax.random.key(1)))
  for key in nats:
    np.testing.assert_allclose(np.asarray(out[33][key], np.float64) - out[17][key], 64 * math.log(33 / 17),
                               rtol=1e-4, err_msg=key)
  if bits:
    np.testing.assert_allclose(out[17][bits[1]], out[17][bits[0]] / (64 * math.log(2)), rtol=1e-6)
