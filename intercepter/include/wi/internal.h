/* turingwatch intercepter: internal declarations shared by the source files.
 *
 * Read this first.  Large requests (>= the threshold, 128 KiB by default) are served from the
 * library's own mmap'd blocks; everything smaller goes to the next malloc in the chain (glibc).
 * A freed large block is kept, resident, in a bounded pool and handed out again for a request of
 * the same size class.  Whether a pointer is ours is decided by looking it up in a side table of
 * block addresses (blocks.c), never by reading allocator headers.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef WI_INTERNAL_H
#define WI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Everything declared here is internal to the library: direct, not GOT-relative, access. */
#pragma GCC visibility push(hidden)

#define wi_likely(x)   __builtin_expect(!!(x), 1)
#define wi_unlikely(x) __builtin_expect(!!(x), 0)
#define wi_relaxed_load(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define wi_relaxed_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define wi_relaxed_add(p, v)   __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

#if defined(WI_DEBUG) && WI_DEBUG > 0
#define wi_assert(x) ((x) ? (void)0 : abort())
#else
#define wi_assert(x) ((void)0)
#endif

/* The test builds for the sanitizers link the library into the test program; there the hooks are
 * called wi_malloc, wi_free, ... and the "real" allocator is the sanitizer's malloc. */
#ifdef WI_EMBED
#define WI_HOOK(name) wi_##name
#else
#define WI_HOOK(name) name
#endif
#define wi_export __attribute__((visibility("default")))

/* A span of our own address space: [base, base + len) as returned by mmap. */
typedef struct wi_span_s {
  uintptr_t base;
  size_t len;
} wi_span_t;

/* A live large block: the pointer handed out, the size asked for, and the mapping it lies in. */
typedef struct wi_block_s {
  uintptr_t addr;  /* 0 marks an empty slot in the side table */
  size_t size;
  uintptr_t base;
  size_t len;
  size_t align;    /* as requested: over-page-aligned blocks cannot move with mremap */
} wi_block_t;

/* Blocks with at most this alignment start this far into their first page (see large.c). */
#define WI_COLOUR 256

/* ---- options.c ---- */
typedef struct wi_options_s {
  size_t threshold_bytes;   /* requests of at least this size are ours */
  size_t pool_max_blocks;   /* cap on the number of pooled blocks */
  size_t pool_max_bytes;    /* cap on the bytes held by pooled blocks */
  uint64_t idle_ns;         /* pooled blocks unused this long are given back */
  bool verbose;             /* one summary line on stderr at exit */
  char stats_prefix[1024];  /* "" = no statistics file */
} wi_options_t;

extern wi_options_t wi_options;
void wi_options_init(void);
void wi_warn(const char *a, const char *b, const char *c, const char *d);  /* capped, write(2) */

/* ---- resolve.c ---- */
typedef struct wi_real_s {
  void *(*malloc)(size_t);
  void *(*calloc)(size_t, size_t);
  void *(*realloc)(void *, size_t);
  void (*free)(void *);
  int (*posix_memalign)(void **, size_t, size_t);
  void *(*memalign)(size_t, size_t);
  size_t (*malloc_usable_size)(void *);
} wi_real_t;

extern wi_real_t wi_real;
void wi_resolve(void);
void *wi_arena_alloc(size_t size, size_t align);
#define WI_ARENA_BYTES (64 << 10)
extern unsigned char wi_arena[WI_ARENA_BYTES];
static inline bool wi_arena_contains(const void *p) {
  return (uintptr_t)p - (uintptr_t)wi_arena < WI_ARENA_BYTES;
}
size_t wi_arena_usable_size(const void *p);

/* ---- blocks.c: size classes, mappings, the side table ---- */
extern size_t wi_page_bytes;
size_t wi_class_len(size_t size);                  /* 0 when too large */
unsigned wi_class_bin(size_t size);                /* power-of-two statistics bin */
uintptr_t wi_map(size_t len);                      /* 0 on failure */
void wi_unmap(wi_span_t span);
bool wi_table_insert(wi_block_t block);            /* under wi_lock; false if out of memory */
bool wi_table_remove(uintptr_t addr, wi_block_t *out);  /* under wi_lock */
bool wi_table_find(uintptr_t addr, wi_block_t *out);    /* under wi_lock */
size_t wi_table_count(void);                       /* relaxed; a hint for fast paths */

/* ---- pool.c ---- */
#define WI_POOL_CAPACITY  1024  /* hard upper bound on TURINGWATCH_INTERCEPT_POOL_BLOCKS */
#define WI_EVICT_BATCH    16    /* at most this many blocks are unmapped per operation */
uintptr_t wi_pool_take(size_t len);                /* under wi_lock; 0 on a miss */
size_t wi_pool_put(wi_span_t span, uint64_t now_ns, wi_span_t victims[WI_EVICT_BATCH]);
size_t wi_pool_expire(uint64_t now_ns, wi_span_t *victims, size_t room);
uint64_t wi_pool_next_expiry_ns(void);             /* relaxed; UINT64_MAX when empty */
void wi_pool_poison(wi_span_t span);
void wi_pool_unpoison(wi_span_t span);

/* ---- stats.c ---- */
#define WI_BINS 48
typedef struct wi_bin_stats_s {
  uint64_t allocs, frees, hits;
} wi_bin_stats_t;

typedef struct wi_stats_s {  /* guarded by wi_lock; small requests are counted apart, in stats.c */
  uint64_t large_allocs, large_frees, pool_hits, pool_misses;
  uint64_t bytes_recycled, bytes_mapped, maps, unmaps, remaps;
  uint64_t evictions, idle_releases, fallbacks;
  uint64_t live_bytes, peak_live_bytes;
  uint64_t pool_bytes, peak_pool_bytes, pool_blocks, peak_pool_blocks;
  wi_bin_stats_t bins[WI_BINS];
} wi_stats_t;

extern wi_stats_t wi_stats;
void wi_stats_init(void);
void wi_stats_register_thread(void);
void wi_stats_flush_thread(void);
void wi_stats_reset(void);                         /* in a forked child */
void wi_stats_write(void);                         /* at exit */

/* Small requests are counted per thread, without any shared write (inline: it is on every call). */
typedef struct wi_thread_counts_s {
  uint64_t allocs, frees;
  bool registered;  /* set up; with our pthread key holding a value, flushed at thread exit */
} wi_thread_counts_t;

/* initial-exec: a preloaded library gets static TLS, and the general-dynamic model may allocate
 * on first access, which inside malloc would recurse. */
extern __thread wi_thread_counts_t wi_counts __attribute__((tls_model("initial-exec")));

/* Counts one small request; returns true every 4096th of a kind in a thread: time for a cheap
 * housekeeping check.  One 8-byte increment: anything wider stalls on store forwarding. */
static inline bool wi_stats_count_small(bool is_alloc) {
  if (wi_unlikely(!wi_counts.registered)) wi_stats_register_thread();
  uint64_t n = is_alloc ? ++wi_counts.allocs : ++wi_counts.frees;
  return wi_unlikely((n & 4095) == 0);
}

/* ---- init.c ---- */
void wi_lock(void);
void wi_unlock(void);
bool wi_trylock(void);
bool wi_lock_for_report(void);  /* bounded trylock; false: report without it */
uint64_t wi_now_ns(void);
void wi_ensure_init_slow(void);
extern int wi_ready;
static inline void wi_ensure_init(void) {
  if (wi_unlikely(!wi_relaxed_load(&wi_ready))) wi_ensure_init_slow();
}

/* ---- large.c: the large-block allocator behind the hooks ---- */
void *wi_large_alloc(size_t size, size_t align, bool zero);  /* NULL: caller falls back */
bool wi_large_free(void *p);                                 /* false: not ours */
bool wi_large_find(const void *p, wi_block_t *out);          /* false: not ours */
bool wi_large_resize(const wi_block_t *block, size_t size, void **out);  /* false: must move */
void wi_large_tick(void);                                    /* cheap idle check */
static inline size_t wi_block_usable(const wi_block_t *b) { return b->base + b->len - b->addr; }

/* ---- fmt.c: formatting without allocating ---- */
typedef struct wi_buf_s {
  char *data;
  size_t len, cap;
} wi_buf_t;
void wi_buf_str(wi_buf_t *b, const char *s);
void wi_buf_u64(wi_buf_t *b, uint64_t v);
void wi_buf_hex(wi_buf_t *b, uint64_t v);           /* 16 lowercase digits */
void wi_buf_json_str(wi_buf_t *b, const char *s);  /* quoted and escaped */
bool wi_parse_size(const char *s, size_t *out);    /* "128K", "1g", "4096" */
bool wi_parse_bool(const char *s, bool *out);      /* 1/0, true/false, yes/no, on/off */

#pragma GCC visibility pop

#endif
