#!/usr/bin/env bash
# The stable-Rust fuzzer (tests/fuzz/): every parser of bytes from disk or a pipe — config,
# key file, snapshot, chunk-list block, pack header and trailer, every completeness walker —
# fed mutated real inputs: by default 1,000,000 inputs per target, at most 10 minutes each
# (config and key_file open a repository per input, a key derivation each: ~300 inputs/s,
# so they stop at ~200,000; the whole run takes ~30 min here), or for SECONDS each. Fails on a panic, an input slower than 1 s, an allocation over
# the target's cap, or a repository file that reads back other bytes; the inputs are kept under
# target/fuzz-findings/.
#
#   scripts/fuzz.sh [SECONDS] [--inputs N [--max-seconds S]] [--target NAME]...
#
# SLUICE_FUZZ_SEED=N repeats a run. scripts/test.sh runs it for 10 s per target (CI).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
# No SECONDS and no --inputs: a million inputs per target.
if [[ $# -eq 0 || ($1 == --* && " $* " != *" --inputs "*) ]]; then
    set -- --inputs "${SLUICE_FUZZ_INPUTS:-1000000}" --max-seconds 600 "$@"
fi
nice cargo test --release --test fuzz -- "$@"
