/* turingwatch intercepter: the churn workload, for the tests and the benchmark.
 *
 * Allocates a block, touches one byte per page (as a code that fills a temporary does, minus the
 * copying), frees it, and again.  With glibc, blocks above its mmap threshold (at most 32 MiB)
 * go back to the kernel at each free and are faulted in again, page by page.
 *
 * Usage: churn SIZE_BYTES ITERATIONS [PAUSE_MS]   prints a checksum of what it read back
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: churn SIZE_BYTES ITERATIONS [PAUSE_MS]\n");
    return 2;
  }
  size_t size = strtoull(argv[1], NULL, 10);
  long iterations = strtol(argv[2], NULL, 10);
  long pause_ms = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uint64_t checksum = 0;
  for (long i = 0; i < iterations; i++) {
    volatile unsigned char *p = malloc(size);
    if (p == NULL) {
      perror("malloc");
      return 1;
    }
    for (size_t off = 0; off < size; off += page) p[off] = (unsigned char)(i + off / page);
    for (size_t off = 0; off < size; off += 64 * page) checksum = checksum * 31 + p[off];
    free((void *)p);
    if (pause_ms) nanosleep(&(struct timespec){pause_ms / 1000, (pause_ms % 1000) * 1000000L}, NULL);
  }
  printf("%llu\n", (unsigned long long)checksum);
  return 0;
}
