/* wire: the controller's side of the wire layer: worker and operator requests (protobuf-c,
 * proto/gyro.proto) into the inputs of its pure modules. One place, so that the service and the
 * fuzz harness that feeds the fleet hostile messages run the same code. The HParams conversion
 * is wire/hparams.h's (gy_wire_hparams_in/out), shared with the agent and gyroctl.
 *
 * Two levels:
 *  - conversions of an unpacked message (the session and operator services unpack into their
 *    arena and call these): gy_wire_step_report, gy_wire_join;
 *  - decoders from bytes, each an unpack followed by the same conversions (the fuzz harness and
 *    the unit tests; an unpack failure is GY_EPROTO): gy_wire_join_decode,
 *    gy_wire_session_decode, gy_wire_command_decode, gy_wire_request_decode. A decoded value
 *    borrows its strings and arrays from the message it keeps in `msg_`: valid until its
 *    *_free, which frees everything (and is a no-op on a value whose decode failed).
 *
 * gy_wire_step_report: a StepReport as the fleet's gy_fleet_report_t. The channel arrays live
 * in `ch` (the caller's, for as long as `out` is used); more channels than GY_FLEET_MAX_CH make
 * out->nch GY_FLEET_MAX_CH + 1, which the fleet refuses with a message.
 *
 * This header declares the message types without including the generated code. */
#ifndef GY_CONTROLLER_WIRE_H
#define GY_CONTROLLER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "controller/core.h"
#include "controller/fleet.h"
#include "wire/hparams.h"

struct Gyro__StepReport;
struct Gyro__JoinRequest;
struct Gyro__EvalReport;

typedef struct {
  const char *name[GY_FLEET_MAX_CH];
  double loss_sum[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH];
} gy_wire_channels_t;

void gy_wire_step_report(const struct Gyro__StepReport *r, gy_wire_channels_t *ch,
                         gy_fleet_report_t *out);

/* gy_wire_join: a JoinRequest as the fleet's join (its strings borrowed from jr). */
void gy_wire_join(const struct Gyro__JoinRequest *jr, gy_fleet_join_t *out);

/* ------------------------------------- from bytes ------------------------------------- */

/* A JoinRequest: the fleet's join and the token the service checks. */
typedef struct {
  gy_fleet_join_t join;
  const char *join_token; /* never NULL */
  void *msg_;             /* private: the unpacked message */
} gy_wire_join_req_t;
int gy_wire_join_decode(const uint8_t *buf, size_t len, gy_wire_join_req_t *out);
void gy_wire_join_free(gy_wire_join_req_t *j);

/* One WorkerMsg of the Session stream. kind NONE: no member set (the service ignores it). */
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
  const char *session_id;    /* HELLO (never NULL) */
  gy_fleet_report_t report;  /* REPORT, through gy_wire_step_report */
  gy_wire_channels_t ch;     /* the report's channel arrays */
  int64_t steps_done;        /* HEARTBEAT */
  uint64_t seq;              /* ACK: */
  int64_t step;              /* ACK and EVAL: */
  int ok;                    /* ACK: */
  const char *error;         /* ACK (never NULL) */
  uint64_t checkpoint_bytes; /* ACK */
  size_t nsources;           /* EVAL: the number of sources */
  void *msg_;                /* private: the unpacked message */
} gy_wire_worker_msg_t;
int gy_wire_session_decode(const uint8_t *buf, size_t len, gy_wire_worker_msg_t *out);
void gy_wire_session_free(gy_wire_worker_msg_t *m);

/* An Operator CommandRequest as the operator service reads it: kind (gyro.Directive.Kind, as
 * sent), the knobs (gy_wire_hparams_in), and for ROLLBACK the sample ranges as the fleet takes
 * them: nskip is the number sent, or GY_FLEET_MAX_SKIPS + 1 when more were sent (then skip is
 * NULL: the fleet refuses the count); skip is NULL when nskip is 0. */
typedef struct {
  int kind;
  gy_fleet_hparams_t hparams;
  int64_t to_step;
  gy_fleet_skip_t *skip; /* owned by the value (freed by gy_wire_command_free) */
  int nskip;
  size_t nskip_steps; /* step ranges the service maps to sample ids */
  int newest;
  const char *token; /* never NULL */
  void *msg_;        /* private: the unpacked message */
} gy_wire_command_t;
int gy_wire_command_decode(const uint8_t *buf, size_t len, gy_wire_command_t *out);
void gy_wire_command_free(gy_wire_command_t *c);

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

/* gy_wire_samples: a StepReport's top and bottom samples as the core's: at most max of each,
 * the top into out[0, *ntop), the bottom into out[max, max + *nbottom) (out holds 2 * max;
 * channels borrowed from r). */
void gy_wire_samples(const struct Gyro__StepReport *r, gy_core_sample_t *out, size_t max,
                     size_t *ntop, size_t *nbottom);

/* gy_wire_eval: an EvalReport as the core's input (arrays in `out`, names borrowed from r);
 * more sources than GY_FLEET_MAX_CH are counted, not copied (the core refuses them). */
typedef struct {
  gy_core_eval_in_t in;
  const char *source[GY_FLEET_MAX_CH];
  double loss[GY_FLEET_MAX_CH], ppl[GY_FLEET_MAX_CH], cloze[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH], items[GY_FLEET_MAX_CH];
} gy_wire_eval_t;
void gy_wire_eval(const struct Gyro__EvalReport *r, gy_wire_eval_t *out);

#endif
