#!/usr/bin/env bash
# Scale-out over NATS JetStream beside the direct socket, in the same run.
#
# Each row: N SIP nodes (evapi-sim sip), the offered rate split between them by
# evapi-sim load (INVITE -> async relay -> 486 -> ACK), answered either directly (one
# evapi-client respond per node, on its socket) or through NATS (a bridge per node,
# nats-server with JetStream, R evapi-client respond --nats). Printed per row: calls
# answered per second, CPU of everything on the answer path (nodes, bridges,
# responders, nats-server) in ms per 1,000 calls, the loader's p50/p99 (us, the slower
# node's when there are two) and failed calls; then what NATS adds against the direct
# row of the same node count.
#
#   bench/scale-out.sh [BIN_DIR]                 # BIN_DIR: target/release by default
#   RATES="1000 4000" SECONDS_PER_RUN=5 bench/scale-out.sh
#   STORAGE=memory bench/scale-out.sh          # JetStream streams in memory (default file)
#
# Loopback only; every process is started here and stopped by PID.
set -euo pipefail
BIN=${1:-target/release}
SIM=$BIN/evapi-sim
CLIENT=$BIN/evapi-client
RATES=${RATES:-"1000 4000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
# "nodes:responders" for the NATS rows; the direct rows have one responder per node.
SHAPES=${SHAPES:-"1:1 1:2 1:4 2:1 2:2 2:4"}
STORAGE=${STORAGE:-file}
TCK=$(getconf CLK_TCK)
command -v nats-server >/dev/null || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 2; }
[ -x "$SIM" ] && [ -x "$CLIENT" ] || { echo "build first: cargo build --release --locked --bins" >&2; exit 2; }
BENCH=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
work=$(mktemp -d)
pids=()
trap 'stop_all; rm -rf "$work"' EXIT

# run_row MODE NODES RESPONDERS RATE -> "answered_per_s cpu_ms_per_1000 p50 p99 failed split"
# (split: CPU ms per 1,000 calls of nodes/bridges/responders/nats-server)
run_row() {
  local mode=$1 nodes=$2 resp=$3 rate=$4 sips=() path=() nats="" i sip evapi p before after calls per
  local role_nodes=() role_bridges=() role_resp=() role_nats=()
  if [ "$mode" = nats ]; then
    local port; port=$(free_port tcp)
    rm -rf "$work/js"; nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/js" >/dev/null 2>&1 &
    pids+=($!); path+=($!); role_nats+=($!); nats="nats://127.0.0.1:$port"
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  fi
  for i in $(seq "$nodes"); do
    sip=$(free_port udp); evapi=$(free_port tcp)
    "$SIM" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$evapi" >/dev/null 2>&1 &
    pids+=($!); path+=($!); role_nodes+=($!); sips+=("127.0.0.1:$sip")
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$evapi") 2>/dev/null && break; sleep 0.1; done
    if [ "$mode" = nats ]; then
      "$CLIENT" -q --addr "127.0.0.1:$evapi" --wait 5s bridge --nats "$nats" --node "node-$i" --storage "$STORAGE" >/dev/null 2>&1 &
      role_bridges+=($!)
    else
      "$CLIENT" -q --addr "127.0.0.1:$evapi" --wait 5s respond --code 486 >/dev/null 2>&1 &
      role_resp+=($!)
    fi
    pids+=($!); path+=($!)
  done
  if [ "$mode" = nats ]; then
    for i in $(seq "$resp"); do
      "$CLIENT" -q respond --nats "$nats" --storage "$STORAGE" --code 486 >/dev/null 2>&1 &
      pids+=($!); path+=($!); role_resp+=($!)
    done
  fi
  sleep 1
  calls=$((rate * SECONDS_PER_RUN / nodes)); per=$((rate / nodes))
  before=$(ticks "${path[@]}")
  local b_nodes b_bridges b_resp b_nats
  b_nodes=$(ticks "${role_nodes[@]}"); b_bridges=$(ticks "${role_bridges[@]:-}")
  b_resp=$(ticks "${role_resp[@]}"); b_nats=$(ticks "${role_nats[@]:-}")
  local start end outs=()
  start=$(date +%s.%N)
  for i in $(seq "$nodes"); do
    "$SIM" -q load "${sips[$((i - 1))]}" --rate "$per" --calls "$calls" --expect-code 486 >"$work/load-$i.json" 2>/dev/null &
    outs+=($!)
  done
  for p in "${outs[@]}"; do wait "$p" || true; done
  end=$(date +%s.%N)
  after=$(ticks "${path[@]}")
  local split
  split="$(( $(ticks "${role_nodes[@]}") - b_nodes )),$(( $(ticks "${role_bridges[@]:-}") - b_bridges )),$(( $(ticks "${role_resp[@]}") - b_resp )),$(( $(ticks "${role_nats[@]:-}") - b_nats ))"
  stop_all
  PYTHONPATH="$BENCH" python3 - "$work" "$nodes" "$((after - before))" "$TCK" "$start" "$end" "$split" <<'PY'
import sys
from loads import summary
work, nodes, ticks, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
split = [int(t) for t in sys.argv[7].split(',')]
secs = float(sys.argv[6]) - float(sys.argv[5])
ok, failed, p50, p99 = summary(work, nodes)
per = lambda t: t * 1000 / tck * 1000 / max(ok, 1)
print(f"{ok / secs:.0f} {per(ticks):.1f} {p50} {p99} {failed} " + "/".join(f"{per(t):.0f}" for t in split))
PY
}

echo "| rate (calls/s offered) | nodes | path | responders | answered calls/s | CPU ms / 1,000 calls | of which nodes/bridges/responders/nats-server | p50 us | p99 us | failed | CPU vs direct | p50 / p99 added (us) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for rate in $RATES; do
  declare -A direct=()
  for nodes in 1 2; do
    read -r ans cpu p50 p99 failed split <<<"$(run_row direct "$nodes" "$nodes" "$rate")"
    direct[$nodes]="$cpu $p50 $p99"
    echo "| $rate | $nodes | direct socket | $nodes | $ans | $cpu | $split | $p50 | $p99 | $failed | 1.00 | - |"
  done
  for shape in $SHAPES; do
    nodes=${shape%%:*}; resp=${shape##*:}
    read -r ans cpu p50 p99 failed split <<<"$(run_row nats "$nodes" "$resp" "$rate")"
    read -r dcpu dp50 dp99 <<<"${direct[$nodes]}"
    ratio=$(python3 -c "print(f'{$cpu / max($dcpu, 0.001):.2f}')")
    echo "| $rate | $nodes | NATS | $resp | $ans | $cpu | $split | $p50 | $p99 | $failed | $ratio | $((p50 - dp50)) / $((p99 - dp99)) |"
  done
done
