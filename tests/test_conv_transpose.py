"""The sub-pixel ConvTranspose equals flax's: same parameters, same outputs, same gradients."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxgen.nn import conv_transpose


class _Wrap(nn.Module):
  layer: type
  kernel: tuple[int, int]
  strides: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    return self.layer(5, self.kernel, strides=self.strides, padding="SAME")(x)


@pytest.mark.parametrize("kernel,strides,size", [((4, 4), (2, 2), (4, 4)), ((4, 4), (2, 2), (3, 5)),
                                                 ((2, 2), (2, 2), (4, 3)), ((6, 3), (2, 3), (3, 4)),
                                                 ((3, 3), (1, 1), (5, 5))])
def test_matches_flax_conv_transpose_in_params_values_and_gradients(kernel, strides, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 3))
  ours, theirs = _Wrap(conv_transpose.ConvTranspose, kernel, strides), _Wrap(nn.ConvTranspose, kernel, strides)
  params = theirs.init(jax.random.key(1), x)
  chex.assert_trees_all_equal(ours.init(jax.random.key(1), x), params)  # same names, shapes, initialisers
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)  # nonzero bias
  y = ours.apply(params, x)
  assert y.shape == (2, size[0] * strides[0], size[1] * strides[1], 5)
  chex.assert_trees_all_close(y, theirs.apply(params, x), atol=1e-5, rtol=1e-5)

  def grads(module):
    return jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))(params, x)

  chex.assert_trees_all_close(grads(ours), grads(theirs), atol=1e-4, rtol=1e-4)


def test_phase_taps_of_the_dcgan_layer():
  """4 x 4, stride 2, SAME: lax pads the dilated input by 2, so even outputs read input rows
  m - 1, m through taps 0, 2 and odd outputs rows m, m + 1 through taps 1, 3."""
  taps, lo, hi = conv_transpose.phase_taps(4, 2, 0)
  assert (taps.tolist(), lo, hi) == ([0, 2], 1, 0)
  taps, lo, hi = conv_transpose.phase_taps(4, 2, 1)
  assert (taps.tolist(), lo, hi) == ([1, 3], 0, 1)


def test_other_paddings_are_refused():
  with pytest.raises(ValueError, match="padding='SAME'"):
    conv_transpose.ConvTranspose(2, (3, 3), (2, 2)).init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
