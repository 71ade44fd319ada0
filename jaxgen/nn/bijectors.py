"""Bijector layers for normalizing flows (RealNVP, Glow and small 2-D flows).

Every layer is a Flax module called as ``layer(x, reverse=False) -> (y, logdet)``:

* forward (``reverse=False``), data -> latent: ``y = f(x)`` and ``logdet = log|det df/dx|``;
* reverse (``reverse=True``), latent -> data: ``y = f^{-1}(x)`` and ``logdet = log|det df^{-1}/dx|``
  (minus the forward log-det at ``y``).

``x`` has a leading batch axis: images ``[B, H, W, C]`` or points / vectors ``[B, D]``; ``logdet``
is per example, ``[B]``. Every inverse is exact (closed form, no fixed-point iteration).
Parameters must be created by a *forward* ``init`` on a real batch: :class:`ActNorm` initialises
itself from the statistics of the activations it sees there (Glow's data-dependent init).

Hand-written because no maintained JAX library provides these as Flax modules: distrax has
generic couplings but no convolutional masks, squeeze / factor-out, actnorm with data-dependent
initialisation or LU-parametrised 1x1 convolutions.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.losses import sum_except_batch

# The 1x1 convolution and its inverse must multiply exactly (x -> z -> x within float32 rounding)
# on every backend, including TPUs whose default matmul precision is bfloat16.
_EXACT = jax.lax.Precision.HIGHEST


class Chain(nn.Module):
  """Composition ``layers[-1] o ... o layers[0]`` (reverse runs them backwards); log-dets add."""

  layers: Sequence[nn.Module]

  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    logdet = jnp.zeros(x.shape[0], x.dtype)
    for layer in reversed(self.layers) if reverse else self.layers:
      x, ld = layer(x, reverse=reverse)
      logdet = logdet + ld
    return x, logdet


class _RepeatBody(nn.Module):
  """One iteration of :class:`Repeat`: carry ``(x, logdet)``; its step is built inside this module
  so that every parameter of the step lives in the scanned scope."""

  make_step: Callable[[], nn.Module]
  reverse: bool

  @nn.compact
  def __call__(self, carry):
    y, logdet = self.make_step()(carry[0], reverse=self.reverse)
    return (y, carry[1] + logdet), None


class Repeat(nn.Module):
  """``n`` steps ``make_step()``, each with its own parameters, applied in turn (reverse: last first).

  The same function as ``Chain`` of ``n`` independent copies, computed by one ``nn.scan`` over
  parameters stacked on a leading axis (``[n, ...]``, every collection), so XLA compiles one step
  whatever ``n``: the layer scan of large JAX codebases. An unrolled ``Chain`` of Glow's steps
  compiles in a time that grows faster than ``n`` (2-core CPU, ``glow_cifar10`` at batch 4: 17 s
  for ``K = 8`` steps per level, 82 s for 16, over 10 minutes for the paper's 32; scanned: 6.5 s).
  The price on XLA:CPU: the convolutions' gradients inside the scan's loop miss the YNNPACK
  kernels and the step runs 16x slower (``docs/families.md``).
  ``make_step``: a function returning a new bijector; each call's modules must be created inside
  it (they are built in the scanned scope).
  """

  make_step: Callable[[], nn.Module]
  n: int

  @nn.compact
  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    scan = nn.scan(_RepeatBody, variable_axes={True: 0}, split_rngs={"params": True}, length=self.n,
                   reverse=reverse)
    (x, logdet), _ = scan(self.make_step, reverse, name="steps")((x, jnp.zeros(x.shape[0], x.dtype)))
    return x, logdet


# --- reshapes ------------------------------------------------------------------------------------


def squeeze2d(x: jax.Array) -> jax.Array:
  """``[B, H, W, C] -> [B, H/2, W/2, 4C]``: the 2x2 block at ``(2i, 2j)`` becomes the channels of
  ``(i, j)``, ordered ``(dy, dx, c)``: ``y[:, i, j, (2 dy + dx) C + c] = x[:, 2i + dy, 2j + dx, c]``."""
  h, w = x.shape[1:3]
  if h % 2 or w % 2:
    raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
  return jnp.concatenate([x[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)], axis=-1)


def unsqueeze2d(x: jax.Array) -> jax.Array:
  """``[B, H, W, 4C] -> [B, 2H, 2W, C]``, the inverse of :func:`squeeze2d`."""
  b, h, w, c4 = x.shape
  c = c4 // 4
  block = [x[..., k * c:(k + 1) * c] for k in range(4)]  # block[2 dy + dx]: [B, H, W, C]
  rows = [jnp.stack(block[2 * dy:2 * dy + 2], axis=3).reshape(b, h, 2 * w, c) for dy in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, c)


class Squeeze(nn.Module):
  """Space-to-depth :func:`squeeze2d`; a permutation of the entries, so ``log|det| = 0``."""

  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    y = unsqueeze2d(x) if reverse else squeeze2d(x)
    return y, jnp.zeros(x.shape[0], x.dtype)


class Unsqueeze(nn.Module):
  """Depth-to-space :func:`unsqueeze2d` (closes a multi-scale level); ``log|det| = 0``."""

  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    y = squeeze2d(x) if reverse else unsqueeze2d(x)
    return y, jnp.zeros(x.shape[0], x.dtype)


class FactorOut(nn.Module):
  """RealNVP's multi-scale split: ``[z, h] -> [z, inner(h)]`` along the channel axis.

  The first ``C // 2`` channels leave the flow here (they are final latents, Gaussian under the
  base distribution); ``inner`` (the next, coarser scale) transforms the rest. The Jacobian is
  block diagonal ``diag(I, d inner / dh)``, so ``log|det| = log|det d inner / dh|``.
  """

  inner: nn.Module

  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    k = x.shape[-1] // 2
    h, logdet = self.inner(x[..., k:], reverse=reverse)
    return jnp.concatenate([x[..., :k], h], axis=-1), logdet


# --- element-wise --------------------------------------------------------------------------------


class Logit(nn.Module):
  """Pre-transform ``x in [lo, hi) -> logit(p)``, ``p = alpha + (1 - 2 alpha) (x - lo) / (hi - lo)``.

  Maps bounded (dequantized) data to the real line (RealNVP, Dinh et al. 2017, section 4.1);
  ``alpha`` keeps ``p`` away from 0 and 1. Per dimension ``dy/dx = (1 - 2 alpha) / ((hi - lo)
  p (1 - p))``.
  """

  value_range: tuple[float, float]
  alpha: float = 0.05

  def _logdet(self, p: jax.Array) -> jax.Array:
    lo, hi = self.value_range
    return sum_except_batch(jnp.log((1 - 2 * self.alpha) / (hi - lo)) - jnp.log(p) - jnp.log1p(-p))

  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    lo, hi = self.value_range
    if reverse:
      p = jax.nn.sigmoid(x)
      return lo + (hi - lo) * (p - self.alpha) / (1 - 2 * self.alpha), -self._logdet(p)
    p = self.alpha + (1 - 2 * self.alpha) * (x - lo) / (hi - lo)
    return jnp.log(p) - jnp.log1p(-p), self._logdet(p)


class ActNorm(nn.Module):
  """Per-channel affine ``y = (x + bias) * exp(log_scale)`` (Glow, Kingma & Dhariwal 2018).

  Data-dependent initialisation: the ``init`` call sets ``bias = -mean(x)`` and ``log_scale =
  -log(std(x) + eps)`` over every axis but the last, so that the first batch comes out with zero
  mean and unit variance per channel. ``log|det| = (#positions per channel) * sum(log_scale)``.
  """

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    bias = self.param("bias", lambda _: -jnp.mean(x, axis=axes))
    log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x, axis=axes) + self.eps))
    positions = x[0, ..., 0].size  # H * W for images, 1 for vectors
    logdet = jnp.full(x.shape[0], positions * jnp.sum(log_scale), x.dtype)
    if reverse:
      return x * jnp.exp(-log_scale) - bias, -logdet
    return (x + bias) * jnp.exp(log_scale), logdet


def _rotation_lu(key: jax.Array, c: int) -> dict[str, jax.Array]:
  """LU decomposition ``P L U`` of a random ``[c, c]`` rotation, split as InvertibleConv1x1 stores it."""
  rotation, _ = jnp.linalg.qr(jax.random.normal(key, (c, c)))
  p, l, u = jax.scipy.linalg.lu(rotation)
  s = jnp.diag(u)
  return {"perm": p, "lower": l, "upper": jnp.triu(u, 1), "sign": jnp.sign(s), "log_abs_s": jnp.log(jnp.abs(s))}


class InvertibleConv1x1(nn.Module):
  """Glow's invertible 1x1 convolution ``y[h, w] = W x[h, w]`` with ``W`` LU-parametrised.

  ``W = P L (U + diag(sign * exp(log_abs_s)))``: ``P`` a fixed permutation, ``L`` unit lower
  triangular, ``U`` strictly upper triangular, so ``log|det W| = sum(log_abs_s)`` and
  ``log|det| = H * W * sum(log_abs_s)`` in O(C). ``W`` starts as a random rotation (its LU
  decomposition gives ``P``, ``L``, ``U``, ``s``). ``P`` and ``sign`` are fixed: they live in the
  non-trainable ``"constants"`` collection.
  """

  @nn.compact
  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    c = x.shape[-1]
    if self.is_initializing():  # one random rotation gives every initial value
      values = _rotation_lu(self.make_rng("params"), c)
    else:  # Flax re-runs initialisers abstractly on apply to check shapes: zeros of each shape do
      values = {**dict.fromkeys(("perm", "lower", "upper"), jnp.zeros((c, c))),
                **dict.fromkeys(("sign", "log_abs_s"), jnp.zeros(c))}

    def init(name):
      return lambda *_: values[name]

    perm = self.variable("constants", "perm", init("perm")).value
    sign = self.variable("constants", "sign", init("sign")).value
    lower = jnp.tril(self.param("lower", init("lower")), -1) + jnp.eye(c)
    upper = jnp.triu(self.param("upper", init("upper")), 1)
    log_abs_s = self.param("log_abs_s", init("log_abs_s"))
    upper = upper + jnp.diag(sign * jnp.exp(log_abs_s))
    logdet = jnp.full(x.shape[0], x[0, ..., 0].size * jnp.sum(log_abs_s), x.dtype)
    if reverse:
      eye = jnp.eye(c, dtype=x.dtype)
      l_inv = jax.scipy.linalg.solve_triangular(lower, eye, lower=True, unit_diagonal=True)
      u_inv = jax.scipy.linalg.solve_triangular(upper, eye, lower=False)
      w_inv = jnp.matmul(u_inv, jnp.matmul(l_inv, perm.T, precision=_EXACT), precision=_EXACT)
      return jnp.einsum("...c,dc->...d", x, w_inv, precision=_EXACT), -logdet
    w = jnp.matmul(perm, jnp.matmul(lower, upper, precision=_EXACT), precision=_EXACT)
    return jnp.einsum("...c,dc->...d", x, w, precision=_EXACT), logdet


# --- coupling ------------------------------------------------------------------------------------


class Conditioner(nn.Module):
  """The coupling network: ``h -> (raw log-scale, shift)``, each with ``features`` channels.

  Images ``[B, H, W, C]``: ``depth`` ReLU convolutions (3x3, then 1x1, ..., ``hidden`` channels)
  and a 3x3 output convolution. Vectors ``[B, D]``: a ReLU MLP. The output layer starts at zero,
  so every coupling starts as the identity (Glow's zero initialisation).
  """

  features: int
  hidden: int = 64
  depth: int = 2

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    image = h.ndim == 4
    for i in range(self.depth):
      layer = nn.Conv(self.hidden, (3, 3) if i == 0 else (1, 1)) if image else nn.Dense(self.hidden)
      h = nn.relu(layer(h))
    zeros = nn.initializers.zeros
    out = (nn.Conv(2 * self.features, (3, 3), kernel_init=zeros) if image
           else nn.Dense(2 * self.features, kernel_init=zeros))(h)
    return out[..., :self.features], out[..., self.features:]


def checkerboard(height: int, width: int, parity: int) -> jax.Array:
  """``[H, W, 1]`` mask: 1 where ``(i + j + parity)`` is even (the conditioning entries)."""
  i, j = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  return ((i + j + parity) % 2 == 0).astype(jnp.float32)[..., None]


class AffineCoupling(nn.Module):
  """Affine coupling (RealNVP / Glow): ``y_b = x_b * exp(s(x_a)) + t(x_a)``, ``y_a = x_a``.

  ``mask="checkerboard"`` (images): ``a`` is the checkerboard of parity ``parity`` over the
  spatial positions (all channels); the conditioner sees ``x * mask`` and ``s``, ``t`` vanish on
  the mask. ``mask="channel"`` (images or vectors): ``a`` is the first ``C // 2`` entries of the
  last axis when ``parity == 0``, the rest when ``parity == 1``. The log-scale is bounded,
  ``s = scale * tanh(raw)`` with a learned per-channel ``scale`` (RealNVP). The Jacobian is
  triangular with diagonal ``exp(s)`` on ``b`` and 1 on ``a``: ``log|det| = sum(s)``.
  """

  mask: str = "channel"
  parity: int = 0
  hidden: int = 64
  depth: int = 2

  def _scale_shift(self, cond: jax.Array, features: int) -> tuple[jax.Array, jax.Array]:
    raw, shift = Conditioner(features, self.hidden, self.depth, name="conditioner")(cond)
    scale = self.param("scale", nn.initializers.ones, (features,))
    return scale * jnp.tanh(raw), shift

  @nn.compact
  def __call__(self, x: jax.Array, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    if self.mask == "checkerboard":
      if x.ndim != 4:
        raise ValueError(f"a checkerboard coupling needs images [B, H, W, C], got {x.shape}")
      m = checkerboard(x.shape[1], x.shape[2], self.parity).astype(x.dtype)
      s, t = self._scale_shift(x * m, x.shape[-1])  # x * m = y * m: same in both directions
      s, t = s * (1 - m), t * (1 - m)
      y = (x - t) * jnp.exp(-s) if reverse else x * jnp.exp(s) + t
      logdet = sum_except_batch(s)
      return y, -logdet if reverse else logdet
    if self.mask != "channel":
      raise ValueError(f"unknown coupling mask {self.mask!r}: use 'checkerboard' or 'channel'")
    k = x.shape[-1] // 2
    first, second = x[..., :k], x[..., k:]
    cond, other = (first, second) if self.parity == 0 else (second, first)
    s, t = self._scale_shift(cond, other.shape[-1])
    other = (other - t) * jnp.exp(-s) if reverse else other * jnp.exp(s) + t
    parts = [cond, other] if self.parity == 0 else [other, cond]
    logdet = sum_except_batch(s)
    return jnp.concatenate(parts, axis=-1), -logdet if reverse else logdet
