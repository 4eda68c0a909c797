/* turingwatch intercepter tests: fork() while other threads hold the library's lock.
 *
 * Worker threads churn large blocks (taking the lock all the time) while the main thread forks.
 * Without the atfork handlers a child would inherit the lock held by a thread that does not
 * exist in it and hang on its first large allocation; meson's timeout turns that into a failure.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)

static int stop;  /* atomic */

static void *churn(void *arg) {
  size_t size = (size_t)(uintptr_t)arg;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    unsigned char *p = malloc(size);
    p[0] = p[size - 1] = 1;
    free(p);
  }
  return NULL;
}

int main(void) {
  pthread_t threads[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&threads[i], NULL, churn, (void *)(uintptr_t)((size_t)(i + 1) * MiB));
  unsigned char *before = malloc(2 * MiB);  /* the child frees a block made before the fork */
  memset(before, 7, 2 * MiB);
  for (int round = 0; round < 50; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      int ok = before[2 * MiB - 1] == 7;
      free(before);
      for (int i = 0; i < 20; i++) {
        unsigned char *p = malloc(3 * MiB), *q = malloc(64);
        ok = ok && p && q;
        memset(p, i, 3 * MiB);
        free(q);
        free(p);
      }
      _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  CHECK(before[0] == 7);
  free(before);
  return check_summary();
}
