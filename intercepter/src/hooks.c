/* turingwatch intercepter: the exported malloc family.  The only file that defines libc names.
 *
 * The fast path comes first in every function: a small request goes straight to the next
 * allocator.  Large requests go to large.c, and fall back to the next allocator if we cannot map
 * (so the job never fails where it would not have failed without us).  A pointer is ours if it
 * is in the side table, an arena pointer if it lies in the bootstrap arena, and glibc's otherwise.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <errno.h>
#include <malloc.h>
#include <string.h>

/* Declared here for the WI_EMBED builds, where they are not libc's names. */
void *WI_HOOK(malloc)(size_t size);
void WI_HOOK(free)(void *p);
void *WI_HOOK(realloc)(void *p, size_t size);

#define wi_real_fn(name) __atomic_load_n(&wi_real.name, __ATOMIC_ACQUIRE)

static size_t wi_min(size_t a, size_t b) { return a < b ? a : b; }
static bool wi_is_pow2(size_t x) { return x && !(x & (x - 1)); }
static bool wi_is_large(size_t size) { return size >= wi_options.threshold_bytes; }

/* Before dlsym has found the next allocator: the arena, and our own mappings once it is full. */
static void *wi_bootstrap_alloc(size_t size, size_t align) {
  void *p = wi_arena_alloc(size, align);
  if (p == NULL) p = wi_large_alloc(size ? size : 1, align, true);
  if (p == NULL) errno = ENOMEM;
  return p;
}

static void wi_count_small_alloc(void) {
  if (wi_unlikely(wi_stats_count_small(true))) wi_large_tick();
}

/* A large request we could not map (address space or map count exhausted) goes to the next
 * allocator, which then decides, and sets errno, as it would have without us. */
static void *wi_fallback(size_t size, size_t align, bool zero) {
  void *(*real_malloc)(size_t) = wi_real_fn(malloc);
  if (real_malloc == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  if (zero) return wi_real_fn(calloc)(1, size);
  if (align > 16) return wi_real_fn(memalign)(align, size);
  return real_malloc(size);
}

static void *wi_large_or_fallback(size_t size, size_t align, bool zero) {
  if (size > PTRDIFF_MAX) {  /* no allocator can serve it (glibc says the same) */
    errno = ENOMEM;
    return NULL;
  }
  void *p = wi_large_alloc(size, align, zero);
  return p ? p : wi_fallback(size, align, zero);
}

/* glibc's memalign rules: alignments up to 16 are plain malloc, others round up to a power of 2. */
static void *wi_aligned(size_t align, size_t size) {
  wi_ensure_init();
  if (align <= 16) return WI_HOOK(malloc)(size);
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  if (!wi_is_pow2(align)) align = (size_t)1 << (64 - __builtin_clzll(align));
  if (wi_likely(!wi_is_large(size))) {
    void *(*real)(size_t, size_t) = wi_real_fn(memalign);
    if (wi_unlikely(real == NULL)) return wi_bootstrap_alloc(size, align);
    wi_count_small_alloc();
    return real(align, size);
  }
  return wi_large_or_fallback(size, align, false);
}

/* ---- the exported functions ---- */

/* malloc and free have a fast path without a stack frame: a small request from a thread
 * already set up, in a call that is not a housekeeping tick, goes straight to the next allocator
 * (a tail call).  Everything else takes the slow path, which does the same work the long way. */

__attribute__((noinline)) static void *wi_malloc_slow(size_t size) {
  wi_ensure_init();
  if (wi_is_large(size)) return wi_large_or_fallback(size, 0, false);
  void *(*real)(size_t) = wi_real_fn(malloc);
  if (wi_unlikely(real == NULL)) return wi_bootstrap_alloc(size, 16);
  wi_count_small_alloc();
  return real(size);
}

wi_export void *WI_HOOK(malloc)(size_t size) {
  void *(*real)(size_t) = wi_real_fn(malloc);
  if (wi_likely(real != NULL && !wi_is_large(size) && wi_counts.registered &&
                ((wi_counts.allocs + 1) & 4095) != 0)) {
    wi_counts.allocs++;
    return real(size);
  }
  return wi_malloc_slow(size);
}

wi_export void *WI_HOOK(calloc)(size_t count, size_t size) {
  wi_ensure_init();
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  if (wi_likely(!wi_is_large(total))) {
    void *(*real)(size_t, size_t) = wi_real_fn(calloc);
    if (wi_unlikely(wi_real_fn(malloc) == NULL)) return wi_bootstrap_alloc(total, 16);
    wi_count_small_alloc();
    return real(count, size);
  }
  return wi_large_or_fallback(total, 0, true);
}

__attribute__((noinline)) static void wi_free_slow(void *p) {
  if (p == NULL || wi_unlikely(wi_arena_contains(p))) return;  /* the arena is never reused */
  if (wi_large_free(p)) return;
  void (*real)(void *) = wi_real_fn(free);
  if (wi_unlikely(real == NULL)) return;  /* unresolved: nothing but us can have made p */
  if (wi_unlikely(wi_stats_count_small(false))) wi_large_tick();
  real(p);  /* not ours and not the arena's: the next allocator made it */
}

wi_export void WI_HOOK(free)(void *p) {
  /* Our blocks start at page offset 0 or WI_COLOUR, glibc's small ones rarely do: most frees
   * need no lookup.  NULL is at offset 0 too, and goes the slow way. */
  void (*real)(void *) = wi_real_fn(free);
  uintptr_t offset = (uintptr_t)p & 4095;
  if (wi_likely(offset != 0 && offset != WI_COLOUR && !wi_arena_contains(p) && real != NULL &&
                wi_counts.registered && ((wi_counts.frees + 1) & 4095) != 0)) {
    wi_counts.frees++;
    real(p);
    return;
  }
  wi_free_slow(p);
}

__attribute__((noinline)) static void *wi_realloc_slow(void *p, size_t size) {
  wi_ensure_init();
  if (p == NULL) return WI_HOOK(malloc)(size);
  if (size == 0) {  /* glibc: realloc(p, 0) frees p and returns NULL */
    WI_HOOK(free)(p);
    return NULL;
  }
  if (wi_unlikely(wi_arena_contains(p))) {
    void *q = WI_HOOK(malloc)(size);
    if (q) memcpy(q, p, wi_min(size, wi_arena_usable_size(p)));
    return q;
  }
  wi_block_t block;
  if (wi_large_find(p, &block)) {
    void *q;
    if (wi_is_large(size) && wi_large_resize(&block, size, &q)) return q;
    q = WI_HOOK(malloc)(size);
    if (q == NULL) return NULL;  /* p stays valid, as realloc requires */
    memcpy(q, p, wi_min(size, wi_block_usable(&block)));
    WI_HOOK(free)(p);
    return q;
  }
  if (wi_likely(!wi_is_large(size))) return wi_real_fn(realloc)(p, size);
  /* A small glibc block grows past the threshold: move it into a block of ours. */
  size_t old_size = wi_real_fn(malloc_usable_size)(p);
  void *q = wi_large_alloc(size, 0, false);
  if (q == NULL) return wi_real_fn(realloc)(p, size);
  memcpy(q, p, wi_min(size, old_size));
  WI_HOOK(free)(p);
  return q;
}

/* Fast path: a small glibc block that stays small is glibc's business alone. */
wi_export void *WI_HOOK(realloc)(void *p, size_t size) {
  void *(*real)(void *, size_t) = wi_real_fn(realloc);
  uintptr_t offset = (uintptr_t)p & 4095;  /* NULL, and our blocks, take the slow path */
  if (wi_likely(real != NULL && offset != 0 && offset != WI_COLOUR && size != 0 &&
                !wi_is_large(size) && !wi_arena_contains(p)))
    return real(p, size);
  return wi_realloc_slow(p, size);
}

wi_export void *WI_HOOK(reallocarray)(void *p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return WI_HOOK(realloc)(p, total);
}

wi_export int WI_HOOK(posix_memalign)(void **out, size_t align, size_t size) {
  if (align % sizeof(void *) != 0 || !wi_is_pow2(align)) return EINVAL;
  int saved_errno = errno;  /* posix_memalign reports through its result, not errno */
  void *p = wi_aligned(align, size);
  int result = p ? 0 : ENOMEM;
  errno = saved_errno;
  if (p) *out = p;
  return result;
}

wi_export void *WI_HOOK(aligned_alloc)(size_t align, size_t size) {
  if (!wi_is_pow2(align)) {  /* C11 leaves it undefined; glibc >= 2.38 and we say EINVAL */
    errno = EINVAL;
    return NULL;
  }
  return wi_aligned(align, size);
}

wi_export void *WI_HOOK(memalign)(size_t align, size_t size) {
  return wi_aligned(align, size);
}

wi_export void *WI_HOOK(valloc)(size_t size) {
  wi_ensure_init();
  return wi_aligned(wi_page_bytes, size);
}

wi_export void *WI_HOOK(pvalloc)(size_t size) {
  wi_ensure_init();
  size_t rounded;
  if (__builtin_add_overflow(size, wi_page_bytes - 1, &rounded)) {
    errno = ENOMEM;
    return NULL;
  }
  return wi_aligned(wi_page_bytes, rounded & ~(wi_page_bytes - 1));
}

wi_export size_t WI_HOOK(malloc_usable_size)(void *p) {
  if (p == NULL) return 0;
  if (wi_arena_contains(p)) return wi_arena_usable_size(p);
  wi_block_t block;
  if (wi_large_find(p, &block)) return wi_block_usable(&block);
  return wi_real_fn(malloc_usable_size)(p);
}

/* C23 sized frees (glibc 2.40+): a program built against a newer glibc must not hand our
 * blocks to glibc's free through them. */
wi_export void WI_HOOK(free_sized)(void *p, size_t size) {
  (void)size;
  WI_HOOK(free)(p);
}

wi_export void WI_HOOK(free_aligned_sized)(void *p, size_t align, size_t size) {
  (void)align;
  (void)size;
  WI_HOOK(free)(p);
}
