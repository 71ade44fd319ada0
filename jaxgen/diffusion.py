"""Gaussian diffusion (Ho et al. 2020; Song et al. 2021; Nichol & Dhariwal 2021): the maths.

Conventions
-----------
Timesteps are zero-based: ``t = 0, ..., T-1`` is step ``t+1`` of the papers. With
``alpha_t = 1 - beta_t`` and ``abar_t = prod_{s<=t} alpha_s`` (``abar_{-1} = 1``):

* forward process      ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``;
* posterior            ``q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, betatilde_t I)`` with
  ``c0_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t)``, ``ct_t = sqrt(alpha_t) (1 - abar_{t-1}) /
  (1 - abar_t)``, ``betatilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``;
* predictions: the network outputs ``eps`` (the noise in ``x_t = sqrt(abar) x_0 + sqrt(1-abar) eps``)
  or ``v = sqrt(abar) eps - sqrt(1-abar) x_0`` (Salimans & Ho 2022); both give
  ``x_0 = (x_t - sqrt(1-abar) eps) / sqrt(abar) = sqrt(abar) x_t - sqrt(1-abar) v``;
* reverse process ``p(x_{t-1} | x_t) = N(posterior mean at the predicted x_0, sigma_t^2 I)`` with
  ``sigma_t^2 = betatilde_t`` ("small") or ``beta_t`` ("large"); at ``t = 0`` both use
  ``betatilde_1`` (the first non-zero posterior variance), as Ho et al.

The variational bound (nats per example) is ``L_prior + L_diffusion + L_decoder``:
``L_prior = KL(q(x_{T-1} | x_0) || N(0, I))``, ``L_diffusion = sum_{t=1}^{T-1} E_q KL(q(x_{t-1} |
x_t, x_0) || p(x_{t-1} | x_t))`` and ``L_decoder = -E_q log p(x_0 | x_{t=0})``, a Gaussian
integrated over the bins of the discrete data grid (or its density for continuous data).

Samplers: ancestral (``ddpm_sample``, all ``T`` steps), DDIM (``ddim_sample``, Song et al. 2021),
and two solvers of the probability-flow ODE on a grid of timesteps (``sampler_timesteps``):
DPM-Solver++(2M) (``dpm_solver_sample``, Lu et al. 2022) and the EDM Euler / Heun sampler
(``ode_sample``, Karras et al. 2022; the integrators are ``jaxgen.ode``'s).
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import losses, ode
from jaxgen.errors import UserError

#: ``model_fn(x_t, t) -> output``: the denoiser, ``x_t`` ``[B, ...]``, ``t`` int32 ``[B]``; its output
#: has the shape of ``x_t`` and is ``eps`` or ``v`` according to the prediction type.
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
VARIANCES = ("small", "large")
GRIDS = ("uniform", "karras", "logsnr")  # time grids of the ODE samplers (``sampler_timesteps``)


@flax.struct.dataclass
class Schedule:
  """Per-timestep constants of a noise schedule, each float32 ``[T]`` (see the module docstring)."""

  betas: jax.Array
  alphas_cumprod: jax.Array  # abar_t
  alphas_cumprod_prev: jax.Array  # abar_{t-1}, with abar_{-1} = 1
  posterior_variance: jax.Array  # betatilde_t (0 at t = 0)
  posterior_log_variance_clipped: jax.Array  # log betatilde_t with betatilde_1 at t = 0
  posterior_mean_coef_x0: jax.Array  # c0_t
  posterior_mean_coef_xt: jax.Array  # ct_t

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def betas_for(name: str, num_timesteps: int) -> np.ndarray:
  """float64 ``[T]`` betas of a named schedule.

  ``linear``: ``beta`` from ``1e-4`` to ``0.02`` for ``T = 1000`` (Ho et al.), both ends scaled by
  ``1000 / T`` so other ``T`` keep the same ``abar`` curve. ``cosine``: ``abar(t) = f(t) / f(0)``,
  ``f(t) = cos((t/T + s) / (1 + s) * pi/2)^2``, ``s = 0.008``, betas clipped at 0.999 (Nichol &
  Dhariwal 2021).
  """
  if num_timesteps < 2:
    raise UserError(f"model.num_timesteps={num_timesteps}: use at least 2 diffusion steps")
  if name == "linear":
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), num_timesteps, dtype=np.float64)
  if name == "cosine":
    s = 0.008
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
  raise UserError(f"model.schedule={name!r} is unknown; use one of {SCHEDULES}")


def make_schedule(name: str, num_timesteps: int) -> Schedule:
  """The ``Schedule`` of a named noise schedule with ``T = num_timesteps`` steps."""
  betas = betas_for(name, num_timesteps)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(
      betas=f32(betas),
      alphas_cumprod=f32(abar),
      alphas_cumprod_prev=f32(abar_prev),
      posterior_variance=f32(post_var),
      posterior_log_variance_clipped=f32(np.log(np.append(post_var[1], post_var[1:]))),
      posterior_mean_coef_x0=f32(np.sqrt(abar_prev) * betas / (1.0 - abar)),
      posterior_mean_coef_xt=f32(np.sqrt(alphas) * (1.0 - abar_prev) / (1.0 - abar)),
  )


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
  """``a`` ``[B]`` reshaped ``[B, 1, ...]`` to broadcast against ``x`` ``[B, ...]``."""
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _at(a: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
  """``a[t]`` for int ``t`` ``[B]``, shaped ``[B, 1, ...]`` to broadcast against ``x`` ``[B, ...]``."""
  return _bcast(a[t], x)


# ---- forward process and posterior -------------------------------------------------------------


def q_mean_variance(sched: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``sqrt(abar_t) x_0`` ``[B, ...]`` and variance ``1 - abar_t`` ``[B, 1, ...]`` of ``q(x_t|x_0)``."""
  abar = _at(sched.alphas_cumprod, t, x0)
  return jnp.sqrt(abar) * x0, 1.0 - abar


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``, ``noise ~ N(0, I)``."""
  mean, var = q_mean_variance(sched, x0, t)
  return mean + jnp.sqrt(var) * noise


def q_posterior(sched: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array):
  """``q(x_{t-1} | x_t, x_0)``: mean ``[B, ...]``, variance and clipped log variance ``[B, 1, ...]``."""
  mean = _at(sched.posterior_mean_coef_x0, t, xt) * x0 + _at(sched.posterior_mean_coef_xt, t, xt) * xt
  return (mean, _at(sched.posterior_variance, t, xt),
          _at(sched.posterior_log_variance_clipped, t, xt))


# ---- parameterisations -------------------------------------------------------------------------


def x0_from_eps(sched: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  abar = _at(sched.alphas_cumprod, t, xt)
  return (xt - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)


def eps_from_x0(sched: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  abar = _at(sched.alphas_cumprod, t, xt)
  return (xt - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


def v_from_eps_x0(sched: Schedule, t: jax.Array, eps: jax.Array, x0: jax.Array) -> jax.Array:
  """``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``."""
  abar = _at(sched.alphas_cumprod, t, x0)
  return jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0


def x0_eps_from_v(sched: Schedule, xt: jax.Array, t: jax.Array, v: jax.Array):
  """``x_0 = sqrt(abar) x_t - sqrt(1-abar) v`` and ``eps = sqrt(1-abar) x_t + sqrt(abar) v``."""
  abar = _at(sched.alphas_cumprod, t, xt)
  a, s = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  return a * xt - s * v, s * xt + a * v


def training_target(sched: Schedule, prediction: str, x0: jax.Array, t: jax.Array,
                    eps: jax.Array) -> jax.Array:
  """What the network regresses in the simple loss: ``eps`` or ``v``."""
  if prediction == "eps":
    return eps
  if prediction == "v":
    return v_from_eps_x0(sched, t, eps, x0)
  raise UserError(f"model.prediction={prediction!r} is unknown; use one of {PREDICTIONS}")


def denoise(sched: Schedule, model_fn: ModelFn, xt: jax.Array, t: jax.Array, prediction: str,
            clip: bool = False) -> tuple[jax.Array, jax.Array]:
  """Predicted ``(x_0, eps)`` at ``x_t``.

  With ``clip``, ``x_0`` is clipped to ``[-1, 1]`` and ``eps`` recomputed from it, so the pair stays
  consistent with ``x_t`` and DDPM and DDIM use the same prediction.
  """
  out = model_fn(xt, t)
  if prediction == "eps":
    eps = out
    x0 = x0_from_eps(sched, xt, t, eps)
  elif prediction == "v":
    x0, eps = x0_eps_from_v(sched, xt, t, out)
  else:
    raise UserError(f"model.prediction={prediction!r} is unknown; use one of {PREDICTIONS}")
  if clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(sched, xt, t, x0)
  return x0, eps


def p_mean_variance(sched: Schedule, model_fn: ModelFn, xt: jax.Array, t: jax.Array,
                    prediction: str, variance: str = "small", clip: bool = False):
  """Reverse step ``p(x_{t-1} | x_t)``: mean ``[B, ...]``, log variance ``[B, 1, ...]``, predicted x_0."""
  x0, _ = denoise(sched, model_fn, xt, t, prediction, clip)
  mean, _, log_var_small = q_posterior(sched, x0, xt, t)
  if variance == "small":
    log_var = log_var_small
  elif variance == "large":
    # beta_t, with betatilde_1 at t = 0 (beta_0 would make the decoder needlessly sharp).
    log_var = jnp.where(_bcast(t, xt) == 0, log_var_small,
                        jnp.log(_at(sched.betas, t, xt)))
  else:
    raise UserError(f"model.variance={variance!r} is unknown; use one of {VARIANCES}")
  return mean, log_var, x0


# ---- samplers ----------------------------------------------------------------------------------


def ddpm_step(sched: Schedule, model_fn: ModelFn, xt: jax.Array, t: jax.Array, noise: jax.Array,
              prediction: str, variance: str = "small", clip: bool = False):
  """One ancestral step ``x_t -> x_{t-1}``: ``mean + sigma_t noise`` (no noise at ``t = 0``).

  Returns ``(x_{t-1}, mean, std)``; ``std`` ``[B, 1, ...]``.
  """
  mean, log_var, _ = p_mean_variance(sched, model_fn, xt, t, prediction, variance, clip)
  std = jnp.where(_bcast(t, xt) > 0, jnp.exp(0.5 * log_var), 0.0)
  return mean + std * noise, mean, std


def ddim_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
  """``steps`` increasing timesteps from 0 to ``T-1``, evenly spaced (rounded), all distinct."""
  if not 1 <= steps <= num_timesteps:
    raise UserError(f"sample.steps={steps} must be in [1, model.num_timesteps={num_timesteps}]")
  if steps == 1:
    return np.array([num_timesteps - 1])
  return np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int32)


def ddim_step(sched: Schedule, model_fn: ModelFn, xt: jax.Array, t: jax.Array, s: jax.Array,
              noise: jax.Array, eta: float, prediction: str, clip: bool = False):
  """One DDIM step ``x_t -> x_s`` (``s < t``; ``s = -1`` means ``abar_s = 1``, the data).

  ``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma noise`` with
  ``sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)`` (Song et al. 2021,
  eq. 12/16). With ``eta = 1`` and ``s = t - 1`` this is the ancestral step with ``betatilde_t``.
  Returns ``(x_s, mean, sigma)``.
  """
  x0, eps = denoise(sched, model_fn, xt, t, prediction, clip)
  abar_t = _at(sched.alphas_cumprod, t, xt)
  abar_s = jnp.where(_bcast(s, xt) >= 0, _at(sched.alphas_cumprod, jnp.maximum(s, 0), xt), 1.0)
  sigma = eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
  mean = jnp.sqrt(abar_s) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_s - sigma**2, 0.0)) * eps
  return mean + sigma * noise, mean, sigma


def ddpm_sample(sched: Schedule, model_fn: ModelFn, rng: jax.Array, shape: tuple[int, ...],
                prediction: str, variance: str = "small", clip: bool = False) -> jax.Array:
  """Ancestral sampling: ``x_{T-1} ~ N(0, I)``, then ``T`` reverse steps in one ``lax.scan``."""
  rng, init_rng = jax.random.split(rng)
  ts = jnp.arange(sched.num_timesteps - 1, -1, -1, dtype=jnp.int32)

  def step(x, t):
    noise = jax.random.normal(jax.random.fold_in(rng, t), shape)
    x, _, _ = ddpm_step(sched, model_fn, x, jnp.full(shape[:1], t), noise, prediction, variance,
                        clip)
    return x, None

  x, _ = jax.lax.scan(step, jax.random.normal(init_rng, shape), ts)
  return x


def ddim_sample(sched: Schedule, model_fn: ModelFn, rng: jax.Array, shape: tuple[int, ...],
                steps: int, eta: float, prediction: str, clip: bool = False) -> jax.Array:
  """DDIM sampling over ``steps`` timesteps (``ddim_timesteps``) in one ``lax.scan``, from
  ``x_T ~ N(0, I)`` drawn with ``split(rng)[1]``."""
  rng, init_rng = jax.random.split(rng)
  return ddim_from(sched, model_fn, jax.random.normal(init_rng, shape), rng, steps, eta, prediction, clip)


def ddim_from(sched: Schedule, model_fn: ModelFn, x_T: jax.Array, rng: jax.Array, steps: int, eta: float,
              prediction: str, clip: bool = False) -> jax.Array:
  """DDIM from a given ``x_T [B, ...]``; step ``t`` draws its noise with ``fold_in(rng, t)``
  (none is used when ``eta = 0``: the deterministic latent -> data map)."""
  seq = ddim_timesteps(sched.num_timesteps, steps)[::-1]
  prev = np.append(seq[1:], -1)
  shape = x_T.shape

  def step(x, ts):
    t, s = ts
    noise = jax.random.normal(jax.random.fold_in(rng, t), shape)
    x, _, _ = ddim_step(sched, model_fn, x, jnp.full(shape[:1], t), jnp.full(shape[:1], s), noise,
                        eta, prediction, clip)
    return x, None

  x, _ = jax.lax.scan(step, x_T, (jnp.asarray(seq, jnp.int32), jnp.asarray(prev, jnp.int32)))
  return x


# ---- the probability-flow ODE: DPM-Solver++(2M), EDM Heun / Euler -------------------------------
# In the variance-exploding view of Karras et al. (2022), ``xbar = x_t / sqrt(abar_t)`` and
# ``sigma_t = sqrt((1 - abar_t) / abar_t)``; the deterministic (probability-flow) sampler solves
# ``dxbar / dsigma = (xbar - D(xbar; sigma)) / sigma`` from ``sigma_{T-1}`` to 0, where
# ``D(xbar; sigma_t) = x_0`` predicted at ``x_t = sqrt(abar_t) xbar`` (``denoise``). DDIM with
# ``eta = 0`` is Euler's method on it; at ``sigma = 0``, ``xbar = x_0``.


def ve_sigmas(sched: Schedule) -> jax.Array:
  """``sigma_t = sqrt((1 - abar_t) / abar_t)`` float32 ``[T]``, increasing in ``t``."""
  return jnp.sqrt((1.0 - sched.alphas_cumprod) / sched.alphas_cumprod)


def sampler_timesteps(sched: Schedule, steps: int, grid: str, rho: float = 7.0) -> np.ndarray:
  """Decreasing distinct timesteps for an ODE sampler, from ``T-1`` to 0 (``sched`` concrete).

  ``uniform``: DDIM's evenly spaced timesteps. ``karras``: ``sigma_i = (sigma_max^(1/rho) +
  i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` (Karras et al. 2022, eq. 5).
  ``logsnr``: evenly spaced in ``log sigma`` (= ``-lambda``, half the log-SNR; Lu et al. 2022).
  Target noise levels are snapped to the nearest timestep in ``log sigma`` (the network is trained
  on the ``T`` timesteps only); levels that snap to the same timestep merge, so a grid has at most
  ``steps`` timesteps (fewer only when ``steps`` is close to ``T``).
  """
  t_max = sched.num_timesteps - 1
  if not 1 <= steps <= sched.num_timesteps:
    raise UserError(f"sample.steps={steps} must be in [1, model.num_timesteps={t_max + 1}]")
  if grid == "uniform":
    return ddim_timesteps(t_max + 1, steps)[::-1]
  abar = np.asarray(sched.alphas_cumprod, np.float64)
  log_sigma = 0.5 * np.log((1.0 - abar) / abar)
  if steps == 1:
    return np.array([t_max])
  u = np.linspace(0.0, 1.0, steps)
  if grid == "karras":
    s_max, s_min = np.exp(log_sigma[-1]) ** (1 / rho), np.exp(log_sigma[0]) ** (1 / rho)
    targets = rho * np.log(s_max + u * (s_min - s_max))
  elif grid == "logsnr":
    targets = log_sigma[-1] + u * (log_sigma[0] - log_sigma[-1])
  else:
    raise UserError(f"sample.grid={grid!r} is unknown; use one of {GRIDS}")
  snapped = np.abs(log_sigma[None, :] - targets[:, None]).argmin(axis=1)
  return np.unique(snapped)[::-1].astype(np.int32)


def ve_denoiser(sched: Schedule, model_fn: ModelFn, prediction: str, clip: bool = False):
  """``D(xbar, sigma) -> x_0`` for a scalar ``sigma`` on the schedule (its timestep is the nearest
  in ``log sigma``, exact for the grids of ``sampler_timesteps``)."""
  log_sigma = jnp.log(ve_sigmas(sched))

  def fn(xbar: jax.Array, sigma: jax.Array) -> jax.Array:
    t = jnp.argmin(jnp.abs(log_sigma - jnp.log(sigma)))
    x = jnp.sqrt(sched.alphas_cumprod[t]) * xbar
    return denoise(sched, model_fn, x, jnp.full(xbar.shape[:1], t, jnp.int32), prediction, clip)[0]

  return fn


def ode_sample(sched: Schedule, model_fn: ModelFn, noise: jax.Array, steps: int, method: str,
               prediction: str, clip: bool = False, grid: str = "karras",
               rho: float = 7.0) -> jax.Array:
  """The EDM sampler (Karras et al. 2022, Alg. 1) from ``x_{T-1} = noise`` (``N(0, I)``, the prior
  of every sampler here): ``method`` (euler | heun) on the probability flow over the noise levels
  of ``sampler_timesteps`` and a last step to ``sigma = 0`` (always an Euler step, which returns
  ``D``). Heun uses ``2n - 1`` network evaluations for ``n`` levels. Deterministic."""
  ts = sampler_timesteps(sched, steps, grid, rho)
  sigmas = jnp.append(ve_sigmas(sched)[ts], 0.0)
  denoiser = ve_denoiser(sched, model_fn, prediction, clip)
  field = lambda xbar, sigma: (xbar - denoiser(xbar, sigma)) / sigma
  xbar = noise / jnp.sqrt(sched.alphas_cumprod[ts[0]])
  return ode.solve(field, xbar, sigmas, method, euler_last=True)


def dpm_solver_sample(sched: Schedule, model_fn: ModelFn, noise: jax.Array, steps: int,
                      prediction: str, clip: bool = False, grid: str = "logsnr",
                      rho: float = 7.0) -> jax.Array:
  """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) from ``x_{T-1} = noise``, multistep second order in
  ``lambda = -log sigma``. Deterministic.

  With ``h_i = log(sigma_{i-1} / sigma_i)`` and ``r_i = h_{i-1} / h_i``:
  ``xbar_i = (sigma_i / sigma_{i-1}) xbar_{i-1} + (1 - sigma_i / sigma_{i-1}) D_i``, with
  ``D_i = (1 + 1/(2 r_i)) D(xbar_{i-1}) - 1/(2 r_i) D(xbar_{i-2})``; the first step and the last
  (to ``sigma = 0``, where it returns the denoised ``x_0``) are first order (``D_i = D(xbar_{i-1})``,
  i.e. DDIM). One network evaluation per step, in one ``lax.scan``.
  """
  ts = sampler_timesteps(sched, steps, grid, rho)
  sigma = ve_sigmas(sched)[ts]
  sigma_next = jnp.append(sigma[1:], 0.0)
  h = jnp.log(sigma[:-1] / sigma[1:])  # the steps between noise levels
  h_cur = jnp.append(h, 1.0)  # h_i; the last step (to sigma = 0, h infinite) is first order
  h_prev = jnp.append(1.0, h)  # h_{i-1}; unused at i = 0
  second = (jnp.arange(len(ts)) > 0) & (sigma_next > 0)
  denoiser = ve_denoiser(sched, model_fn, prediction, clip)

  def step(carry, args):
    xbar, d_prev = carry
    s, s_next, hp, hc, use2 = args
    d = denoiser(xbar, s)
    d_mix = jnp.where(use2, d + (d - d_prev) * (hc / (2.0 * hp)), d)
    ratio = s_next / s
    return (ratio * xbar + (1.0 - ratio) * d_mix, d), None

  xbar = noise / jnp.sqrt(sched.alphas_cumprod[ts[0]])
  (xbar, _), _ = jax.lax.scan(step, (xbar, jnp.zeros_like(xbar)),
                              (sigma, sigma_next, h_prev, h_cur, second))
  return xbar


def drop_labels(rng: jax.Array, label: jax.Array, rate: float, null_label: int) -> jax.Array:
  """``label`` ``[B]`` with each entry replaced by ``null_label`` with probability ``rate``: the
  training side of classifier-free guidance (one network learns p(x | c) and p(x))."""
  return jnp.where(jax.random.uniform(rng, label.shape) < rate, null_label, label)


def guided(model_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array], label: jax.Array,
           null_label: int, scale: float) -> ModelFn:
  """Classifier-free guidance (Ho & Salimans 2022): ``(1 + w) f(x, t, c) - w f(x, t, null)``.

  ``model_fn(x, t, label)``; ``label`` int32 ``[B]``. The output is linear in eps *and* in v at a
  fixed ``x_t``, so guiding either prediction gives the same guided eps. With ``scale = 0`` the model
  is called once, conditionally.
  """
  if scale == 0:
    return lambda x, t: model_fn(x, t, label)

  def fn(x, t):
    b = x.shape[0]
    out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([label, jnp.full_like(label, null_label)]))
    return (1.0 + scale) * out[:b] - scale * out[b:]

  return fn


# ---- the variational bound ---------------------------------------------------------------------


def normal_kl(mean1, log_var1, mean2, log_var2) -> jax.Array:
  """Elementwise ``KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2)))`` in nats."""
  return 0.5 * (log_var2 - log_var1 + jnp.exp(log_var1 - log_var2)
                + (mean1 - mean2) ** 2 * jnp.exp(-log_var2) - 1.0)


def _log_normal_cdf_diff(a: jax.Array, b: jax.Array) -> jax.Array:
  """``log(Phi(b) - Phi(a))`` for ``a < b``, stable in both tails (uses the mirrored pair when a > 0)."""
  upper = a > 0
  log_hi = jnp.where(upper, jax.scipy.special.log_ndtr(-a), jax.scipy.special.log_ndtr(b))
  log_lo = jnp.where(upper, jax.scipy.special.log_ndtr(-b), jax.scipy.special.log_ndtr(a))
  return log_hi + jnp.log(jnp.maximum(-jnp.expm1(log_lo - log_hi), 1e-30))


def discretized_gaussian_log_likelihood(x, mean, log_var, levels: int,
                                        value_range: tuple[float, float]) -> jax.Array:
  """Elementwise log-probability of grid values ``x`` under ``N(mean, exp(log_var))`` binned.

  The grid has ``levels`` values from ``lo`` to ``hi``, spacing ``delta = (hi - lo) / (levels - 1)``;
  value ``x`` owns ``[x - delta/2, x + delta/2]``, and the extreme bins extend to ``-inf`` / ``+inf``
  (Ho et al. 2020, eq. 13, with 255 bins of width 2/255 for 8-bit data in [-1, 1]). The
  probabilities of all grid values sum to one, so this is a discrete likelihood of the raw data.
  """
  lo, hi = value_range
  half = 0.5 * (hi - lo) / (levels - 1)
  inv_std = jnp.exp(-0.5 * log_var)
  upper = jnp.where(x > hi - half, jnp.inf, (x + half - mean) * inv_std)
  lower = jnp.where(x < lo + half, -jnp.inf, (x - half - mean) * inv_std)
  return _log_normal_cdf_diff(lower, upper)


def prior_kl(sched: Schedule, x0: jax.Array) -> jax.Array:
  """``KL(q(x_{T-1} | x_0) || N(0, I))`` summed over dimensions, nats ``[B]``."""
  t = jnp.full(x0.shape[:1], sched.num_timesteps - 1)
  mean, var = q_mean_variance(sched, x0, t)
  return losses.sum_except_batch(normal_kl(mean, jnp.log(var), 0.0, 0.0))


def diffusion_term(sched: Schedule, model_fn: ModelFn, x0: jax.Array, t: jax.Array,
                   noise: jax.Array, prediction: str, variance: str, clip: bool) -> jax.Array:
  """``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` at ``x_t = q_sample(x0, t, noise)``, ``[B]``."""
  xt = q_sample(sched, x0, t, noise)
  q_mean, _, q_log_var = q_posterior(sched, x0, xt, t)
  p_mean, p_log_var, _ = p_mean_variance(sched, model_fn, xt, t, prediction, variance, clip)
  return losses.sum_except_batch(normal_kl(q_mean, q_log_var, p_mean, p_log_var))


def decoder_nll(sched: Schedule, model_fn: ModelFn, x0: jax.Array, noise: jax.Array,
                prediction: str, variance: str, clip: bool, levels: int = 0,
                value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
  """``-log p(x_0 | x_{t=0})`` summed over dimensions, nats ``[B]``.

  Discretized over a grid of ``levels`` values (``levels > 1``), else a Gaussian density.
  """
  t = jnp.zeros(x0.shape[:1], jnp.int32)
  x1 = q_sample(sched, x0, t, noise)
  mean, log_var, _ = p_mean_variance(sched, model_fn, x1, t, prediction, variance, clip)
  if levels > 1:
    return -losses.sum_except_batch(
        discretized_gaussian_log_likelihood(x0, mean, log_var, levels, value_range))
  return -losses.gaussian_log_prob(x0, mean, 0.5 * log_var)


def variational_bound(sched: Schedule, model_fn: ModelFn, x0: jax.Array, rng: jax.Array,
                      prediction: str, variance: str = "small", clip: bool = False,
                      levels: int = 0, value_range: tuple[float, float] = (-1.0, 1.0),
                      num_terms: int = 0) -> dict[str, jax.Array]:
  """The negative ELBO of ``x0`` ``[B, ...]`` in nats, per example: ``{"prior", "diffusion", "decoder"}``.

  ``num_terms = 0`` (or ``>= T - 1``) evaluates all ``T - 1`` diffusion KL terms, one ``x_t``
  sample each. ``num_terms = K`` splits ``1..T-1`` into ``K`` contiguous strata and draws one
  timestep per stratum and example, weighted by the stratum's size: a stratified, unbiased
  estimate of the same sum, ``(T - 1) / K`` times cheaper. The terms run one timestep at a time
  in a ``lax.map`` (a loop over the batch, not a batch of timesteps: memory stays that of one
  network call and the batch keeps its sharding).
  """
  b = x0.shape[0]
  n = sched.num_timesteps - 1
  rng_t, rng_noise, rng_dec = jax.random.split(rng, 3)
  if num_terms <= 0 or num_terms >= n:
    ts = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.int32)[:, None], (n, b))
    weights = jnp.ones((n,))
  else:
    edges = np.round(np.linspace(0, n, num_terms + 1)).astype(np.int32) + 1
    ts = jax.random.randint(rng_t, (num_terms, b), edges[:-1, None], edges[1:, None],
                            dtype=jnp.int32)
    weights = jnp.asarray(np.diff(edges), jnp.float32)

  def term(args):
    i, t = args
    noise = jax.random.normal(jax.random.fold_in(rng_noise, i), x0.shape)
    return diffusion_term(sched, model_fn, x0, t, noise, prediction, variance, clip)

  terms = jax.lax.map(term, (jnp.arange(ts.shape[0]), ts))
  return {
      "prior": prior_kl(sched, x0),
      "diffusion": weights @ terms,
      "decoder": decoder_nll(sched, model_fn, x0, jax.random.normal(rng_dec, x0.shape), prediction,
                             variance, clip, levels, value_range),
  }
