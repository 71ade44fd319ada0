"""Fixed-grid ODE integrators and log-likelihoods by the instantaneous change of variables.

Shared by the flow-matching family (its velocity field) and the DDPM ODE samplers (the probability
flow in the variance-exploding parameterisation, Karras et al. 2022); one copy of each method.

An ODE ``dx/dt = f(x, t)``: ``x`` is a pytree of arrays with a leading batch axis (``[B, ...]``
leaves), ``t`` a float32 scalar, and ``f(x, t)`` returns a pytree shaped like ``x``. A *grid*
``t_0, ..., t_N`` (float ``[N + 1]``, increasing or decreasing) gives ``N`` steps
``h_i = t_{i+1} - t_i``:

* ``euler``: ``x_{i+1} = x_i + h_i f(x_i, t_i)`` -- first order, one evaluation per step;
* ``heun`` (the explicit trapezoidal rule, Karras et al. 2022 Alg. 1):
  ``x' = x_i + h_i k_1``, ``x_{i+1} = x_i + h_i (k_1 + f(x', t_{i+1})) / 2`` with
  ``k_1 = f(x_i, t_i)`` -- second order, two evaluations per step. ``euler_last`` makes the last
  step an Euler step (the EDM sampler: ``f`` is singular at ``sigma = 0``), so ``2N - 1``
  evaluations.

The global error after integrating over a fixed interval is ``O(h)`` for Euler and ``O(h^2)`` for
Heun: doubling the steps halves it, resp. quarters it (``tests/test_flow_matching.py`` checks both).

Log-likelihood (Chen et al. 2018; Grathwohl et al. 2019): along a trajectory of ``dx/dt = f``,
``d log p_t(x_t) / dt = -div f(x_t, t)``, so integrating from ``t_0`` (data) to ``t_N`` (prior)

    log p_{t_0}(x) = log p_{t_N}(x_{t_N}) + int_{t_0}^{t_N} div f(x_t, t) dt.

``div f`` is exact (``D`` Jacobian-vector products, one per dimension: cheap for 2-D points) or
Hutchinson's estimator ``eps^T (df/dx) eps`` with one Rademacher ``eps`` per example drawn once for
the whole trajectory (one JVP per evaluation; unbiased for the divergence integral).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxgen import losses
from jaxgen.errors import UserError

PyTree = Any
#: ``f(x, t) -> dx/dt``: ``x`` a pytree of ``[B, ...]`` arrays, ``t`` a float32 scalar.
VectorField = Callable[[PyTree, jax.Array], PyTree]

METHODS = ("euler", "heun")
TRACES = ("exact", "hutchinson")
#: Network evaluations per step of each method (Heun with ``euler_last`` saves one at the end).
EVALS_PER_STEP = {"euler": 1, "heun": 2}


def _axpy(h, k, x):
  """``x + h k`` over matching pytrees."""
  return jax.tree.map(lambda a, b: a + h * b, x, k)


def _heun_step(f: VectorField, x: PyTree, t, t_next) -> PyTree:
  h = t_next - t
  k1 = f(x, t)
  k2 = f(_axpy(h, k1, x), t_next)
  return _axpy(h / 2, jax.tree.map(jnp.add, k1, k2), x)


def solve(f: VectorField, x: PyTree, grid: jax.Array, method: str = "euler",
          euler_last: bool = False) -> PyTree:
  """``x`` integrated along ``grid`` (float ``[N + 1]``) with ``method``; one ``lax.scan``.

  ``euler_last``: Heun's last step is an Euler step (for fields singular at the final time).
  """
  if method not in METHODS:
    raise UserError(f"ODE method {method!r} is unknown; use one of {METHODS}")
  grid = jnp.asarray(grid, jnp.float32)
  if grid.shape[0] < 2:
    raise ValueError(f"an ODE grid needs at least 2 times, got {grid.shape[0]}")
  if method == "euler":
    def step(y, ts):
      return _axpy(ts[1] - ts[0], f(y, ts[0]), y), None
    return jax.lax.scan(step, x, (grid[:-1], grid[1:]))[0]
  last = grid.shape[0] - 2 if euler_last else grid.shape[0] - 1

  def heun(y, ts):
    return _heun_step(f, y, ts[0], ts[1]), None

  x = jax.lax.scan(heun, x, (grid[:last], grid[1:last + 1]))[0]
  if euler_last:
    x = _axpy(grid[-1] - grid[-2], f(x, grid[-2]), x)
  return x


def num_evaluations(method: str, steps: int, euler_last: bool = False) -> int:
  """Evaluations of ``f`` by :func:`solve` over ``steps`` steps."""
  return EVALS_PER_STEP[method] * steps - int(method == "heun" and euler_last)


def value_and_divergence(f: Callable[[jax.Array], jax.Array], x: jax.Array, trace: str,
                         probe: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(f(x), div f(x))`` for ``f: [B, ...] -> [B, ...]`` acting on each example separately.

  ``trace="exact"``: ``sum_i (df/dx e_i)_i`` over the ``D`` unit vectors (D JVPs);
  ``"hutchinson"``: ``probe^T (df/dx) probe`` (``probe`` ``[B, ...]``, e.g. Rademacher).
  Returns ``[B, ...]`` and ``[B]``.
  """
  if trace == "hutchinson":
    value, jvp = jax.jvp(f, (x,), (probe,))
    return value, losses.sum_except_batch(probe * jvp)
  if trace != "exact":
    raise UserError(f"trace={trace!r} is unknown; use one of {TRACES}")
  b, dims = x.shape[0], x[0].size

  def column(i):
    basis = jnp.broadcast_to(jax.nn.one_hot(i, dims, dtype=x.dtype), (b, dims)).reshape(x.shape)
    value, jvp = jax.jvp(f, (x,), (basis,))
    return value, jvp.reshape(b, dims)[:, i]

  values, diag = jax.lax.map(column, jnp.arange(dims))
  return values[0], jnp.sum(diag, axis=0)


def log_likelihood(f: VectorField, x: jax.Array, grid: jax.Array,
                   prior_log_prob: Callable[[jax.Array], jax.Array], method: str = "heun",
                   trace: str = "exact", rng: jax.Array | None = None) -> jax.Array:
  """``log p_{grid[0]}(x)`` ``[B]`` by the instantaneous change of variables (module docstring).

  ``x`` ``[B, ...]`` at time ``grid[0]`` is carried to ``grid[-1]`` with ``method`` together with
  the divergence integral; ``prior_log_prob`` is ``log p`` at ``grid[-1]`` (``[B, ...] -> [B]``).
  ``rng`` draws the Hutchinson probe (``trace="hutchinson"``).
  """
  probe = None
  if trace == "hutchinson":
    probe = jax.random.rademacher(rng, x.shape, dtype=x.dtype)

  def augmented(state, t):
    return value_and_divergence(lambda y: f(y, t), state[0], trace, probe)

  z, integral = solve(augmented, (x, jnp.zeros(x.shape[:1], x.dtype)), grid, method)
  return prior_log_prob(z) + integral


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """``log N(z; 0, I)`` summed per example, ``[B]``."""
  return losses.gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
