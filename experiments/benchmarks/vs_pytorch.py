"""jaxgen's training step against its PyTorch equivalent, timed in the same run (issue 16).

  pip install -e ".[bench]"          # PyTorch (CPU), only for this benchmark
  python experiments/benchmarks/vs_pytorch.py [--only=dcgan,dcgan_layers,transformer,vae] [--steps=N] [--rounds=3]
  python experiments/benchmarks/vs_pytorch.py --only=transformer,vae --torch_threads=1 --rounds=5
  python experiments/benchmarks/vs_pytorch.py --only=transformer --jax_devices=1   # jaxgen on one device

Each section times jaxgen's trainer step (``train_throughput.trainer_step``: the compiled step of
``python -m jaxgen.main --config=...`` on its real input pipeline, EMA and metrics included, on as
many XLA:CPU devices as that command picks: ``--jax_devices=auto``, ``jaxgen.cpu_devices``; the
transformer gets one per core, the others one) and a PyTorch step written to do the same work (same layers, sizes, batch, optimizer;
XLA:CPU on its own pool of every core). The two are timed alternately, ``--rounds`` rounds of
``--steps`` steps after a warm-up each, and the best round of each is kept. PyTorch is timed at
each of ``--torch_threads`` intra-op thread counts (default: its own default, every core, and 1:
on a machine shared with other jobs its OpenMP threads can stall at every barrier, tens of times
slower than one thread), and the ratio is ``fastest PyTorch ms / jaxgen ms`` (> 1: jaxgen is
faster). Beside it, the CPU ratio: the process CPU time per step (every thread's) of that PyTorch
setting over jaxgen's, a figure the machine's other jobs disturb less than wall time (spinning
thread pools count in it). Both parameter counts and the peak memory
(``jaxgen.timing.peak_memory``; both frameworks live in the process) are printed.

* ``dcgan``: pytorch/examples' ``dcgan`` at 64x64x3 (Radford et al. 2016: ``nz = 100``, ``ngf =
  ndf = 64``, batch 64, BCE, Adam(2e-4, b1 = 0.5), one D and one G step, 6.3M parameters) against
  jaxgen's ``gan`` family on a 64x64x3 ``arrays:`` data set with ``model.width=32`` (6.4M
  parameters: jaxgen's DCGAN has a 3x3 first discriminator layer and output layer, so the widths
  that match the parameter count differ: its model does 1.33x the FLOPs, more of them at 64x64).
* ``dcgan_layers``: the same jaxgen run against a PyTorch module with jaxgen's own layers and
  update (``torch_dcgan_same_layers_step``: 6,411,332 parameters in both), the "same layers"
  equivalent issue 16's targets ask for.
* ``transformer``: ``configs/transformer.py`` (nanoGPT's CPU "baby GPT": 4 pre-LayerNorm blocks, 4
  heads, width 128, MLP 512 with tanh-GELU, biases, learned positions, head tied to the token
  embedding of ``V + 1`` rows, context 64, batch 12, no dropout; AdamW(b2 = 0.99, weight decay 0.1
  on matrices only) with warm-up + cosine learning rate and global-norm clipping at 1) as a
  nanoGPT-style PyTorch module with ``scaled_dot_product_attention(is_causal=True)``.
* ``vae``: ``configs/vae.py`` (MLP VAE on the 8x8 digits: encoder 64-256-256-32, decoder
  16-256-256-64, ReLU, Bernoulli decoder on dynamically binarized pixels, one reparameterised
  sample, batch 64, Adam(1e-3), parameter EMA 0.999 as jaxgen's trainer keeps).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments.benchmarks import train_throughput  # noqa: E402
from jaxgen import config_defaults, cpu_devices  # noqa: E402
from jaxgen.timing import peak_memory  # noqa: E402

CONFIGS = train_throughput.CONFIGS


def torch_dcgan_step(batch: int):
  """pytorch/examples' DCGAN at 64x64x3: returns ``(step(), parameter count)``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn

  nz, ngf, ndf = 100, 64, 64
  gen = nn.Sequential(
      nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
      nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
  disc = nn.Sequential(
      nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
  opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
  bce = nn.BCELoss()
  real = torch.rand(batch, 3, 64, 64) * 2 - 1
  ones, zeros = torch.ones(batch), torch.zeros(batch)

  def step():
    disc.zero_grad()
    fake = gen(torch.randn(batch, nz, 1, 1))
    loss_d = bce(disc(real).view(-1), ones) + bce(disc(fake.detach()).view(-1), zeros)
    loss_d.backward()
    opt_d.step()
    gen.zero_grad()
    loss_g = bce(disc(fake).view(-1), ones)
    loss_g.backward()
    opt_g.step()
    return float(loss_g.detach())

  count = sum(p.numel() for p in [*gen.parameters(), *disc.parameters()])
  return step, count


def torch_ema(params: list, decay: float):
  """jaxgen's parameter EMA (``train.ema_decay``, with its warm-up ``min(decay, (1 + t) / (10 + t))``)
  over PyTorch ``params``: returns ``update()``, to call after each optimizer step."""
  import torch  # pylint: disable=import-outside-toplevel

  ema = [p.detach().clone() for p in params]
  count = {"step": 0}

  def update():
    t = count["step"]
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - min(decay, (1.0 + t) / (10.0 + t)))
    count["step"] += 1

  return update


def torch_dcgan_same_layers_step(batch: int, width: int = 32, latent: int = 100, side: int = 64,
                                 ema_decay: float = 0.999):
  """A PyTorch equivalent of jaxgen's ``gan`` step at 64x64x3 with ``model.width=32`` (the layers of
  ``jaxgen.families.gan``: a 3x3 first discriminator layer, four 4x4 stride-2 convolutions with
  biases and LeakyReLU(0.2), a linear logit; a Dense generator input, BatchNorm + ReLU, four 4x4
  stride-2 transposed convolutions and a 3x3 output convolution with tanh), its update (the
  discriminator on fakes of one ``z`` with the generator's BatchNorm in training mode and no
  gradient, then the generator on a fresh ``z``; non-saturating losses; Adam(2e-4, b1 = 0.5)) and
  the trainer's parameter EMA: returns ``(step(), parameter count)``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn
  from torch.nn import functional as F

  stages = 4  # jaxgen.nn.gan_generator.num_upsamples(64): 64 -> 4
  top = width * 2**stages
  convs = [nn.Conv2d(3, width, 3, 1, 1), nn.LeakyReLU(0.2)]
  for i in range(stages):
    convs += [nn.Conv2d(width * 2**i, width * 2**(i + 1), 4, 2, 1), nn.LeakyReLU(0.2)]
  disc = nn.Sequential(*convs, nn.Flatten(), nn.Linear(top * (side >> stages)**2, 1))
  ups = []
  for i in range(stages, 0, -1):
    ups += [nn.ConvTranspose2d(width * 2**i, width * 2**(i - 1), 4, 2, 1), nn.BatchNorm2d(width * 2**(i - 1)),
            nn.ReLU()]
  gen = nn.Sequential(nn.Linear(latent, top * (side >> stages)**2), nn.Unflatten(1, (top, side >> stages, side >> stages)),
                      nn.BatchNorm2d(top), nn.ReLU(), *ups, nn.Conv2d(width, 3, 3, 1, 1), nn.Tanh())
  params = [*gen.parameters(), *disc.parameters()]
  opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
  ema_update = torch_ema(params, ema_decay)
  real = torch.rand(batch, 3, side, side) * 2 - 1

  def step():
    with torch.no_grad():
      fake = gen(torch.randn(batch, latent))  # BatchNorm in training mode: its running averages move
    # non-saturating: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), then -log sigmoid(D(G(z')))
    loss_d = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = F.softplus(-disc(gen(torch.randn(batch, latent)))).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    ema_update()
    return float(loss_g.detach())

  return step, sum(p.numel() for p in params)


def jaxgen_dcgan(batch: int, tmpdir: str) -> tuple[str, list[str]]:
  """``(config path, overrides)`` of jaxgen's GAN on 64x64x3 random images (an ``arrays:`` file)."""
  path = os.path.join(tmpdir, "images64.npz")
  rng = np.random.default_rng(0)
  np.savez(path, x=rng.integers(0, 256, (4 * batch, 64, 64, 3), dtype=np.uint8))
  return os.path.join(CONFIGS, "gan.py"), [
      f"data.name=arrays:{path}", "model.width=32", "model.latent_dim=100", f"train.batch_size={batch}",
      "train.progress_bar=False", "eval.metrics=heldout"]


def torch_transformer_step(vocab: int, seq_len: int, batch: int, horizon: int):
  """A nanoGPT-style PyTorch equivalent of ``configs/transformer.py``'s model and optimizer:
  returns ``(step(), parameter count)``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn
  from torch.nn import functional as F

  width, heads, layers = 128, 4, 4

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
      self.fc, self.proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
      b, t, _ = x.shape
      q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
      a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      x = x + self.out(a.transpose(1, 2).reshape(b, t, width))
      return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

  class GPT(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Parameter(0.02 * torch.randn(vocab + 1, width))  # row `vocab` is BOS
      self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))
      self.blocks = nn.ModuleList(Block() for _ in range(layers))
      self.ln_f = nn.LayerNorm(width, eps=1e-6)

    def forward(self, tokens):
      x = self.embed[tokens] + self.pos[:tokens.shape[1]]
      for block in self.blocks:
        x = block(x)
      return self.ln_f(x) @ self.embed[:vocab].T  # tied head

  model = GPT()
  decay = [p for p in model.parameters() if p.dim() >= 2]
  no_decay = [p for p in model.parameters() if p.dim() < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.0, betas=(0.9, 0.99), eps=1e-8)
  bos = torch.full((batch, 1), vocab, dtype=torch.long)
  count = {"step": 0}

  def learning_rate(step):  # optax.warmup_cosine_decay_schedule(0, 1e-3, 100, horizon, 1e-4)
    if step < 100:
      return 1e-3 * step / 100
    frac = min(1.0, (step - 100) / max(horizon - 100, 1))
    return 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * frac))

  def step():
    x = torch.randint(0, vocab, (batch, seq_len))
    for group in opt.param_groups:
      group["lr"] = learning_rate(count["step"])
    logits = model(torch.cat([bos, x[:, :-1]], dim=1))
    loss = F.cross_entropy(logits.reshape(-1, vocab), x.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    count["step"] += 1
    return float(loss.detach())

  return step, sum(p.numel() for p in model.parameters())


def torch_vae_step(batch: int, dims: int = 64, hidden: int = 256, latent: int = 16, ema_decay: float = 0.999):
  """A PyTorch equivalent of ``configs/vae.py``'s step: returns ``(step(), parameter count)``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn
  from torch.nn import functional as F

  encoder = nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 2 * latent))
  decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, dims))
  params = [*encoder.parameters(), *decoder.parameters()]
  opt = torch.optim.Adam(params, lr=1e-3)
  ema_update = torch_ema(params, ema_decay)
  intensities = torch.rand(1797, dims)  # the digits' size; [0, 1] intensities

  def step():
    x = torch.bernoulli(intensities[torch.randint(0, len(intensities), (batch,))])  # dynamic binarization
    mean, log_std = encoder(x).chunk(2, dim=-1)
    log_std = log_std.clamp(-10.0, 5.0)
    z = mean + log_std.exp() * torch.randn_like(mean)
    rec = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
    kl = 0.5 * (mean**2 + (2 * log_std).exp() - 1) - log_std  # [B, L]
    loss = -rec.mean() + kl.mean(0).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema_update()
    return float(loss.detach())

  return step, sum(p.numel() for p in params)


def time_torch(step, steps: int, warmup: int) -> tuple[float, float]:
  """``(wall ms, process CPU ms)`` per step of ``steps`` calls of ``step`` after ``warmup``."""
  for _ in range(warmup):
    step()
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    step()
  return 1e3 * (time.perf_counter() - start) / steps, 1e3 * (time.process_time() - cpu) / steps


#: section -> (label, default timed steps per round).
SECTIONS = {"dcgan": ("DCGAN 64x64x3 b64", 5), "dcgan_layers": ("DCGAN same layers b64", 5),
            "transformer": ("transformer 4L/128w b12", 100),
            "vae": ("MLP VAE digits b64", 1000)}


def jaxgen_config(name: str, tmpdir: str) -> tuple[str, list[str]]:
  """``(config path, overrides)`` of a section's jaxgen run."""
  if name.startswith("dcgan"):
    return jaxgen_dcgan(64, tmpdir)
  return os.path.join(CONFIGS, f"{name}.py"), ["train.progress_bar=False"]


def devices_of(config: tuple[str, list[str]], requested: str) -> int:
  """The XLA:CPU devices of a section's jaxgen run (``config``: ``jaxgen_config``'s): ``requested``,
  or for ``auto`` what ``python -m jaxgen.main`` picks for it (``jaxgen.cpu_devices.choose_here``)."""
  if requested != "auto":
    return int(requested)
  return cpu_devices.choose_here(config_defaults.load(*config)).devices or 1


def section(name: str, config: tuple[str, list[str]], steps: int, rounds: int, threads: list[int],
            devices: int) -> dict:
  """Alternating rounds of one section (``config``: ``jaxgen_config``'s): each round times PyTorch at
  each of ``threads`` (intra-op threads), then jaxgen on ``devices`` devices. Returns ``{"label",
  "torch_ms": {threads: best ms}, "jaxgen_ms", params...}``."""
  import torch  # pylint: disable=import-outside-toplevel

  warmup = max(1, steps // 10)
  horizon = rounds * (steps + warmup) + 1
  config, overrides = config
  train_throughput.use_devices(devices)
  torch_ms, jaxgen_ms = {n: [] for n in threads}, []
  torch_cpu, jaxgen_cpu = {n: [] for n in threads}, []
  with train_throughput.trainer_step(config, overrides, horizon) as (run, info):
    if name == "dcgan":
      step, torch_params = torch_dcgan_step(info["batch"])
    elif name == "dcgan_layers":
      step, torch_params = torch_dcgan_same_layers_step(info["batch"])
    elif name == "transformer":
      step, torch_params = torch_transformer_step(info["spec"].levels, info["spec"].shape[0], info["batch"], horizon)
    else:
      step, torch_params = torch_vae_step(info["batch"])
    default_threads = torch.get_num_threads()
    for _ in range(rounds):
      for n in threads:
        torch.set_num_threads(n)
        wall, cpu = time_torch(step, steps, warmup)
        torch_ms[n].append(wall)
        torch_cpu[n].append(cpu)
      torch.set_num_threads(default_threads)
      timing = run(steps, warmup)
      jaxgen_ms.append(timing["ms_per_step"])
      jaxgen_cpu.append(timing["cpu_ms_per_step"])
      cells = ", ".join(f"torch({n} threads) {torch_ms[n][-1]:.2f} ms (CPU {torch_cpu[n][-1]:.2f})" for n in threads)
      print(f"  {name} round: {cells}, jaxgen {jaxgen_ms[-1]:.2f} ms (CPU {jaxgen_cpu[-1]:.2f}); "
            f"load {os.getloadavg()[0]:.1f}", flush=True)
  return {"label": f"{SECTIONS[name][0]} {devices}d", "torch_ms": {n: min(t) for n, t in torch_ms.items()},
          "jaxgen_ms": min(jaxgen_ms), "torch_cpu": {n: min(t) for n, t in torch_cpu.items()},
          "jaxgen_cpu": min(jaxgen_cpu), "torch_params": torch_params, "jaxgen_params": info["params"],
          "memory": peak_memory()}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
  parser.add_argument("--steps", type=int, default=0, help="timed steps per round (0: each section's default)")
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
  parser.add_argument("--torch_threads", default="",
                      help="comma-separated PyTorch thread counts timed in each round (default: torch's own "
                           "default, every core, and 1); the ratio is against the fastest")
  parser.add_argument("--jax_devices", default="auto",
                      help="XLA:CPU devices of jaxgen's step: auto (what python -m jaxgen.main picks for the "
                           "section's config) or a number")
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel

  names = [n for n in args.only.split(",") if n]
  unknown = sorted(set(names) - set(SECTIONS))
  if unknown:
    parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
  threads = [int(n) for n in args.torch_threads.split(",") if n] or sorted({torch.get_num_threads(), 1}, reverse=True)
  rows = []
  with tempfile.TemporaryDirectory() as tmpdir:
    configs = {name: jaxgen_config(name, tmpdir) for name in names}
    devices = {name: devices_of(configs[name], args.jax_devices) for name in names}
    jax.config.update("jax_num_cpu_devices", max(devices.values()))  # before any backend starts
    print(f"torch {torch.__version__} (default {torch.get_num_threads()} threads); jaxgen's XLA:CPU devices "
          f"{devices}; load average {os.getloadavg()[0]:.1f}")
    for name in names:
      rows.append(section(name, configs[name], args.steps or SECTIONS[name][1], args.rounds, threads, devices[name]))
  torch_cols = " ".join(f"{f'PyTorch {n}t ms':>13s}" for n in threads)
  print(f"{'model':28s} {torch_cols} {'jaxgen ms':>10s} {'ratio':>6s} {'CPU ratio':>9s} {'params torch / jaxgen':>22s} "
        f"{'peak memory':>14s}")
  for r in rows:
    best = min(r["torch_ms"], key=r["torch_ms"].get)
    params = f"{r['torch_params'] / 1e6:.3f}M / {r['jaxgen_params'] / 1e6:.3f}M"
    cells = " ".join(f"{r['torch_ms'][n]:13.2f}" for n in threads)
    print(f"{r['label']:28s} {cells} {r['jaxgen_ms']:10.2f} {r['torch_ms'][best] / r['jaxgen_ms']:5.2f}x "
          f"{r['torch_cpu'][best] / r['jaxgen_cpu']:8.2f}x {params:>22s} {r['memory']:>14s}")
  print("ratio = fastest PyTorch ms / jaxgen ms (> 1: jaxgen is faster); CPU ratio = the same PyTorch setting's "
        f"process CPU ms per step / jaxgen's (less sensitive to other jobs); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
