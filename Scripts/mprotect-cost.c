// Cost of mprotect on one page of a memfd mapping, by direction, with no other
// thread, with a second thread that sleeps, and with one that spins on the other
// CPU (a downgrade must then interrupt that CPU to flush its TLB; an upgrade
// from PROT_NONE need not). Cited in Papers/ivy-remote-fault.md (record of 5bc0bfe).
// Build and run: cc -O2 Scripts/mprotect-cost.c -o /tmp/mprotect-cost -lpthread && /tmp/mprotect-cost
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#define N 2000
static _Atomic int stop; static char *region; static long pg;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
static void *spinner(void *a){ (void)a; while(!atomic_load(&stop)) { __builtin_ia32_pause(); } return 0; }
static void *sleeper(void *a){ (void)a; while(!atomic_load(&stop)) usleep(1000); return 0; }
static void run(const char *label, int from, int to){
    mprotect(region, N*pg, from);
    double t0=now();
    for(int i=1;i<N;i++) mprotect(region+i*pg, pg, to);
    printf("%-40s %6.2f us\n", label, (now()-t0)/(N-1)/1000);
}
int main(int argc,char**argv){
    pg=sysconf(_SC_PAGESIZE);
    int fd=memfd_create("x",0); ftruncate(fd,N*pg);
    region=mmap(0,N*pg,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0);
    memset(region,1,N*pg);
    run("single thread NONE->READ", PROT_NONE, PROT_READ);
    run("single thread WRITE->READ", PROT_READ|PROT_WRITE, PROT_READ);
    pthread_t t; pthread_create(&t,0,sleeper,0); usleep(10000);
    run("sleeping thread NONE->READ", PROT_NONE, PROT_READ);
    run("sleeping thread WRITE->READ", PROT_READ|PROT_WRITE, PROT_READ);
    run("sleeping thread READ->NONE", PROT_READ, PROT_NONE);
    atomic_store(&stop,1); pthread_join(t,0); atomic_store(&stop,0);
    mprotect(region, pg, PROT_READ);
    pthread_create(&t,0,spinner,0); usleep(10000);
    run("spinning thread NONE->READ", PROT_NONE, PROT_READ);
    run("spinning thread WRITE->READ", PROT_READ|PROT_WRITE, PROT_READ);
    run("spinning thread READ->NONE", PROT_READ, PROT_NONE);
    atomic_store(&stop,1); pthread_join(t,0);
    return 0;
}
