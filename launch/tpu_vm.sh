#!/usr/bin/env bash
# Run on every worker of a Cloud TPU VM slice (jax.distributed reads the topology from the TPU metadata):
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd jaxgen && launch/tpu_vm.sh --config=configs/gan.py --workdir=gs://bucket/runs/gan"
# --workdir=gs://bucket/path writes every file of the run (checkpoints, config.json, metrics, samples,
# eval) to the bucket through etils.epath; the VM's service account needs write access to it.
# Maintenance events and spot preemptions send SIGTERM: the run saves the current step and exits 75;
# run the same command again to resume (a loop like the one below does it unattended).
set -uo pipefail
while true; do
  python -m jaxgen.main --distributed "$@"
  status=$?
  [ "$status" -eq 75 ] || exit "$status"
done
