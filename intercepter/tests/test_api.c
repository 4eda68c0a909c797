/* turingwatch intercepter tests: every exported function, with its edge cases.
 *
 * Runs with the library preloaded (or linked in, WI_EMBED) and its default options (threshold
 * 128 KiB).  The first test proves that the library really is in charge: glibc's large blocks
 * start 16 bytes into a page, ours 256 (WI_COLOUR), in a mapping with a spare page.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static size_t page;
/* Through a volatile, so the compiler does not warn about (or fold) the absurd sizes. */
static volatile size_t huge_count = SIZE_MAX / 2, size_max = SIZE_MAX, bits33 = (size_t)1 << 33;

static int aligned(const void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

/* A block of ours with the default alignment, and its usable size for a size class. */
static int ours(const void *p) { return p != NULL && ((uintptr_t)p & (page - 1)) == 256; }
static size_t usable_for(size_t class_bytes) { return class_bytes + page - 256; }

static void fill(unsigned char *p, size_t n, unsigned char seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int filled(const unsigned char *p, size_t n, unsigned char seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed + i * 7)) return 0;
  return 1;
}

static int zeroed(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static void test_large_blocks_come_from_the_library(void) {
  void *p = T(malloc)(MiB);
  CHECK(ours(p));                                   /* glibc's mmapped chunks sit 16 bytes in */
  CHECK(T(malloc_usable_size)(p) == usable_for(MiB));  /* its size class, plus the spare page */
  fill(p, MiB, 1);
  CHECK(filled(p, MiB, 1));
  T(free)(p);
  void *small = T(malloc)(100);
  CHECK(small != NULL && aligned(small, 16) && T(malloc_usable_size)(small) >= 100);
  T(free)(small);
}

static void test_freed_block_is_recycled_for_its_size_class(void) {
  unsigned char *p = T(malloc)(4 * MiB);
  fill(p, 4 * MiB, 2);
  T(free)(p);
  unsigned char *q = T(malloc)(4 * MiB - 1000);  /* same class: the same block comes back */
  CHECK(q == p);
  unsigned char *r = T(malloc)(4 * MiB - 1000);  /* pool now empty for the class: a new block */
  CHECK(r != NULL && r != q);
  T(free)(q);
  T(free)(r);
}

static void test_malloc_zero_and_huge(void) {
  void *p = T(malloc)(0);
  CHECK(p != NULL);
  T(free)(p);
  errno = 0;
  CHECK(T(malloc)(size_max) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(T(malloc)(huge_count) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(T(malloc)((size_t)1 << 46) == NULL && errno == ENOMEM);  /* 64 TiB: no mapping for that */
  T(free)(NULL);
}

static void test_calloc_zeroes_recycled_blocks(void) {
  unsigned char *p = T(malloc)(2 * MiB);
  memset(p, 0xab, 2 * MiB);
  T(free)(p);
  unsigned char *q = T(calloc)(1, 2 * MiB);
  CHECK(q == p);
  CHECK(zeroed(q, 2 * MiB));
  T(free)(q);
  unsigned char *fresh = T(calloc)(3, MiB + 5);
  CHECK(fresh != NULL && zeroed(fresh, 3 * (MiB + 5)));
  T(free)(fresh);
  unsigned char *small = T(calloc)(10, 10);
  CHECK(small != NULL && zeroed(small, 100));
  T(free)(small);
  void *none = T(calloc)(0, 0);
  CHECK(none != NULL);
  T(free)(none);
}

static void test_calloc_overflow(void) {
  errno = 0;
  CHECK(T(calloc)(huge_count, 3) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(T(calloc)(bits33, bits33) == NULL && errno == ENOMEM);
}

static void test_realloc_null_and_zero(void) {
  unsigned char *p = T(realloc)(NULL, 200 * KiB);
  CHECK(ours(p));
  fill(p, 200 * KiB, 3);
  CHECK(T(realloc)(p, 0) == NULL);  /* glibc semantics: frees p */
  unsigned char *q = T(malloc)(200 * KiB);
  CHECK(q == p);                 /* ... so the block went back to the pool */
  T(free)(q);
}

static void test_realloc_small_to_large_and_back(void) {
  unsigned char *p = T(malloc)(1000);
  fill(p, 1000, 4);
  p = T(realloc)(p, 3 * MiB);
  CHECK(ours(p) && filled(p, 1000, 4));
  fill(p, 3 * MiB, 5);
  p = T(realloc)(p, 500);
  CHECK(p != NULL && filled(p, 500, 5));
  CHECK(T(malloc_usable_size)(p) < 128 * KiB);  /* a glibc block again */
  T(free)(p);
}

static void test_realloc_large_grow_and_shrink(void) {
  unsigned char *p = T(malloc)(MiB + 1);  /* class 1.125 MiB */
  fill(p, MiB + 1, 6);
  unsigned char *same = T(realloc)(p, MiB + 100 * KiB);
  CHECK(same == p && filled(same, MiB + 1, 6));  /* fits the class: in place */
  unsigned char *grown = T(realloc)(same, 64 * MiB);
  CHECK(ours(grown) && filled(grown, MiB + 1, 6));
  CHECK(T(malloc_usable_size)(grown) == usable_for(64 * MiB));
  fill(grown, 64 * MiB, 7);
  unsigned char *shrunk = T(realloc)(grown, 8 * MiB);  /* by half or more: the tail goes back */
  CHECK(shrunk == grown && filled(shrunk, 8 * MiB, 7));
  CHECK(T(malloc_usable_size)(shrunk) == usable_for(8 * MiB));
  T(free)(shrunk);
}

/* A failed realloc leaves the block valid; GCC's use-after-free warning assumes otherwise. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
static void test_realloc_failure_keeps_the_block(void) {
  unsigned char *p = T(malloc)(300 * KiB);
  fill(p, 300 * KiB, 8);
  errno = 0;
  CHECK(T(realloc)(p, size_max - 4096) == NULL && errno == ENOMEM);
  CHECK(filled(p, 300 * KiB, 8));
  errno = 0;
  CHECK(T(reallocarray)(p, huge_count, 4) == NULL && errno == ENOMEM);
  CHECK(filled(p, 300 * KiB, 8));
  T(free)(p);
}
#pragma GCC diagnostic pop

static void test_posix_memalign(void) {
  void *p = NULL;
  CHECK(T(posix_memalign)(&p, 3, 64) == EINVAL);
  CHECK(T(posix_memalign)(&p, 0, 64) == EINVAL);
  CHECK(T(posix_memalign)(&p, sizeof(void *) / 2, 64) == EINVAL);
  errno = 1234;
  CHECK(T(posix_memalign)(&p, 64, 100) == 0 && aligned(p, 64));
  T(free)(p);
  CHECK(T(posix_memalign)(&p, MiB, 3 * MiB) == 0 && aligned(p, MiB));
  CHECK(T(malloc_usable_size)(p) >= 3 * MiB);
  fill(p, 3 * MiB, 9);
  CHECK(filled(p, 3 * MiB, 9));
  T(free)(p);
  CHECK(T(posix_memalign)(&p, MiB, 3 * MiB) == 0 && aligned(p, MiB));  /* from the pool, aligned */
  fill(p, 3 * MiB, 10);
  p = T(realloc)(p, 10 * MiB);  /* over-aligned blocks are copied, not remapped */
  CHECK(ours(p) && filled(p, 3 * MiB, 10));
  T(free)(p);
  CHECK(T(posix_memalign)(&p, 64, SIZE_MAX / 2) == ENOMEM);
  CHECK(errno == 1234);  /* posix_memalign reports through its result only */
}

static void test_aligned_alloc_memalign_valloc_pvalloc(void) {
  void *p = T(aligned_alloc)(64, 100);
  CHECK(p != NULL && aligned(p, 64));
  T(free)(p);
  errno = 0;
  CHECK(T(aligned_alloc)(48, 96) == NULL && errno == EINVAL);
  p = T(aligned_alloc)(2 * MiB, 2 * MiB);
  CHECK(p != NULL && aligned(p, 2 * MiB));
  T(free)(p);
  p = T(memalign)(48, 100);  /* glibc rounds the alignment up to 64 */
  CHECK(p != NULL && aligned(p, 64));
  T(free)(p);
  p = T(memalign)(4 * KiB, 256 * KiB);
  CHECK(p != NULL && aligned(p, 4 * KiB) && T(malloc_usable_size)(p) >= 256 * KiB);
  T(free)(p);
  errno = 0;
  CHECK(T(memalign)(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL);
  p = T(valloc)(10);
  CHECK(p != NULL && aligned(p, page));
  T(free)(p);
  p = T(valloc)(MiB);
  CHECK(p != NULL && aligned(p, page));
  T(free)(p);
  p = T(pvalloc)(1);
  CHECK(p != NULL && aligned(p, page) && T(malloc_usable_size)(p) >= page);
  T(free)(p);
  errno = 0;
  CHECK(T(pvalloc)(size_max - 10) == NULL && errno == ENOMEM);
}

static void test_malloc_usable_size(void) {
  CHECK(T(malloc_usable_size)(NULL) == 0);
  void *p = T(malloc)(130 * KiB);  /* 132 KiB of pages, then the next 16 KiB step: 144 KiB */
  CHECK(T(malloc_usable_size)(p) == usable_for(144 * KiB));
  memset(p, 1, T(malloc_usable_size)(p));  /* all of it is really usable */
  T(free)(p);
}

static void test_free_keeps_errno(void) {
  void *large = T(malloc)(MiB), *small = T(malloc)(10);
  errno = 4321;
  T(free)(large);
  T(free)(small);
  CHECK(errno == 4321);
}

static void test_pool_is_bounded_and_keeps_the_newest(void) {
  /* 1.3 GB of blocks (never touched, so never resident) against the default caps of 64 blocks
   * and 512 MiB: the oldest are unmapped, the newest is reused. */
  void *blocks[100];
  for (int i = 0; i < 100; i++) blocks[i] = T(malloc)((size_t)(i + 1) * 256 * KiB);
  for (int i = 0; i < 100; i++) T(free)(blocks[i]);
  void *newest = T(malloc)(100 * 256 * KiB);
  CHECK(newest == blocks[99]);
  T(free)(newest);
}

int main(void) {
  page = (size_t)sysconf(_SC_PAGESIZE);
  RUN(test_large_blocks_come_from_the_library);
  RUN(test_freed_block_is_recycled_for_its_size_class);
  RUN(test_malloc_zero_and_huge);
  RUN(test_calloc_zeroes_recycled_blocks);
  RUN(test_calloc_overflow);
  RUN(test_realloc_null_and_zero);
  RUN(test_realloc_small_to_large_and_back);
  RUN(test_realloc_large_grow_and_shrink);
  RUN(test_realloc_failure_keeps_the_block);
  RUN(test_posix_memalign);
  RUN(test_aligned_alloc_memalign_valloc_pvalloc);
  RUN(test_malloc_usable_size);
  RUN(test_free_keeps_errno);
  RUN(test_pool_is_bounded_and_keeps_the_newest);
  return check_summary();
}
