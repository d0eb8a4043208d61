/* fuzz_util: helpers shared by the libFuzzer harnesses (header only: each harness is one
 * translation unit). A harness that finds a broken property calls fuzz_fail, which prints why
 * and aborts, so libFuzzer records the input as a crash. */
#ifndef GY_FUZZ_UTIL_H
#define GY_FUZZ_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The libFuzzer entry points each harness defines (prototypes for -Wmissing-prototypes). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fuzz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz property broken: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF): what JSON (jansson) and protobuf strings require. */
__attribute__((unused)) static int fuzz_utf8_ok(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t k;
    unsigned min, cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      k = 1, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      k = 2, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      k = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return 0;
    }
    for (size_t j = 1; j <= k; j++) {
      if (i + j >= n || (p[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (p[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += k + 1;
  }
  return 1;
}

/* A private temporary file, created once per process; fuzz_write_temp replaces its content. */
static const char *fuzz_temp_path(const char *suffix) {
  static char path[256];
  if (!path[0]) {
    snprintf(path, sizeof(path), "/tmp/gyro-fuzz-%d-XXXXXX%s", (int)getpid(), suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    if (fd < 0) fuzz_fail("cannot create a temporary file");
    close(fd);
  }
  return path;
}

__attribute__((unused)) static const char *fuzz_write_temp(const uint8_t *data, size_t size,
                                                           const char *suffix) {
  const char *path = fuzz_temp_path(suffix);
  FILE *f = fopen(path, "wb");
  if (!f) fuzz_fail("cannot write %s", path);
  if (size && fwrite(data, 1, size, f) != size) fuzz_fail("cannot write %s", path);
  fclose(f);
  return path;
}

/* Removes the temporary file when the process exits. */
__attribute__((unused)) static void fuzz_temp_cleanup(void) {
  const char *p = fuzz_temp_path("");
  if (p[0]) unlink(p);
}

#endif
