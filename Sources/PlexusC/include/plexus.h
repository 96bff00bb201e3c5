/* plexus.h: the C API of Plexus. Link with -lPlexusC.
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
/* Leaves the job: waits for every process, then disconnects. */
int plexus_finalize(void);
/* The message of the last error in this thread, or "" if none. */
const char *plexus_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
