"""The GAN family: its objectives against numpy, and training behaviour of each variant.

Losses at non-zero logits and the family's training losses on a tiny batch are recomputed from their
definitions (so flipped labels or a dropped term are caught); conditional GAN, PacGAN, WGAN-GP, WGAN
weight clipping and SNGAN's resumable power iteration are checked through the trainer's step.
"""

from __future__ import annotations

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from jaxgen import families, losses, parallel, param_constraints, train
from jaxgen.data.spec import DataSpec
from jaxgen.evaluation import digits_classifier
from jaxgen.families.gan import SPECTRAL

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, num_classes=10)


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def numpy_disc_loss(kind, real, fake):
  """The discriminator objectives as the papers write them (Goodfellow 2014, Lim & Ye 2017, Arjovsky 2017)."""
  if kind in ("non_saturating", "minimax"):  # -log D(x) - log(1 - D(G(z))), D = sigmoid
    return np.mean(-_log_sigmoid(real) - _log_sigmoid(-fake))
  if kind == "hinge":
    return np.mean(np.maximum(0, 1 - real) + np.maximum(0, 1 + fake))
  return np.mean(fake) - np.mean(real)  # wasserstein


def numpy_gen_loss(kind, fake):
  if kind == "non_saturating":  # -log D(G(z))
    return np.mean(-_log_sigmoid(fake))
  if kind == "minimax":  # log(1 - D(G(z)))
    return np.mean(_log_sigmoid(-fake))
  return -np.mean(fake)  # hinge, wasserstein


KINDS = ("non_saturating", "minimax", "hinge", "wasserstein")


@pytest.mark.parametrize("kind", KINDS)
def test_adversarial_losses_match_their_formulas_at_nonzero_logits(kind):
  real = np.array([2.5, -0.7, 0.3, 1.2], np.float32)
  fake = np.array([-1.8, 0.9, -0.4, 1.6], np.float32)
  np.testing.assert_allclose(losses.gan_discriminator_loss(kind, real, fake), numpy_disc_loss(kind, real, fake),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.gan_generator_loss(kind, fake), numpy_gen_loss(kind, fake), rtol=1e-6)


# --- the family's objective on a tiny batch -------------------------------------------------------


def reference_critic_input(x, labels, num_classes, pack):
  """Built by slicing, not by the family's reshapes (jnp, to be differentiable). One-hot label planes appended to the channels, then packs of consecutive samples: pack i holds
  samples i*p .. i*p + p-1, sample j of it in channels [j C', (j+1) C'] (PacGAN)."""
  if num_classes:
    planes = jnp.broadcast_to(jax.nn.one_hot(labels, num_classes)[:, None, None, :], x.shape[:-1] + (num_classes,))
    x = jnp.concatenate([x, planes], axis=-1)
  return jnp.concatenate([x[j::pack] for j in range(pack)], axis=-1)


def _digits_gan(**overrides):
  config = tiny_config("gan", **{"model.width": 4, "model.latent_dim": 3, "train.batch_size": 4, **overrides})
  return families.build(config, DIGITS)


@pytest.mark.parametrize("kind,conditional,pack,penalty", [
    ("non_saturating", False, 1, 0.0), ("minimax", True, 1, 0.0), ("hinge", False, 2, 0.0),
    ("wasserstein", True, 2, 10.0)])
def test_training_losses_equal_the_documented_objective(kind, conditional, pack, penalty):
  """disc: L_D(D(x), D(G(z))) + lambda E[(||grad D(x_hat)|| - 1)^2], x_hat = e x + (1 - e) G(z);
  gen: L_G(D(G(z'))) with uniform labels; the draws are the documented ones: (k_fake, k_gp) =
  split(rng), z = normal(k_fake), e = uniform(k_gp) per example; gen: (k_fake, k_labels) = split(rng)."""
  gan = _digits_gan(**{"model.loss": kind, "model.conditional": conditional, "model.pack": pack,
                       "model.gradient_penalty": penalty})
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1), minval=-1, maxval=1)
  labels = jnp.array([3, 1, 4, 1])
  batch = {"x": x, "label": labels}
  params, state = gan.init(jax.random.key(1), batch)
  params["disc"]["Dense_0"]["bias"] = jnp.array([0.8])  # logits well away from 0
  num_classes = 10 if conditional else 0

  def critic(v, lab):
    return gan.disc.apply({"params": params["disc"]}, reference_critic_input(v, lab, num_classes, pack))

  def generate(key, lab):
    z = jax.random.normal(key, (4, 3))
    return gan.gen.apply({"params": params["gen"], **state["gen"]}, z, lab, True, mutable=["batch_stats"])[0]

  rng = jax.random.key(7)
  k_fake, k_gp = jax.random.split(rng)
  lab = labels if conditional else None
  fake = generate(k_fake, lab)
  real_logits, fake_logits = np.asarray(critic(x, lab), np.float64), np.asarray(critic(fake, lab), np.float64)
  assert real_logits.shape == (4 // pack,) and np.all(np.abs(np.concatenate([real_logits, fake_logits])) > 0.1)
  expected = numpy_disc_loss(kind, real_logits, fake_logits)
  if penalty:
    e = jax.random.uniform(k_gp, (4, 1, 1, 1))
    grads = np.asarray(jax.grad(lambda v: jnp.sum(critic(v, lab)))(e * x + (1 - e) * fake), np.float64)
    expected += penalty * np.mean((np.linalg.norm(grads.reshape(4, -1), axis=1) - 1) ** 2)
  loss, _ = gan.disc_loss(params, state, batch, rng)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

  k_fake, k_labels = jax.random.split(rng)
  gen_labels = jax.random.randint(k_labels, (4,), 0, 10) if conditional else None
  expected = numpy_gen_loss(kind, np.asarray(critic(generate(k_fake, gen_labels), gen_labels), np.float64))
  loss, _ = gan.gen_loss(params, state, batch, rng)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_pacgan_discriminator_sees_packed_inputs_and_pack_1_changes_nothing():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  labels = jnp.array([3, 1, 4, 1])
  np.testing.assert_array_equal(_digits_gan().critic_input(x, None), x)
  packed = _digits_gan(**{"model.pack": 2, "model.conditional": True})
  np.testing.assert_array_equal(packed.critic_input(x, labels), reference_critic_input(x, labels, 10, 2))
  params, _ = packed.init(jax.random.key(1), {"x": x, "label": labels})
  assert params["disc"]["Conv_0"]["kernel"].shape[2] == 2 * (1 + 10)  # the first conv sees a pack


# --- training behaviour ---------------------------------------------------------------------------


def _batch(exp, i):
  return parallel.global_batch(exp.data.train_batch(i), exp.mesh)


def _train(exp, steps, after_step=lambda ts: None):
  """``steps`` compiled train steps from a fresh state (no checkpoints); ``after_step(ts)`` after the
  initialisation and after each step."""
  ts = jax.jit(train._init_fn(exp))(_batch(exp, 0))
  after_step(ts)
  step = train.make_train_step(exp)
  for i in range(steps):
    ts, _ = step(ts, _batch(exp, i))
    after_step(ts)
  return ts


def test_conditional_gan_samples_are_classified_as_their_label(workdir):
  """After a short run, samples drawn with sample.label = k are classified as k by the shipped digits
  classifier far more often than chance. The average over all ten labels of P(class k | label k) is
  exactly 1/10 for samples that ignore the label, whatever the classifier's bias."""
  config = tiny_config("gan", **{"model.conditional": True, "model.width": 16, "train.batch_size": 32,
                                 "optim.gen.learning_rate": 2e-3, "optim.disc.learning_rate": 2e-3,
                                 "train.ema_decay": 0.0})
  exp = train.setup(config, workdir)
  ts = _train(exp, 150)
  accuracy = []
  for k in range(10):
    with_label = copy.deepcopy(config)
    with_label.sample.label = k
    x = families.build(with_label, exp.data.spec).sample(ts.params, ts.state, jax.random.key(k), 100)
    _, logits = digits_classifier.digits_features(digits_classifier.to_classifier_input(x, exp.data.spec))
    accuracy.append(np.mean(np.argmax(logits, axis=-1) == k))
  assert np.mean(accuracy) > 0.35, accuracy


def test_wgan_gp_drives_critic_gradient_norm_on_interpolates_to_one(workdir):
  """WGAN-GP on 2-D points: after 60 steps (300 critic updates) ||grad_x D|| at interpolates of real
  and generated points is close to 1, much closer than at initialisation (without the penalty the
  unconstrained critic's gradients grow far beyond 1)."""
  config = tiny_config("gan", **{
      "data.name": "toy2d/ring8", "train.batch_size": 64, "model.hidden": (32, 32), "model.loss": "wasserstein",
      "model.gradient_penalty": 10.0, "model.n_critic": 5, "optim.gen.learning_rate": 1e-3,
      "optim.disc.learning_rate": 1e-3, "optim.gen.b2": 0.9, "optim.disc.b2": 0.9})
  before = []

  def gradient_norms(ts):
    gan, real = exp.family, _batch(exp, 10_000)["x"]
    fake = gan.sample(ts.params, ts.state, jax.random.key(0), real.shape[0])
    e = jax.random.uniform(jax.random.key(1), (real.shape[0], 1))
    grads = jax.vmap(jax.grad(lambda v: gan.disc.apply({"params": ts.params["disc"]}, v[None])[0]))(
        e * real + (1 - e) * fake)
    return np.linalg.norm(np.asarray(grads), axis=-1)

  exp = train.setup(config, workdir)
  ts = _train(exp, 60, after_step=lambda ts: before or before.append(gradient_norms(ts)))
  initial, after = np.mean(np.abs(before[0] - 1)), gradient_norms(ts)
  assert np.mean(np.abs(after - 1)) < min(0.15, 0.3 * initial), (initial, after)


def test_wgan_weights_stay_within_the_clip_after_every_step(workdir):
  """configs/wgan.py: after every training step (critic updates by RMSProp, then the clip) every critic
  weight is in [-c, c]; the initial weights exceed c, many sit at the bound (the clip acts) and the
  generator's weights are not clipped."""
  config = tiny_config("wgan", **{"model.width": 8, "model.n_critic": 2})
  bound = config.optim.disc.clip_params
  seen = []

  def check(ts):
    disc = np.concatenate([np.ravel(p) for p in jax.tree.leaves(jax.device_get(ts.params["disc"]))])
    seen.append(np.max(np.abs(disc)))
    if len(seen) > 1:  # every step: inside the clip, and the clip is active
      assert np.max(np.abs(disc)) <= bound, "optim.disc.clip_params is not applied by jaxgen/optim.py"
      assert np.mean(np.abs(disc) >= 0.99 * bound) > 0.1
    gen = jax.tree.leaves(jax.device_get(ts.params["gen"]))
    assert max(np.max(np.abs(p)) for p in gen) > bound  # the generator is not clipped

  _train(train.setup(config, workdir), 3, after_step=check)
  assert seen[0] > bound and len(seen) == 4  # initial weights exceed the clip


@pytest.mark.parametrize("bound", [0.01, 0.3])
def test_clip_params_keeps_params_plus_updates_within_the_bound(bound):
  """fl(p + u') in [-c, c] for every element; u' == u where p + u is inside, else p + u' == clip(p + u) up to
  rounding (two ulps of |p| + c); the inputs are wide enough that the naive clip(p + u) - p
  lands outside the bound by rounding."""
  p = jax.random.normal(jax.random.key(0), (100_000,)) * 3
  u = jax.random.normal(jax.random.key(1), (100_000,)) * 3
  tx = param_constraints.clip_params(bound)
  new_u = jax.jit(lambda u, p: tx.update(u, tx.init(p), p)[0])(u, p)
  new = np.asarray(optax.apply_updates(p, new_u))
  target = np.clip(np.asarray(p + u), -bound, bound)
  inside = np.abs(np.asarray(p + u)) <= bound
  assert np.all(np.abs(new) <= bound)
  np.testing.assert_array_equal(np.asarray(new_u)[inside], np.asarray(u)[inside])
  assert np.all(np.abs(new - target) <= 2 * np.spacing(np.abs(np.asarray(p)) + np.float32(bound)))
  naive = np.asarray(p + (jnp.clip(p + u, -bound, bound) - p))
  assert np.any(np.abs(naive) > bound)


def test_sngan_power_iteration_resumes_exactly(tmp_path):
  """4 steps in one go == 2 steps, stop, resume to 4, the spectral-norm vectors u included (bit for bit);
  u advances during training."""
  overrides = {"model.width": 8, "eval.metrics": (), "eval.num_batches": 1}
  full = train.train_and_evaluate(tiny_config("sngan", **overrides, **{"train.steps": 4}), str(tmp_path / "full"))
  split_dir = str(tmp_path / "split")
  half = train.train_and_evaluate(tiny_config("sngan", **overrides, **{"train.steps": 2, "train.checkpoint_every": 2}),
                                  split_dir)
  half_u = jax.device_get(half.state["disc"][SPECTRAL])
  resumed = train.train_and_evaluate(tiny_config("sngan", **overrides, **{"train.steps": 4}), split_dir)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  full_u = jax.device_get(full.state["disc"][SPECTRAL])
  assert set(full_u) == {f"layer_instance/{n}/kernel/{v}" for n in ("Conv_0", "Conv_1", "Dense_0") for v in ("u", "sigma")}
  assert not np.array_equal(half_u["layer_instance/Conv_1/kernel/u"], full_u["layer_instance/Conv_1/kernel/u"])


def test_resnet_option_follows_the_sngan_cifar_layout():
  """32x32x3: the generator starts from 4x4 and has three up-blocks; the discriminator has four
  residual blocks (two downsampling, 32 -> 16 -> 8), global sum pooling into a Dense logit, and spectral
  norm reaches every one of its weights."""
  config = tiny_config("gan", **{"model.architecture": "resnet", "model.width": 8, "model.gen_width": 16,
                                 "model.latent_dim": 4, "model.spectral_norm": True, "train.batch_size": 2})
  gan = families.build(config, DataSpec("cifar", "image", (32, 32, 3), levels=256))
  x = jnp.zeros((2, 32, 32, 3))
  params, state = jax.eval_shape(gan.init, jax.random.key(0), {"x": x})
  gen, disc = params["gen"], params["disc"]["layer_instance"]
  assert gen["Dense_0"]["kernel"].shape == (4, 4 * 4 * 16)
  assert sorted(k for k in gen if k.startswith("UpBlock")) == ["UpBlock_0", "UpBlock_1", "UpBlock_2"]
  assert sorted(k for k in disc if k.startswith("DownBlock")) == [f"DownBlock_{i}" for i in range(4)]
  assert disc["Dense_0"]["kernel"].shape == (8, 1)
  assert "Conv_2" in disc["DownBlock_1"] and "Conv_2" not in disc["DownBlock_2"]  # 1x1 shortcut only when pooling
  _, captured = jax.eval_shape(lambda p, s, x: gan.disc.apply(
      {"params": p, **s}, x, update_stats=False, capture_intermediates=True, mutable=["intermediates"]),
      params["disc"], state["disc"], x)
  blocks = captured["intermediates"]["layer_instance"]
  assert [blocks[f"DownBlock_{i}"]["__call__"][0].shape[1:] for i in range(4)] == [(16, 16, 8)] + [(8, 8, 8)] * 3
  assert jax.eval_shape(lambda p, s: gan.sample(p, s, jax.random.key(1), 2), params, state).shape == (2, 32, 32, 3)
  weights = {"/".join(str(k.key) for k in path[1:]) for path, p in jax.tree_util.tree_leaves_with_path(
      params["disc"]) if p.ndim >= 2}
  us = {k[len("layer_instance/"):-len("/u")] for k in state["disc"][SPECTRAL] if k.endswith("/u")}
  assert us == weights and len(us) == 11


def test_held_out_discriminator_terms_ignore_the_padding_of_the_last_batch(workdir):
  """297 test digits in batches of 66 (the last padded with 33 copies of example 0) or of 99 (no
  padding): the critic's mean logit on the test split is the same, and equals the critic applied to
  the split directly (fakes are fresh per batch, so only the real side is compared). PacGAN3: a
  pack's logit stands for each of its 3 rows."""
  config = tiny_config("gan", **{"model.width": 8, "model.pack": 3, "train.batch_size": 6, "train.steps": 1,
                                 "eval.metrics": ("heldout",), "eval.num_batches": 0, "eval.batch_size": 66})
  train.train_and_evaluate(config, workdir)
  got = {}
  for batch_size in (66, 99):
    config.eval.batch_size = batch_size
    got[batch_size] = train.evaluate(config, workdir)["disc/real_logit"]
  exp = train.setup(config, workdir)
  ts = train.restore_for_inference(exp)
  x = next(exp.data.eval_batches(297, 1))["x"]
  want = np.mean(np.asarray(exp.family._critic(ts.ema_params, ts.state, x, None)[0], np.float64))
  assert got[66] == pytest.approx(want, rel=1e-5, abs=1e-6)
  assert got[99] == pytest.approx(want, rel=1e-5, abs=1e-6)
