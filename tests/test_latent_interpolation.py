"""Latent interpolation of the random-latent families (GAN, flows, DDPM decoded by DDIM with eta = 0).

The grid's endpoints are the latents' decodings (= the family's samples of those latents), flows
reproduce their latents (``f(f^{-1}(z)) = z``, ``f^{-1}(f(x)) = x``), DDIM with eta = 0 is a
deterministic map equal to the ``ddim`` sampler from the same ``x_T``, and ``slerp``'s norm and
angle follow their closed forms. The encoder families' endpoints are tested in ``test_vae.py``.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from conftest import tiny_config
from jaxgen import families, parallel
from jaxgen.data.spec import DataSpec
from jaxgen.evaluation import interpolation

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, num_classes=10)
POINTS = DataSpec("toy", "points", (2,))
PAIRS, STEPS = 2, 3


def _build(name, spec, **overrides):
  """A family and its parameters, each perturbed (untrained networks start near identity / zero)."""
  family = families.build(tiny_config(name, **overrides), spec)
  x = jax.random.uniform(jax.random.key(1), (4, *spec.shape), minval=-0.9, maxval=0.9)

  def init(batch):
    params, state = family.init(jax.random.key(0), batch)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy), state

  params, state = jax.jit(init)({"x": x, "label": jnp.arange(4)})
  return family, params, state, x


def _interpolate(family, params, state, rng):
  """The evaluator's paths ``[PAIRS, STEPS, ...]`` between ``family.sample_latent(rng, 2 PAIRS)``."""
  return interpolation.interpolate(family, params, state, rng=rng, pairs=PAIRS, steps=STEPS)


def test_slerp_follows_its_closed_form_norm_and_angle_profile():
  """For latents of norms ``r_a, r_b`` at angle ``w``: ``|p(t)|^2 = (s_a^2 r_a^2 + s_b^2 r_b^2 +
  2 s_a s_b r_a r_b cos w) / sin^2 w`` (``s_a = sin((1-t) w)``, ``s_b = sin(t w)``), so equal norms
  stay constant; with equal norms the angle to ``a`` grows linearly, ``t w``."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, 3, 64))
  b[0] *= np.linalg.norm(a[0]) / np.linalg.norm(b[0])  # row 0: equal norms
  t = np.linspace(0.0, 1.0, 7)
  path = np.asarray(interpolation.slerp(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(t)),
                    np.float64)
  ra, rb = np.linalg.norm(a, axis=-1)[:, None], np.linalg.norm(b, axis=-1)[:, None]
  w = np.arccos(np.sum(a * b, -1) / (ra[:, 0] * rb[:, 0]))[:, None]
  sa, sb = np.sin((1 - t) * w), np.sin(t * w)
  expected = np.sqrt(sa**2 * ra**2 + sb**2 * rb**2 + 2 * sa * sb * ra * rb * np.cos(w)) / np.sin(w)
  np.testing.assert_allclose(np.linalg.norm(path, axis=-1), expected, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(path[0], axis=-1), ra[0, 0], rtol=1e-5)
  angle = np.arccos(np.clip(path[0] @ a[0] / (np.linalg.norm(path[0], axis=-1) * ra[0, 0]), -1, 1))
  np.testing.assert_allclose(angle, t * w[0, 0], atol=1e-3)
  # The straight line between the same latents dips below both norms in the middle.
  mid = np.linalg.norm(np.asarray(interpolation.lerp(jnp.asarray(a), jnp.asarray(b), jnp.asarray(t)))[0, 3])
  assert mid < 0.8 * ra[0, 0]


def test_gan_grid_endpoints_are_the_samples_of_their_latents(tmp_path):
  """Conditional GAN with ``sample.label = 3``: the evaluator writes a PAIRS x STEPS grid whose rows
  end at ``G(z, 3)`` of their two latents, which is what ``sample`` returns for those latents."""
  family, params, state, _ = _build("gan", DIGITS, **{
      "model.width": 4, "model.latent_dim": 3, "train.batch_size": 4, "model.conditional": True,
      "sample.label": 3, "eval.interpolation.pairs": PAIRS, "eval.interpolation.steps": STEPS})
  rng = jax.random.key(5)
  jitted = {}
  ctx = types.SimpleNamespace(config=family.config, family=family, spec=DIGITS, step=7, is_writer=True,
                              ts=types.SimpleNamespace(ema_params=params, state=state), data=None,
                              cached=lambda name, build: jitted.setdefault(name, build()), key=lambda stream: rng,
                              path=lambda *parts: str(tmp_path.joinpath(*parts)),
                              exp=types.SimpleNamespace(replicated=parallel.replicated(parallel.make_mesh())))
  evaluator = interpolation.Interpolation()
  evaluator.check(family.config, DIGITS, family)
  assert evaluator.run(ctx) == {}
  paths = np.asarray(jitted["interpolation"](params, state, None, rng))  # what the grid shows

  @jax.jit
  def expected(params):
    """One batch of decodings: the 2 PAIRS latents as class 3, then as class 4, then the latents
    ``sample()`` draws (from the first half of its key) as class 3; and ``sample()`` itself."""
    z = jnp.concatenate([family.sample_latent(rng, 2 * PAIRS)] * 2 + [
        family.sample_latent(jax.random.split(rng)[0], PAIRS)])
    labels = jnp.repeat(jnp.array([3, 4, 3]), jnp.array([2 * PAIRS, 2 * PAIRS, PAIRS]),
                        total_repeat_length=5 * PAIRS)
    return family.decode_latent(params, state, z, labels), family.sample(params, state, rng, PAIRS)

  decoded, sampled = map(np.asarray, expected(params))
  np.testing.assert_allclose(paths[:, 0], decoded[:PAIRS], atol=1e-6)
  np.testing.assert_allclose(paths[:, -1], decoded[PAIRS:2 * PAIRS], atol=1e-6)
  assert np.abs(paths[:, 0] - decoded[2 * PAIRS:3 * PAIRS]).max() > 1e-2  # the label matters
  np.testing.assert_allclose(sampled, decoded[4 * PAIRS:], atol=1e-6)
  # The PNG: 8x8 cells with 1-pixel gaps, upscaled to ~512 pixels wide; row 0, t = 0 is paths[0, 0].
  cols, rows = STEPS * 9 + 1, PAIRS * 9 + 1
  scale = 512 // cols
  png = np.asarray(Image.open(tmp_path / "samples" / "interpolation_step_7.png"))
  assert png.shape == (rows * scale, cols * scale)
  cell = png[scale:9 * scale:scale, scale:9 * scale:scale]
  np.testing.assert_allclose(cell / 255.0, (paths[0, 0, ..., 0] + 1) / 2, atol=1 / 255 + 1e-6)


def test_flows_reproduce_their_latents_and_inputs():
  """``f^{-1}(f(x)) = x`` and ``f`` of each grid endpoint is its latent (the 2-D coupling flow; the
  image flows share ``FlowFamily``'s latent methods and clip only images out of range)."""
  family, params, state, x = _build("flow2d", POINTS, **{"model.num_layers": 2, "model.hidden": 8})
  rng = jax.random.key(6)

  @jax.jit
  def round_trips(params, x):
    paths = _interpolate(family, params, state, rng)
    ends = jnp.concatenate([paths[:, 0], paths[:, -1]])
    return (family.decode_latent(params, state, family.forward(params, state, x)[0]),
            family.forward(params, state, ends)[0], family.sample_latent(rng, 2 * PAIRS))

  decoded, latents_of_ends, latents = map(np.asarray, round_trips(params, x))
  np.testing.assert_allclose(decoded, x, atol=1e-5)
  np.testing.assert_allclose(latents_of_ends, latents, atol=1e-5)
  assert np.abs(decoded - np.asarray(family.forward(params, state, x)[0])).max() > 0.1  # f is not the identity


def test_ddim_decode_is_deterministic_and_equals_the_ddim_sampler_from_the_same_noise():
  """DDPM's latent is ``x_T``; ``decode_latent`` (DDIM, eta = 0) gives the same image on every
  evaluation, and it is the ``ddim`` sampler's output from the same ``x_T``."""
  family, params, state, _ = _build("ddpm", POINTS, **{
      "model.network": "mlp", "model.mlp.hidden": 16, "model.mlp.num_blocks": 1, "model.num_timesteps": 20,
      "sample.steps": 4, "sample.sampler": "ddim"})
  rng = jax.random.key(7)

  @jax.jit
  def run(params):
    z = family.sample_latent(jax.random.split(rng)[1], PAIRS)  # the x_T that the ddim sampler draws from rng
    return z, family.decode_latent(params, state, z), family.sample(params, state, rng, PAIRS)

  z, x, sampled = map(np.asarray, run(params))
  np.testing.assert_array_equal(x, run(params)[1])  # a second evaluation: the same image
  np.testing.assert_allclose(x, sampled, atol=1e-6)
  assert float(np.std(x - z)) > 0.1  # the map does something
