#!/usr/bin/env bash
# A/B of two evapi-sim builds on the SIP front: the same load (evapi-sim load, INVITE ->
# async relay -> 486 -> ACK) against each, answered by the same evapi-client respond,
# interleaved A B A B so drift on a shared machine hits both. Prints, per rate and run,
# the simulator's CPU ticks per 1,000 calls, the load generator's p50/p99 (us) and
# failures, then the B/A ratio of the CPU medians.
#
#   bench/sim-ab.sh OLD/evapi-sim NEW/evapi-sim [CLIENT]
#   RATES="2000 8000" SECONDS_PER_RUN=5 ROUNDS=3 bench/sim-ab.sh ...
#
# Build the old one from a worktree: git worktree add /tmp/old REV &&
#   (cd /tmp/old && cargo build --release --bins). Loopback only.
set -euo pipefail
A=${1:?usage: sim-ab.sh A_SIM B_SIM [CLIENT]}
B=${2:?usage: sim-ab.sh A_SIM B_SIM [CLIENT]}
CLIENT=${3:-$(dirname "$B")/evapi-client}
RATES=${RATES:-"2000 8000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
LOADER=$B
TCK=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run_one() { # sim rate -> "ticks_per_1000 p50 p99 failed"
  local sim=$1 rate=$2 sip evapi simpid resppid calls before after out
  sip=$(free_port udp); evapi=$(free_port tcp)
  "$sim" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$evapi" >/dev/null 2>&1 &
  simpid=$!; pids+=("$simpid")
  for _ in $(seq 50); do "$CLIENT" -q --addr "127.0.0.1:$evapi" send '{"hello":1}' 2>/dev/null && break; sleep 0.1; done
  "$CLIENT" -q --addr "127.0.0.1:$evapi" respond --code 486 >/dev/null 2>&1 &
  resppid=$!; pids+=("$resppid")
  sleep 0.3
  calls=$((rate * SECONDS_PER_RUN))
  before=$(awk '{print $14 + $15}' "/proc/$simpid/stat")
  out=$("$LOADER" load "127.0.0.1:$sip" --rate "$rate" --calls "$calls" --expect-code 486 2>/dev/null || true)
  after=$(awk '{print $14 + $15}' "/proc/$simpid/stat")
  kill "$resppid" "$simpid" 2>/dev/null || true; wait "$resppid" "$simpid" 2>/dev/null || true
  python3 - "$out" "$((after - before))" "$calls" "$TCK" <<'PY'
import json, sys
r = json.loads(sys.argv[1] or '{}'); ticks, calls, tck = map(int, sys.argv[2:5])
lat = r.get('latency', {})
print(f"{ticks * 1000 / calls / tck * 1000:.1f} {lat.get('p50_us', 0)} {lat.get('p99_us', 0)} {r.get('failed', calls)}")
PY
}

echo "| rate | build | round | CPU ms / 1,000 calls | p50 us | p99 us | failed |"
echo "|---|---|---|---|---|---|---|"
declare -A cpu
for rate in $RATES; do
  for round in $(seq "$ROUNDS"); do
    for which in A B; do
      sim=$A; [ "$which" = B ] && sim=$B
      read -r c p50 p99 failed <<<"$(run_one "$sim" "$rate")"
      echo "| $rate | $which | $round | $c | $p50 | $p99 | $failed |"
      cpu[$rate$which]+="$c "
    done
  done
done
echo
for rate in $RATES; do
  python3 - "$rate" "${cpu[${rate}A]}" "${cpu[${rate}B]}" <<'PY'
import statistics, sys
rate, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{rate} calls/s: CPU per call B/A = {mb / ma:.2f} (medians {mb:.1f} / {ma:.1f} ms per 1,000 calls)")
PY
done
