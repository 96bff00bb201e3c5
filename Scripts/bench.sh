#!/usr/bin/env bash
# Builds Plexus in release mode and runs `plexus bench`, writing the rows to
# bench-<date>.json (or $1). Benchmarks are not tests: run this on an idle
# machine, and compare ratios within one run, not absolute figures across runs.
#   Scripts/bench.sh [out.json] [extra plexus bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-$(date +%Y%m%d-%H%M%S).json}"
shift || true
swift build -c release --product plexus
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
.build/release/plexus bench --json "$out" "$@"
echo "rows written to $out" >&2
