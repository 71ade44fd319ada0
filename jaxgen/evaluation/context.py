"""What the evaluators due at one step share: the state, generated samples and their features
(each made once, when first asked for), and the run's caches (jitted functions, real features).

Random streams under ``config.seed`` (stream ``s`` is ``fold_in(key(seed), s)``; 0 and 1 are the
init and train streams of ``jaxgen.train``):

* ``SAMPLE_STREAM``: the ``sample.num`` samples written for a user, folded with the step;
* ``EVAL_STREAM``: held-out metrics (folded with the batch index) and other model evaluations;
* ``EVAL_SAMPLE_STREAM``: the ``eval.num_samples`` samples scored by the sample metrics, folded
  with the step.

SPMD: every process builds the same context and runs the same jitted computations on the state;
sampling and feature extraction split each chunk of ``eval.batch_size`` over all devices (each
computes its rows; every process then holds the chunk), so the numbers do not depend on the device
count beyond float summation order; only process 0 writes files (``ctx.is_writer``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from jaxgen import parallel
from jaxgen.data.spec import DataSpec
from jaxgen.evaluation import base, features, reference_stats
from jaxgen.evaluation.gaussian import GaussianAccumulator, gaussian_stats

SAMPLE_STREAM, EVAL_STREAM, EVAL_SAMPLE_STREAM = 2, 3, 4


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated global array -> numpy (works multi-process: every process holds a full copy).
  A sharded one (a jit without ``out_shardings=replicated`` over FSDP params or a sharded batch)
  would give only its first device's shard: a ``ValueError``."""
  if not x.is_fully_replicated:
    raise ValueError(f"to_host needs a replicated array, got one of shape {x.shape} sharded as {x.sharding}; "
                     "jit the computation with out_shardings=parallel.replicated(mesh)")
  return np.asarray(x.addressable_data(0))


class SampleContext:
  """Generated samples and real examples (model space, ``[N, *spec.shape]``), their features in
  the space of ``config.eval.features`` and the Gaussian statistics of those, each computed once.

  The ``eval.num_samples`` samples are made ``eval.batch_size`` at a time (``_chunks``); features
  keep no samples, and ``fake_stats`` streamed (``stream_stats``) keeps no features either.
  """

  #: Set by ``base.run``: every due feature metric reads only ``fake_stats`` / ``real_stats`` (FID),
  #: so generated features are accumulated chunk by chunk: memory ``O(D^2)``, not ``O(N D)``.
  stream_stats = False

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec, mesh: Mesh):
    self.config = config
    self.spec = spec
    self.mesh = mesh

  def _chunks(self) -> Iterator[np.ndarray]:
    """The ``eval.num_samples`` samples, ``eval.batch_size`` at a time (on every process)."""
    raise NotImplementedError

  def _real_features(self) -> features.Features:
    raise NotImplementedError

  def cached(self, name: str, build: Callable[[], Any]):
    """``build()`` (once per run in an :class:`EvalContext`)."""
    del name
    return build()

  def numpy_seed(self) -> int | list[int]:
    """The seed of a sample metric's numpy draws (KID's subsets): ``[config.seed, step]`` in an
    :class:`EvalContext`, 0 for arrays scored by :func:`evaluate_samples`."""
    return 0

  def _features(self, x: np.ndarray) -> features.Features:
    return features.extract(self.config, self.spec, x, self.mesh)

  @functools.cached_property
  def samples(self) -> np.ndarray:
    """``eval.num_samples`` generated samples."""
    return np.concatenate(list(self._chunks()))

  @functools.cached_property
  def fake_features(self) -> features.Features:
    if "samples" in self.__dict__:
      return self._features(self.samples)
    return features.Features.concatenate([self._features(chunk) for chunk in self._chunks()])

  @functools.cached_property
  def real_features(self) -> features.Features:
    """Features of the real examples (the first ``eval.num_samples`` test examples)."""
    return self.cached("real_features", self._real_features)

  @functools.cached_property
  def fake_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [F], sigma [F, F])`` float64 of the generated samples' features."""
    if not self.stream_stats or "fake_features" in self.__dict__:
      return gaussian_stats(self.fake_features.features)
    acc = GaussianAccumulator()
    for chunk in self._chunks():
      acc.update(self._features(chunk).features)
    return acc.finalize()

  @functools.cached_property
  def real_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the reference: the file ``eval.reference_stats`` when given, else the
    statistics of ``real_features``."""
    path = self.config.eval.reference_stats
    if path:
      reference = self.cached(f"reference_stats:{path}", lambda: reference_stats.load(path))
      return reference.mu, reference.sigma
    return self.cached("real_stats", lambda: gaussian_stats(self.real_features.features))


class EvalContext(SampleContext):
  """One evaluation of the train state ``ts`` of the experiment ``exp`` (``jaxgen.train``)."""

  def __init__(self, exp: Any, ts: Any):
    super().__init__(exp.config, exp.data.spec, exp.mesh)
    self.exp, self.ts = exp, ts
    self.data, self.family = exp.data, exp.family
    self.step = int(to_host(ts.step))

  @property
  def is_writer(self) -> bool:
    """Whether this process writes files (process 0)."""
    return jax.process_index() == 0

  def path(self, *parts: str) -> epath.Path:
    return epath.Path(self.exp.workdir).joinpath(*parts)

  def key(self, stream: int) -> jax.Array:
    """The key of ``stream`` folded with this step."""
    return jax.random.fold_in(self.exp.stream(stream), self.step)

  def numpy_seed(self) -> list[int]:
    return [int(self.config.seed), self.step]

  def cached(self, name: str, build: Callable[[], Any]):
    """``build()`` once per run (jitted functions, reference statistics)."""
    return self.exp.cached(name, build)

  @functools.cached_property
  def heldout_values(self) -> dict[str, np.ndarray]:
    """``{name: float64 [N]}``: ``family.eval_metrics`` of each of the ``N`` test examples scored
    (EMA params, ``eval.num_batches`` global batches of ``eval.batch_size``, 0 = the whole split;
    batch ``i`` with ``fold_in(EVAL_STREAM, i)``; padding rows dropped; a scalar counts for every
    row). Computed once per evaluation, for ``heldout`` (the means) and ``per_example_nll``."""
    from jaxgen.evaluation.per_example_nll import collect  # pylint: disable=import-outside-toplevel  # it imports this module

    cfg, exp, family = self.config.eval, self.exp, self.family
    eval_stream = exp.stream(EVAL_STREAM)

    def metrics(ts, batch, index):  # the global batch's values and mask, replicated on every process
      return family.eval_metrics(ts.ema_params, ts.state, batch, jax.random.fold_in(eval_stream, index)), batch["mask"]

    step = self.cached("heldout_values_step", lambda: jax.jit(metrics, out_shardings=exp.replicated))
    return collect(lambda local, i: jax.tree.map(to_host, step(self.ts, parallel.global_batch(local, exp.mesh), i)),
                   self.data.eval_batches(cfg.batch_size // jax.process_count(), cfg.num_batches))

  def _sampler(self, chunk: int):
    """``(params, state, key) -> chunk`` samples, jitted: each device draws its ``chunk / n`` rows
    (the batch axis constrained to the mesh's ``data`` axis; the random bits do not depend on the
    layout, ``jax_threefry_partitionable``), then every device receives all of them."""
    family, mesh = self.family, self.mesh

    def draw(params, state, key):
      x = family.sample(params, state, key, chunk)
      return jax.lax.with_sharding_constraint(x, parallel.batch_sharding(mesh)) if chunk % mesh.size == 0 else x

    return jax.jit(draw, out_shardings=parallel.replicated(mesh))

  def generate_chunks(self, num: int, rng: jax.Array, chunk: int = 0) -> Iterator[np.ndarray]:
    """``num`` model-space samples from the EMA params, ``chunk`` at a time (one compilation);
    chunk ``i`` is drawn with ``fold_in(rng, i)``."""
    chunk = min(chunk or num, num)
    fn = self.cached(f"sample_{chunk}", lambda: self._sampler(chunk))
    for i in range(-(-num // chunk)):
      yield to_host(fn(self.ts.ema_params, self.ts.state, jax.random.fold_in(rng, i)))[:num - i * chunk]

  def generate(self, num: int, rng: jax.Array, chunk: int = 0) -> np.ndarray:
    """``num`` model-space samples (``generate_chunks`` concatenated)."""
    return np.concatenate(list(self.generate_chunks(num, rng, chunk)))

  def _chunks(self) -> Iterator[np.ndarray]:
    cfg = self.config.eval
    return self.generate_chunks(cfg.num_samples, self.key(EVAL_SAMPLE_STREAM), cfg.batch_size)

  def _real_features(self) -> features.Features:
    return self._features(self.data.held_out(self.config.eval.num_samples)["x"])


class ArrayContext(SampleContext):
  """Given samples and real examples: for the sample metrics only (no model, no files)."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec, samples: np.ndarray, real: np.ndarray):
    super().__init__(config, spec, parallel.make_mesh())
    self._samples = np.asarray(samples)
    self._real = np.asarray(real)

  def _chunks(self) -> Iterator[np.ndarray]:
    chunk = int(self.config.eval.batch_size)
    return (self._samples[i:i + chunk] for i in range(0, len(self._samples), chunk))

  def _real_features(self) -> features.Features:
    return self._features(self._real)


def evaluate_samples(names: Iterable[str], samples: np.ndarray, real: np.ndarray, spec: DataSpec,
                     overrides: Mapping[str, Any] | Iterable[str] = ()) -> dict[str, float]:
  """The sample metrics ``names`` (e.g. ``["fid", "kid"]``) of model-space ``samples`` against
  ``real`` examples of data ``spec``, with the default settings changed by ``overrides``
  (``{"eval.kid.subsets": 10}``, as ``config_defaults.apply_overrides``)."""
  from jaxgen import config_defaults  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict({"eval": base.default_config()})
  config.eval.metrics = tuple(names)
  config_defaults.apply_overrides(config, overrides)
  config.eval.num_samples = len(samples)  # what is scored, whatever the default says
  return base.run(base.prepare(config, spec, None, len(real)), ArrayContext(config, spec, samples, real))
