"""WaveNet on ``audio/tones`` (synthesized 8 kHz clips, 256 mu-law codes): a few CPU minutes.

  python -m jaxgen.main --config=configs/wavenet.py --workdir=runs/wavenet
  python -m jaxgen.main --config=configs/wavenet.py --workdir=runs/wavenet --mode=sample \
      --config.sample.label=1 --config.sample.temperature=0.9   # .wav chirps

Dilations ``1, 2, ..., 2^(dilation_cycle-1)`` repeated ``num_cycles`` times (receptive field
``2 + num_cycles (2^dilation_cycle - 1)`` samples for kernel 2). ``model.conditional`` adds global
conditioning on the clip kind (tone, chirp, pluck, tremolo). Sampling uses Fast-WaveNet queues.
The paper's setting (16 kHz speech, dilations up to 512 in several cycles, 256 mu-law classes)
is ``--config.model.dilation_cycle=10 --config.model.num_cycles=3`` with wider channels.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base()
  c.data.name = "audio/tones"
  c.data.seq_len = 512  # samples per clip (64 ms at 8 kHz)

  c.model.family = "wavenet"
  c.model.residual_channels = 32
  c.model.dilation_channels = 32
  c.model.skip_channels = 64
  c.model.kernel_size = 2
  c.model.dilation_cycle = 8  # dilations 1..128
  c.model.num_cycles = 1
  c.model.conditional = True  # global conditioning on the clip kind

  c.optim.default.learning_rate = 1e-3
  c.optim.default.grad_clip_norm = 1.0
  c.train.steps = 1000
  c.train.batch_size = 8
  c.train.checkpoint_every = 500
  c.train.ema_decay = 0.999

  c.sample.num = 8
  c.sample.temperature = 1.0
  c.sample.top_k = 0  # 0 disables
  c.sample.top_p = 1.0  # 1 disables
  c.sample.label = -1  # conditional models: the clip kind to draw (-1 = uniform)
  return c
