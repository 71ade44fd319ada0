"""PixelRNN: skew / unskew, causality in raster and channel order (and no blind spot for the
Diagonal BiLSTM) by the gradient test, exact NLL vs a slow per-position reference, and compiled
generation vs a naive loop that recomputes the network with the same keys."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from conftest import compiled_init, load_config, pixel_batch, raster_index
from jaxgen import families, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.nn import lstm2d
from jaxgen.nn.lstm2d import skew, unskew

ARCHITECTURES = ("row_lstm", "diagonal_bilstm")


def _family(architecture, shape=(4, 4, 3), levels=5, conditional=False, **sample):
  config = load_config("pixelrnn", **{
      "model.architecture": architecture, "model.features": 6, "model.num_layers": 2,
      "model.first_kernel_size": 3, "model.head_features": 12, "model.conditional": conditional,
      **{f"sample.{k}": v for k, v in sample.items()}})
  spec = DataSpec("test", "image", shape, levels=levels, value_range=(-1.0, 1.0), num_classes=3)
  return families.build(config, spec)


def test_skew_shifts_row_i_right_by_i_and_unskew_inverts_it():
  x = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1).astype(np.float32) + 1
  y = np.asarray(skew(jnp.asarray(x)))
  assert y.shape == (2, 3, 6, 1)
  for i in range(3):
    np.testing.assert_array_equal(y[:, i, i:i + 4], x[:, i])
    assert np.all(np.delete(y[:, i], np.arange(i, i + 4), axis=1) == 0)
  np.testing.assert_array_equal(unskew(jnp.asarray(y), 4), x)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causal_in_raster_channel_order(architecture):
  """d out(i,j,c) / d in(s) == 0 exactly for every s at or after (i,j,c) in raster / channel order.
  The Diagonal BiLSTM's output depends on every earlier sub-pixel but one: the last channel of the
  last pixel of the row above, which the mask-A input layer passes on only to the pixels of the next
  row within its half-width k // 2 of the right edge (jaxgen/nn/lstm2d.py). The Row LSTM (a
  triangular receptive field) depends at least on the previous sub-pixel of its row and the pixel above."""
  shape = (3, 4, 3)  # H != W: the skew is not symmetric
  fam = _family(architecture, shape=shape)
  batch, _ = pixel_batch(fam, n=1)
  params, _ = compiled_init(fam, 0, batch)
  # Shift the inputs of the head's two ReLUs positive (the biases of the last residual convolution
  # and of the head) so that no path is cut by a dead unit: what remains zero is zero by construction.
  shifted = ("['head']", f"['residual_{fam.net.num_layers - 1}']")
  params = {"model": jax.tree_util.tree_map_with_path(
      lambda path, p: p + 100.0 if any(n in jax.tree_util.keystr(path) for n in shifted)
      and "bias" in jax.tree_util.keystr(path) else p, params["model"])}
  x = jax.random.uniform(jax.random.key(1), shape, minval=-1.0, maxval=1.0)
  proj = jax.random.normal(jax.random.key(2), (fam.net.outputs_per_channel,))
  jac = np.asarray(jax.jit(jax.jacrev(lambda x: fam.net.apply(params["model"], x[None])[0] @ proj))(x))
  jac = jac.reshape(int(np.prod(shape)), -1)  # [out position, in position]
  order = raster_index(shape).reshape(-1)
  later = order[None, :] >= order[:, None]
  assert np.all(jac[later] == 0.0), "an output depends on its own or a later sub-pixel"
  if architecture == "diagonal_bilstm":
    h, w, c = shape
    half = fam.config.model.first_kernel_size // 2
    blind = np.zeros((h, w, c, h, w, c), bool)
    for i in range(1, h):
      blind[i, :w - 1 - half, :, i - 1, w - 1, c - 1] = True
    blind = blind.reshape(jac.shape)
    assert blind.any()
    np.testing.assert_array_equal(jac == 0.0, later | blind)
  else:
    row = shape[1] * shape[2]
    t = np.arange(len(order))
    same_row = t[t % row != 0]
    assert np.all(jac[same_row, same_row - 1] != 0.0), "an output ignores the previous sub-pixel of its row"
    below = t[t >= row]
    assert np.all(jac[below, below - row] != 0.0), "an output ignores the pixel above"


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_row_lstm_recurrence_is_the_same_padding_convolution_along_the_row(kernel_size):
  """The Row LSTM's state-to-state term (shifted rows times the kernel taps, one matmul) equals
  a ``k``-tap ``"SAME"`` convolution of the row above (``k`` odd, as the masked input-to-state
  convolution needs): a reference loop over the rows with ``lax.conv_general_dilated``."""
  module = lstm2d.RowLSTM(features=6, kernel_size=kernel_size, data_channels=3)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 5, 3), np.float32))
  params = module.init(jax.random.key(0), x)["params"]
  gates = lstm2d._Gates(6, (1, kernel_size), 3).apply({"params": params["gates"]}, x, None)
  h = c = jnp.zeros((2, 5, 6))
  rows = []
  for i in range(4):
    recurrent = jax.lax.conv_general_dilated(h, params["state_to_state"], (1,), "SAME",
                                             dimension_numbers=("NWC", "WIO", "NWC"))
    h, c = lstm2d.lstm_cell(gates[:, i] + recurrent, c)
    rows.append(h)
  np.testing.assert_allclose(module.apply({"params": params}, x), jnp.stack(rows, 1), atol=1e-5)


@pytest.mark.parametrize("architecture,conditional", [("row_lstm", True), ("diagonal_bilstm", False)])
def test_nll_equals_sum_of_slow_per_position_log_probs(architecture, conditional):
  """log p(x) == sum over sub-pixels t of log p(x_t | x_<t), each conditional from a separate pass
  on an input whose sub-pixels >= t are overwritten with noise."""
  fam = _family(architecture, shape=(2, 3, 3), conditional=conditional)
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
    out = np.asarray(net(2.0 * corrupted / (fam.levels - 1) - 1.0, label), np.float64)
    expected += scipy.special.log_softmax(out[:, i, j, c], axis=-1)[np.arange(2), raw[:, i, j, c]]
  np.testing.assert_allclose(metrics["nll_nats"], -expected, rtol=2e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"], -expected / (18 * math.log(2)), rtol=2e-5)


def test_compiled_generation_equals_naive_recomputation_with_the_same_keys():
  """The compiled sampler == a Python loop that recomputes the whole network for every sub-pixel and
  draws it with sampling.sample_logits under the same controls and key fold_in(key, n) (the sampler
  is PixelCNN's, whatever the network: one architecture suffices)."""
  fam = _family("diagonal_bilstm", shape=(2, 2, 3), temperature=0.8, top_k=3, top_p=0.9, conditional=True, label=1)
  batch, _ = pixel_batch(fam)
  params, state = compiled_init(fam, 0, batch)
  rng = jax.random.key(5)
  raw = np.asarray(fam.to_raw(jax.jit(lambda p, k: fam.sample(p, state, k, 4))(params, rng)))
  _, key = jax.random.split(rng)  # sample(): the label key, then the generation key
  net = jax.jit(lambda x: fam.net.apply(params["model"], x, jnp.full((4,), 1)))
  draw = jax.jit(lambda k, logits: sampling.sample_logits(k, logits, temperature=0.8, top_k=3, top_p=0.9))
  canvas = np.zeros((4, 2, 2, 3), np.int32)
  for n, (i, j, c) in enumerate(np.ndindex(2, 2, 3)):
    out = net(2.0 * canvas / (fam.levels - 1) - 1.0)
    canvas[:, i, j, c] = np.asarray(draw(jax.random.fold_in(key, n), out[:, i, j, c]))
  np.testing.assert_array_equal(raw, canvas)
  assert len(np.unique(canvas)) > 1


def test_bad_configs_raise_user_errors():
  spec = DataSpec("digits", "image", (8, 8, 3), levels=17)
  with pytest.raises(UserError, match="multiple of the 3"):
    families.build(load_config("pixelrnn", **{"model.features": 32}), spec)
  with pytest.raises(UserError, match="model.architecture"):
    families.build(load_config("pixelrnn", **{"model.architecture": "lstm"}), spec)
  with pytest.raises(UserError, match="dequantize=False"):
    families.build(load_config("pixelrnn"), DataSpec("d", "image", (8, 8, 1), levels=17, dequantized=True))
