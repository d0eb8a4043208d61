/* test_security_input: the input checks added for hostile peers and operators.
 *  - tokens: constant-time equality, the form check (no spaces, control or non-ASCII bytes),
 *    token files (trailing line break stripped; missing, empty or oversized files refused with
 *    the file named and the token never in the message);
 *  - the fleet: a worker id that is not UTF-8 is refused; a host name, a channel name and an
 *    ack's error that are not UTF-8 (or hold control characters) are scrubbed to '?' before
 *    they reach events, the status or the step history (the reproducer of fuzz_messages'
 *    first find, fuzz/crashes/fuzz_messages/join-host-not-utf8, is the host case);
 *  - the run config's controller.tls and *_token_file keys: defaults, and each refusal naming
 *    its key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/rpc.h"
#include "controller/fleet.h"
#include "tests/test.h"
#include "config/run_config.h"

static int utf8_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    int k = *p < 0x80             ? 0
            : (*p & 0xe0) == 0xc0 ? 1
            : (*p & 0xf0) == 0xe0 ? 2
            : (*p & 0xf8) == 0xf0 ? 3
                                  : -1;
    if (k < 0) return 0;
    if (*p < 0x20) return 0;
    for (int j = 1; j <= k; j++)
      if ((p[j] & 0xc0) != 0x80) return 0;
    p += k + 1;
  }
  return 1;
}

static char tmpdir[] = "/tmp/gyro-secin.XXXXXX";

static const char *write_file(const char *name, const char *text) {
  static char path[4][512];
  static int i;
  char *p = path[i++ % 4];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static void test_tokens(void) {
  CHECK(gy_rpc_token_equal("abc", "abc"));
  CHECK(!gy_rpc_token_equal("abc", "abd"));
  CHECK(!gy_rpc_token_equal("abc", "abcd"));
  CHECK(!gy_rpc_token_equal("", "abc"));
  CHECK(!gy_rpc_token_equal(NULL, "abc"));
  char err[300];
  CHECK_EQ_INT(gy_rpc_token_check("t", "s3cr3t-Tok_en.1", err, sizeof(err)), 0);
  CHECK_EQ_INT(gy_rpc_token_check("t", "", err, sizeof(err)), GY_EINVAL);
  CHECK_EQ_INT(gy_rpc_token_check("t", "has space", err, sizeof(err)), GY_EINVAL);
  CHECK_EQ_INT(gy_rpc_token_check("t", "line\nbreak", err, sizeof(err)), GY_EINVAL);
  CHECK_EQ_INT(gy_rpc_token_check("t", "caf\xc3\xa9", err, sizeof(err)), GY_EINVAL);
  CHECK(!strstr(err, "caf")); /* the message never quotes the token */
  char big[GY_RPC_TOKEN_MAX + 2];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  CHECK_EQ_INT(gy_rpc_token_check("t", big, err, sizeof(err)), GY_EINVAL);

  char *tok = NULL;
  const char *p = write_file("tok", "zyx-987\n");
  CHECK_EQ_INT(gy_rpc_token_read_file(p, &tok, err, sizeof(err)), 0);
  CHECK(tok && !strcmp(tok, "zyx-987"));
  free(tok);
  p = write_file("empty", "\n");
  CHECK_EQ_INT(gy_rpc_token_read_file(p, &tok, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, p) != NULL);
  p = write_file("spaced", "zyx 987\n");
  CHECK_EQ_INT(gy_rpc_token_read_file(p, &tok, err, sizeof(err)), GY_EINVAL);
  CHECK(!strstr(err, "zyx"));
  big[GY_RPC_TOKEN_MAX] = 'a';
  p = write_file("big", big);
  CHECK_EQ_INT(gy_rpc_token_read_file(p, &tok, err, sizeof(err)), GY_EINVAL);
  char missing[600];
  snprintf(missing, sizeof(missing), "%s/none", tmpdir);
  CHECK_EQ_INT(gy_rpc_token_read_file(missing, &tok, err, sizeof(err)), GY_EIO);
  CHECK(strstr(err, missing) != NULL);
  CHECK(tok == NULL);
}

/* Every event text the fleet produced since the last clear is UTF-8; returns how many. */
static int events_utf8(gy_fleet_t *f) {
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  int k = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == GY_FLEET_ACT_EVENT) {
      CHECK_MSG(utf8_ok(a[i].msg), "event not UTF-8: %s", a[i].msg);
      k++;
    }
  return k;
}

static void test_fleet(void) {
  gy_fleet_opts_t o = {.world = 2, .tp = 1, .window = 4, .steps = 10, .lost_after_ms = 10000};
  gy_fleet_t *f = NULL;
  REQUIRE(gy_fleet_create(&f, &o) == 0);
  /* an id that is not UTF-8, one with a control character: refused, the refusal readable */
  gy_fleet_join_t j = {.worker_id = "w\xff\xfe", .ordinal = -1, .host = "h", .pid = 1};
  CHECK_EQ_INT(gy_fleet_join(f, 0, &j, 1), GY_EINVAL);
  CHECK(utf8_ok(gy_fleet_errmsg(f)));
  j.worker_id = "w\x1b[2J";
  CHECK_EQ_INT(gy_fleet_join(f, 0, &j, 1), GY_EINVAL);
  CHECK(events_utf8(f) >= 2);
  gy_fleet_actions_clear(f);
  /* a host that is not UTF-8 (the fuzz reproducer), and one cut inside a sequence */
  char host[200];
  memset(host, 'P', sizeof(host));
  host[36] = (char)0xd0;
  host[150] = 0;
  j = (gy_fleet_join_t){.worker_id = "worker-0", .ordinal = 0, .host = host, .pid = 1};
  CHECK_EQ_INT(gy_fleet_join(f, 0, &j, 1), 0);
  char cut[200];
  for (int i = 0; i < 190; i += 2) { /* "é" repeated: 127 bytes keep half a sequence */
    cut[i] = (char)0xc3;
    cut[i + 1] = (char)0xa9;
  }
  cut[190] = 0;
  j = (gy_fleet_join_t){.worker_id = "worker-1", .ordinal = 1, .host = cut, .pid = 2};
  CHECK_EQ_INT(gy_fleet_join(f, 0, &j, 2), 0);
  CHECK(events_utf8(f) >= 2);
  char sess[2][GY_FLEET_SESSION_MAX];
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == GY_FLEET_ACT_ASSIGN) memcpy(sess[a[i].rank], a[i].session_id, sizeof(sess[0]));
  gy_fleet_actions_clear(f);
  for (int r = 0; r < 2; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(f, r);
    REQUIRE(m);
    CHECK_MSG(utf8_ok(m->host), "host of rank %d: %s", r, m->host);
    CHECK_EQ_INT(gy_fleet_hello(f, 1, sess[r], gy_fleet_generation(f), r), 0);
  }
  gy_fleet_actions_clear(f);
  /* a step whose channel name is not UTF-8: scrubbed in the history */
  const char *names[2] = {"z\xc3", "en\x01"};
  double sums[2] = {10, 20};
  uint64_t toks[2] = {4, 4};
  for (int r = 0; r < 2; r++) {
    gy_fleet_report_t rep = {.generation = gy_fleet_generation(f),
                             .rank = r,
                             .step = 0,
                             .loss = 3,
                             .nch = 2,
                             .ch_name = names,
                             .ch_loss_sum = sums,
                             .ch_tokens = toks};
    CHECK_EQ_INT(gy_fleet_report(f, 2, r, &rep), 0);
  }
  const gy_fleet_step_t *h = gy_fleet_history(f, 0);
  REQUIRE(h);
  CHECK(!strcmp(h->ch[0].name, "z?"));
  CHECK(!strcmp(h->ch[1].name, "en?"));
  events_utf8(f);
  gy_fleet_actions_clear(f);
  /* an ack's error that is not UTF-8 ends up in an event: scrubbed */
  uint64_t seq;
  int64_t at;
  if (gy_fleet_command(f, 3, 4 /* CHECKPOINT */, NULL, &seq, &at) == 0) {
    gy_fleet_actions_clear(f);
    CHECK_EQ_INT(
        gy_fleet_report(f, 3, 0,
                        &(gy_fleet_report_t){
                            .generation = gy_fleet_generation(f), .rank = 0, .step = 1, .nch = 0}),
        0);
    gy_fleet_ack(f, 4, 1, gy_fleet_generation(f), seq, 1, 0, "disk \xff full", 0);
    events_utf8(f);
  }
  gy_fleet_destroy(f);
}

static int load(const char *yaml, gy_run_config_t *cfg, char *err, size_t len) {
  char text[2048];
  snprintf(text, sizeof(text),
           "model: {vocab: 256}\n"
           "data: {channels: [{name: a, train: x.bin}]}\n"
           "%s\n",
           yaml);
  return gy_run_config_load(cfg, write_file("run.yaml", text), err, len);
}

static void test_config(void) {
  gy_run_config_t cfg;
  char err[600];
  CHECK_EQ_INT(
      load("controller: {tls: {cert: c.pem, key: k.pem, ca: ca.pem}}", &cfg, err, sizeof(err)), 0);
  CHECK(cfg.ctl_tls_client_auth == 1);
  CHECK(cfg.ctl_tls_cert && strstr(cfg.ctl_tls_cert, "/c.pem"));
  gy_run_config_free(&cfg);
  CHECK_EQ_INT(load("controller: {tls: {cert: c.pem, key: k.pem, ca: ca.pem, client_auth: false}}",
                    &cfg, err, sizeof(err)),
               0);
  CHECK(cfg.ctl_tls_client_auth == 0);
  gy_run_config_free(&cfg);
  CHECK_EQ_INT(load("controller: {tls: {cert: c.pem, key: k.pem}}", &cfg, err, sizeof(err)), 0);
  CHECK(cfg.ctl_tls_client_auth == 0 && cfg.ctl_tls_ca == NULL);
  gy_run_config_free(&cfg);
  CHECK_EQ_INT(load("controller: {tls: {cert: c.pem, key: k.pem, client_auth: true}}", &cfg, err,
                    sizeof(err)),
               GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.tls.client_auth") != NULL, "%s", err);
  CHECK_EQ_INT(load("controller: {tls: {cert: c.pem}}", &cfg, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.tls") && strstr(err, "cert and key"), "%s", err);
  CHECK_EQ_INT(load("controller: {tls: {cert: c.pem, key: k.pem, crt: x}}", &cfg, err, sizeof(err)),
               GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.tls.crt") != NULL, "%s", err);
  CHECK_EQ_INT(load("controller: {tls: yes}", &cfg, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.tls") != NULL, "%s", err);
  CHECK_EQ_INT(load("controller: {join_token_file: j.tok}", &cfg, err, sizeof(err)), 0);
  CHECK(cfg.ctl_join_token_file && strstr(cfg.ctl_join_token_file, "/j.tok"));
  gy_run_config_free(&cfg);
  CHECK_EQ_INT(
      load("controller: {join_token: abc, join_token_file: j.tok}", &cfg, err, sizeof(err)),
      GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.join_token_file") != NULL, "%s", err);
  CHECK_EQ_INT(
      load("controller: {operator_token: abc, operator_token_file: o.tok}", &cfg, err, sizeof(err)),
      GY_ECONFIG);
  CHECK_MSG(strstr(err, "controller.operator_token_file") != NULL, "%s", err);
}

int main(void) {
  REQUIRE(mkdtemp(tmpdir));
  RUN(test_tokens);
  RUN(test_fleet);
  RUN(test_config);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
  GY_TEST_END();
}
