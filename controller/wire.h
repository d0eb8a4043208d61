/* wire: the controller's side of the wire layer: the worker and operator requests (protobuf-c,
 * proto/gyro.proto) decoded into the inputs of its pure modules, and every message the service
 * sends encoded from plain C values. One place, so that the service, the fuzz harness that
 * feeds the fleet hostile messages and the unit tests run the same code. The HParams
 * conversion is wire/hparams.h's (gy_wire_hparams_in/out), shared with the agent and gyroctl;
 * the Operator's replies are wire/operator_wire.h's plain structs, which gyroctl decodes into
 * and the controller fills and encodes (one shape per message on both sides).
 *
 * Decoders from bytes, each an unpack followed by the conversions (an unpack failure is
 * GY_EPROTO): gy_wire_join_decode, gy_wire_session_decode (and gy_wire_session_decode_with, which
 * unpacks through the caller's allocator: the service's per-message arena, so that a StepReport
 * costs no malloc), gy_wire_command_decode, gy_wire_quar_decode, gy_wire_request_decode. A
 * decoded value borrows its strings and arrays from the message it keeps in `msg_`: valid until
 * its *_free, which frees
 * everything (and is a no-op on a value whose decode failed). gy_wire_samples, gy_wire_masked and
 * gy_wire_eval read a decoded session message's top and bottom samples, masked samples and
 * evaluation.
 *
 * A StepReport's channels: the arrays live in the decoded value's `ch`; more channels than
 * GY_FLEET_MAX_CH make report.nch GY_FLEET_MAX_CH + 1, which the fleet refuses with a message.
 *
 * Encoders: each builds the message on its stack (*__INIT) from borrowed pointers and returns 0
 * with *buf a malloc'd encoding of *len bytes (freed with free()), GY_EINVAL for a bad argument,
 * or GY_ENOMEM: gy_wire_assignment_encode, gy_wire_ctl_encode (a Grant or Directive from a
 * fleet action, into the caller's buffer when it fits), gy_wire_reply_encode (every Operator
 * reply and WatchMsg), gy_wire_store_value_encode, gy_wire_empty_encode.
 *
 * This header names no generated type. */
#ifndef GY_CONTROLLER_WIRE_H
#define GY_CONTROLLER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "controller/core.h"
#include "controller/fleet.h"
#include "proto/contract.h"
#include "wire/hparams.h"
#include "wire/operator_wire.h"

typedef struct {
  const char *name[GY_FLEET_MAX_CH];
  double loss_sum[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH];
} gy_wire_channels_t;

/* An allocator for the unpack (the layout of protobuf-c's ProtobufCAllocator): alloc and free
 * with ud as their first argument. */
typedef struct {
  void *(*alloc)(void *ud, size_t n);
  void (*free)(void *ud, void *p);
  void *ud;
} gy_wire_alloc_t;

/* ------------------------------------- from bytes ------------------------------------- */

/* A JoinRequest: the fleet's join and the token the service checks. */
typedef struct {
  gy_fleet_join_t join;
  const char *join_token; /* never NULL */
  void *msg_;             /* private: the unpacked message */
} gy_wire_join_req_t;
int gy_wire_join_decode(const uint8_t *buf, size_t len, gy_wire_join_req_t *out);
void gy_wire_join_free(gy_wire_join_req_t *j);

/* A StepReport's GPU health (gyro.GpuHealth), every field as sent (name never NULL). */
typedef struct {
  int32_t index;
  const char *name;
  int has_temp;
  uint32_t temp_c;
  int has_mem;
  uint64_t mem_used_bytes, mem_total_bytes;
  int has_util;
  uint32_t util_gpu_pct, util_mem_pct;
  int has_sm_clock;
  uint32_t sm_clock_mhz;
  int has_throttle;
  uint64_t throttle_reasons;
  int has_ecc;
  uint64_t ecc_uncorrected;
  int has_xid;
  uint32_t xid_count;
  uint64_t last_xid;
} gy_wire_gpu_t;

/* One WorkerMsg of the Session stream. kind NONE: no member set (the service refuses it). */
typedef enum {
  GY_WIRE_WORKER_NONE = 0,
  GY_WIRE_WORKER_HELLO,
  GY_WIRE_WORKER_REPORT,
  GY_WIRE_WORKER_ACK,
  GY_WIRE_WORKER_HEARTBEAT,
  GY_WIRE_WORKER_EVAL,
} gy_wire_worker_kind_t;
typedef struct {
  gy_wire_worker_kind_t kind;
  uint64_t generation; /* every kind but NONE */
  int32_t rank;
  const char *session_id;        /* HELLO (never NULL) */
  gy_fleet_report_t report;      /* REPORT */
  gy_wire_channels_t ch;         /* the report's channel arrays */
  int has_gpu;                   /* REPORT: the report carried a GpuHealth, in gpu */
  gy_wire_gpu_t gpu;             /* REPORT */
  int64_t steps_done;            /* HEARTBEAT */
  gy_fleet_progress_t progress;  /* HEARTBEAT: the trainer's progress inside a step */
  uint64_t seq;                  /* ACK: */
  int64_t step;                  /* REPORT, ACK and EVAL: */
  int ok;                        /* ACK: */
  const char *error;             /* ACK (never NULL) */
  uint64_t checkpoint_bytes;     /* ACK */
  size_t nsources;               /* EVAL: the number of sources */
  void *msg_;                    /* private: the unpacked message */
  const gy_wire_alloc_t *alloc_; /* private: what unpacked it (NULL: malloc) */
} gy_wire_worker_msg_t;
int gy_wire_session_decode(const uint8_t *buf, size_t len, gy_wire_worker_msg_t *out);
/* The same through alloc (NULL: malloc), which must outlive the value (its free uses it). */
int gy_wire_session_decode_with(const uint8_t *buf, size_t len, const gy_wire_alloc_t *alloc,
                                gy_wire_worker_msg_t *out);
void gy_wire_session_free(gy_wire_worker_msg_t *m);

/* gy_wire_samples: a decoded REPORT's top and bottom samples as the core's: at most max of
 * each, the top into out[0, *ntop), the bottom into out[max, max + *nbottom) (out holds
 * 2 * max; channels borrowed from m). None for another kind. */
void gy_wire_samples(const gy_wire_worker_msg_t *m, gy_core_sample_t *out, size_t max, size_t *ntop,
                     size_t *nbottom);

/* gy_wire_masked: a decoded REPORT's guard figures (samples, the channels' masked counts, the
 * masked samples with their provenance) as the core's input: at most GY_WIRE_MASKED_MAX samples
 * (out->in.masked points at out->masked; strings borrowed from m), the counts of the report's
 * first GY_FLEET_MAX_CH channels. Another kind gives none. */
typedef struct {
  gy_core_guard_t in;
  gy_core_masked_t masked[GY_WIRE_MASKED_MAX];
  uint64_t ch_masked[GY_FLEET_MAX_CH];
} gy_wire_masked_t;
void gy_wire_masked(const gy_wire_worker_msg_t *m, gy_wire_masked_t *out);

/* gy_wire_eval: a decoded EVAL as the core's input (arrays in `out`, names borrowed from m);
 * more sources than GY_FLEET_MAX_CH are counted, not copied (the core refuses them). Another
 * kind gives an evaluation of no source. */
typedef struct {
  gy_core_eval_in_t in;
  const char *source[GY_FLEET_MAX_CH];
  double loss[GY_FLEET_MAX_CH], ppl[GY_FLEET_MAX_CH], cloze[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH], items[GY_FLEET_MAX_CH];
} gy_wire_eval_t;
void gy_wire_eval(const gy_wire_worker_msg_t *m, gy_wire_eval_t *out);

/* An Operator CommandRequest as the operator service reads it: `cmd`, the core's input, with
 * every range sent (skip: the sample id ranges, skip_steps: the step ranges, which the core
 * maps to sample ids); and the same request as the fleet takes a ROLLBACK: kind
 * (gyro.Directive.Kind, as sent), the knobs (gy_wire_hparams_in), and the sample ranges:
 * nskip is the number sent, or GY_FLEET_MAX_SKIPS + 1 when more were sent (then skip is NULL:
 * the fleet refuses the count); skip is NULL when nskip is 0. The ranges are owned by the
 * value (freed by gy_wire_command_free). */
typedef struct {
  gy_core_cmd_t cmd;
  int kind;
  gy_fleet_hparams_t hparams;
  int64_t to_step;
  gy_fleet_skip_t *skip;
  int nskip;
  size_t nskip_steps;
  int newest;
  const char *token;     /* never NULL */
  void *msg_;            /* private: the unpacked message */
  gy_fleet_skip_t *mem_; /* private: the ranges */
} gy_wire_command_t;
int gy_wire_command_decode(const uint8_t *buf, size_t len, gy_wire_command_t *out);
void gy_wire_command_free(gy_wire_command_t *c);

/* A QuarantineRequest: op as sent (gyro.QuarantineRequest.Op: 0 LIST, 1 ADD, 2 RELEASE) and,
 * for ADD and RELEASE, the core's input (cmd: its regions, or ids, borrowed from this value; at
 * most GY_CORE_QUAR_CMD_MAX + 1 of them are kept, so that the core refuses an oversized one).
 * Freed by gy_wire_quar_free. */
typedef struct {
  int op;
  const char *token; /* never NULL */
  uint64_t after_id; /* LIST: a page of the entries with id > after_id, */
  uint32_t limit;    /* of at most limit (as sent) */
  gy_core_quar_cmd_t cmd;
  void *msg_;                  /* private: the unpacked message */
  gy_core_quar_region_t *mem_; /* private: the regions */
} gy_wire_quar_req_t;
int gy_wire_quar_decode(const uint8_t *buf, size_t len, gy_wire_quar_req_t *out);
void gy_wire_quar_free(gy_wire_quar_req_t *q);

/* The other requests, which carry no more than a few plain fields. */
typedef enum {
  GY_WIRE_REQ_STORE_SET,   /* key, value, value_len */
  GY_WIRE_REQ_STORE_GET,   /* key, timeout_ms */
  GY_WIRE_REQ_EVENTS,      /* since_id, token */
  GY_WIRE_REQ_WATCH,       /* steps, token */
  GY_WIRE_REQ_POLICY_SET,  /* yaml, name, token */
  GY_WIRE_REQ_CHECKPOINTS, /* token */
  GY_WIRE_REQ_EMPTY,       /* nothing (Status, PolicyShow) */
} gy_wire_req_kind_t;
typedef struct {
  gy_wire_req_kind_t kind;
  const char *key; /* strings: never NULL once decoded */
  const uint8_t *value;
  size_t value_len;
  int32_t timeout_ms;
  uint64_t since_id;
  int steps;
  const char *yaml, *name, *token;
  void *msg_; /* private: the unpacked message */
} gy_wire_request_t;
int gy_wire_request_decode(gy_wire_req_kind_t kind, const uint8_t *buf, size_t len,
                           gy_wire_request_t *out);
void gy_wire_request_free(gy_wire_request_t *r);
/* The request message's name ("StoreSetRequest", "Empty", ...), for errors; "?" out of range. */
const char *gy_wire_request_name(gy_wire_req_kind_t kind);

/* -------------------------------------- encoders -------------------------------------- */

/* An Assignment: the answer to a held Join (the skips in force travel with it). */
typedef struct {
  uint64_t generation;
  int32_t rank, world, tp;
  const char *config_yaml, *session_id, *rdzv_prefix, *config_dir; /* NULL: "" */
  int64_t start_step;
  int32_t heartbeat_ms;
  uint32_t hang_floor_ms, hang_factor; /* the hang rule, for the worker's watchdog */
  const gy_fleet_skip_t *skip;         /* nskip ranges */
  size_t nskip;
  const gy_guard_opts_t *guard;       /* the policy's guard (NULL: none sent) */
  const gy_quar_entry_t *const *quar; /* the quarantine list, in the order to apply it: each
                                         entry's channel, file (named once, in a table), range
                                         and released flag */
  size_t nquar;
} gy_wire_assignment_t;
int gy_wire_assignment_encode(const gy_wire_assignment_t *a, uint8_t **buf, size_t *len);

/* A ControllerMsg for the fleet's GRANT (a Grant of horizon a->step) or DIRECTIVE action (a
 * Directive: to_step, skips and reason for a ROLLBACK; the knobs for SET_HPARAMS, and for a
 * ROLLBACK that carries some; the entries of a QUARANTINE; the guard of a SET_GUARD). Encoded into
 * small (cap bytes) when it fits, else into a malloc'd buffer: the caller frees *buf when it is not
 * small. GY_EINVAL for another kind of action. */
int gy_wire_ctl_encode(const gy_fleet_action_t *a, uint8_t *small, size_t cap, uint8_t **buf,
                       size_t *len);

/* An Operator reply, or a WatchMsg, from the struct gyroctl decodes it into
 * (gy_wire_op_reply_decode): r->kind says which message, and the fields its decode fills are
 * read (WATCH_MSG: r->watch says which of events[0] and status; NONE sends an empty one).
 * NULL strings go as "". GY_EINVAL for an unknown kind or a NULL array with a count. */
int gy_wire_reply_encode(const gy_wire_op_reply_t *r, uint8_t **buf, size_t *len);

/* The rendezvous store's replies: a StoreValue, and the Empty that answers a StoreSet. */
int gy_wire_store_value_encode(const void *val, size_t vlen, uint8_t **buf, size_t *len);
int gy_wire_empty_encode(uint8_t **buf, size_t *len);

#endif
