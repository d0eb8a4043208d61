/* agent_wire: the agent's side of the Worker protocol (proto/gyro.proto: Join, Session,
 * StoreSet/StoreGet) in the agent's own C types (agent/agent.h). libgyro-agent calls it for
 * every message it sends or receives, and the fuzz harness feeds its decoders hostile bytes.
 *
 * Encoders: each builds the message on its stack from borrowed pointers and returns 0 with
 * *buf a malloc'd encoding of *len bytes (the caller frees it with free()), GY_EINVAL for a bad
 * argument (a count outside 0..1024, a NULL array with a count) or GY_ENOMEM. NULL strings are
 * sent as "". The generation and rank of session messages are the caller's assignment's.
 *
 * Decoders: each returns 0 with its value filled, GY_EPROTO when the bytes do not unpack as
 * the message, or GY_ENOMEM. A decoded value borrows its strings and arrays from what it keeps
 * in its private fields: they stay valid until its *_free, which frees everything and is a
 * no-op on a value whose decode failed. Decoders check the encoding only: the agent validates
 * the values (rank within world, skip ranges, directive kinds, generations). */
#ifndef GY_WIRE_AGENT_WIRE_H
#define GY_WIRE_AGENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"

/* ------------------------------------ what it sends ------------------------------------ */

/* A JoinRequest (unary /gyro.Worker/Join). */
typedef struct {
  const char *worker_id;
  int32_t ordinal; /* preferred rank, -1 for none */
  const char *join_token;
  const char *host;
  int32_t pid;
  int64_t steps_done;  /* steps this worker has completed */
  uint64_t generation; /* the generation it trained in before (0: none) */
} gy_wire_agent_join_t;
int gy_wire_agent_join_encode(const gy_wire_agent_join_t *j, uint8_t **buf, size_t *len);

/* Session messages (a WorkerMsg each). */
int gy_wire_agent_hello_encode(const char *session_id, uint64_t generation, int rank, uint8_t **buf,
                               size_t *len);
/* A Heartbeat: where the worker is, and its progress inside a step (p; NULL: parked). */
int gy_wire_agent_heartbeat_encode(uint64_t generation, int rank, int64_t steps_done,
                                   const gy_agent_progress_t *p, uint8_t **buf, size_t *len);
/* A StepReport; without a checkpoint, checkpoint_step goes as -1 and checkpoint_bytes as 0. */
int gy_wire_agent_report_encode(uint64_t generation, int rank, const gy_agent_report_t *rep,
                                uint8_t **buf, size_t *len);
/* An EvalReport; without a checkpoint, checkpoint_step goes as -1. */
int gy_wire_agent_eval_encode(uint64_t generation, int rank, const gy_agent_eval_t *ev,
                              uint8_t **buf, size_t *len);
/* A DirectiveAck; checkpoint_bytes goes as 0 when !ok. */
int gy_wire_agent_ack_encode(uint64_t generation, int rank, uint64_t seq, int64_t step, int ok,
                             const char *error, uint64_t checkpoint_bytes, uint8_t **buf,
                             size_t *len);

/* The rendezvous store's requests (unary StoreSet, StoreGet). */
int gy_wire_agent_store_set_encode(const char *key, const void *val, size_t vlen, uint8_t **buf,
                                   size_t *len);
int gy_wire_agent_store_get_encode(const char *key, int32_t timeout_ms, uint8_t **buf, size_t *len);

/* ---------------------------------- what it receives ---------------------------------- */

/* An Assignment (the Join's answer). asg.heartbeat_ms is as sent (the agent applies its
 * default to a value <= 0); asg.skip holds asg.nskip pairs [first, last); asg.quar the
 * quarantine entries, each file looked up in the message's table (an index outside it, or a
 * count beyond 1 << 20, is GY_EPROTO). */
typedef struct {
  gy_agent_assignment_t asg;
  void *msg_;             /* private: the unpacked message */
  uint64_t *skip_;        /* private: asg.skip */
  gy_agent_quar_t *quar_; /* private: asg.quar */
} gy_wire_agent_assignment_t;
int gy_wire_agent_assignment_decode(const uint8_t *buf, size_t len,
                                    gy_wire_agent_assignment_t *out);
void gy_wire_agent_assignment_free(gy_wire_agent_assignment_t *a);

/* A ControllerMsg of the Session stream: a Grant or a Directive (NONE: neither set). */
typedef enum {
  GY_WIRE_AGENT_CTL_NONE = 0,
  GY_WIRE_AGENT_CTL_GRANT,
  GY_WIRE_AGENT_CTL_DIRECTIVE,
} gy_wire_agent_ctl_kind_t;
typedef struct {
  gy_wire_agent_ctl_kind_t kind;
  uint64_t generation; /* of the grant or the directive */
  int64_t horizon;     /* GRANT */
  /* DIRECTIVE, every field as sent: kind may be outside gy_directive_kind_t; to_step, skip,
   * reason, quar and guard are filled whatever the kind (reason never NULL; skip NULL when nskip
   * is 0, quar when nquar is 0; guard the default when none was sent). */
  gy_agent_directive_t dir;
  void *msg_;             /* private: the unpacked message */
  gy_agent_skip_t *skip_; /* private: dir.skip */
  gy_agent_quar_t *quar_; /* private: dir.quar */
} gy_wire_agent_ctl_t;
int gy_wire_agent_ctl_decode(const uint8_t *buf, size_t len, gy_wire_agent_ctl_t *out);
void gy_wire_agent_ctl_free(gy_wire_agent_ctl_t *m);

/* A StoreValue (StoreGet's answer): *val a malloc'd copy of the value (at least one byte
 * allocated), owned by the caller. */
int gy_wire_agent_store_value_decode(const uint8_t *buf, size_t len, void **val, size_t *vlen);

#endif
