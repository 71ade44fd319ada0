"""Writing samples where a user can look at them, by ``spec.modality``.

image -> PNG grid; points -> PNG scatter over the data density; text -> .txt (and stdout);
audio -> 16-bit PCM .wav (mu-law decoded when the tokens are 256 mu-law codes). Also the 2-D
density plot. Plots use matplotlib's headless Agg backend, chosen here (the one place that draws)
and imported on first use.

Paths are local or remote (``gs://...``): every file is encoded in memory (Pillow, matplotlib and
``wave`` into a ``BytesIO``) and written whole through ``etils.epath``, never with ``open``.
"""

from __future__ import annotations

import io
import math
import os
import wave

import numpy as np
from etils import epath
from PIL import Image

from jaxgen import workdir as workdir_lib
from jaxgen.data.audio import mu_law_decode
from jaxgen.data.spec import DataSpec

#: The modalities :func:`write_samples` can write.
MODALITIES = ("image", "points", "text", "audio")


def _pyplot():
  """``matplotlib.pyplot`` on the headless Agg backend (imported on first use: it is slow)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def to_uint8(images: np.ndarray, spec: DataSpec) -> np.ndarray:
  """Model-space images ``[N, H, W, C]`` in ``spec.value_range`` -> uint8 ``[N, H, W, C]``.

  The inverse of the pipeline's map, so real 8-bit examples come back unchanged: ``round(255 u)``
  of ``u = (x - lo) / (hi - lo)``; for dequantized data (``u = (raw + noise) / levels``) the bin
  ``floor(levels u)``, shown as ``round(255 bin / (levels - 1))``, for samples as for real data.
  """
  lo, hi = spec.value_range
  unit = np.clip((np.asarray(images, np.float32) - lo) / (hi - lo), 0.0, 1.0)
  if spec.dequantized and spec.levels > 1:
    bins = np.minimum(np.floor(unit * spec.levels), spec.levels - 1)
    return np.round(bins * (255.0 / (spec.levels - 1))).astype(np.uint8)
  return np.round(unit * 255.0).astype(np.uint8)


def image_grid(images: np.ndarray, pad: int = 1) -> np.ndarray:
  """uint8 ``[N, H, W, C]`` -> one uint8 ``[rows*(H+pad)+pad, cols*(W+pad)+pad, C]`` grid."""
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
  for i, img in enumerate(images):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
  return grid


def write_file(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` (local or remote) whole or not at all, creating its directory."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_atomic(path, data)


def _savefig(fig, path: str | os.PathLike) -> None:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", bbox_inches="tight")
  write_file(path, buffer.getvalue())


def write_image_grid(images: np.ndarray, spec: DataSpec, path: str | os.PathLike, scale: int = 0) -> None:
  """PNG grid; small images (digits are 8x8) are upscaled with nearest neighbour to be visible."""
  grid = image_grid(to_uint8(images, spec))
  scale = scale or max(1, 256 // grid.shape[0])
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  buffer = io.BytesIO()
  img.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(buffer, format="PNG")
  write_file(path, buffer.getvalue())


def write_scatter(points: np.ndarray, data: np.ndarray | None, path: str | os.PathLike, title: str = "") -> None:
  """Samples ``[N, D]`` against the data ``[M, D]``. ``D >= 2``: dots over a 2-D histogram of the
  data (the density), on the first two coordinates (the title says so when ``D > 2``). ``D = 1``:
  the samples' histogram over the data's, on shared bins of their finite values."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  has_data = data is not None and len(data) > 0
  if points.shape[1] == 1:
    samples, real = points[:, 0], data[:, 0] if has_data else np.zeros(0)
    samples, real = samples[np.isfinite(samples)], real[np.isfinite(real)]
    both = np.concatenate([samples, real])
    bins = np.histogram_bin_edges(both if len(both) else np.zeros(1), bins=60)
    for values, style in ((real, {"color": "0.75", "label": "data"}),
                          (samples, {"histtype": "step", "color": "tab:red", "label": "samples"})):
      if len(values):
        ax.hist(values, bins=bins, density=True, **style)
    ax.legend()
  else:
    if has_data:
      lim = np.abs(data[:, :2]).max() * 1.15
      ax.hist2d(data[:, 0], data[:, 1], bins=120, range=[[-lim, lim], [-lim, lim]], cmap="Greys")
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
    ax.scatter(points[:, 0], points[:, 1], s=3, c="tab:red", alpha=0.6)
    ax.set_aspect("equal")
    if points.shape[1] > 2:
      title = f"{title} (coordinates 0, 1 of {points.shape[1]})"
  ax.set_title(title)
  _savefig(fig, path)
  plt.close(fig)


def write_density_plot(data: np.ndarray, density: np.ndarray, lim: tuple[float, float, float, float],
                       path: str | os.PathLike, title: str = "") -> None:
  """PNG at ``path``: the data ``[N, 2]`` (left, titled ``title``) beside a density ``[S, S]``
  (right; ``density[i, j]`` at cell ``(row i, column j)`` of the box ``lim = (x0, x1, y0, y1)``)."""
  plt = _pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
  left.scatter(data[:, 0], data[:, 1], s=2, alpha=0.5)
  left.set_title(title)
  right.imshow(density, origin="lower", extent=lim, cmap="viridis", aspect="auto")
  right.set_title("model density")
  for ax in (left, right):
    ax.set_xlim(lim[0], lim[1])
    ax.set_ylim(lim[2], lim[3])
  _savefig(fig, path)
  plt.close(fig)


def decode_text(tokens: np.ndarray, spec: DataSpec) -> list[str]:
  """Token rows ``[N, T]`` -> one string each: the characters of ``spec.vocab``, or the token ids
  separated by spaces when the data has no vocabulary (integer token arrays)."""
  if not spec.vocab:
    return [" ".join(str(int(t)) for t in row) for row in np.asarray(tokens)]
  return ["".join(spec.vocab[int(t)] for t in row) for row in np.asarray(tokens)]


def write_wav(codes: np.ndarray, spec: DataSpec, path: str | os.PathLike) -> None:
  """One clip of tokens ``[T]`` -> mono 16-bit PCM .wav at ``spec.sample_rate``."""
  wav = mu_law_decode(codes, spec.levels - 1) if spec.levels == 256 else 2.0 * np.asarray(codes) / (spec.levels - 1) - 1.0
  pcm = np.round(np.clip(wav, -1, 1) * 32767).astype("<i2")
  buffer = io.BytesIO()
  with wave.open(buffer, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(spec.sample_rate or 16000)
    f.writeframes(pcm.tobytes())
  write_file(path, buffer.getvalue())


def write_samples(samples: np.ndarray, spec: DataSpec, prefix: str | os.PathLike, data: np.ndarray | None = None,
                  echo: bool = False) -> list[str]:
  """Writes model-space ``samples`` next to ``prefix`` (e.g. ``workdir/samples/step_1000``, local or
  remote). ``data``: real examples for the background of 2-D scatter plots. Returns the written
  paths. ``echo``: also print text samples to stdout.
  """
  prefix = os.fspath(prefix)
  samples = np.asarray(samples)
  if spec.modality == "image":
    write_image_grid(samples, spec, prefix + ".png")
    return [prefix + ".png"]
  if spec.modality == "points":
    write_scatter(samples, data, prefix + ".png", title=epath.Path(prefix).name)
    return [prefix + ".png"]
  if spec.modality == "text":
    texts = [f"--- sample {i}\n{t}\n" for i, t in enumerate(decode_text(samples, spec))]
    write_file(prefix + ".txt", "".join(texts).encode())
    if echo:
      print("".join(texts), end="")
    return [prefix + ".txt"]
  if spec.modality == "audio":
    paths = []
    for i, clip in enumerate(samples):
      paths.append(f"{prefix}_{i}.wav")
      write_wav(clip, spec, paths[-1])
    return paths
  raise ValueError(f"no writer for modality {spec.modality!r}")
