"""WaveNet on ``audio/tones`` (synthesized 8 kHz clips, 256 mu-law codes): a few CPU minutes.

  python -m jaxgen.main --config=configs/wavenet.py --workdir=runs/wavenet
  python -m jaxgen.main --config=configs/wavenet.py --workdir=runs/wavenet --mode=sample \
      --config.sample.label=1 --config.sample.temperature=0.9   # .wav chirps

The model is the wavenet family's defaults (``jaxgen/families/wavenet.py``): dilations
``1, 2, ..., 2^(dilation_cycle-1)`` = 1..128 once (receptive field ``2 + num_cycles
(2^dilation_cycle - 1)`` = 257 samples for kernel 2), here with global conditioning on the clip
kind (tone, chirp, pluck, tremolo; ``sample.label`` picks the kind, -1 draws kinds uniformly at
random). Sampling uses Fast-WaveNet queues. The paper's setting (16 kHz speech, dilations up to
512 in several cycles, 256 mu-law classes) is ``--config.model.dilation_cycle=10
--config.model.num_cycles=3`` with wider channels.
"""

from __future__ import annotations

import ml_collections

from jaxgen import config_defaults


def get_config() -> ml_collections.ConfigDict:
  c = config_defaults.base("wavenet")
  c.data.name = "audio/tones"
  c.data.seq_len = 512  # samples per clip (64 ms at 8 kHz)

  c.model.conditional = True  # global conditioning on the clip kind

  c.train.steps = 1000
  c.train.batch_size = 8
  c.sample.num = 8
  return c
