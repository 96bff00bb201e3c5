// The SIGSEGV fault path. Everything reachable from cfault_handler is
// async-signal-safe: C11 atomics on preallocated static memory and the raw
// system calls write (doorbell, stderr), futex, clock_gettime, gettid,
// getpid, getcpu, sched_yield, sigaction, pthread_sigmask and raise. No allocation,
// no locks, no stdio, no Swift.
//
// Hand-off protocol, per slot of a fixed table:
//
//   FREE --claim--> CLAIMING --publish--> PENDING --cfault_next_fault--> IN_SERVICE
//     ^                                      |                               |
//     |                                      +------cfault_complete_page-----+--> DONE
//     +---------------- last waiter leaves ------------------------------------------+
//
// A slot's 64-bit state word packs generation, phase, write bit and the number
// of threads waiting on it, so joining a pending fault, completing it and
// leaving it are single CASes that fail if the slot was recycled meanwhile
// (the generation changes on every claim). A slot is recycled only after its
// last waiter left, so a waiter's `done` word stays valid while it sleeps.
#define _GNU_SOURCE
#include "CFault.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sched.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "CFault decodes the read/write bit of a fault from REG_ERR, which exists on x86_64 only"
#endif

enum {
    SLOT_COUNT = 256,
    // How long a waiter spins before sleeping: a page served from the local
    // engine or a fast peer arrives within this, and a futex sleep/wake pair
    // costs about 7 us on each side (MEASUREMENTS.md).
    SPIN_NANOSECONDS = 50000,
};

// Bits of the x86 page-fault error code (REG_ERR).
enum {
    PF_WRITE = 1 << 1,       // the access was a write
    PF_INSTRUCTION = 1 << 4, // the access was an instruction fetch
};

enum phase { FREE = 0, CLAIMING = 1, PENDING = 2, IN_SERVICE = 3, DONE = 4 };

// State word layout.
#define WAITERS_MASK 0xffffull
#define PHASE_SHIFT 16
#define PHASE_MASK (0xfull << PHASE_SHIFT)
#define WRITE_BIT (1ull << 20)
#define GENERATION_SHIFT 32

static inline uint64_t waiters_of(uint64_t w) { return w & WAITERS_MASK; }
static inline enum phase phase_of(uint64_t w) { return (enum phase)((w & PHASE_MASK) >> PHASE_SHIFT); }
static inline uint64_t generation_of(uint64_t w) { return w >> GENERATION_SHIFT; }
static inline uint64_t with_phase(uint64_t w, enum phase p) { return (w & ~PHASE_MASK) | ((uint64_t)p << PHASE_SHIFT); }
static inline bool waiting_phase(uint64_t w) { return phase_of(w) == PENDING || phase_of(w) == IN_SERVICE; }

typedef struct slot {
    _Atomic uint64_t state;
    _Atomic uint64_t page;     // valid for the generation in `state`
    _Atomic uint32_t done;     // futex word: 0 while waiting, 1 once completed
    _Atomic uint32_t sleepers; // threads that may be in futex_wait on `done`
    // Where the fault that claimed the slot came from (for statistics);
    // written while CLAIMING, like `page`.
    _Atomic uint64_t offset;
    _Atomic uint64_t instruction;
    _Atomic int32_t thread;
    // The CPU a waiter was last seen on while it waited (set when the
    // fault is published, refreshed while waiters spin), for
    // cfault_complete_page's caller: see there.
    _Atomic int32_t spin_cpu;
} __attribute__((aligned(64))) slot;

_Static_assert(sizeof(slot) == 64, "one slot per cache line");

static slot slots[SLOT_COUNT];
// One past the highest slot ever claimed: every scan stops there. A process
// with a few faults in flight scans a few cache lines, not all SLOT_COUNT, on
// each fault, completion and poll. Only grows; raised before the slot it
// covers is published, so a scan that sees the slot pending also covers it.
static _Atomic uint32_t slots_used;
static _Atomic uintptr_t region_base;
static _Atomic uintptr_t region_end; // 0 while no region is registered
static _Atomic uint32_t page_shift;
static _Atomic int doorbell = -1;
static _Atomic uint32_t next_cursor; // where the engine resumes scanning
static struct sigaction previous_action;
static _Atomic bool installed;

static _Atomic uint64_t stat_faults, stat_coalesced, stat_sleeps, stat_chained;

static inline void count(_Atomic uint64_t *counter) { atomic_fetch_add_explicit(counter, 1, memory_order_relaxed); }

static inline void cpu_relax(void) { __builtin_ia32_pause(); }

// The raw system call, not glibc's sched_getcpu: async-signal-safe.
static int32_t current_cpu(void) {
    unsigned cpu = 0;
    return syscall(SYS_getcpu, &cpu, NULL, NULL) == 0 ? (int32_t)cpu : -1;
}

static long futex(_Atomic uint32_t *word, int op, uint32_t value) {
    return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

static uint64_t now_nanoseconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

// --- Application side (signal context) -------------------------------------

/// Joins a pending slot for `page` whose access covers ours (a pending write
/// also serves a read). Returns the slot index or -1.
static int join_pending(uint64_t page, bool is_write) {
    int used = (int)atomic_load_explicit(&slots_used, memory_order_acquire);
    for (int i = 0; i < used; i++) {
        slot *s = &slots[i];
        uint64_t w = atomic_load_explicit(&s->state, memory_order_acquire);
        while (waiting_phase(w) && (!is_write || (w & WRITE_BIT))) {
            if (atomic_load_explicit(&s->page, memory_order_relaxed) != page) break;
            if (waiters_of(w) == WAITERS_MASK) break; // cannot count more; claim another slot
            // The CAS fails if the slot was recycled since `page` was read.
            if (atomic_compare_exchange_weak_explicit(&s->state, &w, w + 1, memory_order_acq_rel, memory_order_acquire)) {
                count(&stat_coalesced);
                return i;
            }
        }
    }
    return -1;
}

/// Where a fault came from, for the engine's statistics.
typedef struct origin {
    uint64_t offset;
    uint64_t instruction;
} origin;

// The calling thread's kernel id, cached: one system call per thread, not
// per fault. Initial-exec TLS is a fixed offset from the thread pointer, so
// reading it allocates nothing and is safe in a signal handler.
static __thread int32_t cached_thread_id __attribute__((tls_model("initial-exec")));

static int32_t thread_id(void) {
    if (cached_thread_id == 0) cached_thread_id = (int32_t)syscall(SYS_gettid);
    return cached_thread_id;
}

// Set in a child created by fork(): it has no region (MADV_DONTFORK) and
// no engine, so every access to the region is refused.
static _Atomic bool is_forked_child;

// After fork() the child's only thread has a new id but its parent's cache.
static void in_forked_child(void) {
    cached_thread_id = 0;
    atomic_store(&is_forked_child, true);
}
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;
static void install_fork_hook(void) { pthread_atfork(NULL, NULL, in_forked_child); }

/// Claims a free slot for `page` and publishes it as pending. Returns the
/// slot index, or -1 when the table is full.
static int claim_free(uint64_t page, bool is_write, origin from) {
    for (int i = 0; i < SLOT_COUNT; i++) {
        slot *s = &slots[i];
        uint64_t w = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (phase_of(w) != FREE) continue;
        uint64_t claimed = ((generation_of(w) + 1) << GENERATION_SHIFT) | ((uint64_t)CLAIMING << PHASE_SHIFT) | 1;
        if (!atomic_compare_exchange_strong_explicit(&s->state, &w, claimed, memory_order_acq_rel, memory_order_relaxed)) continue;
        // While CLAIMING nobody else writes the slot: joiners, the engine and
        // completion only act on PENDING or IN_SERVICE.
        atomic_store_explicit(&s->page, page, memory_order_relaxed);
        atomic_store_explicit(&s->done, 0, memory_order_relaxed);
        atomic_store_explicit(&s->offset, from.offset, memory_order_relaxed);
        atomic_store_explicit(&s->instruction, from.instruction, memory_order_relaxed);
        atomic_store_explicit(&s->thread, thread_id(), memory_order_relaxed);
        atomic_store_explicit(&s->spin_cpu, current_cpu(), memory_order_relaxed);
        uint32_t used = atomic_load_explicit(&slots_used, memory_order_relaxed);
        while (used < (uint32_t)i + 1 &&
               !atomic_compare_exchange_weak_explicit(&slots_used, &used, (uint32_t)i + 1, memory_order_release, memory_order_relaxed)) {
        }
        uint64_t published = with_phase(claimed, PENDING) | (is_write ? WRITE_BIT : 0);
        atomic_store_explicit(&s->state, published, memory_order_release);
        count(&stat_faults);
        return i;
    }
    return -1;
}

static void ring_doorbell(void) {
    int fd = atomic_load_explicit(&doorbell, memory_order_relaxed);
    uint64_t one = 1;
    // A full counter (EAGAIN) still leaves the doorbell readable; nothing to do.
    ssize_t ignored = write(fd, &one, sizeof one);
    (void)ignored;
}

static _Atomic uint64_t spin_nanoseconds = SPIN_NANOSECONDS;

void cfault_set_spin_nanoseconds(uint64_t ns) { atomic_store(&spin_nanoseconds, ns); }

static void wait_done(slot *s) {
    uint64_t deadline = 0;
    uint64_t spin = atomic_load_explicit(&spin_nanoseconds, memory_order_relaxed);
    for (unsigned spins = 0; spin > 0 && atomic_load_explicit(&s->done, memory_order_acquire) == 0; spins++) {
        cpu_relax();
        if ((spins & 63) != 0) continue;
        atomic_store_explicit(&s->spin_cpu, current_cpu(), memory_order_relaxed);
        uint64_t now = now_nanoseconds();
        if (deadline == 0) deadline = now + spin;
        else if (now >= deadline) break;
    }
    if (atomic_load_explicit(&s->done, memory_order_acquire) != 0) return;
    count(&stat_sleeps);
    // Dekker pairing with cfault_complete_page: we publish `sleepers` before
    // re-reading `done`, it publishes `done` before reading `sleepers`; with
    // seq_cst on both sides at least one of us sees the other.
    atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
    while (atomic_load_explicit(&s->done, memory_order_seq_cst) == 0) {
        futex(&s->done, FUTEX_WAIT_PRIVATE, 0);
    }
    atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
}

static void leave(slot *s) {
    uint64_t w = atomic_load_explicit(&s->state, memory_order_relaxed);
    for (;;) {
        uint64_t next = w - 1;
        if (waiters_of(next) == 0) next = with_phase(next & ~WRITE_BIT, FREE);
        if (atomic_compare_exchange_weak_explicit(&s->state, &w, next, memory_order_acq_rel, memory_order_relaxed)) return;
    }
}

static void wait_for_page(uint64_t page, bool is_write, origin from) {
    for (;;) {
        int i = join_pending(page, is_write);
        if (i < 0) {
            i = claim_free(page, is_write, from);
            if (i >= 0) ring_doorbell();
        }
        if (i >= 0) {
            wait_done(&slots[i]);
            leave(&slots[i]);
            return;
        }
        // More distinct faults in flight than slots: let the engine drain.
        sched_yield();
    }
}

// --- Served pages ------------------------------------------------------------
// Written by the engine side at each allocation (rarely), read by the
// handler: atomics only. Ranges only grow, so a handler that races an update
// sees the old range or the new one, both of which hold what it needs.

enum { DESCRIPTION_BYTES = 2048 };

static _Atomic bool served_restricted;
static _Atomic uint64_t served_first[CFAULT_SERVED_RANGES];
static _Atomic uint64_t served_end[CFAULT_SERVED_RANGES];
// Two buffers: the engine side writes the one not shown, then shows it.
static char descriptions[2][DESCRIPTION_BYTES];
static _Atomic uint64_t description_lengths[2];
static _Atomic int description_shown;

int cfault_serve_pages(uint32_t index, uint64_t first_page, uint64_t end_page) {
    if (index >= CFAULT_SERVED_RANGES) return EINVAL;
    atomic_store(&served_first[index], first_page);
    atomic_store(&served_end[index], end_page);
    atomic_store(&served_restricted, true);
    return 0;
}

void cfault_describe_allocations(const char *text, uint64_t length) {
    int next = 1 - atomic_load(&description_shown);
    if (length > DESCRIPTION_BYTES - 1) length = DESCRIPTION_BYTES - 1;
    memcpy(descriptions[next], text, length);
    atomic_store(&description_lengths[next], length);
    atomic_store(&description_shown, next);
}

static bool is_served(uint64_t page) {
    if (!atomic_load_explicit(&served_restricted, memory_order_acquire)) return true;
    for (int i = 0; i < CFAULT_SERVED_RANGES; i++) {
        if (page >= atomic_load_explicit(&served_first[i], memory_order_acquire) &&
            page < atomic_load_explicit(&served_end[i], memory_order_acquire)) {
            return true;
        }
    }
    return false;
}

// --- Messages from the handler ---------------------------------------------
// Built in a buffer on the (alternate) stack and written with one write(2):
// no stdio, no allocation.

typedef struct line {
    char text[3072];
    size_t length;
} line;

static void put(line *l, const char *s) {
    while (*s && l->length < sizeof l->text) l->text[l->length++] = *s++;
}

static void put_bytes(line *l, const char *s, size_t n) {
    for (size_t i = 0; i < n && l->length < sizeof l->text; i++) l->text[l->length++] = s[i];
}

static void put_unsigned(line *l, uint64_t v, unsigned radix) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v % radix];
        v /= radix;
    } while (v != 0);
    while (n > 0 && l->length < sizeof l->text) l->text[l->length++] = digits[--n];
}

static void put_hex(line *l, uint64_t v) {
    put(l, "0x");
    put_unsigned(l, v, 16);
}

static void put_decimal(line *l, uint64_t v) { put_unsigned(l, v, 10); }

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(STDERR_FILENO, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        p += k;
        n -= (size_t)k;
    }
}

static void emit(line *l) {
    if (l->length == sizeof l->text) l->text[l->length - 1] = '\n';
    write_all(l->text, l->length);
}

// Set once SA_RESETHAND of the previous handler has taken effect: the kernel
// resets such a handler to SIG_DFL when it delivers the signal, so after the
// first chained call it is SIG_DFL for us too (and for cfault_uninstall).
static _Atomic bool previous_was_reset;

/// Calls the handler that was installed before ours as the kernel would
/// have: with its sa_mask (and the signal itself, unless SA_NODEFER) blocked,
/// SA_RESETHAND honoured, SA_SIGINFO or plain. SIG_DFL: the default action
/// is restored, so a fault that re-executes kills the process as it would
/// have without Plexus, and a signal sent by a process is raised again (it is
/// blocked until we return). SIG_IGN: a sent signal is ignored; a real fault
/// cannot be (the kernel kills a process that ignores one), so it is treated
/// as SIG_DFL.
static void chain(int signo, siginfo_t *info, void *context) {
    count(&stat_chained);
    struct sigaction previous = previous_action;
    bool is_handler = (previous.sa_flags & SA_SIGINFO) || (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN);
    if (is_handler && (previous.sa_flags & SA_RESETHAND) && atomic_exchange(&previous_was_reset, true)) is_handler = false;
    bool sent_by_process = info->si_code <= 0; // kill/tgkill/sigqueue, not a fault
    if (!is_handler) {
        // (previous_was_reset is only ever set for a real handler.)
        bool ignored = !(previous.sa_flags & SA_SIGINFO) && previous.sa_handler == SIG_IGN;
        if (ignored && sent_by_process) return;
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(signo, &dfl, NULL);
        if (sent_by_process) raise(signo);
        return;
    }
    sigset_t blocked = previous.sa_mask, before;
    if (previous.sa_flags & SA_NODEFER) {
        // Our own action blocks the signal while we run; the previous one
        // asked not to be.
        sigset_t self;
        sigemptyset(&self);
        sigaddset(&self, signo);
        pthread_sigmask(SIG_UNBLOCK, &self, &before);
        pthread_sigmask(SIG_BLOCK, &blocked, NULL);
    } else {
        pthread_sigmask(SIG_BLOCK, &blocked, &before);
    }
    if (previous.sa_flags & SA_SIGINFO) previous.sa_sigaction(signo, info, context);
    else previous.sa_handler(signo);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
}

// --- Alternate signal stacks ------------------------------------------------
// SA_ONSTACK makes the kernel run the handler on the thread's alternate
// stack, if it has one: then a stack overflow (a fault outside the region)
// still reaches the previous handler (a backtracer) instead of killing the
// process without a word. Threads get one from cfault_ensure_alternate_stack;
// it is freed when the thread exits.

enum { ALTERNATE_STACK_BYTES = 256 * 1024 };

static pthread_key_t stack_key;
static pthread_once_t stack_key_once = PTHREAD_ONCE_INIT;
static bool stack_key_made;

static void release_alternate_stack(void *mapping) {
    size_t guard = (size_t)sysconf(_SC_PAGESIZE);
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE) && current.ss_sp == (char *)mapping + guard) {
        stack_t off = { .ss_flags = SS_DISABLE };
        if (sigaltstack(&off, NULL) != 0) return; // still in use: leave it mapped
    }
    munmap(mapping, guard + ALTERNATE_STACK_BYTES);
}

static void make_stack_key(void) { stack_key_made = pthread_key_create(&stack_key, release_alternate_stack) == 0; }

int cfault_ensure_alternate_stack(void) {
    stack_t current;
    if (sigaltstack(NULL, &current) != 0) return errno;
    if (!(current.ss_flags & SS_DISABLE)) return 0; // it has one (ours, or another runtime's)
    size_t guard = (size_t)sysconf(_SC_PAGESIZE);
    char *mapping = mmap(NULL, guard + ALTERNATE_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mapping == MAP_FAILED) return errno;
    // A guard page below it: an overflow of the handler's own stack faults
    // instead of writing over whatever lies there.
    if (mprotect(mapping, guard, PROT_NONE) != 0) {
        int error = errno;
        munmap(mapping, guard + ALTERNATE_STACK_BYTES);
        return error;
    }
    stack_t stack = { .ss_sp = mapping + guard, .ss_size = ALTERNATE_STACK_BYTES, .ss_flags = 0 };
    if (sigaltstack(&stack, NULL) != 0) {
        int error = errno;
        munmap(mapping, guard + ALTERNATE_STACK_BYTES);
        return error;
    }
    pthread_once(&stack_key_once, make_stack_key);
    if (stack_key_made) pthread_setspecific(stack_key, mapping);
    return 0;
}

/// A fault in the region that Plexus will not serve: says why (once per
/// process, so a previous handler that returns without a fix cannot flood
/// stderr), then treats it as any crash: the previous handler runs (Swift's
/// backtracer shows where), or the default action kills the process with
/// SIGSEGV when the access re-executes.
static _Atomic bool refused_once;

static void refuse(line *why, int signo, siginfo_t *info, void *context) {
    if (!atomic_exchange(&refused_once, true)) emit(why);
    chain(signo, info, context);
}

/// A load or store on a page no allocation covers: before, the engine
/// served it, and the damage showed later (a page placed by the next
/// allocation had already been touched).
static void refuse_unallocated(uintptr_t address, bool is_write, uintptr_t base, uintptr_t end, int signo, siginfo_t *info, void *context) {
    line l = { .length = 0 };
    put(&l, is_write ? "plexus: store to " : "plexus: load from ");
    put_hex(&l, address);
    put(&l, ", which no allocation covers (shared region ");
    put_hex(&l, base);
    put(&l, "-");
    put_hex(&l, end);
    put(&l, "): Plexus serves only allocated shared memory. Allocated: ");
    int shown = atomic_load(&description_shown);
    uint64_t length = atomic_load(&description_lengths[shown]);
    if (length == 0) put(&l, "nothing yet");
    else put_bytes(&l, descriptions[shown], length);
    put(&l, ". Allocate the memory first, or check the index or pointer arithmetic that led here\n");
    refuse(&l, signo, info, context);
}

static void cfault_handler(int signo, siginfo_t *info, void *context) {
    int saved_errno = errno;
    uintptr_t address = (uintptr_t)info->si_addr;
    uintptr_t base = atomic_load_explicit(&region_base, memory_order_acquire);
    uintptr_t end = atomic_load_explicit(&region_end, memory_order_acquire);
    const ucontext_t *uc = context;
    if (info->si_code <= 0 || address < base || address >= end) {
        chain(signo, info, context);
    } else if (atomic_load_explicit(&is_forked_child, memory_order_relaxed)) {
        line l = { .length = 0 };
        put(&l, "plexus: a forked child cannot use Plexus shared memory: process ");
        put_decimal(&l, (uint64_t)syscall(SYS_getpid));
        put(&l, ", forked from a job process, touched ");
        put_hex(&l, address);
        put(&l, ". The region is not copied to children (MADV_DONTFORK); use it from the job process itself, or exec a new program in the child\n");
        refuse(&l, signo, info, context);
    } else if ((uc->uc_mcontext.gregs[REG_ERR] & PF_INSTRUCTION) != 0) {
        // The application view is never executable: a read grant would
        // only make the fetch fault again, for ever.
        line l = { .length = 0 };
        put(&l, "plexus: instruction fetch from shared memory at ");
        put_hex(&l, address);
        put(&l, ": Plexus does not serve execute access (code cannot run from the shared region; copy it to private memory and run it there)\n");
        refuse(&l, signo, info, context);
    } else {
        // Page-fault error code bit 1: the access was a write.
        bool is_write = (uc->uc_mcontext.gregs[REG_ERR] & PF_WRITE) != 0;
        uint32_t shift = atomic_load_explicit(&page_shift, memory_order_relaxed);
        uint64_t page = (uint64_t)(address - base) >> shift;
        if (!is_served(page)) {
            refuse_unallocated(address, is_write, base, end, signo, info, context);
            errno = saved_errno;
            return;
        }
        origin from = {
            .offset = (uint64_t)(address - base) & ((1ull << shift) - 1),
            .instruction = (uint64_t)uc->uc_mcontext.gregs[REG_RIP],
        };
        wait_for_page(page, is_write, from);
    }
    errno = saved_errno;
}

// --- Engine side --------------------------------------------------------------

int32_t cfault_current_cpu(void) { return current_cpu(); }

int cfault_install(uintptr_t base, uint64_t size, uint64_t page_size) {
    if (page_size == 0 || (page_size & (page_size - 1)) != 0 || size == 0 || size % page_size != 0 || base % page_size != 0) {
        return EINVAL;
    }
    bool expected = false;
    if (!atomic_compare_exchange_strong(&installed, &expected, true)) return EBUSY;
    pthread_once(&fork_hook_once, install_fork_hook);
    // Without one, a thread that overflows its stack dies without a word.
    // Not fatal: the handler then runs on the thread's own stack.
    (void)cfault_ensure_alternate_stack();
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        atomic_store(&installed, false);
        return error;
    }
    atomic_store(&doorbell, fd);
    atomic_store(&page_shift, (uint32_t)__builtin_ctzll(page_size));
    atomic_store(&region_base, base);
    atomic_store(&served_restricted, false);
    atomic_store(&region_end, base + size);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = cfault_handler;
    sigemptyset(&action.sa_mask);
    // SA_ONSTACK: a stack overflow outside the region can still reach the
    // chained handler when the thread has an alternate stack (see
    // cfault_ensure_alternate_stack; the installing thread gets one).
    action.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    atomic_store(&previous_was_reset, false);
    if (sigaction(SIGSEGV, &action, &previous_action) != 0) {
        int error = errno;
        atomic_store(&region_end, 0);
        atomic_store(&doorbell, -1);
        close(fd);
        atomic_store(&installed, false);
        return error;
    }
    return 0;
}

int cfault_uninstall(void) {
    if (!atomic_load(&installed)) return 0;
    for (int i = 0; i < SLOT_COUNT; i++) {
        if (phase_of(atomic_load(&slots[i].state)) != FREE) return EBUSY;
    }
    struct sigaction restored = previous_action;
    if ((restored.sa_flags & SA_RESETHAND) && atomic_load(&previous_was_reset)) {
        memset(&restored, 0, sizeof restored);
        restored.sa_handler = SIG_DFL;
    }
    if (sigaction(SIGSEGV, &restored, NULL) != 0) return errno;
    atomic_store(&region_end, 0);
    atomic_store(&region_base, 0);
    close(atomic_exchange(&doorbell, -1));
    atomic_store(&installed, false);
    return 0;
}

int cfault_doorbell_fd(void) { return atomic_load(&doorbell); }

void cfault_doorbell_drain(void) {
    uint64_t value;
    ssize_t ignored = read(atomic_load(&doorbell), &value, sizeof value);
    (void)ignored;
}

bool cfault_next_fault(cfault_fault *fault) {
    uint32_t used = atomic_load_explicit(&slots_used, memory_order_acquire);
    if (used == 0) return false;
    uint32_t start = atomic_load_explicit(&next_cursor, memory_order_relaxed) % used;
    for (uint32_t k = 0; k < used; k++) {
        uint32_t i = (start + k) % used;
        slot *s = &slots[i];
        uint64_t w = atomic_load_explicit(&s->state, memory_order_acquire);
        while (phase_of(w) == PENDING) {
            uint64_t page = atomic_load_explicit(&s->page, memory_order_relaxed);
            uint64_t offset = atomic_load_explicit(&s->offset, memory_order_relaxed);
            uint64_t instruction = atomic_load_explicit(&s->instruction, memory_order_relaxed);
            int32_t thread = atomic_load_explicit(&s->thread, memory_order_relaxed);
            // The CAS fails if the slot was recycled since these were read.
            if (atomic_compare_exchange_weak_explicit(&s->state, &w, with_phase(w, IN_SERVICE), memory_order_acq_rel, memory_order_acquire)) {
                fault->page_index = page;
                fault->offset = offset;
                fault->instruction = instruction;
                fault->thread = thread;
                fault->is_write = (w & WRITE_BIT) != 0;
                // Resume after this slot so one busy page cannot starve others.
                atomic_store_explicit(&next_cursor, (i + 1) % SLOT_COUNT, memory_order_relaxed);
                return true;
            }
        }
    }
    return false;
}

int32_t cfault_complete_page(uint64_t page_index) {
    int32_t spinning_on = -1;
    int used = (int)atomic_load_explicit(&slots_used, memory_order_acquire);
    for (int i = 0; i < used; i++) {
        slot *s = &slots[i];
        uint64_t w = atomic_load_explicit(&s->state, memory_order_acquire);
        while (waiting_phase(w)) {
            if (atomic_load_explicit(&s->page, memory_order_relaxed) != page_index) break;
            if (!atomic_compare_exchange_weak_explicit(&s->state, &w, with_phase(w, DONE), memory_order_acq_rel, memory_order_acquire)) continue;
            // Read before `done`: once a waiter sees it, it may leave and
            // the slot be reused.
            int32_t cpu = atomic_load_explicit(&s->spin_cpu, memory_order_relaxed);
            atomic_store_explicit(&s->done, 1, memory_order_seq_cst);
            // Only pay for the wake system call if a waiter went to sleep.
            if (atomic_load_explicit(&s->sleepers, memory_order_seq_cst) != 0) {
                futex(&s->done, FUTEX_WAKE_PRIVATE, INT_MAX);
            } else if (spinning_on < 0) {
                spinning_on = cpu;
            }
            break;
        }
    }
    return spinning_on;
}

void cfault_get_statistics(cfault_statistics *out) {
    out->faults = atomic_load_explicit(&stat_faults, memory_order_relaxed);
    out->coalesced = atomic_load_explicit(&stat_coalesced, memory_order_relaxed);
    out->sleeps = atomic_load_explicit(&stat_sleeps, memory_order_relaxed);
    out->chained = atomic_load_explicit(&stat_chained, memory_order_relaxed);
}
