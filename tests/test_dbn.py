"""DBN: each phase trains exactly one layer on the hidden probabilities of the layer below, the
other layers stay unchanged and resume is exact across the layer boundary, sampling shape and
range, and the AIS bound against the exact log-likelihood of a tiny DBN."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from conftest import compiled_init, load_config, tiny_config
from jaxgen import families, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn.rbm import RBM

BINARY = DataSpec("digits", "image", (1, 5, 1), levels=2, value_range=(0.0, 1.0))


def _family(**model):
  config = load_config("dbn", **{"model.layers": (4, 3), "model.steps_per_layer": 2, "model.cd_k": 2,
                                 "model.persistent_chains": 6, **{f"model.{k}": v for k, v in model.items()}})
  return families.build(config, BINARY)


def _setup(fam, seed=0):
  v = np.random.default_rng(seed).integers(0, 2, (4, 5)).astype(np.float32)
  batch = {"x": jnp.asarray(v.reshape(4, 1, 5, 1))}
  params, state = compiled_init(fam, seed, batch)
  # Non-trivial weights, so that the layers' inputs differ visibly.
  params = {"model": jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.key(9), p.shape), params["model"])}
  return v, batch, params, state


@pytest.mark.parametrize("step,layer", [(1, 0), (7, 1)])  # 7: the top layer trains on after 2 x 2 steps
def test_each_phase_trains_one_layer_on_the_hidden_probabilities_below(step, layer):
  """At ``step``, the gradient of the active layer equals the RBM's CD gradient on its input (the
  data for layer 0, p(h | v) of layer 0 computed in numpy for layer 1) with the same key and chains;
  the other layer's gradient is exactly zero; only the active layer's chains move; the counter steps."""
  fam = _family()
  v, batch, params, state = _setup(fam)
  state = {"model": {**state["model"], "schedule": {"step": jnp.asarray(step, jnp.int32)}}}
  key = jax.random.key(3)
  loss_fn = fam.update_groups()[0].loss_fn
  grads, (metrics, new_state) = jax.jit(jax.grad(lambda p: loss_fn(p, state, batch, key), has_aux=True))(params)
  p0 = {k: np.asarray(x, np.float64) for k, x in params["model"]["layer_0"].items()}
  x = v if layer == 0 else scipy.special.expit(p0["hidden_bias"] + v @ p0["w"])
  chains = state["model"]["chains"][f"layer_{layer}"]
  expected = jax.grad(lambda p: RBM("bernoulli").cd_surrogate(p, jnp.asarray(x, jnp.float32), chains, key, 2)[0])(
      params["model"][f"layer_{layer}"])
  chex.assert_trees_all_close(grads["model"][f"layer_{layer}"], expected, atol=1e-6)
  other = f"layer_{1 - layer}"
  chex.assert_trees_all_equal(grads["model"][other], jax.tree.map(jnp.zeros_like, params["model"][other]))
  assert float(metrics["layer"]) == layer
  assert int(new_state["model"]["schedule"]["step"]) == step + 1
  np.testing.assert_array_equal(new_state["model"]["chains"][other], state["model"]["chains"][other])
  assert np.any(np.asarray(new_state["model"]["chains"][f"layer_{layer}"]) != np.asarray(chains))


def test_resume_is_exact_across_the_layer_boundary_and_finished_layers_stay_fixed(tmp_path):
  """Layer 0 trains in steps 0-1, layer 1 from step 2. 4 steps in one go == 3 steps, stop, resume to
  4 (the split run crossed the boundary and resumes inside layer 1's phase), bit for bit; layer 0's
  params are the same at steps 3 and 4, layer 1's moved."""
  overrides = {"model.layers": (8, 6), "model.steps_per_layer": 2, "model.persistent_chains": 8,
               "eval.metrics": ("heldout",), "train.checkpoint_every": 3}
  full = train.train_and_evaluate(tiny_config("dbn", **overrides), str(tmp_path / "full"))
  split = str(tmp_path / "split")
  at_3 = jax.device_get(train.train_and_evaluate(tiny_config("dbn", **{**overrides, "train.steps": 3}), split))
  resumed = train.train_and_evaluate(tiny_config("dbn", **overrides), split)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  full = jax.device_get(full)
  chex.assert_trees_all_equal(at_3.params["model"]["layer_0"], full.params["model"]["layer_0"])
  assert np.any(at_3.params["model"]["layer_1"]["w"] != full.params["model"]["layer_1"]["w"])
  assert int(full.state["model"]["schedule"]["step"]) == 4


@pytest.mark.parametrize("final_mean", [True, False])
def test_samples_have_the_data_shape_and_range(final_mean):
  fam = _family()
  fam.config.sample.final_mean = final_mean
  fam.config.sample.gibbs_steps = 3
  _, _, params, state = _setup(fam)
  x = np.asarray(jax.jit(lambda p, k: fam.sample(p, state, k, 7))(params, jax.random.key(1)))
  assert x.shape == (7, 1, 5, 1)
  assert np.all((x >= 0) & (x <= 1))
  if final_mean:
    assert not np.all(np.isin(x, [0.0, 1.0]))  # probabilities
  else:
    assert np.all(np.isin(x, [0.0, 1.0]))  # binary draws
    assert 0 < x.mean() < 1


def _states(n):
  return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def test_ais_integrand_is_a_lower_bound_of_the_exact_log_likelihood():
  """Tiny 5-4-3 DBN: log p(v) + log Z_top = logsumexp_{h1} [log p(v | h1) - F_top(h1)] by enumeration.
  The expectation of the family's one-sample integrand (by enumeration over h1 ~ q(h1 | v)) is below
  it by exactly KL(q(h1 | v) || p(h1 | v)) >= 0, and the mean of 4000 samples matches the expectation."""
  fam = _family()
  v, batch, params, state = _setup(fam)
  p0, p1 = ({k: np.asarray(x, np.float64) for k, x in params["model"][f"layer_{l}"].items()} for l in (0, 1))
  h1 = _states(4)
  logits = p0["visible_bias"] + h1 @ p0["w"].T  # [16, V]: p(v | h1) of every h1
  log_p_v_given_h = v @ logits.T - np.sum(np.logaddexp(0, logits), 1)
  f_top = -h1 @ p1["visible_bias"] - np.sum(np.logaddexp(0, p1["hidden_bias"] + h1 @ p1["w"]), 1)
  joint = log_p_v_given_h - f_top  # [B, 16]: log p(v, h1) + log Z_top
  exact = scipy.special.logsumexp(joint, axis=1)
  q = scipy.special.expit(p0["hidden_bias"] + v @ p0["w"])  # [B, 4]
  log_q = h1 @ np.log(q).T + (1 - h1) @ np.log1p(-q).T  # [16, B]
  bound = np.sum(np.exp(log_q.T) * (joint - log_q.T), axis=1)
  kl = np.sum(np.exp(log_q.T) * (log_q.T - (joint - exact[:, None])), axis=1)
  np.testing.assert_allclose(bound, exact - kl, rtol=1e-6)
  assert np.all(kl > 1e-3)
  draw = jax.jit(jax.vmap(lambda k: fam.unnormalized_log_prob(params, batch, k)))
  samples = np.asarray(draw(jax.random.split(jax.random.key(2), 4000)), np.float64)
  np.testing.assert_allclose(samples.mean(0), bound, atol=4 * samples.std(0).max() / np.sqrt(4000) + 1e-4)
  one_layer = families.build(load_config("dbn", **{"model.layers": (4,)}), BINARY)
  layer_0 = params["model"]["layer_0"]
  np.testing.assert_allclose(one_layer.unnormalized_log_prob({"model": {"layer_0": layer_0}}, batch, jax.random.key(0)),
                             -RBM("bernoulli").free_energy(layer_0, jnp.asarray(v)), rtol=1e-6)


def test_bad_configs_raise_user_errors():
  with pytest.raises(UserError, match="plain SGD"):
    families.build(load_config("dbn", **{"optim.default.momentum": 0.9}), BINARY)
  with pytest.raises(UserError, match="model.layers"):
    families.build(load_config("dbn", **{"model.layers": (4, 0)}), BINARY)
  with pytest.raises(UserError, match="binarize"):
    families.build(load_config("dbn"), DataSpec("digits", "image", (8, 8, 1), levels=17))
