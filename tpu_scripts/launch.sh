#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM, install memr1-jax on every worker, run a module on all of them.
#
#   TPU_NAME=memr1 ZONE=us-central2-b ACCELERATOR=v4-8 \
#     tpu_scripts/launch.sh memr1_jax.evaluate --data /data/locomo10 --split test --system base
#
# Every host runs the same command. On a pod slice memr1_jax.train calls jax.distributed.initialize()
# itself (TPU_WORKER_HOSTNAMES names the workers; memr1_jax.parallel.mesh), so no per-host arguments
# are needed; its run_dir must be a folder all workers share. memr1_jax.evaluate runs on one host.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
REPO_URL=${REPO_URL:-}            # git URL of this repository (or leave empty to scp the working tree)
MODULE=${1:?usage: launch.sh MODULE [ARGS...]}
shift
ARGS=$(printf ' %q' "$@")          # each argument quoted for the remote shell

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
fi

if [ -n "$REPO_URL" ]; then
  fetch="rm -rf memr1-jax && git clone --depth 1 $REPO_URL memr1-jax"
else
  tarball=$(mktemp --suffix=.tar.gz)
  git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$tarball" HEAD
  gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":memr1-jax.tar.gz --zone "$ZONE" --worker=all
  fetch="rm -rf memr1-jax && mkdir memr1-jax && tar -xzf memr1-jax.tar.gz -C memr1-jax"
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e; $fetch; cd memr1-jax
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -e '.[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python -m $MODULE$ARGS"
