#!/usr/bin/env bash
# The main job end to end, on a fresh machine:
#   a database dump goes from a pipe into an encrypted, deduplicated repository, twice (with
#   changes to the database in between), is listed, read back and verified byte for byte, then
#   the repository is mounted and the dump is browsed with ls, grep and tail, and unmounted.
#
# Uses a real pg_dump of a pgbench database (a throwaway PostgreSQL cluster in a temporary
# directory) when PostgreSQL is installable, a generated SQL dump otherwise. Everything it
# makes is removed on exit (the mount, the database server, the temporary directory).
#
# Environment (optional):
#   SLUICE_BIN        sluice binary (default: cargo build --release, then target/release/sluice)
#   DEMO_PG=0         use the generated dump even when PostgreSQL is available
#   DEMO_PG_SCALE     pgbench scale (default 5: a ~50 MB dump)
#   DEMO_KEEP=1       keep the temporary directory (the repository) for a look afterwards
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

PG_SCALE=${DEMO_PG_SCALE:-5}

# run CMD...: shows the command, then runs it.
run() {
    local a shown=()
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then shown+=("$a"); else shown+=("'$a'"); fi
    done
    printf '\n$ %s\n' "${shown[*]}"
    "$@"
}
# note TEXT: narration.
note() { printf '\n# %s\n' "$*"; }

TMP=""
MNT=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $MNT ]] && is_mounted "$MNT"; then
        "${SLUICE:-false}" umount "$MNT" >/dev/null 2>&1 || fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
    fi
    pg_stop
    if [[ -n $TMP && ${DEMO_KEEP:-0} != 1 ]]; then
        rm -rf --one-file-system "$TMP"
    elif [[ -n $TMP ]]; then
        say "kept $TMP (DEMO_KEEP=1)"
    fi
    if ((rc == 0)); then
        say ""
        say "demo finished in $(elapsed_total); everything it made is cleaned up"
    else
        say ""
        say "demo FAILED (exit $rc) after $(elapsed_total)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- set-up ------------------------------------------------------------------------------
section "Set-up: packages and the sluice binary"
ensure_pkgs fuse3 util-linux perl
use_pg=0
if [[ ${DEMO_PG:-1} != 0 ]]; then
    ensure_pkgs_optional postgresql postgresql-client
    if pg_bindir >/dev/null && command -v pg_dump >/dev/null; then use_pg=1; fi
fi
ensure_pkgs_optional b3sum
if ((use_pg)); then say "producer: a real pg_dump of a pgbench database"; else say "producer: a generated SQL dump (PostgreSQL not available)"; fi

if [[ -n ${SLUICE_BIN:-} ]]; then
    SLUICE=$SLUICE_BIN
else
    say "cargo build --release -p sluice"
    (cd "$REPO_ROOT" && cargo build --release -q -p sluice)
    SLUICE=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/sluice
fi
[[ -x $SLUICE ]] || die "sluice binary not found at $SLUICE"
SLUICE=$(realpath "$SLUICE")
sluice() { "$SLUICE" "$@"; }

TMP=$(mktemp -d /tmp/sluice-demo.XXXXXX)
REPO=$TMP/repo
MNT=$TMP/mnt
mkdir -p "$MNT"
head -c 24 /dev/urandom | base64 >"$TMP/passphrase"
chmod 600 "$TMP/passphrase"
export SLUICE_REPO=$REPO SLUICE_PASSWORD_FILE=$TMP/passphrase
unset SLUICE_PASSWORD SLUICE_PASSWORD_COMMAND
say "working in $TMP: SLUICE_REPO=$REPO, passphrase in SLUICE_PASSWORD_FILE=$TMP/passphrase"

digest() { # FILE-or-stdin -> sha256 hex
    sha256sum "$@" | cut -d' ' -f1
}
b3() { b3sum --no-names; }
json_field() { # FIELD < json
    python3 -c 'import json, sys
for line in reversed(sys.stdin.read().splitlines()):
    if line.strip().startswith("{"):
        print(json.loads(line)[sys.argv[1]]); break' "$1"
}

# ---- the database -----------------------------------------------------------------------
if ((use_pg)); then
    section "A PostgreSQL database to back up"
    note "A throwaway PostgreSQL cluster in a temporary directory, on a private unix socket."
    pg_start
    say "server running (PGHOST=$PGHOST)"
    run createdb shop
    note "Fill it with pgbench data (scale $PG_SCALE: $((PG_SCALE * 100000)) accounts)."
    run pgbench -i -q -s "$PG_SCALE" shop
    PRODUCER=(pg_dump shop)
else
    PRODUCER=(perl "$SCRIPTS_DIR/gen-sql-dump.pl" --bytes 40M --seed 1)
fi

# ---- the store ----------------------------------------------------------------------------
section "A repository, and the first dump"
note "Create an encrypted repository (the passphrase goes through Argon2id to the master key)."
run sluice init

note "Ingest: sluice runs the producer itself, stores its stdout, and checks its exit status."
note "No temporary file: the dump goes from the pipe into chunks, compressed, encrypted, deduplicated."
printf '\n$ sluice ingest --name shop.sql --tag nightly --json -- %s\n' "${PRODUCER[*]}"
json1=$(sluice ingest --name shop.sql --tag nightly --json -- "${PRODUCER[@]}")
say "$json1"
snap1=$(json_field snapshot <<<"$json1")
blake1=$(json_field blake3 <<<"$json1")
blake1=${blake1#blake3:}
[[ -n $snap1 ]] || die "sluice ingest --json printed no snapshot id"
say "snapshot $snap1, BLAKE3 of the stream $blake1"

note "Verify later against that digest: it was computed on the bytes pg_dump printed, as they passed."
if ((use_pg)); then
    note "(pg_dump output differs from run to run - since 15.14 it carries a random \\restrict key -"
    note " so a second pg_dump cannot serve as the reference; the ingest-time digest can.)"
fi

section "A day later: the database changes, and the second dump"
if ((use_pg)); then
    note "Churn: pgbench updates accounts, tellers and branches and appends to history."
    printf '\n$ pgbench -c 2 -t 2000 shop\n'
    pgbench -c 2 -t 2000 shop 2>&1 | grep -E '^(number of transactions actually|tps)' || true
    note "This time, the classic pipe: pg_dump | sluice ingest (tee keeps our reference copy)."
    say "\$ pg_dump shop | tee shop-2.sql | sluice ingest --name shop.sql --tag nightly"
    pg_dump shop | tee "$TMP/shop-2.sql" | sluice ingest --name shop.sql --tag nightly
else
    note "Change 2% of the rows, and ingest through a pipe."
    say "\$ gen-sql-dump.pl ... | gen-sql-dump.pl --mutate 2 | tee shop-2.sql | sluice ingest --name shop.sql --tag nightly"
    "${PRODUCER[@]}" | perl "$SCRIPTS_DIR/gen-sql-dump.pl" --mutate 2 --seed 2 | tee "$TMP/shop-2.sql" |
        sluice ingest --name shop.sql --tag nightly
fi
note "The summary line above says how many bytes the second dump really added: only the changed chunks."

section "What the repository holds"
run sluice snapshots
run sluice ls latest
run sluice stats

section "Reading back, verified"
note "cat streams an object back; every chunk is authenticated and its id recomputed on the way."
if command -v b3sum >/dev/null; then
    a=$(sluice cat "$snap1" shop.sql | b3)
    say "\$ sluice cat ${snap1:0:8} shop.sql | b3sum   -> $a"
    [[ $a == "$blake1" ]] || die "first snapshot reads back with BLAKE3 $a, ingest printed $blake1"
    say "equal to the BLAKE3 sluice printed while the producer was writing"
else
    a=$(sluice cat "$snap1" shop.sql | wc -c)
    say "\$ sluice cat ${snap1:0:8} shop.sql | wc -c   -> $a bytes (b3sum not installed: size check only)"
    [[ $a == "$(json_field bytes <<<"$json1")" ]] || die "first snapshot reads back as $a bytes"
fi
a=$(sluice cat latest shop.sql | digest)
b=$(digest "$TMP/shop-2.sql")
say "\$ sluice cat latest shop.sql | sha256sum   -> $a"
[[ $a == "$b" ]] || die "latest snapshot differs from the second reference dump ($a vs $b)"
say "identical to the second reference dump"
run sluice check --read-data

if ((use_pg)); then
    note "Restore into a new database straight from the repository, and compare."
    run createdb shop_restored
    say "\$ sluice cat latest shop.sql | psql -q shop_restored"
    sluice cat latest shop.sql | psql -q -v ON_ERROR_STOP=1 shop_restored >/dev/null
    q="SELECT count(*), sum(abalance) FROM pgbench_accounts"
    orig=$(psql -tAq -c "$q" shop)
    rest=$(psql -tAq -c "$q" shop_restored)
    say "pgbench_accounts (rows|sum of balances): original $orig, restored $rest"
    [[ $orig == "$rest" ]] || die "restored database differs"
fi

# ---- the mount ----------------------------------------------------------------------------
section "Mounting the repository"
note "Every snapshot as a read-only directory; the command returns once the mount is ready."
run sluice mount "$REPO" "$MNT"
is_mounted "$MNT" || die "$MNT is not mounted"
run ls -l "$MNT"
run ls -l "$MNT/snapshots"
run ls -l "$MNT/latest/"
run ls -l "$MNT/names/shop.sql/"
for f in "$MNT"/latest/.sluice-meta*; do
    if [[ -e $f ]]; then
        note "Provenance of the snapshot, without leaving the shell:"
        run head -c 1500 "$f"
        echo
    fi
done

note "grep runs on the backup as on any file (sequential reads get read-ahead)."
if ((use_pg)); then
    run grep -c '^COPY public\.' "$MNT/latest/shop.sql"
    note "Rows of pgbench_history in each version (the churn happened between them):"
    for v in "$MNT"/names/shop.sql/*; do
        n=$(awk '/^COPY public.pgbench_history /{f=1; next} /^\\\.$/{f=0} f' "$v" | wc -l)
        say "  $(basename "$v"): $n history rows"
    done
else
    run grep -c 'INSERT INTO public.orders' "$MNT/latest/shop.sql"
fi
note "tail -c reads only the last chunk, not the whole stream:"
run tail -c 200 "$MNT/latest/shop.sql"
vers=("$MNT"/names/shop.sql/*)
if ((use_pg && ${#vers[@]} >= 2)); then
    note "The two versions side by side: the branch balances that pgbench changed."
    branches() { awk '/^COPY public.pgbench_branches /{f=1} f{print} /^\\\.$/{f=0}' "$1"; }
    printf '\n$ diff <(branches %s) <(branches %s)\n' "${vers[0]#"$MNT"/}" "${vers[1]#"$MNT"/}"
    diff <(branches "${vers[0]}") <(branches "${vers[1]}") || true
elif ((${#vers[@]} >= 2)); then
    note "The two versions side by side: where do they first differ?"
    printf '\n$ cmp %s %s\n' "${vers[0]#"$MNT"/}" "${vers[1]#"$MNT"/}"
    cmp "${vers[0]}" "${vers[1]}" || true
fi
a=$(digest "$MNT/latest/shop.sql")
say ""
say "\$ sha256sum $MNT/latest/shop.sql   -> $a"
[[ $a == "$(digest "$TMP/shop-2.sql")" ]] || die "the mounted file differs from the second reference dump"
say "identical to the second reference dump"
note "The mount is read-only: writes fail with EROFS."
if touch "$MNT/latest/new-file" 2>"$TMP/touch.err"; then
    die "a write into the mount succeeded"
else
    say "\$ touch $MNT/latest/new-file   -> $(cat "$TMP/touch.err")"
fi

run sluice umount "$MNT"
is_mounted "$MNT" && die "$MNT is still mounted"
say "unmounted"
section_end
