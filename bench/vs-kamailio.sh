#!/usr/bin/env bash
# Side by side on one machine: Kamailio 5.6 (evapi_async_relay + t_continue) and
# evapi-sim sip, both driven by sipp, both answered by the same evapi-client respond.
#
#   bench/vs-kamailio.sh            # full run, about 10 minutes
#   QUICK=1 bench/vs-kamailio.sh    # shorter steps, for a smoke test
#
# Prints markdown tables (docs/benchmarks.md keeps a copy):
#   1. highest call rate with zero failed calls (rising rates);
#   2. at fixed rates: p50/p99 response time (sipp's per-call RTT), CPU seconds per
#      1,000 calls of the server (all Kamailio processes / the simulator) and of the
#      responder;
#   3. relay fan-out: SIP MESSAGE -> evapi relay to 1 and 4 listening clients;
#   4. a stalled client that never reads while calls flow.
# Kamailio runs tests/interop/kamailio.cfg with -A TUNED (4 workers, debug=1, no memory
# debugging, 1 GiB shared memory), as an operator would run it under load.
# Needs: kamailio, kamailio-extra-modules, sip-tester (sipp), python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
STEP_SECONDS=${STEP_SECONDS:-$([ -n "$QUICK" ] && echo 2 || echo 5)}
RATES=${RATES:-"1000 2000 4000 6000 8000 10000 12000 14000"}
FIXED_RATES=${FIXED_RATES:-"2000 8000"}
FANOUT_RATE=${FANOUT_RATE:-4000}
CODE=486
# Which parts to run (all by default): rate fixed latency fanout stall
SECTIONS=${SECTIONS:-"rate fixed latency fanout stall"}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

work=$(mktemp -d /tmp/evapi-vs-kamailio.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null || true
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked -q --bins
SIM=$PWD/target/release/evapi-sim
CLIENT=$PWD/target/release/evapi-client
CFG=$PWD/tests/interop/kamailio.cfg
UAC=$PWD/bench/sipp/uac-486.xml
UAC_MSG=$PWD/bench/sipp/uac-message.xml
TCK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. bench/lib.sh

group_pids() { ps -o pid= -g "$1" | tr -d ' ' | tr '\n' ' '; }

wait_tcp() {
  local port=$1 i
  for i in $(seq 200); do
    if python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2); s.close()' "$port" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $port" >&2; return 1
}

# start_server kamailio|sim -> sets SERVER_PID (process group leader), SIP_PORT, EVAPI_PORT
start_server() {
  SIP_PORT=$(free_port udp); EVAPI_PORT=$(free_port tcp)
  if [ "$1" = kamailio ]; then
    mkdir -p "$work/kam"
    setsid kamailio -f "$CFG" -DD -E -Y "$work/kam" -P "$work/kam/pid" -m 1024 -M 16 -A TUNED \
      -A "EVAPIBIND=\"127.0.0.1:$EVAPI_PORT\"" -A "SIPLISTEN=udp:127.0.0.1:$SIP_PORT" \
      > "$work/kamailio.log" 2>&1 &
  else
    setsid "$SIM" sip --listen "127.0.0.1:$SIP_PORT" --bind "127.0.0.1:$EVAPI_PORT" \
      --fr-inv-timer 30s -q > "$work/sim.out" 2>&1 &
  fi
  SERVER_PID=$!; pids+=("$SERVER_PID")
  wait_tcp "$EVAPI_PORT"
  sleep 0.3
}
stop_server() { kill -TERM -- "-$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

start_responder() {
  "$CLIENT" --addr "127.0.0.1:$EVAPI_PORT" -q respond --code "$CODE" > "$work/respond.out" 2>&1 &
  RESP_PID=$!; pids+=("$RESP_PID")
  sleep 0.3
}
stop_responder() { kill -INT "$RESP_PID" 2>/dev/null || true; wait "$RESP_PID" 2>/dev/null || true; }

# run_sipp SCENARIO RATE CALLS -> sets FAILED, OK, P50, P99 (ms)
run_sipp() {
  local scenario=$1 rate=$2 calls=$3 dir
  dir=$(mktemp -d "$work/sipp.XXXX")
  (cd "$dir" && sipp "127.0.0.1:$SIP_PORT" -sf "$scenario" -m "$calls" -r "$rate" -rp 1000 \
      -l $((rate * 4 + 100)) -i 127.0.0.1 -p "$(free_port udp)" -nostdin -nd \
      -buff_size 4194304 -timeout $((STEP_SECONDS * 3 + 20))s -timeout_error \
      -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 500 > sipp.out 2>&1) || true
  local last
  last=$(tail -n 1 "$dir/stat.csv")
  local header
  header=$(head -n 1 "$dir/stat.csv")
  OK=$(python3 - "$header" "$last" <<'PY'
import sys
h=sys.argv[1].split(";"); v=sys.argv[2].split(";")
print(v[h.index("SuccessfulCall(C)")])
PY
)
  FAILED=$(python3 - "$header" "$last" <<'PY'
import sys
h=sys.argv[1].split(";"); v=sys.argv[2].split(";")
print(v[h.index("FailedCall(C)")])
PY
)
  read -r P50 P99 _ < <(python3 bench/rtt.py "$dir"/*_rtt.csv 2>/dev/null || echo "nan nan 0")
  [ "$OK" -ge "$calls" ] || FAILED=$((calls - OK))
}

echo "# evapi-sim sip vs Kamailio $(kamailio -v | head -1 | awk '{print $3}'), $(date -u +%Y-%m-%d), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo

# 1. Highest rate with zero failed calls.
declare -A best
want rate && for server in kamailio sim; do
  best[$server]=0
  start_server "$server"; start_responder
  for rate in $RATES; do
    run_sipp "$UAC" "$rate" $((rate * STEP_SECONDS))
    echo "  $server at $rate calls/s: $OK ok, $FAILED failed, p50 ${P50}ms p99 ${P99}ms" >&2
    if [ "$FAILED" -eq 0 ]; then best[$server]=$rate; else break; fi
  done
  stop_responder; stop_server
done
want rate && echo "| highest zero-failure rate (INVITE -> evapi async relay -> responder 486 -> ACK), calls/s | Kamailio | evapi-sim sip |"
want rate && echo "|---|---|---|"
want rate && echo "| steps of ${STEP_SECONDS}s, rates: ${RATES// /, } | ${best[kamailio]} | ${best[sim]} |"
echo

# 2. Fixed rates: latency and CPU per 1,000 calls.
want fixed && echo "| at a fixed rate | server | failed | p50 ms | p99 ms | server CPU s / 1000 calls | responder CPU s / 1000 calls |"
want fixed && echo "|---|---|---|---|---|---|---|"
want fixed && for rate in $FIXED_RATES; do
  for server in kamailio sim; do
    start_server "$server"; start_responder
    calls=$((rate * STEP_SECONDS))
    spids=$(group_pids "$SERVER_PID")
    s0=$(ticks $spids); r0=$(ticks "$RESP_PID")
    run_sipp "$UAC" "$rate" "$calls"
    s1=$(ticks $spids); r1=$(ticks "$RESP_PID")
    stop_responder; stop_server
    name=$([ "$server" = sim ] && echo "evapi-sim sip" || echo "Kamailio")
    echo "| $rate calls/s, $calls calls | $name | $FAILED | $P50 | $P99 | $(python3 -c "print(f'{($s1-$s0)/$TCK/$calls*1000:.3f}')") | $(python3 -c "print(f'{($r1-$r0)/$TCK/$calls*1000:.3f}')") |"
  done
done
echo

# 2b. The same fixed rates measured with evapi-sim load: microsecond response times
# (sipp rounds to milliseconds), the same INVITE -> 486 -> ACK exchange.
want latency && echo "| at a fixed rate, evapi-sim load (us) | server | failed | retransmitted INVITEs | p50 us | p90 us | p99 us | max us | server CPU s / 1000 calls |"
want latency && echo "|---|---|---|---|---|---|---|---|---|"
want latency && for rate in $FIXED_RATES; do
  for server in kamailio sim; do
    start_server "$server"; start_responder
    calls=$((rate * STEP_SECONDS))
    spids=$(group_pids "$SERVER_PID")
    s0=$(ticks $spids)
    report=$("$SIM" load "127.0.0.1:$SIP_PORT" --rate "$rate" --calls "$calls" --expect-code "$CODE" 2>/dev/null || true)
    s1=$(ticks $spids)
    stop_responder; stop_server
    name=$([ "$server" = sim ] && echo "evapi-sim sip" || echo "Kamailio")
    python3 - "$report" "$rate" "$calls" "$name" "$((s1 - s0))" "$TCK" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); rate, calls, name, ticks, tck = sys.argv[2:7]
l = r["latency"]
cpu = int(ticks) / int(tck) / int(calls) * 1000
print(f"| {rate} calls/s, {calls} calls | {name} | {r['failed']} | {r['retransmissions']} | {l['p50_us']} | {l['p90_us']} | {l['p99_us']} | {l['max_us']} | {cpu:.3f} |")
PY
  done
done
echo

# 3. Relay fan-out: MESSAGE -> evapi relay to N listening clients.
want fanout && echo "| relay fan-out at $FANOUT_RATE MESSAGE/s | server | listeners | failed | events received per listener | server CPU s / 1000 messages |"
want fanout && echo "|---|---|---|---|---|---|"
want fanout && for listeners in 1 4; do
  for server in kamailio sim; do
    start_server "$server"
    calls=$((FANOUT_RATE * STEP_SECONDS))
    lpids=()
    for i in $(seq "$listeners"); do
      "$CLIENT" --addr "127.0.0.1:$EVAPI_PORT" -q listen --count "$calls" --timeout $((STEP_SECONDS * 3 + 20))s > "$work/listen.$i" 2>/dev/null &
      lpids+=($!); pids+=($!)
    done
    sleep 0.3
    spids=$(group_pids "$SERVER_PID")
    s0=$(ticks $spids)
    run_sipp "$UAC_MSG" "$FANOUT_RATE" "$calls"
    for p in "${lpids[@]}"; do wait "$p" 2>/dev/null || true; done
    s1=$(ticks $spids)
    got=$(for i in $(seq "$listeners"); do wc -l < "$work/listen.$i"; done | sort -n | head -1)
    stop_server
    name=$([ "$server" = sim ] && echo "evapi-sim sip" || echo "Kamailio")
    echo "| $calls messages | $name | $listeners | $FAILED | $got of $calls (fewest) | $(python3 -c "print(f'{($s1-$s0)/$TCK/$calls*1000:.3f}')") |"
  done
done
echo

# 4. A stalled client: connects to the evapi socket and never reads.
STALL_RATE=${STALL_RATE:-2000}
STALL_SECONDS=${STALL_SECONDS:-$([ -n "$QUICK" ] && echo 5 || echo 15)}
want stall && echo "| one stalled evapi client, $STALL_RATE calls/s for ${STALL_SECONDS}s | server | ok | failed |"
want stall && echo "|---|---|---|---|"
want stall && for server in kamailio sim; do
  start_server "$server"; start_responder
  python3 - "$EVAPI_PORT" <<'PY' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
time.sleep(3600)
PY
  stall=$!; pids+=("$stall")
  sleep 0.3
  run_sipp "$UAC" "$STALL_RATE" $((STALL_RATE * STALL_SECONDS))
  kill "$stall" 2>/dev/null || true
  stop_responder; stop_server
  name=$([ "$server" = sim ] && echo "evapi-sim sip" || echo "Kamailio")
  echo "| | $name | $OK | $FAILED |"
done
exit 0
