"""Character-level GPT on the embedded Python-stdlib corpus (``text/pystdlib``).

python -m jaxgen.main --config=configs/transformer.py --workdir=runs/transformer
python -m jaxgen.main --config=configs/transformer.py --workdir=runs/transformer --mode=sample \
    --config.sample.temperature=0.5 --config.sample.top_k=10
Shakespeare (from a prepared tfds directory):
  --config.data.name=tiny_shakespeare --config.data.data_dir=...
Rotary positions: --config.model.positions=rotary.

The model and optimizer are the transformer family's defaults (``jaxgen/families/transformer.py``),
those of nanoGPT's CPU "baby GPT" (4 layers, 4 heads, width 128, no dropout, AdamW with warm-up and
cosine decay); this config adds its data and loop (context 64, batch 12, 2000 steps). Reports the
held-out NLL in nats per sequence (``nll_nats``) and bits per character.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("transformer")
  c.data.name = "text/pystdlib"
  c.data.seq_len = 64  # T: characters per example (the context)
  c.data.stride = 16  # training windows start every `stride` characters (test windows: every T)

  c.train.steps = 2000
  c.train.batch_size = 12
  c.train.checkpoint_every = 1000
  c.eval.samples.every = 1000
  c.train.ema_decay = 0.0  # as the reference: evaluate the trained weights themselves

  c.sample.num = 4
  return c
