# The steps of tpu_scripts/launch.sh (sourced by it; settings are documented there).
# Every gcloud / gsutil call goes through `cmd` (or `query`, whose result decides what happens
# next), so --dry-run prints exactly the commands a real run would execute.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CREATED=0
exec 3>&1   # dry-run lines go to the original stdout even where a command's output is discarded

say() { echo "[launch] $*" >&2; }

die() {
  echo "error: $1" >&2
  exit "${2:-2}"
}

# One argument list as a shell would need it typed (plain words bare, the rest single-quoted).
quote() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}

cmd() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ $(quote "$@")" >&3
    return 0
  fi
  "$@"
}

# A command asked a question (does the VM exist? is it pre-empted?): a dry run prints it and
# answers "no", so the plan shows the full sequence.
query() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ $(quote "$@")" >&3
    return 1
  fi
  "$@"
}

# Hosts of a slice: v2/v3/v4/v5p count TensorCores (8 per host), v5e/v6e count chips (4 per host
# above 8 chips; up to 8 chips on one host).
hosts_of() {
  local gen=${1%-*} n=${1##*-}
  [[ "$n" =~ ^[0-9]+$ ]] || return 1
  case "$gen" in
    v2|v3|v4|v5p) echo $(( n <= 8 ? 1 : n / 8 )) ;;
    v5litepod|v5e|v6e) echo $(( n <= 8 ? 1 : n / 4 )) ;;
    *) return 1 ;;
  esac
}

runtime_of() {
  case "${1%-*}" in
    v5p) echo v2-alpha-tpuv5 ;;
    v5litepod|v5e) echo v2-alpha-tpuv5-lite ;;
    v6e) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

preflight() {
  [ -n "${TPU_NAME:-}" ] || die "TPU_NAME is not set (the name of the TPU VM to create or reuse)"
  [ -n "${ZONE:-}" ] || die "ZONE is not set (a zone with TPUs of that type, e.g. us-central2-b for v4)"
  ACCELERATOR=${ACCELERATOR:-v4-8}
  HOSTS=$(hosts_of "$ACCELERATOR") || die "ACCELERATOR=$ACCELERATOR: not a TPU type this script knows (v2-N, v3-N, v4-N, v5p-N, v5litepod-N, v6e-N)"
  RUNTIME=${RUNTIME:-$(runtime_of "$ACCELERATOR")}
  BUCKET=${BUCKET:-gs://$TPU_NAME-memr1}
  BUCKET=${BUCKET%/}
  [[ "$BUCKET" == gs://?* ]] || die "BUCKET=$BUCKET: expected a gs:// URL"
  RUN_NAME=${RUN_NAME:-$TPU_NAME}
  [[ "$RUN_NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "RUN_NAME=$RUN_NAME: use letters, digits and ._-"
  OUT=${OUT:-runs/tpu/$RUN_NAME}
  MAX_RETRIES=${MAX_RETRIES:-3}
  [[ "$MAX_RETRIES" =~ ^[0-9]+$ ]] || die "MAX_RETRIES=$MAX_RETRIES: expected a number"
  JAX_VERSION=$(sed -n 's/^ *"jax==\([0-9.]*\)".*/\1/p' "$ROOT/setup.py" | head -1)
  [ -n "$JAX_VERSION" ] || die "$ROOT/setup.py: no pinned jax==VERSION found"
  GCLOUD_FLAGS=(--zone "$ZONE")
  if [ -n "${PROJECT:-}" ]; then GCLOUD_FLAGS+=(--project "$PROJECT"); fi
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  command -v gcloud >/dev/null 2>&1 || die "gcloud not found: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install), or pass --dry-run to see the commands"
  command -v gsutil >/dev/null 2>&1 || die "gsutil not found (it comes with the Google Cloud SDK)"
  local account
  account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null || true)
  [ -n "$account" ] || die "gcloud is not authenticated: run 'gcloud auth login' (and 'gcloud config set project PROJECT')"
  if [ -n "${DATA:-}" ] && [[ "$DATA" != gs://* ]] && [ ! -e "$DATA" ]; then die "DATA=$DATA: no such file or folder"; fi
  if [ -n "${WEIGHTS:-}" ] && [[ "$WEIGHTS" != gs://* ]] && [ ! -e "$WEIGHTS" ]; then die "WEIGHTS=$WEIGHTS: no such file or folder"; fi
}

plan_summary() {
  local kind="a single host"
  [ "$HOSTS" -gt 1 ] && kind="$HOSTS hosts"
  echo "# TPU VM $TPU_NAME: $ACCELERATOR ($kind), runtime $RUNTIME, zone $ZONE; bucket $BUCKET; run $RUN_NAME" >&3
}

create_vm() {
  if query gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --format='value(state)' >/dev/null 2>&1; then
    say "reusing TPU VM $TPU_NAME"
    return 0
  fi
  CREATED=1
  local spot=()
  if [ "${SPOT:-0}" = 1 ]; then spot=(--spot); fi
  if [ "${QUEUED:-0}" = 1 ]; then
    cmd gcloud compute tpus queued-resources create "$TPU_NAME-qr" "${GCLOUD_FLAGS[@]}" --node-id "$TPU_NAME" \
      --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" "${spot[@]}"
    wait_active
  else
    cmd gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --accelerator-type "$ACCELERATOR" \
      --version "$RUNTIME" "${spot[@]}"
  fi
}

wait_active() {
  local state=""
  for _ in $(seq 1 720); do
    state=$(query gcloud compute tpus queued-resources describe "$TPU_NAME-qr" "${GCLOUD_FLAGS[@]}" \
      --format='value(state.state)' 2>/dev/null) || state=""
    [ "$DRY_RUN" = 1 ] && return 0
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) die "queued resource $TPU_NAME-qr is $state" ;;
    esac
    sleep 10
  done
  die "queued resource $TPU_NAME-qr not active after 2 hours (state ${state:-unknown})"
}

on_workers() {
  local which=$1
  shift
  cmd gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker="$which" --command "$*"
}

setup_workers() {
  on_workers all "python3 -m venv ~/memr1-venv && ~/memr1-venv/bin/pip install -q -U pip && ~/memr1-venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
}

stage_code() {
  local install="~/memr1-venv/bin/pip install -q -e 'memr1-jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  if [ -n "${REPO_URL:-}" ]; then
    on_workers all "rm -rf memr1-jax && git clone --depth 1 ${REPO_REF:+--branch $(quote "$REPO_REF") }$(quote "$REPO_URL") memr1-jax && $install"
    return 0
  fi
  local tarball="${TMPDIR:-/tmp}/memr1-jax-$RUN_NAME.tar.gz"
  cmd git -C "$ROOT" archive --format=tar.gz -o "$tarball" HEAD
  cmd gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:memr1-jax.tar.gz" "${GCLOUD_FLAGS[@]}" --worker=all
  on_workers all "rm -rf memr1-jax && mkdir memr1-jax && tar -xzf memr1-jax.tar.gz -C memr1-jax && $install"
}

stage_one() {   # SRC DEST: a local path goes through the bucket, so every worker pulls the same bytes
  local src=$1 dest=$2 from
  [ -n "$src" ] || return 0
  if [[ "$src" == gs://* ]]; then
    from=${src%/}
  else
    from="$BUCKET/$RUN_NAME/$dest"
    cmd gsutil -m -q rsync -r "$src" "$from"
  fi
  on_workers all "mkdir -p memr1-jax/$dest && gsutil -m -q rsync -r $(quote "$from") memr1-jax/$dest"
}

stage_inputs() {
  query gsutil ls -b "$BUCKET" >/dev/null 2>&1 || cmd gsutil mb -l "${ZONE%-*}" "$BUCKET"
  stage_one "${DATA:-}" data
  stage_one "${WEIGHTS:-}" weights
}

has_config_key() {   # KEY ARGS...: whether --config.KEY=... is among ARGS
  local key=$1 a
  shift
  for a in "$@"; do [[ "$a" == "--config.$key="* ]] && return 0; done
  return 1
}

run_module() {
  local args=("$@") remote
  if [ "$MODULE" = memr1_jax.train ]; then
    has_config_key run_dir "${args[@]}" || args+=("--config.run_dir=runs/train/$RUN_NAME")
    has_config_key checkpoint_dir "${args[@]}" || args+=("--config.checkpoint_dir=$BUCKET/$RUN_NAME")
    local logs="runs/train/$RUN_NAME" store="$BUCKET/$RUN_NAME/run"
    # The logs come back from the bucket (a resumed run appends to them) and go there every 2
    # minutes, so a pre-empted VM loses at most that much of them; checkpoints are in the bucket.
    remote="cd memr1-jax && . ~/memr1-venv/bin/activate && mkdir -p $logs && (gsutil -m -q rsync -r $store $logs || true)"
    remote+=" && { (while sleep 120; do gsutil -m -q rsync -r $logs $store; done) & sync=\$!; }"
    remote+=" && { python -m $MODULE $(quote "${args[@]}"); rc=\$?; kill \$sync; gsutil -m -q rsync -r $logs $store; exit \$rc; }"
  else
    remote="cd memr1-jax && . ~/memr1-venv/bin/activate && python -m $MODULE $(quote "${args[@]}")"
  fi
  on_workers all "$remote"
}

# Whether a failed run is a pre-emption: the trainer's SIGTERM exit (143), or ssh losing the VM
# (255), with the VM now pre-empted, stopped or gone.
preempted() {
  local status=$1 state
  [ "$status" -eq 143 ] || [ "$status" -eq 255 ] || return 1
  state=$(query gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --format='value(state)' 2>/dev/null) \
    || return 0
  case "$state" in PREEMPTED|TERMINATED|STOPPED|STOPPING|"") return 0 ;; esac
  return 1
}

fetch_run() {
  local remote=memr1-jax/runs
  [ "$MODULE" = memr1_jax.train ] && remote="memr1-jax/runs/train/$RUN_NAME"
  cmd mkdir -p "$(dirname "$OUT")"
  cmd gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$remote" "$OUT" "${GCLOUD_FLAGS[@]}" --worker=0
  [ "$DRY_RUN" = 1 ] || say "run folder fetched to $OUT"
}

delete_vm() {
  if [ "${QUEUED:-0}" = 1 ]; then
    cmd gcloud compute tpus queued-resources delete "$TPU_NAME-qr" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    cmd gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
}

teardown_on_exit() {
  local rc=$1
  trap - EXIT
  if [ "$KEEP" = 1 ]; then
    say "kept TPU VM $TPU_NAME (--keep); delete it with: gcloud compute tpus tpu-vm delete $TPU_NAME --zone $ZONE"
  else
    delete_vm || say "could not delete TPU VM $TPU_NAME: delete it by hand"
  fi
  exit "$rc"
}
