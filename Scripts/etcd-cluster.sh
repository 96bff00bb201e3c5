#!/usr/bin/env bash
# A local etcd cluster for the name-service tests and `plexus bench names`.
#
#   Scripts/etcd-cluster.sh start DIR [MEMBERS=3] [BASE_PORT=23790]
#       starts MEMBERS etcd members on 127.0.0.1 (client ports BASE, BASE+2, ...,
#       peer ports BASE+1, BASE+3, ...), data and logs under DIR, waits until the
#       cluster answers, and prints   PLEXUS_ETCD_ENDPOINTS=127.0.0.1:BASE,...
#   Scripts/etcd-cluster.sh stop DIR
#       stops the members started with that DIR (by the pids it recorded).
#
# Needs Debian's etcd-server (apt-get install etcd-server).
set -euo pipefail

command=${1:-}
dir=${2:-}
if [ -z "$command" ] || [ -z "$dir" ]; then
    echo "usage: $0 start DIR [MEMBERS] [BASE_PORT] | stop DIR" >&2
    exit 2
fi

case "$command" in
start)
    members=${3:-3}
    base=${4:-23790}
    if ! command -v etcd >/dev/null; then
        echo "$0: etcd is not installed: apt-get install etcd-server" >&2
        exit 1
    fi
    mkdir -p "$dir"
    cluster=""
    endpoints=""
    for i in $(seq 1 "$members"); do
        client=$((base + 2 * (i - 1)))
        peer=$((client + 1))
        cluster="${cluster:+$cluster,}e$i=http://127.0.0.1:$peer"
        endpoints="${endpoints:+$endpoints,}127.0.0.1:$client"
    done
    for i in $(seq 1 "$members"); do
        client=$((base + 2 * (i - 1)))
        peer=$((client + 1))
        etcd --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "plexus-$base" \
            >"$dir/e$i.log" 2>&1 &
        echo $! >"$dir/e$i.pid"
    done
    first=${endpoints%%,*}
    # Bounded by wall time, whatever etcdctl does: every probe has its own
    # short timeouts, and a member that died (a port already taken, say)
    # ends the wait at once with its log.
    deadline=$((SECONDS + 20))
    while [ "$SECONDS" -lt "$deadline" ]; do
        for i in $(seq 1 "$members"); do
            if ! kill -0 "$(cat "$dir/e$i.pid")" 2>/dev/null; then
                echo "$0: etcd member e$i exited: $(tail -n 1 "$dir/e$i.log")" >&2
                "$0" stop "$dir"
                exit 1
            fi
        done
        if ETCDCTL_API=3 timeout 3 etcdctl --dial-timeout=1s --command-timeout=1s --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
            echo "PLEXUS_ETCD_ENDPOINTS=$endpoints"
            exit 0
        fi
        sleep 0.2
    done
    echo "$0: etcd at $first did not become healthy within 20 s; see $dir/e*.log" >&2
    "$0" stop "$dir"
    exit 1
    ;;
stop)
    # Waits until every member has exited (10 s, then SIGKILL), so that a
    # caller that removes DIR or starts the next cluster right after finds no
    # etcd still shutting down.
    pids=""
    for pidfile in "$dir"/e*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null && pids="$pids $pid"
        rm -f "$pidfile"
    done
    for _ in $(seq 1 100); do
        alive=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
        pids=$alive
        [ -z "$pids" ] && break
        sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    ;;
*)
    echo "usage: $0 start DIR [MEMBERS] [BASE_PORT] | stop DIR" >&2
    exit 2
    ;;
esac
