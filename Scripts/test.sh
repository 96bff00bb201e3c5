#!/usr/bin/env bash
# The tests, on a fresh machine, in one command:   Scripts/test.sh
#
# As root it installs the Debian packages the tests need if they are missing
# (etcd-server and etcd-client for the etcd backend, iproute2 for the
# network-namespace tests), builds and installs CRIU 4.2.1 for the
# checkpoint/restore tests if it is missing (Scripts/install-criu.sh: about
# 1-2 minutes on a fresh machine, cached in /var/cache/plexus after that),
# starts a local 3-member etcd cluster, builds and runs the whole Swift
# suite, and stops etcd. Without root or without apt it
# runs everything it can and says once, at the end, which suites it skipped
# and the command that would enable them.
#
# Environment:
#   PLEXUS_TEST_REQUIRE_ALL=1   fail (exit 3) instead of skipping (.ci/run sets it)
#   PLEXUS_ETCD_ENDPOINTS=...   use this running etcd cluster instead of starting one
# Other arguments go to `swift test` (e.g. --filter LauncherTests).
set -uo pipefail
cd "$(dirname "$0")/.."

skipped=()
is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# 1. Packages, as root, if missing.
missing=()
command -v etcd >/dev/null || missing+=(etcd-server etcd-client)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    if [ $is_root = 1 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            echo "test.sh: apt-get could not install ${missing[*]}; going on without" >&2
        fi
    fi
fi

# CRIU 4.2.1, built from source (Debian 12's 3.17 fails on current kernels).
criu_version() { "${PLEXUS_CRIU:-criu}" --version 2>/dev/null | sed -n 's/^Version: *//p' || true; }
if [ $is_root = 1 ] && [ "$(criu_version)" != 4.2.1 ] && command -v apt-get >/dev/null; then
    echo "test.sh: building and installing CRIU 4.2.1 (Scripts/install-criu.sh)" >&2
    Scripts/install-criu.sh || echo "test.sh: Scripts/install-criu.sh failed; going on without CRIU" >&2
    hash -r
fi

# 2. A local etcd cluster, unless one is given. Ports below the kernel's
# ephemeral range (32768+), so no outgoing connection holds one; a second
# try on other ports if the first fails.
etcd_dir=""
cleanup() {
    if [ -n "$etcd_dir" ]; then
        for d in "$etcd_dir"/*/; do [ -d "$d" ] && Scripts/etcd-cluster.sh stop "$d" >/dev/null 2>&1; done
        rm -rf "$etcd_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${PLEXUS_ETCD_ENDPOINTS:-}" ] && command -v etcd >/dev/null; then
    etcd_dir=$(mktemp -d)
    for attempt in 1 2; do
        if endpoints=$(Scripts/etcd-cluster.sh start "$etcd_dir/$attempt" 3 $((20000 + RANDOM % 6000 * 2))); then
            export "${endpoints?}"
            break
        fi
        echo "test.sh: etcd cluster did not start (attempt $attempt)" >&2
    done
fi
if [ -z "${PLEXUS_ETCD_ENDPOINTS:-}" ] && ! command -v etcd >/dev/null; then
    skipped+=("etcd backend conformance (BackendConformanceTests, etcd cases): etcd is not installed; enable: sudo Scripts/test.sh, or apt-get install etcd-server")
fi
if [ $is_root = 0 ]; then
    skipped+=("jobs across network namespaces (LauncherTests.jobAcrossNetworkNamespaces): needs root; enable: sudo Scripts/test.sh")
    skipped+=("per-process cgroups (LauncherTests, 2 tests) and real-time serving threads (ServingPriorityTests, 2 tests): need root or CAP_SYS_NICE; enable: sudo Scripts/test.sh")
elif ! command -v ip >/dev/null; then
    skipped+=("jobs across network namespaces: iproute2 is not installed; enable: apt-get install iproute2")
fi
case "$(criu_version)" in
    4.[2-9]*|[5-9].*) [ $is_root = 1 ] || skipped+=("checkpoint and restore (CRIUTests): needs root; enable: sudo Scripts/test.sh") ;;
    *) skipped+=("checkpoint and restore (CRIUTests): needs root and CRIU 4.2 or later; enable: sudo Scripts/test.sh (it runs Scripts/install-criu.sh)") ;;
esac

if [ ${#skipped[@]} -gt 0 ] && [ "${PLEXUS_TEST_REQUIRE_ALL:-}" = 1 ]; then
    echo "test.sh: PLEXUS_TEST_REQUIRE_ALL=1 and these suites cannot run here:" >&2
    printf '  - %s\n' "${skipped[@]}" >&2
    exit 3
fi

# 3. Build and run.
swift build --build-tests && swift test --skip-build "$@"
status=$?

if [ ${#skipped[@]} -gt 0 ]; then
    echo
    echo "test.sh: skipped, because this machine cannot run them as things are:"
    printf '  - %s\n' "${skipped[@]}"
fi
exit $status
