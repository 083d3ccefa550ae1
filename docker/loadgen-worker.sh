#!/bin/bash
# One scale-out load worker: runs $WORKLOAD against $TARGET and writes the
# result JSON (counts and serialized HDR histograms) to $OUT_DIR/<id>.json.
#
# Workers of one run must not collide on client ids and topics: in the
# workload file, `@WORKER@` is replaced by the worker id, e.g.
# `topic = "scaleout/@WORKER@"` and `client_id_prefix = "w@WORKER@"`.
# The id is $WORKER_ID, else the Kubernetes Indexed Job's
# $JOB_COMPLETION_INDEX, else the host name (unique per compose replica).
#
# Environment: WORKLOAD (file), TARGET (host:port), OUT_DIR (directory),
# LOADGEN (binary, default `loadgen` on PATH), DURATION (seconds, optional),
# PRINT_RESULT=1 to also print the result on stdout between marker lines
# (collect with `kubectl logs` where no shared volume is at hand).
set -euo pipefail

workload="${WORKLOAD:?set WORKLOAD to a workload file}"
target="${TARGET:?set TARGET to the broker address host:port}"
out_dir="${OUT_DIR:?set OUT_DIR to the results directory}"
loadgen="${LOADGEN:-loadgen}"
id="${WORKER_ID:-${JOB_COMPLETION_INDEX:-$(hostname)}}"
id="${id//[^A-Za-z0-9_-]/-}"

spec="$(mktemp --suffix=.toml)"
trap 'rm -f "$spec"' EXIT
sed "s/@WORKER@/$id/g" "$workload" > "$spec"
mkdir -p "$out_dir"
extra=()
if [[ -n "${DURATION:-}" ]]; then
    extra+=(--duration "$DURATION")
fi
echo "worker $id: $workload against $target -> $out_dir/worker-$id.json" >&2
"$loadgen" run --workload "$spec" --target "$target" --out "$out_dir/worker-$id.json" --quiet "${extra[@]}"
if [[ "${PRINT_RESULT:-0}" == 1 ]]; then
    echo "----- BEGIN LOADGEN RESULT worker-$id -----"
    cat "$out_dir/worker-$id.json"
    echo
    echo "----- END LOADGEN RESULT worker-$id -----"
fi
