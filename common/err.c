/*
 * err: the one table of gyro error codes.
 *
 * API: gy_strerror(), gy_err_name(). Both return static strings and never fail.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *gy_strerror(int err) {
  switch (err) {
  case GY_OK:
    return "success";
#define GY_ERR_STR(name, val, msg)                                                                 \
  case GY_##name:                                                                                  \
    return msg;
    GY_ERRNO_MAP(GY_ERR_STR)
#undef GY_ERR_STR
  }
  return "unknown error";
}

const char *gy_err_name(int err) {
  switch (err) {
  case GY_OK:
    return "GY_OK";
#define GY_ERR_NAME(name, val, msg)                                                                \
  case GY_##name:                                                                                  \
    return "GY_" #name;
    GY_ERRNO_MAP(GY_ERR_NAME)
#undef GY_ERR_NAME
  }
  return "GY_UNKNOWN";
}

void gy_errmsg(char *errmsg, size_t errlen, const char *fmt, ...) {
  if (!errmsg || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, errlen, fmt, ap);
  va_end(ap);
}
