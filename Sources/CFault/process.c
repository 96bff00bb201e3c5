#define _GNU_SOURCE
#include <sys/prctl.h>
#include "CFaultProcess.h"

int cfault_set_parent_death_signal(int sig) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL);
}
