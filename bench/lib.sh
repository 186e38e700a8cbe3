# Helpers shared by the bench scripts (sourced): free loopback ports, stopping what a
# script started (by PID, newest first), and CPU clock ticks of processes.
# shellcheck shell=bash

# A free loopback port: free_port tcp | free_port udp.
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

# Stop every PID in the array `pids`, the last started first (apps before the servers
# they talk to), and wait for them.
stop_all() {
  local rev=() p
  for p in "${pids[@]:-}"; do rev=("$p" "${rev[@]}"); done
  for p in "${rev[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${rev[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  pids=()
}

# User + system clock ticks of the given PIDs, summed.
ticks() { local t=0 p; for p in "$@"; do [ -n "$p" ] || continue; t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
