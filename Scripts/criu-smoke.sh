#!/usr/bin/env bash
# Checks that CRIU can checkpoint and restore a process on this machine:
#   sudo Scripts/criu-smoke.sh [--c-only] [--mb N] [--keep]
#
# For a small C program and (when swiftc is on PATH and --c-only is not given)
# a small Swift program, each with two threads and N MiB of private memory
# (default 100) filled with a known pattern:
#   1. starts it as init of a new PID namespace and leader of its own session,
#      with no terminal (unshare --fork --pid, then setsid),
#   2. waits until its main thread has ticked a few times and its second
#      thread has verified the memory pattern once,
#   3. dumps it (criu dump -t PID -D DIR), which ends it,
#   4. restores it detached (criu restore -D DIR -d),
#   5. checks that it goes on where it stopped: the next tick is the one after
#      the last tick before the dump, the verifier thread's count continues
#      and it finds the memory pattern intact.
# Prints one line per program with the dump and restore times and the image
# size; exits 0 when every round trip worked, 1 with what failed otherwise.
#
# Environment:
#   PLEXUS_CRIU=PATH   the criu binary (default: criu on PATH)
set -euo pipefail

mb=100
c_only=0
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --c-only) c_only=1 ;;
        --keep) keep=1 ;;
        --mb) mb="${2:?--mb needs a number}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "criu-smoke: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
start_ms=$(now_ms)
fail() { echo "criu-smoke: FAILED: $*" >&2; exit 1; }
# note MESSAGE: progress on stderr, with the seconds since the start.
note() { local t=$(($(now_ms) - start_ms)); echo "criu-smoke: [$((t / 1000)).$((t % 1000 / 100)) s] $*" >&2; }

[ "$(id -u)" = 0 ] || fail "criu dump and restore need root; run: sudo $0"
criu="${PLEXUS_CRIU:-$(command -v criu || true)}"
[ -n "$criu" ] && [ -x "$criu" ] || fail "criu is not installed; run: sudo Scripts/install-criu.sh"
criu_version=$("$criu" --version 2>/dev/null | sed -n 's/^Version: *//p' || true)
[ -n "$criu_version" ] || fail "$criu --version does not name a version: is it criu?"
command -v cc >/dev/null || fail "no C compiler (cc); run: apt-get install build-essential"
command -v unshare >/dev/null && command -v setsid >/dev/null || fail "unshare and setsid (util-linux) are missing"
if ! check_out=$("$criu" check 2>&1); then
    fail "'$criu check' failed:"$'\n'"$check_out"
fi

work=$(mktemp -d /tmp/criu-smoke.XXXXXX)
# The processes this script started that may still run, killed on exit. A
# pid leaves the list as soon as its process is known to be gone: the number
# may then be another process's.
running=()
forget() {
    local p kept=()
    for p in "${running[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    running=("${kept[@]}")
}
cleanup() {
    local p
    for p in "${running[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ $keep = 1 ]; then note "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT


# wait_until SECONDS COMMAND...: polls COMMAND every 50 ms, for at most SECONDS.
wait_until() {
    local limit=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$limit" ] || return 1
        sleep 0.05
    done
}

# The programs print "tick N" every 100 ms from the main thread and
# "verified N" after each full check of the memory pattern (every 200 ms)
# from a second thread, and "BAD ..." and exit 1 on a wrong word.
cat >"$work/prog.c" <<'EOF'
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t *words;
static size_t count;

static void say(const char *fmt, unsigned long n) {
    char line[64];
    int len = snprintf(line, sizeof line, fmt, n);
    if (write(1, line, (size_t)len) != len) _exit(3);
}

static void nap(long ms) {
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0) {}
}

static void *verifier(void *unused) {
    (void)unused;
    for (unsigned long pass = 1;; pass++) {
        for (size_t i = 0; i < count; i++)
            if (words[i] != (uint64_t)i * 0x9E3779B97F4A7C15ull) { say("BAD word %lu\n", i); _exit(1); }
        say("verified %lu\n", pass);
        nap(200);
    }
    return NULL;
}

int main(int argc, char **argv) {
    count = (size_t)atol(argc > 1 ? argv[1] : "100") * 1024 * 1024 / 8;
    words = malloc(count * 8);
    if (!words) return 2;
    for (size_t i = 0; i < count; i++) words[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    pthread_t t;
    if (pthread_create(&t, NULL, verifier, NULL) != 0) return 2;
    for (unsigned long tick = 1;; tick++) {
        say("tick %lu\n", tick);
        nap(100);
    }
}
EOF

cat >"$work/prog.swift" <<'EOF'
import Foundation

let count = Int(CommandLine.arguments.dropFirst().first ?? "100")! * 1024 * 1024 / 8
nonisolated(unsafe) let words = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
for i in 0..<count { words[i] = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

func say(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    if write(1, &bytes, bytes.count) != bytes.count { exit(3) }
}

let verifier = Thread {
    var pass = 0
    while true {
        for i in 0..<count where words[i] != UInt64(i) &* 0x9E37_79B9_7F4A_7C15 {
            say("BAD word \(i)")
            exit(1)
        }
        pass += 1
        say("verified \(pass)")
        Thread.sleep(forTimeInterval: 0.2)
    }
}
verifier.start()
var tick = 0
while true {
    tick += 1
    say("tick \(tick)")
    Thread.sleep(forTimeInterval: 0.1)
}
EOF

last_value() { grep "^$1 " "$2" | tail -n 1 | cut -d' ' -f2; }
has_line() { grep -q "^$1\$" "$2"; }
child_of() { pgrep -P "$1" | head -n 1; }
ticked_to() { local n; n=$(last_value tick "$2" || true); [ -n "$n" ] && [ "$n" -ge "$1" ]; }
gone() { [ ! -d "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

# without_inherited_fds COMMAND...: runs COMMAND with descriptors 0-2 only.
# Another one inherited from whoever started this script (a test runner's
# socket, say) would lead outside the dumped tree and fail the dump.
without_inherited_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$@"
}

# round_trip NAME PROGRAM: the whole check for one program.
round_trip() {
    local name="$1" prog="$2" dir="$work/$1"
    local out="$dir/out.log" images="$dir/images"
    mkdir -p "$images"

    without_inherited_fds unshare --fork --pid setsid "$prog" "$mb" >>"$out" 2>&1 </dev/null &
    local outer=$!
    running+=("$outer")
    local pid=""
    found_init() { pid=$(child_of "$outer"); [ -n "$pid" ]; }
    wait_until 10 found_init \
        || fail "$name: no process appeared in the new PID namespace"
    running+=("$pid")
    wait_until 60 has_line "verified 1" "$out" \
        || fail "$name: it did not verify its memory within 60 s; its output:"$'\n'"$(tail -n 5 "$out")"
    wait_until 10 ticked_to 3 "$out" \
        || fail "$name: it did not tick"
    note "$name: running as pid $pid, memory verified once"
    local sid
    sid=$(ps -o sid= -p "$pid" | tr -d ' ')
    [ "$sid" = "$pid" ] || fail "$name: pid $pid is not a session leader (session $sid)"

    local t0 t1 t2 t3
    t0=$(now_ms)
    "$criu" dump -t "$pid" -D "$images" -o dump.log \
        || fail "$name: criu dump failed; the end of $images/dump.log:"$'\n'"$(tail -n 15 "$images/dump.log")"
    t1=$(now_ms)
    note "$name: dumped"
    wait "$outer" 2>/dev/null || true
    forget "$outer"
    wait_until 10 gone "$pid" || fail "$name: pid $pid still runs after the dump"
    forget "$pid"

    local size last_tick last_verified
    size=$(stat -c %s "$out")
    last_tick=$(last_value tick "$out")
    last_verified=$(last_value verified "$out")

    t2=$(now_ms)
    "$criu" restore -D "$images" -d -o restore.log --pidfile "$dir/restored.pid" \
        || fail "$name: criu restore failed; the end of $images/restore.log:"$'\n'"$(tail -n 15 "$images/restore.log")"
    t3=$(now_ms)
    local restored
    restored=$(cat "$dir/restored.pid")
    running+=("$restored")
    note "$name: restored as pid $restored"

    went_on() {
        tail -c +"$((size + 1))" "$out" >"$dir/after.log"
        ticked_to $((last_tick + 5)) "$dir/after.log" && grep -q '^verified ' "$dir/after.log"
    }
    wait_until 30 went_on \
        || fail "$name: the restored process did not go on (pid $restored); output after the restore:"$'\n'"$(tail -n 5 "$dir/after.log")"
    ! grep -q '^BAD' "$dir/after.log" || fail "$name: memory changed across the round trip: $(grep -m1 '^BAD' "$dir/after.log")"
    local first_tick first_verified
    first_tick=$(grep -m1 '^tick ' "$dir/after.log" | cut -d' ' -f2)
    first_verified=$(grep -m1 '^verified ' "$dir/after.log" | cut -d' ' -f2)
    [ "$first_tick" = $((last_tick + 1)) ] \
        || fail "$name: the last tick before the dump was $last_tick, the first after the restore $first_tick"
    [ "$first_verified" = $((last_verified + 1)) ] \
        || fail "$name: the last verification before the dump was $last_verified, the first after the restore $first_verified"
    [ "$(ps -o sid= -p "$restored" | tr -d ' ')" = "$restored" ] \
        || fail "$name: the restored process is not a session leader"
    [ "$(awk '/^NSpid:/ {print $NF}' "/proc/$restored/status")" = 1 ] \
        || fail "$name: the restored process is not the init of its own PID namespace"

    kill -KILL "$restored"
    wait_until 10 gone "$restored" || fail "$name: pid $restored did not end on SIGKILL"
    forget "$restored"
    echo "criu-smoke: $name ok: ${mb} MiB, dump $((t1 - t0)) ms (images $(du -sm "$images" | cut -f1) MiB), restore $((t3 - t2)) ms, ticks went on from $last_tick, verifications from $last_verified"
}

note "criu $criu_version ($criu), kernel $(uname -r)"
cc -O2 -pthread -o "$work/prog-c" "$work/prog.c" || fail "could not compile the C program"
note "compiled the C program"
round_trip c "$work/prog-c"
if [ $c_only = 0 ]; then
    if command -v swiftc >/dev/null; then
        swiftc -O -swift-version 6 -o "$work/prog-swift" "$work/prog.swift" 2>"$work/swiftc.log" \
            || fail "could not compile the Swift program:"$'\n'"$(cat "$work/swiftc.log")"
        note "compiled the Swift program"
        round_trip swift "$work/prog-swift"
    else
        note "swiftc is not on PATH: the Swift round trip did not run"
    fi
fi
echo "criu-smoke: all round trips passed"
