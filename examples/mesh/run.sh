#!/usr/bin/env bash
# Two sidecars with mutual TLS and SPIFFE identities, made with `remora certs`:
#
#   curl ──http──▶ outbound sidecar (sleep) ══mTLS══▶ inbound sidecar (web, STRICT) ──http──▶ remora echo
#          :18000                                      :18443                                  :18080
#
# Mints a CA and two identities into a temp dir, starts the three processes, sends requests
# through them (and a few that must be refused), then stops (--once) or waits for Ctrl-C.
#
# BIN=path/to/envoy runs the sidecars on Envoy instead (remora still mints the certs and runs
# the echo backend), which shows what remora must match.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p remora-proxy
remora="${CARGO_TARGET_DIR:-target}/debug/remora"
bin="${BIN:-$remora}"
sidecar_args=(--concurrency 1 --disable-hot-restart -l warning)
# Envoy wants a distinct --base-id per process (remora accepts and ignores it).
base=$(( $$ % 10000 * 10 ))

work="$(mktemp -d)"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== minting the mesh CA and workload identities into $work/certs"
"$remora" certs ca --trust-domain cluster.local --out "$work/certs/ca"
"$remora" certs issue --ca "$work/certs/ca" --spiffe spiffe://cluster.local/ns/default/sa/web \
  --dns web.default.svc.cluster.local --out "$work/certs/web"
"$remora" certs issue --ca "$work/certs/ca" --spiffe spiffe://cluster.local/ns/default/sa/sleep \
  --out "$work/certs/sleep"
# Someone the inbound sidecar must refuse: right CA, wrong service account.
"$remora" certs issue --ca "$work/certs/ca" --spiffe spiffe://cluster.local/ns/default/sa/intruder \
  --out "$work/certs/intruder" >/dev/null
"$remora" certs inspect "$work/certs/web/cert-chain.pem"

for f in inbound outbound; do
  sed "s#@CERTS@#$work/certs#g" "examples/mesh/$f.yaml" >"$work/$f.yaml"
done

"$remora" echo --listen 127.0.0.1:18080 --name web & pids+=($!)
"$bin" -c "$work/inbound.yaml" "${sidecar_args[@]}" --base-id $(( base + 1 )) 2>"$work/inbound.err" & pids+=($!)
"$bin" -c "$work/outbound.yaml" "${sidecar_args[@]}" --base-id $(( base + 2 )) 2>"$work/outbound.err" & pids+=($!)
for admin in 19901 19902; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin/ready" && break; sleep 0.1; done
  curl -fs -o /dev/null "http://127.0.0.1:$admin/ready" || {
    echo "a sidecar did not become ready:"; cat "$work"/*.err; exit 1; }
done

echo
echo "== through both sidecars: the app sees sleep's identity in x-forwarded-client-cert"
echo "\$ curl -s http://127.0.0.1:18000/hello"
out="$(curl -s http://127.0.0.1:18000/hello)"
echo "$out"
echo "$out" | grep -q 'URI=spiffe://cluster.local/ns/default/sa/sleep' || { echo "FAIL: no XFCC"; exit 1; }

echo
echo "== refused by the inbound sidecar (STRICT)"
certs="$work/certs"
try() {
  local what="$1"; shift
  if curl -s -o /dev/null --max-time 5 "$@" 2>/dev/null; then
    echo "FAIL: $what got through"; exit 1
  fi
  echo "refused: $what"
}
try "plaintext HTTP" http://127.0.0.1:18443/
try "TLS without a client certificate" --cacert "$certs/ca/ca.pem" \
  --resolve web.default.svc.cluster.local:18443:127.0.0.1 https://web.default.svc.cluster.local:18443/
try "the intruder identity" --cacert "$certs/ca/ca.pem" \
  --cert "$certs/intruder/cert-chain.pem" --key "$certs/intruder/key.pem" \
  --resolve web.default.svc.cluster.local:18443:127.0.0.1 https://web.default.svc.cluster.local:18443/
echo "accepted: sleep's identity, directly:"
curl -s --cacert "$certs/ca/ca.pem" --cert "$certs/sleep/cert-chain.pem" --key "$certs/sleep/key.pem" \
  --resolve web.default.svc.cluster.local:18443:127.0.0.1 https://web.default.svc.cluster.local:18443/direct \
  -o /dev/null -w '  HTTP %{http_code}\n'

echo
echo "== inbound listener TLS counters"
curl -s "http://127.0.0.1:19901/stats?filter=^listener\.127\.0\.0\.1_18443\.ssl\.(handshake|fail_verify|connection_error)"

[ "${1:-}" = "--once" ] && exit 0
echo "sidecars up: outbound 127.0.0.1:18000, inbound 127.0.0.1:18443; Ctrl-C to stop."
wait
