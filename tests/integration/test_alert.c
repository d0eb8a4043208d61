/* alert (controller/alert.h) against a real HTTP receiver: python3's http.server on loopback,
 * started by this test, which logs every request it gets as a JSON line and answers by path
 * (/ok: 200; /flaky: 500 the first time, after 1 s, then 200; /down: 503; /bad: 400). Checked: the
 * Slack-compatible body ({"text": ...}, application/json), the retry with back-off after a 500,
 * a final 4xx tried once, max_attempts against a 503, the per-kind rate limit and its
 * "suppressed" note, the straggler streaks, the outcome counters in the telemetry record, bad
 * options refused with a message, and a shutdown with a dead receiver bounded in time. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "controller/alert.h"
#include "controller/run.h"
#include "controller/telemetry.h"
#include "tests/test.h"

static const char *RECEIVER =
    "import http.server, json, sys, time\n"
    "log = open(sys.argv[1], 'a')\n"
    "seen = {}\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))\n"
    "        n = seen.get(self.path, 0); seen[self.path] = n + 1\n"
    "        if self.path == '/flaky' and n == 0: time.sleep(1.0)\n"
    "        code = {'/ok': 200, '/flaky': 500 if n == 0 else 200, '/down': 503,\n"
    "                '/bad': 400}.get(self.path, 404)\n"
    "        log.write(json.dumps({'path': self.path, 'code': code, 'ctype':\n"
    "            self.headers.get('Content-Type'), 'body': body.decode()}) + '\\n'); log.flush()\n"
    "        self.send_response(code); self.send_header('Content-Length', '0'); "
    "self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
    "print(s.server_address[1], flush=True)\n"
    "s.serve_forever()\n";

static char logpath[256];
static pid_t rpid = -1;
static int rfd = -1; /* the read end of the receiver's stdout */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts the receiver; returns its port. */
static int start_receiver(const char *dir) {
  snprintf(logpath, sizeof(logpath), "%s/requests.jsonl", dir);
  int fd[2];
  REQUIRE(pipe(fd) == 0);
  rpid = fork();
  REQUIRE(rpid >= 0);
  if (rpid == 0) {
    dup2(fd[1], 1);
    close(fd[0]);
    execlp("python3", "python3", "-c", RECEIVER, logpath, (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  /* Up to the newline: print() may write the number and the newline in two writes, and the read
   * end stays open for the receiver's life (closing it after the first write would kill the
   * receiver with EPIPE on the second). */
  char buf[32] = "";
  size_t len = 0;
  while (len < sizeof(buf) - 1 && !memchr(buf, '\n', len)) {
    ssize_t n = read(fd[0], buf + len, sizeof(buf) - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n > 0);
    len += (size_t)n;
  }
  rfd = fd[0];
  return atoi(buf);
}

/* The logged requests (a JSON array), waiting up to secs for at least want of them. */
static json_t *requests(size_t want, double secs) {
  double end = now_s() + secs;
  for (;;) {
    json_t *a = json_array();
    FILE *f = fopen(logpath, "r");
    char line[8192];
    while (f && fgets(line, sizeof(line), f))
      json_array_append_new(a, json_loads(line, 0, NULL));
    if (f) fclose(f);
    if (json_array_size(a) >= want || now_s() > end) return a;
    json_decref(a);
    usleep(20000);
  }
}

static const char *req_str(json_t *a, size_t i, const char *key) {
  return json_string_value(json_object_get(json_array_get(a, i), key));
}

/* Waits up to secs for the sender's counts to reach sent and failed (it counts an outcome after
 * the answer, which the receiver logs before it answers); the counts end in *sent, *supp, ... */
static void wait_counts(gy_alert_t *a, uint64_t want_sent, uint64_t want_failed, double secs,
                        uint64_t *sent, uint64_t *supp, uint64_t *failed, uint64_t *dropped) {
  double end = now_s() + secs;
  for (;;) {
    gy_alert_counts(a, sent, supp, failed, dropped);
    if ((*sent >= want_sent && *failed >= want_failed) || now_s() > end) return;
    usleep(20000);
  }
}

static double tm_value(gy_telemetry_t *t, const char *prefix) {
  char *m;
  size_t ml;
  if (gy_telemetry_metrics(t, 0, &m, &ml)) return -1;
  char *p = strstr(m, prefix);
  double v = p ? strtod(p + strlen(prefix), NULL) : -1;
  free(m);
  return v;
}

static double rates[4];
static double rate(const void *ud, int r) {
  (void)ud;
  return rates[r];
}

int main(void) {
  char dir[] = "/tmp/gyro-alert-XXXXXX";
  REQUIRE(mkdtemp(dir));
  int port = start_receiver(dir);
  REQUIRE(port > 0);
  char url[128], err[256];
  gy_telemetry_t *t;
  gy_telemetry_opts_t to = {.run_name = "demo", .world = 4};
  REQUIRE(gy_telemetry_create(&t, &to, err, sizeof(err)) == 0);

  /* bad options */
  gy_alert_t *a = NULL;
  gy_alert_opts_t o = {.url = "ftp://example.org/hook"};
  CHECK_EQ_INT(gy_alert_create(&a, &o, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, "ftp://example.org/hook") != NULL);
  o.url = "http://";
  CHECK_EQ_INT(gy_alert_create(&a, &o, err, sizeof(err)), GY_EINVAL);
  o.url = NULL;
  CHECK_EQ_INT(gy_alert_create(&a, &o, err, sizeof(err)), GY_EINVAL);
  o = (gy_alert_opts_t){.url = "http://127.0.0.1:9/x", .straggler_frac = 1.5};
  CHECK_EQ_INT(gy_alert_create(&a, &o, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, "straggler_frac") != NULL);
  CHECK(a == NULL);
  CHECK_EQ_INT(gy_alert_post(NULL, "halted", 1, "x"), 0);
  /* the run's alerts carry their class (controller/run.h): its name is the webhook's kind */
  CHECK(!strcmp(gy_alert_class_name(GY_ALERT_HALTED), "halted"));
  CHECK(!strcmp(gy_alert_class_name(GY_ALERT_REPEATED_SPIKES), "repeated_spikes"));
  CHECK(!strcmp(gy_alert_class_name(GY_ALERT_ANOMALY), "anomaly"));
  CHECK(!strcmp(gy_alert_class_name(GY_ALERT_OTHER), "alert"));
  CHECK(!strcmp(gy_alert_class_name(GY_ALERT_NCLASSES), "alert"));

  /* a 500 then a retry; the rate limit per kind */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/flaky", port);
  o = (gy_alert_opts_t){
      .url = url, .run_name = "demo", .min_interval_ms = 1500, .backoff_ms = 100, .telemetry = t};
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  double t0 = now_s();
  CHECK_EQ_INT(gy_alert_post(a, "halted", 7, "run halted at step 7: the ladder is exhausted"), 1);
  CHECK_EQ_INT(gy_alert_post(a, "halted", 8, "run halted at step 8: again"), 0); /* too soon */
  CHECK_EQ_INT(gy_alert_post(a, "straggler", 9, "rank 3 is slow"), 1);           /* other kind */
  double posted = now_s() - t0;
  /* the receiver holds its first answer 1 s */
  CHECK_MSG(posted < 0.5, "posting took %.3f s: it must not wait for the network", posted);
  json_t *r = requests(3, 10);
  REQUIRE(json_array_size(r) == 3);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(r, 0), "code")), 500);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(r, 1), "code")), 200);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(r, 2), "code")), 200);
  CHECK(!strcmp(req_str(r, 0, "body"), req_str(r, 1, "body"))); /* the same alert, retried */
  CHECK(!strcmp(req_str(r, 0, "ctype"), "application/json"));
  json_t *b = json_loads(req_str(r, 1, "body"), 0, NULL);
  REQUIRE(b && json_is_object(b));
  CHECK_EQ_INT(json_object_size(b), 1);
  const char *text = json_string_value(json_object_get(b, "text"));
  CHECK_MSG(text && strstr(text, "run demo: HALTED at step 7") && strstr(text, "ladder"), "%s",
            text ? text : "(none)");
  json_decref(b);
  b = json_loads(req_str(r, 2, "body"), 0, NULL);
  text = json_string_value(json_object_get(b, "text"));
  CHECK(text && strstr(text, "straggler at step 9: rank 3 is slow"));
  json_decref(b);
  json_decref(r);
  /* after the interval: sent again, saying how many were suppressed */
  while (now_s() - t0 < 2.6)
    usleep(20000);
  CHECK_EQ_INT(gy_alert_post(a, "halted", 30, "still halted"), 1);
  r = requests(4, 10);
  REQUIRE(json_array_size(r) == 4);
  b = json_loads(req_str(r, 3, "body"), 0, NULL);
  text = json_string_value(json_object_get(b, "text"));
  CHECK_MSG(text && strstr(text, "1 more HALTED alert suppressed"), "%s", text ? text : "");
  json_decref(b);
  json_decref(r);
  uint64_t sent, supp, failed, dropped;
  wait_counts(a, 3, 0, 10, &sent, &supp, &failed, &dropped);
  CHECK_EQ_INT(sent, 3);
  CHECK_EQ_INT(supp, 1);
  CHECK_EQ_INT(failed, 0);
  CHECK(tm_value(t, "gyro_alerts_total{kind=\"halted\",outcome=\"sent\"} ") == 2);
  CHECK(tm_value(t, "gyro_alerts_total{kind=\"halted\",outcome=\"suppressed\"} ") == 1);
  CHECK(tm_value(t, "gyro_alerts_total{kind=\"straggler\",outcome=\"sent\"} ") == 1);
  gy_alert_destroy(a);

  /* a final 4xx is tried once; a 503 max_attempts times */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/bad", port);
  o = (gy_alert_opts_t){.url = url, .backoff_ms = 50, .max_attempts = 3, .min_interval_ms = -1};
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  CHECK_EQ_INT(gy_alert_post(a, "anomaly", 1, "x"), 1);
  gy_alert_destroy(a); /* flushes it */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/down", port);
  o.url = url;
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  CHECK_EQ_INT(gy_alert_post(a, "anomaly", 2, "y"), 1);
  CHECK_EQ_INT(gy_alert_post(a, "anomaly", 3, "z"), 1); /* no rate limit here */
  r = requests(4 + 1 + 6, 10);
  int nbad = 0, ndown = 0;
  for (size_t i = 0; i < json_array_size(r); i++) {
    nbad += !strcmp(req_str(r, i, "path"), "/bad");
    ndown += !strcmp(req_str(r, i, "path"), "/down");
  }
  json_decref(r);
  CHECK_EQ_INT(nbad, 1);
  CHECK_EQ_INT(ndown, 6);
  wait_counts(a, 0, 2, 10, &sent, &supp, &failed, &dropped);
  CHECK_EQ_INT(sent, 0);
  CHECK_EQ_INT(failed, 2);
  gy_alert_destroy(a);

  /* stragglers: rank 2 at 20% of the others for 3 steps starts one streak, one alert */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", port);
  o = (gy_alert_opts_t){
      .url = url, .straggler_frac = 0.5, .straggler_steps = 3, .min_interval_ms = -1};
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  char msg[300] = "";
  rates[0] = rates[1] = rates[3] = 1000;
  rates[2] = 200;
  CHECK_EQ_INT(gy_alert_stragglers(a, 10, 4, rate, NULL, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_alert_stragglers(a, 11, 4, rate, NULL, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_alert_stragglers(a, 12, 4, rate, NULL, msg, sizeof(msg)), 1);
  CHECK_MSG(strstr(msg, "rank 2 runs at 200 tokens/s, 20% of the other ranks' mean 1000"), "%s",
            msg);
  CHECK_EQ_INT(gy_alert_stragglers(a, 13, 4, rate, NULL, msg, sizeof(msg)), 0); /* same streak */
  rates[2] = 900;                                                               /* back */
  CHECK_EQ_INT(gy_alert_stragglers(a, 14, 4, rate, NULL, msg, sizeof(msg)), 0);
  rates[2] = 100;
  rates[1] = NAN; /* unknown ranks do not count */
  for (int s = 15; s < 17; s++)
    CHECK_EQ_INT(gy_alert_stragglers(a, s, 4, rate, NULL, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_alert_stragglers(a, 17, 4, rate, NULL, msg, sizeof(msg)), 1);
  CHECK_EQ_INT(gy_alert_stragglers(a, 18, 1, rate, NULL, msg, sizeof(msg)), 0); /* one rank */
  gy_alert_destroy(a);
  r = requests(4 + 1 + 6 + 2, 10);
  int nok = 0;
  for (size_t i = 0; i < json_array_size(r); i++)
    nok += !strcmp(req_str(r, i, "path"), "/ok");
  json_decref(r);
  CHECK_EQ_INT(nok, 2);

  /* a dead receiver: shutdown is bounded even with alerts queued and retrying */
  kill(rpid, SIGKILL);
  waitpid(rpid, NULL, 0);
  close(rfd);
  o = (gy_alert_opts_t){.url = url, .min_interval_ms = -1, .backoff_ms = 200};
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  for (int i = 0; i < 5; i++)
    gy_alert_post(a, "halted", i, "nobody listens");
  usleep(300000);
  double d0 = now_s();
  gy_alert_destroy(a);
  double took = now_s() - d0;
  CHECK_MSG(took < 6.0, "destroy took %.2f s", took);
  printf("shutdown with a dead receiver: %.2f s\n", took);

  /* a receiver that accepts connections and never answers: each attempt ends at timeout_ms and
   * the shutdown flush stops at its deadline */
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  REQUIRE(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 64) == 0 &&
          getsockname(ls, (struct sockaddr *)&sa, &sl) == 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", ntohs(sa.sin_port));
  o = (gy_alert_opts_t){.url = url, .min_interval_ms = -1, .backoff_ms = 100, .timeout_ms = 400};
  REQUIRE(gy_alert_create(&a, &o, err, sizeof(err)) == 0);
  for (int i = 0; i < 20; i++)
    gy_alert_post(a, "halted", i, "nobody answers");
  usleep(600000);
  d0 = now_s();
  gy_alert_destroy(a);
  took = now_s() - d0;
  CHECK_MSG(took < 6.0, "destroy took %.2f s", took);
  printf("shutdown with a silent receiver: %.2f s\n", took);
  close(ls);

  gy_telemetry_destroy(t);
  unlink(logpath);
  rmdir(dir);
  GY_TEST_END();
}
