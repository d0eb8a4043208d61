/*
 * service: the controller's gRPC side (see service.h). Everything runs on the loop thread: gy_rpc
 * calls the handlers there, the liveness timer fires there, so no lock is needed.
 *
 * API, in order: create (fleet + server + timer), port, on_done, shutdown, destroy, fleet.
 *
 * Flow: a handler decodes the message (protobuf-c; a decode failure is INVALID_ARGUMENT and an
 * event; session messages decode into a per-service arena, so a StepReport costs no malloc),
 * checks tokens, calls the fleet, answers the call, then drain() carries out the fleet's
 * actions: answer held joins (ASSIGN), send grants and directives on session streams (a message
 * for every rank is encoded once and its bytes shared by the streams), emit events (stderr
 * JSON line + Watch streams), emit aggregated steps (stdout JSON line + Watch streams that
 * asked for steps), finish sessions (CLOSE), report DONE. A ROLLBACK directive carries the
 * fleet's to_step, skip ranges and reason; COMMITTED and ROLLED_BACK are told by their events.
 * An operator Command of kind ROLLBACK goes to gy_fleet_rollback with the request's to_step and
 * skip ranges (reason "operator rollback"); one with `newest` or `skip_steps` (gyroctl skip) goes
 * to the newest committed checkpoint (`newest`) with its step ranges converted to sample ids as
 * try_repair converts a decision's window (reason "operator skip"). Every event is also kept in
 * evlog, a ring of the last EVLOG_MAX, for /gyro.Operator/Events; /gyro.Operator/PolicyShow
 * formats the run's policy, /gyro.Operator/PolicySet loads the sent YAML from a temporary file
 * with gy_policy_load (errors name the operator's file) and hands it to gy_run_set_policy.
 * Held-out evaluations (EvalReport, from rank 0) feed the telemetry and the run's ppl detectors
 * (gy_run_eval); a checkpoint's evaluation is kept (ckevals) and written into its journal
 * manifest, and /gyro.Operator/Checkpoints lists the committed checkpoints with them.
 *
 * The closed loop: the run state machine (controller/run.h, pure) is fed from the fleet's
 * actions — the first ASSIGN of a generation (gang formed: started, or the repair of a lost
 * worker goes on), STEP (the step's losses, per-channel losses, gradient norms, non-finite flag
 * and rank 0's top samples), COMMITTED (a checkpoint), ROLLED_BACK (the repair's rollback
 * applied: rollback_done, skips_applied, resumed — the one directive did all three; refused:
 * restore_failed), LOST (worker_lost), DONE — and its actions are carried out by run_drain():
 * ROLLBACK becomes gy_fleet_rollback (try_repair: the decision's sample ids, plus its window of
 * steps converted to the sample ids those steps trained on, plus, after a re-formed gang, every
 * earlier skip; knob factors times the run config's values), HALT holds the gang with a PAUSE,
 * ALERT is an event; its events are events (emit_run_event). A repair asked while there is no
 * gang waits for the next one (gangs re-form from the fleet's newest committed checkpoint).
 *
 * Invariants:
 * - sessions[r] is the one stream bound to rank r (after an accepted Hello) or NULL; a stream
 *   replaced by a newer Hello of the same rank is unbound first, so its close does not count as
 *   the worker's loss.
 * - Every held unary call (joins, store gets) is in exactly one list and is answered exactly
 *   once: by the fleet, by a key arriving, by its timer, or at shutdown.
 * - drain() copies the actions out before acting, and does not nest: a callback that feeds the
 *   fleet while actions are being carried out leaves its actions for the running drain loop.
 * - Each call's data (call_t) is freed in on_close (streams); unary calls have none.
 * - in_force is the skip list every worker has in force (data.skip plus the skips of every
 *   applied rollback), so step s on data-parallel rank r trained on the unskipped ids number
 *   (s*dp + r)*B ... +B-1 of it; a decision's window is converted before its own ranges are
 *   added. rb_seq is the fleet rollback that carries the run's repair in progress, or 0.
 * - run_drain() does not nest either; run inputs made while it carries out an action leave
 *   their outputs for its loop, and fleet inputs leave theirs for drain()'s.
 */
#include "service.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "config/policy_file.h"
#include "controller/skipset.h"
#include "controller/wire.h"
#include "proto/gyro.pb-c.h"

#define STORE_MAX_TIMEOUT_MS (3600 * 1000)
#define ARENA_BYTES 16384 /* a decoded StepReport takes ~1 KiB */

#define TOP_RING 64    /* steps whose top samples are kept until aggregated */
#define TOP_MAX 64     /* top samples kept per step (the worker's GY_TOPK_MAX) */
#define EVLOG_MAX 4096 /* events kept for /gyro.Operator/Events (the newest) */
#define EVLOG_KIND 32
#define EVLOG_MSG 1400 /* emit_run_event's longest message */

typedef enum { CALL_SESSION, CALL_WATCH } call_kind_t;

/* One event of the audit log (/gyro.Operator/Events). */
typedef struct {
  uint64_t id;
  double time; /* seconds since the epoch */
  int64_t step;
  char kind[EVLOG_KIND];
  char msg[EVLOG_MSG];
} evrec_t;

/* Rank 0's top and bottom samples of one step (the engine reduced them over the gang): entries
 * [0, n) are the top (highest loss first), [TOP_MAX, TOP_MAX + nb) the bottom (lowest first). */
typedef struct {
  int64_t step; /* -1: empty */
  int n, nb;
  uint64_t id[2 * TOP_MAX];
  float loss[2 * TOP_MAX];
  char ch[2 * TOP_MAX][GY_FLEET_CH_NAME];
} top_slot_t;

/* What a rank's GPU reported last, so that a new hardware fault is told once. */
typedef struct {
  int seen;
  uint32_t xid_count;
  uint64_t ecc_uncorrected, throttle;
} hw_slot_t;

/* The newest held-out evaluation of one checkpoint's parameters (an EvalReport with
 * has_checkpoint), for /gyro.Operator/Checkpoints and the checkpoint's journal manifest. */
#define CKEVAL_MAX 512 /* checkpoints whose evaluation is kept (the oldest steps go first) */
typedef struct {
  char name[GY_FLEET_CH_NAME];
  double loss, ppl, cloze;
  uint64_t tokens;
  uint32_t items;
} srceval_t;
typedef struct {
  int64_t step;
  int n;
  srceval_t src[GY_FLEET_MAX_CH];
} ckeval_t;

typedef struct call {
  call_kind_t kind;
  gy_rpc_call_t *rpc;
  int rank;                 /* SESSION: bound rank, -1 before Hello or after being replaced */
  int active;               /* WATCH: the request was accepted */
  int steps;                /* WATCH: also wants a StatusReply per aggregated step */
  int finished;             /* gy_rpc_finish was called: later messages are ignored */
  struct call *prev, *next; /* WATCH: in s->watchers */
} call_t;

typedef struct held_join {
  uint64_t handle;
  gy_rpc_call_t *rpc;
  struct held_join *next;
} held_join_t;

typedef struct held_get {
  gy_service_t *s;
  gy_rpc_call_t *rpc; /* NULL once answered */
  char *key;
  uv_timer_t timer;
  struct held_get *prev, *next;
} held_get_t;

typedef struct {
  char *key;
  uint8_t *val;
  size_t len;
} kv_t;

struct gy_service {
  uv_loop_t *loop;
  gy_service_opts_t o; /* strings owned (copied) */
  gy_fleet_t *fleet;
  gy_rpc_server_t *srv;
  int port;
  uv_timer_t tick;
  int tick_init;
  int64_t t0_ms;     /* uv_now at create: the fleet's clock counts from here */
  call_t **sessions; /* world entries */
  call_t *watchers;
  held_join_t *joins;
  uint64_t join_ctr;
  held_get_t *gets;
  kv_t *kv; /* sorted by key */
  size_t nkv, capkv;
  gy_fleet_action_t *abuf;
  size_t capabuf;
  gy_rpc_call_t **fanout; /* world entries: the streams one broadcast goes to */
  /* Session messages decode into this arena (bump allocation, reset after each message);
   * what does not fit falls back to malloc. Not reentrant: one message at a time. */
  ProtobufCAllocator arena_alloc;
  size_t arena_used;
  _Alignas(16) uint8_t arena[ARENA_BYTES];
  int draining;
  uint64_t event_id;
  void (*done_cb)(void *);
  void *done_ud;
  int done_fired;
  int shutting_down;
  int pending_closes; /* uv handles still closing */
  int server_down;
  void (*shutdown_cb)(void *);
  void *shutdown_ud;
  /* The closed loop (see "closed loop" below). */
  gy_run_t *run;
  gy_run_action_t *rbuf; /* run actions being carried out */
  size_t caprbuf;
  int run_draining;
  top_slot_t *tops;     /* rank 0's top samples of the last TOP_RING steps, by step % TOP_RING */
  hw_slot_t *hw;        /* per rank: the hardware counters last seen (NULL until a GPU report) */
  gy_run_value_t *vals; /* the values of one step: losses, norms, then tokens/s per rank */
  char (*tps_names)[GY_DETECT_NAME_MAX]; /* "tokens_per_s/<rank>", per rank */
  gy_skipset_t in_force; /* every id the workers skip: data.skip + every applied rollback's */
  gy_skipset_t sent;     /* the ranges of the applied rollbacks (resent to a re-formed gang) */
  uint64_t gen_seen;     /* generation of the newest gang formed (0: none yet) */
  int ngangs;            /* gangs formed */
  int64_t formed_start;  /* start step of the newest gang */
  int fresh_gang;        /* the newest gang has neither aggregated a step nor rolled back yet */
  int resend;            /* a gang re-formed: the next rollback also carries `sent` */
  int repair_pending;    /* the run's ROLLBACK is still to be asked of the fleet */
  int64_t repair_target;
  gy_policy_decision_t repair_dec;
  uint64_t rb_seq;        /* the fleet rollback carrying the run's repair (0: none in flight) */
  uint64_t journaled_seq; /* the newest rollback whose intent is in the journal */
  int64_t fence_ok_ms;    /* when the fence last said this controller leads (monotonic) */
  int recovered_done;     /* the journal says the run finished */
  int recovered_hold;     /* the journal says the run was paused (1) or halted (2) */
  char recovered_why[256];
  int journaled_hold;       /* what the journal's hold key says now */
  int64_t tick_grace_until; /* no liveness verdicts before this (after a store outage) */
  int in_operator;          /* an operator command is feeding the run: its PAUSE is already sent */
  uint64_t op_rb_seq;       /* the operator's rollback the run's ROLLBACK action adopts */
  evrec_t *evlog;           /* EVLOG_MAX entries, a ring: event id i is at (i - 1) % EVLOG_MAX */
  ckeval_t *ckevals;        /* CKEVAL_MAX entries (allocated at the first), sorted by step */
  int nckevals;
};

/* ------------------------------------------ helpers ------------------------------------------ */

static int64_t now_ms(gy_service_t *s) {
  return (int64_t)uv_now(s->loop) - s->t0_ms;
}

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int rpc_status(int rc) {
  switch (rc) {
  case GY_EINVAL:
    return GY_RPC_INVALID_ARGUMENT;
  case GY_ERANGE:
    return GY_RPC_OUT_OF_RANGE;
  case GY_EBUSY:
    return GY_RPC_ALREADY_EXISTS;
  case GY_EMISMATCH:
  case GY_ENOTSUP:
  case GY_ENOENT:
    return GY_RPC_FAILED_PRECONDITION;
  case GY_ENOMEM:
    return GY_RPC_RESOURCE_EXHAUSTED;
  default:
    return GY_RPC_INTERNAL;
  }
}

static void *arena_alloc(void *ud, size_t n) {
  gy_service_t *s = ud;
  size_t need = (n + 15) & ~(size_t)15;
  if (need >= n && need <= ARENA_BYTES - s->arena_used) {
    void *p = s->arena + s->arena_used;
    s->arena_used += need;
    return p;
  }
  return malloc(n);
}

static void arena_free(void *ud, void *p) {
  gy_service_t *s = ud;
  uint8_t *b = p;
  if (b >= s->arena && b < s->arena + ARENA_BYTES) return; /* released by the reset */
  free(p);
}

static json_t *num(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

/* The run's state as StatusReply says it: the run's when it says more (halted, or a repair or
 * suspicion, while a gang trains or is paused; without a gang, DEGRADED or INIT says more than a
 * repair waiting for one), else the fleet's. */
static const char *status_state(gy_service_t *s) {
  gy_run_state_t run_st = gy_run_state(s->run);
  gy_fleet_state_t fs = gy_fleet_state(s->fleet);
  int run_says =
      (fs == GY_FLEET_TRAIN || fs == GY_FLEET_PAUSED) &&
      (run_st == GY_RUN_HALTED || run_st == GY_RUN_SPIKE_SUSPECTED || run_st == GY_RUN_ROLLBACK ||
       run_st == GY_RUN_SKIP_WINDOW || run_st == GY_RUN_RESUME);
  return run_says ? gy_run_state_name(run_st) : gy_fleet_state_name(fs);
}

/* Tells the telemetry record (if any) the state, generation and whether a gang holds. */
static void tm_state(gy_service_t *s) {
  if (!s->o.telemetry || !s->fleet || !s->run) return;
  gy_fleet_state_t fs = gy_fleet_state(s->fleet);
  gy_telemetry_state(s->o.telemetry, status_state(s), gy_fleet_generation(s->fleet),
                     fs == GY_FLEET_TRAIN || fs == GY_FLEET_PAUSED || fs == GY_FLEET_STOPPING);
}

/* Emits an event: a JSON log line on stderr and a WatchMsg to every active watcher. */
static void emit_event(gy_service_t *s, const char *kind, int64_t step, const char *msg) {
  uint64_t id = ++s->event_id;
  double t = wall_s();
  if (s->evlog) {
    evrec_t *e = &s->evlog[(id - 1) % EVLOG_MAX];
    e->id = id;
    e->time = t;
    e->step = step;
    snprintf(e->kind, sizeof(e->kind), "%s", kind);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
  }
  gy_telemetry_event(s->o.telemetry, id, t, step, kind, msg);
  gy_journal_event(s->o.journal, id, t, step, kind, msg);
  tm_state(s);
  gy_log(!strcmp(kind, "worker_lost") || !strcmp(kind, "refused") || !strcmp(kind, "malformed") ||
                 !strcmp(kind, "rollback_failed") || !strcmp(kind, "directive_failed") ||
                 !strcmp(kind, "spike_suspected") || !strcmp(kind, "halted") ||
                 !strcmp(kind, "alert") || !strcmp(kind, "anomaly")
             ? GY_LOG_WARN
             : GY_LOG_INFO,
         "controller", "event %llu %s step %lld: %s", (unsigned long long)id, kind, (long long)step,
         msg);
  if (!s->watchers) return;
  Gyro__Event ev = GYRO__EVENT__INIT;
  ev.id = id;
  ev.time = t;
  ev.step = step;
  ev.kind = (char *)kind;
  ev.message = (char *)msg;
  Gyro__WatchMsg wm = GYRO__WATCH_MSG__INIT;
  wm.msg_case = GYRO__WATCH_MSG__MSG_EVENT;
  wm.event = &ev;
  size_t n = gyro__watch_msg__get_packed_size(&wm);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return;
  gyro__watch_msg__pack(&wm, buf);
  for (call_t *w = s->watchers; w; w = w->next)
    gy_rpc_send(w->rpc, buf, n);
  free(buf);
}

static void eventf(gy_service_t *s, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void eventf(gy_service_t *s, const char *kind, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  emit_event(s, kind, gy_fleet_last_step(s->fleet), msg);
}

/* The journal's records that must precede what follows them (see journal_must below). */
typedef enum { JOURNAL_CKPT, JOURNAL_INTENT, JOURNAL_APPLIED } journal_op_t;
static void journal_must(gy_service_t *s, const char *what, journal_op_t op, int64_t step,
                         uint64_t arg, const gy_fleet_action_t *a);

/* Answers a unary call with an error and records it as an event. */
static void refuse_unary(gy_service_t *s, gy_rpc_call_t *call, int status, const char *kind,
                         const char *msg) {
  eventf(s, kind, "%s from %s: %s", gy_rpc_call_method(call), gy_rpc_call_peer(call), msg);
  gy_rpc_reply(call, status, msg, NULL, 0);
}

/* Packs m into a malloc'ed buffer (*len its size); NULL when out of memory. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (buf) protobuf_c_message_pack(m, buf);
  return buf;
}

static void reply_msg(gy_rpc_call_t *call, const ProtobufCMessage *m) {
  size_t n;
  uint8_t *buf = pack(m, &n);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
  free(buf);
}

/* Operator calls: when a token is configured, metadata "authorization: Bearer TOKEN" or the
 * request's token field must carry it. */
static int operator_ok(gy_service_t *s, gy_rpc_call_t *call, const char *req_token) {
  const char *tok = s->o.operator_token;
  if (!tok || !*tok) return 1;
  /* Constant-time comparisons (gy_rpc_token_equal): the time of a refusal says nothing about
   * how much of the token was right. Neither token is ever logged. */
  const char *md = gy_rpc_call_metadata(call, "authorization");
  int ok = md && !strncmp(md, "Bearer ", 7) && gy_rpc_token_equal(md + 7, tok);
  return ok || (req_token && *req_token && gy_rpc_token_equal(req_token, tok));
}

/* The opening of every unary Operator call: unpacks the request (desc: its type) and checks
 * the token (metadata, or the request's `token` field when it has one). Returns the message, to
 * free with protobuf_c_message_free_unpacked; NULL after replying INVALID_ARGUMENT ("malformed
 * X", a `malformed` event) or UNAUTHENTICATED ("VERB: missing or wrong token", a `refused`
 * event). */
static ProtobufCMessage *operator_request(gy_service_t *s, gy_rpc_call_t *call,
                                          const ProtobufCMessageDescriptor *desc, const char *verb,
                                          const uint8_t *req, size_t len) {
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, req);
  char msg[160];
  if (!m) {
    snprintf(msg, sizeof(msg), "malformed %s", desc->short_name);
    refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, "malformed", msg);
    return NULL;
  }
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(desc, "token");
  const char *token = NULL;
  if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED)
    token = *(const char *const *)((const char *)m + f->offset);
  if (!operator_ok(s, call, token)) {
    protobuf_c_message_free_unpacked(m, NULL);
    snprintf(msg, sizeof(msg), "%s: missing or wrong token", verb);
    refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, "refused", msg);
    return NULL;
  }
  return m;
}

/* ------------------------------------------ status ------------------------------------------ */

/* Builds the StatusReply of the current state and packs it (as a WatchMsg when as_watch). */
static uint8_t *pack_status(gy_service_t *s, int as_watch, size_t *len) {
  const gy_fleet_t *f = s->fleet;
  Gyro__StatusReply st = GYRO__STATUS_REPLY__INIT;
  st.run = (char *)(s->o.run_name ? s->o.run_name : "");
  st.state = (char *)status_state(s);
  st.step = gy_fleet_last_step(f);
  st.horizon = gy_fleet_horizon(f);
  st.generation = gy_fleet_generation(f);
  st.world = s->o.world;
  st.tp = s->o.tp;
  st.steps_total = s->o.steps;
  st.committed_step = gy_fleet_ncommitted(f) ? gy_fleet_committed(f, 0) : -1;
  const gy_fleet_step_t *h = gy_fleet_history(f, st.step);
  Gyro__ChannelStat chs[GY_FLEET_MAX_CH], *chp[GY_FLEET_MAX_CH];
  if (h) {
    st.loss = h->loss;
    st.grad_norm = h->grad_norm;
    st.tokens_per_s = h->tokens_per_s;
    for (int c = 0; c < h->nch; c++) {
      gyro__channel_stat__init(&chs[c]);
      chs[c].name = (char *)h->ch[c].name;
      chs[c].loss_sum = h->ch[c].loss_sum;
      chs[c].tokens = h->ch[c].tokens;
      chp[c] = &chs[c];
    }
    st.n_channels = (size_t)h->nch;
    st.channels = chp;
  }
  int nm = gy_fleet_nmembers(f);
  Gyro__RankStatus *rs = nm ? calloc((size_t)nm, sizeof(*rs)) : NULL;
  Gyro__RankStatus **rsp = nm ? calloc((size_t)nm, sizeof(*rsp)) : NULL;
  uint8_t *buf = NULL;
  if (nm && (!rs || !rsp)) goto out;
  int64_t now = now_ms(s);
  for (int r = 0; r < nm; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(f, r);
    gyro__rank_status__init(&rs[r]);
    rs[r].rank = r;
    rs[r].worker_id = (char *)m->worker_id;
    rs[r].host = (char *)m->host;
    rs[r].pid = m->pid;
    rs[r].steps_done = m->steps_done;
    rs[r].tokens_per_s = m->tokens_per_s;
    rs[r].last_report_age_ms = (double)(now - m->last_seen_ms);
    rs[r].alive = m->alive;
    rsp[r] = &rs[r];
  }
  st.n_ranks = (size_t)nm;
  st.ranks = rsp;
  if (as_watch) {
    Gyro__WatchMsg wm = GYRO__WATCH_MSG__INIT;
    wm.msg_case = GYRO__WATCH_MSG__MSG_STATUS;
    wm.status = &st;
    buf = pack(&wm.base, len);
  } else {
    buf = pack(&st.base, len);
  }
out:
  free(rs);
  free(rsp);
  return buf;
}

/* A rank's throughput as its last report said (NaN once lost): the telemetry's and the
 * straggler check's per-rank figure. */
static double member_rate(const void *fleet, int rank) {
  const gy_fleet_member_t *m = gy_fleet_member(fleet, rank);
  return m && m->alive ? m->tokens_per_s : NAN;
}

/* One aggregated step into the telemetry record and the straggler check (O(channels + ranks)). */
static void tm_step(gy_service_t *s, int64_t step, const gy_fleet_step_t *h) {
  int nranks = gy_fleet_nmembers(s->fleet);
  if (s->o.telemetry) {
    const char *names[GY_FLEET_MAX_CH];
    double loss[GY_FLEET_MAX_CH];
    for (int c = 0; c < h->nch; c++) {
      names[c] = h->ch[c].name;
      loss[c] = h->ch[c].tokens ? h->ch[c].loss_sum / (double)h->ch[c].tokens : NAN;
    }
    gy_telemetry_step_t ts = {.step = step,
                              .loss = h->loss,
                              .nch = h->nch,
                              .ch_name = names,
                              .ch_loss = loss,
                              .grad_norm = h->grad_norm,
                              .grad_norm_shallow = h->grad_norm_shallow,
                              .grad_norm_deep = h->grad_norm_deep,
                              .lr = h->lr,
                              .tokens_per_s = h->tokens_per_s,
                              .step_ms = h->step_ms,
                              .nonfinite = h->nonfinite,
                              .nranks = nranks,
                              .rank_rate = member_rate,
                              .rank_ud = s->fleet};
    gy_telemetry_step(s->o.telemetry, &ts);
    tm_state(s);
  }
  char msg[300];
  if (gy_alert_stragglers(s->o.alert, step, nranks, member_rate, s->fleet, msg, sizeof(msg)))
    emit_event(s, "straggler", step, msg);
}

/* One aggregated step: a JSON line on stdout and a StatusReply to watchers that want steps. */
static void emit_step(gy_service_t *s, int64_t step) {
  const gy_fleet_step_t *h = gy_fleet_history(s->fleet, step);
  if (!h) return;
  tm_step(s, step, h);
  if (s->o.emit_steps) {
    json_t *o = json_object(), *lc = json_object(), *tc = json_object();
    json_object_set_new(o, "type", json_string("step"));
    json_object_set_new(o, "step", json_integer(step));
    json_object_set_new(o, "loss", num(h->loss));
    for (int c = 0; c < h->nch; c++) {
      json_object_set_new(lc, h->ch[c].name,
                          h->ch[c].tokens ? num(h->ch[c].loss_sum / (double)h->ch[c].tokens)
                                          : json_null());
      json_object_set_new(tc, h->ch[c].name, json_integer((json_int_t)h->ch[c].tokens));
    }
    json_object_set_new(o, "loss_ch", lc);
    json_object_set_new(o, "tokens_ch", tc);
    json_object_set_new(o, "grad_norm", num(h->grad_norm));
    json_object_set_new(o, "grad_norm_shallow", num(h->grad_norm_shallow));
    json_object_set_new(o, "grad_norm_deep", num(h->grad_norm_deep));
    json_object_set_new(o, "nonfinite", json_boolean(h->nonfinite));
    json_object_set_new(o, "lr", num(h->lr));
    json_object_set_new(o, "tokens_per_s", num(h->tokens_per_s));
    json_object_set_new(o, "step_ms", num(h->step_ms));
    gy_json_emit(o);
  }
  int want = 0;
  for (call_t *w = s->watchers; w; w = w->next)
    want |= w->steps;
  if (!want) return;
  size_t n;
  uint8_t *buf = pack_status(s, 1, &n);
  if (!buf) return;
  for (call_t *w = s->watchers; w; w = w->next)
    if (w->steps) gy_rpc_send(w->rpc, buf, n);
  free(buf);
}

/* ---------------------------------------- closed loop ---------------------------------------- */

/* The policy's knob changes as SET_HPARAMS fields: factors multiply the run config's values. */
static void knobs_to_hparams(const gy_service_t *s, const gy_policy_knobs_t *k,
                             gy_fleet_hparams_t *hp) {
  memset(hp, 0, sizeof(*hp));
  if ((k->set & GY_KNOB_LR_SCALE) && s->o.base_lr_scale > 0) {
    hp->lr_scale = (float)(s->o.base_lr_scale * k->lr_scale_factor);
    hp->present |= 1u << 0;
  }
  if ((k->set & GY_KNOB_GRAD_CLIP) && s->o.base_grad_clip > 0) {
    hp->grad_clip = (float)(s->o.base_grad_clip * k->grad_clip_factor);
    hp->present |= 1u << 1;
  }
  if ((k->set & GY_KNOB_EPS) && s->o.base_eps > 0) {
    hp->eps = (float)(s->o.base_eps * k->eps_factor);
    hp->present |= 1u << 2;
  }
  if (k->set & GY_KNOB_SHALLOW) {
    hp->shallow_scale = (float)k->shallow_scale;
    hp->shallow_layers = k->shallow_layers;
    hp->present |= (1u << 4) | (1u << 5);
  }
  if (k->set & GY_KNOB_Z_LOSS) {
    hp->z_loss = (float)k->z_loss;
    hp->present |= 1u << 6;
  }
  if (k->set & GY_KNOB_WSD_DECAY) {
    hp->wsd_decay_now = 1;
    hp->present |= GY_FLEET_HP_WSD_DECAY_NOW;
  }
}

/* A run event as a service event: "FROM -> TO: reason; evidence: ...; decision: ...". */
static void emit_run_event(gy_service_t *s, const gy_run_event_t *e) {
  char msg[1400];
  size_t o = 0;
  if (e->from != e->to)
    o += (size_t)snprintf(msg, sizeof(msg), "%s -> %s: ", gy_run_state_name(e->from),
                          gy_run_state_name(e->to));
  o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s", e->reason);
  if (e->evidence[0] && o < sizeof(msg))
    o += (size_t)snprintf(msg + o, sizeof(msg) - o, "; evidence: %s", e->evidence);
  if (e->decision[0] && o < sizeof(msg))
    snprintf(msg + o, sizeof(msg) - o, "; decision: %s", e->decision);
  emit_event(s, e->kind, e->step, msg);
}

static void run_act(gy_service_t *s, const gy_run_action_t *a);

/* Emits the run's events and carries out its actions until there are none. Does not nest: an
 * input fed while carrying out an action leaves its outputs for the running loop. */
static void run_drain(gy_service_t *s) {
  if (s->run_draining) return;
  s->run_draining = 1;
  for (;;) {
    size_t ne, na;
    const gy_run_event_t *ev = gy_run_events(s->run, &ne);
    for (size_t i = 0; i < ne; i++)
      emit_run_event(s, &ev[i]);
    const gy_run_action_t *ac = gy_run_actions(s->run, &na);
    if (na > s->caprbuf) {
      gy_run_action_t *b = realloc(s->rbuf, na * sizeof(*b));
      if (!b) {
        gy_run_clear(s->run);
        gy_log(GY_LOG_ERROR, "controller", "out of memory: %zu run actions lost", na);
        break;
      }
      s->rbuf = b;
      s->caprbuf = na;
    }
    if (na) memcpy(s->rbuf, ac, na * sizeof(*ac));
    gy_run_clear(s->run);
    if (!ne && !na) break;
    for (size_t i = 0; i < na; i++)
      run_act(s, &s->rbuf[i]);
  }
  s->run_draining = 0;
}

/* Logs a run input the state machine refused (they are expected now and then: a checkpoint of
 * an abandoned timeline, figures out of order around a re-formed gang). */
static void run_refused(gy_service_t *s, const char *what, int rc) {
  if (rc) gy_log(GY_LOG_DEBUG, "controller", "run: %s refused: %s", what, gy_run_errmsg(s->run));
}

/* Freezes the gang for a halted run: a PAUSE directive when it trains (a paused or degraded
 * fleet gives no grants anyway; a gang formed later is paused when it forms). */
static void hold(gy_service_t *s) {
  if (gy_fleet_state(s->fleet) != GY_FLEET_TRAIN) return;
  uint64_t seq;
  int64_t at;
  int rc = gy_fleet_command(s->fleet, now_ms(s), GY_DIR_PAUSE, NULL, &seq, &at);
  if (rc) eventf(s, "error", "cannot hold the gang: %s", gy_fleet_errmsg(s->fleet));
}

/* Asks the fleet for the run's pending rollback: to repair_target, skipping the decision's
 * samples and the sample ids of its step window (mapped over the skip set in force: they are
 * the ids those steps trained on), plus every earlier skip after the gang re-formed. Waits
 * while there is no gang to ask. */
static void try_repair(gy_service_t *s) {
  if (!s->repair_pending) return;
  gy_fleet_state_t st = gy_fleet_state(s->fleet);
  if (st == GY_FLEET_DONE || st == GY_FLEET_STOPPING) {
    s->repair_pending = 0;
    eventf(s, "rollback_dropped", "repair to checkpoint %lld dropped: the run is %s",
           (long long)s->repair_target, gy_fleet_state_name(st));
    return;
  }
  if (st != GY_FLEET_TRAIN && st != GY_FLEET_PAUSED) return; /* no gang: when it forms */
  const gy_policy_decision_t *d = &s->repair_dec;
  int64_t target = s->repair_target;
  gy_skipset_t add = {0};
  int rc = 0;
  for (int i = 0; i < d->nsamples && !rc; i++)
    rc = gy_skipset_add(&add, d->samples[i], d->samples[i] + 1);
  if (!rc && d->skip_steps) {
    int64_t a = d->step_first > target ? d->step_first : target, b = d->step_last;
    int tp = s->o.tp > 0 ? s->o.tp : 1;
    uint64_t per_step = (uint64_t)(s->o.world / tp) * (uint64_t)(s->o.batch > 0 ? s->o.batch : 0);
    if (!per_step)
      eventf(s, "error", "cannot skip the batches of steps [%lld, %lld): train.batch unknown",
             (long long)d->step_first, (long long)d->step_last);
    else if (b > a)
      rc = gy_skipset_add_mapped(&add, &s->in_force, (uint64_t)a * per_step,
                                 (uint64_t)(b - a) * per_step);
  }
  for (size_t i = 0; s->resend && i < s->sent.n && !rc; i++)
    rc = gy_skipset_add(&add, s->sent.r[i].first, s->sent.r[i].last);
  gy_fleet_hparams_t hp;
  knobs_to_hparams(s, &d->knobs, &hp);
  if (rc) {
    gy_skipset_free(&add);
    s->repair_pending = 0;
    run_refused(s, "halt", gy_run_halt(s->run, now_ms(s), "out of memory building the skips"));
    return;
  }
  /* A gang that just formed from the target itself, with nothing to send, is repaired. */
  if (s->fresh_gang && s->formed_start == target && !add.n && !hp.present) {
    gy_skipset_free(&add);
    s->repair_pending = 0;
    run_refused(s, "rollback done", gy_run_rollback_done(s->run, now_ms(s), target));
    return;
  }
  char reason[GY_FLEET_REASON_MAX];
  gy_policy_decision_format(d, reason, sizeof(reason));
  uint64_t seq = 0;
  int64_t at = 0;
  rc = add.n > GY_FLEET_MAX_SKIPS ? GY_EINVAL
                                  : gy_fleet_rollback(s->fleet, now_ms(s), target, add.r,
                                                      (int)add.n, &hp, reason, &seq, &at);
  size_t nadd = add.n;
  gy_skipset_free(&add);
  switch (rc) {
  case 0:
    s->repair_pending = 0;
    s->rb_seq = seq;
    break;
  case GY_ENOENT: /* the fleet no longer has that checkpoint: the run picks an older one */
    s->repair_pending = 0;
    run_refused(s, "restore failed",
                gy_run_restore_failed(s->run, now_ms(s), target, gy_fleet_errmsg(s->fleet)));
    break;
  default: {
    char why[300];
    /* GY_ENOTSUP: e.g. the run ends before a directive could apply, or a stop is under way */
    if (nadd > GY_FLEET_MAX_SKIPS)
      snprintf(why, sizeof(why), "the repair needs %zu skip ranges (at most %d)", nadd,
               GY_FLEET_MAX_SKIPS);
    else
      snprintf(why, sizeof(why), "the fleet cannot roll back: %s", gy_fleet_errmsg(s->fleet));
    s->repair_pending = 0;
    run_refused(s, "halt", gy_run_halt(s->run, now_ms(s), why));
  }
  }
}

static void run_act(gy_service_t *s, const gy_run_action_t *a) {
  int64_t now = now_ms(s);
  switch (a->kind) {
  case GY_RUN_ACT_ROLLBACK:
    s->repair_target = a->step;
    s->repair_dec = a->decision;
    if (s->in_operator && s->op_rb_seq) { /* the operator's rollback, already queued */
      s->rb_seq = s->op_rb_seq;
      s->op_rb_seq = 0;
      s->repair_pending = 0;
      break;
    }
    s->rb_seq = 0;
    s->repair_pending = 1;
    try_repair(s);
    break;
  case GY_RUN_ACT_APPLY: /* the ROLLBACK directive carried the skips and knobs */
    run_refused(s, "skips applied", gy_run_skips_applied(s->run, now));
    break;
  case GY_RUN_ACT_RESUME: /* the fleet grants again once a rollback is applied */
    if (gy_run_state(s->run) == GY_RUN_RESUME)
      run_refused(s, "resumed", gy_run_resumed(s->run, now));
    break;
  case GY_RUN_ACT_PAUSE: /* a pause deferred until a repair ended */
    if (!s->in_operator) hold(s);
    break;
  case GY_RUN_ACT_HALT:
    s->repair_pending = 0;
    hold(s);
    break;
  case GY_RUN_ACT_ALERT:
    emit_event(s, "alert", a->step, a->msg);
    gy_alert_post(s->o.alert, gy_alert_kind_of(a->msg), a->step, a->msg);
    break;
  case GY_RUN_ACT_DONE:
    break;
  }
}

/* A gang formed (the first ASSIGN of a new generation) and trains from start. */
static void loop_gang_formed(gy_service_t *s, uint64_t generation, int64_t start) {
  s->gen_seen = generation;
  if (s->o.journal) { /* the generation, so that a successor forms a newer one */
    char err[256];
    if (gy_journal_state(s->o.journal, generation, s->journaled_seq,
                         (int64_t)gy_fleet_nrollbacks(s->fleet), err, sizeof(err)))
      gy_log(GY_LOG_WARN, "controller", "journal: %s", err);
  }
  s->formed_start = start;
  s->fresh_gang = 1;
  s->rb_seq = 0; /* a rollback in flight was dropped with the old gang */
  if (s->ngangs++) s->resend = 1;
  gy_run_state_t st = gy_run_state(s->run);
  if (st == GY_RUN_INIT) {
    run_refused(s, "started", gy_run_started(s->run, now_ms(s), start));
    /* a run that was held before the restart stays held: the gang parks at its first horizon */
    int held = s->recovered_hold;
    s->recovered_hold = 0;
    if (held == 2) {
      run_refused(s, "halt",
                  gy_run_halt(s->run, now_ms(s),
                              "the run was HALTED before the controller restarted: a human "
                              "decides (gyroctl resume, rollback, skip)"));
    } else if (held == 1) {
      run_refused(s, "pause", gy_run_pause(s->run, now_ms(s)));
      hold(s);
    }
    if (held)
      eventf(s, "recovered", "the run stays %s as before the restart (%s)",
             held == 2 ? "HALTED" : "PAUSED", s->recovered_why);
  } else if (st == GY_RUN_ROLLBACK) {
    s->repair_pending = 1;
    try_repair(s);
  } else if (st == GY_RUN_HALTED || st == GY_RUN_PAUSED) {
    hold(s);
  }
  run_drain(s);
}

/* One aggregated step feeds the detectors: losses (total and per channel), gradient norms,
 * non-finite flag, and rank 0's top samples. */
static void loop_step(gy_service_t *s, int64_t step) {
  const gy_fleet_step_t *h = gy_fleet_history(s->fleet, step);
  if (!h) return;
  s->fresh_gang = 0;
  char names[GY_FLEET_MAX_CH][GY_DETECT_NAME_MAX];
  int world = s->o.world;
  if (!s->vals) { /* once: world is fixed for the controller's life */
    s->vals = calloc((size_t)(GY_FLEET_MAX_CH + 3 + world), sizeof(*s->vals));
    s->tps_names = calloc((size_t)world, sizeof(*s->tps_names));
    if (!s->vals || !s->tps_names) {
      free(s->vals);
      free(s->tps_names);
      s->vals = NULL;
      s->tps_names = NULL;
      return;
    }
    for (int r = 0; r < world; r++)
      snprintf(s->tps_names[r], sizeof(s->tps_names[r]), "tokens_per_s/%d", r);
  }
  gy_run_value_t *v = s->vals;
  int nv = 0;
  v[nv++] = (gy_run_value_t){"loss", GY_SERIES_LOSS, h->loss, -1};
  for (int c = 0; c < h->nch; c++) {
    if (!h->ch[c].tokens) continue; /* the channel had no sample in this step */
    snprintf(names[c], sizeof(names[c]), "loss/%s", h->ch[c].name);
    v[nv++] = (gy_run_value_t){names[c], GY_SERIES_CHANNEL_LOSS,
                               h->ch[c].loss_sum / (double)h->ch[c].tokens, -1};
  }
  v[nv++] = (gy_run_value_t){"grad_norm", GY_SERIES_GRAD_NORM, h->grad_norm, -1};
  v[nv++] =
      (gy_run_value_t){"grad_norm_shallow", GY_SERIES_GRAD_NORM_SHALLOW, h->grad_norm_shallow, -1};
  /* each rank's tokens/s against its own baseline (alert-only: a sustained drop is told) */
  for (int r = 0; r < world; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(s->fleet, r);
    if (m && m->alive && m->tokens_per_s > 0)
      v[nv++] = (gy_run_value_t){s->tps_names[r], GY_SERIES_THROUGHPUT, m->tokens_per_s, r};
  }
  gy_run_sample_t top[TOP_MAX], bottom[TOP_MAX];
  int ntop = 0, nbottom = 0;
  const top_slot_t *t = &s->tops[step % TOP_RING];
  if (t->step == step) {
    for (; ntop < t->n; ntop++)
      top[ntop] = (gy_run_sample_t){t->id[ntop], t->ch[ntop][0] ? t->ch[ntop] : NULL,
                                    (double)t->loss[ntop]};
    for (; nbottom < t->nb; nbottom++) {
      int at = TOP_MAX + nbottom;
      bottom[nbottom] =
          (gy_run_sample_t){t->id[at], t->ch[at][0] ? t->ch[at] : NULL, (double)t->loss[at]};
    }
  }
  gy_run_step_t in = {.step = step,
                      .nonfinite = h->nonfinite,
                      .values = v,
                      .nvalues = nv,
                      .top = ntop ? top : NULL,
                      .ntop = ntop,
                      .bottom = nbottom ? bottom : NULL,
                      .nbottom = nbottom};
  run_refused(s, "step", gy_run_step(s->run, now_ms(s), &in));
  run_drain(s);
}

/* A fleet rollback completed: its skips are in force; the run's own one ends its repair. */
static void loop_rolled_back(gy_service_t *s, uint64_t seq, int64_t to_step, int ok) {
  int64_t now = now_ms(s);
  if (ok) {
    s->fresh_gang = 0;
    s->resend = 0;
    for (int i = 0; i < gy_fleet_nrollbacks(s->fleet); i++) {
      const gy_fleet_rollback_t *rb = gy_fleet_rollback_record(s->fleet, i);
      if (!rb || rb->seq != seq) continue;
      /* counted once: a re-formed gang is sent the skips already in force again */
      uint64_t nskipped = 0;
      for (int k = 0; k < rb->nskip; k++) {
        nskipped += gy_skipset_uncovered(&s->in_force, rb->skip[k].first, rb->skip[k].last);
        if (gy_skipset_add(&s->in_force, rb->skip[k].first, rb->skip[k].last) ||
            gy_skipset_add(&s->sent, rb->skip[k].first, rb->skip[k].last))
          gy_log(GY_LOG_ERROR, "controller", "out of memory: skip list incomplete");
      }
      gy_telemetry_rollback(s->o.telemetry, to_step, nskipped);
      break;
    }
  }
  if (ok) {
    while (s->nckevals && s->ckevals[s->nckevals - 1].step > to_step) /* abandoned timeline */
      s->nckevals--;
    journal_must(s, "rollback applied", JOURNAL_APPLIED, to_step, seq, NULL);
  } else if (s->o.journal) {
    char err[256];
    if (gy_journal_dropped(s->o.journal, seq, err, sizeof(err)))
      gy_log(GY_LOG_WARN, "controller", "journal: rollback seq %llu failed: %s",
             (unsigned long long)seq, err);
  }
  if (!seq || seq != s->rb_seq) return;
  s->rb_seq = 0;
  if (ok)
    run_refused(s, "rollback done", gy_run_rollback_done(s->run, now, to_step));
  else
    run_refused(s, "restore failed",
                gy_run_restore_failed(s->run, now, to_step, "a rank could not restore it"));
  run_drain(s);
}

/* ------------------------------------ held-out evaluations ------------------------------------ */

/* The kept evaluation of checkpoint step, or NULL. */
static ckeval_t *ckeval_find(gy_service_t *s, int64_t step) {
  for (int i = s->nckevals - 1; i >= 0; i--)
    if (s->ckevals[i].step == step) return &s->ckevals[i];
  return NULL;
}

/* Keeps e (a newer evaluation of the same checkpoint replaces the older one); when full the
 * oldest step goes. */
static void ckeval_put(gy_service_t *s, const ckeval_t *e) {
  if (!s->ckevals && !(s->ckevals = calloc(CKEVAL_MAX, sizeof(*s->ckevals)))) {
    gy_log(GY_LOG_ERROR, "controller", "out of memory: evaluation of checkpoint %lld not kept",
           (long long)e->step);
    return;
  }
  ckeval_t *old = ckeval_find(s, e->step);
  if (old) {
    *old = *e;
    return;
  }
  if (s->nckevals == CKEVAL_MAX) {
    if (e->step < s->ckevals[0].step) return;
    memmove(&s->ckevals[0], &s->ckevals[1], (size_t)(CKEVAL_MAX - 1) * sizeof(*s->ckevals));
    s->nckevals--;
  }
  int i = s->nckevals;
  while (i > 0 && s->ckevals[i - 1].step > e->step)
    i--;
  memmove(&s->ckevals[i + 1], &s->ckevals[i], (size_t)(s->nckevals - i) * sizeof(*s->ckevals));
  s->ckevals[i] = *e;
  s->nckevals++;
}

/* {"step", "sources": [{"source", "loss", "ppl", "tokens", "cloze_accuracy", "cloze_items"}]}
 * (cloze_accuracy null when there was no item). */
static json_t *ckeval_json(const ckeval_t *e) {
  json_t *a = json_array();
  for (int i = 0; i < e->n; i++) {
    const srceval_t *x = &e->src[i];
    json_array_append_new(
        a, json_pack("{s:s, s:o, s:o, s:I, s:o, s:I}", "source", x->name, "loss", num(x->loss),
                     "ppl", num(x->ppl), "tokens", (json_int_t)x->tokens, "cloze_accuracy",
                     x->items ? num(x->cloze) : json_null(), "cloze_items", (json_int_t)x->items));
  }
  return json_pack("{s:I, s:o}", "step", (json_int_t)e->step, "sources", a);
}

/* Writes the kept evaluation of checkpoint step into its journal manifest (once the manifest
 * exists: a failure is logged, the run goes on). */
static void ckeval_journal(gy_service_t *s, int64_t step) {
  const ckeval_t *e;
  if (!s->o.journal || !(e = ckeval_find(s, step))) return;
  json_t *o = ckeval_json(e);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL, err[256] = "";
  json_decref(o);
  if (!text || gy_journal_checkpoint_eval(s->o.journal, step, text, err, sizeof(err)))
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld: %s", (long long)step,
           text ? err : "out of memory");
  free(text);
}

/* 1 when name is a source name: 1..GY_FLEET_CH_NAME-1 bytes of UTF-8 text without control
 * characters (jansson refuses a string that is not UTF-8). */
static int source_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (!n || n >= GY_FLEET_CH_NAME) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) return 0;
  json_t *j = json_string(name);
  json_decref(j);
  return j != NULL;
}

/* Checks one source's figures into *x; 0 or GY_EINVAL with why. */
static int source_check(srceval_t *x, const char *name, double loss, double ppl, uint64_t tokens,
                        double cloze, uint64_t items, char *why, size_t len) {
  if (!source_name_ok(name)) {
    snprintf(why, len, "source name must be 1..%d bytes of UTF-8 text", GY_FLEET_CH_NAME - 1);
    return GY_EINVAL;
  }
  if (!isfinite(loss) || loss < 0 || !isfinite(ppl) || ppl <= 0 || !isfinite(cloze) || cloze < 0 ||
      cloze > 1 || items > UINT32_MAX) {
    snprintf(why, len,
             "source %s: loss %g, ppl %g, cloze accuracy %g: the loss must be finite and >= 0, "
             "the perplexity finite and > 0, the accuracy in [0, 1]",
             name, loss, ppl, cloze);
    return GY_EINVAL;
  }
  snprintf(x->name, sizeof(x->name), "%s", name);
  x->loss = loss;
  x->ppl = ppl;
  x->tokens = tokens;
  x->cloze = cloze;
  x->items = (uint32_t)items;
  return 0;
}

/* A manifest's "eval" object (from the journal) into the kept evaluations; a bad one is logged
 * and skipped. */
static void ckeval_from_json(gy_service_t *s, int64_t step, const char *text) {
  json_t *o = json_loads(text, 0, NULL), *a = json_object_get(o, "sources");
  ckeval_t e = {.step = step};
  char why[256] = "not an evaluation object";
  int ok = json_is_array(a) && json_array_size(a) <= GY_FLEET_MAX_CH;
  for (size_t i = 0; ok && i < json_array_size(a); i++) {
    json_t *x = json_array_get(a, i), *cz = json_object_get(x, "cloze_accuracy");
    const char *name = json_string_value(json_object_get(x, "source"));
    json_int_t tok = json_integer_value(json_object_get(x, "tokens"));
    json_int_t items = json_integer_value(json_object_get(x, "cloze_items"));
    ok = tok >= 0 && items >= 0 &&
         !source_check(&e.src[e.n++], name, json_number_value(json_object_get(x, "loss")),
                       json_number_value(json_object_get(x, "ppl")), (uint64_t)tok,
                       json_is_number(cz) ? json_number_value(cz) : 0, (uint64_t)items, why,
                       sizeof(why));
  }
  json_decref(o);
  if (ok)
    ckeval_put(s, &e);
  else
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld ignored: %s",
           (long long)step, why);
}

/* An EvalReport on rank's session: checked (generation, rank, step, at most GY_FLEET_MAX_CH
 * sources with distinct UTF-8 names, finite figures, the checkpoint's step its own), then into
 * the telemetry, the run's ppl detectors (gy_run_eval), a JSON line on stdout and, for a
 * checkpoint's evaluation, the kept evaluations (and the manifest when already committed).
 * Returns 0, or GY_EMISMATCH (another generation) / GY_EINVAL with why. */
static int eval_msg(gy_service_t *s, int rank, const Gyro__EvalReport *r, char *why, size_t len) {
  uint64_t gen = gy_fleet_generation(s->fleet);
  if (r->generation != gen) {
    snprintf(why, len, "evaluation: generation %llu, current is %llu",
             (unsigned long long)r->generation, (unsigned long long)gen);
    return GY_EMISMATCH;
  }
  if (r->rank != rank || r->rank < 0 || r->rank >= s->o.world) {
    snprintf(why, len, "evaluation: rank %d on the session of rank %d (world %d)", r->rank, rank,
             s->o.world);
    return GY_EINVAL;
  }
  if (r->step < 0 || (r->has_checkpoint && r->checkpoint_step != r->step)) {
    snprintf(why, len,
             "evaluation: step %lld, checkpoint step %lld: a step >= 0, and a "
             "checkpoint's evaluation is of its own step",
             (long long)r->step, (long long)r->checkpoint_step);
    return GY_EINVAL;
  }
  if (r->n_sources > GY_FLEET_MAX_CH) {
    snprintf(why, len, "evaluation: %zu sources, at most %d", r->n_sources, GY_FLEET_MAX_CH);
    return GY_EINVAL;
  }
  ckeval_t e = {.step = r->step, .n = (int)r->n_sources};
  char err[200];
  for (int i = 0; i < e.n; i++) {
    const Gyro__SourceEval *x = r->sources[i];
    int rc = source_check(&e.src[i], x->source, x->loss, x->ppl, x->tokens,
                          x->cloze_items ? x->cloze_accuracy : 0, x->cloze_items, err, sizeof(err));
    for (int k = 0; k < i && !rc; k++)
      if (!strcmp(e.src[k].name, e.src[i].name)) {
        snprintf(err, sizeof(err), "source %s twice", e.src[i].name);
        rc = GY_EINVAL;
      }
    if (rc) {
      snprintf(why, len, "evaluation of step %lld: %s", (long long)r->step, err);
      return rc;
    }
  }
  char names[GY_FLEET_MAX_CH][GY_DETECT_NAME_MAX];
  gy_run_value_t v[GY_FLEET_MAX_CH];
  for (int i = 0; i < e.n; i++) {
    const srceval_t *x = &e.src[i];
    gy_telemetry_eval_cloze(s->o.telemetry, e.step, x->name, x->loss, x->ppl,
                            x->items ? x->cloze : NAN, r->has_checkpoint);
    snprintf(names[i], sizeof(names[i]), "ppl/%s", x->name);
    v[i] = (gy_run_value_t){names[i], GY_SERIES_PPL, x->ppl, -1};
  }
  if (s->o.emit_steps) {
    json_t *o = ckeval_json(&e);
    json_object_set_new(o, "type", json_string("eval"));
    json_object_set_new(o, "checkpoint", json_boolean(r->has_checkpoint));
    gy_json_emit(o);
  }
  if (r->has_checkpoint) {
    ckeval_put(s, &e);
    int n;
    const gy_run_ckpt_t *ck = gy_run_checkpoints(s->run, &n);
    for (int i = 0; i < n; i++)
      if (ck[i].step == e.step) ckeval_journal(s, e.step); /* committed before it came */
  }
  if (e.n) {
    run_refused(s, "evaluation", gy_run_eval(s->run, now_ms(s), e.step, v, e.n));
    run_drain(s);
  }
  return 0;
}

/* GPU throttle reasons that mean the hardware protects itself (NVML's bits: HW slowdown, SW
 * and HW thermal, HW power brake), as opposed to idling or power capping by configuration. */
#define HW_THROTTLE_FAULT (0x8ull | 0x20ull | 0x40ull | 0x80ull)

/* A rank's GPU health: into the telemetry, and a "hardware" event (and alert) when an Xid
 * error or an uncorrected ECC error is new, or a protective throttle starts. */
static void gpu_report(gy_service_t *s, int rank, int64_t step, const Gyro__GpuHealth *g) {
  gy_telemetry_gpu(s->o.telemetry, rank, g->has_temp ? (double)g->temp_c : NAN,
                   g->has_mem ? (double)g->mem_used_bytes : NAN,
                   g->has_mem ? (double)g->mem_total_bytes : NAN,
                   g->has_util ? g->util_gpu_pct / 100.0 : NAN);
  if (rank < 0 || rank >= s->o.world) return;
  if (!s->hw && !(s->hw = calloc((size_t)s->o.world, sizeof(*s->hw)))) return;
  hw_slot_t *h = &s->hw[rank];
  char what[256] = "";
  size_t n = 0;
  if (g->has_xid && h->seen && g->xid_count > h->xid_count)
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%u new Xid error(s), last Xid %llu; ",
                          g->xid_count - h->xid_count, (unsigned long long)g->last_xid);
  if (g->has_ecc && h->seen && g->ecc_uncorrected > h->ecc_uncorrected && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%llu new uncorrected ECC error(s); ",
                          (unsigned long long)(g->ecc_uncorrected - h->ecc_uncorrected));
  uint64_t fault = g->has_throttle ? g->throttle_reasons & HW_THROTTLE_FAULT : 0;
  if (fault & ~h->throttle && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "throttling (reasons 0x%llx); ",
                          (unsigned long long)fault);
  h->seen = 1;
  if (g->has_xid) h->xid_count = g->xid_count;
  if (g->has_ecc) h->ecc_uncorrected = g->ecc_uncorrected;
  h->throttle = fault;
  if (!what[0]) return;
  if (n >= 2 && n < sizeof(what)) what[n - 2] = 0; /* the last "; " */
  char msg[512];
  snprintf(msg, sizeof(msg), "rank %d GPU %d (%.64s) at step %lld: %s", rank, g->index,
           g->name ? g->name : "", (long long)step, what);
  eventf(s, "hardware", "%s", msg);
  gy_alert_post(s->o.alert, "hardware", step, msg);
}

/* Rank 0's top samples of a report, kept until the step is aggregated. */
static void keep_top(gy_service_t *s, const Gyro__StepReport *r) {
  if (r->step < 0) return;
  top_slot_t *t = &s->tops[r->step % TOP_RING];
  t->step = r->step;
  t->n = t->nb = 0;
  for (size_t i = 0; i < r->n_top + r->n_bottom; i++) {
    int bottom = i >= r->n_top;
    int *n = bottom ? &t->nb : &t->n;
    if (*n >= TOP_MAX) continue;
    const Gyro__SampleLoss *sl = bottom ? r->bottom[i - r->n_top] : r->top[i];
    int at = (bottom ? TOP_MAX : 0) + *n;
    t->id[at] = sl->id;
    t->loss[at] = sl->loss;
    snprintf(t->ch[at], sizeof(t->ch[at]), "%s", sl->channel ? sl->channel : "");
    (*n)++;
  }
}

/* ------------------------------------------ actions ------------------------------------------ */

/* Sends cm to rank, or to every connected rank (rank -1): encoded once, and for a broadcast
 * the bytes are shared by all the streams (gy_rpc_send_many). */
static void send_ctl(gy_service_t *s, int rank, const Gyro__ControllerMsg *cm) {
  uint8_t small[256];
  size_t n = protobuf_c_message_get_packed_size(&cm->base);
  uint8_t *buf = n <= sizeof(small) ? small : malloc(n);
  if (!buf) return;
  protobuf_c_message_pack(&cm->base, buf);
  if (rank >= 0) {
    if (rank < s->o.world && s->sessions[rank]) gy_rpc_send(s->sessions[rank]->rpc, buf, n);
  } else {
    size_t k = 0;
    for (int r = 0; r < s->o.world; r++)
      if (s->sessions[r]) s->fanout[k++] = s->sessions[r]->rpc;
    gy_rpc_send_many(s->fanout, k, buf, n);
  }
  if (buf != small) free(buf);
}

/* ------------------------------------------ journal ----------------------------------------- */

/* Writes one record that must precede what follows it (the directive is not sent, the
 * checkpoint not used, until it is in the store). A store outage holds the loop here, retrying
 * with back-off: the workers park at their horizon meanwhile, and once the store answers the
 * liveness verdicts wait one lost_after_ms so that parked workers are not declared lost. After
 * 10 minutes the record is given up (an error event) and the controller goes on without it.
 * JOURNAL_CKPT: step, arg = clean; JOURNAL_INTENT: the directive a; JOURNAL_APPLIED: step =
 * to_step, arg = the rollback's seq. */
static void journal_must(gy_service_t *s, const char *what, journal_op_t op, int64_t step,
                         uint64_t arg, const gy_fleet_action_t *a) {
  if (!s->o.journal) return;
  char err[512] = "";
  int64_t t0 = now_ms(s), backoff = 100, outage = 0;
  for (;;) {
    int rc;
    if (op == JOURNAL_CKPT) {
      rc = gy_journal_checkpoint(s->o.journal, step, (int)arg, err, sizeof(err));
    } else if (op == JOURNAL_INTENT) {
      gy_journal_intent_t in = {.seq = a->seq,
                                .kind = a->dir_kind,
                                .at_step = a->step,
                                .to_step = a->to_step,
                                .skip = (gy_fleet_skip_t *)a->skip,
                                .nskip = a->nskip};
      snprintf(in.reason, sizeof(in.reason), "%.199s", a->msg);
      char *snap = gy_run_save(s->run); /* the repair history that decided it */
      rc = gy_journal_intent(s->o.journal, &in, snap, err, sizeof(err));
      free(snap);
    } else {
      rc = gy_journal_applied(s->o.journal, arg, step, s->in_force.r, s->in_force.n, err,
                              sizeof(err));
      if (!rc)
        rc = gy_journal_state(s->o.journal, s->gen_seen, s->journaled_seq,
                              (int64_t)gy_fleet_nrollbacks(s->fleet), err, sizeof(err));
    }
    if (!rc) break;
    if (!outage++)
      gy_log(GY_LOG_ERROR, "controller",
             "journal: cannot write the %s: %s; holding the run until the store answers", what,
             err);
    uv_update_time(s->loop);
    if (now_ms(s) - t0 > 600000) {
      eventf(s, "error", "journal: gave up writing the %s after 10 minutes: %s", what, err);
      break;
    }
    uv_sleep((unsigned)backoff);
    backoff = backoff < 2000 ? backoff * 2 : 2000;
  }
  if (outage) {
    uv_update_time(s->loop);
    s->tick_grace_until = now_ms(s) + s->o.lost_after_ms;
    eventf(s, "store", "journal: the store answered again after %lld ms; the %s is written",
           (long long)(now_ms(s) - t0), what);
  }
}

/* At create, with a journal that holds the run: the events (the audit log goes on with the
 * next id), the skips in force, the committed checkpoints (the gang re-forms from the newest),
 * the generation and directive numbers, and a rollback that was committed but never confirmed
 * is completed: its skips are in force and the checkpoints after its target are forgotten, so
 * the re-formed gang restores that target with the skips (the Assignment carries them). */
static int recover(gy_service_t *s, char *errmsg, size_t errlen) {
  gy_journal_state_t st;
  int rc = gy_journal_load(s->o.journal, &st, EVLOG_MAX, errmsg, errlen);
  if (rc) return rc;
  if (!st.found) {
    gy_journal_state_free(&st);
    return 0;
  }
  for (size_t i = 0; i < st.nevents; i++) {
    const gy_journal_event_t *e = &st.events[i];
    evrec_t *r = &s->evlog[(e->id - 1) % EVLOG_MAX];
    r->id = e->id;
    r->time = e->time;
    r->step = e->step;
    snprintf(r->kind, sizeof(r->kind), "%s", e->kind);
    snprintf(r->msg, sizeof(r->msg), "%s", e->text);
  }
  s->event_id = st.last_event_id;
  for (size_t i = 0; i < st.nskips && !rc; i++)
    rc = gy_skipset_add(&s->in_force, st.skips[i].first, st.skips[i].last);
  int64_t cut = INT64_MAX;
  uint64_t seq = st.last_seq;
  int ncompleted = 0;
  for (size_t i = 0; i < st.nintents && !rc; i++) {
    const gy_journal_intent_t *in = &st.intents[i];
    if (in->seq > seq) seq = in->seq;
    if (in->kind != GY_DIR_ROLLBACK) continue;
    for (int k = 0; k < in->nskip && !rc; k++)
      rc = gy_skipset_add(&s->in_force, in->skip[k].first, in->skip[k].last);
    if (in->to_step < cut) cut = in->to_step;
    ncompleted++;
  }
  /* A checkpoint committed while a spike was suspected (suspect) may hold what the spike did:
   * the gang re-forms from the newest clean one, and the steps after it run again under the
   * successor's eyes (the suspicion itself was not journaled). */
  int64_t newest_clean = -1;
  for (size_t i = 0; i < st.nckpts; i++)
    if (st.ckpts[i].clean && st.ckpts[i].step <= cut && st.ckpts[i].step > newest_clean)
      newest_clean = st.ckpts[i].step;
  if (newest_clean >= 0) cut = newest_clean;
  int64_t *steps = calloc(st.nckpts ? st.nckpts : 1, sizeof(*steps)), newest = -1;
  int n = 0;
  if (!steps && !rc) rc = GY_ENOMEM;
  for (size_t i = 0; i < st.nckpts && !rc; i++) {
    if (st.ckpts[i].step > cut) continue; /* the abandoned timeline of a completed rollback */
    steps[n++] = st.ckpts[i].step;
    if (st.ckpts[i].step > newest) newest = st.ckpts[i].step;
    gy_run_checkpoint(s->run, now_ms(s), st.ckpts[i].step, st.ckpts[i].clean, NULL);
    if (st.ckpts[i].eval) ckeval_from_json(s, st.ckpts[i].step, st.ckpts[i].eval);
  }
  /* the detectors' baselines as of the checkpoint the gang re-forms from, and the repairs the
   * escalation counts */
  for (size_t i = 0; i < st.nbase && !rc; i++)
    if (st.base_steps[i] == newest &&
        gy_run_load(s->run, st.base_texts[i], GY_RUN_LOAD_BASELINES, errmsg, errlen))
      gy_log(GY_LOG_WARN, "controller", "journal: baselines of %lld: %s", (long long)newest,
             errmsg);
  if (!rc && st.run_snapshot &&
      gy_run_load(s->run, st.run_snapshot, GY_RUN_LOAD_REPAIRS, errmsg, errlen))
    gy_log(GY_LOG_WARN, "controller", "journal: repair history: %s", errmsg);
  errmsg[0] = 0;
  gy_run_clear(s->run); /* those commits are history, not news */
  if (!rc) rc = gy_fleet_restore(s->fleet, steps, n, st.generation, seq);
  free(steps);
  if (rc) {
    snprintf(errmsg, errlen, "journal: cannot restore the run's record: %s", gy_strerror(rc));
    gy_journal_state_free(&st);
    return rc;
  }
  s->journaled_seq = seq;
  s->recovered_done = st.done;
  s->recovered_hold = s->journaled_hold = st.hold;
  snprintf(s->recovered_why, sizeof(s->recovered_why), "%s", st.hold_why);
  eventf(s, "recovered",
         "restarted from the journal %s: %zu events, %d committed checkpoints (newest %lld), %zu "
         "skip ranges in force, generation %llu, directive %llu%s",
         gy_journal_prefix(s->o.journal), st.nevents, n, (long long)newest, s->in_force.n,
         (unsigned long long)st.generation, (unsigned long long)seq,
         ncompleted ? "; a rollback committed before the restart is completed" : "");
  for (size_t i = 0; i < st.nintents; i++) { /* completed above, or dropped */
    const gy_journal_intent_t *in = &st.intents[i];
    char err[256];
    if (in->kind == GY_DIR_ROLLBACK)
      rc = gy_journal_applied(s->o.journal, in->seq, in->to_step, s->in_force.r, s->in_force.n, err,
                              sizeof(err));
    else
      rc = gy_journal_dropped(s->o.journal, in->seq, err, sizeof(err));
    if (rc)
      gy_log(GY_LOG_WARN, "controller", "journal: intent %llu: %s", (unsigned long long)in->seq,
             err);
    rc = 0;
  }
  gy_journal_state_free(&st);
  return 0;
}

static void do_assign(gy_service_t *s, const gy_fleet_action_t *a) {
  held_join_t **pp = &s->joins;
  while (*pp && (*pp)->handle != a->join_handle)
    pp = &(*pp)->next;
  held_join_t *j = *pp;
  if (!j) return;
  *pp = j->next;
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "g%llu", (unsigned long long)a->generation);
  Gyro__Assignment as = GYRO__ASSIGNMENT__INIT;
  as.generation = a->generation;
  as.rank = a->rank;
  as.world = s->o.world;
  as.tp = s->o.tp;
  as.config_yaml = (char *)(s->o.config_yaml ? s->o.config_yaml : "");
  as.session_id = (char *)a->session_id;
  as.start_step = a->step;
  as.rdzv_prefix = prefix;
  as.heartbeat_ms = s->o.heartbeat_ms;
  as.config_dir = (char *)(s->o.config_dir ? s->o.config_dir : "");
  /* the skips in force travel with the assignment (a checkpoint older than a skip lacks it) */
  size_t nsk = s->in_force.n;
  Gyro__SkipRange *sk = nsk ? malloc(nsk * sizeof(*sk)) : NULL;
  Gyro__SkipRange **skp = nsk ? malloc(nsk * sizeof(*skp)) : NULL;
  if (nsk && (!sk || !skp)) {
    free(sk);
    free(skp);
    gy_rpc_reply(j->rpc, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    free(j);
    return;
  }
  for (size_t i = 0; i < nsk; i++) {
    gyro__skip_range__init(&sk[i]);
    sk[i].first = s->in_force.r[i].first;
    sk[i].last = s->in_force.r[i].last;
    skp[i] = &sk[i];
  }
  as.n_skip = nsk;
  as.skip = skp;
  reply_msg(j->rpc, &as.base);
  free(sk);
  free(skp);
  free(j);
}

static void do_directive(gy_service_t *s, const gy_fleet_action_t *a) {
  /* Write-ahead: a rollback's intent (target, skips, reason) is in the journal before any rank
   * can act on it, once per directive (a reconnecting rank gets the same one again). */
  if (a->dir_kind == GY_DIR_ROLLBACK && a->seq > s->journaled_seq) {
    journal_must(s, "rollback intent", JOURNAL_INTENT, a->step, 0, a);
    s->journaled_seq = a->seq;
  }
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  d.generation = a->generation;
  d.seq = a->seq;
  d.at_step = a->step;
  d.kind = (Gyro__Directive__Kind)a->dir_kind;
  Gyro__SkipRange *sk = NULL, **skp = NULL;
  if (a->dir_kind == GY_DIR_ROLLBACK) {
    d.to_step = a->to_step;
    d.reason = (char *)a->msg;
    if (a->nskip > 0) {
      sk = malloc((size_t)a->nskip * sizeof(*sk));
      skp = malloc((size_t)a->nskip * sizeof(*skp));
      if (!sk || !skp) {
        /* a rollback without its skips would train on them again: send nothing; the rank
         * gets the directive again when it reconnects */
        gy_log(GY_LOG_ERROR, "controller", "out of memory: directive seq %llu not sent",
               (unsigned long long)a->seq);
        free(sk);
        free(skp);
        return;
      }
      for (int i = 0; i < a->nskip; i++) {
        gyro__skip_range__init(&sk[i]);
        sk[i].first = a->skip[i].first;
        sk[i].last = a->skip[i].last;
        skp[i] = &sk[i];
      }
      d.n_skip = (size_t)a->nskip;
      d.skip = skp;
    }
  }
  if (a->dir_kind == GY_DIR_SET_HPARAMS || (a->dir_kind == GY_DIR_ROLLBACK && a->hparams.present)) {
    const gy_fleet_hparams_t *h = &a->hparams;
    hp.lr_scale = h->lr_scale;
    hp.grad_clip = h->grad_clip;
    hp.eps = h->eps;
    hp.weight_decay = h->weight_decay;
    hp.shallow_scale = h->shallow_scale;
    hp.shallow_layers = h->shallow_layers;
    hp.z_loss = h->z_loss;
    hp.beta1 = h->beta1;
    hp.beta2 = h->beta2;
    hp.wsd_decay_now = h->wsd_decay_now;
    hp.present = h->present;
    d.hparams = &hp;
  }
  Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
  cm.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE;
  cm.directive = &d;
  send_ctl(s, a->rank, &cm);
  free(sk);
  free(skp);
}

static void unbind(gy_service_t *s, int rank) {
  call_t *c = s->sessions[rank];
  if (!c) return;
  s->sessions[rank] = NULL;
  c->rank = -1;
}

/* Monotonic milliseconds, read now (the loop's cached time can be old after a stop). */
static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every action is fenced, not only what goes to the workers: a controller resumed after a
 * stop longer than its lease must not print a step, an event or write its journal either
 * before it learns that it was replaced. */
static void act(gy_service_t *s, const gy_fleet_action_t *a) {
  if (s->o.fence) {
    int64_t now = mono_ms();
    if (now - s->fence_ok_ms > s->o.fence_every_ms) {
      if (!s->o.fence(s->o.fence_ud)) return; /* the caller has stopped everything */
      s->fence_ok_ms = mono_ms();
    }
  }
  switch (a->kind) {
  case GY_FLEET_ACT_ASSIGN:
    do_assign(s, a);
    if (a->generation != s->gen_seen) loop_gang_formed(s, a->generation, a->step);
    break;
  case GY_FLEET_ACT_GRANT: {
    Gyro__Grant g = GYRO__GRANT__INIT;
    g.generation = a->generation;
    g.horizon = a->step;
    Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
    cm.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
    cm.grant = &g;
    send_ctl(s, a->rank, &cm);
    break;
  }
  case GY_FLEET_ACT_DIRECTIVE:
    do_directive(s, a);
    break;
  case GY_FLEET_ACT_EVENT:
    emit_event(s, a->event_kind, a->step, a->msg);
    break;
  case GY_FLEET_ACT_LOST:
    /* An event says it; the run rolls back when the gang re-forms. With no checkpoint
     * committed yet there is nothing to roll back to (the run would halt): the gang re-forms
     * from the workers' steps as the fleet decides, and the run trains on. */
    if (gy_fleet_ncommitted(s->fleet) || gy_run_state(s->run) == GY_RUN_ROLLBACK) {
      run_refused(s, "worker lost",
                  gy_run_worker_lost(s->run, now_ms(s), a->rank, "declared lost by the fleet"));
      run_drain(s);
    }
    break;
  case GY_FLEET_ACT_COMMITTED: { /* clean unless the run's own rule says suspect */
    gy_telemetry_checkpoint(s->o.telemetry, a->step, wall_s(), a->bytes);
    int clean = 0;
    run_refused(s, "checkpoint", gy_run_checkpoint(s->run, now_ms(s), a->step, 1, &clean));
    journal_must(s, "checkpoint manifest", JOURNAL_CKPT, a->step, (uint64_t)clean, NULL);
    ckeval_journal(s, a->step); /* its evaluation, when it came before the commit */
    if (s->o.journal) { /* the baselines a successor restoring this checkpoint starts from */
      char *snap = gy_run_save(s->run), err[256];
      if (snap && gy_journal_baselines(s->o.journal, a->step, snap, err, sizeof(err)))
        gy_log(GY_LOG_WARN, "controller", "journal: baselines of checkpoint %lld: %s",
               (long long)a->step, err);
      free(snap);
    }
    run_drain(s);
    break;
  }
  case GY_FLEET_ACT_ROLLED_BACK:
    loop_rolled_back(s, a->seq, a->step, a->ok);
    break;
  case GY_FLEET_ACT_STEP:
    emit_step(s, a->step);
    loop_step(s, a->step);
    break;
  case GY_FLEET_ACT_CLOSE:
    if (a->rank >= 0 && a->rank < s->o.world && s->sessions[a->rank]) {
      gy_rpc_call_t *rpc = s->sessions[a->rank]->rpc;
      s->sessions[a->rank]->finished = 1;
      unbind(s, a->rank);
      gy_rpc_finish(rpc, GY_RPC_ABORTED, "the gang is re-forming: join again");
    }
    break;
  case GY_FLEET_ACT_DONE:
    if (gy_run_state(s->run) != GY_RUN_DONE) {
      run_refused(s, "finished", gy_run_finished(s->run, now_ms(s)));
      run_drain(s);
    }
    if (s->o.journal) {
      char err[256];
      if (gy_journal_done(s->o.journal, s->o.steps, err, sizeof(err)))
        gy_log(GY_LOG_WARN, "controller", "journal: %s", err);
    }
    if (!s->done_fired) {
      s->done_fired = 1;
      if (s->done_cb) s->done_cb(s->done_ud);
    }
    break;
  }
}

/* Carries out the fleet's actions until there are none (see the invariants). */
/* The journal's hold key follows the run: paused (by the operator, or a deferred pause) or
 * halted, so that a successor holds the re-formed gang the same way. */
static void journal_hold(gy_service_t *s) {
  if (!s->o.journal || s->recovered_hold) return; /* a recovered hold is not applied yet */
  gy_run_state_t rs = gy_run_state(s->run);
  int h = rs == GY_RUN_HALTED                                                    ? 2
          : (rs == GY_RUN_PAUSED || gy_fleet_state(s->fleet) == GY_FLEET_PAUSED) ? 1
                                                                                 : 0;
  if (h == s->journaled_hold) return;
  char err[256];
  if (gy_journal_hold(s->o.journal, h, h == 2 ? "halted" : h ? "paused" : NULL, err, sizeof(err)))
    gy_log(GY_LOG_WARN, "controller", "journal: hold: %s", err);
  else
    s->journaled_hold = h;
}

static void drain(gy_service_t *s) {
  if (s->draining) return;
  s->draining = 1;
  for (;;) {
    size_t n;
    const gy_fleet_action_t *a = gy_fleet_actions(s->fleet, &n);
    if (!n) break;
    if (n > s->capabuf) {
      gy_fleet_action_t *b = realloc(s->abuf, n * sizeof(*b));
      if (!b) {
        gy_fleet_actions_clear(s->fleet);
        gy_log(GY_LOG_ERROR, "controller", "out of memory: %zu actions lost", n);
        break;
      }
      s->abuf = b;
      s->capabuf = n;
    }
    memcpy(s->abuf, a, n * sizeof(*a));
    gy_fleet_actions_clear(s->fleet);
    for (size_t i = 0; i < n; i++)
      act(s, &s->abuf[i]);
  }
  s->draining = 0;
  journal_hold(s);
}

/* ------------------------------------------ Worker ------------------------------------------ */

static void on_join(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__JoinRequest *jr = gyro__join_request__unpack(NULL, len, req);
  if (!jr) {
    refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, "malformed", "malformed JoinRequest");
    return;
  }
  const char *tok = s->o.join_token;
  if (tok && *tok && !gy_rpc_token_equal(jr->join_token, tok)) {
    /* The event names the worker (printable ASCII only: the id is the peer's bytes and goes
     * into JSON and protobuf strings), never the token it sent. */
    char msg[300], id[201];
    size_t i = 0;
    for (const char *p = jr->worker_id; p && *p && i < sizeof(id) - 1; p++)
      id[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    id[i] = '\0';
    snprintf(msg, sizeof(msg), "worker %s: %s join token", id,
             jr->join_token && *jr->join_token ? "wrong" : "missing");
    gyro__join_request__free_unpacked(jr, NULL);
    refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, "refused", msg);
    return;
  }
  held_join_t *j = calloc(1, sizeof(*j));
  if (!j) {
    gyro__join_request__free_unpacked(jr, NULL);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  j->handle = ++s->join_ctr;
  j->rpc = call;
  j->next = s->joins;
  s->joins = j;
  gy_fleet_join_t in = {.worker_id = jr->worker_id,
                        .ordinal = jr->ordinal,
                        .host = jr->host,
                        .pid = jr->pid,
                        .steps_done = jr->steps_done,
                        .generation = jr->generation};
  int rc = gy_fleet_join(s->fleet, now_ms(s), &in, j->handle);
  gyro__join_request__free_unpacked(jr, NULL);
  if (rc) {
    s->joins = j->next; /* a refused join is not held: it is still the list head */
    free(j);
    gy_rpc_reply(call, rpc_status(rc), gy_fleet_errmsg(s->fleet), NULL, 0);
  }
  drain(s);
}

/* Attaches a call_t of `kind` to a stream that just opened (freed in on_close). */
static void open_stream(gy_rpc_call_t *call, int kind) {
  call_t *c = calloc(1, sizeof(*c));
  if (!c) {
    gy_rpc_finish(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  c->kind = kind;
  c->rpc = call;
  c->rank = -1;
  gy_rpc_call_set_data(call, c);
}

static void on_session_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  open_stream(call, CALL_SESSION);
}

/* Ends a session stream after a refusal: the status, and an event (the fleet's, or ours). */
static void session_refuse(gy_service_t *s, call_t *c, int status, const char *msg, int ev) {
  c->finished = 1;
  if (ev) eventf(s, "malformed", "session from %s: %s", gy_rpc_call_peer(c->rpc), msg);
  gy_rpc_finish(c->rpc, status, msg);
}

static void session_msg(gy_service_t *s, call_t *c, const Gyro__WorkerMsg *wm) {
  int64_t now = now_ms(s);
  int rc = 0;
  if (c->rank < 0) {
    if (wm->msg_case != GYRO__WORKER_MSG__MSG_HELLO || !wm->hello) {
      session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "the first session message must be Hello", 1);
      return;
    }
    const Gyro__Hello *h = wm->hello;
    rc = gy_fleet_hello(s->fleet, now, h->session_id, h->generation, h->rank);
    if (rc) {
      session_refuse(s, c, rpc_status(rc), gy_fleet_errmsg(s->fleet), 0);
      return;
    }
    call_t *old = s->sessions[h->rank];
    if (old && old != c) {
      unbind(s, h->rank);
      old->finished = 1;
      gy_rpc_finish(old->rpc, GY_RPC_ABORTED, "replaced by a newer session of this rank");
    }
    s->sessions[h->rank] = c;
    c->rank = h->rank;
    return;
  }
  switch (wm->msg_case) {
  case GYRO__WORKER_MSG__MSG_REPORT: {
    const Gyro__StepReport *r = wm->report;
    gy_wire_channels_t chans;
    gy_fleet_report_t in;
    gy_wire_step_report(r, &chans, &in);
    rc = gy_fleet_report(s->fleet, now, c->rank, &in);
    if (!rc && c->rank == 0) keep_top(s, r); /* aggregated (drain) after this returns */
    if (!rc && r->gpu) gpu_report(s, c->rank, r->step, r->gpu);
    if (!rc) gy_telemetry_report(s->o.telemetry);
    break;
  }
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    rc = gy_fleet_heartbeat(s->fleet, now, c->rank, wm->heartbeat->generation, wm->heartbeat->rank);
    break;
  case GYRO__WORKER_MSG__MSG_EVAL: {
    char why[256];
    if ((rc = eval_msg(s, c->rank, wm->eval, why, sizeof(why)))) {
      session_refuse(s, c, rpc_status(rc), why, rc != GY_EMISMATCH);
      return;
    }
    break;
  }
  case GYRO__WORKER_MSG__MSG_ACK: {
    const Gyro__DirectiveAck *a = wm->ack;
    rc = gy_fleet_ack(s->fleet, now, c->rank, a->generation, a->seq, a->rank, a->ok, a->error,
                      a->checkpoint_bytes);
    break;
  }
  default:
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "unexpected session message", 1);
    return;
  }
  if (rc) session_refuse(s, c, rpc_status(rc), gy_fleet_errmsg(s->fleet), 0);
}

static void on_session_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  gy_service_t *s = ud;
  call_t *c = gy_rpc_call_data(call);
  if (!c || c->finished) return;
  s->arena_used = 0;
  Gyro__WorkerMsg *wm = gyro__worker_msg__unpack(&s->arena_alloc, len, msg);
  if (!wm) {
    s->arena_used = 0;
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "malformed WorkerMsg", 1);
  } else {
    session_msg(s, c, wm);
    gyro__worker_msg__free_unpacked(wm, &s->arena_alloc);
    s->arena_used = 0;
  }
  drain(s);
}

static void on_session_close(void *ud, gy_rpc_call_t *call, int status) {
  gy_service_t *s = ud;
  (void)status;
  call_t *c = gy_rpc_call_data(call);
  if (!c) return;
  gy_rpc_call_set_data(call, NULL);
  if (c->rank >= 0 && s->sessions[c->rank] == c) {
    int rank = c->rank;
    unbind(s, rank);
    if (!s->shutting_down) gy_fleet_session_closed(s->fleet, now_ms(s), rank);
  }
  free(c);
  drain(s);
}

/* The store: a sorted array of keys (binary search); a set wakes the gets held on its key. */
static size_t kv_find(const gy_service_t *s, const char *key, int *found) {
  size_t lo = 0, hi = s->nkv;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(s->kv[mid].key, key);
    if (!c) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = 0;
  return lo;
}

static void reply_value(gy_rpc_call_t *call, const kv_t *e) {
  Gyro__StoreValue v = GYRO__STORE_VALUE__INIT;
  v.value.data = e->val;
  v.value.len = e->len;
  reply_msg(call, &v.base);
}

static void get_closed(uv_handle_t *h) {
  held_get_t *g = h->data;
  g->s->pending_closes--;
  free(g->key);
  free(g);
}

/* Answers (when still held) and releases a held get. */
static void get_release(held_get_t *g, int status, const char *msg, const kv_t *e) {
  gy_service_t *s = g->s;
  if (e)
    reply_value(g->rpc, e);
  else
    gy_rpc_reply(g->rpc, status, msg, NULL, 0);
  if (g->prev)
    g->prev->next = g->next;
  else
    s->gets = g->next;
  if (g->next) g->next->prev = g->prev;
  uv_timer_stop(&g->timer);
  s->pending_closes++;
  uv_close((uv_handle_t *)&g->timer, get_closed);
}

static void get_timeout(uv_timer_t *t) {
  held_get_t *g = t->data;
  char msg[300];
  snprintf(msg, sizeof(msg), "store key %.250s: not set in time", g->key);
  get_release(g, GY_RPC_DEADLINE_EXCEEDED, msg, NULL);
}

static void on_store_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__StoreSetRequest *r = gyro__store_set_request__unpack(NULL, len, req);
  if (!r || !r->key[0]) {
    if (r) gyro__store_set_request__free_unpacked(r, NULL);
    refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, "malformed",
                 r ? "StoreSet: empty key" : "malformed StoreSetRequest");
    return;
  }
  int found;
  size_t i = kv_find(s, r->key, &found);
  uint8_t *val = malloc(r->value.len ? r->value.len : 1);
  char *key = found ? NULL : strdup(r->key);
  if (!val || (!found && !key)) goto oom;
  if (r->value.len) memcpy(val, r->value.data, r->value.len);
  if (found) {
    free(s->kv[i].val);
  } else {
    if (s->nkv == s->capkv) {
      size_t cap = s->capkv ? 2 * s->capkv : 64;
      kv_t *kv = realloc(s->kv, cap * sizeof(*kv));
      if (!kv) goto oom;
      s->kv = kv;
      s->capkv = cap;
    }
    memmove(&s->kv[i + 1], &s->kv[i], (s->nkv - i) * sizeof(kv_t));
    s->nkv++;
    s->kv[i].key = key;
  }
  s->kv[i].val = val;
  s->kv[i].len = r->value.len;
  gyro__store_set_request__free_unpacked(r, NULL);
  Gyro__Empty e = GYRO__EMPTY__INIT;
  reply_msg(call, &e.base);
  for (held_get_t *g = s->gets, *next; g; g = next) {
    next = g->next;
    if (!strcmp(g->key, s->kv[i].key)) get_release(g, GY_RPC_OK, NULL, &s->kv[i]);
  }
  return;
oom:
  free(val);
  free(key);
  gyro__store_set_request__free_unpacked(r, NULL);
  gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
}

static void on_store_get(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__StoreGetRequest *r = gyro__store_get_request__unpack(NULL, len, req);
  if (!r || !r->key[0]) {
    if (r) gyro__store_get_request__free_unpacked(r, NULL);
    refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, "malformed",
                 r ? "StoreGet: empty key" : "malformed StoreGetRequest");
    return;
  }
  int found;
  size_t i = kv_find(s, r->key, &found);
  if (found) {
    reply_value(call, &s->kv[i]);
  } else if (r->timeout_ms <= 0 || s->shutting_down) {
    char msg[300];
    snprintf(msg, sizeof(msg), "store key %.250s: not set", r->key);
    gy_rpc_reply(call, GY_RPC_DEADLINE_EXCEEDED, msg, NULL, 0);
  } else {
    held_get_t *g = calloc(1, sizeof(*g));
    char *key = strdup(r->key);
    if (!g || !key) {
      free(g);
      free(key);
      gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
      g->s = s;
      g->rpc = call;
      g->key = key;
      uv_timer_init(s->loop, &g->timer);
      g->timer.data = g;
      int ms = r->timeout_ms < STORE_MAX_TIMEOUT_MS ? r->timeout_ms : STORE_MAX_TIMEOUT_MS;
      uv_timer_start(&g->timer, get_timeout, (uint64_t)ms, 0);
      g->next = s->gets;
      if (s->gets) s->gets->prev = g;
      s->gets = g;
    }
  }
  gyro__store_get_request__free_unpacked(r, NULL);
}

/* ----------------------------------------- Operator ----------------------------------------- */

static void on_status(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *e = operator_request(s, call, &gyro__empty__descriptor, "Status", req, len);
  if (!e) return;
  protobuf_c_message_free_unpacked(e, NULL);
  size_t n;
  uint8_t *buf = pack_status(s, 0, &n);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
  free(buf);
}

/* The operator's verb, accepted by the fleet, told to the run state machine too: pause, resume
 * (also after a halt: the escalation starts over), rollback (the run adopts the fleet's
 * rollback seq as its repair). A refusal leaves the run as it is (logged). */
static void operator_to_run(gy_service_t *s, int kind, uint64_t seq, int64_t to_step) {
  int64_t now = now_ms(s);
  s->in_operator = 1;
  switch (kind) {
  case GY_DIR_PAUSE:
    run_refused(s, "operator pause", gy_run_pause(s->run, now));
    break;
  case GY_DIR_RESUME:
    run_refused(s, "operator resume", gy_run_resume(s->run, now));
    break;
  case GY_DIR_ROLLBACK:
    s->op_rb_seq = seq;
    run_refused(s, "operator rollback", gy_run_rollback_to(s->run, now, to_step));
    break;
  default:
    break;
  }
  run_drain(s);
  s->op_rb_seq = 0;
  s->in_operator = 0;
}

/* The ranges of a ROLLBACK that names step ranges or the newest checkpoint (gyroctl skip): the
 * target (*to_step: the newest committed checkpoint when r->newest), and into *add the sample
 * ids r->skip names plus the ids the steps of r->skip_steps train on (mapped over the skip set
 * in force, as try_repair maps a decision's window). 0, or a gRPC status with why. */
static int operator_skips(gy_service_t *s, const Gyro__CommandRequest *r, int64_t *to_step,
                          gy_skipset_t *add, char *why, size_t wlen) {
  if (r->newest) {
    if (!gy_fleet_ncommitted(s->fleet)) {
      snprintf(why, wlen,
               "skip: there is no committed checkpoint to roll back to yet "
               "(take one with `gyroctl checkpoint`)");
      return GY_RPC_FAILED_PRECONDITION;
    }
    *to_step = gy_fleet_committed(s->fleet, 0);
  }
  for (size_t i = 0; i < r->n_skip; i++) {
    if (r->skip[i]->first >= r->skip[i]->last) {
      snprintf(why, wlen, "skip range %" PRIu64 "-%" PRIu64 " is empty", r->skip[i]->first,
               r->skip[i]->last);
      return GY_RPC_INVALID_ARGUMENT;
    }
    if (gy_skipset_add(add, r->skip[i]->first, r->skip[i]->last)) goto oom;
  }
  if (!r->n_skip_steps) return 0;
  int tp = s->o.tp > 0 ? s->o.tp : 1;
  uint64_t per_step = (uint64_t)(s->o.world / tp) * (uint64_t)(s->o.batch > 0 ? s->o.batch : 0);
  if (!per_step) {
    snprintf(why, wlen, "cannot skip the batches of steps: train.batch unknown");
    return GY_RPC_FAILED_PRECONDITION;
  }
  for (size_t i = 0; i < r->n_skip_steps; i++) {
    uint64_t a = r->skip_steps[i]->first, b = r->skip_steps[i]->last;
    if (a >= b || b > (uint64_t)INT64_MAX / per_step) {
      snprintf(why, wlen, "skip step range %" PRIu64 "-%" PRIu64 " is empty or too large", a, b);
      return GY_RPC_INVALID_ARGUMENT;
    }
    if (gy_skipset_add_mapped(add, &s->in_force, a * per_step, (b - a) * per_step)) goto oom;
  }
  return 0;
oom:
  snprintf(why, wlen, "out of memory");
  return GY_RPC_RESOURCE_EXHAUSTED;
}

/* Unary /gyro.Operator/Events: the audit log kept in memory, events after since_id. */
static void on_events(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__EventsRequest *r = (Gyro__EventsRequest *)operator_request(
      s, call, &gyro__events_request__descriptor, "Events", req, len);
  if (!r) return;
  uint64_t since = r->since_id;
  gyro__events_request__free_unpacked(r, NULL);
  uint64_t last = s->event_id;
  uint64_t first = last > EVLOG_MAX ? last - EVLOG_MAX + 1 : 1;
  if (since + 1 > first) first = since + 1;
  size_t n = last >= first ? (size_t)(last - first + 1) : 0;
  Gyro__Event *ev = n ? calloc(n, sizeof(*ev)) : NULL;
  Gyro__Event **evp = n ? calloc(n, sizeof(*evp)) : NULL;
  if (n && (!ev || !evp)) {
    free(ev);
    free(evp);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const evrec_t *e = &s->evlog[(first + i - 1) % EVLOG_MAX];
    gyro__event__init(&ev[i]);
    ev[i].id = e->id;
    ev[i].time = e->time;
    ev[i].step = e->step;
    ev[i].kind = (char *)e->kind;
    ev[i].message = (char *)e->msg;
    evp[i] = &ev[i];
  }
  Gyro__EventsReply er = GYRO__EVENTS_REPLY__INIT;
  er.n_events = n;
  er.events = evp;
  reply_msg(call, &er.base);
  free(ev);
  free(evp);
}

/* Unary /gyro.Operator/Checkpoints: the committed checkpoints the run knows (oldest first, with
 * clean or suspect), each with its kept evaluation; the best is the clean one with the lowest
 * mean held-out loss over its sources. */
static void on_checkpoints(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *r =
      operator_request(s, call, &gyro__checkpoints_request__descriptor, "Checkpoints", req, len);
  if (!r) return;
  protobuf_c_message_free_unpacked(r, NULL);
  int n = 0;
  const gy_run_ckpt_t *ck = gy_run_checkpoints(s->run, &n);
  size_t m = n > 0 ? (size_t)n : 1;
  Gyro__CheckpointInfo *ci = calloc(m, sizeof(*ci));
  Gyro__CheckpointInfo **cip = calloc(m, sizeof(*cip));
  Gyro__SourceEval *se = calloc(m * GY_FLEET_MAX_CH, sizeof(*se));
  Gyro__SourceEval **sep = calloc(m * GY_FLEET_MAX_CH, sizeof(*sep));
  if (!ci || !cip || !se || !sep) {
    free(ci);
    free(cip);
    free(se);
    free(sep);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  Gyro__CheckpointsReply rep = GYRO__CHECKPOINTS_REPLY__INIT;
  rep.best_step = -1;
  int best = -1;
  for (int i = 0; i < n; i++) {
    gyro__checkpoint_info__init(&ci[i]);
    cip[i] = &ci[i];
    ci[i].step = ck[i].step;
    ci[i].clean = ck[i].clean != 0;
    const ckeval_t *e = ckeval_find(s, ck[i].step);
    if (!e) continue;
    ci[i].has_eval = 1;
    ci[i].n_sources = (size_t)e->n;
    ci[i].sources = &sep[(size_t)i * GY_FLEET_MAX_CH];
    double sum = 0;
    for (int k = 0; k < e->n; k++) {
      Gyro__SourceEval *x = &se[(size_t)i * GY_FLEET_MAX_CH + (size_t)k];
      gyro__source_eval__init(x);
      x->source = (char *)e->src[k].name;
      x->loss = e->src[k].loss;
      x->ppl = e->src[k].ppl;
      x->tokens = e->src[k].tokens;
      x->cloze_accuracy = e->src[k].cloze;
      x->cloze_items = e->src[k].items;
      ci[i].sources[k] = x;
      sum += e->src[k].loss;
    }
    ci[i].mean_loss = e->n ? sum / e->n : NAN;
    if (ck[i].clean && e->n && (best < 0 || ci[i].mean_loss < ci[best].mean_loss)) best = i;
  }
  if (best >= 0) {
    ci[best].best = 1;
    rep.best_step = ci[best].step;
  }
  rep.n_checkpoints = (size_t)n;
  rep.checkpoints = cip;
  reply_msg(call, &rep.base);
  free(ci);
  free(cip);
  free(se);
  free(sep);
}

/* Replies the run's policy as YAML (gy_policy_format). */
static void reply_policy(gy_rpc_call_t *call, const gy_policy_t *p) {
  size_t need = gy_policy_format(p, NULL, 0);
  char *buf = malloc(need + 1);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_policy_format(p, buf, need + 1);
  Gyro__PolicyReply pr = GYRO__POLICY_REPLY__INIT;
  pr.yaml = buf;
  reply_msg(call, &pr.base);
  free(buf);
}

static void on_policy_show(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *e = operator_request(s, call, &gyro__empty__descriptor, "PolicyShow", req, len);
  if (!e) return;
  protobuf_c_message_free_unpacked(e, NULL);
  reply_policy(call, gy_run_policy(s->run));
}

/* Unary /gyro.Operator/PolicySet: the YAML goes through a temporary file to gy_policy_load
 * (the one policy reader); its errors name the file as the request's `name` (the operator's
 * file) instead of the temporary path. A refusal keeps the old policy. */
static void on_policy_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__PolicySetRequest *r = (Gyro__PolicySetRequest *)operator_request(
      s, call, &gyro__policy_set_request__descriptor, "PolicySet", req, len);
  if (!r) return;
  char path[] = "/tmp/gyro-policy-XXXXXX";
  char err[600] = "", msg[800];
  gy_policy_t p;
  int st = GY_RPC_OK, fd = -1;
  const char *name = r->name && *r->name ? r->name : "policy";
  size_t ylen = strlen(r->yaml);
  gy_policy_default(&p); /* gy_policy_load starts from what *p holds for keys not given */
  if ((fd = mkstemp(path)) < 0) {
    snprintf(msg, sizeof(msg), "cannot create a temporary policy file: %s", strerror(errno));
    st = GY_RPC_INTERNAL;
  } else if (write(fd, r->yaml, ylen) != (ssize_t)ylen) {
    snprintf(msg, sizeof(msg), "cannot write a temporary policy file: %s", strerror(errno));
    st = GY_RPC_INTERNAL;
  } else if (gy_policy_load(&p, path, err, sizeof(err))) {
    size_t pl = strlen(path);
    const char *rest = !strncmp(err, path, pl) ? err + pl : NULL;
    if (rest)
      snprintf(msg, sizeof(msg), "%s%s", name, rest);
    else
      snprintf(msg, sizeof(msg), "%s: %s", name, err);
    st = GY_RPC_INVALID_ARGUMENT;
  } else if (gy_run_set_policy(s->run, &p)) {
    snprintf(msg, sizeof(msg), "%s: %s", name, gy_run_errmsg(s->run));
    st = GY_RPC_INVALID_ARGUMENT;
  }
  if (fd >= 0) {
    close(fd);
    unlink(path);
  }
  if (st) {
    eventf(s, "policy_refused", "policy set from %s refused: %s", gy_rpc_call_peer(call), msg);
    gy_rpc_reply(call, st, msg, NULL, 0);
  } else {
    eventf(s, "policy_set", "policy replaced from %s (%s)", name, gy_rpc_call_peer(call));
    reply_policy(call, gy_run_policy(s->run));
  }
  gyro__policy_set_request__free_unpacked(r, NULL);
}

static void on_command(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__CommandRequest *r = (Gyro__CommandRequest *)operator_request(
      s, call, &gyro__command_request__descriptor, "Command", req, len);
  if (!r) return;
  gy_fleet_hparams_t hp = {0};
  if (r->hparams) {
    const Gyro__HParams *h = r->hparams;
    hp = (gy_fleet_hparams_t){.lr_scale = h->lr_scale,
                              .grad_clip = h->grad_clip,
                              .eps = h->eps,
                              .weight_decay = h->weight_decay,
                              .shallow_scale = h->shallow_scale,
                              .shallow_layers = h->shallow_layers,
                              .z_loss = h->z_loss,
                              .beta1 = h->beta1,
                              .beta2 = h->beta2,
                              .present = h->present,
                              .wsd_decay_now = h->wsd_decay_now};
  }
  uint64_t seq = 0;
  int64_t at = 0;
  int rc;
  int kind = (int)r->kind;
  int64_t to_step = r->to_step;
  if (r->kind == GYRO__DIRECTIVE__KIND__ROLLBACK && (r->newest || r->n_skip_steps)) {
    gy_skipset_t add = {0};
    char why[300];
    int st = operator_skips(s, r, &to_step, &add, why, sizeof(why));
    if (st) {
      gy_skipset_free(&add);
      gyro__command_request__free_unpacked(r, NULL);
      gy_rpc_reply(call, st, why, NULL, 0);
      return;
    }
    /* more ranges than the fleet takes are refused by it (GY_EINVAL) */
    rc = gy_fleet_rollback(s->fleet, now_ms(s), to_step, add.r,
                           add.n > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)add.n, &hp,
                           r->newest ? "operator skip" : "operator rollback", &seq, &at);
    gy_skipset_free(&add);
  } else if (r->kind == GYRO__DIRECTIVE__KIND__ROLLBACK) {
    /* more ranges than the fleet takes are refused by it: copy none of them */
    int n = r->n_skip > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)r->n_skip;
    gy_fleet_skip_t *sk = n && n <= GY_FLEET_MAX_SKIPS ? malloc((size_t)n * sizeof(*sk)) : NULL;
    if (n && n <= GY_FLEET_MAX_SKIPS && !sk) {
      gyro__command_request__free_unpacked(r, NULL);
      gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
      return;
    }
    for (int i = 0; sk && i < n; i++)
      sk[i] = (gy_fleet_skip_t){r->skip[i]->first, r->skip[i]->last};
    rc = gy_fleet_rollback(s->fleet, now_ms(s), r->to_step, sk, n, &hp, "operator rollback", &seq,
                           &at);
    free(sk);
  } else {
    rc = gy_fleet_command(s->fleet, now_ms(s), (int)r->kind, &hp, &seq, &at);
  }
  gyro__command_request__free_unpacked(r, NULL);
  if (rc) {
    gy_rpc_reply(call, rpc_status(rc), gy_fleet_errmsg(s->fleet), NULL, 0);
  } else {
    Gyro__CommandReply cr = GYRO__COMMAND_REPLY__INIT;
    cr.seq = seq;
    cr.at_step = at;
    reply_msg(call, &cr.base);
    operator_to_run(s, kind, seq, to_step);
  }
  drain(s);
}

static void on_watch_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  open_stream(call, CALL_WATCH);
}

static void on_watch_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  gy_service_t *s = ud;
  call_t *c = gy_rpc_call_data(call);
  if (!c || c->active) return; /* a server stream has one request; later ones are ignored */
  Gyro__WatchRequest *r = gyro__watch_request__unpack(NULL, len, msg);
  if (!r) {
    eventf(s, "malformed", "Watch from %s: malformed WatchRequest", gy_rpc_call_peer(call));
    gy_rpc_finish(call, GY_RPC_INVALID_ARGUMENT, "malformed WatchRequest");
    return;
  }
  int ok = operator_ok(s, call, r->token);
  c->steps = r->steps;
  gyro__watch_request__free_unpacked(r, NULL);
  if (!ok) {
    eventf(s, "refused", "Watch from %s: missing or wrong token", gy_rpc_call_peer(call));
    gy_rpc_finish(call, GY_RPC_UNAUTHENTICATED, "Watch: missing or wrong token");
    return;
  }
  c->active = 1;
  c->next = s->watchers;
  if (s->watchers) s->watchers->prev = c;
  s->watchers = c;
  /* the current status first, so a watcher knows where the run stands */
  size_t n;
  uint8_t *buf = pack_status(s, 1, &n);
  if (buf) gy_rpc_send(call, buf, n);
  free(buf);
}

static void on_watch_close(void *ud, gy_rpc_call_t *call, int status) {
  gy_service_t *s = ud;
  (void)status;
  call_t *c = gy_rpc_call_data(call);
  if (!c) return;
  gy_rpc_call_set_data(call, NULL);
  if (c->active) {
    if (c->prev)
      c->prev->next = c->next;
    else
      s->watchers = c->next;
    if (c->next) c->next->prev = c->prev;
  }
  free(c);
}

/* --------------------------------------------- API ---------------------------------------------
 */

static void on_tick(uv_timer_t *t) {
  gy_service_t *s = t->data;
  if (now_ms(s) >= s->tick_grace_until) gy_fleet_tick(s->fleet, now_ms(s));
  drain(s);
}

static char *dup_or_null(const char *p) {
  return p ? strdup(p) : NULL;
}

static void free_opts(gy_service_opts_t *o) {
  free((char *)o->listen);
  free((char *)o->run_name);
  free((char *)o->join_token);
  free((char *)o->operator_token);
  free((char *)o->config_yaml);
  free((char *)o->config_dir);
}

int gy_service_create(gy_service_t **out, uv_loop_t *loop, const gy_service_opts_t *opts,
                      char *errmsg, size_t errlen) {
  *out = NULL;
  if (!opts || !opts->listen || opts->world < 1 || opts->steps < 1) {
    snprintf(errmsg, errlen, "service: listen, world >= 1 and steps >= 1 are required");
    return GY_EINVAL;
  }
  int rc = GY_ENOMEM;
  gy_service_t *s = calloc(1, sizeof(*s));
  if (!s) return GY_ENOMEM;
  s->loop = loop;
  s->o = *opts;
  s->o.listen = dup_or_null(opts->listen);
  s->o.run_name = dup_or_null(opts->run_name ? opts->run_name : "gyro");
  s->o.join_token = dup_or_null(opts->join_token);
  s->o.operator_token = dup_or_null(opts->operator_token);
  s->o.config_yaml = dup_or_null(opts->config_yaml);
  s->o.config_dir = dup_or_null(opts->config_dir);
  s->o.policy = NULL; /* the run keeps its own copy */
  s->o.skip = NULL;
  s->o.nskip = 0;
  if (!s->o.tick_ms) s->o.tick_ms = 100;
  if (!s->o.listen || !s->o.run_name || (opts->join_token && !s->o.join_token) ||
      (opts->operator_token && !s->o.operator_token) || (opts->config_yaml && !s->o.config_yaml) ||
      (opts->config_dir && !s->o.config_dir))
    goto err;
  s->sessions = calloc((size_t)opts->world, sizeof(*s->sessions));
  s->fanout = calloc((size_t)opts->world, sizeof(*s->fanout));
  s->tops = malloc(TOP_RING * sizeof(*s->tops));
  s->evlog = calloc(EVLOG_MAX, sizeof(*s->evlog));
  if (!s->sessions || !s->fanout || !s->tops || !s->evlog) goto err;
  for (int i = 0; i < TOP_RING; i++)
    s->tops[i].step = -1;
  for (int i = 0; i < opts->nskip; i++)
    if (opts->skip[i].first < opts->skip[i].last &&
        (rc = gy_skipset_add(&s->in_force, opts->skip[i].first, opts->skip[i].last)))
      goto err;
  if (opts->policy && (rc = gy_policy_check(opts->policy, errmsg, errlen))) {
    rc = GY_EINVAL;
    goto err;
  }
  if ((rc = gy_run_create(&s->run, opts->policy))) {
    if (rc == GY_EINVAL) snprintf(errmsg, errlen, "service: the repair policy is not valid");
    goto err;
  }
  rc = GY_ENOMEM;
  s->arena_alloc = (ProtobufCAllocator){arena_alloc, arena_free, s};
  s->t0_ms = (int64_t)uv_now(loop);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  gy_fleet_opts_t fo = {.world = opts->world,
                        .tp = opts->tp,
                        .window = opts->window,
                        .steps = opts->steps,
                        .lost_after_ms = opts->lost_after_ms,
                        .seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                                ((uint64_t)getpid() << 40)};
  if ((rc = gy_fleet_create(&s->fleet, &fo))) {
    snprintf(errmsg, errlen,
             "service: bad fleet options (world %d, window %d, steps %lld, "
             "lost_after_ms %d)",
             opts->world, opts->window, (long long)opts->steps, opts->lost_after_ms);
    goto err;
  }
  if (s->o.journal && (rc = recover(s, errmsg, errlen))) goto err;
  gy_rpc_server_opts_t so = {
      .bind = s->o.listen, .max_message = opts->max_message, .health = opts->health};
  if ((rc = gy_rpc_server_create(&s->srv, loop, &so, &s->port, errmsg, errlen))) goto err;
  static const gy_rpc_stream_cbs_t session_cbs = {on_session_open, on_session_message,
                                                  on_session_close};
  static const gy_rpc_stream_cbs_t watch_cbs = {on_watch_open, on_watch_message, on_watch_close};
  if ((rc = gy_rpc_server_add_unary(s->srv, "/gyro.Worker/Join", on_join, s)) ||
      (rc = gy_rpc_server_add_stream(s->srv, "/gyro.Worker/Session", &session_cbs, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Worker/StoreSet", on_store_set, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Worker/StoreGet", on_store_get, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/Status", on_status, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/Command", on_command, s)) ||
      (rc = gy_rpc_server_add_stream(s->srv, "/gyro.Operator/Watch", &watch_cbs, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/Events", on_events, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/PolicyShow", on_policy_show, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/PolicySet", on_policy_set, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, "/gyro.Operator/Checkpoints", on_checkpoints, s)) ||
      (rc = gy_rpc_server_start(s->srv))) {
    snprintf(errmsg, errlen, "service: cannot register methods: %s", gy_strerror(rc));
    goto err;
  }
  uv_timer_init(loop, &s->tick);
  s->tick.data = s;
  s->tick_init = 1;
  uv_timer_start(&s->tick, on_tick, (uint64_t)s->o.tick_ms, (uint64_t)s->o.tick_ms);
  *out = s;
  return 0;
err:
  /* A server that was created must be shut down through the loop: the caller runs the loop
   * until it is gone. Here it never started serving, so the synchronous path is enough. */
  if (s->srv) {
    s->shutting_down = 1;
    gy_rpc_server_shutdown(s->srv, NULL, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    gy_rpc_server_destroy(s->srv);
    s->srv = NULL;
  }
  gy_fleet_destroy(s->fleet);
  gy_run_destroy(s->run);
  free(s->tops);
  free(s->hw);
  free(s->vals);
  free(s->tps_names);
  free(s->evlog);
  free(s->ckevals);
  gy_skipset_free(&s->in_force);
  free(s->sessions);
  free(s->fanout);
  free_opts(&s->o);
  free(s);
  return rc;
}

int gy_service_recovered_done(const gy_service_t *s) {
  return s->recovered_done;
}

int gy_service_port(const gy_service_t *s) {
  return s->port;
}
const gy_fleet_t *gy_service_fleet(const gy_service_t *s) {
  return s->fleet;
}
const gy_run_t *gy_service_run(const gy_service_t *s) {
  return s->run;
}

void gy_service_on_done(gy_service_t *s, void (*cb)(void *ud), void *ud) {
  s->done_cb = cb;
  s->done_ud = ud;
}

static void maybe_shutdown_done(gy_service_t *s) {
  if (!s->server_down || s->pending_closes) return;
  void (*cb)(void *) = s->shutdown_cb;
  s->shutdown_cb = NULL;
  if (cb) cb(s->shutdown_ud);
}

static void tick_closed(uv_handle_t *h) {
  gy_service_t *s = h->data;
  s->pending_closes--;
  maybe_shutdown_done(s);
}

static void server_down(void *ud) {
  gy_service_t *s = ud;
  s->server_down = 1;
  maybe_shutdown_done(s);
}

void gy_service_shutdown(gy_service_t *s, void (*done)(void *ud), void *ud) {
  if (s->shutting_down) return;
  s->shutting_down = 1;
  s->shutdown_cb = done;
  s->shutdown_ud = ud;
  while (s->joins) {
    held_join_t *j = s->joins;
    s->joins = j->next;
    gy_rpc_reply(j->rpc, GY_RPC_UNAVAILABLE, "the controller is shutting down", NULL, 0);
    free(j);
  }
  while (s->gets)
    get_release(s->gets, GY_RPC_UNAVAILABLE, "the controller is shutting down", NULL);
  if (s->tick_init) {
    uv_timer_stop(&s->tick);
    s->pending_closes++;
    uv_close((uv_handle_t *)&s->tick, tick_closed);
    s->tick_init = 0;
  }
  gy_rpc_server_shutdown(s->srv, server_down, s);
}

void gy_service_destroy(gy_service_t *s) {
  if (!s) return;
  gy_rpc_server_destroy(s->srv);
  for (size_t i = 0; i < s->nkv; i++) {
    free(s->kv[i].key);
    free(s->kv[i].val);
  }
  free(s->kv);
  free(s->abuf);
  free(s->sessions);
  free(s->fanout);
  gy_fleet_destroy(s->fleet);
  gy_run_destroy(s->run);
  free(s->rbuf);
  free(s->tops);
  free(s->hw);
  free(s->vals);
  free(s->tps_names);
  free(s->evlog);
  free(s->ckevals);
  gy_skipset_free(&s->in_force);
  gy_skipset_free(&s->sent);
  free_opts(&s->o);
  free(s);
}
