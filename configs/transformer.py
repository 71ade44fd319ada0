"""Character-level GPT on the embedded Python-stdlib corpus (``text/pystdlib``).

python -m jaxgen.main --config=configs/transformer.py --workdir=runs/transformer
python -m jaxgen.main --config=configs/transformer.py --workdir=runs/transformer --mode=sample \
    --config.sample.temperature=0.5 --config.sample.top_k=10
Shakespeare (from a prepared tfds directory):
  --config.data.name=tiny_shakespeare --config.data.data_dir=...
Rotary positions: --config.model.positions=rotary.

The model and optimizer are those of nanoGPT's CPU "baby GPT" (4 layers, 4 heads, width 128,
context 64, batch 12, no dropout, AdamW with warm-up and cosine decay, 2000 steps). Reports the
held-out NLL in nats per sequence and bits per character.
"""

from jaxgen import config_defaults


def get_config():
  c = config_defaults.base()
  c.data.name = "text/pystdlib"
  c.data.seq_len = 64  # T: characters per example (the context)
  c.data.stride = 16  # training windows start every `stride` characters (test windows: every T)

  c.model.family = "transformer"
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.positions = "learned"  # learned | rotary
  c.model.tie_weights = True
  c.model.dropout = 0.0

  c.optim.model = config_defaults.optimizer(
      name="adamw", learning_rate=1e-3, b2=0.99, weight_decay=0.1, schedule="warmup_cosine",
      warmup_steps=100, end_learning_rate=1e-4, grad_clip_norm=1.0)

  c.train.steps = 2000
  c.train.batch_size = 12
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.ema_decay = 0.0  # as the reference: evaluate the trained weights themselves

  c.sample.num = 4
  c.sample.temperature = 1.0
  c.sample.top_k = 0  # 0 disables
  c.sample.top_p = 1.0  # 1.0 disables

  c.eval.batch_size = 256
  return c
