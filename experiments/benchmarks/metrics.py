"""Benchmark of jaxgen's sample metrics on random features.

    python experiments/benchmarks/metrics.py [--n 10000] [--dim 2048] [--block-size 1024]
                                             [--skip-scipy]

Prints, in one run:
* FID on two ``n x dim`` feature sets: jaxgen (streaming float64 statistics with a symmetric
  blocked Gram product; Cholesky, a triangular congruence and the eigenvalues of its tridiagonal
  form) vs the classic scipy route (``numpy.cov`` + ``scipy.linalg.sqrtm``), split into statistics and
  the Fréchet distance, with the relative difference of the two results;
* precision/recall (k=3) + density/coverage (k=5) on ``n`` vs ``n`` features (three blocked
  passes);
jaxgen's functions are timed after one untimed call that compiles them. Each row gives the
process's peak resident memory after it (``ru_maxrss``, host memory; on CPU JAX's
buffers live there too) and the largest block temporary (``block_size x n`` float32).
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import numpy as np
import scipy.linalg

from jaxgen import evaluation as ev


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, *args, repeats: int = 1, warm_up: bool = True):
  """``(result, best seconds of repeats)``; with ``warm_up`` a first, untimed call compiles."""
  result = fn(*args) if warm_up else None
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn(*args)
    best = min(best, time.perf_counter() - start)
  return result, best


def _scipy_stats(x):
  x = x.astype(np.float64)
  return x.mean(0), np.cov(x, rowvar=False)


def _scipy_frechet(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000, help="samples per set")
  parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
  parser.add_argument("--block-size", type=int, default=1024, help="rows per distance block")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed repeats (best is kept) of both routes; jaxgen also warms up once")
  parser.add_argument("--skip-scipy", action="store_true", help="skip the scipy sqrtm route")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  # Inception-like features: non-negative, correlated; the "generated" set slightly off.
  mix = np.eye(args.dim) + 0.05 * rng.standard_normal((args.dim, args.dim))
  real = np.abs(rng.standard_normal((args.n, args.dim)) @ mix).astype(np.float32)
  fake = np.abs(rng.standard_normal((args.n, args.dim)) @ mix * 1.02 + 0.01).astype(np.float32)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; n={args.n} dim={args.dim} "
        f"block={args.block_size}; peak RSS after data {_peak_mib():.0f} MiB")

  rows = []
  (stats1, t1) = _timed(ev.gaussian_stats, real, repeats=args.repeats)
  (stats2, t2) = _timed(ev.gaussian_stats, fake, repeats=args.repeats)
  fid, t_fd = _timed(ev.frechet_distance, *stats1, *stats2, repeats=args.repeats)
  rows.append(("FID jaxgen: statistics (2 sets)", t1 + t2, _peak_mib()))
  rows.append(("FID jaxgen: Frechet distance", t_fd, _peak_mib()))
  if not args.skip_scipy:
    (ref1, s1), (ref2, s2) = (_timed(_scipy_stats, x, repeats=args.repeats, warm_up=False)
                              for x in (real, fake))
    ref_fid, t_ref = _timed(_scipy_frechet, *ref1, *ref2, repeats=args.repeats, warm_up=False)
    rows.append(("FID scipy: numpy.cov (2 sets)", s1 + s2, _peak_mib()))
    rows.append(("FID scipy: sqrtm route", t_ref, _peak_mib()))
  (pr, t_pr) = _timed(lambda: ev.manifold_metrics(real, fake, 3, 5, args.block_size),
                      repeats=args.repeats)
  rows.append(("precision/recall + density/coverage", t_pr, _peak_mib()))

  print(f"\n{'step':40s} {'seconds':>9s} {'peak RSS MiB':>13s}")
  for name, seconds, mib in rows:
    print(f"{name:40s} {seconds:9.2f} {mib:13.0f}")
  print(f"\nFID jaxgen {fid:.10g}")
  if not args.skip_scipy:
    rel = abs(fid - ref_fid) / abs(ref_fid)
    print(f"FID scipy  {ref_fid:.10g}  (relative difference {rel:.2e})")
    print(f"speed-up: Frechet distance {t_ref / t_fd:.1f}x, "
          f"end to end {(s1 + s2 + t_ref) / (t1 + t2 + t_fd):.1f}x")
  print(f"manifold metrics {pr}; largest distance block "
        f"{args.block_size * args.n * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
  main()
