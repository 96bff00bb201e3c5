#ifndef CFAULT_FLOOR_H
#define CFAULT_FLOOR_H
/* The cost of the cheapest fault path on this machine, for `plexus bench`:
   a read of a PROT_NONE page raises SIGSEGV and the handler serves it with
   one mprotect (../shared/floors/fault_floor.c, "in handler"). */

#include <stdint.h>

/* Maps `pages` private pages, then `rounds` times: protects them all
   (PROT_NONE, one call) and reads one byte of each, every read a SIGSEGV
   whose handler makes that page readable and writable. Writes the mean
   nanoseconds per fault of each round to `round_nanoseconds` (`rounds`
   entries). While it measures, a second thread of the process spins on
   another CPU, as a process's engine or reader thread may: an mprotect
   then also pays the TLB shootdown it pays in any multi-threaded process.
   The SIGSEGV handler in force before is restored before it returns (and at
   once if a SIGSEGV outside the pages arrives, which then reaches it).
   Not reentrant: one call at a time per process, and not in a process
   whose shared region is installed. Returns 0, or an errno. */
int cfault_measure_fault_cost(uint32_t pages, uint32_t rounds, double *round_nanoseconds);

#endif
