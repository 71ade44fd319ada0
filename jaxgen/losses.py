"""Pure objectives shared by the families: adversarial losses and likelihood / ELBO building blocks.

All functions are jit-able and reduce over the batch only where their name says ``mean``;
log-densities are in nats and sum over the event dimensions of one example (every axis but the
leading batch axis: ``[B, ...] -> [B]``, :func:`sum_except_batch`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

# --- adversarial -------------------------------------------------------------------------------
# Discriminator outputs are real-valued logits / critic scores of shape [B].


def gan_discriminator_terms(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The discriminator (critic) loss per example, ``(real part [B], fake part [B])``:

  * ``non_saturating`` / ``minimax``: ``-log D(x)``, ``-log(1 - D(G(z)))`` with ``D = sigmoid`` (Goodfellow 2014).
  * ``hinge``: ``relu(1 - D(x))``, ``relu(1 + D(G(z)))`` (Lim & Ye 2017; Miyato et al. 2018).
  * ``wasserstein``: ``-D(x)``, ``D(G(z))`` (Arjovsky et al. 2017; add ``gradient_penalty`` for WGAN-GP).
  """
  if kind in ("non_saturating", "minimax"):
    return (optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)),
            optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)))
  if kind == "hinge":
    return jax.nn.relu(1.0 - real_logits), jax.nn.relu(1.0 + fake_logits)
  if kind == "wasserstein":
    return -real_logits, fake_logits
  raise ValueError(f"unknown GAN loss {kind!r}; use non_saturating, minimax, hinge or wasserstein")


def gan_discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Mean discriminator (critic) loss: the mean of :func:`gan_discriminator_terms`' sum."""
  real, fake = gan_discriminator_terms(kind, real_logits, fake_logits)
  if kind == "wasserstein":
    return jnp.mean(fake) + jnp.mean(real)  # E[D(G(z))] - E[D(x)]
  return jnp.mean(real + fake)


def gan_generator_terms(kind: str, fake_logits: jax.Array) -> jax.Array:
  """The generator loss per example ``[B]``: ``-log D(G(z))`` (non-saturating), ``log(1 - D(G(z)))``
  (minimax), ``-D(G(z))`` (hinge and wasserstein)."""
  if kind == "non_saturating":
    return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits))
  if kind == "minimax":
    return -optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
  if kind in ("hinge", "wasserstein"):
    return -fake_logits
  raise ValueError(f"unknown GAN loss {kind!r}; use non_saturating, minimax, hinge or wasserstein")


def gan_generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """Mean generator loss: the mean of :func:`gan_generator_terms`."""
  return jnp.mean(gan_generator_terms(kind, fake_logits))


def gradient_penalty_terms(critic, real: jax.Array, fake: jax.Array, rng: jax.Array) -> jax.Array:
  """WGAN-GP penalty per example ``[B]``: ``(||grad_x critic(x_hat)||_2 - 1)^2`` at ``x_hat = e x +
  (1-e) G(z)``, ``e ~ U[0,1]`` per example (Gulrajani et al. 2017). ``critic``: ``[B, ...] -> [B]``."""
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(sum_except_batch(grads**2) + 1e-12)
  return (norms - 1.0) ** 2


def gradient_penalty(critic, real: jax.Array, fake: jax.Array, rng: jax.Array) -> jax.Array:
  """WGAN-GP penalty ``E[(||grad_x critic(x_hat)||_2 - 1)^2]``: the mean of :func:`gradient_penalty_terms`."""
  return jnp.mean(gradient_penalty_terms(critic, real, fake, rng))


# --- likelihood terms --------------------------------------------------------------------------


def sum_except_batch(x: jax.Array) -> jax.Array:
  """``[B, ...] -> [B]``: the sum over every axis but the leading one (the event dimensions)."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """``log N(x; mean, exp(log_std)^2)`` summed over all but the leading axis -> ``[B]``.

  Per dimension ``-(x - mean)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2`` with
  ``sigma = exp(log_std)``; ``mean`` and ``log_std`` broadcast against ``x`` (a variance
  ``exp(log_var)`` is ``log_std = log_var / 2``).
  """
  z = (x - mean) * jnp.exp(-log_std)
  return sum_except_batch(-0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi))


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """``log Bernoulli(x; sigmoid(logits))`` for x in [0, 1], summed per example -> ``[B]``."""
  return -sum_except_batch(optax.sigmoid_binary_cross_entropy(logits, x))


@jax.custom_vjp
def categorical_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``-log softmax(logits)[label]`` in float32: logits ``[..., V]`` (any float dtype), int labels
  ``[...]`` in ``0..V-1`` -> ``[...]``.

  The value is ``optax.softmax_cross_entropy_with_integer_labels`` of the float32 logits, bit for
  bit. The gradient, ``g (softmax(logits) - onehot(label))``, is written by hand: the backward pass
  recomputes the softmax from the logits as given and the log-normaliser ``[...]``. Autodiff of the
  optax loss (optax leaves residuals to autodiff) saves ``exp(logits - max)`` as a float32
  ``[..., V]`` tensor instead, the largest tensor of a language model's step (GPT-2 small, batch
  16: 16 x 1024 x 50304 floats, 3.3 GB written and read again, twice the bytes of its bfloat16
  logits). On an H100 this took GPT-2 small's step from 40.0 to 38.0 ms (docs/benchmarks.md).
  """
  return _categorical_nll_fwd(logits, labels)[0]


def _categorical_nll_fwd(logits, labels):
  """The value (optax's computation: log-normaliser minus the label's logit) and the residuals."""
  wide = logits.astype(jnp.float32)
  log_normalizer = jax.nn.logsumexp(wide, axis=-1)
  label_logits = jnp.take_along_axis(wide, labels[..., None], axis=-1)[..., 0]
  return log_normalizer - label_logits, (logits, labels, log_normalizer)


def _categorical_nll_bwd(residuals, g):
  logits, labels, log_normalizer = residuals
  softmax = jnp.exp(logits.astype(jnp.float32) - log_normalizer[..., None])
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  return ((softmax - onehot) * g[..., None]).astype(logits.dtype), None


categorical_nll.defvjp(_categorical_nll_fwd, _categorical_nll_bwd)


def kl_diag_gaussian_standard_normal(mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """``KL(N(mean, diag exp(2 log_std)) || N(0, I))`` in closed form, per example -> ``[B]``."""
  return sum_except_batch(0.5 * (mean**2 + jnp.exp(2.0 * log_std) - 1.0) - log_std)


def elbo(log_px_given_z: jax.Array, kl: jax.Array) -> jax.Array:
  """Evidence lower bound ``E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)``, per example."""
  return log_px_given_z - kl
