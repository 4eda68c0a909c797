/* turingwatch intercepter: size classes, our own mappings, and the side table of live blocks.
 *
 * The side table is how free(), realloc() and malloc_usable_size() tell our blocks from glibc's:
 * an open-addressing hash set keyed by the address handed out (linear probing, backward-shift
 * deletion, so no tombstones).  Its storage is mmap'd, never malloc'd.  Every access is under
 * wi_lock; only the entry count is also readable without it, as a hint for fast paths.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <sys/mman.h>

size_t wi_page_bytes = 4096;  /* set from sysconf at init */

/* ---- size classes ---- */

/* Requests are rounded to pages, then to one of 8 steps per power of two, so a block can be
 * reused for any request within 12.5% of its size and a pooled block wastes at most that much. */
size_t wi_class_len(size_t size) {
  if (size == 0 || size > (size_t)PTRDIFF_MAX / 2) return 0;
  size_t pages = (size + wi_page_bytes - 1) & ~(wi_page_bytes - 1);
  unsigned log2 = 63u - (unsigned)__builtin_clzll(pages);
  size_t step = log2 > 3 ? (size_t)1 << (log2 - 3) : 1;
  if (step < wi_page_bytes) step = wi_page_bytes;
  return (pages + step - 1) & ~(step - 1);
}

unsigned wi_class_bin(size_t size) {
  unsigned log2 = size ? 63u - (unsigned)__builtin_clzll(size) : 0;
  return log2 < WI_BINS ? log2 : WI_BINS - 1;
}

/* ---- mappings ---- */

uintptr_t wi_map(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? 0 : (uintptr_t)p;
}

void wi_unmap(wi_span_t span) {
  if (span.len == 0) return;
  wi_pool_unpoison(span);
  munmap((void *)span.base, span.len);
}

/* ---- the side table ---- */

static wi_block_t *wi_slots;
static size_t wi_slot_mask;  /* capacity - 1; capacity is a power of two */
static size_t wi_used;

static size_t wi_home(uintptr_t addr) {
  return (size_t)(((addr >> 12) * 0x9E3779B97F4A7C15ull) >> 20) & wi_slot_mask;
}

static void wi_place(wi_block_t block) {
  size_t i = wi_home(block.addr);
  while (wi_slots[i].addr) i = (i + 1) & wi_slot_mask;
  wi_slots[i] = block;
}

/* Doubles the table; on failure keeps the old one (inserts then fail only when it is 90% full). */
static bool wi_table_grow(void) {
  size_t old_cap = wi_slots ? wi_slot_mask + 1 : 0;
  size_t new_cap = old_cap ? old_cap * 2 : 1024;
  wi_block_t *fresh = (wi_block_t *)wi_map(new_cap * sizeof(wi_block_t));
  if (fresh == NULL) return false;
  wi_block_t *old = wi_slots;
  wi_slots = fresh;
  wi_slot_mask = new_cap - 1;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i].addr) wi_place(old[i]);
  wi_unmap((wi_span_t){(uintptr_t)old, old_cap * sizeof(wi_block_t)});
  return true;
}

bool wi_table_insert(wi_block_t block) {
  size_t cap = wi_slots ? wi_slot_mask + 1 : 0;
  if (2 * (wi_used + 1) > cap && !wi_table_grow() && 10 * (wi_used + 1) > 9 * cap) return false;
  wi_place(block);
  wi_relaxed_store(&wi_used, wi_used + 1);
  return true;
}

static size_t wi_table_slot(uintptr_t addr) {
  if (wi_slots == NULL) return SIZE_MAX;
  for (size_t i = wi_home(addr);; i = (i + 1) & wi_slot_mask) {
    if (wi_slots[i].addr == addr) return i;
    if (wi_slots[i].addr == 0) return SIZE_MAX;
  }
}

bool wi_table_find(uintptr_t addr, wi_block_t *out) {
  size_t i = wi_table_slot(addr);
  if (i == SIZE_MAX) return false;
  *out = wi_slots[i];
  return true;
}

bool wi_table_remove(uintptr_t addr, wi_block_t *out) {
  size_t i = wi_table_slot(addr);
  if (i == SIZE_MAX) return false;
  *out = wi_slots[i];
  /* Backward-shift deletion: pull later entries of the probe run into the hole when their home
   * slot does not lie cyclically in (hole, j]. */
  for (size_t j = (i + 1) & wi_slot_mask; wi_slots[j].addr; j = (j + 1) & wi_slot_mask) {
    size_t home = wi_home(wi_slots[j].addr);
    bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      wi_slots[i] = wi_slots[j];
      i = j;
    }
  }
  wi_slots[i].addr = 0;
  wi_relaxed_store(&wi_used, wi_used - 1);
  return true;
}

size_t wi_table_count(void) {
  return wi_relaxed_load(&wi_used);
}
