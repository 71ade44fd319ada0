"""Generation speed of the transformer: KV-cached vs naive (full recomputation) sampling.

Both generate ``length`` tokens from ``BOS`` in one compiled loop (``TransformerFamily.generate``)
with the same key, so they draw the same tokens; the model is configs/transformer.py's
(4 layers, 4 heads, width 128) with a context of ``length`` and random weights (speed does not
depend on the weights). Times are the median of ``repeats`` runs after compilation; the target is
cached >= 10x faster than naive at 256 tokens.

python experiments/benchmarks/sampling_transformer.py [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import runpy

import jax
import numpy as np

from jaxgen import families
from jaxgen.data.spec import DataSpec
from jaxgen.data.text import ASCII_VOCAB
from jaxgen.timing import median_seconds, peak_memory

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "transformer.py"


def run(quick: bool = False) -> list[dict]:
  """One row ``{name, tokens_per_s_cached, tokens_per_s_naive, speedup, peak_memory}``, batch of one
  sequence (``peak_memory``: ``jaxgen.timing.peak_memory`` after it)."""
  length = 64 if quick else 256
  config = runpy.run_path(str(CONFIG))["get_config"]()
  config.data.seq_len = length
  spec = DataSpec(name="benchmark", modality="text", shape=(length,), levels=len(ASCII_VOCAB),
                  vocab=ASCII_VOCAB)
  family = families.build(config, spec)
  params, _ = family.init(jax.random.key(0), {"x": np.zeros((1, length), np.int32)})
  fns = {cached: jax.jit(lambda p, k, cached=cached: family.generate(
      p, k, 1, cached=cached, temperature=1.0, top_k=0, top_p=0.95)) for cached in (True, False)}
  key = jax.random.key(1)
  assert (np.asarray(fns[True](params, key)) == np.asarray(fns[False](params, key))).all()
  seconds = {cached: median_seconds(fn, params, key, repeats=3) for cached, fn in fns.items()}
  return [{
      "name": f"transformer 4L/4H/128w, {length} tokens",
      "tokens_per_s_cached": length / seconds[True],
      "tokens_per_s_naive": length / seconds[False],
      "speedup": seconds[False] / seconds[True],
      "peak_memory": peak_memory(),
  }]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  for row in run(parser.parse_args().quick):
    print(f"{row['name']}: cached {row['tokens_per_s_cached']:.0f} tok/s, "
          f"naive {row['tokens_per_s_naive']:.0f} tok/s, speedup {row['speedup']:.1f}x, "
          f"peak memory {row['peak_memory']}")


if __name__ == "__main__":
  main()
