"""jaxgen.sampling: temperature, top-k and top-p against worked examples and brute force; the one
meaning of ``sample.label``."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from conftest import load_config, tiny_config
from jaxgen import families, sampling, validate
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

WORKED_LOGITS = np.array([2.0, 1.0, 0.5])


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _nucleus_brute_force(probs: np.ndarray, p: float) -> frozenset[int]:
  """Among all subsets with mass >= p: the smallest, then (if several) the most probable."""
  best = None
  for size in range(1, len(probs) + 1):
    for subset in itertools.combinations(range(len(probs)), size):
      mass = probs[list(subset)].sum()
      if mass >= p and (best is None or mass > best[0]):
        best = (mass, frozenset(subset))
    if best is not None:
      return best[1]
  raise AssertionError("unreachable: the full set has mass 1")


def test_temperature_worked_example():
  # The course's figures to 3 decimals; its 0.628 is 0.62853 truncated, hence atol 1e-3.
  chex.assert_trees_all_close(sampling.probabilities(WORKED_LOGITS),
                              np.array([0.628, 0.231, 0.140]), atol=1e-3)
  chex.assert_trees_all_close(sampling.probabilities(WORKED_LOGITS, temperature=0.5),
                              np.array([0.844, 0.114, 0.042]), atol=5e-4)


def test_temperature_divides_logits():
  logits = np.random.default_rng(0).normal(size=(4, 7))
  for t in (0.3, 1.0, 2.5):
    want = np.stack([_softmax(row / t) for row in logits])
    chex.assert_trees_all_close(sampling.probabilities(logits, temperature=t), want, atol=1e-6)


def test_zero_temperature_is_greedy():
  logits = np.array([[0.1, 3.0, 2.9, -1.0], [5.0, 5.0, 1.0, 0.0]])  # second row: a tie
  want = np.array([[0, 1, 0, 0], [1, 0, 0, 0]], np.float32)  # ties go to the lower index
  chex.assert_trees_all_equal(sampling.probabilities(logits, temperature=0.0), want)
  # Traced temperature (under jit) takes the same path, and T -> 0 approaches it.
  traced = jax.jit(lambda t: sampling.probabilities(logits, temperature=t))
  chex.assert_trees_all_equal(traced(0.0), want)
  chex.assert_trees_all_close(sampling.probabilities(logits[:1], temperature=1e-3), want[:1],
                              atol=1e-6)
  keys = jax.random.split(jax.random.key(0), 50)
  draws = jax.vmap(lambda k: sampling.sample_logits(k, logits, temperature=0.0))(keys)
  chex.assert_trees_all_equal(draws, np.tile([1, 0], (50, 1)).astype(np.int32))


@pytest.mark.parametrize("k", [1, 3, 9, 20])
def test_top_k_keeps_exactly_k(k):
  logits = np.random.default_rng(k).normal(size=(16, 20))
  out = np.asarray(sampling.process_logits(logits, top_k=k))
  kept = np.isfinite(out)
  chex.assert_trees_all_equal(kept.sum(-1), np.full(16, k))
  for row, keep in zip(logits, kept):
    assert set(np.flatnonzero(keep)) == set(np.argsort(-row)[:k])
  probs = np.asarray(sampling.probabilities(logits, top_k=k))
  want = np.where(kept, np.exp(logits), 0.0)
  chex.assert_trees_all_close(probs, want / want.sum(-1, keepdims=True), atol=1e-6)


def test_top_k_ties_keep_exactly_k_lowest_indices():
  out = sampling.process_logits(np.zeros(6), top_k=2)
  chex.assert_trees_all_equal(np.isfinite(out), np.array([1, 1, 0, 0, 0, 0], bool))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.9, 0.99])
def test_top_p_matches_brute_force(p):
  logits = np.random.default_rng(int(p * 100)).normal(scale=1.5, size=(12, 8))
  out = np.asarray(sampling.process_logits(logits, top_p=p))
  for row, processed in zip(logits, out):
    assert set(np.flatnonzero(np.isfinite(processed))) == _nucleus_brute_force(_softmax(row), p)


def test_controls_compose_in_order():
  """Temperature, then top-k, then top-p on the renormalised top-k distribution."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(10, 8))
  t, k, p = 0.7, 5, 0.8
  probs = np.asarray(sampling.probabilities(logits, temperature=t, top_k=k, top_p=p))
  for row, got in zip(logits, probs):
    top = np.argsort(-row)[:k]
    after_k = np.zeros(8)
    after_k[top] = _softmax(row[top] / t)
    keep = list(_nucleus_brute_force(after_k, p))
    want = np.zeros(8)
    want[keep] = after_k[keep] / after_k[keep].sum()
    chex.assert_trees_all_close(got, want, atol=1e-6)


def test_sample_frequencies_match_probabilities():
  logits = jnp.array([1.5, 0.2, -0.3, 1.0, -2.0, 0.7])
  controls = {"temperature": 0.8, "top_k": 4, "top_p": 0.9}
  n = 20000
  draws = sampling.sample_logits(jax.random.key(0), jnp.broadcast_to(logits, (n, 6)), **controls)
  chex.assert_type(draws, jnp.int32)
  freq = np.bincount(np.asarray(draws), minlength=6) / n
  probs = np.asarray(sampling.probabilities(logits, **controls))
  assert (freq[probs == 0] == 0).all()
  chex.assert_trees_all_close(freq, probs, atol=4 * np.sqrt(0.25 / n))


def test_jit_with_traced_controls_matches_static():
  logits = np.random.default_rng(2).normal(size=(5, 11))
  jitted = jax.jit(lambda t, p: sampling.process_logits(logits, temperature=t, top_k=6, top_p=p))
  chex.assert_trees_all_close(jitted(0.6, 0.7),
                              sampling.process_logits(logits, temperature=0.6, top_k=6, top_p=0.7))


def test_controls_from_config():
  assert sampling.controls_from_config(ml_collections.ConfigDict({"temperature": 0.5})) == {
      "temperature": 0.5, "top_k": 0, "top_p": 1.0}
  cfg = ml_collections.ConfigDict({"temperature": 0.0, "top_k": 7, "top_p": 0.9, "num": 4})
  assert sampling.controls_from_config(cfg) == {"temperature": 0.0, "top_k": 7, "top_p": 0.9}
  for bad in ({"temperature": -1.0}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}):
    with pytest.raises(UserError):
      sampling.controls_from_config(ml_collections.ConfigDict(bad))


@pytest.mark.parametrize("name, spec", [
    ("transformer", DataSpec("tokens", "text", (16,), levels=10)),
    ("pixelcnn", DataSpec("tiny", "image", (4, 4, 1), levels=4, value_range=(-1.0, 1.0)))])
def test_bad_sampling_controls_fail_when_the_family_is_built(name, spec):
  """The families that sample from logits check ``config.sample``'s controls at construction,
  before any training, not at the first sample: the transformer as the pixel models."""
  for bad in ({"sample.top_k": -2}, {"sample.top_p": 1.5}):
    with pytest.raises(UserError, match="sample.top_"):
      families.build(load_config(name, **bad), spec)


def test_sample_label_minus_one_is_uniform_and_k_is_all_k():
  """``sample.label=-1``: labels uniform over the classes (chi-square goodness of fit over 20000
  draws, 6 classes), a function of the key alone; ``k``: class ``k`` for every sample."""
  uniform = ml_collections.ConfigDict({"label": -1})
  labels = np.asarray(sampling.labels_from_config(uniform, 6, jax.random.key(0), 20000))
  assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 5
  counts = np.bincount(labels, minlength=6)
  assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts
  chex.assert_trees_all_equal(sampling.labels_from_config(uniform, 6, jax.random.key(0), 20000), labels)
  assert not np.array_equal(sampling.labels_from_config(uniform, 6, jax.random.key(1), 20000), labels)
  for k in (0, 5):
    chex.assert_trees_all_equal(
        sampling.labels_from_config(ml_collections.ConfigDict({"label": k}), 6, jax.random.key(0), 7),
        np.full(7, k, np.int32))
  assert sampling.labels_from_config(uniform, 0, jax.random.key(0), 7) is None  # unconditional
  for bad in (6, -2):
    with pytest.raises(UserError, match=f"sample.label={bad}"):
      sampling.labels_from_config(ml_collections.ConfigDict({"label": bad}), 6, jax.random.key(0), 7)
  validate.validate(tiny_config("transformer", **{"sample.temperature": 0.0, "optim.model.warmup_steps": 0}))  # greedy
  with pytest.raises(UserError, match="sample.label=3 picks a class of a class-conditional model, and this model is "
                                      "unconditional"):
    sampling.labels_from_config(ml_collections.ConfigDict({"label": 3}), 0, jax.random.key(0), 7)
