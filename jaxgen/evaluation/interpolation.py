"""``interpolation``: latent interpolations as an image grid, ``samples/interpolation_step_<N>.png``.

A family with a latent space offers (duck-typed, checked before training):

* ``decode_latent(params, state, z, label) -> x [B, *shape]`` (model space), and either
* ``encode_latent(params, state, batch) -> z [B, ...]`` (encoder families: VAE, VQ-VAE, AAE, AVB):
  row ``i`` interpolates between held-out test examples ``i`` and ``P + i`` (``P =
  eval.interpolation.pairs``) and shows them beside the path: ``input_a | t = 0 ... 1 | input_b``,
  so the path's endpoints, ``decode(encode(x))``, are the reconstructions beside their inputs; or
* ``sample_latent(rng, num) -> z`` (random-latent families: GAN ``z``, flows ``z = f(x)`` decoded
  by ``f^{-1}``, DDPM ``x_T`` decoded by DDIM with eta = 0): row ``i`` interpolates between the
  random latents ``i`` and ``P + i`` (from the ``EVAL_STREAM`` key of the step); the path's
  endpoints are the samples of those latents.

``t`` takes ``eval.interpolation.steps`` evenly spaced values in ``[0, 1]``. Where the family's
``latent_prior`` is ``"gaussian"`` the path is spherical (``slerp``: a Gaussian latent's norm
concentrates, and the straight line between two latents passes through improbably small norms;
White 2016), else straight. Class-conditional decoders get the label of the first example of the
pair, or, between random latents, ``sample.label`` (-1: a random class per row). Every process
computes the grid; process 0 writes it (through ``etils.epath``: local or remote workdirs).
Reports no numbers. Settings (``eval.interpolation.*``): :meth:`Interpolation.defaults`.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxgen import outputs, sampling
from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register
from jaxgen.evaluation.context import EVAL_STREAM, to_host


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """``(1 - t) a + t b`` for latents ``a, b [P, ...]`` and ``t [S]``: ``[P, S, ...]``."""
  t = t.reshape((1, -1) + (1,) * (a.ndim - 1))
  return (1.0 - t) * a[:, None] + t * b[:, None]


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation ``(sin((1-t) w) a + sin(t w) b) / sin w``, ``w`` the angle between
  the flattened ``a`` and ``b`` (``[P, ...]``), for ``t [S]``: ``[P, S, ...]``; linear where ``w``
  is tiny. ``t = 0`` and ``t = 1`` give ``a`` and ``b`` exactly."""
  flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  cos = jnp.sum(flat_a * flat_b, -1) / (jnp.linalg.norm(flat_a, axis=-1) * jnp.linalg.norm(flat_b, axis=-1) + 1e-12)
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]  # [P, 1]
  tt = t[None, :]
  sin = jnp.sin(omega)
  small = sin < 1e-6
  wa = jnp.where(small, 1.0 - tt, jnp.sin((1.0 - tt) * omega) / jnp.where(small, 1.0, sin))
  wb = jnp.where(small, tt, jnp.sin(tt * omega) / jnp.where(small, 1.0, sin))
  expand = (slice(None), slice(None)) + (None,) * (a.ndim - 1)
  return wa[expand] * a[:, None] + wb[expand] * b[:, None]


def rows_grid(images: np.ndarray, pad: int = 1) -> np.ndarray:
  """uint8 ``[R, C, H, W, ch]`` -> one uint8 image ``[R (H + pad) + pad, C (W + pad) + pad, ch]``."""
  r, c, h, w, ch = images.shape
  cells = np.pad(images, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)))
  grid = cells.transpose(0, 2, 1, 3, 4).reshape(r * (h + pad), c * (w + pad), ch)
  return np.pad(grid, ((pad, 0), (pad, 0), (0, 0)))


def interpolate(family, params, state, *, batch=None, rng=None, pairs: int, steps: int) -> jax.Array:
  """Decoded paths ``[pairs, steps, *shape]``: between the examples ``i`` and ``pairs + i`` of
  ``batch`` (encoder families) or between the latents ``i`` and ``pairs + i`` of
  ``family.sample_latent(rng, 2 pairs)`` (labels of conditional models from ``fold_in(rng, 1)``)."""
  if batch is not None:
    z = family.encode_latent(params, state, batch)
    labels = batch.get("label")
  else:
    z = family.sample_latent(rng, 2 * pairs)
    labels = sampling.labels_from_config(family.config.sample, getattr(family, "num_classes", 0),
                                         jax.random.fold_in(rng, 1), pairs)
  path_fn = slerp if getattr(family, "latent_prior", "") == "gaussian" else lerp
  path = path_fn(z[:pairs], z[pairs:2 * pairs], jnp.linspace(0.0, 1.0, steps))  # [P, S, ...]
  flat = path.reshape((pairs * steps,) + path.shape[2:])
  flat_labels = None if labels is None else jnp.repeat(labels[:pairs], steps)
  x = family.decode_latent(params, state, flat, flat_labels)
  return x.reshape((pairs, steps) + x.shape[1:])


@register("interpolation")
class Interpolation(Evaluator):

  @classmethod
  def defaults(cls) -> dict:
    return {
        "every": 0,  # steps between grids (0 = only at the end)
        "pairs": 8,  # rows: interpolated pairs (encoder families: 2 * pairs test examples)
        "steps": 10,  # decoded points per row, t evenly spaced in [0, 1] (endpoints included)
    }

  def check(self, config, spec, family) -> None:
    if family is None or not hasattr(family, "decode_latent") or not (
        hasattr(family, "encode_latent") or hasattr(family, "sample_latent")):
      name = "arrays of samples" if family is None else f"the {config.model.family} family"
      raise UserError(f"evaluator 'interpolation' needs a latent space, and {name} offers none "
                      "(decode_latent + encode_latent or sample_latent); remove it from config.eval.metrics")
    if spec.modality != "image":
      raise UserError(f"evaluator 'interpolation' draws images, and {spec.name!r} holds {spec.modality}; "
                      "remove it from config.eval.metrics")

  def run(self, ctx) -> dict[str, float]:
    cfg = self.settings(ctx.config)
    pairs, steps = int(cfg.pairs), int(cfg.steps)
    family = ctx.family
    encoder = hasattr(family, "encode_latent")
    held = ctx.data.held_out(2 * pairs) if encoder else None
    if encoder and len(held["x"]) < 2 * pairs:
      raise UserError(f"eval.interpolation.pairs={pairs} needs {2 * pairs} test examples and the split "
                      f"has {len(held['x'])}; lower it")
    fn = ctx.cached("interpolation", lambda: jax.jit(  # replicated: FSDP params would leave the grid sharded
        lambda p, s, b, k: interpolate(family, p, s, batch=b, rng=k, pairs=pairs, steps=steps),
        out_shardings=ctx.exp.replicated))
    paths = np.asarray(to_host(fn(ctx.ts.ema_params, ctx.ts.state, held, ctx.key(EVAL_STREAM))))
    if encoder:  # inputs beside the path: input_a | path | input_b
      x = np.asarray(held["x"])
      paths = np.concatenate([x[:pairs, None], paths, x[pairs:, None]], axis=1)
    if ctx.is_writer:
      grid = rows_grid(outputs.to_uint8(paths.reshape((-1,) + paths.shape[2:]), ctx.spec).reshape(
          paths.shape[:2] + paths.shape[2:4] + (-1,)))
      scale = max(1, 512 // grid.shape[1])
      image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
      buffer = io.BytesIO()
      image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(buffer, format="PNG")
      outputs.write_file(ctx.path("samples", f"interpolation_step_{ctx.step}.png"), buffer.getvalue())
    return {}
