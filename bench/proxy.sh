#!/usr/bin/env bash
# What the recording proxy (evapi-client proxy --record) costs an app, against the same
# app connected directly, same run, interleaved direct/proxy so drift hits both:
#  1. latency: evapi-sim load at a fixed rate (INVITE -> async relay -> 486 -> ACK)
#     against evapi-sim sip answered by evapi-client respond; p50/p99 in microseconds;
#  2. throughput: evapi-sim run, 100,000 INVITEs as fast as the app answers
#     (concurrency 1,000), answered by evapi-client respond; calls per second.
#
#   bench/proxy.sh                          # release builds in target/release
#   RATE=2000 CALLS=20000 ROUNDS=3 THROUGHPUT_CALLS=100000 bench/proxy.sh
#
# Loopback only; every process is ours, stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
SIM=${SIM:-target/release/evapi-sim}
CLIENT=${CLIENT:-target/release/evapi-client}
RATE=${RATE:-2000}
CALLS=${CALLS:-20000}
ROUNDS=${ROUNDS:-3}
THROUGHPUT_CALLS=${THROUGHPUT_CALLS:-100000}
# direct, proxy (recording) and forward (the proxy without --record).
MODES=${MODES:-"direct proxy forward"}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
# wait_port PORT: until something listens there (without connecting: a probe would
# count as an app).
wait_port() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; return 1; }

# route MODE NODE_PORT: sets addr (where the app connects) and proxypid (the proxy:
# recording for MODE=proxy, forwarding only for MODE=forward; empty for direct).
route() {
  if [ "$1" != direct ]; then
    local p record=(); p=$(free_port tcp)
    [ "$1" = proxy ] && record=(--record "$work/t.jsonl")
    "$CLIENT" -q proxy --listen "127.0.0.1:$p" --upstream "127.0.0.1:$2" "${record[@]}" >/dev/null 2>&1 &
    proxypid=$!; pids+=("$proxypid")
    wait_port "$p"
    addr="127.0.0.1:$p"
  else
    proxypid=""
    addr="127.0.0.1:$2"
  fi
}
stop() { for p in "$@"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; for p in "$@"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; }

echo "# the recording proxy against a direct connection, $(date -u +%F), $(nproc) CPUs"
echo
echo "| round | mode | rate (calls/s) | p50 us | p99 us | failed |"
echo "|---|---|---|---|---|---|"
declare -A p99s p50s
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    sip=$(free_port udp); node=$(free_port tcp)
    "$SIM" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$node" >/dev/null 2>&1 &
    simpid=$!; pids+=("$simpid")
    wait_port "$node"
    route "$mode" "$node"
    "$CLIENT" -q --addr "$addr" respond --code 486 >/dev/null 2>&1 &
    resppid=$!; pids+=("$resppid")
    sleep 0.5
    out=$("$SIM" load "127.0.0.1:$sip" --rate "$RATE" --calls "$CALLS" --expect-code 486 2>/dev/null || true)
    read -r p50 p99 failed < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["latency"]["p50_us"], r["latency"]["p99_us"], r["failed"])' "$out")
    echo "| $round | $mode | $RATE | $p50 | $p99 | $failed |"
    p99s[$mode]+="$p99 "
    p50s[$mode]+="$p50 "
    stop "$resppid" "$proxypid" "$simpid"
  done
done
echo
echo "| round | mode | calls | seconds | calls/s |"
echo "|---|---|---|---|---|"
declare -A rates
cat > "$work/scenario.json" <<JSON
{ "name": "throughput", "traffic": { "count": $THROUGHPUT_CALLS, "concurrency": 1000 },
  "external": 1, "timers": { "fr_inv_timer": "30s" },
  "expect": { "timeouts": 0, "refused": 0, "invalid_answers": 0 } }
JSON
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    node=$(free_port tcp)
    "$SIM" run "$work/scenario.json" --bind "127.0.0.1:$node" --no-progress --report "$work/report.json" >/dev/null 2>&1 &
    simpid=$!; pids+=("$simpid")
    wait_port "$node"
    route "$mode" "$node"
    "$CLIENT" -q --addr "$addr" respond --code 486 >/dev/null 2>&1 &
    resppid=$!; pids+=("$resppid")
    wait "$simpid" || true
    read -r ms rate < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["duration_ms"], round(r["requests"]*1000/max(r["duration_ms"],1)))' "$work/report.json")
    echo "| $round | $mode | $THROUGHPUT_CALLS | $(python3 -c "print($ms/1000)") | $rate |"
    rates[$mode]+="$rate "
    stop "$resppid" "$proxypid"
  done
done
echo
for mode in $MODES; do echo "$mode ${p50s[$mode]} / ${p99s[$mode]} / ${rates[$mode]}"; done | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    mode, rest = line.split(" ", 1)
    rows[mode] = [[float(x) for x in part.split()] for part in rest.split("/")]
med = {m: [statistics.median(v) if v else float("nan") for v in r] for m, r in rows.items()}
d = med.get("direct")
for m, (p50, p99, rate) in med.items():
    if m == "direct" or d is None:
        continue
    print(f"{m}: p50 {p50 - d[0]:+.0f} us, p99 {p99 - d[1]:+.0f} us against direct (medians of rounds: {d[0]:.0f}/{d[1]:.0f} -> {p50:.0f}/{p99:.0f}); throughput {rate / d[2]:.2f} of direct ({d[2]:.0f} -> {rate:.0f} calls/s)")
'

