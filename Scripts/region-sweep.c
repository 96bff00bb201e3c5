// Measurement for Papers/ivy-remote-fault.md (record of 592a3a7); not part of
// Plexus. Is the Jacobi sweep slower on a region mapped the way cfault_map
// maps it, and how far do two halves of the grid run in parallel?
//
// First the whole 2048x2048 grid on private memory in one process, then two
// processes at once, each sweeping its half (rows 1-1023, 1024-2046) on
// private memory, on its own memfd region mapped like Plexus's (application
// view PROT_NONE at a fixed base, a second read-write view, every page
// opened by its own mprotect), and on private memory again. Prints the
// fastest of 50 iterations of each.
//
//   cc -O3 -march=native Scripts/region-sweep.c -o /tmp/region-sweep && /tmp/region-sweep
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { N = 2048, ITERATIONS = 50 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

// Fastest iteration in microseconds; the same loop as Jacobi.sweep.
static double sweep(double *s, double *d, int lo, int hi) {
    double best = 1e9;
    for (int k = 0; k < ITERATIONS; k++) {
        double t0 = now();
        for (int i = lo; i < hi; i++) {
            double *up = s + (i - 1) * N, *mid = s + i * N, *dn = s + (i + 1) * N, *o = d + i * N;
            o[0] = mid[0];
            for (int j = 1; j < N - 1; j++) o[j] = 0.25 * ((up[j] + dn[j]) + (mid[j - 1] + mid[j + 1]));
            o[N - 1] = mid[N - 1];
        }
        double *t = s; s = d; d = t;
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best * 1e6;
}

int main(void) {
    size_t grid = (size_t)N * N * sizeof(double);
    double *pa = malloc(grid), *pb = malloc(grid);
    if (!pa || !pb) return 1;
    memset(pa, 0, grid);
    memset(pb, 0, grid);
    printf("whole grid, one process, private memory: %.0f us per iteration\n", sweep(pa, pb, 1, N - 1));
    fflush(stdout);

    pid_t child = fork();
    int lo = child ? N / 2 : 1, hi = child ? N - 1 : N / 2;
    int fd = memfd_create("region-sweep", MFD_CLOEXEC);
    size_t size = 1ul << 30;
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return 1;
    char *app = mmap((void *)0x500000000000, size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    char *sys = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (app == MAP_FAILED || sys == MAP_FAILED) return 1;
    double *a = (double *)app, *b = (double *)(app + grid);
    for (int i = lo - 1; i <= hi; i++) {
        for (size_t off = 0; off < N * sizeof(double); off += 4096) {
            mprotect((char *)(a + i * N) + off, 4096, PROT_READ | PROT_WRITE);
            mprotect((char *)(b + i * N) + off, 4096, PROT_READ | PROT_WRITE);
        }
        memset(a + i * N, 0, N * sizeof(double));
        memset(b + i * N, 0, N * sizeof(double));
    }
    double p1 = sweep(pa, pb, lo, hi), r = sweep(a, b, lo, hi), p2 = sweep(pa, pb, lo, hi);
    printf("rows %4d-%4d, two processes at once: private %.0f us, region %.0f us, private again %.0f us\n",
           lo, hi - 1, p1, r, p2);
    if (child) wait(NULL);
    return 0;
}
