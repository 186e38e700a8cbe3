#!/usr/bin/env bash
# One app serving two nodes beside one app per node, in the same run (issue 26).
#
# Two SIP nodes (evapi-sim sip), the offered rate split between them by evapi-sim load
# (INVITE -> async relay -> 486 -> ACK). Answered either by two evapi-client respond
# processes (one per node, `--addr` once each) or by one (`--addr a,b`). The two
# setups alternate, ROUNDS times, so both see the same noise. Printed per row: calls
# answered per second, CPU of the responder process(es) in ms per 1,000 calls, the
# loader's p50/p99 (us, the slower node's) and failed calls; then the one-process
# figures as ratios to the two-process ones of the same round.
#
#   bench/nodes.sh [BIN_DIR]                 # BIN_DIR: target/release by default
#   RATES="2000 8000" ROUNDS=3 SECONDS_PER_RUN=5 bench/nodes.sh
#
# Loopback only; every process is started here and stopped by PID.
set -euo pipefail
BIN=${1:-target/release}
SIM=$BIN/evapi-sim
CLIENT=$BIN/evapi-client
RATES=${RATES:-"2000 8000"}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
TCK=$(getconf CLK_TCK)
[ -x "$SIM" ] && [ -x "$CLIENT" ] || { echo "build first: cargo build --release --locked --bins" >&2; exit 2; }
BENCH=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
work=$(mktemp -d)
pids=()
trap 'stop_all; rm -rf "$work"' EXIT

# run_row MODE RATE -> "answered_per_s responder_cpu_ms_per_1000 p50 p99 failed"
run_row() {
  local mode=$1 rate=$2 sips=() evapis=() resp=() i sip evapi
  for i in 1 2; do
    sip=$(free_port udp); evapi=$(free_port tcp)
    "$SIM" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$evapi" >/dev/null 2>&1 &
    pids+=($!); sips+=("127.0.0.1:$sip"); evapis+=("127.0.0.1:$evapi")
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$evapi") 2>/dev/null && break; sleep 0.1; done
  done
  if [ "$mode" = one ]; then
    "$CLIENT" -q --addr "a=${evapis[0]},b=${evapis[1]}" --wait 5s respond --code 486 >/dev/null 2>&1 &
    pids+=($!); resp+=($!)
  else
    for i in 0 1; do
      "$CLIENT" -q --addr "${evapis[$i]}" --wait 5s respond --code 486 >/dev/null 2>&1 &
      pids+=($!); resp+=($!)
    done
  fi
  sleep 1
  local calls=$((rate * SECONDS_PER_RUN / 2)) per=$((rate / 2)) before after outs=() start end
  before=$(ticks "${resp[@]}")
  start=$(date +%s.%N)
  for i in 1 2; do
    "$SIM" -q load "${sips[$((i - 1))]}" --rate "$per" --calls "$calls" --expect-code 486 >"$work/load-$i.json" 2>/dev/null &
    outs+=($!)
  done
  for p in "${outs[@]}"; do wait "$p" || true; done
  end=$(date +%s.%N)
  after=$(ticks "${resp[@]}")
  stop_all
  PYTHONPATH="$BENCH" python3 - "$work" "$((after - before))" "$TCK" "$start" "$end" <<'PY'
import sys
from loads import summary
work, ticks, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secs = float(sys.argv[5]) - float(sys.argv[4])
ok, failed, p50, p99 = summary(work, 2)
print(f"{ok / secs:.0f} {ticks * 1000 / tck * 1000 / max(ok, 1):.1f} {p50} {p99} {failed}")
PY
}

echo "| rate (calls/s offered, 2 nodes) | round | responders | answered calls/s | responder CPU ms / 1,000 calls | p50 us | p99 us | failed | answered/s vs two | CPU vs two |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for rate in $RATES; do
  for round in $(seq "$ROUNDS"); do
    read -r tans tcpu tp50 tp99 tfailed <<<"$(run_row two "$rate")"
    echo "| $rate | $round | two processes | $tans | $tcpu | $tp50 | $tp99 | $tfailed | 1.00 | 1.00 |"
    read -r ans cpu p50 p99 failed <<<"$(run_row one "$rate")"
    ratios=$(python3 -c "print(f'{$ans / max($tans, 1):.2f} | {$cpu / max($tcpu, 0.001):.2f}')")
    echo "| $rate | $round | one process, --addr a,b | $ans | $cpu | $p50 | $p99 | $failed | $ratios |"
  done
done
