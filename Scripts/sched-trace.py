"""Reads an ftrace text dump (sched_switch, sched_wakeup, signal_deliver) of a
2-process Jacobi job and reports, over the timed loop, each application
thread's time runnable but not running, and the part of it during which a
CPU was idle. The application threads are the two threads that take the most
SIGSEGVs; the timed loop is the first stretch where the second of them takes
faults at the loop's low rate (60 faults over more than 30 ms), from the
first gap of a millisecond (the end of the first-touch faults) up to the
first gap of 20 ms. Only approximate: it may leave out the first iteration.
A thread that yields its CPU while it polls (a barrier's or a fault's
bounded spin) also counts as runnable: read the figures next to the raw
trace, not alone."""
import collections
import re
import sys

LINE = re.compile(r'^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(.*)$')
FIELD = re.compile(r'(\w+)=(\S+)')


def events(path):
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                yield float(m.group(4)), int(m.group(2)), int(m.group(3)), m.group(5)


def main(path):
    evs = list(events(path))
    faults = collections.defaultdict(list)
    for t, pid, _, rest in evs:
        if rest.startswith('signal_deliver'):
            faults[pid].append(t)
    apps = sorted(faults, key=lambda p: -len(faults[p]))[:2]
    if len(apps) < 2:
        sys.exit('sched-trace: fewer than two faulting threads in the trace')
    ts = faults[apps[1]]
    start = next((i for i in range(len(ts) - 60) if ts[i + 60] - ts[i] > 0.03), None)
    if start is None:
        sys.exit('sched-trace: no timed loop found')
    # The stretch may begin inside the last burst of first-touch faults
    # (tens of microseconds apart); the loop starts after its first gap of
    # a millisecond (a sweep).
    while start + 1 < len(ts) and ts[start + 1] - ts[start] < 0.001:
        start += 1
    start += 1
    end = start
    while end + 1 < len(ts) and ts[end + 1] - ts[end] < 0.02:
        end += 1
    t0, t1 = ts[start], ts[end]
    running = {}          # cpu -> pid running there (0: idle)
    waiting = {}          # app pid -> since when runnable and not running
    wait = collections.Counter()
    wait_idle = collections.Counter()
    busy = collections.Counter()
    # The state is followed from the start of the trace; time is counted
    # inside the timed loop only.
    last = evs[0][0]
    for t, pid, cpu, rest in evs:
        if t > t1:
            break
        dt = max(0.0, t - max(last, t0)) if t >= t0 else 0.0
        last = t
        idle = any(p == 0 for p in running.values())
        for a in waiting:
            wait[a] += dt
            if idle:
                wait_idle[a] += dt
        for p in running.values():
            busy[p] += dt
        if rest.startswith('sched_switch'):
            d = dict(FIELD.findall(rest))
            prev, nxt = int(d['prev_pid']), int(d['next_pid'])
            running[cpu] = nxt
            if prev in apps:
                if d['prev_state'].startswith('R'):
                    waiting[prev] = t
                else:
                    waiting.pop(prev, None)
            waiting.pop(nxt, None)
        elif rest.startswith('sched_wakeup'):
            d = dict(FIELD.findall(rest))
            woken = int(d['pid'])
            # A wake-up of a thread still on its CPU (it had not slept yet) is no wait.
            if woken in apps and woken not in running.values():
                waiting[woken] = t
    print(f'timed loop: {(t1 - t0) * 1e3:.1f} ms; CPUs idle {busy[0] * 1e3:.1f} ms (of {2 * (t1 - t0) * 1e3:.1f} CPU-ms)')
    for a in apps:
        print(f'application thread {a}: ran {busy[a] * 1e3:.1f} ms, runnable but not running {wait[a] * 1e3:.1f} ms, '
              f'{wait_idle[a] * 1e3:.1f} ms of it while a CPU was idle')
    others = sorted((p for p in busy if p not in apps and p != 0), key=lambda p: -busy[p])[:4]
    print('busiest other threads: ' + ', '.join(f'{p} {busy[p] * 1e3:.1f} ms' for p in others))


if __name__ == '__main__':
    main(sys.argv[1])
