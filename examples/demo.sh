#!/usr/bin/env bash
# Runs remora on examples/front-proxy.yaml with two `remora echo` backends, sends a few requests through
# it, and keeps running until Ctrl-C (or exits right away with --once).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p remora-proxy
bin="${CARGO_TARGET_DIR:-target}/release/remora"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin" echo --listen 127.0.0.1:8081 --name backend-a & pids+=($!)
"$bin" echo --listen 127.0.0.1:8082 --name backend-b & pids+=($!)
"$bin" -c examples/front-proxy.yaml --concurrency 1 & pids+=($!)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:9901/ready && break; sleep 0.1; done
show() { echo "\$ curl -s $*"; curl -s "$@"; echo; }
show -i http://127.0.0.1:10000/healthz
show http://127.0.0.1:10000/a/hello
show --http2-prior-knowledge http://127.0.0.1:10000/b/over-h2
echo "10 requests split 80/20 between the backends:"
for _ in $(seq 10); do curl -s http://127.0.0.1:10000/ | grep -o '"backend": "[^"]*"'; done | sort | uniq -c
show "http://127.0.0.1:9901/stats?filter=^cluster\.backend_a\.upstream_rq_total\$"
[ "${1:-}" = "--once" ] && exit 0
echo "remora is listening on 127.0.0.1:10000 (admin 127.0.0.1:9901); Ctrl-C to stop."
wait
