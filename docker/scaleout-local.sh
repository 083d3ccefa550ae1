#!/bin/bash
# Scale-out on one machine, without containers: one broker and N loadgen
# workers (docker/loadgen-worker.sh, as in the images) on loopback, then
# `cargo xtask merge` of their results. Prints each worker's and the merged
# counts and end-to-end latency percentiles.
#
#   docker/scaleout-local.sh [N=3] [DURATION_SECS=5]
#
# Needs the release binaries: cargo build --release -p broker -p loadgen.
set -euo pipefail
workers="${1:-3}"
duration="${2:-5}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
bin="${CARGO_TARGET_DIR:-target}/release"
out="$(mktemp -d)"
mqtt_port="${MQTT_PORT:-18831}"
metrics_port="${METRICS_PORT:-19091}"

"$bin/broker" --mqtt-bind "127.0.0.1:$mqtt_port" --metrics-bind "127.0.0.1:$metrics_port" \
    --no-kafka --no-websocket --max-connections 1000 --stats-interval 0 --log-level warn \
    --data-dir "$out/data" &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true' EXIT
# Ready when the metrics endpoint answers (the image's health check).
for _ in $(seq 50); do
    BROKER_HEALTH_PORT="$metrics_port" docker/healthcheck.sh 2>/dev/null && break
    sleep 0.1
done
BROKER_HEALTH_PORT="$metrics_port" docker/healthcheck.sh

pids=()
for i in $(seq "$workers"); do
    WORKER_ID="$i" WORKLOAD="$root/docker/workloads/scaleout-mqtt-latency.toml" \
        TARGET="127.0.0.1:$mqtt_port" OUT_DIR="$out" LOADGEN="$bin/loadgen" DURATION="$duration" \
        docker/loadgen-worker.sh > "$out/worker-$i.log" &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"
done
cat "$out"/worker-*.log

cargo xtask merge "$out"/worker-*.json --out "$out/merged.json"
printf '%-16s %8s %8s %8s %8s %8s %8s\n' result sent received lost e2e_count p50_us p99_us
for f in "$out"/worker-*.json "$out/merged.json"; do
    jq -r --arg n "$(basename "$f" .json)" \
        '[$n, .counts.sent, .counts.received, .counts.lost, .latency.end_to_end.count, .latency.end_to_end.p50_us, .latency.end_to_end.p99_us] | @tsv' "$f"
done | while IFS=$'\t' read -r n s r l c p50 p99; do
    printf '%-16s %8s %8s %8s %8s %8s %8s\n' "$n" "$s" "$r" "$l" "$c" "$p50" "$p99"
done
# Counts of the merged result are the workers' sums (its percentiles come
# from the added histograms: the exact check is a unit test in xtask/src/merge.rs).
jq -s -r 'def sum(f): map(f) | add;
    (.[:-1]) as $w | .[-1] as $m
    | if ($m.counts.sent == ($w | sum(.counts.sent)))
         and ($m.counts.received == ($w | sum(.counts.received)))
         and ($m.latency.end_to_end.count == ($w | sum(.latency.end_to_end.count)))
      then "merged counts = sum of the \($w | length) workers: yes"
      else "merged counts = sum of the workers: NO\n" | halt_error(1) end' \
    "$out"/worker-*.json "$out/merged.json"
echo "results in $out"
