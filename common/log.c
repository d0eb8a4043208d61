/*
 * log: JSON-lines logging on stderr and JSON records on stdout (jansson).
 *
 * API: gy_log_set_level(), gy_log(), gy_json_emit().
 *
 * A log line is {"ts":"2024-05-20T12:34:56.789Z","level":"info","component":...,"msg":...}:
 * the time is UTC (ISO-8601 with milliseconds), the message is printf-formatted.
 *
 * Invariants: every line (log or record) is built in memory first and written with a single
 * fputs, so lines from several threads never interleave inside a line (stdio locks the stream
 * for each call). Messages that are not valid UTF-8 (jansson refuses them) are logged with the
 * offending bytes replaced by '?', so a log call never drops a message and never fails. The level
 * is an atomic int: setting it from one thread while others log is safe.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int log_level = GY_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gy_log_set_level(gy_log_level_t level) {
  if (level < GY_LOG_DEBUG) level = GY_LOG_DEBUG;
  if (level > GY_LOG_ERROR) level = GY_LOG_ERROR;
  atomic_store(&log_level, (int)level);
}

/* Writes the current UTC time as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (at least 32 bytes). */
static void iso8601_now(char *buf, size_t len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

/* A JSON string for s; bytes that break UTF-8 become '?'. Returns a new reference (or NULL
 * when out of memory). */
static json_t *json_string_lossy(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  char *copy = strdup(s);
  if (!copy) return NULL;
  /* Replace every non-ASCII byte and control byte jansson might refuse; simple and safe. */
  for (char *p = copy; *p; p++)
    if ((unsigned char)*p >= 0x80) *p = '?';
  j = json_string(copy);
  free(copy);
  return j;
}

/* Dumps obj compactly, appends '\n' and writes it with one fputs. */
static void write_line(FILE *f, json_t *obj) {
  char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!s) return;
  size_t n = strlen(s);
  char *line = malloc(n + 2);
  if (line) {
    memcpy(line, s, n);
    line[n] = '\n';
    line[n + 1] = '\0';
    fputs(line, f);
    free(line);
  }
  free(s);
  fflush(f);
}

void gy_log(gy_log_level_t level, const char *component, const char *fmt, ...) {
  if ((int)level < atomic_load(&log_level)) return;
  if (level < GY_LOG_DEBUG || level > GY_LOG_ERROR) level = GY_LOG_ERROR;

  char small[512], *msg = small, *big = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0) {
    msg = "(unformattable log message)";
  } else if ((size_t)n >= sizeof(small)) {
    big = malloc((size_t)n + 1);
    if (big) {
      va_start(ap, fmt);
      vsnprintf(big, (size_t)n + 1, fmt, ap);
      va_end(ap);
      msg = big;
    } /* else: keep the truncated message */
  }

  char ts[48];
  iso8601_now(ts, sizeof(ts));
  json_t *obj = json_object();
  if (obj) {
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    json_object_set_new(obj, "component", json_string_lossy(component ? component : "gyro"));
    json_object_set_new(obj, "msg", json_string_lossy(msg));
    write_line(stderr, obj);
    json_decref(obj);
  }
  free(big);
}

void gy_json_emit(json_t *obj) {
  if (!obj) return;
  write_line(stdout, obj);
  json_decref(obj);
}
