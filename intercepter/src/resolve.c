/* turingwatch intercepter: finding the next allocator in the chain, and the bootstrap arena.
 *
 * dlsym(RTLD_NEXT, ...) may itself call malloc or calloc while we are resolving, and so may the
 * dynamic loader before our constructor runs.  Until the real functions are known, small requests
 * are served from a static arena that is never reused (so it is always zeroed); large ones do not
 * need the real allocator at all.  free() ignores arena pointers; realloc() moves them out.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>

wi_real_t wi_real;  /* published with release stores; the hooks load with acquire */

#ifdef WI_EMBED
/* Test builds: our hooks are wi_malloc & co., the real allocator is whatever `malloc` binds to
 * (the sanitizer's own when built with -fsanitize). */
void wi_resolve(void) {
  __atomic_store_n(&wi_real.calloc, &calloc, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.realloc, &realloc, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.free, &free, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.posix_memalign, &posix_memalign, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.memalign, &memalign, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.malloc_usable_size, &malloc_usable_size, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.malloc, &malloc, __ATOMIC_RELEASE);
}
#else
void wi_resolve(void) {
  wi_real_t r;
  /* Each dlsym may allocate; those requests land in the arena because wi_real.malloc is still
   * NULL.  malloc is published last: the hooks take a non-NULL malloc to mean "all resolved". */
  *(void **)&r.calloc = dlsym(RTLD_NEXT, "calloc");
  *(void **)&r.realloc = dlsym(RTLD_NEXT, "realloc");
  *(void **)&r.free = dlsym(RTLD_NEXT, "free");
  *(void **)&r.posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
  *(void **)&r.memalign = dlsym(RTLD_NEXT, "memalign");
  *(void **)&r.malloc_usable_size = dlsym(RTLD_NEXT, "malloc_usable_size");
  *(void **)&r.malloc = dlsym(RTLD_NEXT, "malloc");
  if (!r.calloc || !r.realloc || !r.free || !r.posix_memalign || !r.memalign ||
      !r.malloc_usable_size || !r.malloc) {
    /* Without a next allocator every request is served from our own mappings: slow for small
     * requests, but correct.  This only happens when the library is misused (static binaries). */
    wi_warn("no next malloc found (dlsym RTLD_NEXT); serving every request from mmap", "", "", "");
    return;
  }
  __atomic_store_n(&wi_real.calloc, r.calloc, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.realloc, r.realloc, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.free, r.free, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.posix_memalign, r.posix_memalign, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.memalign, r.memalign, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.malloc_usable_size, r.malloc_usable_size, __ATOMIC_RELEASE);
  __atomic_store_n(&wi_real.malloc, r.malloc, __ATOMIC_RELEASE);
}
#endif

/* ---- bootstrap arena ---- */

_Alignas(64) unsigned char wi_arena[WI_ARENA_BYTES];
static size_t wi_arena_used;  /* bump offset, advanced with CAS */

/* Each arena block is preceded by its size (our own header, in our own memory). */
void *wi_arena_alloc(size_t size, size_t align) {
  if (align < 16) align = 16;
  if (size > WI_ARENA_BYTES || align > WI_ARENA_BYTES) return NULL;
  size_t used = __atomic_load_n(&wi_arena_used, __ATOMIC_RELAXED);
  for (;;) {
    uintptr_t start = (uintptr_t)wi_arena + used + sizeof(size_t);
    start = (start + align - 1) & ~(uintptr_t)(align - 1);
    size_t end = (size_t)(start - (uintptr_t)wi_arena) + size;
    end = (end + 15) & ~(size_t)15;
    if (end > WI_ARENA_BYTES) return NULL;
    if (__atomic_compare_exchange_n(&wi_arena_used, &used, end, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
      ((size_t *)start)[-1] = size;
      return (void *)start;
    }
  }
}

size_t wi_arena_usable_size(const void *p) {
  return ((const size_t *)p)[-1];
}
