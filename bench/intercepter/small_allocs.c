/* turingwatch intercepter benchmark: a small-allocation workload (the path we must not slow).
 *
 * Keeps 8192 live objects of 16 to 1 KiB and replaces or resizes a random one at each step, as
 * an interpreter or a graph code does.  Nothing here reaches the 128 KiB threshold: the
 * intercepter only passes these through to glibc, so its cost is its per-call overhead.
 *
 * Usage: small_allocs OPERATIONS   prints a checksum
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LIVE 8192

int main(int argc, char **argv) {
  long operations = argc > 1 ? strtol(argv[1], NULL, 10) : 20000000;
  static unsigned char *live[LIVE];
  uint64_t rng = 88172645463325252ull, checksum = 0;
  for (long op = 0; op < operations; op++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    size_t slot = rng % LIVE, size = 16 + (rng >> 20) % 1009;
    if (live[slot] && (rng >> 40) % 8 == 0) {
      unsigned char *grown = realloc(live[slot], size);
      if (grown == NULL) return 1;
      live[slot] = grown;
    } else {
      free(live[slot]);
      live[slot] = malloc(size);
      if (live[slot] == NULL) return 1;
    }
    live[slot][0] = (unsigned char)op;
    live[slot][size - 1] = (unsigned char)(op >> 8);
    checksum += live[slot][0];
  }
  for (size_t i = 0; i < LIVE; i++) free(live[i]);
  printf("%llu\n", (unsigned long long)checksum);
  return 0;
}
