/* turingwatch intercepter: start-up, the lock, fork handling, and the exit report.
 *
 * One mutex guards the large-block bookkeeping (side table, pool, large statistics).  It is taken
 * only for requests at or above the threshold and for free() of pointers at page offset 0 or
 * WI_COLOUR (2 in 256 of glibc's), never on the small path, and no system call that can take
 * long (mmap, munmap, mremap) nor any memset runs under it.  So the library is not lock-free,
 * but the small path is: a few compares and a thread-local increment on top of glibc.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t wi_mutex = PTHREAD_MUTEX_INITIALIZER;
static int wi_init_state;  /* 0: not started, 1: in progress, 2: done */
int wi_ready;

void wi_lock(void) { pthread_mutex_lock(&wi_mutex); }
void wi_unlock(void) { pthread_mutex_unlock(&wi_mutex); }
bool wi_trylock(void) { return pthread_mutex_trylock(&wi_mutex) == 0; }

uint64_t wi_now_ns(void) {
  struct timespec ts;  /* the coarse clock is a vDSO read of a few ns; ms resolution is plenty */
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- fork: the child must not inherit the lock held by a thread that does not exist there ---- */

static void wi_fork_prepare(void) { wi_lock(); }
static void wi_fork_parent(void) { wi_unlock(); }
static void wi_fork_child(void) {
  wi_stats_reset();  /* the child reports only what it does itself */
  wi_unlock();       /* the forking thread is the owner, and it is the one thread left */
}

/* ---- start-up ---- */

/* Runs on the first hook call or from the constructor, whichever comes first.  A call made while
 * initialisation is under way (dlsym and pthread_atfork may allocate) returns at once: the hooks
 * then serve small requests from the bootstrap arena. */
void wi_ensure_init_slow(void) {
  int expected = 0;
  if (!__atomic_compare_exchange_n(&wi_init_state, &expected, 1, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return;
  long page = sysconf(_SC_PAGESIZE);
  if (page > 0) wi_page_bytes = (size_t)page;
  wi_options_init();
  wi_resolve();
  wi_stats_init();
  pthread_atfork(wi_fork_prepare, wi_fork_parent, wi_fork_child);
  __atomic_store_n(&wi_init_state, 2, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_ready, 1, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void wi_process_start(void) {
  wi_ensure_init();
}

/* Runs from exit() (through the dynamic loader's finaliser), not after _exit() or a fatal signal:
 * such processes leave no statistics file, and readers must cope with that. */
__attribute__((destructor)) static void wi_process_end(void) {
  wi_stats_write();
}

/* The exit report must not wait for ever on a lock held by a thread stopped mid-operation. */
bool wi_lock_for_report(void) {
  for (int i = 0; i < 1000; i++) {
    if (pthread_mutex_trylock(&wi_mutex) == 0) return true;
    sched_yield();
  }
  return false;
}
