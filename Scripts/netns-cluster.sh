#!/usr/bin/env bash
# Makes K network namespaces that act as separate hosts, joined by veth pairs
# to a bridge in the root namespace, and runs a `plexus node` in each.
#
#   Scripts/netns-cluster.sh up K [PLEXUS]   create hosts, start nodes, print their addresses
#   Scripts/netns-cluster.sh down            stop the nodes and remove everything
#   Scripts/netns-cluster.sh status          list the hosts and whether their node runs
#
# Host k (1..K) is namespace ${PREFIX}k with address 10.${NET}.0.(10+k)/24; the
# root namespace is 10.${NET}.0.1, so a launcher there reaches every node.
# Environment: PLEXUS_NETNS_PREFIX (default plx), PLEXUS_NETNS_NET (second octet,
# default 77), PLEXUS_NODE_PORT (default 7400). Needs root and iproute2.
set -euo pipefail

PREFIX=${PLEXUS_NETNS_PREFIX:-plx}
NET=${PLEXUS_NETNS_NET:-77}
PORT=${PLEXUS_NODE_PORT:-7400}
BR=${PREFIX}br0
STATE=/run/plexus-netns/${PREFIX}

die() { echo "netns-cluster: $*" >&2; exit 1; }

need() {
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces need CAP_NET_ADMIN)"
    command -v ip >/dev/null || die "the 'ip' command is missing: apt-get install iproute2"
}

down() {
    need
    if [ -d "$STATE" ]; then
        for pidfile in "$STATE"/*.pid; do
            [ -e "$pidfile" ] || continue
            pid=$(cat "$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "$STATE"
    fi
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true); do
        # Anything still running inside goes with the namespace.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        # Deleting the host end removes the pair now; a namespace's own
        # devices are destroyed asynchronously after `ip netns del`.
        ip link del "${ns}h" 2>/dev/null || true
        ip netns del "$ns"
    done
    ip link del "$BR" 2>/dev/null || true
}

up() {
    need
    local k=${1:-}
    local plexus=${2:-plexus}
    [[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le 200 ] || die "usage: $0 up K [PLEXUS] with 1 <= K <= 200"
    command -v "$plexus" >/dev/null || [ -x "$plexus" ] || die "plexus executable '$plexus' not found; pass its path"
    plexus=$(readlink -f "$(command -v "$plexus" || echo "$plexus")")
    down
    mkdir -p "$STATE"
    ip link add "$BR" type bridge
    ip addr add "10.${NET}.0.1/24" dev "$BR"
    ip link set "$BR" up
    local addrs=()
    for i in $(seq 1 "$k"); do
        local ns=${PREFIX}${i} ip=10.${NET}.0.$((10 + i))
        ip netns add "$ns"
        ip link add "${PREFIX}${i}h" type veth peer name "${PREFIX}${i}n"
        ip link set "${PREFIX}${i}n" netns "$ns"
        ip link set "${PREFIX}${i}h" master "$BR"
        ip link set "${PREFIX}${i}h" up
        ip -n "$ns" addr add "$ip/24" dev "${PREFIX}${i}n"
        ip -n "$ns" link set "${PREFIX}${i}n" up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "10.${NET}.0.1"
        # The node must not keep the caller's descriptors (a pipe the caller
        # waits on would never close), so close everything above stderr.
        (
            for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
            exec ip netns exec "$ns" "$plexus" node --listen "$ip:$PORT" </dev/null >"$STATE/$ns.log" 2>&1
        ) &
        echo $! >"$STATE/$ns.pid"
        addrs+=("$ip:$PORT")
    done
    # Wait (bounded) until every node says it listens.
    for i in $(seq 1 "$k"); do
        local ns=${PREFIX}${i}
        for _ in $(seq 200); do
            grep -q "listening" "$STATE/$ns.log" 2>/dev/null && break
            kill -0 "$(cat "$STATE/$ns.pid")" 2>/dev/null || die "node in $ns exited: $(cat "$STATE/$ns.log")"
            sleep 0.05
        done
        grep -q "listening" "$STATE/$ns.log" || die "node in $ns did not start within 10 s: $(cat "$STATE/$ns.log")"
    done
    (IFS=,; echo "${addrs[*]}")
}

status() {
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true); do
        pid=$(cat "$STATE/$ns.pid" 2>/dev/null || echo "")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$ns node running (pid $pid)"; else echo "$ns no node"; fi
    done
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up K [PLEXUS] | down | status" >&2; exit 2 ;;
esac
