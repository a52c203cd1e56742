# shellcheck shell=bash
# Helpers shared by scripts/test.sh, scripts/demo.sh and scripts/bench.sh.
# Source it; it defines functions and a few variables, and runs nothing.

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$SCRIPTS_DIR/.." && pwd)
export SCRIPTS_DIR REPO_ROOT

_t_script_start=$(date +%s)
_t_section_start=$_t_script_start
_section_name=""

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}

# Elapsed seconds since the script started, as "MmSSs".
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
elapsed_total() { fmt_secs $(($(date +%s) - _t_script_start)); }

# section "Title": prints a header, and how long the previous section took.
section() {
    local t
    t=$(date +%s)
    if [[ -n $_section_name ]]; then
        printf -- '---- %s: done in %s\n' "$_section_name" "$(fmt_secs $((t - _t_section_start)))"
    fi
    _t_section_start=$t
    _section_name=$1
    printf '\n==== %s   [+%s]\n' "$1" "$(elapsed_total)"
}
section_end() {
    if [[ -n $_section_name ]]; then
        printf -- '---- %s: done in %s\n' "$_section_name" "$(fmt_secs $(($(date +%s) - _t_section_start)))"
        _section_name=""
    fi
}

# ---- packages ----------------------------------------------------------------------------

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

_apt_updated=0
_apt() {
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600 "$@"
}
apt_update_once() {
    if ((_apt_updated == 0)); then
        say "apt-get update"
        local log
        log=$(mktemp /tmp/sluice-apt.XXXXXX)
        if ! _apt update >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            die "apt-get update failed"
        fi
        rm -f "$log"
        _apt_updated=1
    fi
}

# ensure_pkgs PKG...: installs the Debian packages among PKG that are not installed yet.
# Does nothing (and never touches apt) when all are present.
ensure_pkgs() {
    local p missing=()
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "packages present: $*"
        return 0
    fi
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    ((EUID == 0)) || die "missing packages (${missing[*]}); run as root to install them"
    apt_update_once
    say "apt-get install ${missing[*]}"
    _apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed"
}

# _apt_install PKG...: installs without starting services (PostgreSQL's and MariaDB's
# packages would start system servers on the default ports otherwise; tests and scripts
# start their own on private sockets).
_apt_install() {
    local made_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local log
    log=$(mktemp /tmp/sluice-apt.XXXXXX)
    _apt install --no-install-recommends "$@" >"$log" 2>&1 || rc=$?
    if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    if ((rc != 0)); then tail -n 20 "$log" >&2; fi
    rm -f "$log"
    return "$rc"
}

# ensure_pkgs_optional PKG...: like ensure_pkgs, but a package that cannot be installed
# is only reported. Returns 0 always.
ensure_pkgs_optional() {
    local p
    for p in "$@"; do
        pkg_installed "$p" && continue
        if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
            warn "optional package $p missing and cannot be installed"
            continue
        fi
        apt_update_once
        if _apt_install "$p" 2>/dev/null; then
            say "installed optional package $p"
        else
            warn "optional package $p could not be installed; continuing without it"
        fi
    done
    return 0
}

# ---- PostgreSQL (a throwaway cluster on a private directory and socket) -------------------

pg_bindir() {
    local d
    for d in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

as_postgres() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

PG_DIR=""
# pg_start: starts a cluster in a new temporary directory, listening only on a unix socket
# there (so it cannot collide with any other server on this machine). Exports PGHOST,
# PGPORT, PGUSER for the client tools and puts the server's bin dir first on PATH.
pg_start() {
    local bindir
    bindir=$(pg_bindir) || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    export PATH="$bindir:$PATH"
    PG_DIR=$(mktemp -d /tmp/sluice-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    mkdir -p "$PG_DIR/sock"
    if ((EUID == 0)); then chown -R postgres:postgres "$PG_DIR"; fi
    as_postgres initdb -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1 ||
        die "initdb failed; see $PG_DIR/initdb.log"
    as_postgres pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-k $PG_DIR/sock -p 5432 -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=2GB" \
        start >/dev/null || die "PostgreSQL did not start; see $PG_DIR/server.log"
    export PGHOST="$PG_DIR/sock" PGPORT=5432 PGUSER=postgres
}

pg_stop() {
    if [[ -n $PG_DIR && -d $PG_DIR/data ]]; then
        as_postgres pg_ctl -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    PG_DIR=""
}

# ---- FUSE --------------------------------------------------------------------------------

# fuse_trial_mount: proves that this machine can mount a FUSE filesystem: /dev/fuse opens
# and the kernel accepts a fuse mount(2). Nothing serves the mount: it is detached at once.
fuse_trial_mount() {
    [[ -c /dev/fuse ]] || return 1
    python3 - <<'PY'
import ctypes, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
d = tempfile.mkdtemp(prefix="sluice-fuse-trial.")
fd = os.open("/dev/fuse", os.O_RDWR)
opts = "fd=%d,rootmode=40000,user_id=%d,group_id=%d" % (fd, os.getuid(), os.getgid())
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
rc = libc.mount(b"sluice-trial", d.encode(), b"fuse.sluice-trial", MS_NOSUID | MS_NODEV, opts.encode())
err = ctypes.get_errno()
if rc == 0:
    libc.umount2(d.encode(), MNT_DETACH)
os.close(fd)
os.rmdir(d)
if rc != 0:
    print("fuse trial mount failed: %s" % os.strerror(err), file=sys.stderr)
    sys.exit(1)
PY
}

# ---- misc --------------------------------------------------------------------------------

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        warn "cannot drop the page cache (not root?); cold-cache figures are warm"
    fi
}

# is_mounted DIR: DIR is a mount point right now.
is_mounted() {
    local d
    d=$(realpath -m "$1")
    awk -v d="$d" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts
}
