#!/usr/bin/env bash
# Run every in-tree benchmark and write one results file, named by date and commit, for
# docs/benchmarks.md to quote: bench/results-YYYY-MM-DD-COMMIT.md.
#
#   bench/run-all.sh            # full runs (several minutes on 2 cores)
#   QUICK=1 bench/run-all.sh    # shorter runs where a bench has --quick
#
# Each figure is a ratio against a baseline measured in the same run where the bench
# has one (memcpy, plain TCP, echo), since the machines are shared and noisy. Run it
# after changing measured code, and update docs/benchmarks.md from the file.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse --short HEAD)
dirty=$(git diff --quiet HEAD -- . ':!bench/results-*' || echo " (with uncommitted changes)")
out="bench/results-$(date -u +%F)-$commit.md"
quick=${QUICK:+--quick}
{
  echo "# Benchmarks at $commit$dirty, $(date -u '+%F %H:%M') UTC"
  echo
  echo "Host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo
  echo "## evapi-proto: codec (criterion; MiB/s and frames/s in the lines below)"
  echo '```text'
  cargo bench -q -p evapi-proto --bench codec -- --noplot 2>/dev/null | grep -E 'time:|thrpt:|^[a-z_/0-9]+' || true
  echo '```'
  echo
  echo "## evapi-server: relay fan-out and memory"
  cargo bench -q -p evapi-server --bench fanout -- $quick 2>/dev/null
  echo
  echo "## evapi-client: auto-responder"
  cargo bench -q -p evapi-tests --bench respond -- $quick 2>/dev/null
  echo
  echo "## evapi-sim: transaction table"
  cargo bench -q -p evapi-sim --bench tm 2>/dev/null
} | tee "$out"
echo "written: $out" >&2
