/* service_internal: what the files of the controller's service (service.c, svc_*.c) share:
 * struct gy_service, its parts, and the gy__svc_* calls between the files. Not part of the
 * public API. Everything here runs on the loop thread; the store is used only from the
 * writer's thread (jw, svc_journal.c), which never reads the service. */
#ifndef GY_CONTROLLER_SERVICE_INTERNAL_H
#define GY_CONTROLLER_SERVICE_INTERNAL_H

#include "controller/service.h"

#include <stddef.h>
#include <stdint.h>

#include "common/rpc.h"
#include "controller/jwriter.h"
#include "controller/repair.h"
#include "controller/skipset.h"
#include "proto/contract.h"
#include "proto/gyro.pb-c.h"

#define STORE_MAX_TIMEOUT_MS (3600 * 1000)
#define ARENA_BYTES 16384 /* a decoded StepReport takes ~1 KiB */

#define TOP_RING 64              /* steps whose top samples are kept until aggregated */
#define TOP_MAX GY_WIRE_TOPK_MAX /* top samples kept per step (proto/contract.h) */
#define EVLOG_MAX 4096           /* events kept for /gyro.Operator/Events (the newest) */
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
  /* The action queue: the fleet's actions copied out, carried out in order from ahead; the
   * head waits (waiting) for the writer when it needs the fence's answer or a must-write. */
  gy_fleet_action_t *abuf;
  size_t capabuf, nabuf, ahead;
  int head_state;         /* head_state_t: how far the head action got */
  int waiting;            /* the head waits for the writer (fence_done or must_done resumes it) */
  gy_jwriter_t *jw;       /* the store's thread (NULL without journal and fence) */
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
  /* The closed loop (see svc_repair.c). */
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
  uint64_t fleet_dropped, run_dropped; /* outputs the pure machines dropped (OOM), as told */
  gy_repair_t *repair;    /* the coordination of the run's repairs with the fleet (repair.h) */
  uint64_t journaled_seq; /* the newest rollback whose intent is in the journal */
  int64_t fence_ok_ms;    /* when the fence last said this controller leads (monotonic) */
  int recovered_done;     /* the journal says the run finished */
  int journaled_hold;     /* what the journal's hold key says now */
  evrec_t *evlog;         /* EVLOG_MAX entries, a ring: event id i is at (i - 1) % EVLOG_MAX */
  ckeval_t *ckevals;      /* CKEVAL_MAX entries (allocated at the first), sorted by step */
  int nckevals;
};

/* The journal's records that must precede what follows them (see gy__svc_journal_must). */
typedef enum { JOURNAL_CKPT, JOURNAL_INTENT, JOURNAL_APPLIED } journal_op_t;

/* How far the head of the action queue got: not started, fenced (the fence, when due, said
 * this controller leads), waiting for its must-write, written (or given up): it resumes after
 * the write. */
typedef enum { HEAD_NEW, HEAD_FENCED, HEAD_WRITING, HEAD_WRITTEN } head_state_t;

/* What the writer's thread does for the service (svc_journal.c). */
typedef enum {
  JOP_EVENT,
  JOP_CKPT,
  JOP_CKPT_EVAL,
  JOP_INTENT,
  JOP_BASELINES,
  JOP_APPLIED,
  JOP_DROPPED,
  JOP_STATE,
  JOP_HOLD,
  JOP_DONE,
  JOP_FENCE
} jop_kind_t;
typedef struct jop jop_t;

/* service.c: helpers shared by the files. */
int64_t gy__svc_now_ms(gy_service_t *s);
double gy__svc_wall_s(void);
int gy__svc_rpc_status(int rc);
json_t *gy__svc_num(double v);
void gy__svc_refuse_unary(gy_service_t *s, gy_rpc_call_t *call, int status, gy_event_kind_t kind,
                          const char *msg);
uint8_t *gy__svc_pack(const ProtobufCMessage *m, size_t *len);
void gy__svc_reply_msg(gy_rpc_call_t *call, const ProtobufCMessage *m);

/* svc_events.c: events, the status, aggregated steps. */
void gy__svc_emit_event(gy_service_t *s, gy_event_kind_t kind, int64_t step, const char *msg);
void gy__svc_eventf(gy_service_t *s, gy_event_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint8_t *gy__svc_pack_status(gy_service_t *s, int as_watch, size_t *len);
void gy__svc_emit_step(gy_service_t *s, int64_t step);

/* svc_repair.c: the closed loop between the run and the fleet. */
void gy__svc_run_drain(gy_service_t *s);
void gy__svc_run_refused(gy_service_t *s, const char *what, int rc);
void gy__svc_loop_gang_formed(gy_service_t *s, uint64_t generation, int64_t start);
void gy__svc_loop_step(gy_service_t *s, int64_t step);
int gy__svc_loop_rolled_back(gy_service_t *s, uint64_t seq, int64_t to_step, int ok, int resumed);

/* svc_ckeval.c: held-out evaluations, GPU reports, top samples. */
ckeval_t *gy__svc_ckeval_find(gy_service_t *s, int64_t step);
void gy__svc_ckeval_journal(gy_service_t *s, int64_t step);
void gy__svc_ckeval_from_json(gy_service_t *s, int64_t step, const char *text);
int gy__svc_eval_msg(gy_service_t *s, int rank, const Gyro__EvalReport *r, char *why, size_t len);
void gy__svc_gpu_report(gy_service_t *s, int rank, int64_t step, const Gyro__GpuHealth *g);
void gy__svc_keep_top(gy_service_t *s, const Gyro__StepReport *r);

/* svc_journal.c: the journal, on the writer's thread. */
int gy__svc_journal_start(gy_service_t *s);
jop_t *gy__svc_jop(gy_service_t *s, jop_kind_t kind);
int gy__svc_journal_must(gy_service_t *s, const char *what, journal_op_t op, int64_t step,
                         uint64_t arg, const gy_fleet_action_t *a);
void gy__svc_journal_event(gy_service_t *s, uint64_t id, double t, int64_t step, const char *kind,
                           const char *msg);
void gy__svc_journal_best(gy_service_t *s, jop_t *op, const char *what);
void gy__svc_jop_set(jop_t *op, int64_t step, uint64_t seq, uint64_t gen, int64_t nrb, char *text);
int gy__svc_fence_submit(gy_service_t *s);
int gy__svc_recover(gy_service_t *s, char *errmsg, size_t errlen);
void gy__svc_journal_hold(gy_service_t *s);

/* svc_session.c: the Worker service and the fleet's actions. */
void gy__svc_drain(gy_service_t *s);
void gy__svc_on_join(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_open_stream(gy_rpc_call_t *call, int kind);
void gy__svc_on_session_open(void *ud, gy_rpc_call_t *call);
void gy__svc_on_session_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len);
void gy__svc_on_session_close(void *ud, gy_rpc_call_t *call, int status);

/* svc_rendezvous.c: the rendezvous store. */
void gy__svc_get_release(held_get_t *g, int status, const char *msg, const kv_t *e);
void gy__svc_on_store_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_store_get(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);

/* svc_operator.c: the Operator service. */
void gy__svc_on_status(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_events(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_checkpoints(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_policy_show(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_policy_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_command(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_watch_open(void *ud, gy_rpc_call_t *call);
void gy__svc_on_watch_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len);
void gy__svc_on_watch_close(void *ud, gy_rpc_call_t *call, int status);

#endif
