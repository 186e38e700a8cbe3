#!/usr/bin/env bash
# The SIP front under a sipp ramp: one evapi-sim sip per build, rising rates in steps
# (INVITE -> async relay -> 486 -> ACK, answered by one evapi-client respond), and per
# step the datagrams the kernel dropped in the SIP socket's receive buffer (its
# /proc/net/udp row), sipp's retransmissions and failed calls, p99 (ms, sipp's RTT),
# the server's CPU share and RSS (now, and the peak); then RSS after the ramp.
# Builds run one after the other, each on a fresh process, so their figures sit side
# by side from the same run.
#
#   bench/sip-ramp.sh [SIM...]          # default: target/release/evapi-sim
#   RATES="8000 16000 24000" STEP_SECONDS=5 bench/sip-ramp.sh /tmp/old/evapi-sim target/release/evapi-sim
#
# Needs sipp (sip-tester) and python3. Loopback only; every process is ours, stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"8000 12000 16000 20000 24000"}
STEP_SECONDS=${STEP_SECONDS:-5}
# RSS is read this many seconds after the last step (the transactions' timers run out
# within 32 s: Timer H).
AFTER=${AFTER:-"5 40"}
CLIENT=${CLIENT:-target/release/evapi-client}
[ $# -gt 0 ] || set -- target/release/evapi-sim
TCK=$(getconf CLK_TCK)
UAC=$PWD/bench/sipp/uac-486.xml
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
# drops PORT: the drops column of the UDP socket bound to 127.0.0.1:PORT.
drops() { python3 - "$1" <<'PY'
import sys
port = "%04X" % int(sys.argv[1])
for line in open("/proc/net/udp").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "0100007F:" + port:
        print(f[-1]); break
else:
    print(0)
PY
}
rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| build | rate (calls/s) | kernel drops | sipp retransmissions | failed | p99 ms | server CPU % of a core | RSS MB (peak) |"
echo "|---|---|---|---|---|---|---|---|"
for sim in "$@"; do
  sip=$(free_port udp); evapi=$(free_port tcp)
  "$sim" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$evapi" >"$work/sim.out" 2>&1 &
  simpid=$!; pids+=("$simpid")
  for _ in $(seq 50); do "$CLIENT" -q --addr "127.0.0.1:$evapi" send '{"hello":1}' 2>/dev/null && break; sleep 0.1; done
  "$CLIENT" -q --addr "127.0.0.1:$evapi" respond --code 486 >/dev/null 2>&1 &
  resppid=$!; pids+=("$resppid")
  sleep 0.5
  idle=$(rss_mb "$simpid")
  for rate in $RATES; do
    d0=$(drops "$sip"); t0=$(ticks "$simpid"); s0=$(date +%s.%N)
    dir=$(mktemp -d "$work/sipp.XXXX")
    (cd "$dir" && sipp "127.0.0.1:$sip" -sf "$UAC" -m $((rate * STEP_SECONDS)) -r "$rate" -rp 1000 \
        -l $((rate * 4 + 100)) -i 127.0.0.1 -p "$(free_port udp)" -nostdin -nd \
        -buff_size 4194304 -timeout $((STEP_SECONDS * 3 + 20))s -timeout_error \
        -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 500 > sipp.out 2>&1) || true
    d1=$(drops "$sip"); t1=$(ticks "$simpid"); s1=$(date +%s.%N)
    read -r retrans failed < <(python3 - "$dir/stat.csv" <<'PY'
import sys
rows = open(sys.argv[1]).read().splitlines()
h, v = rows[0].split(";"), rows[-1].split(";")
print(v[h.index("Retransmissions(C)")], v[h.index("FailedCall(C)")])
PY
)
    read -r _ p99 _ < <(python3 bench/rtt.py "$dir"/*_rtt.csv 2>/dev/null || echo "nan nan 0")
    cpu=$(python3 -c "print(f'{($t1 - $t0) / $TCK / ($s1 - $s0) * 100:.0f}')")
    echo "| $(basename "$(dirname "$sim")")/$(basename "$sim") | $rate | $((d1 - d0)) | $retrans | $failed | $p99 | $cpu | $(rss_mb "$simpid") ($(hwm_mb "$simpid")) |"
  done
  after="" waited=0
  for at in $AFTER; do
    sleep $((at - waited)); waited=$at
    after+="${after:+, }${at} s after: $(rss_mb "$simpid") MB"
  done
  echo "| $(basename "$(dirname "$sim")")/$(basename "$sim") | idle before: $idle MB; $after | | | | | | |"
  kill "$resppid" "$simpid" 2>/dev/null || true; wait "$resppid" "$simpid" 2>/dev/null || true
done
