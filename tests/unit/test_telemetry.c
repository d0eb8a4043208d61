/* telemetry (controller/telemetry.h): the record of steps, events and counters, its bounded
 * memory (ring, down-sampled history, abandoned timelines), the dashboard's JSON and the
 * Prometheus text exposition (format 0.0.4), checked line by line: HELP and TYPE before a
 * family's samples, one TYPE per family, valid metric and label names, counters named *_total,
 * label values escaped, values that parse. A reader thread runs against the writer to show the
 * locking holds. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/err.h"
#include "controller/telemetry.h"
#include "tests/test.h"

static double rates[8] = {100, 200, 300, 400, 500, 600, 700, 800};
static double rate(const void *ud, int r) {
  (void)ud;
  return rates[r];
}

static void feed(gy_telemetry_t *t, int64_t step, const char *const *names, int nch) {
  double loss[4] = {2.0 + (double)step * 1e-3, 3.0, NAN, 5.0};
  gy_telemetry_step_t s = {.step = step,
                           .loss = 2.5,
                           .nch = nch,
                           .ch_name = names,
                           .ch_loss = loss,
                           .grad_norm = 1.0,
                           .grad_norm_shallow = 0.5,
                           .grad_norm_deep = 0.25,
                           .lr = 1e-3,
                           .tokens_per_s = 1000,
                           .step_ms = 12.5,
                           .nranks = 4,
                           .rank_rate = rate};
  gy_telemetry_step(t, &s);
}

static int valid_name(const char *s, size_t n, int metric) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':') ||
             (i && c >= '0' && c <= '9');
    if (!ok) return 0;
  }
  return 1;
}

/* Checks the exposition text line by line (see the top); returns the number of problems and
 * prints each. */
static int check_exposition(const char *text) {
  int bad = 0;
  char typed[128][96];
  char types[128][16];
  int ntyped = 0;
  char cur[96] = "";
  const char *p = text;
  int lineno = 0;
  while (*p) {
    const char *e = strchr(p, '\n');
    if (!e) {
      fprintf(stderr, "exposition: last line without a newline\n");
      return bad + 1;
    }
    lineno++;
    size_t n = (size_t)(e - p);
    char line[2048];
    if (n >= sizeof(line)) n = sizeof(line) - 1;
    memcpy(line, p, n);
    line[n] = 0;
    p = e + 1;
    if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7)) {
      const char *name = line + 7, *sp = strchr(name, ' ');
      if (!sp || !valid_name(name, (size_t)(sp - name), 1)) {
        fprintf(stderr, "exposition line %d: bad name: %s\n", lineno, line);
        bad++;
        continue;
      }
      if (line[2] == 'T') {
        for (int i = 0; i < ntyped; i++)
          if (!strncmp(typed[i], name, (size_t)(sp - name)) && !typed[i][sp - name]) {
            fprintf(stderr, "exposition line %d: second TYPE for %s\n", lineno, typed[i]);
            bad++;
          }
        const char *ty = sp + 1;
        if (strcmp(ty, "gauge") && strcmp(ty, "counter") && strcmp(ty, "untyped")) {
          fprintf(stderr, "exposition line %d: type %s\n", lineno, ty);
          bad++;
        }
        if (ntyped < 128) {
          snprintf(typed[ntyped], sizeof(typed[0]), "%.*s", (int)(sp - name), name);
          snprintf(types[ntyped], sizeof(types[0]), "%s", ty);
          if (!strcmp(ty, "counter") && (sp - name < 6 || strncmp(sp - 6, "_total", 6))) {
            fprintf(stderr, "exposition line %d: counter %s not named *_total\n", lineno,
                    typed[ntyped]);
            bad++;
          }
          snprintf(cur, sizeof(cur), "%s", typed[ntyped]);
          ntyped++;
        }
      }
      continue;
    }
    if (line[0] == '#' || !line[0]) {
      fprintf(stderr, "exposition line %d: unexpected: '%s'\n", lineno, line);
      bad++;
      continue;
    }
    /* a sample: NAME[{LABELS}] VALUE */
    size_t nl = strcspn(line, "{ ");
    if (!valid_name(line, nl, 1) || strncmp(line, cur, nl) || cur[nl]) {
      fprintf(stderr, "exposition line %d: sample outside its family (%s): %s\n", lineno, cur,
              line);
      bad++;
      continue;
    }
    const char *q = line + nl;
    if (*q == '{') {
      q++;
      while (*q != '}') {
        size_t ln = strcspn(q, "=");
        if (!valid_name(q, ln, 0) || q[ln] != '=' || q[ln + 1] != '"') {
          fprintf(stderr, "exposition line %d: bad label: %s\n", lineno, line);
          bad++;
          break;
        }
        q += ln + 2;
        while (*q && *q != '"') {
          if (*q == '\\') {
            if (q[1] != '\\' && q[1] != '"' && q[1] != 'n') {
              fprintf(stderr, "exposition line %d: bad escape: %s\n", lineno, line);
              bad++;
            }
            q++;
          }
          if (*q) q++;
        }
        if (*q != '"') {
          fprintf(stderr, "exposition line %d: unterminated label value: %s\n", lineno, line);
          bad++;
          break;
        }
        q++;
        if (*q == ',') q++;
      }
      if (*q != '}') continue;
      q++;
    }
    if (*q != ' ') {
      fprintf(stderr, "exposition line %d: no value: %s\n", lineno, line);
      bad++;
      continue;
    }
    q++;
    char *end;
    strtod(q, &end);
    if (strcmp(q, "NaN") && strcmp(q, "+Inf") && strcmp(q, "-Inf") && (end == q || *end)) {
      fprintf(stderr, "exposition line %d: bad value '%s'\n", lineno, q);
      bad++;
    }
  }
  return bad;
}

/* The value of the sample line that starts with `prefix` ("name{labels} " or "name "). */
static double sample_value(const char *text, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, prefix, n)) return strtod(p + n, NULL);
  return -12345;
}

static void test_opts(void) {
  char err[200] = "";
  gy_telemetry_t *t = (gy_telemetry_t *)1;
  gy_telemetry_opts_t o = {.world = 0};
  CHECK_EQ_INT(gy_telemetry_create(&t, &o, err, sizeof(err)), GY_EINVAL);
  CHECK(t == NULL);
  CHECK(strstr(err, "world") != NULL);
  o = (gy_telemetry_opts_t){.world = 2, .ring_steps = 4};
  CHECK_EQ_INT(gy_telemetry_create(&t, &o, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, "ring_steps") != NULL);
  /* NULL is a no-op everywhere */
  gy_telemetry_step(NULL, NULL);
  gy_telemetry_event(NULL, 1, 0, 0, GY_EVENT_STATE, "y");
  gy_telemetry_report(NULL);
  gy_telemetry_state(NULL, "TRAIN", 1, 1);
  gy_telemetry_checkpoint(NULL, 1, 0, 0);
  gy_telemetry_alert(NULL, "halted", "sent");
  char *m;
  size_t ml;
  CHECK_EQ_INT(gy_telemetry_metrics(NULL, 0, &m, &ml), GY_EINVAL);
  CHECK(gy_telemetry_series(NULL, -1, 0) == NULL);
  CHECK(gy_telemetry_ready(NULL, NULL, 0) == 0);
  gy_telemetry_destroy(NULL);
}

static void test_escape(void) {
  char b[64];
  CHECK_EQ_INT(gy_telemetry_escape_label(b, sizeof(b), "a\"b\\c\nd"), 10);
  CHECK(!strcmp(b, "a\\\"b\\\\c\\nd"));
  CHECK_EQ_INT(gy_telemetry_escape_label(b, 4, "abcdef"), 6);
  CHECK(!strcmp(b, "")); /* did not fit */
  CHECK_EQ_INT(gy_telemetry_escape_label(b, sizeof(b), ""), 0);
  CHECK(!strcmp(b, ""));
}

static void test_series_and_metrics(void) {
  char err[200];
  gy_telemetry_t *t;
  gy_telemetry_opts_t o = {.run_name = "r\"1", .world = 4, .tp = 2, .steps = 100};
  REQUIRE(gy_telemetry_create(&t, &o, err, sizeof(err)) == 0);
  const char *names[] = {"zh", "en", "we\"ird\\name\nx"};
  /* before any step: a valid exposition, not ready */
  char *m;
  size_t ml;
  REQUIRE(gy_telemetry_metrics(t, 0, &m, &ml) == 0);
  CHECK_EQ_INT(check_exposition(m), 0);
  CHECK_EQ_INT(ml, strlen(m));
  CHECK(sample_value(m, "gyro_run_step ") == -1);
  CHECK(sample_value(m, "gyro_run_state{state=\"INIT\"} ") == 1);
  free(m);
  char why[200];
  CHECK(gy_telemetry_ready(t, why, sizeof(why)) == 0);
  gy_telemetry_set_ready(t, 1, "serving");
  CHECK(gy_telemetry_ready(t, why, sizeof(why)) == 1);
  CHECK(strstr(why, "serving") != NULL);
  gy_telemetry_state(t, "TRAIN", 3, 1);
  for (int64_t s = 0; s < 100; s++)
    feed(t, s, names, 3);
  for (int i = 0; i < 250; i++)
    gy_telemetry_report(t);
  gy_telemetry_event(t, 1, 1e9, 10, GY_EVENT_SPIKE_SUSPECTED, "loss/en=8.5 (median 2.6)");
  gy_telemetry_event(t, 2, 1e9, 12, GY_EVENT_RECOVERED_SPIKE, "back");
  gy_telemetry_event(t, 3, 1e9, 12, GY_EVENT_DIRECTIVE, "sent");
  gy_telemetry_event(t, 4, 1e9, 12, GY_EVENT_NKINDS, "text"); /* out of range: "other" */
  gy_telemetry_rollback(t, 50, 16);
  gy_telemetry_checkpoint(t, 90, 1000.0, 4096);
  gy_telemetry_eval(t, 100, "en", 2.5, 12.18);
  gy_telemetry_gpu(t, 1, 71.5, 1e9, 8e10, 0.93);
  gy_telemetry_gpu(t, 9, 99, 0, 0, 0); /* outside the world: ignored */
  gy_telemetry_alert(t, "halted", "sent");
  gy_telemetry_alert(t, "halted", "suppressed");
  gy_telemetry_alert(t, "halted", "bogus"); /* unknown outcome: ignored */
  REQUIRE(gy_telemetry_metrics(t, 1010.0, &m, &ml) == 0);
  CHECK_EQ_INT(check_exposition(m), 0);
  CHECK(sample_value(m, "gyro_run_step ") == 99);
  CHECK(sample_value(m, "gyro_run_state{state=\"TRAIN\"} ") == 1);
  CHECK(sample_value(m, "gyro_run_state{state=\"INIT\"} ") == 0);
  CHECK(sample_value(m, "gyro_gang_generation ") == 3);
  CHECK(sample_value(m, "gyro_reports_total ") == 250);
  CHECK(sample_value(m, "gyro_spikes_detected_total ") == 1);
  CHECK(sample_value(m, "gyro_spikes_recovered_total ") == 1);
  CHECK(sample_value(m, "gyro_directives_total ") == 1);
  CHECK(sample_value(m, "gyro_rollbacks_total ") == 1);
  CHECK(sample_value(m, "gyro_skipped_samples_total ") == 16);
  CHECK_NEAR(sample_value(m, "gyro_train_channel_loss_nats{channel=\"zh\"} "), 2.099, 1e-9);
  CHECK(strstr(m, "gyro_train_channel_loss_nats{channel=\"we\\\"ird\\\\name\\nx\"} NaN\n"));
  CHECK(strstr(m, "gyro_run_info{run=\"r\\\"1\"} 1\n"));
  CHECK(sample_value(m, "gyro_events_total{kind=\"spike_suspected\"} ") == 1);
  CHECK(sample_value(m, "gyro_events_total{kind=\"directive\"} ") == 1);
  CHECK(sample_value(m, "gyro_events_total{kind=\"other\"} ") == 1);
  CHECK(!strstr(m, "gyro_events_total{kind=\"halted\"}")); /* none: no sample */
  CHECK(sample_value(m, "gyro_rank_throughput_tokens_per_second{rank=\"3\"} ") == 400);
  CHECK_NEAR(sample_value(m, "gyro_train_step_duration_seconds "), 0.0125, 1e-12);
  CHECK(sample_value(m, "gyro_checkpoint_step ") == 90);
  CHECK(sample_value(m, "gyro_checkpoint_age_seconds ") == 10);
  CHECK(sample_value(m, "gyro_checkpoint_size_bytes ") == 4096);
  CHECK_NEAR(sample_value(m, "gyro_eval_perplexity{source=\"en\"} "), 12.18, 1e-9);
  CHECK(sample_value(m, "gyro_gpu_temperature_celsius{rank=\"1\"} ") == 71.5);
  CHECK(!strstr(m, "gyro_gpu_temperature_celsius{rank=\"0\"}")); /* not reported */
  CHECK(!strstr(m, "rank=\"9\""));
  CHECK(sample_value(m, "gyro_alerts_total{kind=\"halted\",outcome=\"sent\"} ") == 1);
  CHECK(sample_value(m, "gyro_alerts_total{kind=\"halted\",outcome=\"suppressed\"} ") == 1);
  free(m);

  /* the dashboard's series: all, then after a step */
  json_t *j = gy_telemetry_series(t, -1, 0);
  REQUIRE(j);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "steps")), 100);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "timeline")), 0);
  json_t *en = json_object_get(json_object_get(j, "loss_ch"), "en");
  CHECK(json_is_real(json_array_get(en, 5)));
  json_t *odd = json_object_get(json_object_get(j, "loss_ch"), "we\"ird\\name\nx");
  CHECK(json_is_null(json_array_get(odd, 5))); /* NaN: no sample */
  json_t *rk = json_object_get(j, "rank_tokens_per_s");
  CHECK_EQ_INT(json_array_size(rk), 4);
  CHECK(json_real_value(json_array_get(json_array_get(rk, 2), 7)) == 300);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "eval")), 1);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "abandoned")), 0);
  CHECK(json_integer_value(json_object_get(json_object_get(j, "checkpoint"), "step")) == 90);
  CHECK(json_integer_value(json_object_get(json_object_get(j, "counters"), "reports")) == 250);
  char *dump = json_dumps(j, 0);
  CHECK(dump != NULL);
  free(dump);
  json_decref(j);
  j = gy_telemetry_series(t, 89, 0);
  json_t *st = json_object_get(j, "steps");
  CHECK_EQ_INT(json_array_size(st), 10);
  CHECK_EQ_INT(json_integer_value(json_array_get(st, 0)), 90);
  CHECK(json_object_get(j, "abandoned") == NULL);
  json_decref(j);

  /* a rollback re-runs steps 60..: a new timeline, the old steps abandoned */
  for (int64_t s = 60; s < 70; s++)
    feed(t, s, names, 3);
  j = gy_telemetry_series(t, -1, 0);
  st = json_object_get(j, "steps");
  CHECK_EQ_INT(json_array_size(st), 70);
  CHECK_EQ_INT(json_integer_value(json_array_get(st, 69)), 69);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "timeline")), 1);
  json_t *ab = json_object_get(j, "abandoned");
  CHECK_EQ_INT(json_array_size(ab), 1);
  json_t *abs = json_object_get(json_array_get(ab, 0), "steps");
  CHECK_EQ_INT(json_array_size(abs), 40);
  CHECK_EQ_INT(json_integer_value(json_array_get(abs, 0)), 60);
  CHECK_EQ_INT(json_integer_value(json_array_get(abs, 39)), 99);
  json_decref(j);
  REQUIRE(gy_telemetry_metrics(t, 0, &m, &ml) == 0);
  CHECK(sample_value(m, "gyro_run_timeline ") == 1);
  CHECK(sample_value(m, "gyro_run_step ") == 69);
  free(m);
  gy_telemetry_destroy(t);
}

static void test_bounds(void) {
  char err[200];
  gy_telemetry_t *t;
  gy_telemetry_opts_t o = {
      .world = 100, .ring_steps = 16, .coarse_points = 16, .max_events = 16, .max_abandoned = 16};
  REQUIRE(gy_telemetry_create(&t, &o, err, sizeof(err)) == 0);
  const char *names[] = {"a"};
  for (int64_t s = 0; s < 1000; s++)
    feed(t, s, names, 1);
  json_t *j = gy_telemetry_series(t, -1, 0);
  json_t *st = json_object_get(j, "steps");
  size_t n = json_array_size(st);
  CHECK_MSG(n <= 32 && n >= 16 + 8, "%zu points", n);
  CHECK_EQ_INT(json_integer_value(json_array_get(st, 0)), 0);
  for (size_t i = 1; i < n; i++)
    CHECK(json_integer_value(json_array_get(st, i)) >
          json_integer_value(json_array_get(st, i - 1)));
  for (size_t i = n - 16; i < n; i++) /* the ring: the newest 16 at full resolution */
    CHECK_EQ_INT(json_integer_value(json_array_get(st, i)), 1000 - (int64_t)(n - i));
  int64_t stride = json_integer_value(json_object_get(j, "stride"));
  CHECK(stride >= 32 && (stride & (stride - 1)) == 0);
  /* 4 rank series for 100 ranks? no: min(world, GY_TM_RANK_SERIES), NaN past the 8 we have */
  CHECK_EQ_INT(json_array_size(json_object_get(j, "rank_tokens_per_s")), GY_TM_RANK_SERIES);
  json_decref(j);
  /* a rewind deep into the down-sampled history drops it there */
  feed(t, 500, names, 1);
  j = gy_telemetry_series(t, -1, 0);
  st = json_object_get(j, "steps");
  n = json_array_size(st);
  CHECK_EQ_INT(json_integer_value(json_array_get(st, n - 1)), 500);
  CHECK(n >= 2 && json_integer_value(json_array_get(st, n - 2)) < 500);
  CHECK(json_array_size(
            json_object_get(json_array_get(json_object_get(j, "abandoned"), 0), "steps")) == 16);
  json_decref(j);
  /* events: a ring of 16; since and max */
  for (uint64_t id = 1; id <= 100; id++)
    gy_telemetry_event(t, id, 0, (int64_t)id, GY_EVENT_STATE,
                       id == 100 ? "bad \xff\xfe utf-8 \"q\"\n" : "x");
  j = gy_telemetry_events(t, 0, 0);
  json_t *ev = json_object_get(j, "events");
  CHECK_EQ_INT(json_array_size(ev), 16);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(ev, 0), "id")), 85);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "last_id")), 100);
  const char *txt = json_string_value(json_object_get(json_array_get(ev, 15), "text"));
  CHECK(txt && !strcmp(txt, "bad ?? utf-8 \"q\"\n"));
  json_decref(j);
  j = gy_telemetry_events(t, 97, 2);
  ev = json_object_get(j, "events");
  CHECK_EQ_INT(json_array_size(ev), 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(ev, 0), "id")), 98);
  json_decref(j);
  j = gy_telemetry_events(t, 100, 0);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "events")), 0);
  json_decref(j);
  gy_telemetry_destroy(t);
}

/* A reader thread against the writer: every exposition it reads is whole and valid. */
typedef struct {
  gy_telemetry_t *t;
  atomic_int stop;
  atomic_int reads;
  int bad;
} reader_t;

static void *reader(void *ud) {
  reader_t *r = ud;
  while (!r->stop) {
    char *m;
    size_t ml;
    if (gy_telemetry_metrics(r->t, 0, &m, &ml) == 0) {
      if (check_exposition(m)) r->bad++;
      free(m);
    }
    json_t *j = gy_telemetry_series(r->t, -1, 0);
    if (!j ||
        json_array_size(json_object_get(j, "steps")) != json_array_size(json_object_get(j, "loss")))
      r->bad++;
    json_decref(j);
    json_decref(gy_telemetry_events(r->t, 0, 0));
    r->reads++;
  }
  return NULL;
}

static void test_threads(void) {
  char err[200];
  gy_telemetry_t *t;
  gy_telemetry_opts_t o = {.world = 4, .ring_steps = 256, .coarse_points = 64};
  REQUIRE(gy_telemetry_create(&t, &o, err, sizeof(err)) == 0);
  reader_t r = {.t = t};
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, reader, &r) == 0);
  const char *names[] = {"zh", "en", "code"};
  int64_t s = 0;
  for (; s < 20000 || (r.reads < 20 && s < 50000000); s++) {
    feed(t, s % 3000 == 2999 ? s - 100 : s, names, 3);
    if (s % 50 == 0) gy_telemetry_event(t, (uint64_t)s + 1, 0, s, GY_EVENT_STATE, "x");
    gy_telemetry_report(t);
  }
  r.stop = 1;
  pthread_join(th, NULL);
  CHECK(r.reads > 0);
  CHECK_EQ_INT(r.bad, 0);
  printf("reader: %d reads while %lld steps were written\n", atomic_load(&r.reads), (long long)s);
  gy_telemetry_destroy(t);
}

int main(void) {
  RUN(test_opts);
  RUN(test_escape);
  RUN(test_series_and_metrics);
  RUN(test_bounds);
  RUN(test_threads);
  GY_TEST_END();
}
