"""``transformer``: a decoder-only (GPT-style) autoregressive model of token sequences.

Model: token embedding (+ learned position embedding, or rotary positions inside attention),
``num_layers`` pre-LayerNorm blocks ``x += attn(LN(x)); x += MLP(LN(x))`` (causal multi-head
self-attention, MLP ``W -> 4W -> W`` with GELU), a final LayerNorm and a linear head to ``V``
logits (optionally tied to the token embedding).

Likelihood. A batch holds windows ``x`` int32 ``[B, T]`` of tokens in ``{0..V-1}``. The model
input at position ``t`` is the previous token, ``(BOS, x_0, ..., x_{T-2})`` with an extra start
token ``BOS = V`` (embedding table of ``V + 1`` rows), and its output at ``t`` is the distribution
of ``x_t``:

    log p(x) = sum_{t=0}^{T-1} log p(x_t | BOS, x_0..x_{t-1}).

The training loss is the mean NLL per token in nats; bits per character are ``nats / ln 2``.
Held-out metrics (``eval_metrics``, per window): ``nll_nats`` (exact, nats per window),
``bits_per_dim`` and its text name ``bits_per_char`` (the same number: ``nll_nats / (T ln 2)``).

Sampling starts from ``BOS`` alone (an unconditional sample) and draws ``T`` tokens under the
controls of ``config.sample`` (temperature, top-k, top-p; ``jaxgen.sampling``). ``generate(...,
cached=True)`` runs one ``lax.scan`` over positions with a fixed-shape key/value cache (one new
token per step); ``cached=False`` recomputes the full forward pass at every step (the naive
reference). Both use the key ``fold_in(rng, t)`` at step ``t``, so they draw the same tokens.

Accelerators: the blocks and the head compute in ``train.compute_dtype`` (the residual stream and
the parameters stay float32; the logits come out in the compute dtype and the loss,
``jaxgen.losses.categorical_nll``, and the sampler, ``jaxgen.sampling.process_logits``, upcast
them, so that the step never writes a float32 ``[B, T, V]`` tensor);
``model.remat`` recomputes each block's activations in the backward pass; ``model.attention``
picks ``jax.nn.dot_product_attention``'s implementation (``auto``: cuDNN's flash attention on a GPU
in half precision, else XLA).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_defaults, losses, sampling
from jaxgen.errors import UserError
from jaxgen.evaluation.likelihood import nats_to_bits_per_dim
from jaxgen.families.base import FAMILIES, Batch, Family, Metrics, Params, State, UpdateGroup
from jaxgen.nn.attention import CausalSelfAttention, KVCache
from jaxgen.nn.remat import remat as remat_module

Caches = Sequence[KVCache]
ATTENTION = ("auto", "xla", "cudnn")  # model.attention
_EMBED_INIT = nn.initializers.normal(stddev=0.02)  # GPT-2's embedding initialisation


class Block(nn.Module):
  """Pre-LayerNorm transformer block: ``x + attn(LN(x))`` then ``x + MLP(LN(x))``."""

  num_heads: int
  rotary: bool
  dropout: float
  dtype: jnp.dtype | None = None
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, cache: KVCache | None, index, deterministic: bool):
    dtype = self.dtype
    h, cache = CausalSelfAttention(self.num_heads, rotary=self.rotary, dropout=self.dropout, dtype=dtype,
                                   implementation=self.attention)(
        nn.LayerNorm(dtype=dtype)(x), cache=cache, index=index, deterministic=deterministic)
    x = x + h
    width = x.shape[-1]
    h = nn.Dense(width, dtype=dtype)(nn.gelu(nn.Dense(4 * width, dtype=dtype)(nn.LayerNorm(dtype=dtype)(x))))
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic), cache


class Transformer(nn.Module):
  """Decoder-only transformer: input tokens ``[B, L]`` in ``{0..V}`` -> logits ``[B, L, V]``.

  Attributes:
    vocab_size: ``V`` output classes; the input table has one more row for ``BOS = V``.
    max_len: the longest context (learned position table size).
    num_layers, num_heads, width: depth, heads per attention, model width ``W``.
    positions: ``"learned"`` (an added position embedding) or ``"rotary"`` (RoFormer).
    tie_weights: the head is the transposed token embedding (its first ``V`` rows).
    dropout: dropout rate on embeddings, attention weights and residual branches.
    dtype: compute dtype of the blocks, the head and the logits (None: float32).
    remat: recompute each block's activations in the backward pass (``jaxgen.nn.remat``).
    attention: ``jax.nn.dot_product_attention``'s implementation, ``"xla"`` or ``"cudnn"``.
  """

  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  width: int
  positions: str = "learned"
  tie_weights: bool = True
  dropout: float = 0.0
  dtype: jnp.dtype | None = None
  remat: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, tokens: jax.Array, *, caches: Caches | None = None, index=0,
               deterministic: bool = True) -> tuple[jax.Array, list[KVCache] | None]:
    """Logits of the next token at each position.

    Args:
      tokens: int ``[B, L]``, the inputs at absolute positions ``index .. index+L-1``.
      caches: ``None`` (a whole sequence from position 0) or one ``KVCache`` per layer.
      index: absolute position of ``tokens[:, 0]`` when decoding with caches.
      deterministic: disables dropout.

    Returns:
      ``(logits [B, L, V], updated caches or None)``.
    """
    embed = self.param("embed", _EMBED_INIT, (self.vocab_size + 1, self.width))
    x = jnp.take(embed, tokens, axis=0)
    if self.positions == "learned":
      pos = self.param("pos_embed", _EMBED_INIT, (self.max_len, self.width))
      x = x + jax.lax.dynamic_slice_in_dim(pos, index, tokens.shape[1])[None]
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    new_caches = None if caches is None else []
    block_class = remat_module(Block, static_argnums=(4,)) if self.remat else Block  # 4: deterministic
    for layer in range(self.num_layers):
      block = block_class(self.num_heads, self.positions == "rotary", self.dropout, self.dtype, self.attention,
                          name=f"block{layer}")
      x, cache = block(x, None if caches is None else caches[layer], index, deterministic)
      if caches is not None:
        new_caches.append(cache)
    x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
    if self.tie_weights:
      logits = x @ embed[:self.vocab_size].T.astype(x.dtype)
    else:
      logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="head")(x)
    return logits, new_caches


@FAMILIES.register("transformer")
class TransformerFamily(Family):
  """GPT-style autoregressive family (module docstring; config in :meth:`defaults`)."""

  sample_temperature = True
  objective = "max likelihood"

  mixed_precision = True

  @classmethod
  def defaults(cls) -> dict:
    """nanoGPT's CPU "baby GPT": 4 layers, 4 heads, width 128, no dropout, AdamW with warm-up and
    cosine decay."""
    return {
        "model": {
            "num_layers": 4,  # transformer blocks
            "num_heads": 4,  # attention heads per block
            "width": 128,  # model width W (a multiple of num_heads)
            "positions": "learned",  # learned | rotary
            "tie_weights": True,  # the output head is the transposed token embedding
            "dropout": 0.0,  # on embeddings, attention weights and residual branches
            "remat": False,  # recompute each block's activations in the backward pass (less memory)
            "attention": "auto",  # auto | xla | cudnn: jax.nn.dot_product_attention's implementation
        },
        "sample": dict(sampling.DEFAULTS),  # unconditional: no sample.label
        "optim": {"model": config_defaults.optimizer(
            name="adamw", learning_rate=1e-3, b2=0.99, weight_decay=0.1, schedule="warmup_cosine",
            warmup_steps=100, end_learning_rate=1e-4, grad_clip_norm=1.0)},
    }

  def __init__(self, config, spec):
    super().__init__(config, spec)
    if not spec.is_discrete or len(spec.shape) != 1:
      raise UserError(f"the transformer family models token sequences; data set {spec.name!r} is "
                      f"{spec.modality} of shape {spec.shape}: use a text or audio data set")
    self.sampling_controls()  # bad controls fail here
    m = config.model
    if m.positions not in ("learned", "rotary"):
      raise UserError(f"model.positions={m.positions!r}; use 'learned' or 'rotary'")
    if m.width % m.num_heads or (m.positions == "rotary" and (m.width // m.num_heads) % 2):
      raise UserError(f"model.width={m.width} must be a multiple of model.num_heads={m.num_heads} "
                      "(with an even head width for rotary positions)")
    if m.attention not in ATTENTION:
      raise UserError(f"model.attention={m.attention!r}; use one of {', '.join(ATTENTION)}")
    if m.attention == "cudnn" and not (jax.default_backend() == "gpu" and self._half_precision()):
      raise UserError(f"model.attention=cudnn needs a CUDA GPU and train.compute_dtype=bfloat16 or float16 "
                      f"(here: {jax.default_backend()}, {self.compute_dtype.name}); use auto (cuDNN where it "
                      "applies) or xla")
    self.seq_len = spec.shape[0]
    self.bos = spec.levels
    self.model = Transformer(
        vocab_size=spec.levels, max_len=self.seq_len, num_layers=m.num_layers,
        num_heads=m.num_heads, width=m.width, positions=m.positions, tie_weights=m.tie_weights,
        dropout=m.dropout, dtype=self.compute_dtype, remat=m.remat, attention=self.attention_implementation())

  def attention_implementation(self) -> str:
    """``model.attention``, with ``auto`` resolved: ``cudnn`` on a GPU in bfloat16 / float16, else ``xla``."""
    choice = self.config.model.attention
    if choice != "auto":
      return choice
    return "cudnn" if self._half_precision() and jax.default_backend() == "gpu" else "xla"

  def _half_precision(self) -> bool:
    """Whether the networks compute in bfloat16 / float16 (what cuDNN's attention takes)."""
    return self.compute_dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))

  def shift_right(self, x: jax.Array) -> jax.Array:
    """Model inputs ``(BOS, x_0, ..., x_{T-2})`` of targets ``x`` int ``[B, T]``."""
    bos = jnp.full((x.shape[0], 1), self.bos, x.dtype)
    return jnp.concatenate([bos, x[:, :-1]], axis=1)

  def logits(self, params: Params, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Logits ``[B, T, V]`` (in the compute dtype) of ``p(x_t | x_<t)`` for targets ``x`` int ``[B, T]``.

    Dropout is active iff an ``rng`` is given and ``model.dropout > 0``.
    """
    train = rng is not None and self.model.dropout > 0
    logits, _ = self.model.apply({"params": params["model"]}, self.shift_right(x),
                                 deterministic=not train, rngs={"dropout": rng} if train else None)
    return logits

  def token_nll(self, params: Params, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """``-log p(x_t | x_<t)`` in nats, ``[B, T]``."""
    return losses.categorical_nll(self.logits(params, x, rng), x)

  def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, State]:
    variables = self.model.init(rng, self.shift_right(jnp.asarray(batch["x"], jnp.int32)))
    return {"model": variables["params"]}, {}

  def update_groups(self) -> Sequence[UpdateGroup]:
    def loss_fn(params, state, batch, rng):
      nats = jnp.mean(self.token_nll(params, batch["x"], rng))
      return nats, ({"nats_per_char": nats, "bits_per_char": nats / math.log(2.0)}, state)

    return [UpdateGroup("model", loss_fn)]

  def eval_metrics(self, params: Params, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-example ``[B]``: ``nll_nats`` (nats per window), ``bits_per_dim`` = ``bits_per_char``."""
    nll = jnp.sum(self.token_nll(params, batch["x"]), axis=1)
    bits = nats_to_bits_per_dim(nll, self.seq_len)
    return {"nll_nats": nll, "bits_per_dim": bits, "bits_per_char": bits}

  def sample(self, params: Params, state: State, rng: jax.Array, num: int) -> jax.Array:
    """``num`` unconditional sequences int32 ``[num, T]`` (cached generation)."""
    return self.generate(params, rng, num, **self.sampling_controls())

  def generate(self, params: Params, rng: jax.Array, num: int, *, length: int | None = None,
               cached: bool = True, temperature=1.0, top_k: int = 0, top_p=1.0) -> jax.Array:
    """``num`` sequences of ``length`` (default ``T``) tokens from ``BOS``: int32 ``[num, length]``.

    ``cached=True``: one ``lax.scan`` step per token on a ``KVCache`` of shape
    ``[num, length, H, W/H]`` per layer. ``cached=False``: a ``lax.fori_loop`` that reruns the
    full causal forward pass on the ``[num, length]`` buffer at every step (``O(length^2)``
    token evaluations). Step ``t`` samples with ``fold_in(rng, t)`` in both.
    """
    length = self.seq_len if length is None else length
    if not 1 <= length <= self.seq_len:
      raise UserError(f"generation length {length} is outside 1..{self.seq_len} (data.seq_len)")
    variables = {"params": params["model"]}

    def draw(t, logits):
      return sampling.sample_logits(jax.random.fold_in(rng, t), logits, temperature=temperature,
                                    top_k=top_k, top_p=top_p)

    if cached:
      head_dim = self.model.width // self.model.num_heads
      caches = [KVCache.zeros(num, length, self.model.num_heads, head_dim, self.compute_dtype)
                for _ in range(self.model.num_layers)]

      def step(carry, t):
        token, caches = carry
        logits, caches = self.model.apply(variables, token[:, None], caches=caches, index=t)
        token = draw(t, logits[:, 0])
        return (token, caches), token

      start = jnp.full((num,), self.bos, jnp.int32)
      _, tokens = jax.lax.scan(step, (start, caches), jnp.arange(length))
      return tokens.T

    def body(t, buffer):  # buffer [num, length + 1]: BOS then the tokens drawn so far
      logits, _ = self.model.apply(variables, buffer[:, :length])
      token = draw(t, jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False))
      return buffer.at[:, t + 1].set(token)

    buffer = jnp.zeros((num, length + 1), jnp.int32).at[:, 0].set(self.bos)
    return jax.lax.fori_loop(0, length, body, buffer)[:, 1:]
