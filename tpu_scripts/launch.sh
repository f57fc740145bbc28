#!/usr/bin/env bash
# Run a memr1_jax module on a Cloud TPU VM (one host or a pod slice), from creation to teardown:
#
#   TPU_NAME=memr1 ZONE=us-central2-b ACCELERATOR=v4-32 \
#     bash tpu_scripts/launch.sh [--dry-run] [--keep] memr1_jax.train --config configs/answer_agent_grpo_qwen3b_paper.py
#
# Steps: preflight (gcloud installed and logged in, settings present), create the TPU VM (or reuse
# it), setup on every worker (a venv with the pinned jax[tpu]), stage the code, data and weights,
# run the module on --worker=all (every host runs the same command; memr1_jax finds the other hosts
# through TPU_WORKER_HOSTNAMES and calls jax.distributed.initialize), fetch the run folder from
# worker 0, delete the VM. A failing step still deletes the VM (unless --keep). A training run keeps
# its checkpoints in the bucket ($BUCKET/$RUN_NAME/checkpoints) and its logs are copied there as it
# goes, so when the VM is pre-empted the script creates it again and reruns: training resumes from
# the last checkpoint (up to MAX_RETRIES times).
#
# --dry-run prints every gcloud / gsutil command instead of running it (no gcloud needed).
#
# Settings (environment):
#   TPU_NAME, ZONE       required
#   ACCELERATOR          accelerator type (default v4-8), e.g. v4-32, v5p-16, v5litepod-8, v6e-8
#   RUNTIME              TPU VM software version (default: the one for ACCELERATOR's generation)
#   PROJECT              gcloud project (default: gcloud's configured one)
#   SPOT=1               a spot VM (pre-emptible, cheaper); QUEUED=1: request it as a queued resource
#   BUCKET               gs:// bucket for checkpoints, logs and staged files (default gs://$TPU_NAME-memr1)
#   RUN_NAME             the run's name in the bucket and on the workers (default $TPU_NAME)
#   DATA                 a local folder or gs:// path staged to ~/memr1-jax/data on every worker
#   WEIGHTS              a local model folder or gs:// path staged to ~/memr1-jax/weights
#   REPO_URL [REPO_REF]  clone the code from git instead of copying this working tree's HEAD
#   OUT                  where the run folder is fetched to (default runs/tpu/$RUN_NAME)
#   MAX_RETRIES          re-creations after a pre-emption (default 3)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu_scripts/steps.sh
. "$HERE/steps.sh"

DRY_RUN=0
KEEP=${KEEP:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (expected --dry-run, --keep, then MODULE [ARGS...])" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || die "usage: tpu_scripts/launch.sh [--dry-run] [--keep] MODULE [ARGS...]"
MODULE=$1
shift

preflight
plan_summary
trap 'teardown_on_exit $?' EXIT
create_vm
setup_workers
stage_code
stage_inputs
attempt=0
while true; do
  status=0
  run_module "$@" || status=$?
  [ "$status" -eq 0 ] && break
  if [ "$attempt" -lt "$MAX_RETRIES" ] && preempted "$status"; then
    attempt=$((attempt + 1))
    say "the TPU VM was pre-empted (exit $status); re-creating it and resuming (retry $attempt of $MAX_RETRIES)"
    delete_vm
    create_vm
    setup_workers
    stage_code
    stage_inputs
    continue
  fi
  die "$MODULE failed on the TPU VM (exit $status)" "$status"
done
fetch_run
