// cfault_measure_fault_cost: see CFaultFloor.h. The handler is
// async-signal-safe: it reads static words written before it was installed
// and calls mprotect and sigaction only.
#define _GNU_SOURCE
#include "CFaultFloor.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static char *volatile floor_base;
static volatile uintptr_t floor_size;
static volatile uintptr_t floor_page;
static struct sigaction floor_previous;
static _Atomic int floor_stop;

static void floor_handler(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    uintptr_t address = (uintptr_t)info->si_addr, base = (uintptr_t)floor_base;
    if (address >= base && address - base < floor_size) {
        mprotect((void *)(address & ~(floor_page - 1)), floor_page, PROT_READ | PROT_WRITE);
        return;
    }
    // Not ours: the previous handler takes it when the access re-executes.
    sigaction(SIGSEGV, &floor_previous, NULL);
}

static void *floor_spinner(void *unused) {
    (void)unused;
    while (!atomic_load_explicit(&floor_stop, memory_order_relaxed)) __builtin_ia32_pause();
    return NULL;
}

static double floor_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int cfault_measure_fault_cost(uint32_t pages, uint32_t rounds, double *round_nanoseconds) {
    if (pages == 0 || rounds == 0 || round_nanoseconds == NULL) return EINVAL;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return EINVAL;
    size_t size = (size_t)pages * (size_t)page;
    char *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return errno;
    memset(memory, 1, size); // the page frames exist before the first round
    floor_page = (uintptr_t)page;
    floor_size = size;
    floor_base = memory;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = floor_handler;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    int error = 0;
    if (sigaction(SIGSEGV, &action, &floor_previous) != 0) {
        error = errno;
        munmap(memory, size);
        return error;
    }
    atomic_store(&floor_stop, 0);
    pthread_t spinner;
    int spin_error = pthread_create(&spinner, NULL, floor_spinner, NULL);
    if (spin_error != 0) error = spin_error;
    for (uint32_t round = 0; round < rounds && error == 0; round++) {
        if (mprotect(memory, size, PROT_NONE) != 0) {
            error = errno;
            break;
        }
        double start = floor_now();
        for (uint32_t i = 0; i < pages; i++) (void)*(volatile char *)(memory + (size_t)i * (size_t)page);
        round_nanoseconds[round] = (floor_now() - start) / pages;
    }
    if (spin_error == 0) {
        atomic_store(&floor_stop, 1);
        pthread_join(spinner, NULL);
    }
    sigaction(SIGSEGV, &floor_previous, NULL);
    floor_size = 0;
    munmap(memory, size);
    return error;
}
