/* service_internal: what the files of the controller's service (service.c, svc_*.c) share:
 * struct gy_service, its parts, and the gy__svc_* calls between the files. Not part of the
 * public API. The service is the shell around the core (controller/core.h): it decodes gRPC
 * messages into the core's inputs and encodes its replies through the wire layer
 * (controller/wire.h: no file of the service names a generated type), and implements the core's io
 * (controller/io.h) with the streams, the writer's thread and a libuv timer. Everything here runs
 * on the loop thread; the store is used only from the writer's thread (jw, svc_journal.c), which
 * never reads the service. */
#ifndef GY_CONTROLLER_SERVICE_INTERNAL_H
#define GY_CONTROLLER_SERVICE_INTERNAL_H

#include "controller/service.h"

#include <stddef.h>
#include <stdint.h>

#include "common/rpc.h"
#include "controller/core.h"
#include "controller/jwriter.h"
#include "controller/wire.h"
#include "proto/contract.h"

#define STORE_MAX_TIMEOUT_MS (3600 * 1000)
#define ARENA_BYTES 65536 /* a decoded StepReport takes ~1 KiB, ~20 KiB with 64 masked samples */

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

/* What a rank's GPU reported last, so that a new hardware fault is told once. */
typedef struct {
  int seen;
  uint32_t xid_count;
  uint64_t ecc_uncorrected, throttle;
} hw_slot_t;

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
  gy_service_opts_t o;     /* strings owned (copied) */
  const gy_fleet_t *fleet; /* the core's (read-only views, for the status and the log) */
  const gy_run_t *run;
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
  gy_core_t *core;        /* the decisions (fleet, run, coordinator, write-ahead order) */
  gy_io_t io;             /* the core's io: this service (svc_session.c, svc_journal.c, ...) */
  gy_jwriter_t *jw;       /* the store's thread (NULL without journal and fence) */
  gy_rpc_call_t **fanout; /* world entries: the streams one broadcast goes to */
  /* Session messages decode into this arena (bump allocation, reset after each message);
   * what does not fit falls back to malloc. Not reentrant: one message at a time. */
  gy_wire_alloc_t arena_alloc;
  size_t arena_used;
  _Alignas(16) uint8_t arena[ARENA_BYTES];
  uint64_t event_id;
  void (*done_cb)(void *);
  void *done_ud;
  int shutting_down;
  int pending_closes; /* uv handles still closing */
  int server_down;
  void (*shutdown_cb)(void *);
  void *shutdown_ud;
  hw_slot_t *hw;  /* per rank: the hardware counters last seen (NULL until a GPU report) */
  evrec_t *evlog; /* EVLOG_MAX entries, a ring: event id i is at (i - 1) % EVLOG_MAX */
};

/* service.c: helpers shared by the files. */
int64_t gy__svc_now_ms(gy_service_t *s);
double gy__svc_wall_s(void);
int gy__svc_rpc_status(int rc);
json_t *gy__svc_num(double v);
void gy__svc_refuse_unary(gy_service_t *s, gy_rpc_call_t *call, int status, gy_event_kind_t kind,
                          const char *msg);
/* Answers call with the encoding an encoder returned (rc, buf, len; frees buf): OK, or
 * RESOURCE_EXHAUSTED "out of memory" when the encoder failed. */
void gy__svc_reply_encoded(gy_rpc_call_t *call, int rc, uint8_t *buf, size_t len);

/* svc_events.c: events, the status, aggregated steps. */
void gy__svc_emit_event(gy_service_t *s, gy_event_kind_t kind, int64_t step, const char *msg);
void gy__svc_eventf(gy_service_t *s, gy_event_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint8_t *gy__svc_pack_status(gy_service_t *s, int as_watch, size_t *len);

/* svc_gpu.c: GPU reports. */
void gy__svc_gpu_report(gy_service_t *s, int rank, int64_t step, const gy_wire_gpu_t *g);

/* svc_journal.c: the core's journal and fence on the writer's thread; the load at create. */
int gy__svc_journal_start(gy_service_t *s);
int gy__svc_io_journal(void *ud, gy_jrec_t *rec);
int gy__svc_io_fence(void *ud);
void gy__svc_journal_event(gy_service_t *s, uint64_t id, double t, int64_t step, const char *kind,
                           const char *msg);
int gy__svc_recover(gy_service_t *s, char *errmsg, size_t errlen);

/* svc_events.c: the core's io for what it tells. */
void gy__svc_io_event(void *ud, gy_event_kind_t kind, int64_t step, const char *msg);
void gy__svc_io_step(void *ud, int64_t step);
void gy__svc_io_eval(void *ud, const gy_ckeval_t *e, int checkpoint);

/* svc_session.c: the Worker service, and the core's io towards the workers. */
void gy__svc_drain(gy_service_t *s);
void gy__svc_io_send(void *ud, const gy_fleet_action_t *a);
void gy__svc_io_assign(void *ud, const gy_fleet_action_t *a, const gy_io_assign_t *x);
void gy__svc_io_dismiss(void *ud, uint64_t handle, const char *why);
void gy__svc_io_close(void *ud, int rank, const char *why);
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
void gy__svc_on_quarantine(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);
void gy__svc_on_watch_open(void *ud, gy_rpc_call_t *call);
void gy__svc_on_watch_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len);
void gy__svc_on_watch_close(void *ud, gy_rpc_call_t *call, int status);

#endif
