/* turingwatch intercepter tests: many threads, blocks handed between threads, every byte checked.
 *
 * Models a threaded scientific code: mostly small objects, some large temporaries, reallocs and
 * aligned buffers, and blocks made by one thread and freed by another (through a shared exchange
 * array).  Every block is filled with a pattern derived from its address and size when it is
 * made, and the whole block is verified before it is freed or resized.  Not a benchmark.
 *
 * Usage: test_stress [THREADS] [OPERATIONS]   (default 16 threads, 1000000 operations in all)
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define SLOTS 64       /* blocks each thread keeps alive */
#define EXCHANGE 128   /* blocks in flight between threads */

typedef struct block_s {
  size_t size;  /* stored in the block itself; the pattern covers the rest */
} block_t;

static void *exchange[EXCHANGE];
static size_t operations_per_thread;
static int corruptions;

static uint64_t next_random(uint64_t *state) {  /* xorshift64* */
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545F4914F6CDD1Dull;
}

static size_t random_size(uint64_t *rng) {
  uint64_t r = next_random(rng) % 1000;
  if (r < 900) return 8 + next_random(rng) % 1024;                  /* small objects */
  if (r < 997) return 1024 + next_random(rng) % (16 << 10);         /* medium */
  return (128 << 10) + next_random(rng) % (1 << 20);                /* large: the recycler's */
}

static uint64_t pattern(const void *p, size_t size) {
  return ((uintptr_t)p * 0x9E3779B97F4A7C15ull) ^ size;
}

/* Fills the payload after the size header with the block's pattern, a word at a time (blocks
 * are at least 16-byte aligned), so that the sanitizer builds stay quick. */
static void fill(block_t *b) {
  unsigned char *bytes = (unsigned char *)b;
  uint64_t word = pattern(b, b->size);
  size_t i = sizeof *b;
  for (; i + 8 <= b->size; i += 8) *(uint64_t *)(bytes + i) = word;
  for (; i < b->size; i++) bytes[i] = (unsigned char)(word >> (8 * (i & 7)));
}

/* Checks the first `upto` bytes after the header against the pattern written for `pattern_of`. */
static int intact(const block_t *b, size_t upto, const void *pattern_of) {
  const unsigned char *bytes = (const unsigned char *)b;
  uint64_t word = pattern(pattern_of, b->size);
  size_t i = sizeof *b;
  for (; i + 8 <= upto; i += 8)
    if (*(const uint64_t *)(bytes + i) != word) return 0;
  for (; i < upto; i++)
    if (bytes[i] != (unsigned char)(word >> (8 * (i & 7)))) return 0;
  return 1;
}

static void note_corruption(void) { __atomic_fetch_add(&corruptions, 1, __ATOMIC_RELAXED); }

static block_t *make(uint64_t *rng) {
  size_t size = random_size(rng);
  block_t *b = NULL;
  switch (next_random(rng) % 8) {
    case 0: {
      b = T(calloc)(1, size);
      const unsigned char *bytes = (const unsigned char *)b;
      for (size_t i = 0; b && i < size; i++)
        if (bytes[i]) { note_corruption(); break; }
      break;
    }
    case 1: {
      void *p = NULL;
      if (T(posix_memalign)(&p, (size_t)64 << (next_random(rng) % 8), size) == 0) b = p;
      break;
    }
    case 2:
      b = T(aligned_alloc)(4096, size);
      break;
    default:
      b = T(malloc)(size);
  }
  if (b == NULL) {
    note_corruption();  /* no allocation in this test may fail */
    return NULL;
  }
  b->size = size;
  fill(b);
  return b;
}

static void retire(block_t *b) {
  if (b == NULL) return;
  if (!intact(b, b->size, b)) note_corruption();
  T(free)(b);
}

/* Grow or shrink: the common prefix must survive, whether or not the block moved. */
static block_t *resize(block_t *b, uint64_t *rng) {
  if (!intact(b, b->size, b)) note_corruption();
  size_t old_size = b->size, size = random_size(rng);
  const void *old_address = b;
  block_t *moved = T(realloc)(b, size);
  if (moved == NULL) {
    note_corruption();
    return NULL;
  }
  size_t common = old_size < size ? old_size : size;
  if (!intact(moved, common, old_address)) note_corruption();
  moved->size = size;
  fill(moved);
  return moved;
}

static void *worker(void *arg) {
  uint64_t rng = 0x853c49e6748fea9bull * ((uint64_t)(uintptr_t)arg + 1);
  block_t *slots[SLOTS] = {0};
  for (size_t op = 0; op < operations_per_thread; op++) {
    size_t slot = next_random(&rng) % SLOTS;
    uint64_t action = next_random(&rng) % 10;
    if (action < 6 || slots[slot] == NULL) {         /* replace */
      retire(slots[slot]);
      slots[slot] = make(&rng);
    } else if (action < 8) {                          /* resize */
      slots[slot] = resize(slots[slot], &rng);
    } else {                                          /* hand to another thread */
      size_t i = next_random(&rng) % EXCHANGE;
      block_t *theirs = __atomic_exchange_n((block_t **)&exchange[i], slots[slot], __ATOMIC_ACQ_REL);
      slots[slot] = NULL;
      retire(theirs);
    }
  }
  for (size_t i = 0; i < SLOTS; i++) retire(slots[i]);
  return NULL;
}

int main(int argc, char **argv) {
  size_t threads = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
  size_t operations = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
  if (threads == 0 || threads > 1024) threads = 16;
  operations_per_thread = operations / threads;
  pthread_t ids[1024];
  for (size_t i = 0; i < threads; i++)
    CHECK(pthread_create(&ids[i], NULL, worker, (void *)(uintptr_t)i) == 0);
  for (size_t i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  for (size_t i = 0; i < EXCHANGE; i++) retire(exchange[i]);
  CHECK(corruptions == 0);
  printf("%zu threads, %zu operations, %d corrupted or failed blocks\n", threads,
         operations_per_thread * threads, corruptions);
  return check_summary();
}
