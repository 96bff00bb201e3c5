// CFault: the only C in Plexus. It does what Swift cannot do safely inside a
// signal handler: map the shared region twice, catch SIGSEGV on the
// application view, hand the fault to the engine and sleep until the engine
// says the page is ready; refuse, with a message, the faults Plexus does not
// serve (outside allocations, instruction fetches, in a forked child); give
// threads an alternate signal stack; touch pages for system calls. Besides
// that: process set-up Swift cannot call (CFaultProcess.h) and the fault cost
// `plexus bench` compares with (CFaultFloor.h).
//
// Threading: the mapping functions are called once at start-up. The handler
// runs on any application thread. The engine side (cfault_next_fault,
// cfault_complete_page, cfault_doorbell_drain) is meant for ONE engine thread;
// it is nonetheless safe to call from several, since every transition is a CAS.
#ifndef CFAULT_H
#define CFAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "CFaultFloor.h"
#include "CFaultProcess.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Page protections of the application view. The values are stable: Swift's
/// PageAccess uses the same raw values.
typedef enum cfault_protection {
    CFAULT_PROTECTION_NONE = 0,
    CFAULT_PROTECTION_READ = 1,
    CFAULT_PROTECTION_READWRITE = 2,
} cfault_protection;

/// Which system call of cfault_map failed, so the error can say so.
typedef enum cfault_map_step {
    CFAULT_STEP_NONE = 0,
    CFAULT_STEP_MEMFD = 1,
    CFAULT_STEP_FTRUNCATE = 2,
    CFAULT_STEP_MAP_APPLICATION = 3,
    CFAULT_STEP_MAP_SYSTEM = 4,
    CFAULT_STEP_MADVISE = 5,
} cfault_map_step;

/// A memfd mapped twice. Shared with Swift; its layout is asserted in CFault.c.
typedef struct cfault_mapping {
    void *application_view; ///< at the fixed base; protections change per page
    void *system_view;      ///< anywhere; always PROT_READ|PROT_WRITE
    uint64_t size;          ///< bytes, a multiple of the system page size
    int32_t memfd;
    int32_t failed_step;    ///< a cfault_map_step, set when cfault_map fails
} cfault_mapping;

/// Per-process counters of the fault path, all monotonic.
typedef struct cfault_statistics {
    uint64_t faults;    ///< faults that claimed a slot (one engine request each)
    uint64_t coalesced; ///< faults that joined a pending slot for the same page
    uint64_t sleeps;    ///< waits that outlasted the spin and slept on a futex
    uint64_t chained;   ///< SIGSEGVs outside the region passed to the previous handler
} cfault_statistics;

/// Creates a memfd of `size` bytes and maps it at exactly `base` (PROT_NONE,
/// MAP_FIXED_NOREPLACE) and anywhere (read-write), both MADV_DONTFORK: a
/// child created by fork() has neither view. Returns 0, or an errno
/// with out->failed_step saying which call failed. EEXIST from
/// CFAULT_STEP_MAP_APPLICATION means the fixed range is already mapped.
int cfault_map(uintptr_t base, uint64_t size, cfault_mapping *out);

/// Unmaps both views and closes the memfd. Returns 0 or an errno.
int cfault_unmap(cfault_mapping *mapping);

/// mprotect of `length` bytes at `address` (page aligned) to a
/// cfault_protection. Returns 0 or an errno (ENOMEM usually means the process
/// ran out of mappings: vm.max_map_count).
int cfault_protect(void *address, uint64_t length, int32_t protection);

/// Registers [base, base+size) as the application view, creates the doorbell
/// eventfd and installs the SIGSEGV handler, saving the previous one for
/// chaining (called as the kernel would call it: its sa_mask, SA_RESETHAND,
/// SA_NODEFER, SA_SIGINFO, SIG_DFL and SIG_IGN honoured), and gives the
/// calling thread an alternate signal stack (cfault_ensure_alternate_stack). `page_size` is the coherence unit, a power of two. Returns 0,
/// EBUSY if a region is already registered, EINVAL on a bad layout, or the
/// errno of eventfd/sigaction.
int cfault_install(uintptr_t base, uint64_t size, uint64_t page_size);

/// Gives the calling thread an alternate signal stack (256 KiB and a guard
/// page, freed when the thread exits) unless it has one, so that the SIGSEGV
/// of a stack overflow still reaches the previous handler (a backtracer)
/// rather than killing the process silently. cfault_install calls it for
/// the installing thread; other threads call it themselves (on a thread
/// without one, the handler runs on the thread's own stack). Returns 0 or
/// the errno of sigaltstack/mmap.
int cfault_ensure_alternate_stack(void);

/// Restores the previous SIGSEGV handler and closes the doorbell. Returns 0,
/// or EBUSY (and changes nothing) while any thread still waits for a page.
int cfault_uninstall(void);

/// The doorbell: an eventfd (non-blocking) that becomes readable whenever a
/// new fault is pending. Poll it next to the sockets. -1 when not installed.
int cfault_doorbell_fd(void);

/// Resets the doorbell. Call it BEFORE draining with cfault_next_fault, so a
/// fault published after the drain rings it again.
void cfault_doorbell_drain(void);

/// One fault as the engine takes it. `offset`, `instruction` and `thread`
/// describe the access of the thread that opened the request; threads that
/// joined it (same page, at once) are counted but not described.
typedef struct cfault_fault {
    uint64_t page_index;
    /// Byte offset of the faulting address within its page.
    uint64_t offset;
    /// Address of the faulting instruction (RIP).
    uint64_t instruction;
    /// Kernel thread id of the faulting thread.
    int32_t thread;
    bool is_write;
} cfault_fault;

/// Takes the next pending fault, marking it in service. Returns false when
/// none is pending. A page may be reported again (read then write, or a fault
/// that re-executed after an insufficient grant): the engine must treat a
/// fault on a page it already serves as "wait for that", not as a new request.
bool cfault_next_fault(cfault_fault *fault);

/// Wakes every thread waiting on `page_index` (pending or in service). Their
/// accesses re-execute; one that still lacks access faults again. Returns
/// the CPU on which a waiter that had not gone to sleep was last seen
/// spinning, or -1 if every waiter had gone to sleep.
/// If that is the caller's own CPU, the waiter is not running now: the
/// caller holds its CPU, and should give it up rather than poll.
int32_t cfault_complete_page(uint64_t page_index);

/// The CPU the calling thread runs on (-1 if unknown).
int32_t cfault_current_cpu(void);

/// How long a faulting thread spins for its page before it sleeps on a
/// futex (default 50 us; 0: sleep at once). Call before faults happen.
void cfault_set_spin_nanoseconds(uint64_t nanoseconds);

/// How many page ranges cfault_serve_pages can hold.
#define CFAULT_SERVED_RANGES 4

/// Restricts the fault path to allocated memory: from the first call on, a
/// fault on a page outside every range set here is refused (a message naming
/// the address and cfault_describe_allocations' text goes to stderr, then the
/// fault is passed on as a crash: SIGSEGV) instead of being handed to the
/// engine. Sets range `index` (< CFAULT_SERVED_RANGES) to pages
/// [first_page, end_page); an empty range serves nothing. Until the first
/// call every page of the region is served. Returns 0 or EINVAL.
int cfault_serve_pages(uint32_t index, uint64_t first_page, uint64_t end_page);

/// The text a refused fault prints after "allocated:" (the allocations that
/// exist); copied, cut at 2047 bytes.
void cfault_describe_allocations(const char *text, uint64_t length);

/// Touches one byte of every `unit`-byte page of [address, address+bytes)
/// in order: a load, or with `for_write` an atomic OR of 0 (a write that
/// changes nothing, even while other threads write the byte), so that every
/// page is accessible when it returns (the faults are served as usual).
/// System calls do not fault pages in for the process: read(2) into a page
/// without access returns EFAULT. `unit` is a power of two.
void cfault_touch(const void *address, uint64_t bytes, uint64_t unit, bool for_write);

/// A snapshot of the counters.
void cfault_get_statistics(cfault_statistics *out);

#ifdef __cplusplus
}
#endif

#endif
