#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh), installs it with dpkg -i, checks that sluice is
# installed like a system tool, and removes it with dpkg -r, checking that no file is left:
#   - man -w finds sluice(1), sluice-ingest(1) and sluice-key-add(1);
#   - bash with bash-completion loaded completes `sluice in<TAB>` to ingest and init;
#   - systemd-analyze verify accepts sluice-backup@.service and .timer;
#   - the installed /usr/bin/sluice round-trips a stream (init, ingest, cat, compare bytes) and
#     the README's monitoring one-liner (jq over snapshots --json) passes and fails as it says.
# The package is removed at the end whatever happens (trap), so this machine is left without
# it. Needs root; in CI (CI=true) anything missing is a failure, never a skip.
#
# Environment:
#   SKIP_BUILD=1   package target/release/sluice as it is (scripts/test.sh built it already)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"
cd "$REPO_ROOT"

in_ci=0
if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then in_ci=1; fi
skip_or_die() {
    if ((in_ci)); then die "$1 (CI must run the package test)"; fi
    warn "package test skipped: $1"
    exit 0
}
((EUID == 0)) || skip_or_die "dpkg -i needs root"
for c in dpkg dpkg-deb man systemd-analyze jq cmp; do
    command -v "$c" >/dev/null || skip_or_die "$c is missing (scripts/test.sh installs it)"
done
[[ -r /usr/share/bash-completion/bash_completion ]] ||
    skip_or_die "bash-completion is not installed (scripts/test.sh installs it)"
# dpkg's word for the state of package sluice ("" when dpkg has no record of it).
pkg_state() { dpkg-query -W -f='${Status}' sluice 2>/dev/null || true; }
# Never replace (and then remove) a sluice someone installed on this machine.
if [[ -n $(pkg_state) && $(pkg_state) != *not-installed ]]; then
    die "dpkg knows a sluice package here already ($(pkg_state)); remove it (dpkg --purge sluice) to run this test"
fi
[[ ! -e /usr/bin/sluice ]] || die "/usr/bin/sluice exists and belongs to no sluice package; move it away to run this test"

deb=$(bash "$SCRIPTS_DIR/package.sh" | tail -n 1)
[[ -f $deb ]] || die "package.sh made no package ($deb)"
say "package: $deb ($(du -h "$deb" | cut -f1))"

work=$(mktemp -d /tmp/sluice-pkgtest.XXXXXX)
installed=0
cleanup() {
    local rc=$?
    # Also a package that dpkg -i left unpacked but not configured.
    if ((installed)) && [[ -n $(pkg_state) && $(pkg_state) != *not-installed ]]; then
        dpkg --purge sluice >/dev/null 2>&1 || warn "dpkg --purge sluice failed; remove it by hand"
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
fail() {
    printf 'package test FAILED: %s\n' "$*" >&2
    exit 1
}

# Debian's minimal images tell dpkg to leave man pages out (path-exclude in
# /etc/dpkg/dpkg.cfg.d); options given here are read after those files and take precedence.
installed=1
dpkg --path-include='/usr/share/man/man1/sluice*' -i "$deb" >"$work/dpkg-i.log" 2>&1 ||
    {
        cat "$work/dpkg-i.log" >&2
        fail "dpkg -i $deb"
    }
dpkg-query -L sluice >"$work/files"
say "installed: $(wc -l <"$work/files") paths"

# Every file the package should hold.
for f in /usr/bin/sluice /usr/share/man/man1/sluice.1.gz /usr/share/man/man1/sluice-ingest.1.gz \
    /usr/share/man/man1/sluice-key-add.1.gz /usr/share/bash-completion/completions/sluice \
    /usr/share/zsh/vendor-completions/_sluice /usr/share/fish/vendor_completions.d/sluice.fish \
    /lib/systemd/system/sluice-backup@.service /lib/systemd/system/sluice-backup@.timer \
    /usr/share/doc/sluice/examples/example.toml; do
    [[ -f $f ]] || fail "$f is not installed"
done
[[ $(command -v sluice) == /usr/bin/sluice ]] || fail "sluice on PATH is $(command -v sluice), not /usr/bin/sluice"

# One man page per subcommand, found the way `man` finds them.
for page in sluice sluice-ingest sluice-cat sluice-key-add sluice-completions; do
    p=$(man -w "$page" 2>&1) || fail "man -w $page: $p"
    say "man -w $page: $p"
done
man -P cat sluice-ingest 2>/dev/null | grep -q -- '--streams' || fail "man sluice-ingest does not list --streams"

# bash-completion loads /usr/share/bash-completion/completions/sluice on first use; then the
# function it registers completes `sluice in` to ingest and init.
got=$(bash --norc --noprofile -c '
    source /usr/share/bash-completion/bash_completion
    __load_completion sluice || exit 3
    spec=$(complete -p sluice) || exit 4
    fn=${spec#*-F }
    fn=${fn%% *}
    COMP_WORDS=(sluice in)
    COMP_CWORD=1
    COMP_LINE="sluice in"
    COMP_POINT=${#COMP_LINE}
    "$fn" sluice in sluice
    printf "%s\n" "${COMPREPLY[@]}"
' 2>&1) || fail "bash completion of 'sluice in': exit $?: $got"
say "sluice in<TAB>: $(echo "$got" | tr '\n' ' ')"
grep -qx ingest <<<"$got" || fail "'sluice in<TAB>' does not offer ingest: $got"
grep -qx init <<<"$got" || fail "'sluice in<TAB>' does not offer init: $got"
grep -qvx -e ingest -e init <<<"$got" && fail "'sluice in<TAB>' offers more than ingest and init: $got"

# The units as systemd reads them (templates are checked as an instance).
out=$(systemd-analyze verify /lib/systemd/system/sluice-backup@.service \
    /lib/systemd/system/sluice-backup@.timer 2>&1) || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify complains: $out"
say "systemd-analyze verify: units accepted"
grep -qx 'ExecStart=/usr/bin/sluice ingest --streams /etc/sluice/%i.toml' /lib/systemd/system/sluice-backup@.service ||
    fail "the service does not run ingest --streams"
grep -qx 'ExecStart=/usr/bin/sluice forget --streams /etc/sluice/%i.toml' /lib/systemd/system/sluice-backup@.service ||
    fail "the service does not run forget --streams"

# The installed binary: a round trip, and the README's monitoring check.
export SLUICE_REPO=$work/repo SLUICE_PASSWORD_FILE=$work/pass
printf 'package test passphrase\n' >"$work/pass"
head -c 3000000 /dev/urandom >"$work/shop.sql"
/usr/bin/sluice --quiet init >"$work/init.log" 2>&1 || fail "sluice init: $(cat "$work/init.log")"
/usr/bin/sluice --quiet ingest --name shop.sql --expect none <"$work/shop.sql" >"$work/ingest.log" 2>&1 ||
    fail "sluice ingest: $(cat "$work/ingest.log")"
/usr/bin/sluice cat latest shop.sql >"$work/restored" || fail "sluice cat latest shop.sql"
cmp "$work/shop.sql" "$work/restored" || fail "the restored bytes differ"
say "round trip through /usr/bin/sluice: $(stat -c %s "$work/restored") bytes identical"
/usr/bin/sluice snapshots --json >"$work/snaps.json" || fail "sluice snapshots --json"
# The README's one-liner, verbatim but for the stream name.
check_fresh() {
    jq -e --arg n "$1" 'any(.[]; (.newest_complete | any(. == $n)) and .age_seconds < 26*3600)' \
        "$work/snaps.json" >/dev/null
}
check_fresh shop.sql || fail "monitoring check: newest complete shop.sql not found fresh in $(cat "$work/snaps.json")"
check_fresh users.sql && fail "monitoring check passes for a stream never backed up"
say "monitoring check: fresh shop.sql passes, missing users.sql fails"

# Removal leaves nothing of the package behind.
installed=0
dpkg -r sluice >"$work/dpkg-r.log" 2>&1 || {
    cat "$work/dpkg-r.log" >&2
    fail "dpkg -r sluice"
}
left=()
while read -r f; do
    # Directories shared with other packages (/usr/share/man/man1, ...) stay, as they should.
    [[ -d $f ]] && continue
    [[ -e $f || -L $f ]] && left+=("$f")
done <"$work/files"
[[ -d /usr/share/doc/sluice ]] && left+=(/usr/share/doc/sluice)
[[ -z $(pkg_state) || $(pkg_state) == *not-installed ]] || left+=("dpkg's record of it ($(pkg_state))")
for f in /var/lib/dpkg/info/sluice.*; do [[ -e $f ]] && left+=("$f"); done
((${#left[@]} == 0)) || fail "dpkg -r sluice left: ${left[*]}"
command -v sluice >/dev/null && fail "sluice is still on PATH after dpkg -r: $(command -v sluice)"
say "dpkg -r sluice: nothing left"
say "package test passed"
