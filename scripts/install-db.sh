#!/usr/bin/env bash
# Installs the database servers and clients that the producer tests (tests/producers/) drive
# for real, from Debian's packages, only when they are missing:
#
#   PostgreSQL  server (initdb, pg_ctl, postgres), client (psql, pg_dump, pg_restore), pgbench
#   MariaDB     server (mariadb-install-db, mariadbd), client (mariadb, mariadb-dump),
#               backup (mariadb-backup, mbstream)
#   plus tar, gzip, xz, zstd and util-linux's runuser.
#
# Idempotent: when everything is present it touches nothing (no apt-get at all) and says so.
# It never starts, enables or configures a system service: the tests start throwaway servers
# of their own on temporary directories. Debian's postinst may start the packaged services
# when it installs them; we stop them again so nothing listens on the default ports.
#
# Usage: bash scripts/install-db.sh        (as root, or with everything already installed)
# Exit status: 0 when every tool is usable afterwards, 1 otherwise (with the reason).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

t0=$(date +%s)

# Debian package -> tools the tests use from it.
pkgs=(
    postgresql        # postgresql-NN: initdb, pg_ctl, postgres, pgbench
    postgresql-client # psql, pg_dump, pg_restore
    mariadb-server    # mariadb-install-db, mariadbd
    mariadb-client    # mariadb, mariadb-dump
    mariadb-backup    # mariadb-backup, mbstream
    tar gzip xz-utils zstd
    util-linux # runuser
)

missing=()
for p in "${pkgs[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    say "install-db: all packages present (${pkgs[*]}); nothing to install"
else
    say "install-db: missing packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "install-db: no apt-get here to install ${missing[*]}"
    ((EUID == 0)) || die "install-db: run as root to install ${missing[*]}"
    # Keep the packaged services from being started by postinst where policy-rc.d is honoured.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
        say "install-db: wrote $policy (exit 101) so postinst does not start services"
    fi
    restore_policy() { if ((made_policy)); then rm -f "$policy"; fi; }
    trap restore_policy EXIT
    apt_update_once
    say "install-db: apt-get install --no-install-recommends ${missing[*]}"
    _apt install --no-install-recommends "${missing[@]}" ||
        die "install-db: apt-get install ${missing[*]} failed"
    restore_policy
    trap - EXIT
    # Where service managers ignored the policy (or none is running), stop what postinst started.
    for svc in postgresql mariadb; do
        if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then
            say "install-db: stopping the packaged $svc service (tests run their own servers)"
            service "$svc" stop >/dev/null 2>&1 || warn "could not stop service $svc"
        fi
    done
fi

# What the tests will find.
if pgbin=$(pg_bindir); then
    say "install-db: PostgreSQL server binaries in $pgbin ($("$pgbin/postgres" --version))"
else
    die "install-db: PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql"
fi
problems=()
for c in "$pgbin/initdb" "$pgbin/pg_ctl" "$pgbin/pgbench" "$pgbin/pg_dump" "$pgbin/pg_restore" "$pgbin/psql"; do
    [[ -x $c ]] || problems+=("$c")
done
for c in mariadb-install-db mariadbd mariadb mariadb-dump mariadb-backup mbstream tar gzip xz zstd runuser; do
    if p=$(command -v "$c" 2>/dev/null) || p=$(PATH="$PATH:/usr/sbin:/sbin" command -v "$c" 2>/dev/null); then
        :
    else
        problems+=("$c")
    fi
done
if ((${#problems[@]})); then
    die "install-db: still missing after install: ${problems[*]}"
fi
say "install-db: $(PATH="$PATH:/usr/sbin" mariadbd --version 2>/dev/null | head -n1)"
say "install-db: $(mariadb-backup --version 2>&1 | head -n1)"
say "install-db: ready in $(fmt_secs $(($(date +%s) - t0)))"
