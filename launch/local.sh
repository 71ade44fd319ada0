#!/usr/bin/env bash
# N processes on this machine, one jax.distributed job (e.g. one process per GPU, or CPU processes to
# try multi-process code). Usage: launch/local.sh N --config=configs/gan.py --workdir=runs/gan [...]
# On CPU, cross-process collectives need: export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
# SIGTERM / SIGINT to this script is passed on to every process: they stop at the same step, save and
# exit with status 75 (see docs/reliability.md).
set -euo pipefail
n=$1; shift
port=${JAXGEN_PORT:-12355}
pids=()
for ((i = 0; i < n; i++)); do
  CUDA_VISIBLE_DEVICES=${JAXGEN_ONE_GPU_PER_PROCESS:+$i} python -m jaxgen.main --distributed \
    --coordinator_address=localhost:$port --num_processes=$n --process_id=$i "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid" && break
    code=$?
    kill -0 "$pid" 2>/dev/null && continue  # wait was interrupted by the trap: the process still runs
    status=$code
    break
  done
done
exit $status
