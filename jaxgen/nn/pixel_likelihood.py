"""Decoder distributions ``p(x | z)`` of the latent-variable families, and their bits/dim.

A decoder network emits ``out [B, *shape, P]`` (``P = num_outputs(kind)`` per dimension of ``x``):

* ``"bernoulli"`` (``P = 1``): ``x ~ Bernoulli(sigmoid(out))`` for data in [0, 1]; a proper
  likelihood on binarized data (``data.binarize``), bits/dim discrete.
* ``"gaussian"`` (``P = 1``): ``x ~ N(out, diag exp(2 s))`` with a learned per-dimension log-std
  ``s [*shape]`` (a parameter of the decoder, not a function of ``z``); a density on model space,
  bits/dim with the model-space offset of :mod:`jaxgen.evaluation.likelihood` (a bound on the
  discrete likelihood only with ``data.dequantize=True``).
* ``"logistic"`` (``P = 2``): a discretized logistic (Salimans et al. 2017) over the ``L =
  spec.levels`` raw levels with mean ``out[..., 0]`` and log-scale ``out[..., 1]`` on the [-1, 1]
  scale of :mod:`jaxgen.nn.logistic_mixture` (one component). A distribution over the raw
  integers, so bits/dim are discrete and comparable with PixelCNN's on the same data.

All log-probabilities are in nats, summed over the dimensions of one example: ``[B]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen import losses
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation import likelihood
from jaxgen.nn import logistic_mixture

KINDS = ("bernoulli", "gaussian", "logistic")


def check(kind: str, spec: DataSpec, field: str = "model.decoder") -> None:
  """A ``UserError`` when decoder ``kind`` cannot model the data of ``spec``."""
  if kind not in KINDS:
    raise UserError(f"{field}={kind!r}; use one of {', '.join(KINDS)}")
  if kind == "bernoulli" and spec.modality == "image" and tuple(spec.value_range) != (0.0, 1.0):
    raise UserError(f"the Bernoulli decoder needs data in [0, 1]: set --config.data.scale=[0,1] "
                    f"(or --config.{field}=logistic)")
  if kind == "logistic" and (spec.modality != "image" or spec.levels < 2 or spec.dequantized):
    raise UserError(f"the discretized logistic decoder models the raw levels of images: use "
                    f"--config.data.dequantize=False on image data, or --config.{field}=gaussian")


def num_outputs(kind: str) -> int:
  """Decoder outputs per data dimension."""
  return 2 if kind == "logistic" else 1


def _logistic_params(out: jax.Array) -> jax.Array:
  """``[..., 2]`` (mean, log-scale) -> the one-component mixture layout ``[..., 3]``."""
  return jnp.concatenate([jnp.zeros_like(out[..., :1]), out], axis=-1)


def to_levels(x: jax.Array, spec: DataSpec) -> jax.Array:
  """Model-space images -> int32 raw levels ``round((x - lo) / (hi - lo) * (L - 1))``."""
  lo, hi = spec.value_range
  return jnp.round((x - lo) / (hi - lo) * (spec.levels - 1)).astype(jnp.int32)


def log_prob(kind: str, spec: DataSpec, x: jax.Array, out: jax.Array,
             log_std: jax.Array | None = None) -> jax.Array:
  """``log p(x | z)`` in nats, ``[B]``; ``out [B, *shape, P]``; ``log_std [*shape]`` for gaussian."""
  if kind == "bernoulli":
    return losses.bernoulli_log_prob(x, out[..., 0])
  if kind == "gaussian":
    return losses.gaussian_log_prob(x, out[..., 0], jnp.broadcast_to(log_std, x.shape))
  lp = logistic_mixture.log_prob(_logistic_params(out), to_levels(x, spec), spec.levels)
  return jnp.sum(lp.reshape(lp.shape[0], -1), axis=-1)


def mean(kind: str, spec: DataSpec, out: jax.Array) -> jax.Array:
  """The mean of ``p(x | z)`` in model space, ``[B, *shape]`` (what samples and reconstructions
  show): ``sigmoid(out)``, ``out``, or ``lo + (hi - lo) E[k] / (L - 1)`` of the discretized logistic."""
  if kind == "bernoulli":
    return jax.nn.sigmoid(out[..., 0])
  if kind == "gaussian":
    return out[..., 0]
  probs = jnp.exp(logistic_mixture.log_probs_all(_logistic_params(out), spec.levels))
  level = probs @ jnp.arange(spec.levels, dtype=jnp.float32)
  lo, hi = spec.value_range
  return lo + (hi - lo) * level / (spec.levels - 1)


def raw_offset_nats(kind: str, spec: DataSpec) -> float:
  """Nats to add to ``-log p(x | z)`` of a ``kind`` decoder (and so to a bound built on it) for the
  NLL of the raw data: :func:`jaxgen.evaluation.likelihood.model_space_offset_nats` for gaussian (a
  density over model space), 0 for bernoulli / logistic (probabilities of the raw values)."""
  return likelihood.model_space_offset_nats(spec) if kind == "gaussian" else 0.0


def bits_per_dim(kind: str, spec: DataSpec, nll_nats: jax.Array) -> jax.Array:
  """Per-example bits/dim of the raw data from a model-space NLL (or bound) in nats of a ``kind``
  decoder (:func:`raw_offset_nats` added)."""
  return likelihood.nats_to_bits_per_dim(nll_nats + raw_offset_nats(kind, spec), spec.dims)
