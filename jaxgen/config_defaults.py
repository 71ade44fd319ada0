"""Defaults shared by every config in ``configs/``: each ``get_config()`` starts from ``base()``.

The five public fields, the same in every config: ``seed``, ``data.name``, ``train.steps``,
``train.batch_size``, ``train.checkpoint_every``. The rest is grouped by concern:
``data`` (what to read and how to preprocess), ``model`` (``model.family`` picks the family, the
rest is the family's own), ``optim.<network>`` (one optax optimizer per network, ``optim.default``
for networks without their own entry), ``train`` (loop, checkpoints, logging, EMA), ``sample``
(sampling controls), ``eval`` (metrics).
"""

from __future__ import annotations

import ml_collections


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """One network's optax optimizer: ``name`` in adam|adamw|sgd|rmsprop, schedule, clipping."""
  c = ml_collections.ConfigDict()
  c.name = "adam"
  c.learning_rate = 1e-3
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.weight_decay = 0.0  # adamw only
  c.momentum = 0.9  # sgd / rmsprop
  c.schedule = "constant"  # constant | cosine | warmup_cosine | linear
  c.warmup_steps = 0
  c.end_learning_rate = 0.0  # final value of decaying schedules
  c.grad_clip_norm = 0.0  # clip by global norm when > 0
  c.update(overrides)
  return c


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"  # an embedded set (digits, toy2d/...) or any tensorflow-datasets name
  c.data.train_split = "train"
  c.data.test_split = "test"
  c.data.scale = "[-1,1]"  # images: [-1,1] or [0,1]
  c.data.dequantize = False  # images: uniform dequantization
  c.data.binarize = "none"  # images: none | static | dynamic (Bernoulli with the pixel intensity)
  c.data.num_points = 20000  # toy2d: size of the generated training set
  c.data.data_dir = ""  # tensorflow-datasets data_dir ("" = its default)
  c.data.prefetch = 2  # batches prepared ahead by a background thread

  c.model = ml_collections.ConfigDict()
  c.model.family = ""

  c.optim = ml_collections.ConfigDict()
  c.optim.default = optimizer()

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 64
  c.train.checkpoint_every = 500  # (0 = only at the end)
  c.train.keep_checkpoints = 3
  c.train.log_every = 50  # train metrics to JSONL / TensorBoard (0 = only at the end)
  c.train.sample_every = 500  # PNG grid / scatter (0 = only at the end)
  c.train.eval_every = 0  # periodic evaluation (0 = only at the end)
  c.train.ema_decay = 0.999  # 0 disables EMA (the EMA params are then the params)
  c.train.progress_bar = True

  c.sample = ml_collections.ConfigDict()
  c.sample.num = 64
  c.sample.temperature = 1.0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.num_batches = 0  # held-out batches for the loss / likelihood (0 = the whole split)
  c.eval.num_samples = 1000  # samples drawn for sample-based metrics
  c.eval.metrics = ()  # sample-based: fid, kid, is, precision_recall, density_coverage, mode_coverage
  c.eval.inception_weights = ""  # FID Inception-v3 weights (.pth or converted .npz) for non-digits images
  c.eval.block_size = 1024  # rows per block of the pairwise distances (bounds memory)
  c.eval.pr_k = 3  # neighbours for precision / recall
  c.eval.dc_k = 5  # neighbours for density / coverage
  c.eval.kid_subsets = 100
  c.eval.kid_subset_size = 1000
  c.eval.is_splits = 10
  c.eval.mode_threshold = 3.0  # mode_coverage: high quality within this many stds of a mode
  return c
