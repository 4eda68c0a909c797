/* turingwatch intercepter: the recycle pool of freed large blocks.
 *
 * A small array ordered from the oldest to the newest pooled block, under wi_lock.  A request
 * takes the newest block of exactly its size class (the one most likely still in cache).  The
 * pool is bounded by count and by bytes: a block that does not fit pushes out the oldest ones, and
 * blocks unused for longer than the idle time are given back on the next large operation.  The
 * caller unmaps the victims after releasing the lock.  Pooled pages stay resident: not faulting
 * them in again is the whole point.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

typedef struct wi_pooled_s {
  wi_span_t span;
  uint64_t pooled_ns;
} wi_pooled_t;

static wi_pooled_t wi_pool[WI_POOL_CAPACITY];
static size_t wi_pool_count;
static uint64_t wi_next_expiry_ns = UINT64_MAX;  /* oldest entry + idle time; relaxed reads */

static void wi_pool_removed(size_t i) {
  wi_stats.pool_bytes -= wi_pool[i].span.len;
  wi_stats.pool_blocks--;
  memmove(&wi_pool[i], &wi_pool[i + 1], (wi_pool_count - i - 1) * sizeof wi_pool[0]);
  wi_pool_count--;
}

static void wi_pool_update_expiry(void) {
  uint64_t next = UINT64_MAX;
  if (wi_pool_count && wi_options.idle_ns) next = wi_pool[0].pooled_ns + wi_options.idle_ns;
  wi_relaxed_store(&wi_next_expiry_ns, next);
}

uintptr_t wi_pool_take(size_t len) {
  for (size_t i = wi_pool_count; i-- > 0;) {
    if (wi_pool[i].span.len != len) continue;
    uintptr_t base = wi_pool[i].span.base;
    wi_pool_removed(i);
    wi_pool_update_expiry();
    wi_pool_unpoison((wi_span_t){base, len});
    return base;
  }
  return 0;
}

size_t wi_pool_put(wi_span_t span, uint64_t now_ns, wi_span_t victims[WI_EVICT_BATCH]) {
  size_t max_blocks = wi_options.pool_max_blocks, max_bytes = wi_options.pool_max_bytes;
  size_t evict = 0, freed_bytes = 0;
  /* How many of the oldest blocks must go for this one to fit? */
  while (evict < wi_pool_count && evict < WI_EVICT_BATCH &&
         (wi_pool_count - evict + 1 > max_blocks ||
          wi_stats.pool_bytes - freed_bytes + span.len > max_bytes))
    freed_bytes += wi_pool[evict++].span.len;
  bool fits = wi_pool_count - evict + 1 <= max_blocks &&
              wi_stats.pool_bytes - freed_bytes + span.len <= max_bytes;
  if (!fits) {  /* too big for the pool, or more evictions than one call may do */
    victims[0] = span;
    return 1;
  }
  for (size_t i = 0; i < evict; i++) {
    victims[i] = wi_pool[0].span;
    wi_pool_removed(0);
    wi_stats.evictions++;
  }
  wi_pool_poison(span);
  wi_pool[wi_pool_count++] = (wi_pooled_t){span, now_ns};
  wi_stats.pool_bytes += span.len;
  wi_stats.pool_blocks++;
  if (wi_stats.pool_bytes > wi_stats.peak_pool_bytes) wi_stats.peak_pool_bytes = wi_stats.pool_bytes;
  if (wi_stats.pool_blocks > wi_stats.peak_pool_blocks)
    wi_stats.peak_pool_blocks = wi_stats.pool_blocks;
  wi_pool_update_expiry();
  return evict;
}

size_t wi_pool_expire(uint64_t now_ns, wi_span_t *victims, size_t room) {
  size_t n = 0;
  while (n < room && wi_pool_count && wi_options.idle_ns &&
         now_ns - wi_pool[0].pooled_ns >= wi_options.idle_ns) {
    victims[n++] = wi_pool[0].span;
    wi_pool_removed(0);
    wi_stats.idle_releases++;
  }
  wi_pool_update_expiry();
  return n;
}

uint64_t wi_pool_next_expiry_ns(void) {
  return wi_relaxed_load(&wi_next_expiry_ns);
}

/* Under AddressSanitizer (the test builds) a pooled block is poisoned, so a use after free of a
 * recycled block is reported instead of silently scribbling on the next owner's data. */
void wi_pool_poison(wi_span_t span) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_POISON_MEMORY_REGION((void *)span.base, span.len);
#else
  (void)span;
#endif
}

void wi_pool_unpoison(wi_span_t span) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION((void *)span.base, span.len);
#else
  (void)span;
#endif
}
