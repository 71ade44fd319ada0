#!/usr/bin/env bash
# The accelerator check (experiments/benchmarks/gpu_check.py): every family trains 100 steps, GPT-2
# small reports tokens/s and MFU, the CIFAR-size DDPM U-Net images/s, FID on 10k x 2048 its time.
#
#   experiments/benchmarks/gpu_check.sh [gpu_check.py flags, e.g. --dry_run, --time_budget=420]
#
# Needs only this repository and an installed jax with its GPU plugin (no network, no data
# downloads). PYTHON picks the interpreter (default python3); GPU_CHECK_TIMEOUT (seconds, default
# 480) is a hard limit on the whole run; the script's own budget (--time_budget, 450 s) skips the
# sections that would start after it.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
case " $* " in
  *" --dry_run "*) ;;
  *)
    if ! "$PY" -c 'import jax; jax.devices("gpu")' >/dev/null 2>&1; then
      version=$("$PY" -c 'import jax; print(jax.__version__)' 2>/dev/null)
      echo "jax ${version:-(not installed)} has no GPU backend; trying pip install jax[cuda12]==$version"
      "$PY" -m pip install -q "jax[cuda12]==$version" \
        || echo "pip install failed (no network?); running on $("$PY" -c 'import jax; print(jax.default_backend())' 2>&1 | tail -1)"
    fi
    ;;
esac
exec timeout --signal=TERM --kill-after=10 "${GPU_CHECK_TIMEOUT:-480}" "$PY" -u experiments/benchmarks/gpu_check.py "$@"
