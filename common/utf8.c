/*
 * utf8: well-formed UTF-8 (see utf8.h). API: gy_utf8_seq, gy_utf8_clean. Pure, no allocation.
 */
#include "common/utf8.h"

size_t gy_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp) {
  if (!n) return 0;
  unsigned c = s[0];
  size_t len;
  uint32_t v, min;
  if (c < 0x80) {
    if (cp) *cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, v = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, v = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, v = c & 0x07, min = 0x10000;
  else
    return 0;
  if (len > n) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[k] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  if (cp) *cp = v;
  return len;
}

int gy_utf8_clean(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0, k; i < n; i += k)
    if (!(k = gy_utf8_seq(p + i, n - i, NULL)) || p[i] < 0x20 || p[i] == 0x7f) return 0;
  return 1;
}
