"""Accelerator features of the trainer: mixed precision, gradient accumulation, FSDP, remat, fused
attention. Each run is compared with the plain float32 / one-batch / replicated / stored-activation
run of the same model on the same batch."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from jaxgen import checkpoint, parallel, train, validate
from jaxgen.errors import UserError
from jaxgen.nn.attention import CausalSelfAttention
from jaxgen.nn.unet import UNet

# A tiny char transformer trained by SGD: Adam would turn float-summation noise in a near-zero
# gradient into a full-size step (see conftest.GAN_SGD), hiding what these tests compare.
TINY_GPT = {"model.num_layers": 1, "model.num_heads": 2, "model.width": 16, "data.seq_len": 16,
            "train.batch_size": 8, "train.ema_decay": 0.0, "optim.model.name": "sgd",
            "optim.model.schedule": "constant", "optim.model.learning_rate": 0.5}


def _one_step(tmp_path, name, **overrides):
  """``(state before, state after one step, metrics)`` of the tiny transformer from its own init."""
  exp = train.setup(tiny_config("transformer", **TINY_GPT, **overrides), str(tmp_path / name))
  ts = train.init_or_restore(exp, checkpoint.Checkpointer(str(tmp_path / name / "ckpt"), 1))
  before = jax.device_get(ts)
  batch = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
  after, metrics = train.make_train_step(exp)(ts, batch)
  return before, jax.device_get(after), jax.device_get(metrics)


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("accelerators")
  return {"float32": _one_step(tmp, "f32"),
          "bfloat16": _one_step(tmp, "bf16", **{"train.compute_dtype": "bfloat16"}),
          "accum2": _one_step(tmp, "accum", **{"train.grad_accum_steps": 2})}


def _float_leaves(tree):
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def test_bfloat16_keeps_float32_state_and_matches_float32(steps):
  """bf16 compute: params, optimizer state and the loss stay float32; the loss is the float32 loss
  to bf16's 3 significant digits (2e-2 relative; a bf16 product has an 8-bit mantissa), the updated
  params agree to 1e-2 of the step they took."""
  f32_before, f32_after, f32_metrics = steps["float32"]
  bf_before, bf_after, bf_metrics = steps["bfloat16"]
  for tree in (bf_after.params, bf_after.opt_state, bf_metrics["model/loss"]):
    assert {x.dtype for x in _float_leaves(tree)} == {np.dtype(np.float32)}
  jax.tree.map(np.testing.assert_array_equal, f32_before.params, bf_before.params)  # same init
  np.testing.assert_allclose(bf_metrics["model/loss"], f32_metrics["model/loss"], rtol=2e-2)
  np.testing.assert_allclose(bf_metrics["model/grad_norm"], f32_metrics["model/grad_norm"], rtol=5e-2)
  step_f32 = np.concatenate([(a - b).ravel() for a, b in zip(_float_leaves(f32_after.params), _float_leaves(f32_before.params))])
  step_bf = np.concatenate([(a - b).ravel() for a, b in zip(_float_leaves(bf_after.params), _float_leaves(bf_before.params))])
  assert np.linalg.norm(step_bf - step_f32) < 1e-1 * np.linalg.norm(step_f32)
  assert np.dot(step_bf, step_f32) > 0.99 * np.linalg.norm(step_bf) * np.linalg.norm(step_f32)


def test_grad_accumulation_equals_the_whole_batch(steps):
  """2 micro-batches of 4, gradients averaged: the same loss, gradient and update as one batch of 8."""
  _, whole, whole_metrics = steps["float32"]
  _, accum, accum_metrics = steps["accum2"]
  for key in ("model/loss", "model/grad_norm"):
    np.testing.assert_allclose(accum_metrics[key], whole_metrics[key], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), accum.params, whole.params)


def test_accumulated_grads_is_the_mean_over_micro_batches():
  """``accumulated_grads`` with k = 4 on a quadratic: the gradient of the batch mean, the mean loss,
  micro-batch ``i`` holding rows ``i, i + 4, ...`` (strided, so each device keeps its rows), float
  state threaded through the micro-batches and an integer counter advanced once."""
  x = jnp.arange(16.0).reshape(8, 2)
  seen = []

  def loss_of(p, state, batch, key):
    del key
    seen.append(batch["x"].shape)
    new = {"step": state["step"] + 1, "statistic": state["statistic"] + 1.0}
    return jnp.mean(jnp.sum((batch["x"] - p) ** 2, axis=1)), ({"first": batch["x"][0, 0],
                                                                "step_seen": state["step"]}, new)

  p = jnp.array([1.0, -2.0])
  state = {"step": jnp.int32(7), "statistic": jnp.float32(0.0)}
  (loss, (metrics, state)), grads = train.accumulated_grads(loss_of, p, state, {"x": x}, jax.random.key(0), 4)
  np.testing.assert_allclose(loss, np.mean(np.sum((np.asarray(x) - np.asarray(p)) ** 2, axis=1)), rtol=1e-6)
  np.testing.assert_allclose(grads, -2 * np.mean(np.asarray(x) - np.asarray(p), axis=0), rtol=1e-6)
  assert seen[-1] == (2, 2)
  assert float(state["statistic"]) == 4.0  # float state (batch statistics) threads through the 4 micro-batches
  assert int(state["step"]) == 8 and float(metrics["step_seen"]) == 7.0  # a counter: once per update, seen by all
  np.testing.assert_allclose(metrics["first"], np.mean([0.0, 2.0, 4.0, 6.0]))  # rows 0, 1, 2, 3 start each


@pytest.mark.parametrize("backend, loops", [("cpu", False), ("gpu", True)])
def test_accumulation_loops_over_micro_batches_except_on_cpu(backend, loops, monkeypatch):
  """On CPU the k micro-batches are unrolled into the step (XLA:CPU runs convolutions' gradients
  inside a loop body without its fast kernels, ~10x slower); elsewhere they are one loop."""
  monkeypatch.setattr(jax, "default_backend", lambda: backend)

  def loss_of(p, state, batch, key):
    del key
    return jnp.mean((batch["x"] - p) ** 2), ({}, state)

  x = jnp.arange(8.0)
  text = jax.jit(lambda p: train.accumulated_grads(loss_of, p, (), {"x": x}, jax.random.key(0), 4)).lower(
      jnp.float32(1.0)).as_text()
  assert ("stablehlo.while" in text) == loops


def test_unet_remat_equals_stored_activations():
  """``remat=True`` recomputes activations in the backward pass: the same parameter names, output
  and gradient (to 1e-6) as storing them."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  t = jnp.array([3, 7])
  nets = [UNet(channels=4, ch_mult=(1,), num_res_blocks=0, remat=r) for r in (False, True)]  # 3 res, 1 attention
  params = nets[0].init(jax.random.key(1), x, t)["params"]
  assert jax.tree.structure(nets[1].init(jax.random.key(1), x, t)["params"]) == jax.tree.structure(params)

  def loss(net, p):
    return jnp.mean(net.apply({"params": p}, x, t) ** 2)

  (plain, g_plain), (remat, g_remat) = [jax.jit(jax.value_and_grad(lambda p, n=n: loss(n, p)))(params) for n in nets]
  np.testing.assert_allclose(remat, plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_remat, g_plain)


def test_attention_matches_numpy_reference():
  """``jax.nn.dot_product_attention`` inside ``CausalSelfAttention`` equals softmax attention with
  a causal mask written out in numpy from the layer's own projections (1e-5)."""
  b, length, heads, width = 2, 6, 2, 8
  x = jax.random.normal(jax.random.key(0), (b, length, width))
  layer = CausalSelfAttention(heads)
  p = layer.init(jax.random.key(1), x)["params"]
  out, _ = layer.apply({"params": p}, x)

  xn = np.asarray(x, np.float64)
  qkv = np.einsum("blw,wthd->blthd", xn, p["qkv"]["kernel"]) + np.asarray(p["qkv"]["bias"])
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, D]
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(width // heads)
  logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  attended = np.einsum("bhqk,bkhd->bqhd", weights, v)
  expected = np.einsum("bqhd,hdw->bqw", attended, p["out"]["kernel"]) + np.asarray(p["out"]["bias"])
  np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("name,overrides,message", [
    ("vae", {"train.compute_dtype": "bfloat16"}, "computes in float32 only"),
    ("transformer", {"train.compute_dtype": "float16"}, "is not a compute dtype"),
    ("transformer", {"train.grad_accum_steps": 3}, "must divide train.batch_size=8"),
    ("transformer", {"train.param_sharding": "zero3"}, "is not a sharding rule")])
def test_bad_accelerator_settings_are_one_line_errors(name, overrides, message):
  config = tiny_config(name, **{"train.batch_size": 8})
  config.update_from_flattened_dict(overrides)
  with pytest.raises(UserError, match=message):
    validate.validate(config)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the refusal where cuDNN is absent")
def test_cudnn_attention_off_a_gpu_is_one_line_at_setup(tmp_path):
  config = tiny_config("transformer", **{"model.attention": "cudnn"})
  with pytest.raises(UserError, match=r"model.attention=cudnn needs a CUDA GPU .*\(here: cpu, float32\); use auto"):
    train.setup(config, str(tmp_path))


FOUR_DEVICES = f"TINY_GPT = {TINY_GPT!r}\n" + """
import sys, numpy as np, jax
sys.path.insert(0, "tests")
from conftest import tiny_config
from jaxgen import checkpoint, parallel, train

assert jax.device_count() == 4, jax.devices()
out = {}
for name, extra in [("replicated", {}), ("fsdp", {"train.param_sharding": "fsdp"}), ("remat", {"model.remat": True})]:
  exp = train.setup(tiny_config("transformer", **TINY_GPT, **extra), sys.argv[1] + "/" + name)
  ts = train.init_or_restore(exp, checkpoint.Checkpointer(sys.argv[1] + "/ckpt_" + name, 1))
  step = train.make_train_step(exp)
  for i in range(3):
    ts, _ = step(ts, parallel.global_batch(exp.data.train_batch(i), exp.mesh))
  embed = ts.params["model"]["embed"]  # [V + 1, 16]: 16 is the largest dimension divisible by 4
  momentum = [x for x in jax.tree.leaves(ts.opt_state["model"]) if x.shape == embed.shape]
  print(name, tuple(embed.sharding.spec), embed.addressable_shards[0].data.shape[1], tuple(momentum[0].sharding.spec))
  out.update({f"{name}/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(ts.params))})
np.savez(sys.argv[1] + "/params.npz", **out)
# FSDP params leave a jitted evaluation's output sharded unless it asks for a replicated one
vae = {"train.param_sharding": "fsdp", "model.hidden": (16,), "eval.metrics": ("interpolation",)}
exp = train.setup(tiny_config("vae", **vae), sys.argv[1] + "/vae")
ts = train.init_or_restore(exp, checkpoint.Checkpointer(sys.argv[1] + "/ckpt_vae", 1))
train.run_evaluators(exp, ts, exp.evaluators, None)
print("interpolation", np.asarray(__import__("PIL.Image").Image.open(sys.argv[1] + "/vae/samples/interpolation_step_0.png")).shape)
"""


def test_fsdp_and_remat_match_the_replicated_run_on_four_devices(tmp_path):
  """3 SGD steps on 4 host devices: FSDP (params and optimizer state split over the devices) gives
  the replicated params to 1e-5, remat gives them to 1e-6; the interpolation grid of an FSDP VAE
  holds every row (not the first device's shard)."""
  env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4", "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr
  lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
  assert lines["replicated"] == "() 16 ()"
  # the embedding [V + 1, 16] and its SGD momentum: 16 / 4 columns per device
  assert lines["fsdp"] == "(None, 'data') 4 (None, 'data')"
  # 8 pairs x (input | 10 steps | input) of 8x8 digits, 1-pixel gaps, drawn 4x: every row in full
  assert lines["interpolation"] == "(292, 436)"
  saved = np.load(tmp_path / "params.npz")
  names = [k.split("/", 1)[1] for k in saved if k.startswith("replicated/")]
  for leaf in names:
    np.testing.assert_allclose(saved[f"fsdp/{leaf}"], saved[f"replicated/{leaf}"], atol=1e-5)
    np.testing.assert_allclose(saved[f"remat/{leaf}"], saved[f"replicated/{leaf}"], atol=1e-6)
