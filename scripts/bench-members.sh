# shellcheck shell=bash
# shellcheck disable=SC2034 # MARIA_PID/MARIA_SOCK are read by bench.sh's maria_stop
# Phase "members" of scripts/bench.sh (sourced by it; uses its helpers): files inside a stream.
# Against restic and borg in the same run:
#   - bytes added by a second `mariadb-backup --parallel=4` of an unchanged (quiescent) server
#     (target <= 1% of what the first added), and by nights 2 and 3 with 1% of rows updated;
#   - bytes added by a tar of 4,000 files with 20 changed (target <= 1 MB);
#   - sluice's ingest speed of an xbstream split vs --no-split (target >= 0.8x).
# Inputs are cached under $IN/members (params file), like the other phases'.

# members_maria DIR: a private server (unix socket, no networking) of ~MARIA_MB MB; once
# quiescent (no dirty pages, no purge backlog), `--parallel=4` backups DIR/b1.xb and, nothing
# changed, DIR/b1again.xb; then 1% of rows updated before each of DIR/b2.xb and DIR/b3.xb.
members_maria() {
    local d=$1 p rows data sock night i f
    p="mb=$MARIA_MB v1"
    [[ -f $d/b3.xb && -f $d/params && $(cat "$d/params") == "$p" ]] && return 0
    rm -rf "$d" "$WORK/mmaria"
    mkdir -p "$d" "$WORK/mmaria/tmp"
    data=$WORK/mmaria/data
    sock=$WORK/mmaria/mysqld.sock
    mariadb-install-db --no-defaults --datadir="$data" --auth-root-authentication-method=socket --skip-test-db --user=root \
        >"$WORK/logs/members-maria-install.log" 2>&1 || {
        warn "mariadb-install-db failed (see $WORK/logs/members-maria-install.log)"
        return 1
    }
    mariadbd --no-defaults --datadir="$data" --socket="$sock" --tmpdir="$WORK/mmaria/tmp" \
        --pid-file="$WORK/mmaria/mysqld.pid" --log-error="$WORK/logs/members-maria-error.log" --skip-networking \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-flush-log-at-trx-commit=2 \
        --skip-log-bin --user=root </dev/null >/dev/null 2>&1 &
    MARIA_PID=$!
    MARIA_SOCK=$sock # read by maria_stop (bench.sh)
    BG_PIDS+=("$MARIA_PID")
    for ((i = 0; i < 900; i++)); do
        mariadb-admin --socket="$sock" --user=root ping >/dev/null 2>&1 && break
        kill -0 "$MARIA_PID" 2>/dev/null || {
            warn "mariadbd exited (see $WORK/logs/members-maria-error.log)"
            return 1
        }
        sleep 0.1
    done
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
                 '2026-01-01' + INTERVAL n MINUTE FROM s;" >"$WORK/logs/members-maria-load.log" 2>&1 || {
        warn "loading MariaDB failed (see $WORK/logs/members-maria-load.log)"
        return 1
    }
    say "  datadir $(mb "$(dir_bytes "$data")") MB"
    members_quiesce "$sock"
    for f in b1 b1again b2 b3; do
        case $f in
        b2) night=2 ;;
        b3) night=3 ;;
        *) night=0 ;;
        esac
        if ((night)); then
            mariadb --socket="$sock" --user=root shop -e "UPDATE orders SET amount = amount + $night, note = CONCAT(LEFT(note, 200), ' n$night') WHERE (id * 7919) % 100 = $night;" \
                >>"$WORK/logs/members-maria-load.log" 2>&1 || {
                warn "the nightly UPDATE failed"
                return 1
            }
            members_quiesce "$sock"
        fi
        rm -rf "$d/tmp" && mkdir -p "$d/tmp"
        mariadb-backup --backup --stream=xbstream --parallel=4 --target-dir="$d/tmp" --socket="$sock" --user=root \
            >"$d/$f.xb" 2>"$WORK/logs/members-backup-$f.log" || {
            warn "mariadb-backup failed (see $WORK/logs/members-backup-$f.log)"
            return 1
        }
        say "  $f: $(mb "$(stat -c %s "$d/$f.xb")") MB xbstream"
    done
    maria_stop
    rm -rf "$WORK/mmaria" "$d/tmp"
    printf '%s' "$p" >"$d/params"
}

# members_quiesce SOCK: flush every dirty page and wait (at most 3 minutes) until InnoDB has
# neither dirty pages nor purge backlog, so that "unchanged" means unchanged on disk.
members_quiesce() {
    local i st
    mariadb --socket="$1" --user=root -e "SET GLOBAL innodb_max_dirty_pages_pct = 0; SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0;" >/dev/null 2>&1 || true
    for ((i = 0; i < 180; i++)); do
        st=$(mariadb --socket="$1" --user=root -e "SHOW ENGINE INNODB STATUS\G" 2>/dev/null)
        if grep -q "Modified db pages  *0$" <<<"$st" && grep -q "History list length 0$" <<<"$st"; then
            sleep 2
            return 0
        fi
        sleep 1
    done
    warn "InnoDB did not become quiescent in 3 minutes; the 'unchanged' backups may differ"
}

# members_tars DIR: DIR/t1.tar of 4,000 files (text and binary, 200 B to 200 KB, 80 MB in
# all) and DIR/t2.tar of the same tree with 20 files changed (a few bytes each, spread out).
members_tars() {
    local d=$1 p
    p="files=4000 changed=20 v1"
    [[ -f $d/t2.tar && -f $d/tars.params && $(cat "$d/tars.params") == "$p" ]] && return 0
    mkdir -p "$d"
    rm -rf "$d/tree"
    python3 - "$d/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(16)
words = b"select insert update order customer amount note payload made shop table index".split()
for i in range(4000):
    sub = os.path.join(root, "d%02d" % (i % 40), "s%d" % (i % 7))
    os.makedirs(sub, exist_ok=True)
    n = rng.choice([200, 900, 3000, 12000, 40000, 200000]) + rng.randrange(100)
    if i % 3:
        data = b" ".join(rng.choice(words) for _ in range(n // 6))[:n]
    else:
        data = rng.randbytes(n)
    with open(os.path.join(sub, "f%04d.dat" % i), "wb") as f:
        f.write(data)
PY
    tar -C "$d/tree" -cf "$d/t1.tar" --sort=name --mtime=@1700000000 .
    python3 - "$d/tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(0, 4000, 200):
    p = os.path.join(root, "d%02d" % (i % 40), "s%d" % (i % 7), "f%04d.dat" % i)
    with open(p, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(size // 2)
        f.write(b"CHANGED")
PY
    tar -C "$d/tree" -cf "$d/t2.tar" --sort=name --mtime=@1700000000 .
    rm -rf "$d/tree"
    printf '%s' "$p" >"$d/tars.params"
}

# members_series KEY NAME FILE...: per tool, a fresh repository; each FILE ingested in turn;
# records the bytes each added (repository growth) as R[m-KEY|tool|vN].
members_series() {
    local key=$1 name=$2 tool repo k f prev now
    shift 2
    for tool in $TOOLS; do
        repo=$WORK/repos/members-$key-$tool
        rm -rf "$repo"
        cmd_init "$tool" "$repo"
        "${CMD[@]}" >"$WORK/logs/init-members-$key-$tool.log" 2>&1 || {
            warn "$tool init failed"
            continue
        }
        prev=$(dir_bytes "$repo")
        k=0
        for f in "$@"; do
            k=$((k + 1))
            warm "$f"
            cmd_ingest "$tool" "$repo" "$name" "v$k"
            run_timed "$f" "$WORK/logs/members-$key-$tool.out" "members-$key-$tool.log" "${CMD[@]}" || break
            sync
            now=$(dir_bytes "$repo")
            setr "m-$key" "$tool" "v$k" $((now - prev))
            say "  $key $tool v$k: added $(mb $((now - prev))) MB in ${T_SECS}s"
            prev=$now
        done
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$repo"
    done
}

# members_sum A B: A + B, or n/a.
members_sum() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9]+$/ || b !~ /^[0-9]+$/) print "n/a"; else printf "%.0f", a + b }'; }

# pct A B: A as a percentage of B.
members_pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9]+$/ || b !~ /^[0-9]+$/ || b == 0) print "n/a"; else printf "%.2f%%", a * 100 / b }'; }

if has_phase members; then
    section "Members: inputs"
    members_ok=0
    if command -v mariadbd >/dev/null && command -v mariadb-backup >/dev/null || ensure_pkgs_optional mariadb-server mariadb-backup; then
        say "MariaDB: --parallel=4 backups of a ~$MARIA_MB MB server (unchanged, then 1% of rows updated twice)"
        members_maria "$IN/members" && members_ok=1
    else
        warn "MariaDB not available (scripts/install-db.sh installs it): skipping the xbstream series"
    fi
    members_tars "$IN/members"
    section_end
    section "Members: runs"
    if ((members_ok)); then
        mx=("$IN/members/b1.xb" "$IN/members/b1again.xb" "$IN/members/b2.xb" "$IN/members/b3.xb")
        members_series xb db.xb "${mx[@]}"
    fi
    members_series tar doc.tar "$IN/members/t1.tar" "$IN/members/t2.tar"
    # Ingest speed of the same xbstream split and --no-split, fresh repositories each, three
    # alternating rounds (median): this machine's shared cores swing single figures.
    if ((members_ok)) && has_tool sluice; then
        for _ in 1 2 3; do
            for mode in split nosplit; do
                repo=$WORK/repos/members-speed-$mode
                rm -rf "$repo"
                "$SLUICE" --repo "$repo" -q init "${SLUICE_INIT_ARGS[@]}" >/dev/null 2>&1
                extra=()
                [[ $mode == nosplit ]] && extra=(--no-split)
                warm "$IN/members/b1.xb"
                run_timed "$IN/members/b1.xb" "$WORK/logs/members-speed.out" members-speed.log \
                    "$SLUICE" --repo "$repo" ingest --name db.xb --json "${extra[@]}" || continue
                addr m-speed sluice "$mode" "$(mbps "$(stat -c %s "$IN/members/b1.xb")" "$T_SECS")"
                rm -rf "$repo"
            done
        done
    fi
    section_end
    out "## Files inside a stream (members)"
    out ""
    if ((members_ok)); then
        out "\`mariadb-backup --backup --stream=xbstream --parallel=4\` of a ~$MARIA_MB MB server ($(mb "$(stat -c %s "$IN/members/b1.xb")") MB stream): bytes added (repository growth)"
        out ""
        out "| tool | first | second, unchanged | % of first (target <= 1%) | night 2 (1% rows) | night 3 (1% rows) |"
        out "| --- | ---: | ---: | ---: | ---: | ---: |"
        for tool in $TOOLS; do
            out "| $tool | $(mb "$(getr m-xb "$tool" v1)") MB | $(mb "$(getr m-xb "$tool" v2)") MB | $(members_pct "$(getr m-xb "$tool" v2)" "$(getr m-xb "$tool" v1)") | $(mb "$(getr m-xb "$tool" v3)") MB | $(mb "$(getr m-xb "$tool" v4)") MB |"
        done
        out ""
        if has_tool sluice; then
            out "- nights 2+3, sluice vs restic: $(ratio "$(members_sum "$(getr m-xb sluice v3)" "$(getr m-xb sluice v4)")" "$(members_sum "$(getr m-xb restic v3)" "$(getr m-xb restic v4)")") (target <= 0.10x)"
            out "- sluice ingest speed of the first backup, split $(medianr m-speed sluice split) MB/s vs --no-split $(medianr m-speed sluice nosplit) MB/s; per-round ratios $(paired_ratios m-speed sluice split nosplit) (target >= 0.8x)"
            out ""
        fi
    fi
    out "tar of 4,000 files ($(mb "$(stat -c %s "$IN/members/t1.tar")") MB), then the same with 20 files changed: bytes added"
    out ""
    out "| tool | first | 20 files changed (target <= 1 MB) |"
    out "| --- | ---: | ---: |"
    for tool in $TOOLS; do
        out "| $tool | $(mb "$(getr m-tar "$tool" v1)") MB | $(mb "$(getr m-tar "$tool" v2)") MB |"
    done
    out ""
fi
