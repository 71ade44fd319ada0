"""Benchmark of jaxgen's sample metrics on random features.

    python experiments/benchmarks/metrics.py [--n 10000] [--dim 2048] [--block-size 1024]
                                             [--repeats 1] [--skip-scipy] [--skip-float64]
                                             [--skip-manifold] [--lapack-floor]

Prints, in one run:
* FID on two ``n x dim`` float32 feature sets: jaxgen (streaming statistics merged in float64 with
  a symmetric blocked Gram product in the features' float32; Cholesky, a triangular congruence and
  the eigenvalues of its tridiagonal form), jaxgen on the same features cast to float64 (float64
  products), and the classic scipy route (``numpy.cov`` + ``scipy.linalg.sqrtm``), each split into
  statistics and the Fréchet distance; the end-to-end speed-ups over the scipy route;
* the accuracy of each against a float64 reference (``numpy.cov``'s statistics, the Cholesky
  congruence ``L^T S2 L`` and its eigenvalues by ``scipy.linalg.eigvalsh``), and whether the rule of
  ``jaxgen.evaluation.gaussian`` holds: relative error ``<= 1e-6`` for float32 features, within 10x
  of the scipy route's for float64 features;
* with ``--lapack-floor``, the floor of the Cholesky route on this CPU: every step a single BLAS /
  LAPACK call through scipy (``ssyrk`` on float32-centred features, ``dpotrf``, ``dsygst``,
  ``dsytrd``, ``dsterf``), timed in the same run as the scipy route, so the speed-up that the
  algorithm allows here is measured rather than estimated;
* precision/recall (k=3) + density/coverage (k=5) on ``n`` vs ``n`` features (three blocked
  passes);
jaxgen's functions are timed after one untimed call that compiles them. Each row gives the
process's peak resident memory after it (``ru_maxrss``, host memory; on CPU JAX's
buffers live there too) and the largest block temporary (``block_size x n`` float32).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.linalg

from jaxgen import evaluation as ev
from jaxgen.timing import peak_memory


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


def _reference_frechet(mu1, s1, mu2, s2):
  """float64 LAPACK: ``tr((S1 S2)^1/2)`` from the eigenvalues of ``L^T S2 L``, ``S1 = L L^T``."""
  l = np.linalg.cholesky(s1)
  eigenvalues = scipy.linalg.eigvalsh(l.T @ s2 @ l)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _lapack_stats(x):
  """``(mu, S)`` with ``S``'s lower triangle from one float32 ``ssyrk`` of the centred rows.

  Centred in float32 on the float32-rounded mean ``c``; ``S = ((x - c)^T (x - c) - N (mu - c)(mu - c)^T)
  / (N - 1)`` is exact in exact arithmetic for any ``c``.
  """
  mu = x.mean(0, dtype=np.float64)
  c = mu.astype(np.float32)
  gram = scipy.linalg.blas.ssyrk(1.0, (x - c).T, lower=1)  # (x - c)^T is Fortran-ordered: no copy
  shift = mu - c
  return mu, (gram - len(x) * np.outer(shift, shift)) / (len(x) - 1)


def _lapack_frechet(mu1, s1, mu2, s2):
  """The distance as ``dpotrf``, ``dsygst`` (``L^T S2 L``, symmetric: half of two ``dtrmm``),
  ``dsytrd`` (blocked) and ``dsterf``, on lower triangles only."""
  lapack = scipy.linalg.lapack
  l, info1 = lapack.dpotrf(s1, lower=1)
  m, info2 = lapack.dsygst(s2, l, itype=2, lower=1)
  _, diagonal, off_diagonal, _, info3 = lapack.dsytrd(m, lower=1, lwork=64 * len(m))
  eigenvalues, info4 = lapack.dsterf(diagonal, off_diagonal)[:2]
  assert info1 == info2 == info3 == info4 == 0, (info1, info2, info3, info4)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _float64_stats(x):
  return ev.gaussian_stats(x.astype(np.float64))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000, help="samples per set")
  parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
  parser.add_argument("--block-size", type=int, default=1024, help="rows per distance block")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed repeats (best is kept) of both routes; jaxgen also warms up once")
  parser.add_argument("--skip-scipy", action="store_true",
                      help="skip the scipy sqrtm route and the float64 reference")
  parser.add_argument("--skip-float64", action="store_true", help="skip jaxgen on float64 features")
  parser.add_argument("--skip-manifold", action="store_true",
                      help="skip precision/recall + density/coverage")
  parser.add_argument("--lapack-floor", action="store_true",
                      help="also time the Cholesky route as single scipy BLAS/LAPACK calls")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  # Inception-like features: non-negative, correlated; the "generated" set slightly off.
  mix = np.eye(args.dim) + 0.05 * rng.standard_normal((args.dim, args.dim))
  real = np.abs(rng.standard_normal((args.n, args.dim)) @ mix).astype(np.float32)
  fake = np.abs(rng.standard_normal((args.n, args.dim)) @ mix * 1.02 + 0.01).astype(np.float32)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; n={args.n} dim={args.dim} "
        f"block={args.block_size}; peak memory after data {peak_memory()}")

  rows, fids = [], {}

  def route(name, rows_named, stats_fn, frechet_fn, warm_up=True):
    """Times one FID route (statistics of both sets, then the distance), adds its two rows and its
    FID to ``fids[name]``; returns the statistics of the real set."""
    (stats1, t1), (stats2, t2) = (_timed(stats_fn, x, repeats=args.repeats, warm_up=warm_up) for x in (real, fake))
    value, t_fd = _timed(frechet_fn, *stats1, *stats2, repeats=args.repeats, warm_up=warm_up)
    rows.extend([(rows_named[0], t1 + t2, peak_memory()), (rows_named[1], t_fd, peak_memory())])
    fids[name] = (value, t1 + t2 + t_fd)
    return stats1, stats2

  route("jaxgen (float32 features)", ("FID jaxgen: statistics (2 sets)", "FID jaxgen: Frechet distance"),
        ev.gaussian_stats, ev.frechet_distance)
  if not args.skip_float64:
    route("jaxgen (float64 features)", ("FID jaxgen float64: statistics (2 sets)",
                                        "FID jaxgen float64: Frechet distance"), _float64_stats, ev.frechet_distance)
  if args.lapack_floor:
    route("LAPACK floor (scipy BLAS)", ("FID LAPACK floor: ssyrk (2 sets)", "FID LAPACK floor: potrf+sygst+sytrd+sterf"),
          _lapack_stats, _lapack_frechet, warm_up=False)
  if not args.skip_scipy:
    ref1, ref2 = route("scipy (numpy.cov + sqrtm)", ("FID scipy: numpy.cov (2 sets)", "FID scipy: sqrtm route"),
                       _scipy_stats, _scipy_frechet, warm_up=False)
    exact = _reference_frechet(*ref1, *ref2)
  if not args.skip_manifold:
    (pr, t_pr) = _timed(lambda: ev.manifold_metrics(real, fake, 3, 5, args.block_size),
                        repeats=args.repeats)
    rows.append(("precision/recall + density/coverage", t_pr, peak_memory()))

  print(f"\n{'step':40s} {'seconds':>9s} {'peak memory':>14s}")
  for name, seconds, mib in rows:
    print(f"{name:40s} {seconds:9.2f} {mib:>14s}")
  if args.skip_scipy:
    print("\n" + "\n".join(f"FID {name}: {value:.10g}" for name, (value, _) in fids.items()))
  else:
    print(f"\nFID float64 reference (numpy.cov, Cholesky congruence, scipy eigvalsh): {exact:.12g}")
    errors = {name: abs(value - exact) / exact for name, (value, _) in fids.items()}
    scipy_name = "scipy (numpy.cov + sqrtm)"
    for name, (value, seconds) in fids.items():
      print(f"FID {name:28s} {value:.12g}  relative error {errors[name]:.1e}  end to end "
            f"{seconds:6.2f} s = {fids[scipy_name][1] / seconds:5.1f}x the scipy route")
    rules = {"jaxgen (float32 features)": 1e-6,
             "jaxgen (float64 features)": 10 * errors[scipy_name]}
    for name, bound in rules.items():
      if name in errors:
        print(f"accuracy rule, {name}: relative error {errors[name]:.1e} <= {bound:.1e}: "
              f"{'met' if errors[name] <= bound else 'NOT MET'}")
  if not args.skip_manifold:
    print(f"manifold metrics {pr}; largest distance block "
          f"{args.block_size * args.n * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
  main()
