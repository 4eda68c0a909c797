/* turingwatch intercepter: the large-block allocator behind the hooks.
 *
 * A large request takes a pooled block of its size class, or maps a fresh one; a free puts the
 * block back into the pool (or unmaps it when the pool is full).  The lock covers only the
 * bookkeeping: mmap, munmap, mremap and the zeroing of recycled blocks for calloc run outside it.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

static uintptr_t wi_align_up(uintptr_t x, size_t align) {
  return (x + align - 1) & ~(uintptr_t)(align - 1);
}

/* Where a block starts in its mapping.  Blocks of the default alignment start WI_COLOUR bytes in
 * (each mapping has a spare page for it): a loop that touches the first bytes of every page runs
 * up to twice as slow at page offsets 0 and 64 as at 128 and beyond on the machines we measured,
 * and glibc's heap blocks happen to sit further in.  jemalloc offsets its large blocks within
 * the page for the same family of cache effects ("cache-oblivious" large allocations). */
static uintptr_t wi_block_addr(uintptr_t base, size_t align) {
  return align <= WI_COLOUR ? base + WI_COLOUR : wi_align_up(base, align);
}

/* Our blocks start at page offset 0 or WI_COLOUR; glibc's small ones rarely do. */
static bool wi_maybe_ours(const void *p) {
  uintptr_t offset = (uintptr_t)p & 4095;
  return (offset == 0 || offset == WI_COLOUR) && wi_table_count() != 0;
}

/* The mapping for a request: its size class plus the spare page; 0 if too large. */
static size_t wi_block_len(size_t need) {
  size_t len = wi_class_len(need);
  return len && !__builtin_add_overflow(len, wi_page_bytes, &len) ? len : 0;
}

static void wi_unmap_all(const wi_span_t *victims, size_t n) {
  for (size_t i = 0; i < n; i++) wi_unmap(victims[i]);
}

/* ---- statistics (under the lock) ---- */

static void wi_note_live(int64_t delta_bytes) {
  wi_stats.live_bytes += (uint64_t)delta_bytes;
  if (wi_stats.live_bytes > wi_stats.peak_live_bytes) wi_stats.peak_live_bytes = wi_stats.live_bytes;
}

static void wi_note_alloc(size_t size, size_t len, bool hit) {
  wi_bin_stats_t *bin = &wi_stats.bins[wi_class_bin(size)];
  wi_stats.large_allocs++;
  bin->allocs++;
  if (hit) {
    wi_stats.pool_hits++;
    bin->hits++;
    /* Each recycled page is one the kernel would have had to fault in and zero, if touched. */
    wi_stats.bytes_recycled += (size + wi_page_bytes - 1) & ~(wi_page_bytes - 1);
  } else {
    wi_stats.pool_misses++;
    wi_stats.maps++;
    wi_stats.bytes_mapped += len;
  }
  wi_note_live((int64_t)len);
}

/* ---- allocation and free ---- */

void *wi_large_alloc(size_t size, size_t align, bool zero) {
  size_t need = size;
  if (align > wi_page_bytes && __builtin_add_overflow(size, align - wi_page_bytes, &need))
    return NULL;
  size_t len = wi_block_len(need);
  if (len == 0) return NULL;

  uint64_t now = wi_now_ns();
  wi_span_t victims[WI_EVICT_BATCH + 1];
  wi_lock();
  size_t n_victims = wi_pool_expire(now, victims, WI_EVICT_BATCH);
  uintptr_t base = wi_pool_take(len);
  if (base) {
    wi_block_t block = {wi_block_addr(base, align), size, base, len, align};
    if (wi_table_insert(block)) {
      wi_note_alloc(size, len, true);
    } else {  /* side table out of memory: give the block back to the kernel */
      victims[n_victims++] = (wi_span_t){base, len};
      base = 0;
    }
  }
  wi_stats.unmaps += n_victims;
  wi_unlock();
  wi_unmap_all(victims, n_victims);
  if (base) {
    void *p = (void *)wi_block_addr(base, align);
    if (zero) memset(p, 0, size);  /* a fresh mapping is zero already; a recycled one is not */
    return p;
  }

  int saved_errno = errno;
  base = wi_map(len);
  errno = saved_errno;  /* the caller's fallback sets errno if it fails too */
  wi_lock();
  wi_block_t block = {wi_block_addr(base, align), size, base, len, align};
  bool tracked = base && wi_table_insert(block);
  if (tracked) wi_note_alloc(size, len, false);
  else wi_stats.fallbacks++;
  wi_unlock();
  if (!tracked) {
    if (base) wi_unmap((wi_span_t){base, len});
    return NULL;
  }
  return (void *)block.addr;
}

bool wi_large_free(void *p) {
  if (!wi_maybe_ours(p)) return false;
  int saved_errno = errno;  /* free() must leave errno alone */
  uint64_t now = wi_now_ns();
  wi_span_t victims[2 * WI_EVICT_BATCH];
  wi_block_t block;
  wi_lock();
  if (!wi_table_remove((uintptr_t)p, &block)) {
    wi_unlock();
    errno = saved_errno;
    return false;
  }
  wi_stats.large_frees++;
  wi_stats.bins[wi_class_bin(block.size)].frees++;
  wi_note_live(-(int64_t)block.len);
  size_t n_victims = wi_pool_put((wi_span_t){block.base, block.len}, now, victims);
  n_victims += wi_pool_expire(now, victims + n_victims, WI_EVICT_BATCH);
  wi_stats.unmaps += n_victims;
  wi_unlock();
  wi_unmap_all(victims, n_victims);
  errno = saved_errno;
  return true;
}

bool wi_large_find(const void *p, wi_block_t *out) {
  if (!wi_maybe_ours(p)) return false;
  wi_lock();
  bool found = wi_table_find((uintptr_t)p, out);
  wi_unlock();
  return found;
}

/* ---- realloc without moving, or moving with mremap instead of a copy ---- */

bool wi_large_resize(const wi_block_t *block, size_t size, void **out) {
  size_t len = wi_block_len(size);
  if (len == 0) return false;
  /* The kernel moves the mapping to a page-aligned address, so the block keeps its offset and
   * any alignment up to a page. */
  bool movable = block->align <= wi_page_bytes;
  if (size <= wi_block_usable(block) && !(movable && len < block->len / 2)) {
    wi_block_t updated;
    wi_lock();
    wi_table_remove(block->addr, &updated);
    updated.size = size;
    wi_table_insert(updated);  /* cannot fail: it reuses the slot just freed */
    wi_unlock();
    *out = (void *)block->addr;
    return true;
  }
  if (!movable) return false;

  /* Shrinking by half or more gives the tail back; growing lets the kernel move the pages
   * instead of copying them.  The entry is out of the table while its address may change. */
  wi_block_t removed;
  wi_lock();
  wi_table_remove(block->addr, &removed);
  wi_unlock();
  int saved_errno = errno;
  void *moved = mremap((void *)block->base, block->len, len, MREMAP_MAYMOVE);
  errno = saved_errno;
  wi_block_t updated = removed;
  if (moved != MAP_FAILED) {
    uintptr_t offset = block->addr - block->base;
    updated = (wi_block_t){(uintptr_t)moved + offset, size, (uintptr_t)moved, len, block->align};
  }
  wi_lock();
  wi_table_insert(updated);  /* cannot fail: it reuses the slot just freed */
  if (moved != MAP_FAILED) {
    wi_stats.remaps++;
    wi_note_live((int64_t)len - (int64_t)block->len);
  }
  wi_unlock();
  if (moved == MAP_FAILED) return false;
  *out = (void *)updated.addr;
  return true;
}

/* ---- idle release from the small path ---- */

/* Called every few thousand small operations per thread, so that a program that stops making
 * large requests still gives idle pooled blocks back.  It never waits for the lock. */
void wi_large_tick(void) {
  if (wi_now_ns() < wi_pool_next_expiry_ns() || !wi_trylock()) return;
  wi_span_t victims[WI_EVICT_BATCH];
  size_t n_victims = wi_pool_expire(wi_now_ns(), victims, WI_EVICT_BATCH);
  wi_stats.unmaps += n_victims;
  wi_unlock();
  int saved_errno = errno;
  wi_unmap_all(victims, n_victims);
  errno = saved_errno;
}
