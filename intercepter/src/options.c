/* turingwatch intercepter: options from TURINGWATCH_INTERCEPT_* environment variables.
 *
 * Read from `environ` directly: getenv is fine on glibc, but scanning ourselves lets us also warn
 * about misspelt names, and it is obviously allocation-free.  A bad value warns once and keeps
 * the default; nothing here ever stops the job.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <string.h>
#include <unistd.h>

#define WI_ENV_PREFIX "TURINGWATCH_INTERCEPT_"
#define WI_MAX_WARNINGS 16

wi_options_t wi_options = {
    .threshold_bytes = 128 << 10,
    .pool_max_blocks = 64,
    .pool_max_bytes = (size_t)512 << 20,
    .idle_ns = 5000ull * 1000000ull,
    .verbose = false,
    .stats_prefix = "",
};

void wi_warn(const char *a, const char *b, const char *c, const char *d) {
  static unsigned warnings;
  if (wi_relaxed_add(&warnings, 1) >= WI_MAX_WARNINGS) return;
  char text[512];
  wi_buf_t buf = {text, 0, sizeof text};
  wi_buf_str(&buf, "turingwatch-intercept: ");
  wi_buf_str(&buf, a);
  wi_buf_str(&buf, b);
  wi_buf_str(&buf, c);
  wi_buf_str(&buf, d);
  wi_buf_str(&buf, "\n");
  ssize_t written = write(STDERR_FILENO, buf.data, buf.len);
  (void)written;
}

/* ---- the option table ---- */

typedef enum wi_kind_e { WI_SIZE, WI_COUNT, WI_MILLIS, WI_BOOL, WI_PATH } wi_kind_t;

typedef struct wi_option_s {
  const char *name;  /* after the prefix */
  wi_kind_t kind;
  size_t min, max;   /* accepted range for numbers */
  const char *expect;
} wi_option_t;

static const wi_option_t wi_option_table[] = {
    {"THRESHOLD", WI_SIZE, 4096, (size_t)1 << 40, "a size from 4K to 1T, like 128K or 1M"},
    {"POOL_BLOCKS", WI_COUNT, 0, WI_POOL_CAPACITY, "a count from 0 to 1024"},
    {"POOL_BYTES", WI_SIZE, 0, (size_t)1 << 46, "a size like 512M or 2G (0 disables recycling)"},
    {"IDLE_MS", WI_MILLIS, 0, (size_t)1 << 40, "milliseconds (0 keeps idle blocks until exit)"},
    {"VERBOSE", WI_BOOL, 0, 0, "1/0, true/false, yes/no or on/off"},
    {"STATS", WI_PATH, 0, 0, "a path prefix shorter than 1000 bytes"},
};
#define WI_OPTION_COUNT (sizeof wi_option_table / sizeof wi_option_table[0])

static bool wi_option_apply(size_t index, const char *value) {
  const wi_option_t *opt = &wi_option_table[index];
  size_t number = 0;
  bool flag = false;
  switch (opt->kind) {
    case WI_SIZE:
    case WI_COUNT:
    case WI_MILLIS:
      if (!wi_parse_size(value, &number) || number < opt->min || number > opt->max) return false;
      if (opt->kind == WI_COUNT && strpbrk(value, "kKmMgGtT")) return false;
      break;
    case WI_BOOL:
      if (!wi_parse_bool(value, &flag)) return false;
      break;
    case WI_PATH:
      if (strlen(value) >= sizeof wi_options.stats_prefix - 32) return false;
      break;
  }
  switch (index) {
    case 0: wi_options.threshold_bytes = number; break;
    case 1: wi_options.pool_max_blocks = number; break;
    case 2: wi_options.pool_max_bytes = number; break;
    case 3: wi_options.idle_ns = (uint64_t)number * 1000000ull; break;
    case 4: wi_options.verbose = flag; break;
    case 5: strcpy(wi_options.stats_prefix, value); break;
    default: return false;
  }
  return true;
}

/* Called once, by the thread that initialises the library, before any large block exists. */
void wi_options_init(void) {
  extern char **environ;
  /* A pool of 512 MiB is a lot on a small node: keep it to an eighth of the RAM by default. */
  long pages = sysconf(_SC_PHYS_PAGES), page_bytes = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_bytes > 0 && (size_t)pages / 8 * (size_t)page_bytes < wi_options.pool_max_bytes)
    wi_options.pool_max_bytes = (size_t)pages / 8 * (size_t)page_bytes;
  if (environ == NULL) return;
  const size_t prefix_len = strlen(WI_ENV_PREFIX);
  for (char **env = environ; *env; env++) {
    const char *entry = *env;
    if (strncmp(entry, WI_ENV_PREFIX, prefix_len) != 0) continue;
    const char *name = entry + prefix_len;
    const char *eq = strchr(name, '=');
    if (eq == NULL) continue;
    size_t name_len = (size_t)(eq - name);
    size_t i = 0;
    while (i < WI_OPTION_COUNT && !(strlen(wi_option_table[i].name) == name_len &&
                                    strncmp(wi_option_table[i].name, name, name_len) == 0))
      i++;
    if (i == WI_OPTION_COUNT && strncmp(name, "LIBRARY=", 8) == 0) continue;  /* Python's */
    if (i == WI_OPTION_COUNT) {
      wi_warn("ignoring unknown option ", entry, "", "");
    } else if (!wi_option_apply(i, eq + 1)) {
      wi_warn("ignoring ", entry, ": expected ", wi_option_table[i].expect);
    }
  }
}
