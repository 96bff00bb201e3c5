// Cost of mprotect on one page of a memfd mapping, by how the mapping is laid
// out in VMAs: one linear mapping, where changing one page's protection splits
// or merges VMAs, against one VMA per page whose neighbours can never merge
// (every other page carries MADV_NOHUGEPAGE, so adjacent VMAs differ in flags).
// "seq" changes pages in address order (each joins its left neighbour); "alt"
// changes every other page and back (a split and a merge each time). A second
// thread that sleeps is started first, as in a Plexus process.
// Cited in Papers/ivy-remote-fault.md (record of 9441081).
// Build and run: cc -O2 Scripts/mprotect-layout.c -o /tmp/mprotect-layout -lpthread && /tmp/mprotect-layout
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N 4000
static _Atomic int stop;
static char *region;
static long pg;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static void *sleeper(void *a) { (void)a; while (!atomic_load(&stop)) usleep(1000); return 0; }
static void set(int i, int prot) { if (mprotect(region + (long)i * pg, pg, prot) != 0) { perror("mprotect"); exit(1); } }

static double seq(int from, int to) {
    for (int i = 0; i < N; i++) set(i, from);
    double t0 = now();
    for (int i = 1; i < N - 1; i++) set(i, to);
    return (now() - t0) / (N - 2) / 1000;
}

static double alt(int base, int to) {
    for (int i = 0; i < N; i++) set(i, base);
    double t0 = now();
    for (int i = 1; i < N - 1; i += 2) set(i, to);
    for (int i = 1; i < N - 1; i += 2) set(i, base);
    return (now() - t0) / (N - 2) / 1000;
}

int main(void) {
    pg = sysconf(_SC_PAGESIZE);
    int fd = memfd_create("layout", 0);
    if (fd < 0 || ftruncate(fd, (long)N * pg) != 0) { perror("memfd"); return 1; }
    pthread_t t;
    pthread_create(&t, 0, sleeper, 0);
    usleep(10000);
    const int RW = PROT_READ | PROT_WRITE;
    printf("%-14s %12s %12s %12s %12s %12s   (us per mprotect)\n", "layout", "seq N->R", "seq RW->R", "seq R->N", "alt N<->R", "alt RW<->R");
    for (int mode = 0; mode < 2; mode++) {
        region = mmap(0, (long)N * pg, RW, MAP_SHARED, fd, 0);
        if (region == MAP_FAILED) { perror("mmap"); return 1; }
        if (mode == 1)
            for (long i = 0; i < N; i += 2)
                if (madvise(region + i * pg, pg, MADV_NOHUGEPAGE) != 0) { perror("madvise"); return 1; }
        memset(region, 1, (long)N * pg);
        for (int r = 0; r < 2; r++)
            printf("%-14s %12.2f %12.2f %12.2f %12.2f %12.2f\n", mode ? "per-page VMAs" : "linear",
                   seq(PROT_NONE, PROT_READ), seq(RW, PROT_READ), seq(PROT_READ, PROT_NONE), alt(PROT_NONE, PROT_READ), alt(RW, PROT_READ));
        munmap(region, (long)N * pg);
    }
    atomic_store(&stop, 1);
    pthread_join(t, 0);
    return 0;
}
