#!/bin/bash
# The hot-path benches (relay fan-out, auto-responder, the sim's transaction table) at two commits, interleaved, so a
# change can be judged against the same machine in the same minutes:
#   bench/ab.sh BEFORE AFTER [ROUNDS]     e.g. bench/ab.sh 93c20eb HEAD 2
# Each commit is checked out in its own worktree under ${TMPDIR:-/tmp} with its own
# target directory (release builds: about 8 minutes each on 2 cores the first time).
# Compare each table's ratio to its own baseline: absolute figures move with the load.
set -euo pipefail
before=${1:?usage: bench/ab.sh BEFORE AFTER [ROUNDS]}
after=${2:?usage: bench/ab.sh BEFORE AFTER [ROUNDS]}
rounds=${3:-2}
root=$(git rev-parse --show-toplevel)
work=${TMPDIR:-/tmp}/evapi-ab
mkdir -p "$work"
export CARGO_INCREMENTAL=0
# The respond bench's package: evapi-client until the crates split, evapi-tests since.
respond_pkg() { if [ -f "$1/tests/benches/respond.rs" ]; then echo evapi-tests; else echo evapi-client; fi; }
for name in before after; do
  rev=${!name}
  dir=$work/$name
  git -C "$root" worktree remove --force "$dir" 2>/dev/null || true
  git -C "$root" worktree add --detach "$dir" "$rev" >/dev/null
  (cd "$dir" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -p evapi-server --bench fanout --no-run -q)
  (cd "$dir" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -p "$(respond_pkg "$dir")" --bench respond --no-run -q)
  (cd "$dir" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -p evapi-sim --bench tm --no-run -q)
done
for round in $(seq "$rounds"); do
  for name in before after; do
    echo "=== $name (${!name}) round $round"
    (cd "$work/$name" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -q -p evapi-server --bench fanout -- --quick)
    (cd "$work/$name" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -q -p "$(respond_pkg "$work/$name")" --bench respond -- --quick)
    (cd "$work/$name" && CARGO_TARGET_DIR=$work/target-$name cargo bench --locked -q -p evapi-sim --bench tm -- --quick)
  done
done
