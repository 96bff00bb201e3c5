#!/usr/bin/env bash
# Installs Plexus:   Scripts/install.sh [PREFIX]      (default /usr/local)
#
# Builds the release configuration (swift build -c release) and installs
#   PREFIX/bin/plexus                  the command
#   PREFIX/lib/libPlexusC.so           the C API's library
#   PREFIX/include/plexus.h            its header
#   PREFIX/lib/pkgconfig/plexus.pc     its pkg-config file
# so that `plexus cc prog.c -o prog` and `pkg-config --cflags --libs plexus`
# (with PREFIX/lib/pkgconfig on PKG_CONFIG_PATH if it is not a default
# directory) build C programs that run under `plexus run`.
# The programs need the Swift runtime of the toolchain that built them
# (libPlexusC.so and plexus find it by their run path).
#
# Environment: PLEXUS_BUILD_CONFIGURATION=debug installs a debug build instead
# (quicker to build); PLEXUS_INSTALL_FROM=DIR installs the plexus and
# libPlexusC.so already built in DIR, without building (the tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:-/usr/local}
case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac
[ $# -le 1 ] || { echo "usage: $0 [PREFIX]" >&2; exit 2; }

if [ -n "${PLEXUS_INSTALL_FROM:-}" ]; then
    bin=$PLEXUS_INSTALL_FROM
else
    config=${PLEXUS_BUILD_CONFIGURATION:-release}
    swift build -c "$config" --product plexus
    swift build -c "$config" --product PlexusC
    bin=$(swift build -c "$config" --show-bin-path)
fi
for f in "$bin/plexus" "$bin/libPlexusC.so"; do
    [ -f "$f" ] || { echo "install.sh: $f was not built; see the swift build output above" >&2; exit 1; }
done

# The release tag, else 0.0.0 and the commit.
version=$(git describe --tags 2>/dev/null || echo "0.0.0+$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
version=${version#v}

if ! mkdir -p "$prefix/bin" "$prefix/lib/pkgconfig" "$prefix/include" 2>/dev/null; then
    echo "install.sh: cannot create directories under $prefix: run as root, or give a PREFIX you can write (e.g. $0 \$HOME/.local)" >&2
    exit 1
fi
install -m 755 "$bin/plexus" "$prefix/bin/plexus"
install -m 755 "$bin/libPlexusC.so" "$prefix/lib/libPlexusC.so"
install -m 644 Sources/PlexusC/include/plexus.h "$prefix/include/plexus.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" Scripts/plexus.pc.in > "$prefix/lib/pkgconfig/plexus.pc"
chmod 644 "$prefix/lib/pkgconfig/plexus.pc"

echo "installed plexus in $prefix/bin, libPlexusC.so and pkgconfig/plexus.pc in $prefix/lib, plexus.h in $prefix/include"
case ":${PATH}:" in
    *":$prefix/bin:"*) ;;
    *) echo "add $prefix/bin to PATH to run plexus" ;;
esac
