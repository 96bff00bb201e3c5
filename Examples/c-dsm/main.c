/* c-dsm: shared memory and locks from plain C.
 * Every rank increments one shared counter under a lock, and its own slot of
 * a shared array without one; after a barrier every rank hints that it will
 * read them (plexus_prefetch) and checks the totals. The last rank then
 * read()s from a pipe into shared memory, after plexus_touch (a system call
 * does not fault pages in: without it read() may fail with EFAULT).
 *   plexus run -n 4 .build/debug/c-dsm [increments] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "plexus.h"

#define CHECK(call)                                                          \
    do {                                                                     \
        if ((call) != 0) {                                                   \
            fprintf(stderr, "c-dsm: %s: %s\n", #call, plexus_last_error()); \
            return 1;                                                        \
        }                                                                    \
    } while (0)

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: plexus run -n N c-dsm [increments, default 100]: a shared counter under a lock and a slot per\n"
               "process, checked by every process; then read(2) into shared memory after plexus_touch\n");
        return 0;
    }
    long increments = argc > 1 ? atol(argv[1]) : 100;
    CHECK(plexus_init());
    int rank = plexus_rank(), size = plexus_size();
    /* counters[0]: the shared total; counters[1 + r]: rank r's own count. */
    volatile long *counters = plexus_alloc(sizeof(long) * (size_t)(size + 1), "counters");
    if (counters == NULL) {
        fprintf(stderr, "c-dsm: plexus_alloc: %s\n", plexus_last_error());
        return 1;
    }
    for (long i = 0; i < increments; i++) {
        CHECK(plexus_lock_acquire(0));
        counters[0] += 1;
        CHECK(plexus_lock_release(0));
        counters[1 + rank] += 1;
    }
    CHECK(plexus_barrier());
    /* A hint that this rank reads the counters next (they are on another
     * rank's page, probably); a hint outside the shared region is an error. */
    CHECK(plexus_prefetch((const void *)counters, sizeof(long) * (size_t)(size + 1), 0));
    long not_shared = 0;
    if (plexus_prefetch(&not_shared, sizeof not_shared, 0) == 0) {
        fprintf(stderr, "c-dsm: a prefetch of a stack address was accepted\n");
        return 1;
    }
    if (rank == 0) printf("rank 0: a prefetch outside shared memory is refused: %s\n", plexus_last_error());
    if (plexus_prefetch(NULL, 8, 1) == 0) {
        fprintf(stderr, "c-dsm: a prefetch of NULL was accepted\n");
        return 1;
    }
    /* read() into shared memory: touch the buffer for writing first. */
    enum { IO_BYTES = 6000 };
    unsigned char *io = plexus_alloc(2 * 4096, "io");
    if (io == NULL) {
        fprintf(stderr, "c-dsm: plexus_alloc: %s\n", plexus_last_error());
        return 1;
    }
    if (rank == size - 1) {
        static unsigned char pattern[IO_BYTES];
        for (int i = 0; i < IO_BYTES; i++) pattern[i] = (unsigned char)(i * 7 + 1);
        int fds[2];
        if (pipe(fds) != 0 || write(fds[1], pattern, IO_BYTES) != IO_BYTES) {
            perror("c-dsm: pipe");
            return 1;
        }
        CHECK(plexus_touch(io, IO_BYTES, 1));
        ssize_t got = 0;
        while (got < IO_BYTES) {
            ssize_t n = read(fds[0], io + got, (size_t)(IO_BYTES - got));
            if (n <= 0) break;
            got += n;
        }
        if (got != IO_BYTES || memcmp(io, pattern, IO_BYTES) != 0) {
            perror("c-dsm: read() into shared memory after plexus_touch");
            return 1;
        }
        printf("rank %d: read() of %d bytes into shared memory after plexus_touch\n", rank, IO_BYTES);
        close(fds[0]);
        close(fds[1]);
    }
    long expected = increments * size, sum = 0;
    for (int r = 0; r < size; r++) sum += counters[1 + r];
    int ok = counters[0] == expected && sum == expected;
    printf("rank %d: total %ld, sum of own counts %ld, expected %ld: %s\n", rank, counters[0], sum, expected,
           ok ? "PASS" : "FAIL");
    CHECK(plexus_finalize());
    return ok ? 0 : 1;
}
