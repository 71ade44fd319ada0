"""The one generic training loop, and the ``sample`` / ``eval`` modes that reuse its pieces.

``train_and_evaluate(config, workdir)``: build data, family and optimizers; restore the latest good
checkpoint or initialise; run ``config.train.steps`` compiled steps (one ``jax.jit`` over a mesh of
all devices, batch sharded, state replicated and donated); log, write samples, evaluate and
checkpoint periodically and at the end.

Randomness: ``root = key(config.seed)``; stream ``s`` (init, train, sample, eval) is
``fold_in(root, s)`` and the train step ``k`` uses ``fold_in(train_stream, k)``. With the data
order a function of ``(seed, step)`` too, a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from jaxgen import checkpoint as checkpoint_lib
from jaxgen import data as data_lib
from jaxgen import families
from jaxgen import optim
from jaxgen import outputs
from jaxgen import parallel
from jaxgen.errors import NonFiniteLossError, UserError
from jaxgen.metric_writer import MetricWriter
from jaxgen.state import TrainState

INIT_STREAM, TRAIN_STREAM, SAMPLE_STREAM, EVAL_STREAM, EVAL_SAMPLE_STREAM = range(5)


@dataclasses.dataclass
class Experiment:
  """Everything built from a config that the modes share."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  data: Any  # jaxgen.data.Pipeline
  family: families.Family
  optimizers: dict[str, optax.GradientTransformation]
  _built: dict[str, Any] = dataclasses.field(default_factory=dict)

  def cached(self, key: str, build):
    """``build()`` once per experiment: jitted sampling / evaluation functions and the real-data
    features of the sample metrics are reused by every periodic evaluation instead of rebuilt."""
    if key not in self._built:
      self._built[key] = build()
    return self._built[key]

  def stream(self, s: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(self.config.seed), s)

  @property
  def replicated(self):
    return parallel.replicated(self.mesh)


def setup(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Validates the config against the machine and builds the experiment's parts."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{jax.process_index()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"workdir {workdir!r} is not writable ({e.strerror}); pass --workdir=DIR you can write to") from None
  parallel.check_batch_size(config.train.batch_size, "train.batch_size")
  parallel.check_batch_size(config.eval.batch_size, "eval.batch_size")
  mesh = parallel.make_mesh()
  data = data_lib.build(config, process_index=jax.process_index(), process_count=jax.process_count())
  family = families.build(config, data.spec)
  return Experiment(config, workdir, mesh, data, family, optim.optimizers(config, family.networks))


# --- state -----------------------------------------------------------------------------------------


def _init_fn(exp: Experiment):
  def init(batch):
    params, state = exp.family.init(exp.stream(INIT_STREAM), batch)
    params, state = dict(params), dict(state)
    opt_state = {n: exp.optimizers[n].init(params[n]) for n in exp.family.networks}
    ema = jax.tree.map(jnp.copy, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, state=state, opt_state=opt_state, ema_params=ema)

  return init


def init_or_restore(exp: Experiment, ckpt: checkpoint_lib.Checkpointer) -> TrainState:
  """The latest good checkpoint, or a fresh state initialised from the batch of step 0."""
  batch0 = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
  init = _init_fn(exp)
  abstract = jax.eval_shape(init, batch0)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=exp.replicated), abstract)
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    logging.info("resumed from step %d", int(restored.step))
    return restored
  return jax.jit(init, out_shardings=exp.replicated)(batch0)


def restore_for_inference(exp: Experiment) -> TrainState:
  """The latest good checkpoint; a ``UserError`` if the workdir has none."""
  ckpt = checkpoint_lib.Checkpointer(exp.workdir, exp.config.train.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise UserError(f"no checkpoint in {ckpt.directory}; train first with --mode=train and the same --workdir")
  state = init_or_restore(exp, ckpt)
  ckpt.close()
  return state


# --- the compiled step -----------------------------------------------------------------------------


def make_train_step(exp: Experiment, max_traces: int | None = None):
  """``step(state, batch) -> (state, metrics)``: every update group of the family, then the EMA.

  Compiled once per run. ``max_traces``: wrap the step in ``chex.assert_max_traces`` (tests use it
  to prove a run never retraces; chex counts traces per process, so it is off by default).
  """
  groups = exp.family.update_groups()
  txs = exp.optimizers
  decay = exp.config.train.ema_decay
  train_stream = exp.stream(TRAIN_STREAM)

  def step(ts: TrainState, batch):
    rng = jax.random.fold_in(train_stream, ts.step)
    params, state, opt_state = dict(ts.params), ts.state, dict(ts.opt_state)
    metrics = {}
    for g_index, group in enumerate(groups):
      net = group.network
      for r in range(group.repeats):
        key = jax.random.fold_in(jax.random.fold_in(rng, g_index), r)

        def loss_of(p, params=params, state=state, group=group, key=key):
          return group.loss_fn({**params, group.network: p}, state, batch, key)

        (loss, (m, state)), grads = jax.value_and_grad(loss_of, has_aux=True)(params[net])
        updates, opt_state[net] = txs[net].update(grads, opt_state[net], params[net])
        params[net] = optax.apply_updates(params[net], updates)
      metrics[f"{net}/loss"] = loss
      metrics[f"{net}/grad_norm"] = optax.tree.norm(grads)
      metrics.update({f"{net}/{k}": v for k, v in m.items()})
    if decay > 0:  # warm-up: an average over the steps so far while t is small (as TF's num_updates)
      t = ts.step.astype(jnp.float32)
      decay_t = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
      ema = optax.incremental_update(params, ts.ema_params, 1.0 - decay_t)
    else:
      ema = params
    return ts.replace(step=ts.step + 1, params=params, state=state, opt_state=opt_state, ema_params=ema), metrics

  if max_traces is not None:
    step = chex.assert_max_traces(step, n=max_traces)
  return jax.jit(step, in_shardings=(exp.replicated, parallel.batch_sharding(exp.mesh)),
                 out_shardings=(exp.replicated, exp.replicated), donate_argnums=0)


def _check_finite(step: int, metrics: dict[str, Any], last_saved: int | None) -> None:
  bad = {k: float(v) for k, v in metrics.items() if k.endswith("loss") and not np.isfinite(float(v))}
  if bad:
    terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved else "no checkpoint was written"
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {terms}; training stopped and {kept}. "
        "Lower the learning rate or clip gradients (--config.optim.<network>.grad_clip_norm=1.0)")


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated global array -> numpy (works multi-process: every process holds a full copy)."""
  return np.asarray(x.addressable_data(0))


# --- sampling and evaluation -----------------------------------------------------------------------


def generate(exp: Experiment, ts: TrainState, num: int, rng: jax.Array, chunk: int = 0) -> np.ndarray:
  """``num`` model-space samples from the EMA params, drawn ``chunk`` at a time (one compilation)."""
  chunk = min(chunk or num, num)
  fn = exp.cached(f"sample_{chunk}", lambda: jax.jit(lambda p, s, k: exp.family.sample(p, s, k, chunk),
                                                     out_shardings=exp.replicated))
  out = [to_host(fn(ts.ema_params, ts.state, jax.random.fold_in(rng, i))) for i in range(-(-num // chunk))]
  return np.concatenate(out)[:num]


def write_samples(exp: Experiment, ts: TrainState, name: str, echo: bool = False) -> list[str]:
  step = int(to_host(ts.step))
  samples = generate(exp, ts, exp.config.sample.num, jax.random.fold_in(exp.stream(SAMPLE_STREAM), step))
  if jax.process_index() != 0:
    return []
  data = exp.data.held_out(2000)["x"] if exp.data.spec.modality == "points" else None
  return outputs.write_samples(samples, exp.data.spec, os.path.join(exp.workdir, "samples", name), data, echo=echo)


def evaluate_state(exp: Experiment, ts: TrainState) -> dict[str, float]:
  """Held-out metrics (mask-weighted means over the test split) plus the sample-based metrics of
  ``config.eval.metrics``, all from the EMA params."""
  cfg = exp.config.eval
  eval_stream = exp.stream(EVAL_STREAM)

  def per_batch(ts, batch, index):
    m = exp.family.eval_metrics(ts.ema_params, ts.state, batch, jax.random.fold_in(eval_stream, index))
    mask = batch["mask"]
    return {k: jnp.sum(jnp.broadcast_to(v, mask.shape) * mask) for k, v in m.items()}, jnp.sum(mask)

  eval_step = exp.cached("eval_step", lambda: jax.jit(per_batch))
  sums, count = {}, 0.0
  for i, local in enumerate(exp.data.eval_batches(cfg.batch_size // jax.process_count(), cfg.num_batches)):
    s, n = eval_step(ts, parallel.global_batch(local, exp.mesh), i)
    for k, v in s.items():
      sums[k] = sums.get(k, 0.0) + float(to_host(v))
    count += float(to_host(n))
  results = {k: v / count for k, v in sums.items()}
  results["num_eval_examples"] = count
  if cfg.metrics:
    from jaxgen import evaluation  # imported here: the metric library is only needed when asked for

    step = int(to_host(ts.step))
    fake = generate(exp, ts, cfg.num_samples, jax.random.fold_in(exp.stream(EVAL_SAMPLE_STREAM), step), cfg.batch_size)
    metrics = exp.cached("sample_metrics", lambda: evaluation.SampleEvaluator(
        cfg.metrics, exp.data.held_out(cfg.num_samples)["x"], exp.data.spec, cfg))
    results.update(metrics(fake))
  return results


def _write_eval(exp: Experiment, step: int, results: dict[str, float], writer: MetricWriter | None) -> str:
  path = os.path.join(exp.workdir, "eval", f"step_{step}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump({"step": step, **results}, f, indent=2, sort_keys=True)
  if writer is not None:
    writer.write(step, results, prefix="eval/")
  return path


# --- the modes ---------------------------------------------------------------------------------------


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _due(done: int, every: int) -> bool:
  """Whether a periodic action (``train.*_every``) falls on step ``done``; ``every <= 0``: never
  (the loop still logs, saves, samples and evaluates at the last step)."""
  return every > 0 and done % every == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) to ``config.train.steps`` and returns the final state."""
  exp = setup(config, workdir)
  save_config(config, workdir)
  tc = config.train
  ckpt = checkpoint_lib.Checkpointer(workdir, tc.keep_checkpoints)
  writer = MetricWriter(workdir)
  try:
    ts = init_or_restore(exp, ckpt)
    start = int(to_host(ts.step))
    last_saved = ckpt.latest_step()
    if start >= tc.steps:
      logging.info("already trained to step %d >= train.steps=%d", start, tc.steps)
      return ts
    train_step = make_train_step(exp)
    bar = tqdm.tqdm(total=tc.steps, initial=start, unit="step", dynamic_ncols=True,
                    disable=not tc.progress_bar or jax.process_index() != 0)
    pending = None  # (step, metrics) of the last dispatched step, checked one step late
    t0, s0 = time.perf_counter(), start
    batches = exp.data.iterate_train(start, transform=lambda b: parallel.global_batch(b, exp.mesh))
    for step, batch in batches:
      ts, metrics = train_step(ts, batch)
      if pending is not None:  # checked after dispatching the next step: keeps the device busy
        _check_finite(*pending, last_saved)
      done = step + 1
      pending = (done, metrics)
      bar.update(1)
      if _due(done, tc.log_every) or done == tc.steps:
        host = {k: float(to_host(v)) for k, v in metrics.items()}
        _check_finite(done, host, last_saved)
        now = time.perf_counter()
        host["steps_per_second"] = (done - s0) / (now - t0)
        t0, s0 = now, done
        writer.write(done, host, prefix="train/")
        bar.set_postfix({k.split("/")[0] + "_loss" if k.endswith("/loss") else k: f"{v:.4g}"
                         for k, v in host.items() if k.endswith("/loss")})
      if _due(done, tc.checkpoint_every) or done == tc.steps:
        _check_finite(*pending, last_saved)
        ckpt.save(done, ts)
        last_saved = done
      if _due(done, tc.sample_every) and done != tc.steps:
        write_samples(exp, ts, f"step_{done}")
      if _due(done, tc.eval_every) and done != tc.steps:
        _write_eval(exp, done, evaluate_state(exp, ts), writer)
      if done >= tc.steps:
        break
    batches.close()  # stops the prefetch thread
    bar.close()
    paths = write_samples(exp, ts, f"step_{tc.steps}")
    if (hasattr(exp.family, "plot_density") and exp.data.spec.modality == "points"
        and jax.process_index() == 0):  # 2-D densities (flows) beside the data
      paths.append(os.path.join(workdir, "samples", f"density_step_{tc.steps}.png"))
      exp.family.plot_density(ts.ema_params, ts.state, exp.data.held_out(2000)["x"], paths[-1])
    results = evaluate_state(exp, ts)
    _write_eval(exp, tc.steps, results, writer)
    logging.info("final evaluation at step %d: %s (samples: %s)", tc.steps, results, paths)
    return ts
  finally:
    ckpt.close()
    writer.close()


def sample(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Writes ``config.sample.num`` samples from the latest checkpoint's EMA params."""
  exp = setup(config, workdir)
  ts = restore_for_inference(exp)
  step = int(to_host(ts.step))
  paths = write_samples(exp, ts, f"sample_step_{step}_seed_{config.seed}", echo=True)
  for p in paths:
    print(f"wrote {p}")
  return paths


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Computes the family's metrics for the latest checkpoint and writes ``eval/step_<N>.json``."""
  exp = setup(config, workdir)
  ts = restore_for_inference(exp)
  step = int(to_host(ts.step))
  results = evaluate_state(exp, ts)
  path = _write_eval(exp, step, results, None)
  print(json.dumps({"step": step, **results}, indent=2, sort_keys=True))
  print(f"wrote {path}")
  return results
