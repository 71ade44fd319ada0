"""WaveNet on ``spoken_digit`` (Free Spoken Digit Dataset, 8 kHz speech), conditioned on the digit.

Needs the data set prepared once (network access, TensorFlow and pydub; see the README), then:

  python -m jaxgen.main --config=configs/wavenet_spoken_digit.py --workdir=runs/wavenet_fsdd
  python -m jaxgen.main --config=configs/wavenet_spoken_digit.py --workdir=runs/wavenet_fsdd \
      --mode=sample --config.sample.label=7   # .wav files of a spoken "seven"

Data (``jaxgen.data.tfds_audio``): FSDD's official split (recordings 0-4 of every speaker and digit
are the test set), each clip's first ``data.seq_len`` = 4096 samples (0.51 s; shorter clips are
zero-padded with silence), 256 mu-law codes. Model: the paper's stack of dilations
``1, 2, ..., 512`` repeated 3 times (receptive field ``2 + 3 * 1023 = 3071`` samples, 0.38 s),
global conditioning on the digit label (``model.conditional``, from wavenet.py; ``sample.label``
picks the digit, -1 draws digits uniformly at random), sized for one accelerator; a
GPU/TPU run, not a CPU one.
"""

from __future__ import annotations

import ml_collections

from configs import wavenet


def get_config() -> ml_collections.ConfigDict:
  c = wavenet.get_config()
  c.data.name = "spoken_digit"
  c.data.seq_len = 4096  # samples per clip (0.51 s at 8 kHz)

  c.model.residual_channels = 64
  c.model.dilation_channels = 64
  c.model.skip_channels = 256
  c.model.dilation_cycle = 10  # dilations 1..512
  c.model.num_cycles = 3

  c.optim.default.schedule = "warmup_cosine"  # the family's 1e-3 (clipped at norm 1), cosine to 1e-5
  c.optim.default.warmup_steps = 1000
  c.optim.default.end_learning_rate = 1e-5
  c.train.steps = 50_000
  c.train.batch_size = 16
  c.train.checkpoint_every = 5000
  c.eval.samples.every = 10_000
  c.eval.heldout.every = 10_000
  c.train.ema_decay = 0.9999

  c.sample.num = 10
  c.eval.batch_size = 32
  return c
