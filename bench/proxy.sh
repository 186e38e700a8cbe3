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
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# app_addr MODE NODE_PORT: start the proxy for MODE=proxy; print where the app connects.
app_addr() {
  if [ "$1" = proxy ]; then
    local p; p=$(free_port tcp)
    "$CLIENT" -q proxy --listen "127.0.0.1:$p" --upstream "127.0.0.1:$2" --record "$work/t.jsonl" >/dev/null 2>&1 &
    pids+=($!); proxypid=$!
    wait_port "$p"
    echo "127.0.0.1:$p"
  else
    proxypid=""
    echo "127.0.0.1:$2"
  fi
}
stop() { for p in "$@"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; for p in "$@"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; }

echo "# the recording proxy against a direct connection, $(date -u +%F), $(nproc) CPUs"
echo
echo "| round | mode | rate (calls/s) | p50 us | p99 us | failed |"
echo "|---|---|---|---|---|---|"
declare -A p99s
for round in $(seq "$ROUNDS"); do
  for mode in direct proxy; do
    sip=$(free_port udp); node=$(free_port tcp)
    "$SIM" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$node" >/dev/null 2>&1 &
    simpid=$!; pids+=("$simpid")
    wait_port "$node"
    addr=$(app_addr "$mode" "$node")
    "$CLIENT" -q --addr "$addr" respond --code 486 >/dev/null 2>&1 &
    resppid=$!; pids+=("$resppid")
    sleep 0.5
    out=$("$SIM" load "127.0.0.1:$sip" --rate "$RATE" --calls "$CALLS" --expect-code 486 2>/dev/null || true)
    read -r p50 p99 failed < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["latency"]["p50_us"], r["latency"]["p99_us"], r["failed"])' "$out")
    echo "| $round | $mode | $RATE | $p50 | $p99 | $failed |"
    p99s[$mode]+="$p99 "
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
  for mode in direct proxy; do
    node=$(free_port tcp)
    "$SIM" run "$work/scenario.json" --bind "127.0.0.1:$node" --no-progress --report "$work/report.json" >/dev/null 2>&1 &
    simpid=$!; pids+=("$simpid")
    wait_port "$node"
    addr=$(app_addr "$mode" "$node")
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
python3 - "${p99s[direct]}" "${p99s[proxy]}" "${rates[direct]}" "${rates[proxy]}" <<'PY'
import statistics, sys
d99, p99, dr, pr = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"p99 added by the proxy (median of rounds): {statistics.median(p99) - statistics.median(d99):+.0f} us "
      f"(direct {statistics.median(d99):.0f}, proxy {statistics.median(p99):.0f})")
print(f"throughput through the proxy / direct (median of rounds): {statistics.median(pr) / statistics.median(dr):.2f} "
      f"(direct {statistics.median(dr):.0f} calls/s, proxy {statistics.median(pr):.0f})")
PY
