#ifndef CFAULT_PROCESS_H
#define CFAULT_PROCESS_H
/* Process set-up that Swift cannot call itself (prctl is variadic; the
   cpu_set_t macros are not imported). */

/* Asks the kernel to send `sig` to this process when its parent thread exits,
   so a job process never outlives the node daemon that started it.
   Returns 0, or -1 with errno set. */
int cfault_set_parent_death_signal(int sig);

/* The CPUs the calling thread may run on, in increasing order: writes at most
   `capacity` of them to `cpus` and returns how many it wrote, or -1 with
   errno set. */
int cfault_allowed_cpus(int *cpus, int capacity);

/* Restricts the calling thread (not the whole process) to CPU `cpu`; threads
   it creates afterwards inherit that. Returns 0, or -1 with errno set. */
int cfault_bind_current_thread(int cpu);

/* Makes the calling thread SCHED_OTHER with nice value `nice`, reset on fork,
   and asks for a time slice of `slice_ns` (sched_setattr's sched_runtime,
   which Linux 6.12 and later use as the EEVDF slice of an ordinary thread:
   a shorter slice lets it preempt sooner when it wakes). Returns 0, or -1
   with errno set. */
int cfault_set_ordinary_thread(int nice, unsigned long long slice_ns);

/* Waits until process `pid` (any process, not only a child) has exited, at
   most `timeout_ms` milliseconds (-1: no limit), with a pidfd. Returns 0 once
   it has exited (or if there is no such process), 1 if the time ran out,
   -1 with errno set if it cannot wait (ENOSYS before Linux 5.3). */
int cfault_wait_for_exit(int pid, int timeout_ms);

#endif
