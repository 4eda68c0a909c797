/* turingwatch intercepter: text formatting and parsing that never allocates.
 *
 * printf-family functions may call malloc (positional arguments, wide output, locale), and they
 * run inside our own malloc here, so the few formats we need are written by hand.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include "wi/internal.h"

#include <string.h>
#include <strings.h>

/* ---- output buffer: appends are truncated silently when it is full ---- */

static void wi_buf_char(wi_buf_t *b, char c) {
  if (b->len + 1 < b->cap) b->data[b->len++] = c;
  b->data[b->len < b->cap ? b->len : b->cap - 1] = '\0';
}

void wi_buf_str(wi_buf_t *b, const char *s) {
  while (*s) wi_buf_char(b, *s++);
}

void wi_buf_u64(wi_buf_t *b, uint64_t v) {
  char digits[21];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) wi_buf_char(b, digits[--n]);
}

void wi_buf_hex(wi_buf_t *b, uint64_t v) {
  static const char hex[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) wi_buf_char(b, hex[(v >> shift) & 15]);
}

void wi_buf_json_str(wi_buf_t *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  wi_buf_char(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      wi_buf_char(b, '\\');
      wi_buf_char(b, (char)c);
    } else if (c < 0x20) {
      wi_buf_str(b, "\\u00");
      wi_buf_char(b, hex[c >> 4]);
      wi_buf_char(b, hex[c & 15]);
    } else {
      wi_buf_char(b, (char)c);
    }
  }
  wi_buf_char(b, '"');
}

/* ---- parsing option values ---- */

bool wi_parse_size(const char *s, size_t *out) {
  if (*s == '\0') return false;
  uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
      return false;
  }
  unsigned shift = 0;
  switch (*s) {
    case 'k': case 'K': shift = 10; s++; break;
    case 'm': case 'M': shift = 20; s++; break;
    case 'g': case 'G': shift = 30; s++; break;
    case 't': case 'T': shift = 40; s++; break;
    default: break;
  }
  if (shift && (*s == 'i' || *s == 'I')) s++;  /* "KiB" */
  if (shift && (*s == 'b' || *s == 'B')) s++;  /* "KB" */
  if (*s != '\0' || (v << shift) >> shift != v || (v << shift) > (uint64_t)PTRDIFF_MAX) return false;
  *out = (size_t)(v << shift);
  return true;
}

bool wi_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) { *out = true; return true; }
    if (strcasecmp(s, no[i]) == 0) { *out = false; return true; }
  }
  return false;
}
