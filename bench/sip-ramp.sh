#!/usr/bin/env bash
# The SIP front under a sipp ramp: one evapi-sim sip per build, rising rates in steps
# (INVITE -> async relay -> 486 -> ACK, answered by one evapi-client respond), and per
# step the datagrams the kernel dropped in the SIP socket's receive buffer (its
# /proc/net/udp row), sipp's retransmissions and failed calls, p99 (ms, sipp's RTT),
# the server's CPU share and RSS (now, and the peak); then RSS after the ramp.
# Builds run one after the other, each on a fresh process, so their figures sit side
# by side from the same run.
#
#   bench/sip-ramp.sh [SIM...]          # default: kamailio target/release/evapi-sim
#   RATES="8000 16000 24000" STEP_SECONDS=5 bench/sip-ramp.sh /tmp/old/evapi-sim target/release/evapi-sim
#   SIM_OUT=/tmp/sim.log bench/sip-ramp.sh target/release/evapi-sim   # keep the simulator's output
#
# "kamailio" as a SIM runs Kamailio 5.6 with tests/interop/kamailio.cfg tuned as an
# operator would for load (-A TUNED: 4 workers on this 2-core host, debug=1, no memory
# debugging, 1 GiB shared memory); its CPU and memory are its whole process group's
# (memory as PSS, so shared memory is counted once). The last rows give, per server,
# the highest rate with no retransmission and with no failed call.
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
[ $# -gt 0 ] || set -- kamailio target/release/evapi-sim
TCK=$(getconf CLK_TCK)
UAC=$PWD/bench/sipp/uac-486.xml
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && { kill -TERM -- "-$p" 2>/dev/null; kill "$p" 2>/dev/null; } || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
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
# The processes of a server: the simulator, or Kamailio's process group.
procs() { if [ "$kind" = kamailio ]; then ps -o pid= -g "$1" | tr -d ' '; else echo "$1"; fi; }
# Memory in MB: proportional set size summed over the server's processes.
mem_mb() { local p t=0; for p in $(procs "$1"); do t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done; echo $((t / 1024)); }
# CPU ticks of a server's processes (lib.sh's ticks over procs).
# shellcheck disable=SC2046
server_ticks() { ticks $(procs "$1"); }

echo "| server | rate (calls/s) | kernel drops | sipp retransmissions | failed | p99 ms | server CPU % of a core | memory MB (PSS) |"
echo "|---|---|---|---|---|---|---|---|"
summary=()
for sim in "$@"; do
  sip=$(free_port udp); evapi=$(free_port tcp)
  if [ "$sim" = kamailio ]; then
    kind=kamailio; name=kamailio-tuned
    mkdir -p "$work/kam"
    setsid kamailio -f tests/interop/kamailio.cfg -DD -E -Y "$work/kam" -P "$work/kam/pid" -m 1024 -M 16 \
      -A TUNED -A "EVAPIBIND=\"127.0.0.1:$evapi\"" -A "SIPLISTEN=udp:127.0.0.1:$sip" >"$work/kam.out" 2>&1 &
  else
    kind=sim; name=$(basename "$(dirname "$sim")")/$(basename "$sim")
    setsid "$sim" -q sip --listen "127.0.0.1:$sip" --bind "127.0.0.1:$evapi" >"${SIM_OUT:-$work/sim.out}" 2>&1 &
  fi
  simpid=$!; pids+=("$simpid")
  for _ in $(seq 50); do "$CLIENT" -q --addr "127.0.0.1:$evapi" send '{"hello":1}' 2>/dev/null && break; sleep 0.1; done
  "$CLIENT" -q --addr "127.0.0.1:$evapi" respond --code 486 >/dev/null 2>&1 &
  resppid=$!; pids+=("$resppid")
  sleep 0.5
  idle=$(mem_mb "$simpid"); no_retrans=0; no_fail=0
  for rate in $RATES; do
    d0=$(drops "$sip"); t0=$(server_ticks "$simpid"); s0=$(date +%s.%N)
    dir=$(mktemp -d "$work/sipp.XXXX")
    (cd "$dir" && sipp "127.0.0.1:$sip" -sf "$UAC" -m $((rate * STEP_SECONDS)) -r "$rate" -rp 1000 \
        -l $((rate * 4 + 100)) -i 127.0.0.1 -p "$(free_port udp)" -nostdin -nd \
        -buff_size 4194304 -timeout $((STEP_SECONDS * 3 + 20))s -timeout_error \
        -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 500 > sipp.out 2>&1) || true
    d1=$(drops "$sip"); t1=$(server_ticks "$simpid"); s1=$(date +%s.%N)
    read -r retrans failed < <(python3 - "$dir/stat.csv" <<'PY'
import sys
rows = open(sys.argv[1]).read().splitlines()
h, v = rows[0].split(";"), rows[-1].split(";")
print(v[h.index("Retransmissions(C)")], v[h.index("FailedCall(C)")])
PY
)
    read -r _ p99 _ < <(python3 bench/rtt.py "$dir"/*_rtt.csv 2>/dev/null || echo "nan nan 0")
    cpu=$(python3 -c "print(f'{($t1 - $t0) / $TCK / ($s1 - $s0) * 100:.0f}')")
    echo "| $name | $rate | $((d1 - d0)) | $retrans | $failed | $p99 | $cpu | $(mem_mb "$simpid") |"
    if [ "$retrans" -eq 0 ] && [ "$failed" -eq 0 ] && [ -z "${stop_nr:-}" ]; then no_retrans=$rate; else stop_nr=1; fi
    if [ "$failed" -eq 0 ] && [ -z "${stop_nf:-}" ]; then no_fail=$rate; else stop_nf=1; fi
  done
  unset stop_nr stop_nf
  after="" waited=0
  for at in $AFTER; do
    sleep $((at - waited)); waited=$at
    after+="${after:+, }${at} s after: $(mem_mb "$simpid") MB"
  done
  echo "| $name | idle before: $idle MB; $after | | | | | | |"
  summary+=("| $name | $no_retrans | $no_fail |")
  kill "$resppid" 2>/dev/null || true; kill -TERM -- "-$simpid" 2>/dev/null || true
  wait "$resppid" "$simpid" 2>/dev/null || true
done
echo
echo "| server | highest rate with no retransmission (calls/s) | highest rate with no failed call |"
echo "|---|---|---|"
printf '%s\n' "${summary[@]}"
