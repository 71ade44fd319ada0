"""``density_plot``: the model density beside the data, for 2-D points.

Evaluates ``family.eval_metrics`` on the centres of a ``size x size`` grid over the test data's
bounding box (10% margin) and draws ``exp(-nll_nats)`` beside a scatter of the data:
``samples/density_step_<N>.png``. Only an exact likelihood is a density, so the family must report
``nll_nats`` (not only a bound, ``nll_bound_nats``) for a batch of unlabelled points; this and
``D = 2`` are checked with ``jax.eval_shape`` before training. Every process evaluates the grid
(replicated output); process 0 draws. Reports no numbers.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import outputs
from jaxgen import workdir as workdir_lib
from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register
from jaxgen.evaluation.context import EVAL_STREAM, to_host

#: Test examples drawn (and bounding the grid).
NUM_POINTS = 2000


def _grid(points: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
  """Cell centres ``[size * size, 2]`` (row ``i``, column ``j`` at ``i * size + j``) over the
  bounding box of ``points`` with a 10% margin, and that box ``(x0, x1, y0, y1)``."""
  lo, hi = points.min(0), points.max(0)
  pad = 0.1 * (hi - lo)
  lim = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
  xs = lim[0] + (np.arange(size) + 0.5) * (lim[1] - lim[0]) / size
  ys = lim[2] + (np.arange(size) + 0.5) * (lim[3] - lim[2]) / size
  return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32), lim


@register("density_plot")
class DensityPlot(Evaluator):

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "size": 200}  # size: grid cells per side

  def check(self, config, spec, family) -> None:
    if family is None:
      raise UserError("evaluator 'density_plot' draws a model's density; it cannot score arrays of samples")
    if spec.modality != "points" or tuple(spec.shape) != (2,):
      raise UserError(f"evaluator 'density_plot' draws 2-D points, not {spec.modality} of shape {spec.shape} "
                      f"({spec.name}); remove it from config.eval.metrics")
    rng = jax.random.key(0)
    example = {"x": jax.ShapeDtypeStruct((2, 2), jnp.float32)}
    if spec.num_classes > 0:
      example["label"] = jax.ShapeDtypeStruct((2,), jnp.int32)
    params, state = jax.eval_shape(family.init, rng, example)
    try:
      out = jax.eval_shape(family.eval_metrics, params, state, {"x": example["x"]}, rng)
    except KeyError as e:
      raise UserError(f"evaluator 'density_plot' needs model.family={config.model.family!r} to score "
                      f"unlabelled points, but its eval_metrics reads batch[{e}]; remove density_plot "
                      "from config.eval.metrics") from None
    if "nll_nats" not in out:
      raise UserError(f"evaluator 'density_plot' needs an exact likelihood (eval_metrics key 'nll_nats'); "
                      f"model.family={config.model.family!r} reports {sorted(out)}; remove density_plot "
                      "from config.eval.metrics")

  def run(self, ctx) -> dict[str, float]:
    size = self.settings(ctx.config).size
    data = np.asarray(ctx.data.held_out(NUM_POINTS)["x"])
    grid, lim = _grid(data, size)
    family = ctx.family

    def nll(params, state, x, rng):
      return jnp.broadcast_to(family.eval_metrics(params, state, {"x": x}, rng)["nll_nats"], x.shape[:1])

    fn = ctx.cached("density_plot", lambda: jax.jit(nll, out_shardings=ctx.exp.replicated))
    density = np.exp(-to_host(fn(ctx.ts.ema_params, ctx.ts.state, grid, ctx.key(EVAL_STREAM))))
    if ctx.is_writer:
      path = os.fspath(workdir_lib.path(ctx.exp.workdir) / "samples" / f"density_step_{ctx.step}.png")
      outputs.write_density_plot(data, density.reshape(size, size), lim, path, title=f"data ({ctx.spec.name})")
    return {}
