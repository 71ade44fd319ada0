"""Spectral normalisation (Miyato et al. 2018) as the GAN family uses it: ``flax.linen.SpectralNorm``
with its power-iteration vectors in the ``spectral`` collection, checked against numpy's SVD."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxgen import families
from jaxgen.data.spec import DataSpec
from jaxgen.families.gan import SPECTRAL, PointDiscriminator


def _run_power_iterations(layer, variables, x, n):
  for _ in range(n):
    _, updates = layer.apply(variables, x, update_stats=True, mutable=[SPECTRAL])
    variables = {**variables, **updates}
  return variables


@pytest.mark.parametrize("inner,x", [
    (nn.Dense(5), np.ones((1, 7), np.float32)),
    (nn.Conv(4, (3, 3), padding="SAME"), np.ones((1, 3, 3, 6), np.float32))])
def test_power_iteration_estimate_converges_to_the_largest_singular_value(inner, x):
  """sigma = v W u^T from unit power-iteration vectors is a lower bound of ||W||_2 that converges to
  it; a conv kernel [kh, kw, in, out] counts as the matrix [kh * kw * in, out]."""
  layer = nn.SpectralNorm(inner, collection_name=SPECTRAL)
  variables = layer.init(jax.random.key(0), x, update_stats=False)
  kernel = np.asarray(variables["params"]["layer_instance"]["kernel"], np.float64)
  exact = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2)
  sigmas = []
  for _ in range(4):
    variables = _run_power_iterations(layer, variables, x, 1)
    sigmas.append(float(variables[SPECTRAL]["layer_instance/kernel/sigma"]))
  assert all(s <= exact * (1 + 1e-6) for s in sigmas), (sigmas, exact)
  variables = _run_power_iterations(layer, variables, x, 200)
  np.testing.assert_allclose(float(variables[SPECTRAL]["layer_instance/kernel/sigma"]), exact, rtol=1e-5)
  u = np.asarray(variables[SPECTRAL]["layer_instance/kernel/u"])
  np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)


@pytest.mark.parametrize("inner,x,centre", [
    (nn.Dense(5), np.ones((1, 7), np.float32), (0,)),
    (nn.Conv(4, (3, 3), padding="SAME"), np.ones((1, 3, 3, 6), np.float32), (0, 1, 1))])
def test_normalised_layer_has_spectral_norm_one(inner, x, centre):
  """The normalised layer's linear part has operator norm 1. Dense: the Jacobian of x -> x W / sigma.
  Conv 3x3 (SAME) on a 3x3 input: the centre output sees every input pixel through the whole
  kernel, so its Jacobian is the normalised kernel as a [9 * in, out] matrix."""
  layer = nn.SpectralNorm(inner, collection_name=SPECTRAL)
  variables = layer.init(jax.random.key(1), x, update_stats=False)
  variables["params"] = jax.tree.map(lambda p: 3.0 * p, variables["params"])  # ||W|| far from 1
  kernel = np.asarray(variables["params"]["layer_instance"]["kernel"])
  assert np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2) > 1.5
  variables = _run_power_iterations(layer, variables, x, 200)
  jac = np.asarray(jax.jacobian(lambda v: layer.apply(variables, v, update_stats=False)[centre])(x))
  np.testing.assert_allclose(np.linalg.norm(jac.reshape(jac.shape[0], -1), 2), 1.0, rtol=1e-4)


def _point_gan(spectral_norm: bool):
  config = tiny_config("gan", **{"model.hidden": (16, 16), "model.spectral_norm": spectral_norm})
  return families.build(config, DataSpec("points", "points", (2,)))


def test_spectrally_normalised_point_discriminator_is_1_lipschitz():
  """Each normalised weight has norm 1 and LeakyReLU is 1-Lipschitz, so ||grad_x D(x)|| <= 1 once u has
  converged, while the same weights without normalisation have gradients far above 1."""
  gan = _point_gan(True)
  x = jax.random.normal(jax.random.key(0), (64, 2))
  params, state = gan.init(jax.random.key(1), {"x": x})
  params = {**params, "disc": jax.tree.map(lambda p: 4.0 * p, params["disc"])}
  raw = PointDiscriminator((16, 16))
  raw_norms = jnp.linalg.norm(jax.vmap(jax.grad(lambda v: raw.apply({"params": params["disc"]["layer_instance"]},
                                                                    v[None])[0]))(x), axis=-1)
  assert float(jnp.max(raw_norms)) > 5.0
  advance = jax.jit(lambda state: gan._critic(params, state, x, None, update=True)[1])
  for _ in range(100):
    state = advance(state)
  norms = jnp.linalg.norm(jax.vmap(jax.grad(lambda v: gan._critic(params, state, v[None], None)[0][0]))(x), axis=-1)
  assert float(jnp.max(norms)) <= 1.0 + 1e-4


def test_discriminator_update_advances_u_once_per_critic_evaluation():
  """The discriminator's loss evaluates the critic on the real batch, then on the fakes: u advances by
  two power iterations u <- normalize(normalize(u W^T) W) (numpy); the generator's loss leaves it."""
  gan = _point_gan(True)
  x = jax.random.normal(jax.random.key(0), (16, 2))
  params, state = gan.init(jax.random.key(1), {"x": x})
  _, (_, after_disc) = gan.disc_loss(params, state, {"x": x}, jax.random.key(2))
  _, (_, after_gen) = gan.gen_loss(params, state, {"x": x}, jax.random.key(3))
  for name in ("Dense_0", "Dense_1", "Dense_2"):
    w = np.asarray(params["disc"]["layer_instance"]["MLP_0"][name]["kernel"], np.float64)
    key = f"layer_instance/MLP_0/{name}/kernel/u"
    u = np.asarray(state["disc"][SPECTRAL][key], np.float64)
    for _ in range(2):
      v = u @ w.T
      v /= np.linalg.norm(v)
      u = v @ w
      u /= np.linalg.norm(u)
    np.testing.assert_allclose(np.asarray(after_disc["disc"][SPECTRAL][key]), u, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(after_gen["disc"][SPECTRAL][key]),
                                  np.asarray(state["disc"][SPECTRAL][key]))
