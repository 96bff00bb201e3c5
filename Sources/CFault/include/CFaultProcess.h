#ifndef CFAULT_PROCESS_H
#define CFAULT_PROCESS_H
/* Process-lifetime signal set-up that Swift cannot call itself (prctl is variadic). */

/* Asks the kernel to send `sig` to this process when its parent thread exits,
   so a job process never outlives the node daemon that started it.
   Returns 0, or -1 with errno set. */
int cfault_set_parent_death_signal(int sig);

#endif
