/* test_event_kinds: the table of audit event kinds (controller/event_kinds.h). Every name is
 * unique, non-empty and [a-z_]+ and round-trips through the lookup; the attributes that used to
 * be strcmp chains (the log level, the /metrics tallies) say what they said; /api/event_kinds
 * lists every kind in the table's order; and every kind the shell tests look for in events is a
 * kind of the table (they read the wire, so a renamed kind would leave them waiting). */
#include <glob.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "controller/event_kinds.h"
#include "controller/telemetry.h"
#include "tests/test.h"

static void test_names(void) {
  for (int k = 0; k < GY_EVENT_NKINDS; k++) {
    const char *n = gy_event_kind_name((gy_event_kind_t)k);
    REQUIRE(n != NULL);
    CHECK_MSG(n[0] != 0, "kind %d has an empty name", k);
    CHECK_MSG(strspn(n, "abcdefghijklmnopqrstuvwxyz_") == strlen(n), "kind %d: \"%s\"", k, n);
    CHECK_MSG(strlen(n) < 32, "kind %d: \"%s\" is longer than the journal keeps", k, n);
    for (int j = 0; j < k; j++)
      CHECK_MSG(strcmp(n, gy_event_kind_name((gy_event_kind_t)j)), "kinds %d and %d: \"%s\"", j, k,
                n);
    gy_event_kind_t back = GY_EVENT_NKINDS;
    CHECK_EQ_INT(gy_event_kind_from_name(n, &back), 0);
    CHECK_EQ_INT((int)back, k);
    CHECK(gy_event_kind_info((gy_event_kind_t)k)->name == n);
  }
  gy_event_kind_t out = GY_EVENT_DONE;
  CHECK_EQ_INT(gy_event_kind_from_name("no_such_kind", &out), GY_ENOENT);
  CHECK_EQ_INT(gy_event_kind_from_name("", &out), GY_ENOENT);
  CHECK_EQ_INT(gy_event_kind_from_name(NULL, &out), GY_ENOENT);
  CHECK_EQ_INT((int)out, (int)GY_EVENT_DONE); /* untouched */
  CHECK(!strcmp(gy_event_kind_name(GY_EVENT_NKINDS), "unknown"));
  CHECK(!strcmp(gy_event_kind_name((gy_event_kind_t)-1), "unknown"));
  CHECK(!strcmp(gy_event_kind_name(GY_EVENT_GANG_FORMED), "gang_formed"));
  CHECK(!strcmp(gy_event_marker_name(GY_EVENT_MARKER_SPIKE), "spike"));
  CHECK(!strcmp(gy_event_marker_name(GY_EVENT_MARKER_NONE), ""));
  CHECK(!strcmp(gy_event_marker_name(GY_EVENT_NMARKERS), ""));
}

/* The log level and the tallies, as svc_events.c and telemetry.c decided them by name. */
static void test_attributes(void) {
  const char *warn[] = {"worker_lost", "worker_hung",     "reform_stalled",   "refused",
                        "malformed",   "rollback_failed", "directive_failed", "spike_suspected",
                        "halted",      "alert",           "anomaly"};
  int nwarn = 0;
  for (int k = 0; k < GY_EVENT_NKINDS; k++) {
    const gy_event_kind_info_t *in = gy_event_kind_info((gy_event_kind_t)k);
    int want = 0;
    for (size_t i = 0; i < sizeof(warn) / sizeof(warn[0]); i++)
      want |= !strcmp(in->name, warn[i]);
    nwarn += want;
    CHECK_MSG((in->level == GY_EVENT_LEVEL_WARN) == want, "%s: level %d", in->name, in->level);
    CHECK(in->marker >= 0 && in->marker < GY_EVENT_NMARKERS);
    CHECK(in->notable == 0 || in->notable == 1);
    gy_event_tally_t t = !strcmp(in->name, "spike_suspected")   ? GY_EVENT_TALLY_SPIKES
                         : !strcmp(in->name, "recovered_spike") ? GY_EVENT_TALLY_RECOVERED
                         : !strcmp(in->name, "directive")       ? GY_EVENT_TALLY_DIRECTIVES
                                                                : GY_EVENT_TALLY_NONE;
    CHECK_MSG(in->tally == t, "%s: tally %d", in->name, in->tally);
  }
  CHECK_EQ_INT(nwarn, (int)(sizeof(warn) / sizeof(warn[0])));
  CHECK(gy_event_kind_info(GY_EVENT_ROLLBACK)->marker == GY_EVENT_MARKER_ROLLBACK);
  CHECK(gy_event_kind_info(GY_EVENT_NKINDS)->level == GY_EVENT_LEVEL_INFO);
}

/* /api/event_kinds: every kind, in order, with its attributes. */
static void test_endpoint(void) {
  json_t *j = gy_telemetry_event_kinds();
  REQUIRE(j != NULL);
  json_t *a = json_object_get(j, "kinds");
  REQUIRE(json_is_array(a));
  CHECK_EQ_INT(json_array_size(a), GY_EVENT_NKINDS);
  for (size_t k = 0; k < json_array_size(a) && k < GY_EVENT_NKINDS; k++) {
    const gy_event_kind_info_t *in = gy_event_kind_info((gy_event_kind_t)k);
    json_t *e = json_array_get(a, k);
    const char *name = json_string_value(json_object_get(e, "name"));
    const char *level = json_string_value(json_object_get(e, "level"));
    const char *marker = json_string_value(json_object_get(e, "marker"));
    CHECK_MSG(name && !strcmp(name, in->name), "kind %zu: %s", k, name ? name : "(none)");
    CHECK(level && !strcmp(level, in->level == GY_EVENT_LEVEL_WARN ? "warn" : "info"));
    CHECK(marker && !strcmp(marker, gy_event_marker_name(in->marker)));
    CHECK(json_is_boolean(json_object_get(e, "notable")) &&
          json_is_true(json_object_get(e, "notable")) == in->notable);
  }
  json_decref(j);
}

/* The source tree: GY_SOURCE_DIR from ctest, else derived from this file's path. */
static const char *source_dir(void) {
  static char buf[1024];
  const char *env = getenv("GY_SOURCE_DIR");
  if (env && *env) return env;
  snprintf(buf, sizeof(buf), "%s", __FILE__);
  char *p = strstr(buf, "/tests/unit/test_event_kinds.c");
  if (p) *p = 0;
  return buf;
}

/* Checks every kind one shell test looks for: e["kind"] == "X", e.get("kind") == "X" and
 * "X" [not] in kinds, skipping lines about directives (whose kinds are another table). Returns
 * the number of kinds checked. */
static int check_shell_file(const char *path, const regex_t *re) {
  FILE *f = fopen(path, "r");
  if (!f) {
    CHECK_MSG(0, "cannot read %s", path);
    return 0;
  }
  char line[4096];
  int n = 0, lineno = 0;
  while (fgets(line, sizeof(line), f)) {
    lineno++;
    if (strstr(line, "\"directive\"")) continue;
    const char *p = line;
    regmatch_t m[4];
    while (!regexec(re, p, 4, m, 0)) {
      int g = m[1].rm_so >= 0 ? 1 : 2;
      char kind[64];
      int len = (int)(m[g].rm_eo - m[g].rm_so);
      snprintf(kind, sizeof(kind), "%.*s", len, p + m[g].rm_so);
      gy_event_kind_t k;
      CHECK_MSG(gy_event_kind_from_name(kind, &k) == 0, "%s:%d: \"%s\" is no event kind", path,
                lineno, kind);
      n++;
      p += m[0].rm_eo;
    }
  }
  fclose(f);
  return n;
}

static void test_shell_tests_use_kinds(void) {
  regex_t re;
  REQUIRE(regcomp(&re,
                  "kind\"[])] *== *\"([a-z_]+)\"|"
                  "\"([a-z_]+)\" (not )?in kinds",
                  REG_EXTENDED) == 0);
  int nfiles = 0, nkinds = 0;
  const char *dirs[] = {"tests/e2e", "tests/integration"};
  for (size_t d = 0; d < 2; d++) {
    char pat[1200];
    snprintf(pat, sizeof(pat), "%s/%s/*.sh", source_dir(), dirs[d]);
    glob_t g;
    if (glob(pat, 0, NULL, &g)) continue;
    for (size_t i = 0; i < g.gl_pathc; i++, nfiles++)
      nkinds += check_shell_file(g.gl_pathv[i], &re);
    globfree(&g);
  }
  regfree(&re);
  CHECK_MSG(nfiles > 0, "no shell tests under %s", source_dir());
  CHECK_MSG(nkinds > 0, "no kinds found in the shell tests (has their form changed?)");
}

int main(void) {
  RUN(test_names);
  RUN(test_attributes);
  RUN(test_endpoint);
  RUN(test_shell_tests_use_kinds);
  GY_TEST_END();
}
