"""The trainer's contract, checked by hand on a family whose gradients and randomness are known.

* EMA: ``ema <- d_t ema + (1 - d_t) params`` after every step, ``d_t = min(decay, (1 + t) / (10 + t))``.
* Randomness: step ``k``, update group ``g``, repeat ``r`` uses
  ``fold_in(fold_in(fold_in(fold_in(key(seed), 1), k), g), r)`` -- a fresh key each time.
* A non-finite step is never saved, even when a checkpoint is due at that very step; ``every = 1``
  saves every step.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxgen import train
from jaxgen.errors import NonFiniteLossError
from jaxgen.families.base import FAMILIES, Family, UpdateGroup

GRAD = {"a": np.array([1.0, -2.0, 0.5], np.float32), "b": np.array([3.0, 0.25], np.float32)}
INIT = {"a": np.array([0.5, 1.5, -1.0], np.float32), "b": np.array([-2.0, 4.0], np.float32)}
CALLS = 3  # a twice (repeats=2), then b once, per step


@FAMILIES.register("test_contract_linear")
class LinearRecorder(Family):
  """Two networks with linear losses ``<w, g>`` (constant gradient ``g``); every loss call writes
  its rng key into the state, so the test sees the key of each group, repeat and step."""

  networks = ("a", "b")

  def init(self, rng, batch):
    params = {n: {"w": jnp.asarray(INIT[n])} for n in self.networks}
    keys = jnp.zeros((4 * CALLS, 2), jnp.uint32)  # room for 4 steps
    return params, {"rec": {"log": {"keys": keys, "n": jnp.zeros((), jnp.int32)}}}

  def _loss(self, net):
    def loss_fn(params, state, batch, rng):
      log = state["rec"]["log"]
      keys = log["keys"].at[log["n"]].set(jax.random.key_data(rng))
      new_state = {"rec": {"log": {"keys": keys, "n": log["n"] + 1}}}
      loss = jnp.sum(params[net]["w"] * GRAD[net]) + 0.0 * jnp.mean(batch["x"])
      return loss, ({}, new_state)
    return loss_fn

  def update_groups(self):
    return [UpdateGroup("a", self._loss("a"), repeats=2), UpdateGroup("b", self._loss("b"))]

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


def _linear_config(**overrides):
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "seed": 7, **overrides})
  config.model.family = "test_contract_linear"
  config.optim.default.name = "sgd"
  config.optim.default.momentum = 0.0
  config.optim.default.learning_rate = 0.1
  return config


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
  """(config, [state after step 0, 1, 2, 3]) of three compiled train steps, EMA decay 0.2."""
  config = _linear_config(**{"train.ema_decay": 0.2})
  exp = train.setup(config, str(tmp_path_factory.mktemp("contract")))
  step = train.make_train_step(exp)
  ts = jax.jit(train._init_fn(exp))(exp.data.train_batch(0))
  states = [jax.device_get(ts)]
  for k in range(3):
    ts, _ = step(ts, exp.data.train_batch(k))
    states.append(jax.device_get(ts))
  return config, states


def test_ema_is_decay_times_ema_plus_rest_times_params_by_hand(two_steps):
  config, states = two_steps
  lr, decay = config.optim.default.learning_rate, config.train.ema_decay
  for net, repeats in (("a", 2), ("b", 1)):
    w, ema = INIT[net].astype(np.float64), INIT[net].astype(np.float64)
    for t in range(3):
      w = w - repeats * lr * GRAD[net]  # SGD on a linear loss: every repeat moves by lr * g
      d = min(decay, (1 + t) / (10 + t))  # warm-up 1/10, 2/11, then the decay 0.2 (< 3/12)
      ema = d * ema + (1 - d) * w
      np.testing.assert_allclose(states[t + 1].params[net]["w"], w, rtol=1e-6)
      np.testing.assert_allclose(states[t + 1].ema_params[net]["w"], ema, rtol=1e-6)
    assert int(states[3].step) == 3


def test_every_step_group_and_repeat_uses_its_documented_fresh_key(two_steps):
  config, states = two_steps
  log = states[3].state["rec"]["log"]
  assert int(log["n"]) == 3 * CALLS
  train_stream = jax.random.fold_in(jax.random.key(config.seed), 1)
  want = []
  for k in range(3):
    step_key = jax.random.fold_in(train_stream, k)
    for g, r in ((0, 0), (0, 1), (1, 0)):
      want.append(jax.random.key_data(jax.random.fold_in(jax.random.fold_in(step_key, g), r)))
  got = np.asarray(log["keys"][:3 * CALLS])
  np.testing.assert_array_equal(got, np.stack(want))
  assert len({tuple(row) for row in got}) == 3 * CALLS  # no key is reused


def test_ema_decay_zero_makes_the_ema_the_params(tmp_path):
  config = _linear_config(**{"train.ema_decay": 0.0})
  exp = train.setup(config, str(tmp_path))
  ts = jax.jit(train._init_fn(exp))(exp.data.train_batch(0))
  ts, _ = train.make_train_step(exp)(ts, exp.data.train_batch(0))
  np.testing.assert_array_equal(ts.ema_params["a"]["w"], INIT["a"] - 2 * 0.1 * GRAD["a"])


@FAMILIES.register("test_contract_sqrt")
class SqrtOvershoot(Family):
  """loss = sqrt(w), w = 1, SGD with lr 3: step 1 moves w to 1 - 3/2 < 0, so step 2 is NaN."""

  def init(self, rng, batch):
    return {"model": {"w": jnp.ones(())}}, {}

  def update_groups(self):
    return [UpdateGroup("model", lambda p, s, b, r: (jnp.sqrt(p["model"]["w"]) + 0.0 * jnp.mean(b["x"]), ({}, s)))]

  def sample(self, params, state, rng, num):
    return jnp.zeros((num, 2))


def test_a_non_finite_step_due_for_a_checkpoint_is_not_saved(workdir):
  """checkpoint_every=1: step 1 is saved, step 2 (NaN) is due but refused."""
  config = tiny_config("gan", **{"data.name": "toy2d/ring8", "train.steps": 4, "train.checkpoint_every": 1,
                                 "train.log_every": 1000})
  config.model.family = "test_contract_sqrt"
  config.optim.default.name = "sgd"
  config.optim.default.momentum = 0.0
  config.optim.default.learning_rate = 3.0
  with pytest.raises(NonFiniteLossError, match="step 2: model/loss=nan"):
    train.train_and_evaluate(config, workdir)
  assert sorted(d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == ["1"]
