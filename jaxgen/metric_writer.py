"""Scalar metrics to JSONL (``metrics.jsonl``) and TensorBoard event files, from process 0 only.

TensorBoard events are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from tensorboardX import SummaryWriter  # imported lazily: processes > 0 never write

    self._jsonl = open(os.path.join(workdir, filename), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
    if not self.active:
      return
    scalars = {prefix + k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()
