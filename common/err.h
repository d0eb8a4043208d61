/* gyro error codes: negative ints generated from one X-macro (CONVENTIONS.md §3). */
#ifndef GY_ERR_H
#define GY_ERR_H

#include <stddef.h>

#define GY_ERRNO_MAP(XX)                                                                           \
  XX(EINVAL, -1, "invalid argument")                                                               \
  XX(ENOMEM, -2, "out of memory")                                                                  \
  XX(EIO, -3, "i/o error")                                                                         \
  XX(ENOENT, -4, "no such file or entry")                                                          \
  XX(ECONFIG, -5, "bad configuration")                                                             \
  XX(ECORRUPT, -6, "corrupt data (checksum or format)")                                            \
  XX(EMISMATCH, -7, "shape, layout or version mismatch")                                           \
  XX(EPROTO, -8, "malformed message")                                                              \
  XX(ERANGE, -9, "value out of range")                                                             \
  XX(EBUSY, -10, "resource busy")                                                                  \
  XX(ECOMM, -11, "collective communication failed")                                                \
  XX(ETIMEDOUT, -12, "timed out")                                                                  \
  XX(ENOTSUP, -13, "not supported")                                                                \
  XX(ENOSPC, -14, "no room left")

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  GY_OK = 0,
#define GY_ERR_ENUM(name, val, msg) GY_##name = (val),
  GY_ERRNO_MAP(GY_ERR_ENUM)
#undef GY_ERR_ENUM
} gy_err_t;

/* Returns a static description of err ("unknown error" for codes outside the map). */
const char *gy_strerror(int err);
/* Returns the static symbolic name of err, e.g. "GY_EIO". */
const char *gy_err_name(int err);

/* Formats a message into errmsg (when errmsg is non-NULL and errlen > 0); the one helper every
 * module uses to fill its caller's error buffer. */
void gy_errmsg(char *errmsg, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif
