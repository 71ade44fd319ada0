"""WaveNet (van den Oord et al. 2016c): dilated causal convolutions over mu-law audio tokens.

Model. Tokens ``x_t in {0..V-1}`` (``V = spec.levels``, 256 mu-law codes) are modelled as

    log p(x) = sum_t log softmax(f(x_{<t}))[x_t]          (nats; bits/dim = -log p(x) / (T ln 2))

The input at time ``t`` is the embedding of ``x_{t-1}`` (zeros at ``t = 0``), followed by a
causal convolution (kernel 2) and residual layers ``l`` with dilation ``d_l``::

    z = CausalConv_{k, d_l}(h) + V_l e(label)          (global conditioning, optional)
    g = tanh(z_f) * sigmoid(z_g)                       (gated unit; z = [z_f, z_g])
    skip += W_skip,l g,   h += W_res,l g
    logits = W_2 relu(W_1 relu(skip))

so output ``t`` depends on ``x_{t-R} .. x_{t-1}`` with the receptive field
``R = 1 + 1 + sum_l (k-1) d_l`` (shift + input convolution + dilated layers).

Generation, compiled as one ``lax.scan`` over time with per-step key ``fold_in(rng, t)``:

* *fast* (Paine et al. 2016, Fast WaveNet): per-layer queues of past activations
  (:mod:`jaxgen.nn.causal_conv`), ``O(layers)`` work per sample;
* *naive*: recompute the whole receptive field (a window of ``R`` positions) at every step,
  ``O(R * layers)`` work per sample. Positions before time 0 are zeroed at every layer, exactly as
  the full pass zero-pads, so both give the same logits (up to float rounding) and, with the same
  key and controls, the same tokens.

Temperature / top-k / top-p come from ``config.sample`` (:mod:`jaxgen.sampling`), conditional
models draw the classes of ``sample.label`` (:func:`jaxgen.sampling.labels_from_config`).
Held-out metrics (``eval_metrics``, per sequence): ``nll_nats`` (exact) and ``bits_per_dim``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import config_defaults, losses, sampling
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluation.likelihood import nats_to_bits_per_dim
from jaxgen.families.base import FAMILIES, MaximumLikelihoodFamily
from jaxgen.nn.causal_conv import CausalConv1D, shift_right
from jaxgen.nn.masked_conv import gate


class WaveNet(nn.Module):
  """Logits ``[B, T, vocab]`` from tokens ``[B, T]`` (module docstring); ``step`` for generation."""

  vocab: int = 256
  residual_channels: int = 32
  dilation_channels: int = 32
  skip_channels: int = 64
  kernel_size: int = 2
  dilations: tuple[int, ...] = (1, 2, 4, 8)
  num_classes: int = 0  # > 0: global conditioning on a label

  def setup(self):
    r, d2 = self.residual_channels, 2 * self.dilation_channels
    self.embedding = self.param("embedding", nn.initializers.normal(1.0), (self.vocab, r))
    self.input_conv = CausalConv1D(r, r, kernel_size=2, dilation=1)
    self.convs = [CausalConv1D(r, d2, self.kernel_size, d) for d in self.dilations]
    self.conds = [nn.Dense(d2, use_bias=False) for _ in self.dilations] if self.num_classes else []
    self.skips = [nn.Dense(self.skip_channels) for _ in self.dilations]
    self.residuals = [nn.Dense(r) for _ in self.dilations[:-1]]  # the last h is never read
    self.out_hidden = nn.Dense(self.skip_channels)
    self.out_logits = nn.Dense(self.vocab)

  def embed(self, tokens: jax.Array) -> jax.Array:
    """``[...]`` tokens -> ``[..., residual_channels]`` (rows of the embedding table)."""
    return jnp.take(self.embedding, tokens, axis=0)

  @property
  def receptive_field(self) -> int:
    """``R``: output ``t`` depends on input tokens ``t-R .. t-1``."""
    return 2 + sum((self.kernel_size - 1) * d for d in self.dilations)

  def _layers(self, h: jax.Array, label: jax.Array | None, conv, mask=lambda a: a) -> jax.Array:
    """Residual/skip layers on the input-conv output ``h [B, (T,) R]`` -> logits ``[B, (T,) V]``.

    ``conv(l, h) -> z`` applies layer ``l``'s causal convolution (whole sequence or one step);
    ``mask`` zeroes positions before time 0 (the naive windowed pass).
    """
    skip = 0.0
    for l in range(len(self.dilations)):
      z = conv(l, mask(h))
      if self.num_classes:
        c = self.conds[l](jax.nn.one_hot(label, self.num_classes))  # a label embedding
        z = z + c.reshape(c.shape[:1] + (1,) * (z.ndim - 2) + c.shape[1:])
      g = gate(z)
      skip = skip + self.skips[l](g)
      if l < len(self.residuals):
        h = h + self.residuals[l](g)
    return self.out_logits(nn.relu(self.out_hidden(nn.relu(skip))))

  def __call__(self, tokens: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits: ``tokens [B, T]`` -> ``[B, T, vocab]``, ``[:, t]`` predicts ``x_t``."""
    return self.from_embeddings(self.embed(tokens), label)

  def from_embeddings(self, e: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Logits ``[B, T, vocab]`` from token embeddings ``e [B, T, residual_channels]``."""
    y = shift_right(e, 1)
    return self._layers(self.input_conv(y), label, lambda l, h: self.convs[l](h))

  def window_logits(self, canvas: jax.Array, t: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Naive step: logits ``[B, V]`` for time ``t`` from the ``R`` positions ending at ``t``.

    ``canvas [B, T]`` holds the tokens generated so far (entries at ``>= t`` are ignored).
    """
    window = self.receptive_field - 1  # input positions t-window+1 .. t (input p holds x_{p-1})
    pos = t - window + 1 + jnp.arange(window)
    prev = jnp.take(canvas, jnp.clip(pos - 1, 0, canvas.shape[1] - 1), axis=1)
    y = self.embed(prev) * (pos >= 1)[None, :, None]
    valid = (pos >= 0)[None, :, None]
    mask = lambda a: a * valid  # noqa: E731  (activations before time 0 are the zero padding)
    logits = self._layers(self.input_conv(mask(y)), label, lambda l, h: self.convs[l](h), mask)
    return logits[:, -1]

  def init_queues(self, batch: int) -> list[jax.Array]:
    """Empty Fast-WaveNet queues, input convolution first."""
    return [conv.init_queue(batch) for conv in (self.input_conv, *self.convs)]

  def step(self, prev: jax.Array, t: jax.Array, queues: list[jax.Array],
           label: jax.Array | None = None) -> tuple[jax.Array, list[jax.Array]]:
    """Fast step: ``(x_{t-1} [B], t, queues) -> (logits [B, V] for x_t, queues)``."""
    y = self.embed(prev) * (t >= 1).astype(jnp.float32)
    h, q0 = self.input_conv.step(y, queues[0], t)
    new = [q0]

    def conv(l, h):
      z, q = self.convs[l].step(h, queues[l + 1], t)
      new.append(q)
      return z

    return self._layers(h, label, conv), new


@FAMILIES.register("wavenet")
class WaveNetFamily(MaximumLikelihoodFamily):
  """Autoregressive model of token sequences (``modality`` audio or text), one network ``model``
  (module docstring; config in :meth:`defaults`)."""

  sample_temperature = True
  objective = "max likelihood"

  @classmethod
  def defaults(cls) -> dict:
    return {
        "model": {
            "residual_channels": 32,  # channels of the residual stream h
            "dilation_channels": 32,  # channels of each gated unit g
            "skip_channels": 64,  # channels of the skip sum and the output head
            "kernel_size": 2,  # causal convolution taps of the dilated layers
            "dilation_cycle": 8,  # dilations 1, 2, ..., 2^(cycle-1) ...
            "num_cycles": 1,  # ... repeated this many times
            "conditional": False,  # global conditioning on batch["label"]
        },
        "sample": {**sampling.DEFAULTS, "label": -1},  # label: -1 = uniform classes, k = class k
        "optim": {"default": config_defaults.optimizer(learning_rate=1e-3, grad_clip_norm=1.0)},
    }

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    if not spec.is_discrete or len(spec.shape) != 1:
      raise UserError(
          f"wavenet models token sequences (audio or text), and {spec.name!r} holds {spec.modality} "
          f"of shape {spec.shape}: use an audio set such as data.name='audio/tones'")
    m = config.model
    num_classes = self.condition_classes()
    dilations = tuple(2**i for i in range(int(m.dilation_cycle))) * int(m.num_cycles)
    self.net = WaveNet(vocab=spec.levels, residual_channels=int(m.residual_channels),
                       dilation_channels=int(m.dilation_channels), skip_channels=int(m.skip_channels),
                       kernel_size=int(m.kernel_size), dilations=dilations, num_classes=num_classes)
    self.sampling_controls()  # bad controls fail here

  def _label(self, batch):
    return batch["label"] if self.net.num_classes else None

  def init(self, rng, batch):
    return {"model": self.net.init(rng, batch["x"], self._label(batch))}, {}

  def log_prob(self, params, batch) -> jax.Array:
    """Exact ``log p(x)`` in nats per example, ``[B]``."""
    logits = self.net.apply(params["model"], batch["x"], self._label(batch))
    return -jnp.sum(losses.categorical_nll(logits, batch["x"]), axis=1)

  def per_example_metrics(self, params, batch):
    """Per-example ``nll_nats`` and ``bits_per_dim``, ``[B]`` each."""
    nll = -self.log_prob(params, batch)
    return {"nll_nats": nll, "bits_per_dim": nats_to_bits_per_dim(nll, self.spec.dims)}

  def generate(self, params, rng: jax.Array, labels: jax.Array | None, num: int, length: int,
               naive: bool = False) -> jax.Array:
    """``num`` token sequences ``int32 [num, length]``, fast (queues) or naive (windowed) steps."""
    net, controls, p = self.net, self.sampling_controls(), params["model"]
    times = jnp.arange(length)
    if naive:
      def naive_step(canvas, t):
        logits = net.apply(p, canvas, t, labels, method=WaveNet.window_logits)
        x = sampling.sample_logits(jax.random.fold_in(rng, t), logits, **controls)
        return jax.lax.dynamic_update_index_in_dim(canvas, x, t, axis=1), None

      canvas, _ = jax.lax.scan(naive_step, jnp.zeros((num, length), jnp.int32), times)
      return canvas

    def fast_step(carry, t):
      queues, prev = carry
      logits, queues = net.apply(p, prev, t, queues, labels, method=WaveNet.step)
      x = sampling.sample_logits(jax.random.fold_in(rng, t), logits, **controls)
      return (queues, x), x

    queues = net.apply(p, num, method=WaveNet.init_queues)
    _, xs = jax.lax.scan(fast_step, (queues, jnp.zeros((num,), jnp.int32)), times)
    return xs.T

  def sample(self, params, state, rng, num):
    """``num`` sequences ``int32 [num, T]`` (``T = spec.shape[0]``) by fast generation."""
    label_key, key = jax.random.split(rng)
    labels = sampling.labels_from_config(self.config.sample, self.net.num_classes, label_key, num)
    return self.generate(params, key, labels, num, self.spec.shape[0])
