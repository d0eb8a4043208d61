/* utf8: well-formed UTF-8, the one check every part uses (identifiers and names peers send, the
 * text gyro-prep reads, the bytes of a training sample). */
#ifndef GY_COMMON_UTF8_H
#define GY_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the well-formed UTF-8 sequence at s[0..n) (no overlong forms, surrogates or code
 * points past U+10FFFF), with its code point in *cp (cp may be NULL); 0 when the bytes there
 * are not one (a sequence cut short by n included). */
size_t gy_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp);

/* 1 when s[0..n) is well-formed UTF-8 without control characters (C0 and DEL): what an
 * identifier or a name may hold. */
int gy_utf8_clean(const char *s, size_t n);

#endif
