/* log: JSON-lines logging to stderr, and JSON output helpers (jansson). */
#ifndef GY_LOG_H
#define GY_LOG_H

#include <jansson.h>

typedef enum {
  GY_LOG_DEBUG = 0,
  GY_LOG_INFO = 1,
  GY_LOG_WARN = 2,
  GY_LOG_ERROR = 3
} gy_log_level_t;

void gy_log_set_level(gy_log_level_t level);
/* Writes {"ts":..., "level":..., "component":..., "msg":...} as one line on stderr. */
void gy_log(gy_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes obj as one compact line on stdout (flushed) and releases the caller's reference. */
void gy_json_emit(json_t *obj);

#endif
