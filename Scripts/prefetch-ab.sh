#!/usr/bin/env bash
# Alternating pairs of 2-process Jacobi jobs (2048x2048, 50 iterations) with
# and without prefetch hints, at 4 KiB pages and at one grid row per unit
# (16 KiB), and a table of medians: the parallel time, each rank's time
# blocked in faults, at barriers and giving hints, and the speedup over the
# job's own one-process run (Papers/prefetch-hints.md). Needs a release build.
#   Scripts/prefetch-ab.sh [PAIRS]          (default 8; each pair takes ~2 s)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-8}
case "$pairs" in ''|*[!0-9]*) echo "usage: Scripts/prefetch-ab.sh [PAIRS]" >&2; exit 2;; esac
P=.build/release/plexus J=.build/release/jacobi
[ -x "$P" ] && [ -x "$J" ] || { echo "prefetch-ab: build first: swift build -c release" >&2; exit 1; }
log=$(mktemp /tmp/prefetch-ab.XXXXXX)
trap 'rm -f "$log"' EXIT
for unit in 4096 16384; do
  for i in $(seq 1 "$pairs"); do
    # Alternate which variant goes first, so drift does not favour one.
    if [ $((i % 2)) -eq 1 ]; then order="hints plain"; else order="plain hints"; fi
    for v in $order; do
      flag=""; [ "$v" = plain ] && flag="--no-prefetch"
      echo "pair $i/$pairs, unit $unit: $v" >&2
      $P run -n 2 --page-size "$unit" "$J" 2048 50 $flag | sed "s/^/$unit $v /" >> "$log"
    done
  done
done
python3 - "$log" <<'PY'
import re, sys, statistics as st
rows = {}
order = {}   # unit -> [(variant, time)] in run order, for the paired count
for line in open(sys.argv[1]):
    unit, variant, rest = line.split(" ", 2)
    key = (int(unit), variant)
    r = rows.setdefault(key, {"time": [], "speedup": [], "fault": [], "barrier": [], "hint": [], "pass": 0, "runs": 0})
    m = re.search(r"rank \d+: [\d.]+ ms: ([\d.]+) ms blocked in faults, ([\d.]+) ms at barriers, ([\d.]+) ms giving hints", rest)
    if m:
        r["fault"].append(float(m[1])); r["barrier"].append(float(m[2])); r["hint"].append(float(m[3]))
    m = re.search(r"processes[^:]*: ([\d.]+) ms \(1 process on private memory: ([\d.]+) ms, speedup ([\d.]+)x\)", rest)
    if m:
        r["time"].append(float(m[1])); r["speedup"].append(float(m[3])); r["runs"] += 1
        order.setdefault(int(unit), []).append((variant, float(m[1])))
    if rest.strip().endswith("PASS"): r["pass"] += 1
def m(xs, f="%.1f"):
    return (f + " (" + f + "-" + f + ")") % (st.median(xs), min(xs), max(xs))
print("medians (min-max); time: the job's parallel time; faults, barrier and hints: per rank; speedup: over the job's own 1-process run")
print(f"{'unit':>6} {'variant':<8} {'runs':>4} {'time ms':>20} {'faults ms':>16} {'barrier ms':>17} {'hints ms':>15} {'speedup':>18} {'>=1.2':>6}")
for (unit, variant), r in sorted(rows.items()):
    met = sum(1 for s in r["speedup"] if s >= 1.2)
    print(f"{unit:>6} {variant:<8} {r['runs']:>4} {m(r['time']):>20} {m(r['fault']):>16} {m(r['barrier']):>17} "
          f"{m(r['hint']):>15} {m(r['speedup'], '%.2f'):>18} {met:>3}/{r['runs']}")
    if r["pass"] != r["runs"]:
        print(f"       {r['runs'] - r['pass']} run(s) did not PASS their check against the sequential result"); sys.exit(1)
for unit, runs in sorted(order.items()):
    pairs = [dict(runs[k:k + 2]) for k in range(0, len(runs) - 1, 2)]
    faster = sum(1 for p in pairs if p.get("hints", 1e9) < p.get("plain", 0))
    print(f"{unit:>6}: with hints faster in {faster} of {len(pairs)} pairs")
PY
