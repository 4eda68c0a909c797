/* turingwatch intercepter: counters, and the statistics file written at exit.
 *
 * Large-block counters change under wi_lock (that path holds it anyway).  Small requests are
 * counted per thread without any shared write and folded into relaxed atomics when the thread
 * exits (a pthread key destructor) or when the report is written.
 *
 * The file is JSON, one object per process, named <prefix>.<pid>.json, so that the processes of a
 * job never overwrite each other.  It is written to a temporary name and then hard-linked into
 * place, so a reader sees either nothing or the whole file; if the pid was used before (pid
 * reuse in a long job) the name gets a -1, -2, ... suffix.
 *
 * The directory may be writable by other users (a project's scratch space), who can plant a
 * symlink at any name they can guess.  So no name is ever opened except to create it
 * (O_EXCL|O_NOFOLLOW), the temporary name has a random part, and the final name is made with
 * link(2), which never follows or replaces what is there (issue 9).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

wi_stats_t wi_stats;
static uint64_t wi_small_allocs, wi_small_frees;  /* relaxed atomics */

/* ---- per-thread counting of small requests ---- */

__thread wi_thread_counts_t wi_counts __attribute__((tls_model("initial-exec")));
static pthread_key_t wi_counts_key;
static bool wi_counts_key_ok;

void wi_stats_flush_thread(void) {
  wi_relaxed_add(&wi_small_allocs, wi_counts.allocs);
  wi_relaxed_add(&wi_small_frees, wi_counts.frees);
  wi_counts.allocs = wi_counts.frees = 0;
}

static void wi_thread_exit(void *unused) {
  (void)unused;
  wi_stats_flush_thread();
  wi_counts.registered = false;  /* later frees in this thread's teardown register again */
}

void wi_stats_init(void) {
  wi_counts_key_ok = pthread_key_create(&wi_counts_key, wi_thread_exit) == 0;
}

void wi_stats_register_thread(void) {
  if (!wi_relaxed_load(&wi_ready)) return;
  wi_counts.registered = true;  /* first: pthread_setspecific may allocate, and recurse here */
  if (wi_counts_key_ok) pthread_setspecific(wi_counts_key, (void *)1);
}

void wi_stats_reset(void) {
  uint64_t live = wi_stats.live_bytes, pool_bytes = wi_stats.pool_bytes;
  uint64_t pool_blocks = wi_stats.pool_blocks;
  memset(&wi_stats, 0, sizeof wi_stats);
  wi_stats.live_bytes = wi_stats.peak_live_bytes = live;
  wi_stats.pool_bytes = wi_stats.peak_pool_bytes = pool_bytes;
  wi_stats.pool_blocks = wi_stats.peak_pool_blocks = pool_blocks;
  wi_counts.allocs = wi_counts.frees = 0;
  wi_relaxed_store(&wi_small_allocs, 0);
  wi_relaxed_store(&wi_small_frees, 0);
}

/* ---- the report ---- */

#define WI_TMP_ATTEMPTS 16   /* random temporary names tried before giving up */
#define WI_STATS_MODE   0640 /* the job's user writes, its group may read, others see nothing */

static void wi_json_u64(wi_buf_t *b, const char *key, uint64_t v, bool last) {
  wi_buf_str(b, "\"");
  wi_buf_str(b, key);
  wi_buf_str(b, "\": ");
  wi_buf_u64(b, v);
  wi_buf_str(b, last ? "" : ", ");
}

static void wi_read_comm(char *out, size_t size) {
  out[0] = '\0';
  int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, out, size - 1);
  close(fd);
  out[n > 0 ? n : 0] = '\0';
  char *newline = strchr(out, '\n');
  if (newline) *newline = '\0';
}

static void wi_format_json(wi_buf_t *b, const wi_stats_t *s) {
  char comm[64];
  wi_read_comm(comm, sizeof comm);
  wi_buf_str(b, "{\"version\": 1, \"pid\": ");
  wi_buf_u64(b, (uint64_t)getpid());
  wi_buf_str(b, ", \"comm\": ");
  wi_buf_json_str(b, comm);
  wi_buf_str(b, ", ");
  wi_json_u64(b, "threshold_bytes", wi_options.threshold_bytes, false);
  wi_json_u64(b, "page_bytes", wi_page_bytes, false);
  wi_json_u64(b, "pool_max_blocks", wi_options.pool_max_blocks, false);
  wi_json_u64(b, "pool_max_bytes", wi_options.pool_max_bytes, false);
  wi_json_u64(b, "idle_ms", wi_options.idle_ns / 1000000u, false);
  wi_json_u64(b, "small_allocs", wi_relaxed_load(&wi_small_allocs), false);
  wi_json_u64(b, "small_frees", wi_relaxed_load(&wi_small_frees), false);
  wi_json_u64(b, "large_allocs", s->large_allocs, false);
  wi_json_u64(b, "large_frees", s->large_frees, false);
  wi_json_u64(b, "pool_hits", s->pool_hits, false);
  wi_json_u64(b, "pool_misses", s->pool_misses, false);
  wi_json_u64(b, "bytes_recycled", s->bytes_recycled, false);
  wi_json_u64(b, "page_faults_avoided", s->bytes_recycled / wi_page_bytes, false);
  wi_json_u64(b, "bytes_mapped", s->bytes_mapped, false);
  wi_json_u64(b, "maps", s->maps, false);
  wi_json_u64(b, "unmaps", s->unmaps, false);
  wi_json_u64(b, "remaps", s->remaps, false);
  wi_json_u64(b, "evictions", s->evictions, false);
  wi_json_u64(b, "idle_releases", s->idle_releases, false);
  wi_json_u64(b, "fallbacks", s->fallbacks, false);
  wi_json_u64(b, "peak_live_bytes", s->peak_live_bytes, false);
  wi_json_u64(b, "peak_pool_bytes", s->peak_pool_bytes, false);
  wi_json_u64(b, "peak_pool_blocks", s->peak_pool_blocks, false);
  wi_json_u64(b, "pool_bytes_at_exit", s->pool_bytes, false);
  wi_buf_str(b, "\"classes\": [");
  bool first = true;
  for (unsigned i = 0; i < WI_BINS; i++) {
    const wi_bin_stats_t *bin = &s->bins[i];
    if (!bin->allocs && !bin->frees) continue;
    wi_buf_str(b, first ? "{" : ", {");
    first = false;
    wi_json_u64(b, "min_bytes", (uint64_t)1 << i, false);
    wi_json_u64(b, "allocs", bin->allocs, false);
    wi_json_u64(b, "frees", bin->frees, false);
    wi_json_u64(b, "hits", bin->hits, true);
    wi_buf_str(b, "}");
  }
  wi_buf_str(b, "]}\n");
}

static bool wi_write_all(int fd, const char *data, size_t len) {
  while (len) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= (size_t)n;
  }
  return true;
}

/* 64 bits for the temporary's name.  The kernel's random bytes, else (getrandom refused by an
 * old kernel or a seccomp filter) a mix of the clock, the pid and the attempt.  Safety does not
 * rest on this (O_EXCL does); it keeps another user from making us give up by planting names. */
static uint64_t wi_name_random(unsigned attempt) {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  r = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  r ^= ((uint64_t)getpid() << 32) ^ ((uint64_t)attempt * 0x9e3779b97f4a7c15ull);
  r ^= r >> 30;  /* splitmix64's finaliser */
  r *= 0xbf58476d1ce4e5b9ull;
  r ^= r >> 27;
  r *= 0x94d049bb133111ebull;
  return r ^ (r >> 31);
}

/* Creates <prefix>.<pid>.<random>.tmp, never opening anything already there (a symlink planted
 * at the name included: O_EXCL fails on it, O_NOFOLLOW says so twice); -1 when it cannot. */
static int wi_create_temporary(char *tmp, size_t size) {
  for (unsigned attempt = 0; attempt < WI_TMP_ATTEMPTS; attempt++) {
    wi_buf_t t = {tmp, 0, size};
    wi_buf_str(&t, wi_options.stats_prefix);
    wi_buf_str(&t, ".");
    wi_buf_u64(&t, (uint64_t)getpid());
    wi_buf_str(&t, ".");
    wi_buf_hex(&t, wi_name_random(attempt));
    wi_buf_str(&t, ".tmp");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, WI_STATS_MODE);
    if (fd >= 0) return fd;
    if (errno != EEXIST) break;
  }
  wi_warn("cannot write statistics to ", tmp, ": ", strerror(errno));
  return -1;
}

static void wi_write_file(const wi_buf_t *json) {
  char tmp[1100], final[1100];
  int fd = wi_create_temporary(tmp, sizeof tmp);
  if (fd < 0) return;
  bool ok = wi_write_all(fd, json->data, json->len);
  ok = close(fd) == 0 && ok;
  for (unsigned attempt = 0; ok && attempt < 100; attempt++) {
    wi_buf_t f = {final, 0, sizeof final};
    wi_buf_str(&f, wi_options.stats_prefix);
    wi_buf_str(&f, ".");
    wi_buf_u64(&f, (uint64_t)getpid());
    if (attempt) {
      wi_buf_str(&f, "-");
      wi_buf_u64(&f, attempt);
    }
    wi_buf_str(&f, ".json");
    /* link(2) follows neither name: a symlink (or anything else) at the final name is left alone
     * and fails with EEXIST, like a file of an earlier process with this pid, so we take the
     * next suffix.  (rename(2) would be safe too, since it replaces a symlink itself rather than
     * writing through it, but it would also replace an earlier process's file.) */
    if (link(tmp, final) == 0) break;
    if (errno != EEXIST) {
      wi_warn("cannot write statistics to ", final, ": ", strerror(errno));
      break;
    }
  }
  unlink(tmp);  /* does not follow a symlink either */
}

static void wi_print_summary(const wi_stats_t *s) {
  char text[256];
  wi_buf_t b = {text, 0, sizeof text};
  wi_buf_str(&b, "turingwatch-intercept[");
  wi_buf_u64(&b, (uint64_t)getpid());
  wi_buf_str(&b, "]: recycled ");
  wi_buf_u64(&b, s->bytes_recycled >> 20);
  wi_buf_str(&b, " MiB in ");
  wi_buf_u64(&b, s->pool_hits);
  wi_buf_str(&b, " hits (");
  wi_buf_u64(&b, s->pool_misses);
  wi_buf_str(&b, " misses), ~");
  wi_buf_u64(&b, s->bytes_recycled / wi_page_bytes);
  wi_buf_str(&b, " page faults avoided, pool peak ");
  wi_buf_u64(&b, s->peak_pool_bytes >> 20);
  wi_buf_str(&b, " MiB\n");
  ssize_t n = write(STDERR_FILENO, b.data, b.len);
  (void)n;
}

void wi_stats_write(void) {
  if (!wi_options.verbose && wi_options.stats_prefix[0] == '\0') return;
  int saved_errno = errno;
  wi_stats_flush_thread();
  wi_stats_t snapshot;
  bool locked = wi_lock_for_report();
  memcpy(&snapshot, &wi_stats, sizeof snapshot);
  if (locked) wi_unlock();
  if (wi_options.verbose) wi_print_summary(&snapshot);
  if (wi_options.stats_prefix[0]) {
    static char text[16384];
    wi_buf_t json = {text, 0, sizeof text};
    wi_format_json(&json, &snapshot);
    wi_write_file(&json);
  }
  errno = saved_errno;
}
