"""One accelerator check of the whole framework, in one process, printed as it goes.

    experiments/benchmarks/gpu_check.sh                 # on a GPU (under 8 minutes on one H100 / H200)
    python experiments/benchmarks/gpu_check.py --dry_run  # tiny sizes, a CPU test of the script

Sections, each in its own ``try`` (a failure prints one ``error:`` row and the check goes on), all
under one wall-clock budget (``--time_budget``; a section that would start after it prints
``skipped``):

1. every registered family trains ``--steps`` steps of its own config (``configs/<family>.py``;
   the two-stage families on the ``vae`` / ``vqvae`` run just trained) through the trainer's compiled
   step and real input pipeline: compile seconds and ms per step after the first;
2. the transformer at GPT-2-small size (12 layers, width 768, 12 heads, context 1024, vocabulary
   50304, bfloat16, AdamW) on random tokens: tokens/s and MFU = achieved / peak bf16 FLOP/s, with
   ``6 N + 12 L T W`` FLOPs per token (``N`` parameters without the position table, ``W`` the
   width: the PaLM / nanoGPT count, attention's causal half counted whole), and after the large
   models the bytes its compiled step moves, by op and by source (``hlo_bytes.py``; ``--hlo_top``);
3. the DDPM U-Net at CIFAR-10 size (32x32x3, Ho et al.: 128 channels, ch_mult 1,2,2,2, 2 blocks,
   attention at 16x16; batch 128) on random images: images/s;
4. FID of 10k vs 10k 2048-d random features (``jaxgen.evaluation.gaussian_stats`` +
   ``frechet_distance``): seconds;
5. only when named in ``--sections`` (``glow_scan``): ``configs/glow_cifar10.py``'s Glow (width 512,
   batch 16) with its K steps per level unrolled (K = 8) and as one ``nn.scan``
   (``model.scan_steps``; K = 8 and the paper's 32): compile seconds and ms per step of each, the
   figures that decide whether the paper configs should scan on an accelerator (on XLA:CPU the
   scan compiles in seconds but steps 16x slower: ``docs/benchmarks.md``).

``--dry_run`` (the CPU test): the family rows and the U-Net row only trace and lower their step
(XLA:CPU compiles of 18 models would take minutes; the ``vae`` / ``vqvae`` rows also initialise and
save the state a two-stage family loads), the GPT row runs a 1-layer model, FID 500 x 64 features.

Every row gives the peak memory so far: the device's ``peak_bytes_in_use`` (``memory_stats()``) on
an accelerator, the process's peak RSS on a CPU; the peak is never reset, so rows run small to large.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # hlo_bytes, beside this script
import hlo_bytes  # noqa: E402

from jaxgen import checkpoint as checkpoint_lib  # noqa: E402
from jaxgen import config_defaults, evaluation, families, optim, parallel, train  # noqa: E402
from jaxgen.data.spec import DataSpec  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Dense bf16 peak FLOP/s by device kind (substring, first match): NVIDIA's data sheets.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L4", 121e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v4", 275e12))
#: Two-stage families train on the workdir of another family's run: (config field, that family).
STAGE_ONE = {"latent_diffusion": ("model.autoencoder_workdir", "vae"), "vqvae_prior": ("model.vqvae_workdir", "vqvae")}
GPT2, UNET, FID, GLOW = "gpt2_small", "unet_cifar", "fid_10k", "glow_scan"
SECTIONS = ("families", GPT2, UNET, FID)  # the check's parts by default, in the order they run
OPTIONAL = (GLOW,)  # run only when --sections names them (after the default ones)
KNOWN = SECTIONS + OPTIONAL
STAGE_ONE_OF = {stage_one for _, stage_one in STAGE_ONE.values()}  # the families whose run a later one loads


def say(*parts) -> None:
  print(*parts, flush=True)


class Budget:
  """The wall-clock guard: ``left()`` seconds of ``total`` since construction."""

  def __init__(self, total: float):
    self.start, self.total = time.perf_counter(), total

  def left(self) -> float:
    return self.total - (time.perf_counter() - self.start)


def run_section(budget: Budget, name: str, fn, min_left: float = 0.0) -> None:
  """``fn()`` returns the row's cells after ``name``; an exception is one ``error:`` row."""
  if budget.left() <= min_left:
    say(f"| {name} | skipped: time budget ({budget.total:.0f} s) spent |")
    return
  try:
    cells = fn()
    say("| " + " | ".join([name, *cells, peak_memory()]) + " |")
  except Exception as e:  # the check goes on: one line per failure, the traceback on stderr
    traceback.print_exc(file=sys.stderr)
    say(f"| {name} | error: {type(e).__name__}: {' '.join(str(e).split())[:300]} |")


def timed_steps(step, ts, batches, steps: int):
  """Compiles and runs ``step`` (the trainer's): ``(state, compile seconds, seconds per step)`` over
  ``steps`` steps after the first; at most two steps in flight (as the trainer)."""
  t = time.perf_counter()
  ts, metrics = step(ts, next(batches))
  jax.block_until_ready((ts, metrics))
  compile_s = time.perf_counter() - t
  t, previous = time.perf_counter(), None
  for _ in range(steps):
    ts, metrics = step(ts, next(batches))
    jax.block_until_ready(previous)
    previous = metrics
  jax.block_until_ready((ts, metrics))
  return ts, compile_s, (time.perf_counter() - t) / max(steps, 1)


def lowered(exp: train.Experiment, batch) -> str:
  """Traces and lowers the trainer's step without compiling it: the dry run's check of a model."""
  t = time.perf_counter()
  train.make_train_step(exp).lower(exp.abstract_state(), batch)
  return f"lowered in {time.perf_counter() - t:.1f} s"


def train_family(name: str, steps: int, overrides: dict, workdirs: dict[str, str], root: str,
                 lower_only: bool) -> list[str]:
  """``steps + 1`` steps of ``configs/<name>.py``; a stage-one family saves its state for the later stage.
  ``lower_only``: lowers the step instead (and initialises and saves only a stage-one state)."""
  config = config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"), overrides)
  if name in STAGE_ONE:
    key, stage_one = STAGE_ONE[name]
    config_defaults.apply_overrides(config, {key: workdirs[stage_one]})
  with config.unlocked():
    config.train.steps = steps + 1
  workdir = workdirs[name] = os.path.join(root, name)
  exp = train.setup(config, workdir)
  row = [config.data.name, str(config.train.batch_size)]
  if lower_only:
    row += [lowered(exp, parallel.global_batch(exp.data.train_batch(0), exp.mesh)), "-"]
    if name not in STAGE_ONE_OF:
      return row
  ckpt = checkpoint_lib.Checkpointer(workdir, 1, config)
  try:
    ts = train.init_or_restore(exp, ckpt)
    train.save_config(config, workdir)
    if lower_only:
      ckpt.save(1, ts)
      return row
    train.save_config(config, workdir)
    batches = exp.data.iterate_train(0, transform=lambda b: parallel.global_batch(b, exp.mesh))
    try:
      ts, compile_s, per_step = timed_steps(train.make_train_step(exp), ts, (b for _, b in batches), steps)
    finally:
      batches.close()
    if name in STAGE_ONE_OF:
      ckpt.save(steps + 1, ts)
  finally:
    ckpt.close()
  return row + [f"{compile_s:.1f}", f"{1e3 * per_step:.2f}"]


class RandomData:
  """Random training batches of ``spec`` (what ``train.Experiment`` reads: ``spec``, ``train_batch``)."""

  def __init__(self, spec: DataSpec, batch_size: int):
    self.spec, self.batch_size = spec, batch_size

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    if self.spec.is_discrete:
      return {"x": rng.integers(0, self.spec.levels, (self.batch_size, *self.spec.shape), dtype=np.int32)}
    return {"x": rng.uniform(-1, 1, (self.batch_size, *self.spec.shape)).astype(np.float32)}

  def batches(self, mesh):
    step = 0
    while True:
      yield parallel.global_batch(self.train_batch(step), mesh)
      step += 1


def synthetic_run(config, spec: DataSpec, steps: int, root: str, lower_only: bool = False, hlo: bool = False):
  """The trainer's step on random data of ``spec``: ``(experiment, compile s, s per step, the
  compiled step's optimised HLO text if ``hlo`` else None)``; ``lower_only``: ``(experiment,
  "lowered in ... s", None, None)``."""
  family = families.build(config, spec)
  mesh = parallel.make_mesh()
  data = RandomData(spec, config.train.batch_size)
  exp = train.Experiment(config, root, mesh, data, family, optim.optimizers(config, family.networks), [])
  if lower_only:
    return exp, lowered(exp, next(data.batches(mesh))), None, None
  ckpt = checkpoint_lib.Checkpointer(os.path.join(root, f"{config.model.family}_{time.time_ns()}"), 1)
  try:
    ts = train.init_or_restore(exp, ckpt)
  finally:
    ckpt.close()
  step = train.make_train_step(exp)
  ts, compile_s, per_step = timed_steps(step, ts, data.batches(mesh), steps)
  text = step.lower(ts, next(data.batches(mesh))).compile().as_text() if hlo else None  # cached: just run
  del ts
  return exp, compile_s, per_step, text


def peak_flops(kind: str) -> float | None:
  return next((peak for name, peak in PEAK_BF16 if name.lower() in kind.lower()), None)


def gpt2_small(args, root: str, profile: dict) -> list[str]:
  """The GPT-2 row; with ``--hlo_top``, ``profile["hlo"]`` = its compiled step's HLO text."""
  c = config_defaults.base("transformer")
  size = dict(num_layers=1, num_heads=2, width=16) if args.dry_run else dict(num_layers=12, num_heads=12, width=768)
  seq_len, vocab = (16, 32) if args.dry_run else (1024, 50304)
  c.model.update(size, attention=args.attention)
  c.train.batch_size = args.gpt_batch
  c.train.compute_dtype = "bfloat16"
  c.train.steps = args.big_steps + 1
  c.train.ema_decay = 0.0
  c.optim.model.decay_steps = 1000
  spec = DataSpec("random_tokens", "text", (seq_len,), levels=vocab)
  exp, compile_s, per_step, profile["hlo"] = synthetic_run(c, spec, args.big_steps, root, hlo=args.hlo_top > 0)
  params = exp.abstract_state().params["model"]
  n = sum(int(np.prod(leaf.shape)) for k, sub in params.items() if k != "pos_embed" for leaf in jax.tree.leaves(sub))
  flops_per_token = 6 * n + 12 * c.model.num_layers * seq_len * c.model.width
  tokens_per_s = c.train.batch_size * seq_len / per_step
  kind = jax.devices()[0].device_kind
  peak = peak_flops(kind)
  mfu = f"{100 * tokens_per_s * flops_per_token / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s" if peak else "n/a (peak unknown)"
  return [f"{n / 1e6:.1f}M params, batch {c.train.batch_size} x {seq_len}, {exp.family.attention_implementation()} "
          f"attention", f"compile {compile_s:.1f} s", f"{1e3 * per_step:.1f} ms/step",
          f"{tokens_per_s:,.0f} tokens/s", f"MFU {mfu}"]


def unet_cifar(args, root: str) -> list[str]:
  c = config_defaults.base("ddpm")
  if args.dry_run:
    c.model.unet.update(channels=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
    shape = (8, 8, 3)
  else:
    c.model.unet.update(channels=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1)
    shape = (32, 32, 3)
  c.train.batch_size = args.unet_batch
  c.train.steps = args.big_steps + 1
  c.train.ema_decay = 0.9999
  spec = DataSpec("random_images", "image", shape, levels=256)
  if families.FAMILIES.get("ddpm").mixed_precision:
    c.train.compute_dtype = "bfloat16"
  exp, compile_s, per_step, _ = synthetic_run(c, spec, args.big_steps, root, lower_only=args.dry_run)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(exp.abstract_state().params))
  size = f"{n / 1e6:.1f}M params, batch {c.train.batch_size} x {'x'.join(map(str, shape))}, {c.train.compute_dtype}"
  if per_step is None:
    return [size, compile_s]
  return [size, f"compile {compile_s:.1f} s", f"{1e3 * per_step:.1f} ms/step", f"{c.train.batch_size / per_step:,.0f} images/s"]


def fid(args) -> list[str]:
  n, dim = (500, 64) if args.dry_run else (10000, 2048)
  rng = np.random.default_rng(0)
  mix = np.eye(dim) + 0.05 * rng.standard_normal((dim, dim))
  real = np.abs(rng.standard_normal((n, dim)) @ mix).astype(np.float32)
  fake = np.abs(rng.standard_normal((n, dim)) @ mix * 1.02 + 0.01).astype(np.float32)

  def once():
    return evaluation.frechet_distance(*evaluation.gaussian_stats(real), *evaluation.gaussian_stats(fake))

  once()  # compiles
  t = time.perf_counter()
  value = once()
  return [f"{n} vs {n} x {dim} features", f"{time.perf_counter() - t:.2f} s end to end", f"FID {value:.4g}"]


def glow_scan(args, root: str) -> list[str]:
  """``glow_cifar10``'s step unrolled at K = 8, scanned at K = 8 and 32 (section 5)."""
  cells = []
  spec = DataSpec("random_images", "image", (8, 8, 3) if args.dry_run else (32, 32, 3), levels=256,
                  value_range=(-1.0, 1.0), dequantized=True)
  for k, scan in ((8, False), (8, True), (32, True)):
    c = config_defaults.load(os.path.join(ROOT, "configs", "glow_cifar10.py"))
    c.model.update(steps_per_level=1 if args.dry_run else k, scan_steps=scan, **({"hidden": 8} if args.dry_run else {}))
    c.train.update(batch_size=args.glow_batch, steps=args.big_steps + 1, ema_decay=0.0)
    _, compile_s, per_step, _ = synthetic_run(c, spec, args.big_steps, root, lower_only=args.dry_run)
    timing = compile_s if per_step is None else f"compile {compile_s:.1f} s, {1e3 * per_step:.1f} ms/step"
    cells.append(f"K={k} {'scan' if scan else 'unrolled'}: {timing}")
  shape = "x".join(map(str, spec.shape))
  return [f"{c.model.num_levels} levels, width {c.model.hidden}, batch {args.glow_batch} x {shape}", *cells]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dry_run", action="store_true", help="tiny sizes and 2 steps: a CPU test of the script")
  parser.add_argument("--time_budget", type=float, default=450.0, help="seconds; later sections are skipped")
  parser.add_argument("--steps", type=int, default=100, help="timed training steps of every family")
  parser.add_argument("--big_steps", type=int, default=20, help="timed steps of the GPT-2 and U-Net rows")
  parser.add_argument("--gpt_batch", type=int, default=24,
                      help="GPT-2-small sequences per step (24: the best MFU of 8, 16, 24, 32 on an H100)")
  parser.add_argument("--unet_batch", type=int, default=128, help="U-Net images per step")
  parser.add_argument("--glow_batch", type=int, default=16, help="Glow images per step (glow_scan)")
  parser.add_argument("--attention", default="auto", help="the transformer's model.attention: auto | xla | cudnn")
  parser.add_argument("--hlo_top", type=int, default=12,
                      help="sources in the GPT-2 step's byte table (hlo_bytes.py; 0: no table)")
  parser.add_argument("--reserve", type=float, default=130.0,
                      help="seconds of the budget the family rows leave to the large models")
  parser.add_argument("--families", default="", help="comma-separated subset (default: every registered family)")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated subset of {','.join(KNOWN)} (e.g. gpt2_small to compare "
                           f"XLA flags; {','.join(OPTIONAL)} only when named)")
  args = parser.parse_args(argv)
  sections = set(args.sections.split(","))
  if sections - set(KNOWN):
    parser.error(f"--sections: unknown {sorted(sections - set(KNOWN))}; choose from {','.join(KNOWN)}")
  if args.dry_run:
    args.steps, args.big_steps, args.gpt_batch, args.unet_batch, args.glow_batch = 1, 2, 4, 4, 2
  budget = Budget(args.time_budget)
  reserve = 0.0 if args.dry_run else args.reserve
  device = jax.devices()[0]
  say(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
  say(f"device kind: {device.device_kind}; bf16 peak: {peak_flops(device.device_kind) or 'unknown'} FLOP/s")

  names = [n for n in args.families.split(",") if n] or families.FAMILIES.names()
  names = names if "families" in sections else []
  names = [n for n in names if n not in STAGE_ONE] + [n for n in names if n in STAGE_ONE]  # stage 1 first
  tiny = {"train.batch_size": 8} if args.dry_run else {}
  common = {"train.progress_bar": False, "eval.metrics": (), "train.checkpoint_every": 0, "train.log_every": 0}
  with tempfile.TemporaryDirectory() as root:
    workdirs: dict[str, str] = {}
    say(f"\n## families: {args.steps} timed steps after the first (compile) step\n")
    say("| family | data | batch | compile s | ms/step | peak memory |")
    say("| --- | --- | --- | --- | --- | --- |")
    for name in names:
      run_section(budget, name, lambda name=name: train_family(name, args.steps, {**common, **tiny}, workdirs, root,
                                                               lower_only=args.dry_run), min_left=reserve)
    say("\n## large models\n")
    say("| section | size | compile | step | throughput | ... | peak memory |")
    say("| --- | --- | --- | --- | --- | --- | --- |")
    profile = {}  # the GPT-2 row's compiled step, for its byte table
    for name, fn, min_left in ((GPT2, lambda: gpt2_small(args, root, profile), 60),
                               (UNET, lambda: unet_cifar(args, root), 45), (FID, lambda: fid(args), 10),
                               (GLOW, lambda: glow_scan(args, root), 60)):
      if name in sections:
        run_section(budget, name, fn, min_left=min_left)
    if profile.get("hlo"):
      say(f"\n## {GPT2}: where its compiled step moves bytes (hlo_bytes.py)\n")
      hlo_bytes.print_tables(hlo_bytes.entry_ops(profile["hlo"]), args.hlo_top, say)
  say(f"\ntotal {time.perf_counter() - budget.start:.0f} s")


if __name__ == "__main__":
  main()
