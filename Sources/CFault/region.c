// The dual mapping of the shared region: one memfd, an application view at a
// fixed address whose protections the protocol changes, and a system view that
// is always writable so the engine can install pages without racing faults.
#define _GNU_SOURCE
#include "CFault.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

// Swift imports this struct; a silent layout change would corrupt both sides.
_Static_assert(sizeof(cfault_mapping) == 32, "cfault_mapping layout is shared with Swift");
_Static_assert(sizeof(cfault_statistics) == 32, "cfault_statistics layout is shared with Swift");

static int fail(cfault_mapping *out, cfault_map_step step, int error) {
    out->failed_step = step;
    return error;
}

int cfault_map(uintptr_t base, uint64_t size, cfault_mapping *out) {
    *out = (cfault_mapping){ .memfd = -1, .failed_step = CFAULT_STEP_NONE };
    int fd = memfd_create("plexus-region", MFD_CLOEXEC);
    if (fd < 0) return fail(out, CFAULT_STEP_MEMFD, errno);
    if (ftruncate(fd, (off_t)size) != 0) {
        int error = errno;
        close(fd);
        return fail(out, CFAULT_STEP_FTRUNCATE, error);
    }
    void *app = mmap((void *)base, size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (app == MAP_FAILED) {
        int error = errno;
        close(fd);
        return fail(out, CFAULT_STEP_MAP_APPLICATION, error);
    }
    // Kernels before 4.17 ignore the flag and treat the address as a hint.
    if ((uintptr_t)app != base) {
        munmap(app, size);
        close(fd);
        return fail(out, CFAULT_STEP_MAP_APPLICATION, EEXIST);
    }
    void *sys = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (sys == MAP_FAILED) {
        int error = errno;
        munmap(app, size);
        close(fd);
        return fail(out, CFAULT_STEP_MAP_SYSTEM, error);
    }
    // A forked child must not share the region: its writes would land in
    // the parent's pages past coherence, and its faults would ring the
    // parent's doorbell. Without the views, a child's access is refused by
    // the handler ("a forked child cannot use Plexus shared memory").
    if (madvise(app, size, MADV_DONTFORK) != 0 || madvise(sys, size, MADV_DONTFORK) != 0) {
        int error = errno;
        munmap(sys, size);
        munmap(app, size);
        close(fd);
        return fail(out, CFAULT_STEP_MADVISE, error);
    }
    out->application_view = app;
    out->system_view = sys;
    out->size = size;
    out->memfd = fd;
    return 0;
}

int cfault_unmap(cfault_mapping *mapping) {
    int result = 0;
    if (mapping->application_view && munmap(mapping->application_view, mapping->size) != 0) result = errno;
    if (mapping->system_view && munmap(mapping->system_view, mapping->size) != 0) result = errno;
    if (mapping->memfd >= 0 && close(mapping->memfd) != 0) result = errno;
    mapping->application_view = NULL;
    mapping->system_view = NULL;
    mapping->memfd = -1;
    return result;
}

int cfault_protect(void *address, uint64_t length, int32_t protection) {
    int prot;
    switch (protection) {
    case CFAULT_PROTECTION_NONE: prot = PROT_NONE; break;
    case CFAULT_PROTECTION_READ: prot = PROT_READ; break;
    case CFAULT_PROTECTION_READWRITE: prot = PROT_READ | PROT_WRITE; break;
    default: return EINVAL;
    }
    return mprotect(address, length, prot) == 0 ? 0 : errno;
}

void cfault_touch(const void *address, uint64_t bytes, uint64_t unit, bool for_write) {
    if (bytes == 0) return;
    uintptr_t first = (uintptr_t)address, last = first + bytes - 1;
    for (uintptr_t p = first; ; p = (p | (unit - 1)) + 1) {
        if (for_write) {
            /* A write access that changes nothing, even when another thread
             * writes the byte meanwhile: a compare-and-swap of the value with
             * itself, repeated until it succeeds (a successful one writes).
             * Not an atomic OR with 0: compilers turn that idempotent
             * read-modify-write into a plain load, which takes no write fault. */
            volatile uint8_t *b = (volatile uint8_t *)p;
            uint8_t v = __atomic_load_n(b, __ATOMIC_RELAXED);
            while (!__atomic_compare_exchange_n(b, &v, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
        } else {
            (void)*(volatile const uint8_t *)p;
        }
        if ((p | (unit - 1)) >= last) break;
    }
}
