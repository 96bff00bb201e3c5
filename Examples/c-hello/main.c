/* c-hello: a plain C program on Plexus.
 *   plexus run -n 4 .build/debug/c-hello */
#include <stdio.h>
#include <string.h>
#include "plexus.h"

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: plexus run -n N c-hello: each process prints its rank, the job size and its global PID\n");
        return 0;
    }
    if (plexus_init() != 0) {
        fprintf(stderr, "c-hello: %s\n", plexus_last_error());
        return 1;
    }
    printf("hello from rank %d of %d (global PID %llu)\n", plexus_rank(), plexus_size(),
           (unsigned long long)plexus_pid());
    if (plexus_barrier() != 0 || plexus_finalize() != 0) {
        fprintf(stderr, "c-hello: %s\n", plexus_last_error());
        return 1;
    }
    return 0;
}
