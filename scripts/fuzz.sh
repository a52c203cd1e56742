#!/usr/bin/env bash
# The stable-Rust fuzzer (tests/fuzz/): every parser of bytes from disk or a pipe — config,
# key file, snapshot, chunk-list block, pack header and trailer, every completeness walker —
# fed mutated real inputs: by default 1,000,000 inputs per target (a long run: ~10-20 min
# here), or for SECONDS each. Fails on a panic, an input slower than 1 s, an allocation over
# the target's cap, or a repository file that reads back other bytes; the inputs are kept under
# target/fuzz-findings/.
#
#   scripts/fuzz.sh [SECONDS] [--inputs N] [--target NAME]...
#
# SLUICE_FUZZ_SEED=N repeats a run. scripts/test.sh runs it for 10 s per target (CI).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
# No SECONDS and no --inputs: a million inputs per target.
if [[ $# -eq 0 || ($1 == --* && " $* " != *" --inputs "*) ]]; then
    set -- --inputs "${SLUICE_FUZZ_INPUTS:-1000000}" "$@"
fi
nice cargo test --release --test fuzz -- "$@"
