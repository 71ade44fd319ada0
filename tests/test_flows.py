"""Normalizing flows: exact inverses, log-determinants against brute-force Jacobians, normalisation
of the density, bits/dim by hand, actnorm's data-dependent init, temperature sampling, and an
end-to-end run of the trainer."""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_config, tiny_config
from jaxgen import families, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn import bijectors as bj


def _key(seed):
  """An RBG key: its random initialisers compile several times faster than threefry's."""
  return jax.random.key(seed, impl="rbg")


def _normal(seed, shape, scale=1.0, shift=0.0):
  """Test inputs from numpy (no compilation, unlike eager jax.random)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32) * scale + shift)


def _perturb(tree, scale=0.2, seed=0):
  """Random offsets on every parameter, so couplings (zero-initialised) are far from the identity."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + scale * rng.standard_normal(x.shape, np.float32), tree)


def _init(module, x):
  variables = dict(jax.jit(module.init)(_key(1), x))
  variables["params"] = _perturb(variables.get("params", {}))
  return variables


def _check_bijection(apply, x, atol=1e-5):
  """x -> z -> x within ``atol``; reverse log-det = -forward; forward log-det = the brute-force
  ``log|det|`` of the dense Jacobian of each example. ``apply(x, reverse) -> (y, logdet)``."""

  def brute_force_logdet(xi):
    jac = jax.jacfwd(lambda v: apply(v[None], False)[0].ravel())(xi)
    return jnp.linalg.slogdet(jac.reshape(xi.size, xi.size))[1]

  @jax.jit  # one compilation for the whole check
  def run(x):
    z, logdet = apply(x, False)
    return z, logdet, *apply(z, True), jax.vmap(brute_force_logdet)(x)

  z, logdet, x_back, logdet_back, brute = run(x)
  chex.assert_shape(logdet, (x.shape[0],))
  chex.assert_equal_shape([x, x_back])
  np.testing.assert_allclose(x_back, x, atol=atol, rtol=0)
  np.testing.assert_allclose(logdet_back, -logdet, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(logdet, brute, atol=2e-4, rtol=1e-4)
  return z, logdet


IMAGE = _normal(0, (2, 4, 4, 2), 1.5, 0.3)

LAYERS = {
    "coupling_checkerboard_even": (lambda: bj.AffineCoupling("checkerboard", 0, 8, 2), IMAGE),
    "coupling_checkerboard_odd": (lambda: bj.AffineCoupling("checkerboard", 1, 8, 2), IMAGE),
    "coupling_channel_even": (lambda: bj.AffineCoupling("channel", 0, 8, 2), IMAGE),
    "coupling_channel_odd": (lambda: bj.AffineCoupling("channel", 1, 8, 2), IMAGE),
    "coupling_channel_vector": (lambda: bj.AffineCoupling("channel", 1, 8, 2), IMAGE.reshape(2, -1)[:, :5]),
    "squeeze": (bj.Squeeze, IMAGE),
    "unsqueeze": (bj.Unsqueeze, IMAGE.reshape(2, 2, 2, 8)),
    "actnorm": (bj.ActNorm, IMAGE),
    "invertible_conv1x1": (bj.InvertibleConv1x1, IMAGE.reshape(2, 2, 2, 8)),
    "logit": (lambda: bj.Logit((-1.0, 1.0), 0.05), jnp.tanh(IMAGE)),
    "factor_out": (lambda: bj.FactorOut(bj.Chain([bj.ActNorm(), bj.AffineCoupling("checkerboard", 0, 8, 2)])),
                   IMAGE.reshape(2, 4, 2, 4)),
}


def _glow_step():
  return [bj.ActNorm(), bj.InvertibleConv1x1(), bj.AffineCoupling("channel", 0, 8, 2)]


def _unstack(variables, n):
  """A ``Repeat(lambda: Chain(_glow_step()), n)``'s variables as those of the unrolled
  ``Chain(_glow_step() * n)``: step ``j``'s layer ``t`` is the chain's ``layers_{3 j + t}``."""
  names = ("ActNorm_0", "InvertibleConv1x1_0", "AffineCoupling_0")
  return {collection: {f"layers_{3 * j + t}": jax.tree.map(lambda a, j=j: a[j], tree["steps"][name])
                       for j in range(n) for t, name in enumerate(names) if name in tree["steps"]}
          for collection, tree in variables.items()}


def test_repeat_is_the_unrolled_chain_and_initialises_each_actnorm_on_its_input():
  """``Repeat`` computes the unrolled chain's function from the same (unstacked) parameters, both
  ways (reverse runs the last step first), so it is a bijection with the chain's log-det (each
  layer's is checked above), and its ``init`` sets each step's actnorm from the activations
  reaching it (inside the scan), so each standardises its input on the first batch."""
  x = _normal(6, (16, 4, 4, 2), np.array([0.1, 2.0]), np.array([3.0, -1.0]))
  n = 3
  scanned = bj.Repeat(lambda: bj.Chain(_glow_step()), n)
  unrolled = bj.Chain([layer for _ in range(n) for layer in _glow_step()])
  initial = jax.jit(scanned.init)(_key(1), x)
  _, captured = jax.jit(lambda v: unrolled.apply(
      v, x, capture_intermediates=lambda m, _: isinstance(m, bj.ActNorm), mutable=["intermediates"]))(
          _unstack(initial, n))
  outputs = [captured["intermediates"][f"layers_{3 * j}"]["__call__"][0][0] for j in range(n)]
  for y in outputs:
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
  rotations = initial["params"]["steps"]["InvertibleConv1x1_0"]["lower"]  # [n, C, C]
  assert float(jnp.max(jnp.abs(rotations[1] - rotations[0]))) > 0.1  # each step draws its own

  variables = {**initial, "params": _perturb(initial["params"])}

  def both_ways(module):
    return jax.jit(lambda v: (*module.apply(v, x), *module.apply(v, jnp.flip(x, 0), reverse=True)))

  chex.assert_trees_all_close(both_ways(scanned)(variables), both_ways(unrolled)(_unstack(variables, n)),
                              atol=1e-5, rtol=1e-5)


def test_glow_scan_steps_traces_one_step_whatever_k():
  """With ``model.scan_steps`` the loss's program holds one step per level for any K (what keeps
  ``glow_cifar10``'s compile time flat); unrolled, it holds K."""
  spec = _image_spec()
  x = jax.ShapeDtypeStruct((2, 4, 4, 1), jnp.float32)

  def convolutions(k, scan):
    config = _tiny("glow")
    config.model.steps_per_level, config.model.scan_steps = k, scan
    family = families.build(config, spec)
    params, state = jax.eval_shape(family.init, _key(0), {"x": x})
    text = jax.jit(family.loss).lower(params, state, {"x": x}, None).as_text()
    return text.count("stablehlo.convolution")

  assert convolutions(1, True) == convolutions(4, True) > 0
  assert convolutions(4, False) == 4 * convolutions(1, False)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverse_and_logdet(name):
  make, x = LAYERS[name]
  module = make()
  variables = _init(module, x)
  z, _ = _check_bijection(lambda v, reverse: module.apply(variables, v, reverse=reverse), x)
  assert float(jnp.max(jnp.abs(z - x.reshape(z.shape)))) > 1e-2 or name in ("squeeze", "unsqueeze")


def test_squeeze_moves_2x2_blocks_to_channels():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = bj.squeeze2d(x)
  chex.assert_shape(y, (1, 2, 2, 4))
  np.testing.assert_array_equal(y[0, 0, 0], [0, 1, 4, 5])  # the top-left 2x2 block, row-major
  np.testing.assert_array_equal(y[0, 1, 1], [10, 11, 14, 15])


def test_factor_out_keeps_first_half_of_channels():
  x = _normal(3, (2, 2, 2, 4))
  module = bj.FactorOut(bj.ActNorm())
  y, _ = module.apply(_init(module, x), x)
  np.testing.assert_array_equal(y[..., :2], x[..., :2])


def test_conv1x1_is_lu_of_a_rotation_at_init():
  x = _normal(4, (5, 2, 2, 6))
  module = bj.InvertibleConv1x1()
  variables = module.init(_key(5), x)
  y, logdet = module.apply(variables, x)
  w = jnp.linalg.lstsq(x.reshape(-1, 6), y.reshape(-1, 6))[0].T  # y = x W^T
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-4)
  np.testing.assert_allclose(logdet, 0.0, atol=1e-4)


def test_actnorm_data_dependent_init_standardises_first_batch():
  x = _normal(6, (16, 4, 4, 3), np.array([0.1, 2.0, 5.0]), np.array([3.0, -1.0, 0.5]))
  module = bj.ActNorm()
  y, _ = module.apply(module.init(_key(0), x), x)
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)


# --- whole models --------------------------------------------------------------------------------


def _image_spec(shape=(4, 4, 1), levels=4):
  return DataSpec("tiny", "image", shape, levels=levels, value_range=(-1.0, 1.0), dequantized=True)


def _family(config, spec, x):
  family = families.build(config, spec)
  params, state = jax.jit(family.init)(_key(1), {"x": x})
  return family, _perturb(params, 0.05), state


def _tiny(name, **overrides):
  """``configs/<name>.py`` with narrow conditioners and few layers (the data/train fields kept)."""
  c = tiny_config(name, **overrides)
  c.model.hidden = 8
  if name == "realnvp":
    c.model.num_scales, c.model.couplings = 2, 1
  if name == "glow":
    c.model.num_levels, c.model.steps_per_level = 2, 1
  if name == "flow2d":
    c.model.num_layers = 4
  return c


@pytest.mark.parametrize("name", ["realnvp", "glow", "flow2d"])
def test_model_inverse_and_logdet(name):
  config = _tiny(name)
  if name == "flow2d":
    spec = DataSpec("toy", "points", (2,))
    x = _normal(0, (8, 2), 2.0)
  else:
    spec = _image_spec()
    x = jnp.tanh(_normal(0, (2, 4, 4, 1)))
  family, params, state = _family(config, spec, x)
  variables = family._variables(params, state)
  _check_bijection(lambda v, reverse: family.net.apply(variables, v, reverse=reverse), x)


def test_flow2d_heldout_nll_is_an_exact_density_on_points():
  """``exp(-nll_nats)`` of ``eval_metrics`` on the cell centres of a 400x400 grid over
  [-9, 11]^2 integrates to 1: the per-point ``nll_nats`` is the exact ``-log p(x)``, no offset."""
  spec = DataSpec("toy", "points", (2,))
  x = _normal(7, (256, 2), np.array([1.0, 0.5]), 1.0)
  family, params, state = _family(_tiny("flow2d"), spec, x)
  size, lo, hi = 400, -9.0, 11.0
  centres = lo + (np.arange(size) + 0.5) * (hi - lo) / size
  grid = np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2).astype(np.float32)
  metrics = jax.jit(family.eval_metrics)(params, state, {"x": grid}, None)
  chex.assert_shape(metrics["nll_nats"], (size * size,))
  integral = np.exp(-np.asarray(metrics["nll_nats"], np.float64)).sum() * ((hi - lo) / size) ** 2
  assert abs(integral - 1.0) < 0.01, integral
  np.testing.assert_allclose(metrics["bits_per_dim"], metrics["nll_nats"] / (2 * math.log(2)), rtol=1e-6)


def test_base_distribution_bits_per_dim_by_hand():
  """Zero-initialised couplings make RealNVP (no logit) the identity on a 2x2x1 image (D = 4), so
  NLL = 0.5 sum x^2 + (D/2) log(2 pi) and bits/dim = (NLL + D log(levels / 2)) / (D ln 2)."""
  config = _tiny("realnvp")
  config.model.num_scales, config.model.logit_alpha = 1, 0.0
  spec = _image_spec((2, 2, 1), levels=4)
  x = jnp.array([[[[0.5], [-0.25]], [[0.75], [0.0]]]])
  family = families.build(config, spec)
  params, state = family.init(_key(0), {"x": x})
  metrics = family.eval_metrics(params, state, {"x": x}, None)
  nll = 0.5 * 0.875 + 2 * math.log(2 * math.pi) + 4 * math.log(4 / 2)
  np.testing.assert_allclose(metrics["nll_nats"], [nll], rtol=1e-6)
  np.testing.assert_allclose(metrics["bits_per_dim"], [nll / (4 * math.log(2))], rtol=1e-6)


def test_temperature_scales_base_std():
  """Samples are f^{-1}(T z): mapped back through the flow they have std T (not T^2, not 1)."""
  spec = DataSpec("toy", "points", (2,))
  config = _tiny("flow2d")
  config.sample.temperature = 0.5
  x = _normal(8, (256, 2), 3.0)
  family, params, state = _family(config, spec, x)

  @jax.jit
  def latents(params, state, rng):
    return family.net.apply(family._variables(params, state), family.sample(params, state, rng, 4000))[0]

  np.testing.assert_allclose(jnp.std(latents(params, state, jax.random.key(9)), axis=0), 0.5, atol=0.02)


def test_flows_refuse_unsuitable_data():
  with pytest.raises(UserError, match="dequantize=True"):
    families.build(_tiny("glow"), DataSpec("tiny", "image", (4, 4, 1), levels=4))
  with pytest.raises(UserError, match="flow2d"):
    families.build(_tiny("realnvp"), DataSpec("toy", "points", (2,)))
  with pytest.raises(UserError, match="num_levels=3"):
    config = _tiny("glow")
    config.model.num_levels = 3
    families.build(config, _image_spec())


@pytest.mark.parametrize("name, shape", [("realnvp_cifar10", (32, 32, 3)), ("glow_cifar10", (32, 32, 3)),
                                         ("glow_mnist", (28, 28, 1))])
def test_paper_sized_configs_fit_their_data(name, shape, monkeypatch):
  monkeypatch.syspath_prepend(ROOT)  # the variants import their base config as configs.<name>
  spec = DataSpec(name, "image", shape, levels=256, value_range=(-1.0, 1.0), dequantized=True)
  family = families.build(load_config(name), spec)
  params = jax.eval_shape(family.init, _key(0), {"x": jax.ShapeDtypeStruct((2, *shape), jnp.float32)})[0]
  assert sum(x.size for x in jax.tree.leaves(params)) > 1_000_000


# --- end to end ----------------------------------------------------------------------------------


def test_realnvp_trains_and_evaluates_end_to_end(workdir):
  config = _tiny("realnvp", **{"train.steps": 30, "train.batch_size": 32, "train.checkpoint_every": 30,
                               "train.ema_decay": 0.0, "optim.default.learning_rate": 3e-3})
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", "step_30.json")) as f:
    results = json.load(f)
  # bits/dim and nats are two views of the same NLL; 8x8 digits with 17 levels are < 4.09 bits/dim
  # (uniform) and a 30-step flow is already well below the untrained ~5.3.
  np.testing.assert_allclose(results["nll_nats"] / (64 * math.log(2)), results["bits_per_dim"], rtol=1e-5)
  assert 1.0 < results["bits_per_dim"] < 4.0, results
  assert os.path.exists(os.path.join(workdir, "samples", "step_30.png"))


def test_flow2d_learns_moons_and_plots_density(workdir):
  config = _tiny("flow2d", **{"train.steps": 300, "train.batch_size": 128, "train.checkpoint_every": 300,
                              "data.num_points": 4096, "eval.batch_size": 256, "train.ema_decay": 0.9,
                              "optim.default.learning_rate": 3e-3})
  config.model.hidden = 32
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "eval", "step_300.json")) as f:
    results = json.load(f)
  exp = train.setup(config, workdir)
  points = exp.data.held_out(1000)["x"]
  # The best Gaussian (maximum likelihood, full covariance) has NLL 0.5 log det(2 pi e Sigma); a
  # flow bends its density onto the two moons and must do clearly better.
  gaussian_nll = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * np.cov(points.T))[1]
  assert results["nll_nats"] < gaussian_nll - 0.3, (results, gaussian_nll)
  assert os.path.getsize(os.path.join(workdir, "samples", "density_step_300.png")) > 1000  # configs/flow2d.py's
