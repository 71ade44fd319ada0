"""Two-dimensional toy data sets (``modality="points"``, ``x`` float32 ``[2]``).

Gaussian mixtures from the mode-collapse literature (VEEGAN, Srivastava et al. 2017; PacGAN,
Lin et al. 2018), each component equally likely, ``label`` = component index:

* ``toy2d/ring8``: 8 components, means ``(cos 2*pi*k/8, sin 2*pi*k/8)`` on the unit circle, std 0.01.
* ``toy2d/grid25``: 25 components, means ``{-4,-2,0,2,4}^2``, std 0.05.

The density-estimation benchmarks of FFJORD (Grathwohl et al. 2019, ``lib/toy_data.py``), with the
same constants:

* ``toy2d/8gaussians``: means ``4 * (unit vectors at multiples of 45 degrees) / 1.414``,
  std ``0.5 / 1.414`` (the WGAN-GP set as FFJORD scales it); ``label`` = component.
* ``toy2d/moons``: scikit-learn's two moons, noise 0.1, then ``2x + (-1, -0.2)``; ``label`` = moon.
* ``toy2d/swissroll``: scikit-learn's swiss roll, noise 1.0, coordinates ``(x, z) / 5``.
* ``toy2d/checkerboard``: uniform on the 8 "black" squares of a 4x4 board of side-2 squares
  covering ``[-4, 4]^2``.
* ``toy2d/2spirals``: two interleaved spirals, ``label`` = spiral.
* ``toy2d/pinwheel``: 5 curved arms (radial std 0.3, tangential std 0.1, rate 0.25); ``label`` = arm.

Every set is generated from ``data_config.seed`` (the pipeline sets it to ``config.seed``): a
training set of ``data_config.num_points`` examples from ``default_rng([seed, 0])`` and a separate
test set of ``max(num_points // 4, 1)`` from ``default_rng([seed, 1])``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jaxgen.data import source
from jaxgen.data.spec import DataSpec, RawData

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

_PREFIX = "toy2d/"
DEFAULTS = {"num_points": 20000}  # size of the generated training set


def _ring8_means() -> np.ndarray:
  angles = 2 * np.pi * np.arange(8) / 8
  return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid25_means() -> np.ndarray:
  axis = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
  return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


def _8gaussians_means() -> np.ndarray:
  d = 1 / np.sqrt(2)
  unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (d, d), (d, -d), (-d, d), (-d, -d)])
  return 4.0 * unit / 1.414  # FFJORD divides by 1.414, not sqrt(2)


#: name -> (means [K, 2], std) of the isotropic Gaussian mixtures.
_MIXTURES: dict[str, tuple[np.ndarray, float]] = {
    "ring8": (_ring8_means(), 0.01),
    "grid25": (_grid25_means(), 0.05),
    "8gaussians": (_8gaussians_means(), 0.5 / 1.414),
}


def mixture_modes(name: str) -> tuple[np.ndarray, float]:
  """Means ``[K, 2]`` and the common std of a mixture set (``toy2d/ring8`` or ``ring8`` ...).

  Used by mode-coverage metrics: a sample belongs to mode k when it lies within a few stds of
  ``means[k]``.
  """
  short = name.removeprefix(_PREFIX)
  if short not in _MIXTURES:
    raise KeyError(f"{name!r} is not a Gaussian mixture; mixtures: {sorted(_MIXTURES)}")
  means, std = _MIXTURES[short]
  return means.copy(), std


def _mixture(short: str) -> Sampler:
  means, std = _MIXTURES[short]

  def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    label = rng.integers(len(means), size=n)
    return means[label] + std * rng.standard_normal((n, 2)), label

  return sample


def _moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  # scikit-learn's make_moons(noise=0.1) written out: importing scikit-learn costs ~1 s of start-up.
  n_outer = n // 2
  label = np.concatenate([np.zeros(n_outer, np.int64), np.ones(n - n_outer, np.int64)])
  t_outer = np.linspace(0, np.pi, n_outer)
  t_inner = np.linspace(0, np.pi, n - n_outer)
  x = np.concatenate([np.cos(t_outer), 1 - np.cos(t_inner)])
  y = np.concatenate([np.sin(t_outer), 1 - np.sin(t_inner) - 0.5])
  points = np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2))
  perm = rng.permutation(n)
  return 2 * points[perm] + np.array([-1.0, -0.2]), label[perm]


def _swissroll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  # scikit-learn's make_swiss_roll(noise=1.0) written out (see _moons); only x and z are kept.
  t = 1.5 * np.pi * (1 + 2 * rng.random(n))
  xz = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.standard_normal((n, 2))
  return xz / 5, np.zeros(n, np.int64)


def _checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  x1 = rng.random(n) * 4 - 2
  x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
  return 2 * np.stack([x1, x2], axis=1), np.zeros(n, np.int64)


def _2spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  half = n - n // 2
  t = np.sqrt(rng.random((half, 1))) * 540 * (2 * np.pi) / 360
  arm = np.hstack([-np.cos(t) * t, np.sin(t) * t]) + rng.random((half, 2)) * 0.5
  points = np.vstack([arm, -arm])[:n] / 3 + 0.1 * rng.standard_normal((n, 2))
  label = np.repeat([0, 1], [half, n - half])
  perm = rng.permutation(n)
  return points[perm], label[perm]


def _pinwheel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
  label = rng.permutation(np.arange(n) % arms)
  features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
  features[:, 0] += 1.0
  angles = 2 * np.pi * label / arms + rate * np.exp(features[:, 0])
  cos, sin = np.cos(angles), np.sin(angles)
  rotations = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [n, 2, 2]
  return 2 * np.einsum("ti,tij->tj", features, rotations), label


#: short name -> (sampler, num_classes)
_SETS: dict[str, tuple[Sampler, int]] = {
    "ring8": (_mixture("ring8"), 8),
    "grid25": (_mixture("grid25"), 25),
    "8gaussians": (_mixture("8gaussians"), 8),
    "moons": (_moons, 2),
    "swissroll": (_swissroll, 0),
    "checkerboard": (_checkerboard, 0),
    "2spirals": (_2spirals, 2),
    "pinwheel": (_pinwheel, 5),
}


def _split(sampler: Sampler, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
  points, label = sampler(rng, n)
  return {"x": points.astype(np.float32), "label": label.astype(np.int32)}


def _register(short: str) -> None:
  sampler, num_classes = _SETS[short]

  @source.register(_PREFIX + short, defaults=DEFAULTS)
  def load(data_config) -> RawData:
    seed = int(data_config.get("seed", 0))
    num = int(data_config.num_points)
    spec = DataSpec(name=_PREFIX + short, modality="points", shape=(2,), num_classes=num_classes)
    train = _split(sampler, np.random.default_rng([seed, 0]), num)
    test = _split(sampler, np.random.default_rng([seed, 1]), max(num // 4, 1))
    if not num_classes:
      del train["label"], test["label"]
    return RawData(train=train, test=test, spec=spec)


for _short in _SETS:
  _register(_short)
