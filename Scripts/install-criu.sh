#!/usr/bin/env bash
# Builds and installs CRIU 4.2.1, the checkpoint/restore tool that process
# migration builds on:   sudo Scripts/install-criu.sh [PREFIX]   (default /usr/local)
#
# Debian 12's own criu (3.17) fails on kernels from 6.13 on, and 4.1.1 fails
# on TCP sockets from 6.16 on, so this builds 4.2.1 from Debian unstable's
# source package:
#   1. adds a deb-src line for unstable (/etc/apt/sources.list.d/plexus-unstable-src.sources),
#   2. downloads criu_4.2.1.orig.tar.xz with apt and checks it against the
#      SHA-256 pinned below,
#   3. installs the build dependencies with apt-get,
#   4. builds `criu` and `lib/c/libcriu.so` in $CACHE (reused when already
#      built from the same tarball),
#   5. installs the binary as PREFIX/bin/criu.
# Runs again in a second when PREFIX/bin/criu is already 4.2.1.
#
# Environment:
#   PLEXUS_CRIU_CACHE=DIR   build cache (default /var/cache/plexus/criu-4.2.1)
set -euo pipefail

readonly version=4.2.1
readonly orig="criu_${version}.orig.tar.xz"
# SHA-256 of criu_4.2.1.orig.tar.xz as listed in Debian unstable's signed
# Sources index for criu 4.2.1-1 (and as computed over the downloaded file).
readonly orig_sha256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
readonly sources_file=/etc/apt/sources.list.d/plexus-unstable-src.sources
readonly build_deps=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev
    protobuf-c-compiler protobuf-compiler libnl-3-dev libnet1-dev libcap-dev
    libbsd-dev libnftables-dev libgnutls28-dev uuid-dev)

prefix="${1:-/usr/local}"
cache="${PLEXUS_CRIU_CACHE:-/var/cache/plexus/criu-$version}"
src="$cache/criu-$version"
stamp="$cache/built-from.sha256"

say() { echo "install-criu: $*" >&2; }
fail() { say "error: $*"; exit 1; }

installed_version() {
    [ -x "$1" ] || return 1
    "$1" --version 2>/dev/null | sed -n 's/^Version: *//p'
}

if [ "$(installed_version "$prefix/bin/criu" || true)" = "$version" ]; then
    say "criu $version is already installed as $prefix/bin/criu"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "this needs root (it installs Debian packages and writes $cache and $prefix/bin)."
    say "Run it as: sudo $0${1:+ $1}"
    exit 1
fi
command -v apt-get >/dev/null || fail "apt-get not found: this script builds CRIU on Debian and derivatives only"
[ "$(uname -m)" = x86_64 ] || say "warning: only tested on x86_64, this is $(uname -m)"

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -qq)
mkdir -p "$cache"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$orig_sha256" ]; }

built=0
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$orig_sha256" ] && [ -x "$src/criu/criu" ] \
    && [ "$(installed_version "$src/criu/criu" || true)" = "$version" ]; then
    say "reusing the build in $src"
    built=1
fi

if [ $built = 0 ]; then
    # 1. The source index of unstable.
    if [ ! -f "$sources_file" ]; then
        say "adding $sources_file (deb-src for Debian unstable)"
        cat >"$sources_file" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    say "apt-get update"
    apt-get "${apt_opts[@]}" update || fail "apt-get update failed"

    # 2. The upstream tarball, checked against the index and the pin.
    if ! sha_ok "$cache/$orig"; then
        rm -f "$cache/$orig"
        record=$(apt-cache showsrc criu | awk -v v="$version" '
            /^Package:/ { keep = 0 } /^Version:/ { keep = index($2, v "-") == 1 }
            keep && /^Directory:/ { print "dir", $2 }
            keep && /^Checksums-Sha256:/ { sums = 1; next } /^[^ ]/ { sums = 0 }
            keep && sums && $3 ~ /orig\.tar/ { print "orig", $1, $3 }')
        dir=$(awk '$1 == "dir" { print $2; exit }' <<<"$record")
        listed=$(awk -v f="$orig" '$1 == "orig" && $3 == f { print $2; exit }' <<<"$record")
        [ -n "$dir" ] && [ -n "$listed" ] \
            || fail "Debian unstable no longer lists criu $version-*: the pinned source cannot be fetched from its index"
        [ "$listed" = "$orig_sha256" ] \
            || fail "Debian's index lists $orig with SHA-256 $listed, not the pinned $orig_sha256"
        say "downloading $orig"
        /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "http://deb.debian.org/debian/$dir/$orig" \
            "$cache/$orig.part" "SHA256:$orig_sha256" >/dev/null \
            || fail "could not download $dir/$orig"
        mv "$cache/$orig.part" "$cache/$orig"
    fi
    sha_ok "$cache/$orig" || fail "$cache/$orig does not match the pinned SHA-256 $orig_sha256"
    say "$orig: SHA-256 $orig_sha256 (matches the pin)"

    # 3. Build dependencies.
    say "installing build dependencies: ${build_deps[*]}"
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${build_deps[@]}" >/dev/null \
        || fail "apt-get could not install the build dependencies"

    # 4. Build.
    rm -rf "$src" "$stamp"
    tar -C "$cache" -xf "$cache/$orig" || fail "could not unpack $orig"
    [ -d "$src" ] || fail "$orig did not unpack to $src"
    say "building criu $version in $src (about a minute on 2 cores; log: $cache/build.log)"
    if ! make -C "$src" -j"$(nproc)" criu lib/c/libcriu.so >"$cache/build.log" 2>&1; then
        tail -n 30 "$cache/build.log" >&2
        fail "the build failed; the whole log is $cache/build.log"
    fi
    [ "$(installed_version "$src/criu/criu" || true)" = "$version" ] \
        || fail "the built $src/criu/criu does not report version $version"
    echo "$orig_sha256" >"$stamp"
fi

# 5. Install.
install -D -m 0755 "$src/criu/criu" "$prefix/bin/criu" || fail "could not install $prefix/bin/criu"
say "installed criu $version as $prefix/bin/criu (libcriu: $src/lib/c/libcriu.so)"
if ! "$prefix/bin/criu" check >/dev/null 2>&1; then
    say "warning: 'criu check' reports missing kernel features: run '$prefix/bin/criu check' to see them"
fi
