/* turingwatch intercepter tests: a tiny check harness (the exit status is the failure count).
 *
 * The test programs are ordinary programs; meson runs them with the library in LD_PRELOAD, and
 * the sanitizer builds link the library in with WI_EMBED, where the functions are called wi_*.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef WI_CHECK_H
#define WI_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#ifdef WI_EMBED
#include <stddef.h>
void *wi_malloc(size_t);
void *wi_calloc(size_t, size_t);
void *wi_realloc(void *, size_t);
void wi_free(void *);
int wi_posix_memalign(void **, size_t, size_t);
void *wi_aligned_alloc(size_t, size_t);
void *wi_memalign(size_t, size_t);
size_t wi_malloc_usable_size(void *);
void *wi_reallocarray(void *, size_t, size_t);
void *wi_valloc(size_t);
void *wi_pvalloc(size_t);
#define T(name) wi_##name
#else
#define T(name) name
#endif

static int check_count, check_failures;

#define CHECK(expr)                                                                  \
  do {                                                                               \
    check_count++;                                                                   \
    if (!(expr)) {                                                                   \
      check_failures++;                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr);       \
    }                                                                                \
  } while (0)

#define RUN(test)                                                                    \
  do {                                                                               \
    int failures_before = check_failures;                                            \
    test();                                                                          \
    printf("%s %s\n", check_failures == failures_before ? "ok  " : "FAIL", #test);   \
  } while (0)

static int check_summary(void) {
  printf("%d checks, %d failed\n", check_count, check_failures);
  return check_failures ? 1 : 0;
}

#endif
