#!/usr/bin/env bash
# Run on every worker of a Cloud TPU VM slice (jax.distributed reads the topology from the TPU metadata):
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd jaxgen && launch/tpu_vm.sh --config=configs/gan.py --workdir=gs://bucket/runs/gan"
set -euo pipefail
python -m jaxgen.main --distributed "$@"
