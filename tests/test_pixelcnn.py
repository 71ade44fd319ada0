"""PixelCNN: masks, causality without blind spot, exact NLL vs a slow reference, the discretized
logistic mixture, compiled sampling, cached generation against the recompute, and the whole loop
on ``digits``."""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from PIL import Image

from conftest import compiled_init, load_config, pixel_batch, raster_index, tiny_config
from jaxgen import families, train
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn import logistic_mixture, pixelcnn_cache
from jaxgen.nn.masked_conv import pixelcnn_mask

OUTPUTS = ("softmax", "logistic_mixture")


def _family(output="softmax", shape=(4, 4, 3), levels=7, conditional=False, model=(), **sample):
  config = load_config("pixelcnn", **{
      "model.output": output, "model.features": 6, "model.num_blocks": 2, "model.kernel_size": 3,
      "model.first_kernel_size": 3, "model.head_features": 12, "model.num_mixtures": 2,
      "model.conditional": conditional, **{f"model.{k}": v for k, v in dict(model).items()},
      **{f"sample.{k}": v for k, v in sample.items()}})
  spec = DataSpec("test", "image", shape, levels=levels, value_range=(-1.0, 1.0), num_classes=3)
  return families.build(config, spec)


def test_mask_a_and_b_worked_example():
  # 3x3 kernel, 3 data channels, features = channels: rows above and the left neighbour are open,
  # the right neighbour and the row below are closed, the centre is (strictly) lower-to-upper.
  a = pixelcnn_mask((3, 3), 3, 3, 3, "A")
  b = pixelcnn_mask((3, 3), 3, 3, 3, "B")
  for m in (a, b):
    np.testing.assert_array_equal(m[0], 1.0)
    np.testing.assert_array_equal(m[1, 0], 1.0)
    np.testing.assert_array_equal(m[1, 2], 0.0)
    np.testing.assert_array_equal(m[2], 0.0)
  # centre [in, out]: R->G, R->B, G->B for A; plus R->R, G->G, B->B for B.
  np.testing.assert_array_equal(a[1, 1], [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(b[1, 1], [[1, 1, 1], [0, 1, 1], [0, 0, 1]])
  # Interleaved groups: feature f belongs to channel f % 3.
  np.testing.assert_array_equal(pixelcnn_mask((1, 1), 3, 6, 3, "A")[0, 0][:, [0, 3]], 0.0)


@pytest.mark.parametrize("output,shape", [("softmax", (4, 4, 3)), ("logistic_mixture", (3, 3, 3)),
                                          ("softmax", (4, 4, 1))])
def test_causal_in_raster_channel_order_without_blind_spot(output, shape):
  """d out(i,j,c) / d in(s) == 0 exactly for every s at or after (i,j,c) in raster/channel order,
  and != 0 for *every* earlier s (the receptive field covers the image: no blind spot)."""
  fam = _family(output, shape=shape)
  batch, _ = pixel_batch(fam, n=1)
  params, _ = compiled_init(fam, 0, batch)
  # Shift the inputs of the head's two ReLUs positive so that no path is cut by a dead unit:
  # what remains zero is zero by construction of the masks.
  last = f"block_{fam.net.num_blocks}"
  params = {"model": jax.tree_util.tree_map_with_path(
      lambda path, p: p + 100.0 if any(f"['{n}']" in jax.tree_util.keystr(path) and "bias" in
                                       jax.tree_util.keystr(path) for n in ("head", "horizontal_out"))
      and (last in jax.tree_util.keystr(path) or "head" in jax.tree_util.keystr(path)) else p,
      params["model"])}
  x = jax.random.uniform(jax.random.key(1), shape, minval=-1.0, maxval=1.0)
  proj = jax.random.normal(jax.random.key(2), (fam.net.outputs_per_channel,))

  def out(x):
    return fam.net.apply(params["model"], x[None])[0] @ proj  # [H, W, C]

  jac = np.asarray(jax.jit(jax.jacrev(out))(x)).reshape(int(np.prod(shape)), -1)  # [out, in position]
  order = raster_index(shape).reshape(-1)
  later = order[None, :] >= order[:, None]
  assert np.all(jac[later] == 0.0), "an output depends on its own or a later sub-pixel"
  assert np.all(jac[~later] != 0.0), "an output ignores an earlier sub-pixel (blind spot)"


def _reference_level_log_probs(fam, out: np.ndarray) -> np.ndarray:
  """Level log-probabilities ``[..., L]`` from raw network outputs, in float64 numpy/scipy."""
  out = np.asarray(out, np.float64)
  if fam.config.model.output == "softmax":
    return scipy.special.log_softmax(out, axis=-1)
  m = out.shape[-1] // 3
  logits, means, log_scales = out[..., :m], out[..., m:2 * m], np.maximum(out[..., 2 * m:], -7.0)
  levels = fam.levels
  edges = -1.0 + (2.0 * np.arange(levels + 1) - 1.0) / (levels - 1)  # bin k spans [e_k, e_{k+1}]
  edges[0], edges[-1] = -np.inf, np.inf
  cdf = scipy.special.expit((edges[:, None] - means[..., None, :]) / np.exp(log_scales[..., None, :]))
  mass = np.diff(cdf, axis=-2)  # [..., L, M]
  weights = scipy.special.softmax(logits, axis=-1)[..., None, :]
  with np.errstate(divide="ignore"):
    return np.log(np.sum(weights * mass, axis=-1))


@pytest.mark.parametrize("output,conditional", [("softmax", False), ("logistic_mixture", True)])
def test_nll_equals_sum_of_slow_per_position_log_probs(output, conditional):
  """log p(x) == sum over sub-pixels t of log p(x_t | x_<t), each conditional computed by a
  separate pass on an input whose sub-pixels >= t are overwritten with noise."""
  fam = _family(output, shape=(3, 3, 3), conditional=conditional)
  batch, raw = pixel_batch(fam, n=2)
  params, state = compiled_init(fam, 0, batch)
  metrics = jax.jit(fam.eval_metrics)(params, state, batch, jax.random.key(1))
  net = jax.jit(lambda x, y: fam.net.apply(params["model"], x, y))
  label = batch["label"] if conditional else None
  order = raster_index(fam.spec.shape)
  rng = np.random.default_rng(1)
  expected = np.zeros(2)
  for t in range(order.size):
    i, j, c = np.argwhere(order == t)[0]
    corrupted = np.where(order >= t, rng.integers(0, fam.levels, raw.shape), raw)
    out = np.asarray(net(2.0 * corrupted / (fam.levels - 1) - 1.0, label))
    lp = _reference_level_log_probs(fam, out[:, i, j, c])
    expected += lp[np.arange(2), raw[:, i, j, c]]
  np.testing.assert_allclose(metrics["nll_nats"], -expected, rtol=2e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"], -expected / (27 * math.log(2)), rtol=2e-5)
  loss, (train_metrics, _) = jax.jit(fam.update_groups()[0].loss_fn)(params, state, batch, jax.random.key(2))
  np.testing.assert_allclose(loss, -expected.mean(), rtol=2e-5)
  np.testing.assert_allclose(train_metrics["bits_per_dim"], metrics["bits_per_dim"].mean(), rtol=1e-6)


def test_uniform_model_over_256_levels_is_exactly_8_bits_per_dim():
  fam = _family("softmax", shape=(3, 3, 3), levels=256)
  batch, _ = pixel_batch(fam, n=4)
  params, state = compiled_init(fam, 0, batch)
  params = {"model": jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.zeros_like(p) if "['out']" in jax.tree_util.keystr(path) else p, params["model"])}
  metrics = jax.jit(fam.eval_metrics)(params, state, batch, jax.random.key(1))
  chex.assert_shape(metrics["bits_per_dim"], (4,))
  np.testing.assert_allclose(metrics["bits_per_dim"], 8.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["nll_nats"], 27 * 8 * math.log(2), rtol=1e-6)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_logistic_mixture_bins_sum_to_one_and_match_scipy(levels):
  rng = np.random.default_rng(levels)
  m = 3
  params = np.concatenate([rng.normal(0, 2, (50, m)),  # logits
                           rng.normal(0, 1.5, (50, m)),  # means, some far outside [-1, 1]
                           rng.uniform(-9.0, 1.0, (50, m))], axis=-1).astype(np.float32)  # log scales, some clamped
  params[0, m:2 * m] = -1.0  # a component centred on bin 0 with the smallest scale
  params[0, 2 * m:] = -7.0
  log_p = np.asarray(jax.jit(logistic_mixture.log_probs_all, static_argnums=1)(jnp.asarray(params), levels))
  chex.assert_shape(log_p, (50, levels))
  assert np.all(np.isfinite(log_p))
  np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(axis=-1), 1.0, atol=5e-6)
  fam = _family("logistic_mixture", levels=levels)
  reference = _reference_level_log_probs(fam, params)  # -inf where float64 CDF differences underflow
  np.testing.assert_allclose(np.exp(log_p), np.exp(reference), rtol=2e-4, atol=1e-5)  # float32 args
  visible = reference > -20.0
  np.testing.assert_allclose(log_p[visible], reference[visible], atol=1e-4, rtol=1e-4)
  # The gathered log_prob agrees with the table.
  k = rng.integers(0, levels, 50)
  np.testing.assert_allclose(logistic_mixture.log_prob(jnp.asarray(params, jnp.float32), jnp.asarray(k), levels),
                             log_p[np.arange(50), k], rtol=1e-6)


def test_sampling_compiles_once_and_greedy_matches_slow_loop():
  """Greedy (temperature 0) compiled sampling == a Python loop that fills sub-pixels in raster /
  channel order with the argmax of the network; the sampler traces once for two keys."""
  fam = _family("softmax", shape=(3, 3, 3), temperature=0.0, conditional=True, label=2)
  batch, _ = pixel_batch(fam)
  params, state = compiled_init(fam, 0, batch)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(params, rng):
    return fam.sample(params, state, rng, 2)

  x = sample(params, jax.random.key(1))
  sample(params, jax.random.key(2))  # no retrace
  raw = np.asarray(fam.to_raw(x))
  np.testing.assert_allclose(x, -1.0 + 2.0 * raw / (fam.levels - 1), atol=1e-6)  # model space

  net = jax.jit(lambda x: fam.net.apply(params["model"], x, jnp.full((2,), 2)))
  canvas = np.zeros((2, 3, 3, 3), np.int64)
  for i in range(3):
    for j in range(3):
      for c in range(3):
        out = np.asarray(net(2.0 * canvas / (fam.levels - 1) - 1.0))
        canvas[:, i, j, c] = np.argmax(out[:, i, j, c], axis=-1)
  np.testing.assert_array_equal(raw, canvas)


def test_controls_set_after_construction_apply_at_the_next_trace():
  """A temperature sweep over one restored model (experiments/temperature.py) sets config.sample
  after the family is built: the next traced sampler uses it, exactly as a family built with it."""
  fam = _family("softmax", shape=(3, 3, 1), levels=7)
  batch, _ = pixel_batch(fam)
  params, state = compiled_init(fam, 0, batch)
  draw = lambda f: np.asarray(jax.jit(lambda p, k: f.sample(p, state, k, 4))(params, jax.random.key(3)))
  at_one = draw(fam)
  fam.config.sample.temperature = 0.0
  greedy = draw(fam)
  np.testing.assert_array_equal(greedy, draw(_family("softmax", shape=(3, 3, 1), levels=7, temperature=0.0)))
  assert not np.array_equal(greedy, at_one)


def test_mixture_sampling_follows_level_probabilities():
  """With top_k=1 the mixture sampler returns the most probable level of each conditional."""
  fam = _family("logistic_mixture", shape=(1, 2, 3), levels=17, top_k=1)
  batch, _ = pixel_batch(fam)
  params, state = compiled_init(fam, 3, batch)
  raw = np.asarray(fam.to_raw(jax.jit(lambda p, k: fam.sample(p, state, k, 2))(params, jax.random.key(4))))
  lp = jax.jit(fam.level_log_probs)(params, jnp.asarray(raw), None)
  for t, (j, c) in enumerate(np.ndindex(2, 3)):
    np.testing.assert_array_equal(raw[:, 0, j, c], np.argmax(lp[:, 0, j, c], axis=-1), err_msg=f"t={t}")


@pytest.mark.parametrize("output,shape,conditional,model,controls", [
    ("softmax", (4, 4, 3), True, {"first_kernel_size": 5}, {"temperature": 0.7, "top_k": 3}),
    ("logistic_mixture", (5, 4, 1), False, {"kernel_size": 5, "num_blocks": 1}, {"top_p": 0.9}),
])
def test_cached_generation_equals_the_recompute(output, shape, conditional, model, controls):
  """sample.cache=True (jaxgen.nn.pixelcnn_cache) draws exactly the integers of sample.cache=False
  (the whole network recomputed at every sub-pixel) from the same key, controls and labels; and
  the cached network, fed a fixed image sub-pixel by sub-pixel, gives every sub-pixel the outputs
  of one full pass over that image (float summation order aside)."""
  fams = {cache: _family(output, shape=shape, conditional=conditional, model=model, cache=cache, **controls)
          for cache in (False, True)}
  fam = fams[True]
  batch, raw = pixel_batch(fam)
  params, state = compiled_init(fam, 0, batch)
  label = batch["label"] if conditional else None
  flat = jnp.asarray(raw.reshape(2, -1), jnp.int32)

  @jax.jit
  def run(params, key):
    samples = {cache: f.to_raw(f.sample(params, state, key, 2)) for cache, f in fams.items()}
    full = fam.net.apply(params["model"], fam._net_input(jnp.asarray(raw)), label)
    canvas, cached = pixelcnn_cache.generate(fam.net, params["model"], shape, label, 2, fam._net_input,
                                             lambda n, out: flat[:, n], collect_outputs=True)
    return samples, full, canvas, cached

  samples, full, canvas, cached = run(params, jax.random.key(7))
  assert len(np.unique(samples[True])) > 2  # real draws, not a constant image
  np.testing.assert_array_equal(samples[True], samples[False])
  np.testing.assert_array_equal(canvas, raw)
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)


def test_bad_configs_raise_user_errors():
  spec = DataSpec("digits", "image", (8, 8, 3), levels=17)
  with pytest.raises(UserError, match="multiple of the 3"):
    families.build(load_config("pixelcnn", **{"model.features": 32}), spec)
  with pytest.raises(UserError, match="dequantize=False"):
    families.build(load_config("pixelcnn"), DataSpec("d", "image", (8, 8, 1), levels=17, dequantized=True))
  with pytest.raises(UserError, match="model.output"):
    families.build(load_config("pixelcnn", **{"model.output": "gaussian"}), spec)
  with pytest.raises(UserError, match="no labels"):
    families.build(load_config("pixelcnn", **{"model.conditional": True}), DataSpec("d", "image", (8, 8, 1), levels=17))


def test_end_to_end_on_digits(workdir):
  config = tiny_config("pixelcnn", **{"model.features": 8, "model.num_blocks": 1, "model.head_features": 8,
                                      "model.output": "logistic_mixture"})
  ts = train.train_and_evaluate(config, workdir)
  assert int(ts.step) == 4
  with open(os.path.join(workdir, "eval", "step_4.json")) as f:
    results = json.load(f)
  # Eval NLL in nats per image and bits/dim over 64 digits (8x8x1).
  assert results["num_eval_examples"] == 64
  assert math.isclose(results["bits_per_dim"], results["nll_nats"] / (64 * math.log(2)), rel_tol=1e-5)
  png = Image.open(os.path.join(workdir, "samples", "step_4.png"))
  assert png.size[0] >= 64
