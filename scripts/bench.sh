#!/usr/bin/env bash
# Side-by-side benchmarks: sluice vs restic vs borg on the same inputs, in one run.
#
#   scripts/bench.sh            full run (~1 GiB inputs, 8 GiB memory-flatness stream)
#   scripts/bench.sh --quick    small inputs, for smoke testing (a few minutes)
#
# Makes its own inputs under $BENCH_WORK (default /tmp/sluice-bench; they are reused by later
# runs with the same sizes), installs restic, borgbackup, PostgreSQL, fuse3 and GNU time from
# Debian's packages when missing, and prints Markdown tables (also saved to
# $BENCH_WORK/results.md) with the ratios sluice/peer.
#
# Environment (all optional):
#   SLUICE_BIN         sluice binary to use (default: cargo build --release, target/release/sluice)
#   BENCH_WORK         work directory (default /tmp/sluice-bench)
#   BENCH_TOOLS        tools to run (default "sluice restic borg")
#   BENCH_PHASES       phases to run (default "ingest mount memory parallel lifecycle delta members";
#                      memory is full-run only; "prune-scale" runs only when named: it writes a
#                      synthetic repository of millions of chunks and takes tens of minutes;
#                      "members" is xbstream/tar members, scripts/bench-members.sh)
#   BENCH_GIB          size of the SQL dump, the random input and each parallel input (default 1)
#   BENCH_BIG_GIB      size of the large stream for memory flatness (default 8)
#   BENCH_PG_SCALE     pgbench scale for the pg_dump input (default 30, a ~300 MB dump)
#   BENCH_CHURN_SECS   pgbench run between the two dumps (default 20)
#   BENCH_MUTATE_PCT   % of INSERT lines changed/inserted in the second SQL dump (default 2)
#   BENCH_CLUSTER      changes come in runs of this many lines (default 1000; 1 = uniform)
#   BENCH_READS        random 4 KiB reads per mount (default 20)
#   BENCH_GREP_PASSES  cold greps of the SQL dump before reading the mount's RSS (default 4)
#   BENCH_MOUNT_ROUNDS cold restore/cat/grep rounds per tool in the mount phase; the median is
#                      reported (default 3; 1 with --quick). This machine's shared cores make
#                      single figures swing by +-20%.
#   BENCH_SLUICE_INIT  extra arguments for `sluice init` (default none: the defaults)
#   BENCH_LC_BYTES     size of the lifecycle phase's SQL dump (default 170000000; 16 MiB with --quick)
#   BENCH_LC_VERSIONS  versions ingested before forget --keep-last (default 20)
#   BENCH_LC_KEEP      --keep-last N of the lifecycle phase (default 3)
#   BENCH_UNIFORM_PCT  % of rows changed each night in the delta phase's uniform series (default 1)
#   BENCH_NIGHTS       nights of the uniform series (default 5)
#   BENCH_DELTA_ROUNDS timed rounds of sluice's first and last version in each delta series:
#                      ingest (into a copy of the repository as it was before) and cold
#                      restore; the median is reported (default 3; 1 with --quick). Those
#                      versions' ratios are the delta targets, and one 0.3-0.7 s pgbench
#                      ingest here swings by +-10% from run to run.
#   BENCH_MARIA_MB     approximate size of the MariaDB server in the delta phase (default 650;
#                      40 with --quick); BENCH_MARIA=0 skips that series
#   BENCH_SCALE_CHUNKS chunks of the prune-scale phase's synthetic repository (default 10000000;
#                      1000000 with --quick); BENCH_SCALE_SNAPSHOTS snapshots (default 10)
#   BENCH_PHASES=s3    object storage (scripts/bench-s3.sh): sluice, restic and the aws CLI on one SeaweedFS
#   BENCH_KEEP=1       keep the repositories afterwards
#   BENCH_PAGE_REPORTING=keep  leave the VM's free page reporting on (default: paused for the
#                      run and restored on exit; see steady_vm_memory)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

MIB=$((1 << 20))
# %.0f, not %d: mawk (Debian's default awk) clamps %d to 2^31-1, which made the "8 GiB" stream 2 GiB.
gib_bytes() { awk -v g="$1" 'BEGIN { printf "%.0f", g * 1073741824 }'; }

WORK=${BENCH_WORK:-/tmp/sluice-bench}
TOOLS=${BENCH_TOOLS:-sluice restic borg}
PHASES=${BENCH_PHASES:-ingest mount memory parallel lifecycle delta members}
LC_VERSIONS=${BENCH_LC_VERSIONS:-20}
LC_KEEP=${BENCH_LC_KEEP:-3}
UNIFORM_PCT=${BENCH_UNIFORM_PCT:-1}
DELTA_ROUNDS=${BENCH_DELTA_ROUNDS:-3}
((QUICK)) && DELTA_ROUNDS=${BENCH_DELTA_ROUNDS:-1}
NIGHTS=${BENCH_NIGHTS:-5}
SCALE_SNAPSHOTS=${BENCH_SCALE_SNAPSHOTS:-10}
READS=${BENCH_READS:-20}
MUTATE_PCT=${BENCH_MUTATE_PCT:-2}
CLUSTER=${BENCH_CLUSTER:-1000}
if ((QUICK)); then
    SIZE=$(gib_bytes "${BENCH_GIB:-0.0625}") # 64 MiB
    PG_SCALE=${BENCH_PG_SCALE:-3}
    CHURN_SECS=${BENCH_CHURN_SECS:-3}
    GREP_PASSES=${BENCH_GREP_PASSES:-2}
    MOUNT_ROUNDS=${BENCH_MOUNT_ROUNDS:-1}
    BIG=0
    PHASES=${PHASES//memory/}
    LC_BYTES=${BENCH_LC_BYTES:-$((16 << 20))}
    MARIA_MB=${BENCH_MARIA_MB:-40}
    SCALE_CHUNKS=${BENCH_SCALE_CHUNKS:-1000000}
else
    SIZE=$(gib_bytes "${BENCH_GIB:-1}")
    PG_SCALE=${BENCH_PG_SCALE:-30}
    CHURN_SECS=${BENCH_CHURN_SECS:-20}
    GREP_PASSES=${BENCH_GREP_PASSES:-4}
    MOUNT_ROUNDS=${BENCH_MOUNT_ROUNDS:-3}
    BIG=$(gib_bytes "${BENCH_BIG_GIB:-8}")
    LC_BYTES=${BENCH_LC_BYTES:-170000000}
    MARIA_MB=${BENCH_MARIA_MB:-650}
    SCALE_CHUNKS=${BENCH_SCALE_CHUNKS:-10000000}
fi
read -r -a SLUICE_INIT_ARGS <<<"${BENCH_SLUICE_INIT:-}"

has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

mkdir -p "$WORK"/{inputs,repos,mnt,logs}
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.md
: >"$RESULTS"

export SLUICE_PASSWORD=bench-sluice-pass RESTIC_PASSWORD=bench-restic-pass BORG_PASSPHRASE=bench-borg-pass
export RESTIC_CACHE_DIR=$WORK/restic-cache BORG_BASE_DIR=$WORK/borg-base
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
unset SLUICE_REPO SLUICE_PASSWORD_FILE SLUICE_PASSWORD_COMMAND RESTIC_REPOSITORY BORG_REPO

# ---- cleanup -----------------------------------------------------------------------------
BG_PIDS=()
unmount_dir() {
    local m=$1
    is_mounted "$m" || return 0
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
}
cleanup() {
    local rc=$? m p
    set +e
    while read -r m; do unmount_dir "$m"; done < <(awk -v w="$WORK/mnt/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts)
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    pg_stop
    maria_stop
    restore_page_reporting
    if [[ ${BENCH_KEEP:-0} != 1 ]]; then rm -rf "$WORK/repos" "$WORK/restic-cache" "$WORK/borg-base"; fi
    if ((rc != 0)); then say "bench.sh failed (exit $rc) after $(elapsed_total); logs in $WORK/logs" >&2; fi
}
# The delta phase's private MariaDB server (unix socket only), stopped on exit.
MARIA_PID=""
MARIA_SOCK=""
maria_stop() {
    [[ -n $MARIA_PID ]] || return 0
    mariadb-admin --socket="$MARIA_SOCK" --user=root shutdown >/dev/null 2>&1 || kill "$MARIA_PID" 2>/dev/null
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$MARIA_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$MARIA_PID" 2>/dev/null || true
    MARIA_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- output ------------------------------------------------------------------------------
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

declare -A R=() # "input|tool|metric" -> value
setr() { R["$1|$2|$3"]=$4; }
getr() { printf '%s' "${R["$1|$2|$3"]:-n/a}"; }
# Repeated measurements: addr appends a sample, lastr shows the newest, medianr is the median
# (any failed sample makes the figure FAIL/WRONG: a wrong answer is never averaged away).
declare -A SAMPLES=()
addr() { SAMPLES["$1|$2|$3"]+="$4 "; }
lastr() { local a; read -r -a a <<<"${SAMPLES["$1|$2|$3"]:-}"; printf '%s' "${a[-1]:-n/a}"; }
samples() { printf '%s' "${SAMPLES["$1|$2|$3"]:-}"; }
medianr() {
    local v=${SAMPLES["$1|$2|$3"]:-}
    if [[ -z $v ]]; then printf 'n/a'; return; fi
    if [[ $v == *WRONG* ]]; then printf 'WRONG'; return; fi
    if [[ $v == *FAIL* ]]; then printf 'FAIL'; return; fi
    tr ' ' '\n' <<<"$v" | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# median_secs "S1 S2 ...": the median of a list of seconds, to the millisecond.
median_secs() {
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# paired_ratios input tool metric base: the per-round ratios metric/base (the samples were
# taken in rounds, seconds apart) and their median, e.g. "0.84 0.71 0.82, median 0.82".
paired_ratios() {
    local num den
    read -r -a num <<<"${SAMPLES["$1|$2|$3"]:-}"
    read -r -a den <<<"${SAMPLES["$1|$2|$4"]:-}"
    paste -d ' ' <(printf '%s\n' "${num[@]}") <(printf '%s\n' "${den[@]}") | awk '
        !($1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ && $2 > 0) { printf "%s ", ($1 ~ /^[0-9.]+$/) ? $2 : $1; next }
        { r[++n] = $1 / $2; printf "%.2f ", r[n] }
        END {
            if (n == 0) { print "n/a"; exit }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
            printf "(median %.2f)\n", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        }'
}

# mbps BYTES SECONDS -> MB/s (10^6 bytes per second)
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) print "n/a"; else printf "%.0f", b / s / 1e6 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; } # KiB -> MiB
# ratio A B [higher|lower]: "3.4x", or n/a
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "n/a"; else printf "%.2fx", a / b }'
}

# ---- timing ------------------------------------------------------------------------------
# run_timed IN OUT LOG CMD...: runs CMD with stdin IN and stdout OUT, stderr to $WORK/logs/LOG.
# Sets T_SECS (wall clock) and T_RSS_KB (peak RSS of CMD and its children, from GNU time).
T_SECS=0
T_RSS_KB=0
run_timed() {
    local in=$1 outf=$2 log=$WORK/logs/$3 tf=$WORK/logs/time.out t0 t1
    shift 3
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%M' -o "$tf" "$@" <"$in" >"$outf" 2>"$log"; then
        warn "failed: $* (stderr: $log)"
        tail -n 5 "$log" >&2 || true
        return 1
    fi
    t1=$(date +%s%N)
    T_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    T_RSS_KB=$(tail -n 1 "$tf")
}

# time_cmd LOG CMD...: wall clock of CMD (stdout to /dev/null) in T_SECS.
time_cmd() {
    local log=$WORK/logs/$1 t0 t1
    shift
    t0=$(date +%s%N)
    if ! "$@" >/dev/null 2>"$log"; then
        warn "failed: $* (stderr: $log)"
        tail -n 5 "$log" >&2 || true
        return 1
    fi
    t1=$(date +%s%N)
    T_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}

warm() { cat "$@" >/dev/null; }

# ---- the VM's memory -----------------------------------------------------------------------
# On a VM with free page reporting (virtio-balloon; this machine reports every free page at
# once), memory the guest frees goes back to the host, and the next touch of it costs a host
# page fault: ~220 MB/s here instead of several GB/s. Every cold read allocates page cache,
# so figures swung 0.56x-1.01x between identical runs depending on when the host had taken
# the memory back (measured 2026-12-03: mount cat 402-694 MB/s, its sys time 0.3 vs 1.0 s).
# For the bench's duration, reporting is paused (restored on exit) and RAM touched once, so
# the figures measure the tools, not the host's reclaim. BENCH_PAGE_REPORTING=keep: leave it.
PAGE_REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
PAGE_REPORTING_WAS=""
VM_MEMORY_NOTE="no free page reporting found: memory left as it is"
restore_page_reporting() {
    if [[ -n $PAGE_REPORTING_WAS ]]; then
        echo "$PAGE_REPORTING_WAS" >"$PAGE_REPORTING" 2>/dev/null || warn "could not restore $PAGE_REPORTING to $PAGE_REPORTING_WAS"
        PAGE_REPORTING_WAS=""
    fi
}
steady_vm_memory() {
    [[ ${BENCH_PAGE_REPORTING:-pause} == keep ]] && { VM_MEMORY_NOTE="free page reporting left on (BENCH_PAGE_REPORTING=keep): expect bimodal figures"; return; }
    [[ -w $PAGE_REPORTING ]] || return 0
    local was
    was=$(cat "$PAGE_REPORTING")
    # Orders above the largest free block mean nothing qualifies for reporting.
    echo 11 >"$PAGE_REPORTING" 2>/dev/null || { warn "cannot pause free page reporting"; return 0; }
    PAGE_REPORTING_WAS=$was
    say "free page reporting paused for the run (page_reporting_order $was -> 11); touching free RAM once"
    local t0 t1
    t0=$(date +%s)
    # Leave 2 GiB for everything else; python's mmap touches pages without copying.
    python3 - <<'PY' || warn "could not touch free memory"
import mmap
avail = 0
for line in open("/proc/meminfo"):
    if line.startswith("MemAvailable:"):
        avail = int(line.split()[1]) * 1024
n = max(0, avail - (2 << 30)) // 4096 * 4096
if n:
    m = mmap.mmap(-1, n)
    for off in range(0, n, 4096):
        m[off] = 1
    m.close()
PY
    t1=$(date +%s)
    VM_MEMORY_NOTE="free page reporting paused for the run and free RAM touched once first ($((t1 - t0)) s), so that no tool pays the host's page faults"
}
dir_bytes() { du -sb "$1" | cut -f1; }

# ---- set-up ------------------------------------------------------------------------------
section "Set-up"
need=(time perl openssl zstd util-linux procps postgresql postgresql-client)
has_tool restic && need+=(restic fuse3)
has_tool borg && need+=(borgbackup fuse3 python3-pyfuse3)
has_tool sluice && need+=(fuse3 pv)
ensure_pkgs "${need[@]}"
steady_vm_memory
pgbin=$(pg_bindir) || die "PostgreSQL server binaries not found"
export PATH="$pgbin:$PATH"

SLUICE=""
if has_tool sluice; then
    if [[ -n ${SLUICE_BIN:-} ]]; then
        SLUICE=$SLUICE_BIN
    else
        say "cargo build --release -p sluice"
        (cd "$REPO_ROOT" && cargo build --release -q -p sluice) ||
            die "cargo build failed; set SLUICE_BIN, or BENCH_TOOLS='restic borg' to run the peers only"
        SLUICE=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/sluice
    fi
    [[ -x $SLUICE ]] || die "sluice binary not found at $SLUICE"
fi

cat >"$WORK/randread.py" <<'PY'
# randread.py PATH COUNT: COUNT timed 4 KiB preads at random offsets; prints "median max" in ms.
import os, random, statistics, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
rng = random.Random(20261122)
lat = []
for _ in range(n):
    off = rng.randrange(0, max(1, size - 4096))
    t = time.perf_counter()
    b = os.pread(fd, 4096, off)
    lat.append((time.perf_counter() - t) * 1000)
    if len(b) != min(4096, size - off):
        sys.exit("short read at %d" % off)
os.close(fd)
print("%.2f %.2f" % (statistics.median(lat), max(lat)))
PY

# ---- tools -------------------------------------------------------------------------------
# Each sets CMD to the argument vector; the caller runs it (under GNU time).
declare -A SNAP=() # "repo|version" -> sluice snapshot id
cmd_init() {        # tool repo
    case $1 in
    sluice) CMD=("$SLUICE" --repo "$2" -q init "${SLUICE_INIT_ARGS[@]}") ;;
    restic) CMD=(restic --repo "$2" -q init) ;;
    borg) CMD=(borg init -e repokey-blake2 "$2") ;;
    esac
}
cmd_ingest() { # tool repo name version
    case $1 in
    sluice) CMD=("$SLUICE" --repo "$2" ingest --name "$3" --tag "$4" --json) ;;
    restic) CMD=(restic --repo "$2" -q backup --stdin --stdin-filename "$3" --tag "$4") ;;
    borg) CMD=(borg create --compression "zstd,3" --stdin-name "$3" "$2::$4" -) ;;
    esac
}
cmd_restore() { # tool repo name version
    case $1 in
    sluice) CMD=("$SLUICE" --repo "$2" cat "${SNAP["$2|$4"]:-latest}" "$3") ;;
    restic) CMD=(restic --repo "$2" -q dump --tag "$4" latest "/$3") ;;
    borg) CMD=(borg extract --stdout "$2::$4") ;;
    esac
}
# ingest_field JSON-FILE FIELD: a number from the first stream of a sluice ingest --json
# output (empty if there is none).
ingest_field() {
    python3 -c '
import json, sys
for line in reversed(open(sys.argv[1]).read().splitlines()):
    line = line.strip()
    if line.startswith("{"):
        print(json.loads(line)["objects"][0][sys.argv[2]]); break
' "$1" "$2" 2>/dev/null || true
}

# after a sluice ingest: remember the snapshot id printed by --json
note_snapshot() { # repo version json-file
    local id
    id=$(python3 -c '
import json, sys
for line in reversed(open(sys.argv[1]).read().splitlines()):
    line = line.strip()
    if line.startswith("{"):
        print(json.loads(line)["snapshot"]); break
' "$3" 2>/dev/null) || id=""
    if [[ -n $id ]]; then SNAP["$1|$2"]=$id; else warn "no snapshot id in sluice ingest --json output ($3)"; fi
}

# mount_tool tool repo mnt name version: mounts, waits until the object is visible;
# sets OBJ to its path and MOUNT_PID to the serving process.
OBJ=""
MOUNT_PID=""
find_pid_with_arg() { # prints the pid of a process whose argv contains $1 and whose argv0 matches $2
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        if tr '\0' '\n' <"$f" 2>/dev/null | grep -qxF -- "$1" &&
            tr '\0' '\n' <"$f" 2>/dev/null | head -n 3 | grep -q -- "$2"; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}
wait_for_file() { # path seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.1
    done
    return 1
}
mount_tool() {
    local tool=$1 repo=$2 mnt=$3 name=$4 ver=$5
    unmount_dir "$mnt"
    mkdir -p "$mnt"
    MOUNT_PID=""
    case $tool in
    sluice)
        "$SLUICE" mount "$repo" "$mnt" >"$WORK/logs/mount-sluice.log" 2>&1 || {
            warn "sluice mount failed: $(tail -n 3 "$WORK/logs/mount-sluice.log")"
            return 1
        }
        OBJ=$mnt/latest/$name
        ;;
    restic)
        restic --repo "$repo" mount "$mnt" >"$WORK/logs/mount-restic.log" 2>&1 &
        MOUNT_PID=$!
        BG_PIDS+=("$MOUNT_PID")
        OBJ=$mnt/snapshots/latest/$name
        ;;
    borg)
        borg mount "$repo::$ver" "$mnt" >"$WORK/logs/mount-borg.log" 2>&1 || {
            warn "borg mount failed: $(tail -n 3 "$WORK/logs/mount-borg.log")"
            return 1
        }
        OBJ=$mnt/$name
        ;;
    esac
    wait_for_file "$OBJ" 120 || {
        warn "$tool mount: $OBJ did not appear"
        return 1
    }
    if [[ -z $MOUNT_PID ]]; then
        case $tool in
        sluice) MOUNT_PID=$(find_pid_with_arg "$mnt" sluice) || MOUNT_PID="" ;;
        borg) MOUNT_PID=$(find_pid_with_arg "$mnt" borg) || MOUNT_PID="" ;;
        esac
    fi
}
umount_tool() { # tool mnt
    case $1 in
    sluice) "$SLUICE" umount "$2" >/dev/null 2>&1 || unmount_dir "$2" ;;
    borg) borg umount "$2" >/dev/null 2>&1 || unmount_dir "$2" ;;
    restic) unmount_dir "$2" ;;
    esac
    if [[ $1 == restic && -n $MOUNT_PID ]]; then wait "$MOUNT_PID" 2>/dev/null || true; fi
    local i
    for ((i = 0; i < 100; i++)); do
        is_mounted "$2" || return 0
        sleep 0.1
    done
    unmount_dir "$2"
}
vm_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo n/a; }

# ---- inputs ------------------------------------------------------------------------------
IN=$WORK/inputs
# fresh NAME PARAMS: true when input NAME exists and was made with PARAMS.
fresh() { [[ -f $IN/$1 && -f $IN/$1.params && $(cat "$IN/$1.params") == "$2" ]]; }
stamp() { printf '%s' "$2" >"$IN/$1.params"; }
gen_random() { # bytes key-hex: deterministic pseudo-random bytes on stdout
    { openssl enc -aes-128-ctr -K "$2" -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null || true; } | head -c "$1"
}
zstd_ratio() { # file -> compression ratio with zstd -3
    local c
    c=$(zstd -3 -T2 -q -c "$1" | wc -c)
    awk -v a="$(stat -c %s "$1")" -v b="$c" 'BEGIN { printf "%.2f", a / b }'
}

section "Inputs (in $IN)"
if has_phase ingest || has_phase mount || has_phase parallel || has_phase delta; then
    p="bytes=$SIZE seed=42 mutate=$MUTATE_PCT cluster=$CLUSTER v3"
    if ! fresh sql1.sql "$p"; then
        say "generating a ${SIZE}-byte SQL dump (perl, seed 42)"
        t0=$(date +%s)
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --bytes "$SIZE" --seed 42 >"$IN/sql1.sql"
        say "  took $(($(date +%s) - t0)) s"
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --mutate "$MUTATE_PCT" --cluster "$CLUSTER" --seed 43 <"$IN/sql1.sql" >"$IN/sql2.sql"
        stamp sql1.sql "$p"
    fi
fi
if has_phase ingest; then
    p="bytes=$SIZE key=01 v1"
    if ! fresh rand1.bin "$p"; then
        say "generating ${SIZE} random bytes (openssl aes-ctr) and a second version with 4 MiB inserted mid-way"
        gen_random "$SIZE" 0123456789abcdef0123456789abcdef >"$IN/rand1.bin"
        half=$((SIZE / 2))
        {
            head -c "$half" "$IN/rand1.bin"
            gen_random $((4 * MIB)) fedcba9876543210fedcba9876543210
            tail -c +$((half + 1)) "$IN/rand1.bin"
        } >"$IN/rand2.bin"
        stamp rand1.bin "$p"
    fi
fi
if has_phase ingest || has_phase delta; then
    p="scale=$PG_SCALE churn=$CHURN_SECS v1"
    if ! fresh pg1.sql "$p"; then
        say "starting a throwaway PostgreSQL cluster; pgbench -i -s $PG_SCALE"
        pg_start
        createdb bench
        t0=$(date +%s)
        pgbench -i -q -s "$PG_SCALE" bench >"$WORK/logs/pgbench-init.log" 2>&1 || die "pgbench -i failed (see $WORK/logs/pgbench-init.log)"
        say "  took $(($(date +%s) - t0)) s; pg_dump #1"
        pg_dump bench >"$IN/pg1.sql"
        say "  pgbench -c 2 -T $CHURN_SECS (churn)"
        pgbench -c 2 -T "$CHURN_SECS" bench >"$WORK/logs/pgbench-run.log" 2>&1 || die "pgbench failed (see $WORK/logs/pgbench-run.log)"
        say "  pg_dump #2"
        pg_dump bench >"$IN/pg2.sql"
        pg_stop
        stamp pg1.sql "$p"
    fi
fi
if has_phase parallel; then
    p="bytes=$SIZE seed=7"
    if ! fresh sqlb.sql "$p"; then
        say "generating a second, unrelated SQL dump for the parallel-producer test (seed 7)"
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --bytes "$SIZE" --seed 7 >"$IN/sqlb.sql"
        stamp sqlb.sql "$p"
    fi
    p="bytes=$SIZE key=02"
    if ! fresh randb.bin "$p"; then
        gen_random "$SIZE" 00000000000000000000000000000002 >"$IN/randb.bin"
        stamp randb.bin "$p"
    fi
fi

# ---- header ------------------------------------------------------------------------------
out "# sluice benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ)$( ((QUICK)) && echo ', quick mode'))"
out ""
out "- machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the cores are shared: figures are noisy)"
has_tool sluice && out "- sluice: \`$("$SLUICE" --version 2>/dev/null || echo "$SLUICE")\` ($(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo 'no commit')), \`sluice init${SLUICE_INIT_ARGS[*]:+ ${SLUICE_INIT_ARGS[*]}}\`$([[ -z ${BENCH_SLUICE_INIT:-} ]] && echo ' (its default chunk size and compression)')"
has_tool restic && out "- restic: $(restic version | cut -d' ' -f1-2), repository v2, default compression (auto), \`restic backup --stdin --stdin-filename NAME\`"
has_tool borg && out "- borg: $(borg --version), \`borg init -e repokey-blake2\`, \`borg create --compression zstd,3 --stdin-name NAME REPO::ARCHIVE -\`, default chunker (buzhash, ~2 MiB)"
out "- every tool reads the stream from stdin (a file already in the page cache, so the producer costs ~nothing); repositories are on the same local disk ($(df -T "$WORK" | awk 'NR == 2 { print $2 }')) under $WORK/repos"
out "- durability: all three fsync their data before reporting success (sluice: packs, then snapshot rename, then directory; restic local backend: fsync of every file it saves; borg: fsync of segments at commit). No tool was configured to skip it."
out "- times are wall clock of the whole command, including process start-up and key derivation (sluice Argon2id, restic scrypt, borg PBKDF2)"
out "- VM memory: $VM_MEMORY_NOTE"
out "- the page cache is dropped (\`echo 3 > /proc/sys/vm/drop_caches\`) before every restore and before every mount measurement; MB/s are 10^6 bytes/s; RSS is peak (GNU time %M, or VmHWM for mounts)"
out ""
out "## Inputs"
out ""
out "| input | first version | second version | zstd -3 ratio |"
out "| --- | ---: | ---: | ---: |"
input_row() { # label f1 f2
    out "| $1 | $(mb "$(stat -c %s "$2")") MB | $(mb "$(stat -c %s "$3")") MB | $(zstd_ratio "$2") |"
}
if has_phase ingest; then
    input_row "pg_dump of pgbench (scale $PG_SCALE), before/after \`pgbench -c 2 -T $CHURN_SECS\`" "$IN/pg1.sql" "$IN/pg2.sql"
    if ((CLUSTER > 1)); then
        where="in $(awk -v p="$MUTATE_PCT" 'BEGIN { t = 5 * p; if (t > 100) t = 100; print t }')% of the $CLUSTER-line regions"
    else
        where="scattered uniformly"
    fi
    input_row "generated SQL dump, second with ~${MUTATE_PCT}% of rows changed or inserted ($where)" "$IN/sql1.sql" "$IN/sql2.sql"
    input_row "random (AES-CTR), second with 4 MiB inserted in the middle" "$IN/rand1.bin" "$IN/rand2.bin"
fi
out ""

# ---- ingest / restore --------------------------------------------------------------------
KEEP_REPO_SQL=1 # the SQL repositories are used again by the mount phase
bench_input() {   # key label file1 file2 name
    local key=$1 label=$2 f1=$3 f2=$4 name=$5 tool repo r1 r2 b1 b2
    b1=$(stat -c %s "$f1")
    b2=$(stat -c %s "$f2")
    for tool in $TOOLS; do
        section "Ingest/restore: $key with $tool"
        repo=$WORK/repos/$key-$tool
        rm -rf "$repo"
        cmd_init "$tool" "$repo"
        "${CMD[@]}" >"$WORK/logs/init-$key-$tool.log" 2>&1 || {
            warn "$tool init failed: $(tail -n 3 "$WORK/logs/init-$key-$tool.log")"
            setr "$key" "$tool" ingest FAIL
            continue
        }
        warm "$f1"
        cmd_ingest "$tool" "$repo" "$name" v1
        if ! run_timed "$f1" "$WORK/logs/ingest1-$key-$tool.out" "ingest1-$key-$tool.log" "${CMD[@]}"; then
            setr "$key" "$tool" ingest FAIL
            continue
        fi
        [[ $tool == sluice ]] && note_snapshot "$repo" v1 "$WORK/logs/ingest1-$key-$tool.out"
        setr "$key" "$tool" ingest "$(mbps "$b1" "$T_SECS")"
        setr "$key" "$tool" rss "$(mib "$T_RSS_KB")"
        sync
        r1=$(dir_bytes "$repo")
        setr "$key" "$tool" repo1 "$r1"
        say "  ingest #1: ${T_SECS}s, $(getr "$key" "$tool" ingest) MB/s, peak RSS $(getr "$key" "$tool" rss) MiB, repo $(mb "$r1") MB"

        warm "$f2"
        cmd_ingest "$tool" "$repo" "$name" v2
        if run_timed "$f2" "$WORK/logs/ingest2-$key-$tool.out" "ingest2-$key-$tool.log" "${CMD[@]}"; then
            [[ $tool == sluice ]] && note_snapshot "$repo" v2 "$WORK/logs/ingest2-$key-$tool.out"
            sync
            r2=$(dir_bytes "$repo")
            setr "$key" "$tool" ingest2 "$(mbps "$b2" "$T_SECS")"
            setr "$key" "$tool" added "$((r2 - r1))"
            say "  ingest #2: ${T_SECS}s, $(getr "$key" "$tool" ingest2) MB/s, added $(mb $((r2 - r1))) MB"
        else
            setr "$key" "$tool" added FAIL
        fi

        drop_caches
        cmd_restore "$tool" "$repo" "$name" v1
        if run_timed /dev/null /dev/null "restore-$key-$tool.log" "${CMD[@]}"; then
            setr "$key" "$tool" restore "$(mbps "$b1" "$T_SECS")"
            setr "$key" "$tool" restore_rss "$(mib "$T_RSS_KB")"
            say "  restore #1 (cold cache): ${T_SECS}s, $(getr "$key" "$tool" restore) MB/s, peak RSS $(getr "$key" "$tool" restore_rss) MiB"
            if [[ $tool == sluice ]]; then
                # correctness, untimed: a benchmark of wrong bytes is worthless
                if "${CMD[@]}" 2>/dev/null | cmp -s - "$f1"; then
                    say "  verified: sluice cat output is byte-identical to the input"
                else
                    warn "sluice cat of $key v1 differs from the input!"
                    setr "$key" "$tool" restore "WRONG"
                fi
            fi
        else
            setr "$key" "$tool" restore FAIL
        fi
        if [[ $key != sql ]] || ((KEEP_REPO_SQL == 0)); then rm -rf "$repo"; fi
    done
    section_end
    out "## $label"
    out ""
    out "| tool | ingest MB/s | peak RSS MiB | repo after 1st MB | added by 2nd MB | 2nd ingest MB/s | restore MB/s (cold) | restore RSS MiB |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local a
    for tool in $TOOLS; do
        a=$(getr "$key" "$tool" added)
        [[ $a =~ ^-?[0-9]+$ ]] && a=$(mb "$a")
        r1=$(getr "$key" "$tool" repo1)
        [[ $r1 =~ ^[0-9]+$ ]] && r1=$(mb "$r1")
        out "| $tool | $(getr "$key" "$tool" ingest) | $(getr "$key" "$tool" rss) | $r1 | $a | $(getr "$key" "$tool" ingest2) | $(getr "$key" "$tool" restore) | $(getr "$key" "$tool" restore_rss) |"
    done
    out ""
    if has_tool sluice; then
        for tool in restic borg; do
            has_tool "$tool" || continue
            out "- sluice/$tool: ingest $(ratio "$(getr "$key" sluice ingest)" "$(getr "$key" "$tool" ingest)"), restore $(ratio "$(getr "$key" sluice restore)" "$(getr "$key" "$tool" restore)"), repo size $(ratio "$(getr "$key" sluice repo1)" "$(getr "$key" "$tool" repo1)"), added by 2nd $(ratio "$(getr "$key" sluice added)" "$(getr "$key" "$tool" added)"), peak RSS $(ratio "$(getr "$key" sluice rss)" "$(getr "$key" "$tool" rss)")"
        done
        out ""
    fi
}

if has_phase ingest; then
    bench_input pg "pg_dump of a pgbench database ($(mb "$(stat -c %s "$IN/pg1.sql")") MB)" "$IN/pg1.sql" "$IN/pg2.sql" shop.sql
    bench_input sql "Generated SQL dump ($(mb "$(stat -c %s "$IN/sql1.sql")") MB, zstd -3 ratio $(zstd_ratio "$IN/sql1.sql"))" "$IN/sql1.sql" "$IN/sql2.sql" dump.sql
    bench_input rand "Random data ($(mb "$SIZE") MB)" "$IN/rand1.bin" "$IN/rand2.bin" random.bin
fi

# ---- mount -------------------------------------------------------------------------------
if has_phase mount; then
    # The mount phase reads the SQL dump's newest version (sql2.sql) through each tool's mount.
    f=$IN/sql2.sql
    b=$(stat -c %s "$f")
    expect=$(grep -c 'INSERT INTO' "$f")
    for tool in $TOOLS; do
        section "Mount: $tool"
        repo=$WORK/repos/sql-$tool
        if [[ ! -d $repo ]]; then
            say "  (no repository from the ingest phase: making one)"
            cmd_init "$tool" "$repo"
            "${CMD[@]}" >/dev/null 2>&1 || { warn "$tool init failed"; continue; }
            cmd_ingest "$tool" "$repo" dump.sql v1
            "${CMD[@]}" <"$IN/sql1.sql" >/dev/null 2>&1 || { warn "$tool ingest failed"; continue; }
            cmd_ingest "$tool" "$repo" dump.sql v2
            "${CMD[@]}" <"$f" >/dev/null 2>&1 || { warn "$tool ingest failed"; continue; }
        fi
        mnt=$WORK/mnt/$tool

        for ((round = 1; round <= MOUNT_ROUNDS; round++)); do
            say "  round $round of $MOUNT_ROUNDS"
            # the same object restored without the mount (sluice cat / restic dump / borg extract), cold
            drop_caches
            cmd_restore "$tool" "$repo" dump.sql v2
            if run_timed /dev/null /dev/null "mrestore-$tool.log" "${CMD[@]}"; then
                addr mount "$tool" restore "$(mbps "$b" "$T_SECS")"
                say "  restore of the same object (cold cache): ${T_SECS}s, $(lastr mount "$tool" restore) MB/s"
            else addr mount "$tool" restore FAIL; fi

            # sequential cat, cold
            drop_caches
            if mount_tool "$tool" "$repo" "$mnt" dump.sql v2 && time_cmd "mcat-$tool.log" cat "$OBJ"; then
                addr mount "$tool" cat "$(mbps "$b" "$T_SECS")"
                say "  cat (fresh mount, cold cache): ${T_SECS}s, $(lastr mount "$tool" cat) MB/s"
            else addr mount "$tool" cat FAIL; fi
            umount_tool "$tool" "$mnt"

            # grep -c, cold
            drop_caches
            if mount_tool "$tool" "$repo" "$mnt" dump.sql v2; then
                t0=$(date +%s%N)
                got=$(grep -c 'INSERT INTO' "$OBJ" 2>"$WORK/logs/mgrep-$tool.log") || got=FAIL
                t1=$(date +%s%N)
                if [[ $got == "$expect" ]]; then
                    addr mount "$tool" grep "$(mbps "$b" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')")"
                    say "  grep -c (fresh mount, cold cache): $(lastr mount "$tool" grep) MB/s, count $got (correct)"
                else
                    warn "$tool mount: grep -c gave '$got', expected $expect"
                    addr mount "$tool" grep WRONG
                fi
            else addr mount "$tool" grep FAIL; fi
            umount_tool "$tool" "$mnt"
        done
        for m in restore cat grep; do setr mount "$tool" "$m" "$(medianr mount "$tool" "$m")"; done

        # random 4 KiB reads, cold, fresh mount
        drop_caches
        if mount_tool "$tool" "$repo" "$mnt" dump.sql v2 && lat=$(python3 "$WORK/randread.py" "$OBJ" "$READS" 2>"$WORK/logs/randread-$tool.log"); then
            setr mount "$tool" rand_med "${lat% *}"
            setr mount "$tool" rand_max "${lat#* }"
            say "  $READS random 4 KiB reads (fresh mount, cold cache): median ${lat% *} ms, max ${lat#* } ms"
        else setr mount "$tool" rand_med FAIL; fi
        umount_tool "$tool" "$mnt"

        # memory of the mount process after grepping GREP_PASSES x the dump, cold each time
        drop_caches
        if mount_tool "$tool" "$repo" "$mnt" dump.sql v2; then
            ok=1
            for ((i = 0; i < GREP_PASSES; i++)); do
                drop_caches
                grep -c 'INSERT INTO' "$OBJ" >/dev/null 2>&1 || ok=0
            done
            if ((ok)) && [[ -n $MOUNT_PID ]]; then
                setr mount "$tool" hwm "$(mib "$(vm_hwm_kb "$MOUNT_PID")")"
                say "  mount process (pid $MOUNT_PID) VmHWM after grepping $(mb $((b * GREP_PASSES))) MB: $(getr mount "$tool" hwm) MiB"
            else
                warn "$tool: could not measure the mount's memory (pid '${MOUNT_PID}', greps ok=$ok)"
            fi
        fi
        umount_tool "$tool" "$mnt"
    done
    section_end

    out "## Mount: the generated SQL dump ($(mb "$b") MB) read through a freshly started mount, cold page cache"
    out ""
    out "Median of $MOUNT_ROUNDS cold round(s) per tool for cat, grep and restore; every sample is listed below the table."
    out ""
    out "| tool | cat MB/s | grep -c MB/s | same object restored (cat/dump/extract) MB/s | mount cat / restore | 4 KiB random read median ms | max ms | mount RSS after grepping $(mb $((b * GREP_PASSES))) MB, MiB |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for tool in $TOOLS; do
        out "| $tool | $(getr mount "$tool" cat) | $(getr mount "$tool" grep) | $(getr mount "$tool" restore) | $(ratio "$(getr mount "$tool" cat)" "$(getr mount "$tool" restore)") | $(getr mount "$tool" rand_med) | $(getr mount "$tool" rand_max) | $(getr mount "$tool" hwm) |"
    done
    out ""
    for tool in $TOOLS; do
        out "- $tool samples (MB/s): cat $(samples mount "$tool" cat)/ grep -c $(samples mount "$tool" grep)/ restore $(samples mount "$tool" restore)"
    done
    if has_tool sluice; then
        out "- sluice mount: cat $(ratio "$(getr mount sluice cat)" "$(getr mount sluice restore)") and grep -c $(ratio "$(getr mount sluice grep)" "$(getr mount sluice restore)") of \`sluice cat\`'s throughput on the same object (target >= 0.80x)"
        out "- the same per round (each mount read against the restore measured seconds before it; the shared cores' speed drifts between rounds): cat $(paired_ratios mount sluice cat restore), grep -c $(paired_ratios mount sluice grep restore)"
        for tool in restic borg; do
            has_tool "$tool" || continue
            out "- sluice/$tool through the mount: cat $(ratio "$(getr mount sluice cat)" "$(getr mount "$tool" cat)"), grep $(ratio "$(getr mount sluice grep)" "$(getr mount "$tool" grep)"), random-read latency $(ratio "$(getr mount sluice rand_med)" "$(getr mount "$tool" rand_med)") (lower is better)"
        done
        out ""
    fi
fi

# ---- memory flatness ---------------------------------------------------------------------
if has_phase memory && has_tool sluice && ((BIG > 0)); then
    section "Memory flatness: sluice ingest of 1 GiB vs $(mb "$BIG") MB"
    out "## Memory flatness: peak RSS of \`sluice ingest\` by stream size (random data from openssl, piped, never on disk)"
    out ""
    out "| stream | ingest MB/s | peak RSS MiB |"
    out "| --- | ---: | ---: |"
    for n in $((1 << 30)) "$BIG"; do
        repo=$WORK/repos/mem
        rm -rf "$repo"
        "$SLUICE" --repo "$repo" -q init "${SLUICE_INIT_ARGS[@]}" >/dev/null
        t0=$(date +%s%N)
        if gen_random "$n" 0badc0de0badc0de0badc0de0badc0de |
            /usr/bin/time -f '%M' -o "$WORK/logs/time.out" "$SLUICE" --repo "$repo" ingest --name big.bin >/dev/null 2>"$WORK/logs/mem-$n.log"; then
            t1=$(date +%s%N)
            secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
            rss=$(mib "$(tail -n 1 "$WORK/logs/time.out")")
            say "  $(mb "$n") MB: ${secs}s, peak RSS $rss MiB"
            out "| $(mb "$n") MB | $(mbps "$n" "$secs") | $rss |"
        else
            warn "sluice ingest of $n bytes failed: $(tail -n 3 "$WORK/logs/mem-$n.log")"
            out "| $(mb "$n") MB | FAIL | FAIL |"
        fi
        rm -rf "$repo"
    done
    out ""
fi

# ---- parallel producers ------------------------------------------------------------------
if has_phase parallel && has_tool sluice; then
    section "Parallel producers (sluice ingest --exec)"
    out "## Parallel producers: \`sluice ingest --exec a='PRODUCER A' --exec b='PRODUCER B'\` vs one producer alone"
    out ""
    out "Rows \"sql\" and \"rand\" use \`cat\` from the page cache: the producers are faster than the"
    out "machine, so one stream already uses both cores (and, for random data, the disk's sustained"
    out "write rate): two cannot take less than twice as long. Rows \"paced\" model what --exec is for,"
    out "producers bound by their source (a database, a network): \`cat A | pv -qL 100m\`, ~100 MB/s each."
    out ""
    out "| inputs | one alone s | both at once s | both / one (target well under 2x) | aggregate MB/s |"
    out "| --- | ---: | ---: | ---: | ---: |"
    for kind in sql rand paced-sql paced-rand; do
        case $kind in
        sql | paced-sql) fa=$IN/sql1.sql fb=$IN/sqlb.sql ;;
        *) fa=$IN/rand1.bin fb=$IN/randb.bin ;;
        esac
        pace=""
        [[ $kind == paced-* ]] && pace=" | pv -qL 100m"
        [[ -f $fa && -f $fb ]] || {
            warn "parallel: inputs for $kind missing (run the ingest phase too)"
            continue
        }
        warm "$fa" "$fb"
        repo=$WORK/repos/par
        rm -rf "$repo"
        "$SLUICE" --repo "$repo" -q init "${SLUICE_INIT_ARGS[@]}" >/dev/null
        one=FAIL both=FAIL
        if run_timed /dev/null /dev/null "par1-$kind.log" "$SLUICE" --repo "$repo" ingest --exec "a=cat '$fa'$pace"; then one=$T_SECS; fi
        rm -rf "$repo"
        "$SLUICE" --repo "$repo" -q init "${SLUICE_INIT_ARGS[@]}" >/dev/null
        if run_timed /dev/null /dev/null "par2-$kind.log" "$SLUICE" --repo "$repo" ingest --exec "a=cat '$fa'$pace" --exec "b=cat '$fb'$pace"; then both=$T_SECS; fi
        rm -rf "$repo"
        tot=$(($(stat -c %s "$fa") + $(stat -c %s "$fb")))
        say "  $kind: one ${one}s, both ${both}s"
        out "| 2 x $(mb "$(stat -c %s "$fa")") MB $kind | $one | $both | $(ratio "$both" "$one") | $(mbps "$tot" "$both") |"
    done
    out ""
fi

# ---- lifecycle: forget --keep-last N --prune after a history of versions -----------------
# 20 versions of a SQL dump, each made from the one before by gen-sql-dump.pl --mutate (the
# same churn as the ingest phase's second version), ingested in order into each tool; then
# the timed command that gives the space back: sluice forget --prune / restic forget --prune /
# borg prune && borg compact. sluice's prune deletes at once when no writer runs (FORMAT.md,
# "Prune"): a second `sluice prune` afterwards is run untimed to show that nothing was left
# waiting, and the repository size is measured after it too.
lc_file() { printf '%s/lc/v%d.sql' "$IN" "$1"; }
# shellcheck disable=SC2016 # $1 and $2 are bash -c's own arguments
BORG_PRUNE_SH='borg prune --keep-last "$2" "$1" && borg compact "$1"'
if has_phase lifecycle; then
    section "Lifecycle inputs: $LC_VERSIONS versions of a $(mb "$LC_BYTES") MB SQL dump"
    mkdir -p "$IN/lc"
    p="bytes=$LC_BYTES versions=$LC_VERSIONS mutate=$MUTATE_PCT cluster=$CLUSTER v1"
    if ! fresh lc/v1.sql "$p"; then
        t0=$(date +%s)
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --bytes "$LC_BYTES" --seed 11 >"$(lc_file 1)"
        for ((k = 2; k <= LC_VERSIONS; k++)); do
            perl "$SCRIPTS_DIR/gen-sql-dump.pl" --mutate "$MUTATE_PCT" --cluster "$CLUSTER" --seed $((100 + k)) \
                <"$(lc_file $((k - 1)))" >"$(lc_file "$k")"
        done
        stamp lc/v1.sql "$p"
        say "  generated in $(($(date +%s) - t0)) s"
    fi
    for tool in $TOOLS; do
        section "Lifecycle: $tool"
        repo=$WORK/repos/lc-$tool
        rm -rf "$repo"
        cmd_init "$tool" "$repo"
        "${CMD[@]}" >"$WORK/logs/init-lc-$tool.log" 2>&1 || {
            warn "$tool init failed"
            setr lc "$tool" secs FAIL
            continue
        }
        ok=1
        t0=$(date +%s)
        for ((k = 1; k <= LC_VERSIONS; k++)); do
            cmd_ingest "$tool" "$repo" dump.sql "v$k"
            if ! "${CMD[@]}" <"$(lc_file "$k")" >"$WORK/logs/lc-ingest-$tool.out" 2>"$WORK/logs/lc-ingest-$tool.log"; then
                warn "$tool ingest of version $k failed: $(tail -n 3 "$WORK/logs/lc-ingest-$tool.log")"
                ok=0
                break
            fi
        done
        ((ok)) || {
            setr lc "$tool" secs FAIL
            continue
        }
        sync
        setr lc "$tool" before "$(dir_bytes "$repo")"
        say "  $LC_VERSIONS versions ingested in $(($(date +%s) - t0)) s; repo $(mb "$(getr lc "$tool" before)") MB"
        case $tool in
        sluice) CMD=("$SLUICE" --repo "$repo" forget --keep-last "$LC_KEEP" --prune) ;;
        restic) CMD=(restic --repo "$repo" forget --keep-last "$LC_KEEP" --prune) ;;
        borg) CMD=(bash -c "$BORG_PRUNE_SH" lifecycle "$repo" "$LC_KEEP") ;;
        esac
        # What any command of the tool costs on this repository (start-up, key derivation,
        # reading the snapshot list), cold: the floor under the prune's time and RSS.
        case $tool in
        sluice) BASE=("$SLUICE" --repo "$repo" snapshots) ;;
        restic) BASE=(restic --repo "$repo" snapshots) ;;
        borg) BASE=(borg list "$repo") ;;
        esac
        drop_caches
        if run_timed /dev/null /dev/null "lc-base-$tool.log" "${BASE[@]}"; then
            setr lc "$tool" base "$T_SECS / $(mib "$T_RSS_KB")"
        fi
        drop_caches
        if ! run_timed /dev/null "$WORK/logs/lc-prune-$tool.out" "lc-prune-$tool.log" "${CMD[@]}"; then
            setr lc "$tool" secs FAIL
            continue
        fi
        setr lc "$tool" secs "$T_SECS"
        setr lc "$tool" rss "$(mib "$T_RSS_KB")"
        sync
        setr lc "$tool" after "$(dir_bytes "$repo")"
        say "  forget+prune: ${T_SECS}s, peak RSS $(getr lc "$tool" rss) MiB, repo $(mb "$(getr lc "$tool" after)") MB"
        # Honesty checks, untimed: the right snapshots are left, the newest reads back, and
        # (sluice) nothing was merely marked and left for later.
        case $tool in
        sluice)
            left=$("$SLUICE" --repo "$repo" snapshots --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
            again=$("$SLUICE" --repo "$repo" prune --json 2>/dev/null | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["packs_deleted"], r["bytes_freed"], r["packs_waiting"])')
            sync
            setr lc "$tool" after2 "$(dir_bytes "$repo")"
            marks=$(find "$repo/prune" -type f 2>/dev/null | wc -l)
            say "  second prune (untimed): packs deleted, bytes freed, packs waiting = $again; pending marks left: $marks; repo $(mb "$(getr lc "$tool" after2)") MB"
            setr lc "$tool" second "$again"
            if "$SLUICE" --repo "$repo" cat latest dump.sql 2>/dev/null | cmp -s - "$(lc_file "$LC_VERSIONS")"; then
                say "  verified: the newest version reads back byte-identical"
            else
                warn "sluice: the newest version does not read back identical after prune"
                setr lc "$tool" secs WRONG
            fi
            ;;
        restic) left=$(restic --repo "$repo" snapshots --json 2>/dev/null | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))') ;;
        borg) left=$(borg list --short "$repo" 2>/dev/null | wc -l) ;;
        esac
        setr lc "$tool" left "$left"
        ((left == LC_KEEP)) || warn "$tool kept $left snapshots, expected $LC_KEEP"
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$repo"
    done
    section_end
    out "## Lifecycle: $LC_VERSIONS versions of a $(mb "$(stat -c %s "$(lc_file 1)")") MB SQL dump (~${MUTATE_PCT}% of rows changed between versions), then keep the last $LC_KEEP"
    out ""
    out "Timed: \`sluice forget --keep-last $LC_KEEP --prune\`, \`restic forget --keep-last $LC_KEEP --prune\`, \`borg prune --keep-last $LC_KEEP && borg compact\` (each with its default thresholds: sluice and restic repack packs over 5% unused, borg compacts segments over 10%), cold page cache."
    out ""
    out "| tool | forget+prune s | peak RSS MiB | repo before MB | repo after MB | snapshots left | listing snapshots alone: s / RSS MiB |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for tool in $TOOLS; do
        b=$(getr lc "$tool" before) a=$(getr lc "$tool" after)
        [[ $b =~ ^[0-9]+$ ]] && b=$(mb "$b")
        [[ $a =~ ^[0-9]+$ ]] && a=$(mb "$a")
        out "| $tool | $(getr lc "$tool" secs) | $(getr lc "$tool" rss) | $b | $a | $(getr lc "$tool" left) | $(getr lc "$tool" base) |"
    done
    out ""
    if has_tool sluice; then
        out "- sluice: a second \`sluice prune\` right after found (packs deleted, bytes freed, packs waiting) = ($(getr lc sluice second)); repo then $(mb "$(getr lc sluice after2)") MB: the first prune deleted the data, it did not only mark it"
        for tool in restic borg; do
            has_tool "$tool" || continue
            out "- $tool/sluice time: $(ratio "$(getr lc "$tool" secs)" "$(getr lc sluice secs)") (target >= 3x); sluice/$tool repo after: $(ratio "$(getr lc sluice after)" "$(getr lc "$tool" after)"); sluice/$tool peak RSS: $(ratio "$(getr lc sluice rss)" "$(getr lc "$tool" rss)") (targets vs restic: <= 1 each)"
        done
        out ""
    fi
fi

# ---- delta: what later versions of the same stream cost ----------------------------------
# delta_series KEY LABEL NAME FILE...: ingests the files in order as versions v1..vN of NAME
# into each tool, and reports the bytes each later version added to the repository, the
# first and the last version's ingest and cold restore speed, ingest peak RSS, and (sluice)
# random 4 KiB reads of the last version through a fresh mount.
delta_series() {
    local key=$1 label=$2 name=$3 tool repo k n f b now prev total adds rss rounds round secs
    shift 3
    local files=("$@")
    n=${#files[@]}
    for tool in $TOOLS; do
        section "Delta: $key with $tool"
        repo=$WORK/repos/delta-$key-$tool
        rm -rf "$repo"
        cmd_init "$tool" "$repo"
        "${CMD[@]}" >"$WORK/logs/init-delta-$key-$tool.log" 2>&1 || {
            warn "$tool init failed"
            setr "d-$key" "$tool" total FAIL
            continue
        }
        prev=0 total=0 adds="" rss=0
        for ((k = 1; k <= n; k++)); do
            f=${files[k - 1]}
            b=$(stat -c %s "$f")
            cmd_ingest "$tool" "$repo" "$name" "v$k"
            # sluice's first and last versions are timed in rounds, each into a copy of the
            # repository as it was before (the same chunker key, the same bases); the last
            # round's repository is kept, and the median time reported.
            rounds=1
            [[ $tool == sluice ]] && ((k == 1 || k == n)) && rounds=$DELTA_ROUNDS
            secs=""
            for ((round = 1; round <= rounds; round++)); do
                if ((round < rounds)); then
                    rm -rf "$repo.before"
                    cp -a "$repo" "$repo.before"
                fi
                warm "$f"
                if ! run_timed "$f" "$WORK/logs/delta-$key-$tool.out" "delta-$key-$tool.log" "${CMD[@]}"; then
                    secs=FAIL
                    break
                fi
                secs+="$T_SECS "
                ((T_RSS_KB > rss)) && rss=$T_RSS_KB
                if ((round < rounds)); then
                    rm -rf "$repo"
                    mv "$repo.before" "$repo"
                fi
            done
            rm -rf "$repo.before"
            if [[ $secs == FAIL ]]; then
                total=FAIL
                break
            fi
            T_SECS=$(median_secs "$secs")
            ((rounds > 1)) && say "  v$k ingest rounds: ${secs}s (median $T_SECS s)"
            [[ $tool == sluice ]] && note_snapshot "$repo" "v$k" "$WORK/logs/delta-$key-$tool.out"
            sync
            now=$(dir_bytes "$repo")
            if ((k == 1)); then
                setr "d-$key" "$tool" repo1 "$now"
                setr "d-$key" "$tool" ingest1 "$(mbps "$b" "$T_SECS")"
                say "  v1: $(mb "$b") MB in ${T_SECS}s, repo $(mb "$now") MB"
            else
                adds+="$(mb $((now - prev))) "
                total=$((total + now - prev))
                setr "d-$key" "$tool" ingestN "$(mbps "$b" "$T_SECS")"
                say "  v$k: ${T_SECS}s, added $(mb $((now - prev))) MB"
            fi
            prev=$now
        done
        setr "d-$key" "$tool" total "$total"
        setr "d-$key" "$tool" adds "$adds"
        setr "d-$key" "$tool" rss "$(mib "$rss")"
        [[ $total == FAIL ]] && continue
        for k in 1 "$n"; do
            rounds=1
            [[ $tool == sluice ]] && rounds=$DELTA_ROUNDS
            secs=""
            for ((round = 1; round <= rounds; round++)); do
                drop_caches
                cmd_restore "$tool" "$repo" "$name" "v$k"
                if run_timed /dev/null /dev/null "delta-restore-$key-$tool.log" "${CMD[@]}"; then
                    secs+="$T_SECS "
                else
                    secs=FAIL
                    break
                fi
            done
            if [[ $secs == FAIL ]]; then
                setr "d-$key" "$tool" "restore$k" FAIL
                continue
            fi
            T_SECS=$(median_secs "$secs")
            ((rounds > 1)) && say "  v$k restore rounds: ${secs}s (median $T_SECS s)"
            setr "d-$key" "$tool" "restore$k" "$(mbps "$(stat -c %s "${files[k - 1]}")" "$T_SECS")"
        done
        say "  restore (cold): v1 $(getr "d-$key" "$tool" restore1) MB/s, v$n $(getr "d-$key" "$tool" "restore$n") MB/s"
        if [[ $tool == sluice ]]; then
            if "${CMD[@]}" 2>/dev/null | cmp -s - "${files[n - 1]}"; then
                say "  verified: v$n reads back byte-identical"
            else
                warn "sluice cat of $key v$n differs from the input!"
                setr "d-$key" "$tool" "restore$n" WRONG
            fi
            drop_caches
            mnt=$WORK/mnt/delta
            if mount_tool sluice "$repo" "$mnt" "$name" "v$n" && lat=$(python3 "$WORK/randread.py" "$OBJ" "$READS" 2>"$WORK/logs/delta-randread-$key.log"); then
                setr "d-$key" sluice rand_med "${lat% *}"
                say "  $READS random 4 KiB reads of v$n (fresh mount, cold cache): median ${lat% *} ms, max ${lat#* } ms"
            else
                setr "d-$key" sluice rand_med FAIL
            fi
            umount_tool sluice "$mnt"
        fi
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$repo"
    done
    section_end
    out "## Delta: $label"
    out ""
    out "| tool | v1 MB | repo after v1 MB | added by v2..v$n MB | later versions together MB | ingest MB/s v1 / v$n | restore MB/s v1 / v$n (cold) | ingest peak RSS MiB | 4 KiB random read median ms (v$n, mount) |"
    out "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    local r1 t
    for tool in $TOOLS; do
        r1=$(getr "d-$key" "$tool" repo1)
        [[ $r1 =~ ^[0-9]+$ ]] && r1=$(mb "$r1")
        t=$(getr "d-$key" "$tool" total)
        [[ $t =~ ^[0-9]+$ ]] && t=$(mb "$t")
        out "| $tool | $(mb "$(stat -c %s "${files[0]}")") | $r1 | $(getr "d-$key" "$tool" adds) | $t | $(getr "d-$key" "$tool" ingest1) / $(getr "d-$key" "$tool" ingestN) | $(getr "d-$key" "$tool" restore1) / $(getr "d-$key" "$tool" "restore$n") | $(getr "d-$key" "$tool" rss) | $(getr "d-$key" "$tool" rand_med) |"
    done
    out ""
    if has_tool sluice; then
        for tool in restic borg; do
            has_tool "$tool" || continue
            out "- sluice/$tool, bytes added by the later versions together: $(ratio "$(getr "d-$key" sluice total)" "$(getr "d-$key" "$tool" total)")$([[ $tool == restic ]] && echo ' (target <= 0.10x)')"
        done
        out "- sluice v$n/v1: ingest $(ratio "$(getr "d-$key" sluice ingestN)" "$(getr "d-$key" sluice ingest1)") (target >= 0.8x), restore $(ratio "$(getr "d-$key" sluice "restore$n")" "$(getr "d-$key" sluice restore1)") (target >= 0.7x); random read median $(getr "d-$key" sluice rand_med) ms (target <= 10); ingest peak RSS $(getr "d-$key" sluice rss) MiB (target <= 128)"
        out ""
    fi
}

# maria_series DIR: three nightly `mariadb-backup --backup --stream=xbstream --parallel=1` of
# a private server (unix socket, no networking) holding ~MARIA_MB MB, with 1% of the rows
# updated between nights; files DIR/night{1,2,3}.xb. Cached like the other inputs.
maria_series() {
    local d=$1 p rows night data sock
    p="mb=$MARIA_MB v1"
    [[ -f $d/night3.xb && -f $d/params && $(cat "$d/params") == "$p" ]] && return 0
    rm -rf "$d"
    mkdir -p "$d/tmp"
    data=$WORK/maria/data
    rm -rf "$WORK/maria"
    mkdir -p "$WORK/maria/tmp"
    sock=$WORK/maria/mysqld.sock
    say "  mariadb-install-db; starting a private server on $sock (no networking)"
    mariadb-install-db --no-defaults --datadir="$data" --auth-root-authentication-method=socket --skip-test-db --user=root \
        >"$WORK/logs/maria-install.log" 2>&1 || {
        warn "mariadb-install-db failed (see $WORK/logs/maria-install.log)"
        return 1
    }
    mariadbd --no-defaults --datadir="$data" --socket="$sock" --tmpdir="$WORK/maria/tmp" \
        --pid-file="$WORK/maria/mysqld.pid" --log-error="$WORK/logs/maria-error.log" --skip-networking \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-flush-log-at-trx-commit=2 \
        --skip-log-bin --user=root </dev/null >/dev/null 2>&1 &
    MARIA_PID=$!
    MARIA_SOCK=$sock
    BG_PIDS+=("$MARIA_PID")
    local i
    for ((i = 0; i < 900; i++)); do
        mariadb-admin --socket="$sock" --user=root ping >/dev/null 2>&1 && break
        kill -0 "$MARIA_PID" 2>/dev/null || {
            warn "mariadbd exited (see $WORK/logs/maria-error.log)"
            return 1
        }
        sleep 0.1
    done
    # ~330 bytes of row data per order, plus InnoDB overhead: about 3000 rows per MB on disk.
    rows=$((MARIA_MB * 3000))
    say "  loading ~$rows rows"
    mariadb --socket="$sock" --user=root -e "
        SET SESSION max_recursive_iterations = 100000000;
        CREATE DATABASE shop; USE shop;
        CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64), amount DECIMAL(12,2),
                             note VARCHAR(255), payload VARBINARY(64), made DATETIME) ENGINE=InnoDB;
        INSERT INTO orders WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $rows)
          SELECT n, CONCAT('customer-', n % 99991), (n * 37 % 100000) / 100,
                 CONCAT(REPEAT(CHAR(65 + n % 26), 20 + n % 120), ' ', SHA2(n, 256)), UNHEX(SHA2(n * 7, 256)),
                 '2026-01-01' + INTERVAL n MINUTE FROM s;" >"$WORK/logs/maria-load.log" 2>&1 || {
        warn "loading MariaDB failed (see $WORK/logs/maria-load.log)"
        return 1
    }
    say "  datadir $(mb "$(dir_bytes "$data")") MB"
    for night in 1 2 3; do
        if ((night > 1)); then
            # 1% of the rows, spread over the whole table.
            mariadb --socket="$sock" --user=root shop -e "UPDATE orders SET amount = amount + $night, note = CONCAT(LEFT(note, 200), ' n$night') WHERE (id * 7919) % 100 = $night;" \
                >>"$WORK/logs/maria-load.log" 2>&1 || {
                warn "the nightly UPDATE failed"
                return 1
            }
        fi
        rm -rf "$d/tmp" && mkdir -p "$d/tmp"
        mariadb-backup --backup --stream=xbstream --parallel=1 --target-dir="$d/tmp" --socket="$sock" --user=root \
            >"$d/night$night.xb" 2>"$WORK/logs/maria-backup$night.log" || {
            warn "mariadb-backup failed (see $WORK/logs/maria-backup$night.log)"
            return 1
        }
        say "  night $night: $(mb "$(stat -c %s "$d/night$night.xb")") MB xbstream"
    done
    maria_stop
    rm -rf "$WORK/maria" "$d/tmp"
    printf '%s' "$p" >"$d/params"
}

if has_phase delta; then
    section "Delta inputs"
    # (c) five nights with ~1% of rows changed uniformly, starting from the ingest phase's dump
    mkdir -p "$IN/uni"
    p="bytes=$SIZE nights=$NIGHTS pct=$UNIFORM_PCT v1"
    uni=("$IN/sql1.sql")
    for ((k = 2; k <= NIGHTS; k++)); do uni+=("$IN/uni/night$k.sql"); done
    if ! fresh uni/night2.sql "$p"; then
        say "generating $NIGHTS nights of the SQL dump with ${UNIFORM_PCT}% of rows changed uniformly each night"
        for ((k = 2; k <= NIGHTS; k++)); do
            perl "$SCRIPTS_DIR/gen-sql-dump.pl" --mutate "$UNIFORM_PCT" --cluster 1 --seed $((60 + k)) <"${uni[k - 2]}" >"${uni[k - 1]}"
        done
        stamp uni/night2.sql "$p"
    fi
    maria_ok=0
    if [[ ${BENCH_MARIA:-1} != 0 ]]; then
        if command -v mariadbd >/dev/null && command -v mariadb-backup >/dev/null || ensure_pkgs_optional mariadb-server mariadb-backup; then
            say "MariaDB: three nights of mariadb-backup --stream=xbstream --parallel=1 (~$MARIA_MB MB server)"
            maria_series "$IN/maria" && maria_ok=1
        else
            warn "MariaDB not available (scripts/install-db.sh installs it): skipping the xbstream series"
        fi
    fi
    section_end
    delta_series pg "pg_dump of pgbench (scale $PG_SCALE) before/after \`pgbench -c 2 -T $CHURN_SECS\`" shop.sql "$IN/pg1.sql" "$IN/pg2.sql"
    delta_series sql "generated SQL dump, second with ~${MUTATE_PCT}% of rows changed in clustered regions (${CLUSTER}-line runs)" dump.sql "$IN/sql1.sql" "$IN/sql2.sql"
    delta_series uniform "$NIGHTS nights of the generated SQL dump, ~${UNIFORM_PCT}% of rows changed uniformly each night" dump.sql "${uni[@]}"
    if ((maria_ok)); then
        delta_series maria "three nights of \`mariadb-backup --backup --stream=xbstream --parallel=1\` of a ~$MARIA_MB MB MariaDB server, 1% of rows updated between nights" db.xb "$IN/maria/night1.xb" "$IN/maria/night2.xb" "$IN/maria/night3.xb"
    fi
fi

# shellcheck source-path=SCRIPTDIR source=bench-members.sh
source "$here/bench-members.sh"

# ---- prune at scale: memory with millions of chunks --------------------------------------
# A synthetic repository written directly through the library (examples/synth_repo.rs: tiny
# chunks, so 10 million chunks take ~2 GB instead of the 2.5 TB ingest's minimum chunk size
# would need), cached under $WORK/scale; a copy has half of its snapshots forgotten and is
# pruned under GNU time. Target: peak RSS < 256 MiB at 10 million chunks.
if has_phase prune-scale && has_tool sluice; then
    section "Prune at scale: $SCALE_CHUNKS chunks"
    t_phase=$(date +%s)
    SYNTH=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/synth_repo
    (cd "$REPO_ROOT" && nice cargo build --release -q --example synth_repo) || die "cannot build examples/synth_repo"
    cache=$WORK/scale/repo-$SCALE_CHUNKS
    p="chunks=$SCALE_CHUNKS snapshots=$SCALE_SNAPSHOTS v1"
    if ! [[ -f $cache.params && $(cat "$cache.params") == "$p" ]]; then
        rm -rf "$cache"
        mkdir -p "$WORK/scale"
        "$SLUICE" --repo "$cache" -q init "${SLUICE_INIT_ARGS[@]}" >/dev/null
        say "  writing the synthetic repository (cached in $cache)"
        if ! run_timed /dev/null "$WORK/logs/synth.out" synth.log "$SYNTH" --repo "$cache" --chunks "$SCALE_CHUNKS" --snapshots "$SCALE_SNAPSHOTS"; then
            die "synth_repo failed (see $WORK/logs/synth.log)"
        fi
        say "  written in ${T_SECS}s: $(cat "$WORK/logs/synth.out")"
        printf '%s' "$p" >"$cache.params"
    fi
    repo=$WORK/repos/scale
    rm -rf "$repo"
    cp -a "$cache" "$repo"
    mapfile -t old < <("$SLUICE" --repo "$repo" snapshots --json | python3 -c '
import json, sys
s = sorted(json.load(sys.stdin), key=lambda x: x["unix_time"])
for x in s[: len(s) // 2]:
    print(x["id"])')
    "$SLUICE" --repo "$repo" -q forget "${old[@]}" >/dev/null 2>"$WORK/logs/scale-forget.log" || die "forget failed (see $WORK/logs/scale-forget.log)"
    drop_caches
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$WORK/logs/scale-time.txt" "$SLUICE" --repo "$repo" prune --json >"$WORK/logs/scale-prune.json" 2>"$WORK/logs/scale-prune.log" &
    tpid=$!
    # The peak is Argon2id's 64 MiB at key derivation, as for any sluice command; sampling
    # VmRSS every 0.25 s shows what prune itself holds once that memory is freed.
    : >"$WORK/logs/scale-rss.txt"
    while kill -0 "$tpid" 2>/dev/null; do
        for c in $(pgrep -P "$tpid" 2>/dev/null); do
            awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } END { if (r) print r, h }' "/proc/$c/status" 2>/dev/null >>"$WORK/logs/scale-rss.txt" || true
        done
        sleep 0.25
    done
    if wait "$tpid"; then
        t1=$(date +%s%N)
        # The largest VmRSS from the first sample below the process's high-water mark on (the
        # key derivation's memory freed). None such: prune itself set the peak.
        after_kdf=$(awk '{ if ($1 < $2) fell = 1; if (fell && $1 > m) m = $1 } END { if (m) printf "%.0f", m / 1024; else print "= peak" }' "$WORK/logs/scale-rss.txt")
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
        rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$WORK/logs/scale-time.txt")
        freed=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["packs_deleted"], r["bytes_freed"], r["packs"])' "$WORK/logs/scale-prune.json")
        say "  prune: ${secs}s, peak RSS $rss MiB (after key derivation: $after_kdf MiB); packs deleted, bytes freed, packs = $freed"
        verdict="n/a"
        "$SLUICE" --repo "$repo" cat latest synth.bin >/dev/null 2>"$WORK/logs/scale-cat.log" && verdict="the newest snapshot reads back (cat checks its BLAKE3)" || verdict="FAIL: the newest snapshot does not read back"
        out "## Prune at scale: $SCALE_CHUNKS chunks in $SCALE_SNAPSHOTS snapshots (synthetic, examples/synth_repo.rs), half of the snapshots forgotten"
        out ""
        out "| chunks | repo MB | prune s | peak RSS MiB (target < 256 at 10M) | largest VmRSS after key derivation, MiB (sampled) | packs deleted, bytes freed, packs |"
        out "| ---: | ---: | ---: | ---: | ---: | --- |"
        out "| $SCALE_CHUNKS | $(mb "$(dir_bytes "$cache")") | $secs | $rss | $after_kdf | $freed |"
        out ""
        out "- after the prune: $verdict; phase took $(($(date +%s) - t_phase)) s"
        out ""
    else
        warn "prune failed: $(tail -n 3 "$WORK/logs/scale-prune.log")"
        out "## Prune at scale: FAIL (see $WORK/logs/scale-prune.log)"
    fi
    say "  phase took $(($(date +%s) - t_phase)) s"
    [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$repo"
fi

# shellcheck source-path=SCRIPTDIR source=bench-s3.sh
has_phase s3 && source "$here/bench-s3.sh"

section_end
out "_load average at end: $(cut -d' ' -f1-3 /proc/loadavg); total bench time $(elapsed_total)_"
say ""
say "results saved to $RESULTS"
