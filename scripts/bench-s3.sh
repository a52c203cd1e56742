# shellcheck shell=bash
# The object-storage phase of scripts/bench.sh (BENCH_PHASES=s3; sourced by bench.sh, whose
# helpers it uses). On one SeaweedFS server (`weed mini`, started by scripts/s3-servers.sh on
# 127.0.0.1 only, stopped at the end), on the same inputs, in the same run:
#   - the server's own ceiling: a plain parallel upload and download of each input file by the
#     aws CLI (`aws s3 cp`, its default 10 requests in flight, 8 MiB parts);
#   - sluice and restic: ingest (backup --stdin) and a cold restore (cat / dump) to/from the
#     same bucket; sluice/restic and sluice/ceiling ratios (targets >= 1.5x and >= 0.8);
#   - sluice into a local directory, for its S3 figures against its local ones;
#   - a cold `cat` through a mount of the S3 repository against `sluice cat` (target >= 0.8x);
#   - the SQL dump's second version (sql2.sql) ingested by sluice and restic into the same
#     repositories, and by sluice into a second repository whose local copies of delta bases
#     were removed before (README "Offsite": the bases are then downloaded from the bucket).
# Only one `weed mini` can run on a machine (its non-S3 ports are fixed): the phase is
# skipped, with a warning, when one is already running.
# Environment: BENCH_S3_PORT (default 8633) and BENCH_S3_MOTO_PORT (default 5377) for the
# servers (moto starts beside it and stays idle), AWS CLI from $WORK/awscli-venv (pip).

s3_phase() {
    local t_phase srv port bucket url name f bytes tool
    t_phase=$(date +%s)
    section "Object storage (SeaweedFS)"
    if pgrep -x weed >/dev/null; then
        warn "a SeaweedFS server (weed) is already running on this machine; its fixed ports would clash: s3 phase skipped"
        out "## Object storage: skipped (another \`weed\` was running)"
        return 0
    fi
    # Inputs: the same SQL dump and random bytes as the ingest phase (made here if missing).
    local p="bytes=$SIZE seed=42 mutate=$MUTATE_PCT cluster=$CLUSTER v3"
    if ! fresh sql1.sql "$p"; then
        say "generating a ${SIZE}-byte SQL dump (perl, seed 42)"
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --bytes "$SIZE" --seed 42 >"$IN/sql1.sql"
        perl "$SCRIPTS_DIR/gen-sql-dump.pl" --mutate "$MUTATE_PCT" --cluster "$CLUSTER" --seed 43 <"$IN/sql1.sql" >"$IN/sql2.sql"
        stamp sql1.sql "$p"
    fi
    p="bytes=$SIZE key=01 v1"
    if ! fresh rand1.bin "$p"; then
        say "generating ${SIZE} random bytes (openssl aes-ctr)"
        gen_random "$SIZE" 0123456789abcdef0123456789abcdef >"$IN/rand1.bin"
        local half=$((SIZE / 2))
        {
            head -c "$half" "$IN/rand1.bin"
            gen_random $((4 * MIB)) fedcba9876543210fedcba9876543210
            tail -c +$((half + 1)) "$IN/rand1.bin"
        } >"$IN/rand2.bin"
        stamp rand1.bin "$p"
    fi

    # The aws CLI, for the ceiling.
    local aws=aws
    if ! command -v aws >/dev/null; then
        if [[ ! -x $WORK/awscli-venv/bin/aws ]]; then
            say "installing the aws CLI into $WORK/awscli-venv (pip)"
            if ! { python3 -m venv "$WORK/awscli-venv" >/dev/null &&
                "$WORK/awscli-venv/bin/pip" install -q awscli >"$WORK/logs/awscli-pip.log" 2>&1; }; then
                die "cannot install the aws CLI (see $WORK/logs/awscli-pip.log)"
            fi
        fi
        aws=$WORK/awscli-venv/bin/aws
    fi

    # The server.
    srv=$WORK/s3-servers
    rm -rf "$srv"
    port=${BENCH_S3_PORT:-8633}
    say "starting SeaweedFS on 127.0.0.1:$port"
    local exports
    exports=$(MOTO_PORT=${BENCH_S3_MOTO_PORT:-5377} SEAWEED_S3_PORT=$port bash "$SCRIPTS_DIR/s3-servers.sh" start "$srv" 2>"$WORK/logs/s3-servers.log") ||
        die "scripts/s3-servers.sh could not start the servers (see $WORK/logs/s3-servers.log)"
    local pf
    for pf in "$srv"/*.pid; do BG_PIDS+=("$(cat "$pf")"); done
    eval "$exports"
    bucket=$SLUICE_TEST_S3_BUCKET
    url="s3:http://127.0.0.1:$port/$bucket"
    export AWS_DEFAULT_REGION=us-east-1 XDG_CACHE_HOME=$WORK/s3-cache
    local endpoint=(--endpoint-url "http://127.0.0.1:$port")
    "$aws" configure set default.s3.max_concurrent_requests 10 >/dev/null 2>&1 || true

    declare -A S=()
    for name in sql rand; do
        case $name in
        sql) f=$IN/sql1.sql ;;
        rand) f=$IN/rand1.bin ;;
        esac
        bytes=$(stat -c %s "$f")
        warm "$f"
        say "  $name ($(mb "$bytes") MB): aws CLI ceiling"
        time_cmd s3-aws-up.log "$aws" "${endpoint[@]}" s3 cp --quiet "$f" "s3://$bucket/ceiling/$name" && S[aws_up_$name]=$T_SECS
        drop_caches
        time_cmd s3-aws-down.log "$aws" "${endpoint[@]}" s3 cp --quiet "s3://$bucket/ceiling/$name" "$WORK/s3-download" && S[aws_down_$name]=$T_SECS
        rm -f "$WORK/s3-download"
        "$aws" "${endpoint[@]}" s3 rm --quiet "s3://$bucket/ceiling/$name" >/dev/null 2>&1 || true

        for tool in sluice restic; do
            has_tool "$tool" || continue
            local repo="$url/$tool-$name"
            [[ $tool == restic ]] && repo="s3:http://127.0.0.1:$port/$bucket/restic-$name"
            say "  $name: $tool ingest and cold restore on S3"
            cmd_init "$tool" "$repo"
            "${CMD[@]}" >/dev/null 2>"$WORK/logs/s3-init-$tool.log" || die "$tool init on S3 failed (see $WORK/logs/s3-init-$tool.log)"
            warm "$f"
            cmd_ingest "$tool" "$repo" "$name" v1
            run_timed "$f" "$WORK/logs/s3-ingest-$tool.out" "s3-ingest-$tool.log" "${CMD[@]}" && {
                S[${tool}_up_$name]=$T_SECS
                S[${tool}_uprss_$name]=$T_RSS_KB
            }
            [[ $tool == sluice ]] && note_snapshot "$repo" v1 "$WORK/logs/s3-ingest-$tool.out"
            drop_caches
            cmd_restore "$tool" "$repo" "$name" v1
            time_cmd "s3-restore-$tool.log" "${CMD[@]}" && S[${tool}_down_$name]=$T_SECS
            if [[ $tool == sluice ]]; then
                # A cold cat through a mount of the same S3 repository.
                local mnt=$WORK/mnt/s3-$name
                unmount_dir "$mnt"
                mkdir -p "$mnt"
                if "$SLUICE" mount "$repo" "$mnt" >"$WORK/logs/s3-mount.log" 2>&1 && wait_for_file "$mnt/latest/$name" 120; then
                    drop_caches
                    time_cmd s3-mount-cat.log cat "$mnt/latest/$name" && S[mount_$name]=$T_SECS
                    umount_tool sluice "$mnt"
                else
                    warn "sluice mount of the S3 repository failed: $(tail -n 3 "$WORK/logs/s3-mount.log")"
                fi
            fi
            if [[ $name == sql ]]; then
                say "  sql: $tool ingest of the second version on S3"
                warm "$IN/sql2.sql"
                cmd_ingest "$tool" "$repo" "$name" v2
                run_timed "$IN/sql2.sql" "$WORK/logs/s3-ingest2-$tool.out" "s3-ingest2-$tool.log" "${CMD[@]}" &&
                    S[${tool}_up2]=$T_SECS
                if [[ $tool == sluice ]]; then
                    S[sluice_read2]=$(ingest_field "$WORK/logs/s3-ingest2-$tool.out" delta_base_read_bytes)
                    note_snapshot "$repo" v2 "$WORK/logs/s3-ingest2-$tool.out"
                fi
                # Its cold restore: for sluice, deltas and the bases they are rebuilt from,
                # read from the bucket (ingest's local copies are never used to restore).
                drop_caches
                cmd_restore "$tool" "$repo" "$name" v2
                time_cmd "s3-restore2-$tool.log" "${CMD[@]}" && S[${tool}_down2]=$T_SECS
            fi
        done
        if [[ $name == sql ]] && has_tool sluice; then
            # The same two versions into another repository, its local copies of delta bases
            # removed in between: what a second machine, or a cache trimmed below the
            # stream's size, pays.
            local repo_b="$url/sluice-$name-nocopies"
            say "  sql: sluice, second version with its bases downloaded"
            cmd_init sluice "$repo_b"
            "${CMD[@]}" >/dev/null 2>"$WORK/logs/s3-init-b.log" || die "sluice init on S3 failed (see $WORK/logs/s3-init-b.log)"
            warm "$f"
            cmd_ingest sluice "$repo_b" "$name" v1
            run_timed "$f" "$WORK/logs/s3-ingest-b.out" s3-ingest-b.log "${CMD[@]}" || true
            rm -rf "$XDG_CACHE_HOME"/sluice/*/bases
            warm "$IN/sql2.sql"
            cmd_ingest sluice "$repo_b" "$name" v2
            run_timed "$IN/sql2.sql" "$WORK/logs/s3-ingest2-b.out" s3-ingest2-b.log "${CMD[@]}" &&
                S[sluice_up2_nocopies]=$T_SECS
            S[sluice_read2_nocopies]=$(ingest_field "$WORK/logs/s3-ingest2-b.out" delta_base_read_bytes)
            S[bytes_sql2]=$(stat -c %s "$IN/sql2.sql")
        fi
        if has_tool sluice; then
            local local_repo=$WORK/repos/s3-local-$name
            rm -rf "$local_repo"
            say "  $name: sluice on local disk"
            cmd_init sluice "$local_repo"
            "${CMD[@]}" >/dev/null 2>"$WORK/logs/s3-init-local.log" || die "sluice init failed"
            warm "$f"
            cmd_ingest sluice "$local_repo" "$name" v1
            run_timed "$f" "$WORK/logs/s3-ingest-local.out" s3-ingest-local.log "${CMD[@]}" && S[local_up_$name]=$T_SECS
            note_snapshot "$local_repo" v1 "$WORK/logs/s3-ingest-local.out"
            drop_caches
            cmd_restore sluice "$local_repo" "$name" v1
            time_cmd s3-restore-local.log "${CMD[@]}" && S[local_down_$name]=$T_SECS
            [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$local_repo"
        fi
        S[bytes_$name]=$bytes
    done

    # Report.
    v() { printf '%s' "${S[$1]:-}"; }
    rate() { [[ -n $(v "$1") ]] && mbps "$(v "bytes_$2")" "$(v "$1")" || printf 'n/a'; }
    out "## Object storage: SeaweedFS (\`weed mini\` on 127.0.0.1, same machine), MB/s"
    out ""
    out "- one run each, cold restores (page cache dropped); the server shares the machine's $(nproc) cores with the tool measured; ceiling: \`aws s3 cp\` of the same file (10 requests in flight, 8 MiB parts), which uploads the raw bytes while sluice and restic upload compressed, deduplicated packs"
    out ""
    out "| input | MB | ceiling up | sluice ingest | restic ingest | sluice/restic (target 1.5x) | sluice/ceiling (target 0.8x) | sluice local ingest | S3/local | sluice peak RSS MiB |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for name in sql rand; do
        local su ru cu lu
        su=$(rate "sluice_up_$name" "$name")
        ru=$(rate "restic_up_$name" "$name")
        cu=$(rate "aws_up_$name" "$name")
        lu=$(rate "local_up_$name" "$name")
        out "| $name | $(mb "$(v "bytes_$name")") | $cu | $su | $ru | $(ratio "$su" "$ru") | $(ratio "$su" "$cu") | $lu | $(ratio "$su" "$lu") | $(mib "$(v "sluice_uprss_$name")") |"
    done
    out ""
    out "| input | ceiling down | sluice cat | restic dump | sluice/restic (target 1.5x) | sluice/ceiling (target 0.8x) | sluice local cat | S3/local | cat through the mount | mount/cat (target 0.8x) |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for name in sql rand; do
        local sd rd ceil_d ld md
        sd=$(rate "sluice_down_$name" "$name")
        rd=$(rate "restic_down_$name" "$name")
        ceil_d=$(rate "aws_down_$name" "$name")
        ld=$(rate "local_down_$name" "$name")
        md=$(rate "mount_$name" "$name")
        out "| $name | $ceil_d | $sd | $rd | $(ratio "$sd" "$rd") | $(ratio "$sd" "$ceil_d") | $ld | $(ratio "$sd" "$ld") | $md | $(ratio "$md" "$sd") |"
    done
    out ""
    out "Second version of the SQL dump (sql2.sql), ingested after the first, MB/s:"
    out ""
    out "| sluice, bases from local copies | sluice, bases downloaded | restic | sluice/restic | base bytes downloaded by sluice: with copies / without |"
    out "| ---: | ---: | ---: | ---: | ---: |"
    local s2 n2 r2
    s2=$(rate sluice_up2 sql2)
    n2=$(rate sluice_up2_nocopies sql2)
    r2=$(rate restic_up2 sql2)
    out "| $s2 | $n2 | $r2 | $(ratio "$s2" "$r2") | $(mb "$(v sluice_read2)") / $(mb "$(v sluice_read2_nocopies)") MB |"
    out ""
    out "Its cold restore, MB/s (sluice rebuilds the deltas from bases it reads from the bucket):"
    out ""
    out "| sluice cat, second version | sluice cat, first version | second/first (target 0.7x) | restic dump, second version | sluice/restic |"
    out "| ---: | ---: | ---: | ---: | ---: |"
    local sd2 sd1 rd2
    sd2=$(rate sluice_down2 sql2)
    sd1=$(rate sluice_down_sql sql)
    rd2=$(rate restic_down2 sql2)
    out "| $sd2 | $sd1 | $(ratio "$sd2" "$sd1") | $rd2 | $(ratio "$sd2" "$rd2") |"
    out ""
    out "- phase took $(($(date +%s) - t_phase)) s; load average at its end: $(cut -d' ' -f1-3 /proc/loadavg)"
    out ""
    bash "$SCRIPTS_DIR/s3-servers.sh" stop "$srv" >/dev/null 2>&1 || true
    [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$srv" "$WORK/s3-cache"
    unset XDG_CACHE_HOME
    say "  phase took $(($(date +%s) - t_phase)) s"
}
s3_phase
