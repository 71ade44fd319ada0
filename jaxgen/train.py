"""The one generic training loop, and the ``sample`` / ``eval`` modes that reuse its pieces.

``train_and_evaluate(config, workdir)``: build data, family and optimizers; restore the latest good
checkpoint or initialise; run ``config.train.steps`` compiled steps (one ``jax.jit`` over a mesh of
all devices, batch sharded, state replicated or FSDP-sharded (``train.param_sharding``,
``jaxgen.parallel``) and donated); log and checkpoint periodically and at
the end, and run the evaluators of ``config.eval.metrics`` (``jaxgen.evaluation``) at the steps
``eval.<name>.every`` divides and all of them at the end.

Randomness: ``root = key(config.seed)``; stream ``s`` is ``fold_in(root, s)``: init (0), train (1),
then the evaluation streams 2..4 (``jaxgen.evaluation.context``); the train step ``k`` uses
``fold_in(train_stream, k)``. With the data order a function of ``(seed, step)`` too, a resumed run
repeats an uninterrupted one bit for bit.

Gradient accumulation (``train.grad_accum_steps = k > 1``): each update's gradient is the mean of
the gradients of ``k`` micro-batches of ``B / k`` examples (a ``lax.scan`` inside the one compiled
step, unrolled on CPU: ``_accumulation_unroll``; micro-batch ``i`` holds rows ``i, i + k, ...``,
so every device keeps its own rows), the non-gradient state's float leaves (BatchNorm statistics)
thread through them in order while its integer leaves (step counters: KL warm-up, DBN layer
schedule) are the update's for every micro-batch and advance once, micro-batch ``i`` draws its
randomness from ``fold_in(key, i)``, and the logged metrics are their means. For a loss that is a
mean over examples this is the gradient of the whole batch (up to float summation order), with the
activation memory of one micro-batch in the loop (unrolled, XLA's scheduler decides how many
micro-batches' activations are live).
"""

from __future__ import annotations

import dataclasses
import json
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
from jaxgen import config_defaults, evaluation, families, optim, parallel, preemption, sampling, validate
from jaxgen import data as data_lib
from jaxgen import state as state_lib
from jaxgen import workdir as workdir_lib
from jaxgen.errors import Preempted, UserError
from jaxgen.evaluation import samples as samples_lib
from jaxgen.evaluation.context import to_host
from jaxgen.metric_writer import MetricWriter
from jaxgen.state import TrainState

INIT_STREAM, TRAIN_STREAM = 0, 1  # 2..4: the evaluation streams of jaxgen.evaluation.context


@dataclasses.dataclass
class Experiment:
  """Everything built from a config that the modes share."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  data: Any  # jaxgen.data.Pipeline
  family: families.Family
  optimizers: dict[str, optax.GradientTransformation]
  evaluators: list[evaluation.Evaluator]  # those of config.eval.metrics, checked against data and family
  _built: dict[str, Any] = dataclasses.field(default_factory=dict)

  def cached(self, key: str, build):
    """``build()`` once per experiment: jitted sampling / evaluation functions and the real-data
    features of the sample metrics are reused by every evaluation instead of rebuilt."""
    if key not in self._built:
      self._built[key] = build()
    return self._built[key]

  def stream(self, s: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(self.config.seed), s)

  @property
  def replicated(self):
    return parallel.replicated(self.mesh)

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings (``train.param_sharding``) of the train state, from the shapes of
    the (global) batch of step 0: sampling and evaluation need not split a train batch over the devices."""
    def build():
      batch0 = {k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(), *v.shape[1:]), v.dtype)
                for k, v in self.data.train_batch(0).items()}
      abstract = jax.eval_shape(_init_fn(self), batch0)
      shardings = parallel.state_sharding(abstract, self.mesh, self.config.train.param_sharding)
      return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)

    return self.cached("abstract_state", build)

  def state_shardings(self) -> TrainState:
    return jax.tree.map(lambda x: x.sharding, self.abstract_state())


def setup(config: ml_collections.ConfigDict, workdir: str, training: bool = True) -> Experiment:
  """Validates the config against the machine and builds the experiment's parts; the evaluators'
  preconditions are checked here, before any training step. ``training=False`` (sampling,
  evaluation) does not build the family's update groups, which may prepare training data (a first
  stage's latent cache, reflow pairs drawn from a teacher); their repeats only set the schedule."""
  workdir_lib.prepare(workdir_lib.path(workdir))
  if training:  # sampling and evaluation on another device count may keep the config's train batch
    parallel.check_batch_size(config.train.batch_size, "train.batch_size", config.train.grad_accum_steps)
  parallel.check_batch_size(config.eval.batch_size, "eval.batch_size")
  mesh = parallel.make_mesh()
  data = data_lib.build(config, process_index=jax.process_index(), process_count=jax.process_count())
  family = _sizes_checked(config, lambda: families.build(config, data.spec))
  temperature = config.sample.get("temperature", 1.0)
  if temperature != 1.0 and not family.sample_temperature:
    raise UserError(f"sample.temperature={temperature} changes nothing in {config.model.family} samples (its "
                    "sampler has no temperature); leave it at 1.0")
  conditional = bool(config.model.get("conditional", False))
  sampling.labels_from_config(config.sample, family.condition_classes() if conditional else 0, jax.random.key(0), 1)
  evaluators = evaluation.prepare(config, data.spec, family, data.num_test)
  saved = checkpoint_lib.Checkpointer(workdir, config.train.keep_checkpoints, config, read_only=True)
  saved_config = saved.saved_config()
  saved.close()
  if not training and saved_config is not None:  # no update is made: the optimizer state restores as saved,
    with config.unlocked():  # whatever optim.* flags this command repeats or not (fields the saved config
      config_defaults.merge(config.optim, saved_config.get("optim", {}))  # predates keep their defaults)
  optim.resolve_decay_steps(config, saved_config)  # an extended run keeps its schedule
  if training and saved_config is not None:  # a fresh run's horizons were checked with the whole config
    validate.warmup_within_horizon(config, resumed=True)
  repeats = {group.network: group.repeats for group in family.update_groups()} if training else {}
  exp = Experiment(config, workdir, mesh, data, family, optim.optimizers(config, family.networks, repeats), evaluators)
  _sizes_checked(config, exp.abstract_state)  # traces the init: networks of impossible sizes fail here
  return exp


def _sizes_checked(config: ml_collections.ConfigDict, build: Any) -> Any:
  """``build()``. When it fails (``TypeError``, ``ValueError``, ``ZeroDivisionError``, ``KeyError``,
  ``IndexError``), or builds an array of size 0, while an integer ``model.*`` field is <= 0 whose
  family default is >= 1 (a size: ``model.latent_dim=0``), that is one line naming the fields
  (JAX's own message would name an array shape, or a checkpoint of empty arrays fail later)."""
  try:
    built = build()
  except (TypeError, ValueError, ZeroDivisionError, KeyError, IndexError) as e:
    bad = _nonpositive_sizes(config)
    if not bad:
      raise
    raise UserError(f"cannot build the {config.model.family} model with {', '.join(bad)} "
                    f"({type(e).__name__}); sizes must be >= 1") from e  # chained: the cause stays inspectable
  if any(getattr(leaf, "size", 1) == 0 for leaf in jax.tree.leaves(built)) and (bad := _nonpositive_sizes(config)):
    raise UserError(f"cannot build the {config.model.family} model with {', '.join(bad)} (an array of size 0); "
                    "sizes must be >= 1")
  return built


def _nonpositive_sizes(config: ml_collections.ConfigDict) -> list[str]:
  """``model.<field>=<value>`` of every integer field <= 0 whose family default is >= 1."""
  defaults = families.FAMILIES.get(config.model.family).defaults().get("model", {})

  def sizes(values, defaults, prefix="model."):
    for key, value in values.items():
      default = defaults.get(key) if isinstance(defaults, dict) else None
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        yield from sizes(value, default or {}, f"{prefix}{key}.")
      elif isinstance(value, int) and not isinstance(value, bool) and isinstance(default, int) and default >= 1:
        if value <= 0:
          yield f"{prefix}{key}={value}"

  return list(sizes(config.model, defaults))


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
  restored = ckpt.restore_latest(exp.abstract_state())
  if restored is not None:
    logging.info("resumed from step %d", int(restored.step))
    return restored
  batch0 = parallel.global_batch(exp.data.train_batch(0), exp.mesh)
  fresh = jax.jit(_init_fn(exp), out_shardings=exp.state_shardings())(batch0)
  init_from = exp.config.train.get("init_from", "")
  return checkpoint_lib.warm_start(init_from, fresh) if init_from else fresh


def restore_for_inference(exp: Experiment) -> TrainState:
  """The latest good checkpoint; a ``UserError`` if the workdir has none."""
  return _restore_with_config(exp)[0]


def _restore_with_config(exp: Experiment) -> tuple[TrainState, dict | None]:
  """The latest good checkpoint and the config it was saved with (a plain dict, or None)."""
  ckpt = checkpoint_lib.Checkpointer(exp.workdir, exp.config.train.keep_checkpoints, exp.config, read_only=True)
  try:
    state = ckpt.restore_latest(exp.abstract_state())
    meta = ckpt.meta(int(state.step)) if state is not None else None
  finally:
    ckpt.close()
  if state is None:
    raise UserError(f"no checkpoint in {ckpt.directory}; train first with --mode=train and the same --workdir")
  return state, (meta or {}).get("config")


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
  micro_batches = exp.config.train.grad_accum_steps

  def step(ts: TrainState, batch):
    rng = jax.random.fold_in(train_stream, ts.step)
    params, state, opt_state = dict(ts.params), ts.state, dict(ts.opt_state)
    metrics, finite = {}, {}
    for g_index, group in enumerate(groups):
      net = group.network
      for r in range(group.repeats):
        key = jax.random.fold_in(jax.random.fold_in(rng, g_index), r)

        def loss_of(p, state, batch, key, params=params, group=group):
          return group.loss_fn({**params, group.network: p}, state, batch, key)

        (loss, (m, state)), grads = accumulated_grads(loss_of, params[net], state, batch, key, micro_batches)
        updates, opt_state[net] = txs[net].update(grads, opt_state[net], params[net])
        params[net] = optax.apply_updates(params[net], updates)
        flags = state_lib.finite_flags(loss, grads, opt_state[net], params[net])
        finite[net] = flags & finite[net] if net in finite else flags
      metrics[f"{net}/finite"] = finite[net]
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
  shardings = exp.state_shardings()
  return jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(exp.mesh)),
                 out_shardings=(shardings, exp.replicated), donate_argnums=0)


def _accumulation_unroll(k: int) -> int:
  """How many micro-batches one iteration of the accumulation loop runs: all ``k`` on CPU (no
  loop), 1 elsewhere. Inside a loop body XLA:CPU runs convolutions' gradients without its YNNPACK
  kernels: the DDPM U-Net's step took 936 ms at ``k = 2`` against 82 ms at ``k = 1`` (2-core
  CPU); unrolled, the program holds ``k`` copies of the gradient, which on an accelerator would
  only cost compile time."""
  return k if jax.default_backend() == "cpu" else 1


def accumulated_grads(loss_of, p, state, batch, key, micro_batches: int):
  """``((loss, (metrics, state)), grads)`` of ``loss_of(p, state, batch, key)`` w.r.t. ``p``: one
  ``value_and_grad`` on the whole batch, or with ``micro_batches = k > 1`` the mean over ``k``
  micro-batches (module docstring)."""
  value_and_grad = jax.value_and_grad(loss_of, has_aux=True)
  if micro_batches == 1:
    return value_and_grad(p, state, batch, key)
  k = micro_batches
  micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)

  def at_update(threaded):
    """Integer leaves are step counters (KL warm-up, DBN layer schedule): every micro-batch sees the
    update's value, so they advance once; the others (batch statistics) thread through in order."""
    return jax.tree.map(lambda t, s: s if jnp.issubdtype(t.dtype, jnp.integer) else t, threaded, state)

  def body(carry, inputs):
    threaded, total = carry
    i, mb = inputs
    (loss, (m, threaded)), g = value_and_grad(p, at_update(threaded), mb, jax.random.fold_in(key, i))
    return (threaded, jax.tree.map(jnp.add, total, g)), (loss, m)

  zeros = jax.tree.map(jnp.zeros_like, p)
  (new_state, total), (losses, ms) = jax.lax.scan(body, (state, zeros), (jnp.arange(k), micro),
                                                  unroll=_accumulation_unroll(k))
  metrics = jax.tree.map(lambda x: jnp.mean(x, axis=0), ms)
  return (jnp.mean(losses), (metrics, new_state)), jax.tree.map(lambda g: g / k, total)


def _check_finite(step: int, metrics: dict[str, Any], last_saved: int | None) -> None:
  """``state.check_finite`` on the flags the step computed (``<net>/finite``)."""
  flags = {k[:-len("/finite")]: to_host(v) for k, v in metrics.items() if k.endswith("/finite")}
  if not all(np.all(f) for f in flags.values()):
    quoted = {k: float(to_host(v)) for k, v in metrics.items() if k.endswith(("/loss", "/grad_norm"))}
    state_lib.check_finite(step, flags, quoted, last_saved)


# --- evaluation --------------------------------------------------------------------------------------


def run_evaluators(exp: Experiment, ts: TrainState, evaluators: list[evaluation.Evaluator],
                   writer: MetricWriter | None) -> dict[str, float]:
  """Runs ``evaluators`` on one shared context of ``ts`` (on every process) and writes the union of
  their outputs to ``eval/step_<N>.json`` and ``writer`` (process 0; nothing when it is empty)."""
  ctx = evaluation.EvalContext(exp, ts)
  results = evaluation.run(evaluators, ctx)
  if results:
    _write_eval(exp, ctx.step, results, writer)
  return results


def _eval_path(workdir: str, step: int):
  return workdir_lib.path(workdir) / "eval" / f"step_{step}.json"


def _unfinished_evaluation(exp: Experiment, start: int,
                           periods: list[tuple[evaluation.Evaluator, int]]) -> list[evaluation.Evaluator]:
  """The evaluators due at the restored step ``start`` (all of them at the last step) whose
  evaluation never finished: a run killed or preempted after saving step ``start``, before or while
  evaluating it, resumes there. ``eval/step_<start>.json`` is written last, so it marks a finished
  one (evaluators reporting no numbers, such as ``samples``, run again at each such resume)."""
  if start == 0 or _eval_path(exp.workdir, start).exists():
    return []
  if start >= exp.config.train.steps:
    return exp.evaluators
  return [e for e, every in periods if _due(start, every)]


def _write_eval(exp: Experiment, step: int, results: dict[str, float], writer: MetricWriter | None) -> None:
  """Merges ``results`` into ``eval/step_<N>.json``: a later evaluation of the same step (``--mode=eval``
  with other metrics) replaces the numbers it recomputes and keeps the others."""
  if writer is not None:  # before the file that marks the step evaluated (``_unfinished_evaluation``)
    writer.write(step, results, prefix="eval/")
  path = _eval_path(exp.workdir, step)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
      earlier = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:  # a file cut short (disk full): rewritten whole
      earlier = {}
    workdir_lib.write_atomic(path, json.dumps({**earlier, "step": step, **results}, indent=2, sort_keys=True))


# --- the modes ---------------------------------------------------------------------------------------


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    workdir_lib.write_atomic(workdir_lib.path(workdir) / "config.json",
                             config.to_json_best_effort(indent=2, sort_keys=True))


def _due(done: int, every: int) -> bool:
  """Whether a periodic action (``train.*_every``, ``eval.<name>.every``) falls on step ``done``;
  ``every <= 0``: never (the loop still logs, saves and evaluates at the last step)."""
  return every > 0 and done % every == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) to ``config.train.steps`` and returns the final state. SIGTERM / SIGINT:
  saves the current step and raises ``Preempted``."""
  with preemption.StopSignal() as stop:
    exp = setup(config, workdir)
    tc = config.train
    ckpt = checkpoint_lib.Checkpointer(workdir, tc.keep_checkpoints, config)
    writer, batches = None, None
    try:
      ts = init_or_restore(exp, ckpt)  # refuses an incompatible checkpoint before anything is written
      start = int(to_host(ts.step))
      if start > tc.steps:
        raise UserError(f"{workdir} holds a checkpoint of step {start}, past train.steps={tc.steps}: "
                        f"train it further with --config.train.steps >= {start}, evaluate it with "
                        "--mode=eval, or train a shorter run in a new --workdir")
      save_config(config, workdir)
      periods = [(e, e.every(config)) for e in exp.evaluators]
      unfinished = _unfinished_evaluation(exp, start, periods)  # evaluated again: drop its rows, if any
      writer = MetricWriter(workdir, resume_step=start, redo="eval/" if unfinished else "")
      last_saved = ckpt.latest_step()
      if unfinished:
        run_evaluators(exp, ts, unfinished, writer)
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
        stopping = stop.should_stop(done)  # the same answer on every process
        bar.update(1)
        if _due(done, tc.log_every) or done == tc.steps or stopping:
          _check_finite(done, metrics, last_saved)
          host = {k: float(to_host(v)) for k, v in metrics.items() if not k.endswith("/finite")}
          now = time.perf_counter()
          host["steps_per_second"] = (done - s0) / (now - t0)
          t0, s0 = now, done
          writer.write(done, host, prefix="train/")
          bar.set_postfix({k.split("/")[0] + "_loss" if k.endswith("/loss") else k: f"{v:.4g}"
                           for k, v in host.items() if k.endswith("/loss")})
        if _due(done, tc.checkpoint_every) or done == tc.steps or stopping:
          _check_finite(*pending, last_saved)
          ckpt.save(done, ts)
          last_saved = done
        if stopping:
          bar.close()
          raise Preempted(stop.reason, done, saved=True)
        due = [e for e, every in periods if _due(done, every)]
        if due and done != tc.steps:
          _check_finite(*pending, last_saved)  # never evaluate (and log) a non-finite state
          run_evaluators(exp, ts, due, writer)
        if done >= tc.steps:
          break
      bar.close()
      results = run_evaluators(exp, ts, exp.evaluators, writer)
      logging.info("final evaluation at step %d: %s", tc.steps, results)
      return ts
    finally:
      if batches is not None:
        batches.close()  # stops the prefetch thread
      ckpt.close()
      if writer is not None:
        writer.close()


def sample_name(config: ml_collections.ConfigDict, saved: dict | None, step: int) -> str:
  """``sample_step_<N>_seed_<seed>``, then ``_<field>=<value>`` for each ``sample.*`` field that
  differs from ``saved`` (the config the checkpoint was trained with), so samples drawn from one
  checkpoint with other samplers or steps keep their own files:
  ``sample_step_1000_seed_0_sampler=ddim_steps=50``. No ``saved`` config: the plain name."""
  if saved is None:
    return f"sample_step_{step}_seed_{config.seed}"
  changes = checkpoint_lib.config_changes(saved.get("sample", {}), checkpoint_lib.plain(config.sample))
  settings = "".join(f"_{key}={checkpoint_lib.flag_text(new)}" for key, (_, new) in changes.items())
  return f"sample_step_{step}_seed_{config.seed}" + settings.replace("/", "-").replace(" ", "")


def sample(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Writes ``config.sample.num`` samples from the latest checkpoint's EMA params as the ``samples``
  evaluator does, to ``samples/<sample_name>``."""
  exp = setup(config, workdir, training=False)
  state, saved = _restore_with_config(exp)
  ctx = evaluation.EvalContext(exp, state)
  paths = samples_lib.write(ctx, sample_name(config, saved, ctx.step), echo=True)
  for p in paths:
    print(f"wrote {p}")
  return paths


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs every evaluator of ``config.eval.metrics`` once on the latest checkpoint and merges their
  numbers into ``eval/step_<N>.json`` (those of other metrics already there are kept)."""
  exp = setup(config, workdir, training=False)
  ts = restore_for_inference(exp)
  step = int(to_host(ts.step))
  results = run_evaluators(exp, ts, exp.evaluators, None)
  print(json.dumps({"step": step, **results}, indent=2, sort_keys=True))
  if results:
    print(f"wrote {_eval_path(workdir, step)}")
  return results
