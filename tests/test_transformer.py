"""The transformer family: causality, exact likelihood, KV-cache generation, text data.

Positions. A data window is ``x = (x_0, ..., x_{T-1})``. The network's *input position* ``s``
holds ``BOS`` for ``s = 0`` and ``x_{s-1}`` otherwise; its *output position* ``t`` holds the
logits of ``p(x_t | x_<t)``. Causality: output ``t`` depends on input positions ``s <= t`` only
(so on data tokens ``x_0..x_{t-1}``), never on ``s > t``.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config, tiny_config
from jaxgen import families
from jaxgen.data import text
from jaxgen.data.spec import DataSpec

T, V = 8, 11


def _family(positions="learned", tie_weights=True, seq_len=T, vocab=V):
  config = load_config("transformer")
  config.model.update(num_layers=2, num_heads=2, width=16, positions=positions,
                      tie_weights=tie_weights)
  spec = DataSpec(name="test", modality="text", shape=(seq_len,), levels=vocab,
                  vocab=tuple(chr(97 + i) for i in range(vocab)))
  family = families.build(config, spec)
  x = jax.random.randint(jax.random.key(1), (3, seq_len), 0, vocab)
  params, _ = family.init(jax.random.key(0), {"x": x})
  return family, params, x


def _assert_causal(jacobian):
  """``jacobian[t, s]``: norm of d(output t) / d(input position s), ``[T, T]``."""
  for t in range(T):
    chex.assert_trees_all_equal(jacobian[t, t + 1:], np.zeros(T - t - 1, np.float32))
    assert jacobian[t, t] > 0
    if t > 0:
      assert jacobian[t, :t].max() > 0


def test_causality_learned_positions():
  """Gradient w.r.t. the position-embedding row ``s``, which is added to input ``s`` only."""
  family, params, x = _family()

  def outputs(pos_table):
    p = {"model": {**params["model"], "pos_embed": pos_table}}
    return family.logits(p, x[:1])[0]  # [T, V]

  jac = jax.jit(jax.jacrev(outputs))(params["model"]["pos_embed"])  # [T, V, T, W]
  _assert_causal(np.asarray(jnp.sqrt(jnp.sum(jac**2, axis=(1, 3)))))


def test_causality_rotary_positions():
  """Distinct input tokens: the gradient w.r.t. embedding row ``token_s`` is that w.r.t. input
  ``s`` (untied head, so the table is used by the inputs only)."""
  family, params, _ = _family(positions="rotary", tie_weights=False, vocab=T + 3)
  x = jnp.arange(T)[None] + 2  # input tokens (BOS, 2, 3, ..., T): all distinct
  inputs = np.asarray(family.shift_right(x))[0]

  def outputs(table):
    p = {"model": {**params["model"], "embed": table}}
    return family.logits(p, x)[0]

  jac = jax.jit(jax.jacrev(outputs))(params["model"]["embed"])  # [T, V, V+1, W]
  per_input = jnp.sqrt(jnp.sum(jac**2, axis=(1, 3)))[:, inputs]
  _assert_causal(np.asarray(per_input))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_nll_equals_slow_per_prefix_reference(positions):
  """NLL = -sum_t log p(x_t | x_<t), each term from a separate forward pass on the prefix alone."""
  family, params, x = _family(positions=positions)
  reference = np.zeros(x.shape[0])
  apply = jax.jit(family.model.apply)
  for t in range(T):
    prefix = jnp.concatenate([jnp.full((x.shape[0], 1), family.bos), x[:, :t]], axis=1)
    logits, _ = apply({"params": params["model"]}, prefix)
    logp = jax.nn.log_softmax(logits[:, -1])
    reference -= np.asarray(logp[jnp.arange(x.shape[0]), x[:, t]])
  metrics = family.eval_metrics(params, {}, {"x": x, "mask": jnp.ones(3)}, jax.random.key(0))
  chex.assert_trees_all_close(metrics["nll_nats"], reference, rtol=1e-5)
  chex.assert_trees_all_close(metrics["bits_per_char"], reference / (T * math.log(2)), rtol=1e-5)
  chex.assert_trees_all_equal(metrics["bits_per_dim"], metrics["bits_per_char"])
  loss, (train_metrics, _) = family.update_groups()[0].loss_fn(params, {}, {"x": x},
                                                               jax.random.key(0))
  chex.assert_trees_all_close(loss, reference.mean() / T, rtol=1e-5)
  chex.assert_trees_all_close(train_metrics["bits_per_char"], loss / math.log(2))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_decoding_logits_match_full_forward(positions):
  family, params, x = _family(positions=positions)
  inputs = family.shift_right(x)
  full, _ = family.model.apply({"params": params["model"]}, inputs)
  caches = _zero_caches(family, x.shape[0])
  decode = jax.jit(lambda tokens, caches, t: family.model.apply(
      {"params": params["model"]}, tokens, caches=caches, index=t))
  for t in range(T):
    step, caches = decode(inputs[:, t:t + 1], caches, t)
    chex.assert_trees_all_close(step[:, 0], full[:, t], atol=1e-5)


def _zero_caches(family, batch):
  from jaxgen.nn.attention import KVCache  # pylint: disable=g-import-not-at-top
  m = family.model
  return [KVCache.zeros(batch, T, m.num_heads, m.width // m.num_heads) for _ in range(m.num_layers)]


@pytest.mark.parametrize("positions,controls", [
    ("learned", {"temperature": 0.8, "top_k": 5, "top_p": 0.9}),
    ("rotary", {"temperature": 1.3, "top_k": 0, "top_p": 0.7}),
    ("learned", {"temperature": 0.0, "top_k": 0, "top_p": 1.0}),
])
def test_cached_generation_equals_naive(positions, controls):
  family, params, _ = _family(positions=positions)
  gen = {c: jax.jit(lambda p, k, c=c: family.generate(p, k, 6, cached=c, **controls))
         for c in (True, False)}
  for seed in range(3):
    fast, slow = gen[True](params, jax.random.key(seed)), gen[False](params, jax.random.key(seed))
    chex.assert_shape(fast, (6, T))
    chex.assert_type(fast, jnp.int32)
    chex.assert_trees_all_equal(fast, slow)
  assert np.asarray(fast).max() < V  # BOS is never generated


def test_generation_compiles_once_as_one_loop():
  family, params, _ = _family()
  fn = chex.assert_max_traces(lambda p, k: family.sample(p, {}, k, 4), n=1)
  jitted = jax.jit(fn)
  a = jitted(params, jax.random.key(0))
  b = jitted(jax.tree.map(lambda v: v * 1.1, params), jax.random.key(1))
  chex.assert_shape([a, b], (4, T))
  # One scan, not a Python loop unrolled into the graph: the program size does not grow with T.
  sizes = [len(jax.make_jaxpr(lambda p, k, n=n: family.generate(p, k, 2, length=n))(
      params, jax.random.key(0)).eqns) for n in (2, T)]
  assert sizes[0] == sizes[1]
  assert "scan" in str(jax.make_jaxpr(lambda p, k: family.generate(p, k, 2))(params,
                                                                                jax.random.key(0)))


def test_text_encode_decode_and_windows():
  vocab = text.ASCII_VOCAB
  s = "def f(x):\n  return x + 1  # ok\n"
  chex.assert_trees_all_equal(text.encode(s, vocab), np.array([vocab.index(c) for c in s]))
  assert text.decode(text.encode(s, vocab), vocab) == s
  assert text.decode(text.encode("a\tb\u00e9", vocab, unknown="?"), vocab) == "a?b?"
  tokens = np.arange(20, dtype=np.int32)
  w = text.windows(tokens, 6, 4)
  chex.assert_trees_all_equal(w, np.stack([tokens[i:i + 6] for i in range(0, 15, 4)]))


def test_pystdlib_corpus_split_and_windows():
  config = ml_collections.ConfigDict({"seq_len": 32, "stride": 8})
  raw = text.load_pystdlib(config)
  corpus = text.pystdlib_text()
  assert raw.spec.modality == "text" and raw.spec.shape == (32,) and raw.spec.levels == 96
  assert raw.spec.vocab == text.ASCII_VOCAB and list(raw.spec.vocab) == sorted(raw.spec.vocab)
  split = round(len(corpus) * 0.9)
  decoded = lambda row: text.decode(row, raw.spec.vocab)
  ascii_only = lambda s: "".join(c if c in raw.spec.vocab else "?" for c in s)
  assert decoded(raw.train["x"][5]) == ascii_only(corpus[40:72])
  assert decoded(raw.test["x"][3]) == ascii_only(corpus[split + 96:split + 128])
  assert len(raw.test["x"]) == (len(corpus) - split) // 32
  assert raw.train["x"].dtype == np.int32 and raw.train["x"].max() < 96


def test_tiny_shakespeare_under_mock_data():
  config = ml_collections.ConfigDict({"seq_len": 8, "stride": 2, "data_dir": ""})
  with tfds.testing.mock_data(num_examples=3):
    raw = text.load_tiny_shakespeare(config)
  assert raw.spec.name == "tiny_shakespeare" and raw.spec.shape == (8,)
  assert list(raw.spec.vocab) == sorted(set(raw.spec.vocab))
  assert raw.spec.levels == len(raw.spec.vocab)
  chex.assert_rank([raw.train["x"], raw.test["x"]], 2)


def test_train_and_evaluate_end_to_end(tmp_path, capsys):
  from jaxgen import train  # pylint: disable=g-import-not-at-top
  config = tiny_config("transformer", **{
      "data.seq_len": 16, "model.num_layers": 1, "model.num_heads": 2, "model.width": 16,
      "train.batch_size": 4, "sample.num": 2, "sample.temperature": 0.5, "sample.top_k": 5})
  train.train_and_evaluate(config, str(tmp_path))
  results = train.evaluate(config, str(tmp_path))
  assert 0 < results["bits_per_char"] < 2 * math.log2(96)
  paths = train.sample(config, str(tmp_path))
  with open([p for p in paths if p.endswith(".txt")][0]) as f:
    assert len(f.read()) >= 2 * 16
