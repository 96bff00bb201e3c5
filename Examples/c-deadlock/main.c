/* c-deadlock: a lock-order inversion in C, found and resolved by Plexus.
 *   plexus run -n 2 .build/debug/c-deadlock
 * Rank 0 takes lock 1 then lock 2, rank 1 lock 2 then lock 1. One of them
 * (the highest global PID) is the deadlock's victim: its
 * plexus_lock_acquire returns -1 and plexus_last_error() names the cycle;
 * it releases its first lock and the other gets both. */
#include <stdio.h>
#include <string.h>
#include "plexus.h"

#define CHECK(call)                                                         \
    do {                                                                    \
        if ((call) != 0) {                                                  \
            fprintf(stderr, "c-deadlock: %s: %s\n", #call, plexus_last_error()); \
            return 1;                                                       \
        }                                                                   \
    } while (0)

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: plexus run -n 2 c-deadlock: two processes take two locks in opposite order; Plexus finds\n"
               "the deadlock, one acquire returns -1 naming the cycle, and the other process goes on\n");
        return 0;
    }
    CHECK(plexus_init());
    int rank = plexus_rank();
    if (plexus_size() != 2) {
        fprintf(stderr, "c-deadlock: run it with -n 2\n");
        return 2;
    }
    int first = rank == 0 ? 1 : 2, second = rank == 0 ? 2 : 1;
    CHECK(plexus_lock_acquire(first));
    unsigned long long first_token = (unsigned long long)plexus_lock_token(first);
    /* Both hold their first lock before either asks for the second. */
    CHECK(plexus_barrier());
    int victim = 0;
    if (plexus_lock_acquire(second) != 0) {
        victim = 1;
        printf("victim: plexus_lock_acquire returned -1: %s\n", plexus_last_error());
        if (plexus_lock_token(second) != 0) printf("FAIL: the victim holds lock %d\n", second);
    } else {
        printf("got lock %d with token %llu (lock %d with token %llu)\n", second,
               (unsigned long long)plexus_lock_token(second), first, first_token);
        CHECK(plexus_lock_release(second));
    }
    CHECK(plexus_lock_release(first));
    fflush(stdout);
    CHECK(plexus_barrier());
    if (rank == 0) printf("PASS: rank 0 was %s\n", victim ? "the victim" : "not the victim");
    CHECK(plexus_finalize());
    return 0;
}
