/* log: each line on stderr is one JSON object with an ISO-8601 UTC millisecond timestamp, the
 * level filter drops lower levels, long and non-UTF-8 messages survive, and gy_json_emit writes
 * one compact line on stdout. stderr and stdout are redirected into files in a temporary
 * folder and read back with jansson. */
#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/test.h"

/* Runs fn with fd (1 or 2) redirected into path; returns the captured text (caller frees). */
static char *capture(int fd, const char *path, void (*fn)(void)) {
  FILE *stream = fd == 1 ? stdout : stderr;
  fflush(stream);
  int saved = dup(fd);
  int f = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(saved >= 0 && f >= 0);
  dup2(f, fd);
  close(f);
  fn();
  fflush(stream);
  dup2(saved, fd);
  close(saved);
  FILE *in = fopen(path, "rb");
  REQUIRE(in);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof(buf) - 1, in);
  fclose(in);
  buf[n] = '\0';
  return strdup(buf);
}

static void log_some(void) {
  gy_log_set_level(GY_LOG_INFO);
  gy_log(GY_LOG_DEBUG, "test", "hidden %d", 1);
  gy_log(GY_LOG_INFO, "test", "shown %d \"quoted\"", 2);
  gy_log(GY_LOG_ERROR, NULL, "bad bytes \xff\xfe end");
  char big[3000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  gy_log(GY_LOG_WARN, "test", "%s", big);
  gy_log_set_level(GY_LOG_ERROR);
  gy_log(GY_LOG_WARN, "test", "hidden too");
  gy_log_set_level(GY_LOG_DEBUG);
  gy_log(GY_LOG_DEBUG, "test", "debug now");
  gy_log_set_level(GY_LOG_INFO);
}

static void emit_some(void) {
  gy_json_emit(json_pack("{s:s, s:i}", "type", "step", "step", 3));
  gy_json_emit(NULL); /* harmless */
}

int main(void) {
  char dir[] = "/tmp/gy_log_XXXXXX", path[64];
  REQUIRE(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/out.txt", dir);

  char *text = capture(2, path, log_some);
  regex_t ts;
  REQUIRE(regcomp(&ts, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                  REG_EXTENDED | REG_NOSUB) == 0);
  const char *want_level[] = {"info", "error", "warn", "debug"};
  int lines = 0;
  for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save), lines++) {
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    CHECK_MSG(o != NULL, "line %d is not JSON: %s", lines, je.text);
    if (!o) continue;
    const char *t = json_string_value(json_object_get(o, "ts"));
    const char *lv = json_string_value(json_object_get(o, "level"));
    const char *comp = json_string_value(json_object_get(o, "component"));
    const char *msg = json_string_value(json_object_get(o, "msg"));
    CHECK(t && regexec(&ts, t, 0, NULL, 0) == 0);
    CHECK(lv && comp && msg);
    if (lines < 4 && lv) CHECK_MSG(!strcmp(lv, want_level[lines]), "%s", lv);
    if (lines == 0 && msg) CHECK(!strcmp(msg, "shown 2 \"quoted\""));
    if (lines == 1 && msg && comp) {
      CHECK(!strcmp(msg, "bad bytes ?? end"));
      CHECK(!strcmp(comp, "gyro"));
    }
    if (lines == 2 && msg) CHECK_EQ_INT(strlen(msg), 2999);
    if (lines == 3 && msg) CHECK(!strcmp(msg, "debug now"));
    json_decref(o);
  }
  CHECK_EQ_INT(lines, 4);
  regfree(&ts);
  free(text);

  text = capture(1, path, emit_some);
  CHECK_MSG(!strcmp(text, "{\"type\":\"step\",\"step\":3}\n"), "%s", text);
  free(text);

  unlink(path);
  rmdir(dir);
  GY_TEST_END();
}
