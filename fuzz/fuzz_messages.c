/* fuzz_messages: every request the controller accepts, decoded from arbitrary bytes with the
 * protobuf-c code generated from proto/gyro.proto and then put through the validation the
 * controller runs (controller/svc_*.c hand the decoded fields to the fleet,
 * controller/fleet.c, which refuses what is out of range; a PolicySet's YAML goes to
 * gy_policy_parse, from memory, as in the operator service).
 *
 * Input: byte 0 picks the request type (its value modulo the number of types), the rest is the
 * message. For Worker session messages the rest is a sequence of frames [rank byte][length u16
 * little-endian][WorkerMsg bytes], fed in order from the session of rank (byte % world) of a
 * fleet whose gang (world 2) has formed and said Hello, so that reports, heartbeats and acks
 * reach the checks behind the generation and rank ones.
 *
 * Properties: no crash, leak or undefined behaviour; every event text the fleet produces, and
 * every string the status shows (worker ids, hosts, channel names), is valid UTF-8: they go
 * into JSON log lines and into protobuf string fields of replies. */
#include <stdint.h>
#include <string.h>

#include "controller/fleet.h"
#include "controller/wire.h"
#include "fuzz/fuzz_util.h"
#include "config/policy_file.h"
#include "policies/policy.h"
#include "proto/gyro.pb-c.h"

enum {
  T_JOIN,
  T_SESSION,
  T_COMMAND,
  T_STORE_SET,
  T_STORE_GET,
  T_EVENTS,
  T_POLICY_SET,
  T_WATCH,
  T_EMPTY,
  T_COUNT
};

#define WORLD 2

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  atexit(fuzz_temp_cleanup);
  return 0;
}

static void check_str(const char *what, const char *s) {
  if (s && !fuzz_utf8_ok(s, strlen(s))) fuzz_fail("%s is not UTF-8: %s", what, s);
}

/* Checks and clears the fleet's actions; ASSIGN session ids go to sess[rank]. */
static void drain(gy_fleet_t *f, char sess[WORLD][GY_FLEET_SESSION_MAX]) {
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++) {
    if (a[i].kind == GY_FLEET_ACT_EVENT) check_str("event text", a[i].msg);
    if (a[i].kind == GY_FLEET_ACT_DIRECTIVE) check_str("directive reason", a[i].msg);
    if (a[i].kind == GY_FLEET_ACT_ASSIGN && sess && a[i].rank >= 0 && a[i].rank < WORLD)
      memcpy(sess[a[i].rank], a[i].session_id, GY_FLEET_SESSION_MAX);
  }
  gy_fleet_actions_clear(f);
}

static void check_status(const gy_fleet_t *f) {
  for (int r = 0; r < gy_fleet_nmembers(f); r++) {
    const gy_fleet_member_t *m = gy_fleet_member(f, r);
    if (!m) continue;
    check_str("worker id", m->worker_id);
    check_str("host", m->host);
  }
  const gy_fleet_step_t *h = gy_fleet_history(f, gy_fleet_last_step(f));
  for (int c = 0; h && c < h->nch; c++)
    check_str("channel name", h->ch[c].name);
}

static gy_fleet_t *new_fleet(void) {
  gy_fleet_opts_t o = {
      .world = WORLD, .tp = 1, .window = 4, .steps = 100, .lost_after_ms = 10000, .seed = 42};
  gy_fleet_t *f = NULL;
  if (gy_fleet_create(&f, &o)) fuzz_fail("gy_fleet_create");
  return f;
}

/* A fleet whose gang formed: two workers joined and said Hello. */
static gy_fleet_t *formed_fleet(char sess[WORLD][GY_FLEET_SESSION_MAX]) {
  gy_fleet_t *f = new_fleet();
  for (int r = 0; r < WORLD; r++) {
    char id[16];
    snprintf(id, sizeof(id), "w%d", r);
    gy_fleet_join_t j = {.worker_id = id, .ordinal = r, .host = "h", .pid = 1 + r};
    if (gy_fleet_join(f, 0, &j, (uint64_t)r + 1)) fuzz_fail("join: %s", gy_fleet_errmsg(f));
  }
  drain(f, sess);
  for (int r = 0; r < WORLD; r++)
    if (gy_fleet_hello(f, 1, sess[r], gy_fleet_generation(f), r))
      fuzz_fail("hello: %s", gy_fleet_errmsg(f));
  drain(f, NULL);
  return f;
}

/* The same mapping as svc_session.c's gy__svc_on_join (gy_wire_join). */
static void do_join(const uint8_t *p, size_t n) {
  Gyro__JoinRequest *jr = gyro__join_request__unpack(NULL, n, p);
  if (!jr) return;
  gy_fleet_t *f = new_fleet();
  gy_fleet_join_t in;
  gy_wire_join(jr, &in);
  gy_fleet_join(f, 0, &in, 1);
  drain(f, NULL);
  gy_fleet_join_t other = {.worker_id = "other", .ordinal = -1, .host = "h", .pid = 2};
  gy_fleet_join(f, 1, &other, 2);
  drain(f, NULL);
  check_status(f);
  gy_fleet_destroy(f);
  gyro__join_request__free_unpacked(jr, NULL);
}

/* The same mapping as svc_session.c's session_msg. */
static void session_msg(gy_fleet_t *f, int64_t now, int *bound, int stream,
                        char sess[WORLD][GY_FLEET_SESSION_MAX], const Gyro__WorkerMsg *wm) {
  if (!bound[stream]) {
    if (wm->msg_case != GYRO__WORKER_MSG__MSG_HELLO || !wm->hello) return;
    const Gyro__Hello *h = wm->hello;
    if (!gy_fleet_hello(f, now, h->session_id, h->generation, h->rank)) bound[stream] = 1;
    return;
  }
  switch (wm->msg_case) {
  case GYRO__WORKER_MSG__MSG_REPORT: {
    const Gyro__StepReport *r = wm->report;
    for (size_t i = 0; i < r->n_top; i++)
      (void)r->top[i]->channel; /* kept by the service for attribution (keep_top) */
    gy_wire_channels_t chans;
    gy_fleet_report_t in;
    gy_wire_step_report(r, &chans, &in); /* the service's own translation */
    gy_fleet_report(f, now, stream, &in);
    break;
  }
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    gy_fleet_heartbeat(f, now, stream, wm->heartbeat->generation, wm->heartbeat->rank);
    break;
  case GYRO__WORKER_MSG__MSG_ACK: {
    const Gyro__DirectiveAck *a = wm->ack;
    gy_fleet_ack(f, now, stream, a->generation, a->seq, a->rank, a->ok, a->error,
                 a->checkpoint_bytes);
    break;
  }
  case GYRO__WORKER_MSG__MSG_HELLO:
    gy_fleet_hello(f, now, wm->hello->session_id, wm->hello->generation, wm->hello->rank);
    break;
  default:
    break;
  }
  (void)sess;
}

static void do_session(const uint8_t *p, size_t n) {
  char sess[WORLD][GY_FLEET_SESSION_MAX];
  memset(sess, 0, sizeof(sess));
  gy_fleet_t *f = formed_fleet(sess);
  int bound[WORLD] = {1, 1};
  int64_t now = 2;
  while (n >= 3) {
    int stream = p[0] % WORLD;
    size_t len = (size_t)p[1] | (size_t)p[2] << 8;
    p += 3;
    n -= 3;
    if (len > n) len = n;
    Gyro__WorkerMsg *wm = gyro__worker_msg__unpack(NULL, len, p);
    p += len;
    n -= len;
    if (!wm) continue;
    session_msg(f, now++, bound, stream, sess, wm);
    gyro__worker_msg__free_unpacked(wm, NULL);
    drain(f, NULL);
    /* an operator command now and then, so that directives and acks meet */
    if ((now & 7) == 0) {
      uint64_t seq;
      int64_t at;
      gy_fleet_command(f, now, (int)(now >> 3) % 7, NULL, &seq, &at);
      drain(f, NULL);
    }
  }
  gy_fleet_tick(f, now + 20000);
  drain(f, NULL);
  check_status(f);
  gy_fleet_destroy(f);
}

/* The same mapping as svc_operator.c's gy__svc_on_command (without the step-to-sample
 * conversion of `newest`/skip_steps, which needs the service's skip set). */
static void do_command(const uint8_t *p, size_t n) {
  Gyro__CommandRequest *r = gyro__command_request__unpack(NULL, n, p);
  if (!r) return;
  char sess[WORLD][GY_FLEET_SESSION_MAX];
  gy_fleet_t *f = formed_fleet(sess);
  gy_fleet_hparams_t hp;
  gy_wire_hparams_in(r->hparams, &hp);
  uint64_t seq;
  int64_t at;
  if (r->kind == GYRO__DIRECTIVE__KIND__ROLLBACK) {
    int k = r->n_skip > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)r->n_skip;
    gy_fleet_skip_t *sk = k && k <= GY_FLEET_MAX_SKIPS ? malloc((size_t)k * sizeof(*sk)) : NULL;
    for (int i = 0; sk && i < k; i++)
      sk[i] = (gy_fleet_skip_t){r->skip[i]->first, r->skip[i]->last};
    gy_fleet_rollback(f, 3, r->to_step, sk, k, &hp, "operator rollback", &seq, &at);
    free(sk);
  } else {
    gy_fleet_command(f, 3, (int)r->kind, &hp, &seq, &at);
  }
  drain(f, NULL);
  check_status(f);
  gy_fleet_destroy(f);
  gyro__command_request__free_unpacked(r, NULL);
}

static void do_policy_set(const uint8_t *p, size_t n) {
  Gyro__PolicySetRequest *r = gyro__policy_set_request__unpack(NULL, n, p);
  if (!r) return;
  const char *yaml = r->yaml ? r->yaml : "";
  gy_policy_t pol;
  gy_policy_default(&pol);
  char errmsg[512];
  /* from memory, as the operator service reads it */
  if (gy_policy_parse(&pol, "policy", yaml, strlen(yaml), errmsg, sizeof(errmsg)) == 0 &&
      gy_policy_check(&pol, errmsg, sizeof(errmsg)))
    fuzz_fail("an accepted policy fails its check: %s", errmsg);
  gyro__policy_set_request__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 256 * 1024) return -1;
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  switch (data[0] % T_COUNT) {
  case T_JOIN:
    do_join(p, n);
    break;
  case T_SESSION:
    do_session(p, n);
    break;
  case T_COMMAND:
    do_command(p, n);
    break;
  case T_STORE_SET: {
    Gyro__StoreSetRequest *r = gyro__store_set_request__unpack(NULL, n, p);
    if (r) gyro__store_set_request__free_unpacked(r, NULL);
    break;
  }
  case T_STORE_GET: {
    Gyro__StoreGetRequest *r = gyro__store_get_request__unpack(NULL, n, p);
    if (r) gyro__store_get_request__free_unpacked(r, NULL);
    break;
  }
  case T_EVENTS: {
    Gyro__EventsRequest *r = gyro__events_request__unpack(NULL, n, p);
    if (r) gyro__events_request__free_unpacked(r, NULL);
    break;
  }
  case T_POLICY_SET:
    do_policy_set(p, n);
    break;
  case T_WATCH: {
    Gyro__WatchRequest *r = gyro__watch_request__unpack(NULL, n, p);
    if (r) gyro__watch_request__free_unpacked(r, NULL);
    break;
  }
  case T_EMPTY: {
    Gyro__Empty *r = gyro__empty__unpack(NULL, n, p);
    if (r) gyro__empty__free_unpacked(r, NULL);
    break;
  }
  }
  return 0;
}
