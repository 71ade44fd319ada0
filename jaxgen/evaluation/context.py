"""What the evaluators due at one step share: the state, generated samples and their features
(each made once, when first asked for), and the run's caches (jitted functions, real features).

Random streams under ``config.seed`` (stream ``s`` is ``fold_in(key(seed), s)``; 0 and 1 are the
init and train streams of ``jaxgen.train``):

* ``SAMPLE_STREAM``: the ``sample.num`` samples written for a user, folded with the step;
* ``EVAL_STREAM``: held-out metrics (folded with the batch index) and other model evaluations;
* ``EVAL_SAMPLE_STREAM``: the ``eval.num_samples`` samples scored by the sample metrics, folded
  with the step.

SPMD: every process builds the same context and runs the same jitted computations on the
replicated state; only process 0 writes files (``ctx.is_writer``).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterable, Mapping

import jax
import ml_collections
import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.evaluation import base, features

SAMPLE_STREAM, EVAL_STREAM, EVAL_SAMPLE_STREAM = 2, 3, 4


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated global array -> numpy (works multi-process: every process holds a full copy)."""
  return np.asarray(x.addressable_data(0))


class SampleContext:
  """Generated samples and real examples (model space, ``[N, *spec.shape]``) and their features in
  the space of ``config.eval.features``, each computed once."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    self.config = config
    self.spec = spec

  def _draw(self) -> np.ndarray:
    raise NotImplementedError

  def _real_features(self) -> features.Features:
    raise NotImplementedError

  @functools.cached_property
  def samples(self) -> np.ndarray:
    """``eval.num_samples`` generated samples."""
    return self._draw()

  @functools.cached_property
  def fake_features(self) -> features.Features:
    return features.extract(self.config, self.spec, self.samples)

  @functools.cached_property
  def real_features(self) -> features.Features:
    """Features of the real examples (the first ``eval.num_samples`` test examples)."""
    return self._real_features()


class EvalContext(SampleContext):
  """One evaluation of the train state ``ts`` of the experiment ``exp`` (``jaxgen.train``)."""

  def __init__(self, exp: Any, ts: Any):
    super().__init__(exp.config, exp.data.spec)
    self.exp, self.ts = exp, ts
    self.data, self.family = exp.data, exp.family
    self.step = int(to_host(ts.step))

  @property
  def is_writer(self) -> bool:
    """Whether this process writes files (process 0)."""
    return jax.process_index() == 0

  def path(self, *parts: str) -> str:
    return os.path.join(self.exp.workdir, *parts)

  def key(self, stream: int) -> jax.Array:
    """The key of ``stream`` folded with this step."""
    return jax.random.fold_in(self.exp.stream(stream), self.step)

  def cached(self, name: str, build: Callable[[], Any]):
    """``build()`` once per run (jitted functions, reference statistics)."""
    return self.exp.cached(name, build)

  def generate(self, num: int, rng: jax.Array, chunk: int = 0) -> np.ndarray:
    """``num`` model-space samples from the EMA params, drawn ``chunk`` at a time (one compilation)."""
    chunk = min(chunk or num, num)
    family = self.family
    fn = self.cached(f"sample_{chunk}", lambda: jax.jit(lambda p, s, k: family.sample(p, s, k, chunk),
                                                        out_shardings=self.exp.replicated))
    out = [to_host(fn(self.ts.ema_params, self.ts.state, jax.random.fold_in(rng, i)))
           for i in range(-(-num // chunk))]
    return np.concatenate(out)[:num]

  def _draw(self) -> np.ndarray:
    cfg = self.config.eval
    return self.generate(cfg.num_samples, self.key(EVAL_SAMPLE_STREAM), cfg.batch_size)

  def _real_features(self) -> features.Features:
    return self.cached("real_features", lambda: features.extract(
        self.config, self.spec, self.data.held_out(self.config.eval.num_samples)["x"]))


class ArrayContext(SampleContext):
  """Given samples and real examples: for the sample metrics only (no model, no files)."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec, samples: np.ndarray, real: np.ndarray):
    super().__init__(config, spec)
    self._samples = np.asarray(samples)
    self._real = np.asarray(real)

  def _draw(self) -> np.ndarray:
    return self._samples

  def _real_features(self) -> features.Features:
    return features.extract(self.config, self.spec, self._real)


def evaluate_samples(names: Iterable[str], samples: np.ndarray, real: np.ndarray, spec: DataSpec,
                     overrides: Mapping[str, Any] | Iterable[str] = ()) -> dict[str, float]:
  """The sample metrics ``names`` (e.g. ``["fid", "kid"]``) of model-space ``samples`` against
  ``real`` examples of data ``spec``, with the default settings changed by ``overrides``
  (``{"eval.kid.subsets": 10}``, as ``config_defaults.apply_overrides``)."""
  from jaxgen import config_defaults  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict({"eval": base.default_config()})
  config.eval.metrics = tuple(names)
  config_defaults.apply_overrides(config, overrides)
  return base.run(base.prepare(config, spec, None), ArrayContext(config, spec, samples, real))
