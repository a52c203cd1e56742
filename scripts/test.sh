#!/usr/bin/env bash
# The one test command (CI runs .ci/run, which runs this).
#
# On a fresh Debian 12 machine with only the Rust toolchain, gcc, python3 and git, it
#   1. installs what the tests need from Debian's packages, only when missing (FUSE, b3sum,
#      the linter here, restic for the retention comparison; PostgreSQL, MariaDB with
#      mariadb-backup, tar/gzip/xz/zstd through scripts/install-db.sh);
#   2. checks that FUSE mounts work (in CI, CI=true, a machine without FUSE is a failure,
#      never a skip; the tests see SLUICE_TEST_REQUIRE_FUSE=1);
#   3. runs cargo fmt --check, clippy -D warnings, shellcheck of scripts/, and
#      cargo test --workspace --release;
#   4. builds the .deb, installs it, checks it and removes it (scripts/package-test.sh).
#
# Environment:
#   SKIP_INSTALL=1   do not run apt-get (report what is missing instead)
#   CARGO_TEST_ARGS  extra arguments for cargo test, e.g. "-- --test-threads=1"
#   TEST_TIMEOUT     limit for cargo test (default 75m)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"
cd "$REPO_ROOT"

on_exit() {
    local rc=$?
    section_end
    if ((rc == 0)); then
        say ""
        say "ALL PASSED in $(elapsed_total)"
    else
        say ""
        say "FAILED (exit $rc) after $(elapsed_total)"
    fi
}
trap on_exit EXIT

in_ci=0
if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then in_ci=1; fi

section "Environment"
say "repo:   $REPO_ROOT"
say "host:   $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
say "rust:   $(rustc --version) / $(cargo --version)"
say "CI:     $([[ $in_ci == 1 ]] && echo yes || echo no)"

section "System packages"
# Debian package -> what the tests use it for. The database servers and clients of the
# producer tests (PostgreSQL, MariaDB with mariadb-backup, tar/gzip/xz/zstd) are installed by
# scripts/install-db.sh, which the tests name in their hints.
pkgs=(
    fuse3      # fusermount3 (unmount, non-root and AutoUnmount mounts)
    util-linux # mountpoint, runuser
    procps     # ps, pgrep for the mount tests
    shellcheck # lint of scripts/
    attr       # setfattr: the read-only mount test tries to set an xattr through the shell tool
    # The package test (scripts/package-test.sh): build the .deb, install it, remove it.
    dpkg-dev        # dpkg-shlibdeps: the package's library dependencies
    binutils        # objcopy: the packaged binary without debug info
    man-db          # man -w finds the installed pages
    bash-completion # the installed completion completes `sluice in<TAB>`
    systemd         # systemd-analyze verify of the units
    jq              # the README's monitoring one-liner over snapshots --json
    restic     # the retention policy is compared with restic's forget (tests/policy)
    tzdata     # Europe/Berlin for that comparison (restic and jiff read /usr/share/zoneinfo)
)
if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
    missing=()
    for p in "${pkgs[@]}" b3sum postgresql postgresql-client mariadb-server mariadb-client mariadb-backup tar gzip xz-utils zstd; do
        pkg_installed "$p" || missing+=("$p")
    done
    say "SKIP_INSTALL=1; missing: ${missing[*]:-none}"
else
    ensure_pkgs "${pkgs[@]}"
    ensure_pkgs_optional b3sum # Debian 12 has it (1.2.0); digests are compared with it
    bash "$SCRIPTS_DIR/install-db.sh"
fi
# The server binaries (initdb, pg_ctl, postgres) are not on PATH in Debian: put them there.
if pgbin=$(pg_bindir); then
    export PATH="$pgbin:$PATH"
    say "PostgreSQL server binaries: $pgbin"
fi
for c in fusermount3 initdb pg_ctl pg_dump pgbench psql mariadbd mariadb-backup mbstream tar zstd xz; do
    command -v "$c" >/dev/null || warn "$c not found on PATH"
done

section "FUSE"
if [[ ! -e /dev/fuse ]]; then
    # Some containers have the module but no device node.
    modprobe fuse 2>/dev/null || true
    [[ -e /dev/fuse ]] || mknod -m 666 /dev/fuse c 10 229 2>/dev/null || true
fi
if fuse_trial_mount; then
    say "FUSE works: /dev/fuse present and a trial mount succeeded"
    export SLUICE_TEST_REQUIRE_FUSE=1
elif ((in_ci)); then
    die "FUSE is not usable on this CI machine (/dev/fuse: $(ls -l /dev/fuse 2>&1)); the mount tests must run in CI, refusing to skip them"
else
    warn "FUSE is not usable here; mount tests may skip locally (they never skip in CI)"
fi
if ((in_ci)); then export SLUICE_TEST_REQUIRE_FUSE=1; fi
# In CI the restic comparison fails rather than skips when restic is missing.
if ((in_ci)); then export SLUICE_TEST_REQUIRE_RESTIC=1; fi

for comp in rustfmt clippy; do
    sub=${comp/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        say "installing the $comp component"
        rustup component add "$comp" || die "cargo $sub is missing and rustup could not add $comp"
    fi
done

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "shellcheck scripts/"
if command -v shellcheck >/dev/null; then
    shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run
    say "shellcheck clean"
else
    warn "shellcheck not installed; skipped"
fi

section "S3-compatible servers (moto, SeaweedFS) on 127.0.0.1"
# The object-storage tests (tests/store/s3.rs, tests/mount/s3.rs) run against both; they get
# the endpoints from the environment. In CI a server that cannot be started is a failure.
s3_dir=$(mktemp -d /tmp/sluice-s3-servers.XXXXXX)
stop_s3() { bash "$SCRIPTS_DIR/s3-servers.sh" stop "$s3_dir" || true; rm -rf "$s3_dir"; }
on_exit_s3() {
    local rc=$?
    stop_s3
    (exit "$rc")
    on_exit
}
trap on_exit_s3 EXIT
if s3_env=$(timeout 600 bash "$SCRIPTS_DIR/s3-servers.sh" start "$s3_dir"); then
    eval "$s3_env"
    say "moto: $SLUICE_TEST_S3_MOTO  SeaweedFS: $SLUICE_TEST_S3_SEAWEED"
elif ((in_ci)); then
    die "the S3 test servers could not be installed or started; the S3 tests must run in CI"
else
    warn "the S3 test servers could not be started; the S3 tests will try themselves and skip loudly"
fi

section "cargo test --workspace --release"
# Release: the integration tests push GiBs through the real binary and the real mount.
# A hung test (a FUSE deadlock, say) fails with a clear message instead of hitting CI's limit.
read -r -a extra <<<"${CARGO_TEST_ARGS:-}"
timeout --foreground --kill-after=30s "${TEST_TIMEOUT:-75m}" cargo test --workspace --release "${extra[@]}" ||
    {
        rc=$?
        ((rc == 124)) && say "cargo test did not finish within ${TEST_TIMEOUT:-75m}"
        exit "$rc"
    }

section "package: build the .deb, install, check, remove"
# Installs the package with dpkg -i and always removes it again; in CI it never skips.
# cargo test --release built target/release/sluice; building it again with `cargo build`
# (other feature unification than the tests') would cost another minute or more.
SKIP_BUILD=1 bash "$SCRIPTS_DIR/package-test.sh"

section "fuzz (10 s per target)"
# Every parser of bytes from disk or a pipe, fed mutated real inputs (scripts/fuzz.sh).
bash "$SCRIPTS_DIR/fuzz.sh" "${FUZZ_SECONDS:-10}"
