/* operator_wire: the operator's side of the Operator service (proto/gyro.proto: Status,
 * Command, Watch, Events, Checkpoints, PolicyShow, PolicySet) in plain C structs. gyroctl calls
 * it for every request it sends and every reply it reads, and the fuzz harness feeds its
 * decoder hostile bytes.
 *
 * Encoders: each builds the request on its stack from borrowed pointers and returns 0 with
 * *buf a malloc'd encoding of *len bytes (the caller frees it with free()), GY_EINVAL for a bad
 * argument (more than GY_WIRE_OP_RANGES_MAX ranges, a NULL array with a count) or GY_ENOMEM.
 * NULL strings are sent as "".
 *
 * Decoder: gy_wire_op_reply_decode reads one reply (or one Watch message) into a
 * gy_wire_op_reply_t: 0, GY_EPROTO when the bytes do not unpack as that reply, or GY_ENOMEM.
 * Its strings and arrays are borrowed from what the value keeps in its private fields: valid
 * until gy_wire_op_reply_free, which frees everything (a no-op on a value whose decode failed).
 * Strings are never NULL. gy_wire_op_reply_json gives the reply as JSON, every field named as
 * in gyro.proto (what `gyroctl --json` prints), so a field added to the proto shows up there
 * without a change here. */
#ifndef GY_WIRE_OPERATOR_WIRE_H
#define GY_WIRE_OPERATOR_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "wire/hparams.h"

/* ---------------------------------------- requests ---------------------------------------- */

/* What a Command asks for: the values of gyro.Directive.Kind. */
typedef enum {
  GY_WIRE_OP_PAUSE = 1,
  GY_WIRE_OP_RESUME = 2,
  GY_WIRE_OP_STOP = 3,
  GY_WIRE_OP_CHECKPOINT = 4,
  GY_WIRE_OP_SET_HPARAMS = 5,
  GY_WIRE_OP_ROLLBACK = 6,
} gy_wire_op_kind_t;

/* A half-open range [first, last) of sample ids or steps (gyro.SkipRange). */
typedef struct {
  uint64_t first, last;
} gy_wire_op_range_t;

#define GY_WIRE_OP_RANGES_MAX 1024 /* ranges of each list in one Command */

typedef struct {
  gy_wire_op_kind_t kind;
  const gy_hparams_t *hparams;    /* NULL: none */
  const char *token;              /* bearer token, NULL or "" when none */
  int64_t to_step;                /* ROLLBACK: a committed checkpoint's step */
  const gy_wire_op_range_t *skip; /* ROLLBACK: sample ids to skip */
  size_t nskip;
  const gy_wire_op_range_t *skip_steps; /* ROLLBACK: steps whose samples to skip */
  size_t nskip_steps;
  int newest; /* ROLLBACK: to the newest committed checkpoint */
} gy_wire_op_command_t;

int gy_wire_op_command_encode(const gy_wire_op_command_t *c, uint8_t **buf, size_t *len);
/* Empty: the request of Status and PolicyShow. */
int gy_wire_op_empty_encode(uint8_t **buf, size_t *len);
int gy_wire_op_events_encode(uint64_t since_id, const char *token, uint8_t **buf, size_t *len);
int gy_wire_op_checkpoints_encode(const char *token, uint8_t **buf, size_t *len);
/* yaml: the policy file's text; name: the file's name, which the controller's errors quote. */
int gy_wire_op_policy_set_encode(const char *yaml, const char *name, const char *token,
                                 uint8_t **buf, size_t *len);
int gy_wire_op_watch_encode(int steps, const char *token, uint8_t **buf, size_t *len);

/* One entry of the quarantine list (gyro.QuarantineEntry), in a request (ADD: channel, file,
 * offset, length, reason) or a reply (every field). */
typedef struct {
  uint64_t id;
  const char *channel, *file;
  uint64_t offset, length;
  int64_t document;
  const char *reason;
  int64_t first_step;
  uint64_t sample;
  int released;
  float loss, median, threshold;
  uint32_t hits;
  int64_t changed_step;
} gy_wire_op_qentry_t;

/* What a Quarantine call asks for: the values of gyro.QuarantineRequest.Op. */
typedef enum {
  GY_WIRE_OP_QUAR_LIST = 0,
  GY_WIRE_OP_QUAR_ADD = 1,
  GY_WIRE_OP_QUAR_RELEASE = 2,
} gy_wire_op_quar_op_t;

/* A QuarantineRequest: LIST asks for a page (the entries with id > after_id, at most limit: 0
 * is the controller's page, 4096), ADD sends entries (at most GY_WIRE_OP_RANGES_MAX), RELEASE
 * ids (as many). */
#define GY_WIRE_OP_QUAR_PAGE 4096
int gy_wire_op_quarantine_encode(gy_wire_op_quar_op_t op, const char *token,
                                 const gy_wire_op_qentry_t *entries, size_t nentries,
                                 const uint64_t *ids, size_t nids, uint64_t after_id,
                                 uint32_t limit, uint8_t **buf, size_t *len);

/* ----------------------------------------- replies ----------------------------------------- */

typedef struct {
  const char *name;
  double loss_sum;
  uint64_t tokens;
} gy_wire_op_channel_t;

typedef struct {
  int32_t rank;
  const char *worker_id, *host;
  int32_t pid;
  int64_t steps_done;
  double tokens_per_s, last_report_age_ms;
  int alive;
} gy_wire_op_rank_t;

typedef struct {
  const char *run, *state;
  int64_t step, horizon;
  uint64_t generation;
  int32_t world, tp;
  double loss;
  const gy_wire_op_channel_t *channels;
  size_t nchannels;
  double grad_norm, tokens_per_s;
  const gy_wire_op_rank_t *ranks;
  size_t nranks;
  int64_t steps_total, committed_step;
} gy_wire_op_status_t;

typedef struct {
  uint64_t id;
  double time; /* seconds since the epoch */
  int64_t step;
  const char *kind, *message;
} gy_wire_op_event_t;

typedef struct {
  const char *source;
  double loss, ppl;
  uint64_t tokens;
  double cloze_accuracy;
  uint32_t cloze_items;
} gy_wire_op_source_eval_t;

typedef struct {
  int64_t step;
  int clean, has_eval, best;
  const gy_wire_op_source_eval_t *sources;
  size_t nsources;
  double mean_loss;
} gy_wire_op_checkpoint_t;

typedef enum {
  GY_WIRE_OP_STATUS_REPLY,      /* gyro.StatusReply: status */
  GY_WIRE_OP_COMMAND_REPLY,     /* gyro.CommandReply: seq, at_step */
  GY_WIRE_OP_EVENTS_REPLY,      /* gyro.EventsReply: events */
  GY_WIRE_OP_CHECKPOINTS_REPLY, /* gyro.CheckpointsReply: checkpoints, best_step */
  GY_WIRE_OP_POLICY_REPLY,      /* gyro.PolicyReply: yaml */
  GY_WIRE_OP_WATCH_MSG,         /* gyro.WatchMsg: watch says which of event, status is set */
  GY_WIRE_OP_QUARANTINE_REPLY,  /* gyro.QuarantineReply: qentries, seq, at_step, qtotal, qactive */
} gy_wire_op_reply_kind_t;

/* What a WatchMsg holds. */
typedef enum {
  GY_WIRE_OP_WATCH_NONE = 0,
  GY_WIRE_OP_WATCH_EVENT,  /* events[0] (nevents 1) */
  GY_WIRE_OP_WATCH_STATUS, /* status */
} gy_wire_op_watch_kind_t;

typedef struct {
  gy_wire_op_reply_kind_t kind;
  gy_wire_op_status_t status;
  uint64_t seq;
  int64_t at_step;
  const gy_wire_op_event_t *events;
  size_t nevents;
  const gy_wire_op_checkpoint_t *checkpoints;
  size_t ncheckpoints;
  int64_t best_step;
  const char *yaml;
  gy_wire_op_watch_kind_t watch;
  const gy_wire_op_qentry_t *qentries;
  size_t nqentries;
  uint64_t qtotal, qactive, qnext_id;
  void *msg_; /* private: the unpacked message */
  void *mem_; /* private: the arrays above */
} gy_wire_op_reply_t;

int gy_wire_op_reply_decode(gy_wire_op_reply_kind_t kind, const uint8_t *buf, size_t len,
                            gy_wire_op_reply_t *out);
void gy_wire_op_reply_free(gy_wire_op_reply_t *r);
/* The message's full name ("gyro.StatusReply", ...), for errors. */
const char *gy_wire_op_reply_name(gy_wire_op_reply_kind_t kind);
/* The whole reply as a JSON object (a new reference; a oneof shows only its set member;
 * non-finite numbers are null; strings that are not UTF-8 read "(not UTF-8)"). */
json_t *gy_wire_op_reply_json(const gy_wire_op_reply_t *r);
/* An EventsReply's event i alone, as a JSON object (a new reference; NULL when i is out of
 * range or r is not an EventsReply). */
json_t *gy_wire_op_event_json(const gy_wire_op_reply_t *r, size_t i);

#endif
