#!/usr/bin/env bash
# Records a scheduler trace of one 2-process Jacobi job and reports, for each
# rank's application thread, how long it sat runnable without running, and
# how much of that while a CPU was idle (Papers/ivy-remote-fault.md,
# record of 5cbd7cc). Needs root (tracefs) and a release build.
#   Scripts/sched-trace.sh [plexus run options...]      e.g. --bind none
set -euo pipefail
cd "$(dirname "$0")/.."
T=/sys/kernel/tracing
[ -d "$T/events" ] || mount -t tracefs nodev "$T"
[ -w "$T/trace" ] || { echo "sched-trace: needs root (writes $T)" >&2; exit 1; }
out=$(mktemp /tmp/sched-trace.XXXXXX)
cleanup() { echo 0 > "$T/tracing_on"; echo 0 > "$T/events/enable"; if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP"; fi; rm -f "$out"; }
trap cleanup EXIT
echo 0 > "$T/tracing_on"
echo > "$T/trace"
echo 65536 > "$T/buffer_size_kb"
for e in sched/sched_switch sched/sched_wakeup signal/signal_deliver; do echo 1 > "$T/events/$e/enable"; done
echo 1 > "$T/tracing_on"
.build/release/plexus run -n 2 "$@" .build/release/jacobi 2048 50 | head -1
echo 0 > "$T/tracing_on"
cp "$T/trace" "$out"
python3 Scripts/sched-trace.py "$out"
