/* plexus.h: the C API of Plexus.
 *
 * Build with `plexus cc prog.c -o prog` (C++: `plexus c++`), which adds the
 * include path, -lPlexusC and a run path to it; or with the flags of
 * `pkg-config --cflags --libs plexus` for an installed Plexus
 * (Scripts/install.sh).
 *
 * A C program started by `plexus run -n N ./prog` calls plexus_init() first,
 * then uses its rank, the job size, shared memory, locks and barriers, and
 * calls plexus_finalize() before it exits. Functions returning int return 0
 * on success and -1 on error; plexus_last_error() then says what happened. */
#ifndef PLEXUS_H
#define PLEXUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Joins the job. Returns 0, or -1 if the program was not started by plexus run. */
int plexus_init(void);
/* This process's rank (0..size-1) and the number of processes in the job. */
int plexus_rank(void);
int plexus_size(void);
/* This process's global PID. */
uint64_t plexus_pid(void);
/* Waits until every process of the job has called plexus_barrier() as often. */
int plexus_barrier(void);
/* Collective allocation in shared memory: every process calls it in the
 * same order with the same size and name and gets the same pointer, valid in
 * every process, zeroed. Blocks of a page or more are page-aligned, smaller
 * ones 64-byte aligned. The name appears in statistics. NULL on error. */
void *plexus_alloc(size_t bytes, const char *name);
/* Per-process allocation in this process's part of the shared heap (no
 * communication). The pointer is valid in every process: publish it. NULL on error. */
void *plexus_alloc_local(size_t bytes, const char *name);
/* Job-wide locks, numbered from 0. acquire blocks until this thread holds
 * the lock; release hands it on. Not recursive. If the acquire closes a
 * deadlock (processes each waiting for a lock the next one holds) and this
 * process is chosen as its victim (plexus run --deadlock abort, the
 * default), it returns -1 without the lock, and plexus_last_error() names
 * every process, node and lock of the cycle: release the locks this
 * process holds so the others can go on. */
int plexus_lock_acquire(int id);
int plexus_lock_release(int id);
/* The fencing token of this process's hold of lock `id`: every grant of a
 * lock carries a token larger than any earlier grant's of that lock. 0 when
 * this process does not hold the lock. */
uint64_t plexus_lock_token(int id);
/* A hint that this thread will soon read (for_write 0) or write (1) the
 * `bytes` bytes of shared memory at `addr`: the pages it lacks start moving
 * now and the call returns at once, so the transfer overlaps other work.
 * Never changes what the program can observe. -1 on error: the range is not
 * inside shared memory allocated so far (plexus_last_error() lists what is),
 * or the job has none. */
int plexus_prefetch(const void *addr, size_t bytes, int for_write);
/* Makes the `bytes` bytes of shared memory at `addr` accessible to system
 * calls, and returns once they are: the kernel does not fault pages in for a
 * system call, so read()/recv()/fread() into shared memory this process has
 * no access to fail with EFAULT (or come up short), and write()/send() from
 * it too. Call plexus_touch(buf, n, 1) before reading into buf, (buf, n, 0)
 * before writing from it, and make the call while no other process touches
 * those pages (the access lasts until the protocol takes them back: under
 * sc, when another process writes them). -1 on error: the range is not
 * inside shared memory allocated so far. */
int plexus_touch(const void *addr, size_t bytes, int for_write);
/* Gives the calling thread an alternate signal stack (if it has none), so a
 * stack overflow on it still reaches the previous SIGSEGV handler instead of
 * killing the process without a word. The thread that called plexus_init()
 * has one; call this first on threads you create. -1 on error. */
int plexus_install_signal_stack(void);
/* Leaves the job: waits for every process, then disconnects. */
int plexus_finalize(void);
/* The message of the last error in this thread, or "" if none. */
const char *plexus_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
