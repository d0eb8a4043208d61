/* operator_wire: the Operator service's requests and replies to and from plain C structs (see
 * operator_wire.h).
 *
 * API, in order: the request encoders (command, empty, events, checkpoints, policy set, watch,
 * quarantine), then the reply decoder with its free, name and JSON functions.
 *
 * Invariants: requests live on the encoder's stack (*__INIT; the range lists in arrays sized
 * by the caller's counts, at most GY_WIRE_OP_RANGES_MAX each) and borrow the caller's
 * pointers for the call. A decoded reply keeps the unpacked message (`msg_`, its strings) and
 * one block (`mem_`) for every array of its view; decode either fills both or leaves both NULL.
 * The JSON is a generic walk over the message's descriptor, so it shows every field the
 * controller sent, named as in gyro.proto. */
#include "wire/operator_wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/gyro.pb-c.h"

static char *s_(const char *s) {
  return (char *)(s ? s : "");
}

static int pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  *buf = malloc(n ? n : 1);
  *len = 0;
  if (!*buf) return GY_ENOMEM;
  *len = protobuf_c_message_pack(m, *buf);
  return 0;
}

/* ---------------------------------------- requests ---------------------------------------- */

static int ranges_ok(const gy_wire_op_range_t *r, size_t n) {
  return n <= GY_WIRE_OP_RANGES_MAX && (!n || r);
}

int gy_wire_op_command_encode(const gy_wire_op_command_t *c, uint8_t **buf, size_t *len) {
  if (!c || !ranges_ok(c->skip, c->nskip) || !ranges_ok(c->skip_steps, c->nskip_steps))
    return GY_EINVAL;
  Gyro__SkipRange rs[c->nskip ? c->nskip : 1], rt[c->nskip_steps ? c->nskip_steps : 1];
  Gyro__SkipRange *ps[c->nskip ? c->nskip : 1], *pt[c->nskip_steps ? c->nskip_steps : 1];
  Gyro__CommandRequest req = GYRO__COMMAND_REQUEST__INIT;
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  req.kind = (Gyro__Directive__Kind)c->kind;
  req.token = s_(c->token);
  if (c->hparams) {
    gy_wire_hparams_out(c->hparams, &hp);
    req.hparams = &hp;
  }
  req.to_step = c->to_step;
  req.newest = c->newest != 0;
  for (size_t i = 0; i < c->nskip; i++) {
    gyro__skip_range__init(&rs[i]);
    rs[i].first = c->skip[i].first;
    rs[i].last = c->skip[i].last;
    ps[i] = &rs[i];
  }
  for (size_t i = 0; i < c->nskip_steps; i++) {
    gyro__skip_range__init(&rt[i]);
    rt[i].first = c->skip_steps[i].first;
    rt[i].last = c->skip_steps[i].last;
    pt[i] = &rt[i];
  }
  req.n_skip = c->nskip;
  req.skip = c->nskip ? ps : NULL;
  req.n_skip_steps = c->nskip_steps;
  req.skip_steps = c->nskip_steps ? pt : NULL;
  return pack(&req.base, buf, len);
}

int gy_wire_op_empty_encode(uint8_t **buf, size_t *len) {
  Gyro__Empty req = GYRO__EMPTY__INIT;
  return pack(&req.base, buf, len);
}

int gy_wire_op_events_encode(uint64_t since_id, const char *token, uint8_t **buf, size_t *len) {
  Gyro__EventsRequest req = GYRO__EVENTS_REQUEST__INIT;
  req.since_id = since_id;
  req.token = s_(token);
  return pack(&req.base, buf, len);
}

int gy_wire_op_checkpoints_encode(const char *token, uint8_t **buf, size_t *len) {
  Gyro__CheckpointsRequest req = GYRO__CHECKPOINTS_REQUEST__INIT;
  req.token = s_(token);
  return pack(&req.base, buf, len);
}

int gy_wire_op_policy_set_encode(const char *yaml, const char *name, const char *token,
                                 uint8_t **buf, size_t *len) {
  Gyro__PolicySetRequest req = GYRO__POLICY_SET_REQUEST__INIT;
  req.yaml = s_(yaml);
  req.name = s_(name);
  req.token = s_(token);
  return pack(&req.base, buf, len);
}

int gy_wire_op_watch_encode(int steps, const char *token, uint8_t **buf, size_t *len) {
  Gyro__WatchRequest req = GYRO__WATCH_REQUEST__INIT;
  req.steps = steps != 0;
  req.token = s_(token);
  return pack(&req.base, buf, len);
}

int gy_wire_op_quarantine_encode(gy_wire_op_quar_op_t op, const char *token,
                                 const gy_wire_op_qentry_t *entries, size_t nentries,
                                 const uint64_t *ids, size_t nids, uint64_t after_id,
                                 uint32_t limit, uint8_t **buf, size_t *len) {
  if (nentries > GY_WIRE_OP_RANGES_MAX || nids > GY_WIRE_OP_RANGES_MAX || (nentries && !entries) ||
      (nids && !ids))
    return GY_EINVAL;
  Gyro__QuarantineEntry qe[nentries ? nentries : 1];
  Gyro__QuarantineEntry *pq[nentries ? nentries : 1];
  Gyro__QuarantineRequest req = GYRO__QUARANTINE_REQUEST__INIT;
  req.op = (Gyro__QuarantineRequest__Op)op;
  req.token = s_(token);
  for (size_t i = 0; i < nentries; i++) {
    const gy_wire_op_qentry_t *e = &entries[i];
    gyro__quarantine_entry__init(&qe[i]);
    qe[i].id = e->id;
    qe[i].channel = s_(e->channel);
    qe[i].file = s_(e->file);
    qe[i].offset = e->offset;
    qe[i].length = e->length;
    qe[i].document = e->document;
    qe[i].reason = s_(e->reason);
    pq[i] = &qe[i];
  }
  req.n_entries = nentries;
  req.entries = nentries ? pq : NULL;
  req.n_ids = nids;
  req.ids = (uint64_t *)ids;
  req.after_id = after_id;
  req.limit = limit;
  return pack(&req.base, buf, len);
}

/* ----------------------------------------- replies ----------------------------------------- */

static const ProtobufCMessageDescriptor *reply_desc(gy_wire_op_reply_kind_t kind) {
  switch (kind) {
  case GY_WIRE_OP_STATUS_REPLY:
    return &gyro__status_reply__descriptor;
  case GY_WIRE_OP_COMMAND_REPLY:
    return &gyro__command_reply__descriptor;
  case GY_WIRE_OP_EVENTS_REPLY:
    return &gyro__events_reply__descriptor;
  case GY_WIRE_OP_CHECKPOINTS_REPLY:
    return &gyro__checkpoints_reply__descriptor;
  case GY_WIRE_OP_POLICY_REPLY:
    return &gyro__policy_reply__descriptor;
  case GY_WIRE_OP_WATCH_MSG:
    return &gyro__watch_msg__descriptor;
  case GY_WIRE_OP_QUARANTINE_REPLY:
    return &gyro__quarantine_reply__descriptor;
  }
  return NULL;
}

const char *gy_wire_op_reply_name(gy_wire_op_reply_kind_t kind) {
  const ProtobufCMessageDescriptor *d = reply_desc(kind);
  return d ? d->name : "?";
}

/* The number of bytes the view's arrays of m need. */
static size_t view_bytes(gy_wire_op_reply_kind_t kind, const ProtobufCMessage *m) {
  switch (kind) {
  case GY_WIRE_OP_STATUS_REPLY: {
    const Gyro__StatusReply *r = (const Gyro__StatusReply *)m;
    return r->n_channels * sizeof(gy_wire_op_channel_t) + r->n_ranks * sizeof(gy_wire_op_rank_t);
  }
  case GY_WIRE_OP_EVENTS_REPLY:
    return ((const Gyro__EventsReply *)m)->n_events * sizeof(gy_wire_op_event_t);
  case GY_WIRE_OP_CHECKPOINTS_REPLY: {
    const Gyro__CheckpointsReply *r = (const Gyro__CheckpointsReply *)m;
    size_t n = r->n_checkpoints * sizeof(gy_wire_op_checkpoint_t);
    for (size_t i = 0; i < r->n_checkpoints; i++)
      n += r->checkpoints[i]->n_sources * sizeof(gy_wire_op_source_eval_t);
    return n;
  }
  case GY_WIRE_OP_WATCH_MSG: {
    const Gyro__WatchMsg *w = (const Gyro__WatchMsg *)m;
    if (w->msg_case == GYRO__WATCH_MSG__MSG_STATUS && w->status)
      return view_bytes(GY_WIRE_OP_STATUS_REPLY, &w->status->base);
    return sizeof(gy_wire_op_event_t);
  }
  case GY_WIRE_OP_QUARANTINE_REPLY:
    return ((const Gyro__QuarantineReply *)m)->n_entries * sizeof(gy_wire_op_qentry_t);
  default:
    return 0;
  }
}

/* Takes n elements of `size` bytes from *p (a block view_bytes sized). */
static void *take(char **p, size_t n, size_t size) {
  if (!n) return NULL; /* *p may be NULL when nothing at all is needed */
  void *r = *p;
  *p += n * size;
  return r;
}

static void status_view(const Gyro__StatusReply *r, char **mem, gy_wire_op_status_t *o) {
  gy_wire_op_channel_t *ch = take(mem, r->n_channels, sizeof(*ch));
  gy_wire_op_rank_t *rk = take(mem, r->n_ranks, sizeof(*rk));
  for (size_t i = 0; i < r->n_channels; i++)
    ch[i] = (gy_wire_op_channel_t){s_(r->channels[i]->name), r->channels[i]->loss_sum,
                                   r->channels[i]->tokens};
  for (size_t i = 0; i < r->n_ranks; i++) {
    const Gyro__RankStatus *k = r->ranks[i];
    rk[i] = (gy_wire_op_rank_t){.rank = k->rank,
                                .worker_id = s_(k->worker_id),
                                .host = s_(k->host),
                                .pid = k->pid,
                                .steps_done = k->steps_done,
                                .tokens_per_s = k->tokens_per_s,
                                .last_report_age_ms = k->last_report_age_ms,
                                .alive = k->alive != 0};
  }
  *o = (gy_wire_op_status_t){.run = s_(r->run),
                             .state = s_(r->state),
                             .step = r->step,
                             .horizon = r->horizon,
                             .generation = r->generation,
                             .world = r->world,
                             .tp = r->tp,
                             .loss = r->loss,
                             .channels = ch,
                             .nchannels = r->n_channels,
                             .grad_norm = r->grad_norm,
                             .tokens_per_s = r->tokens_per_s,
                             .ranks = rk,
                             .nranks = r->n_ranks,
                             .steps_total = r->steps_total,
                             .committed_step = r->committed_step};
}

static gy_wire_op_event_t event_view(const Gyro__Event *e) {
  return (gy_wire_op_event_t){e->id, e->time, e->step, s_(e->kind), s_(e->message)};
}

int gy_wire_op_reply_decode(gy_wire_op_reply_kind_t kind, const uint8_t *buf, size_t len,
                            gy_wire_op_reply_t *out) {
  memset(out, 0, sizeof(*out));
  const ProtobufCMessageDescriptor *d = reply_desc(kind);
  if (!d) return GY_EINVAL;
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, buf);
  if (!m) return GY_EPROTO;
  size_t bytes = view_bytes(kind, m);
  char *mem = bytes ? calloc(1, bytes) : NULL;
  if (bytes && !mem) {
    protobuf_c_message_free_unpacked(m, NULL);
    return GY_ENOMEM;
  }
  out->kind = kind;
  out->msg_ = m;
  out->mem_ = mem;
  out->yaml = "";
  switch (kind) {
  case GY_WIRE_OP_STATUS_REPLY:
    status_view((const Gyro__StatusReply *)m, &mem, &out->status);
    break;
  case GY_WIRE_OP_COMMAND_REPLY:
    out->seq = ((const Gyro__CommandReply *)m)->seq;
    out->at_step = ((const Gyro__CommandReply *)m)->at_step;
    break;
  case GY_WIRE_OP_EVENTS_REPLY: {
    const Gyro__EventsReply *r = (const Gyro__EventsReply *)m;
    gy_wire_op_event_t *ev = take(&mem, r->n_events, sizeof(*ev));
    for (size_t i = 0; i < r->n_events; i++)
      ev[i] = event_view(r->events[i]);
    out->events = ev;
    out->nevents = r->n_events;
    break;
  }
  case GY_WIRE_OP_CHECKPOINTS_REPLY: {
    const Gyro__CheckpointsReply *r = (const Gyro__CheckpointsReply *)m;
    gy_wire_op_checkpoint_t *ck = take(&mem, r->n_checkpoints, sizeof(*ck));
    for (size_t i = 0; i < r->n_checkpoints; i++) {
      const Gyro__CheckpointInfo *c = r->checkpoints[i];
      gy_wire_op_source_eval_t *se = take(&mem, c->n_sources, sizeof(*se));
      for (size_t k = 0; k < c->n_sources; k++) {
        const Gyro__SourceEval *x = c->sources[k];
        se[k] = (gy_wire_op_source_eval_t){s_(x->source), x->loss,           x->ppl,
                                           x->tokens,     x->cloze_accuracy, x->cloze_items};
      }
      ck[i] = (gy_wire_op_checkpoint_t){.step = c->step,
                                        .clean = c->clean != 0,
                                        .has_eval = c->has_eval != 0,
                                        .best = c->best != 0,
                                        .sources = se,
                                        .nsources = c->n_sources,
                                        .mean_loss = c->mean_loss};
    }
    out->checkpoints = ck;
    out->ncheckpoints = r->n_checkpoints;
    out->best_step = r->best_step;
    break;
  }
  case GY_WIRE_OP_POLICY_REPLY:
    out->yaml = s_(((const Gyro__PolicyReply *)m)->yaml);
    break;
  case GY_WIRE_OP_QUARANTINE_REPLY: {
    const Gyro__QuarantineReply *r = (const Gyro__QuarantineReply *)m;
    gy_wire_op_qentry_t *qe = take(&mem, r->n_entries, sizeof(*qe));
    for (size_t i = 0; i < r->n_entries; i++) {
      const Gyro__QuarantineEntry *e = r->entries[i];
      qe[i] = (gy_wire_op_qentry_t){.id = e->id,
                                    .channel = s_(e->channel),
                                    .file = s_(e->file),
                                    .offset = e->offset,
                                    .length = e->length,
                                    .document = e->document,
                                    .reason = s_(e->reason),
                                    .first_step = e->first_step,
                                    .sample = e->sample,
                                    .released = e->released != 0,
                                    .loss = e->loss,
                                    .median = e->median,
                                    .threshold = e->threshold,
                                    .hits = e->hits,
                                    .changed_step = e->changed_step};
    }
    out->qentries = qe;
    out->nqentries = r->n_entries;
    out->seq = r->seq;
    out->at_step = r->at_step;
    out->qtotal = r->total;
    out->qactive = r->active;
    out->qnext_id = r->next_id;
    break;
  }
  case GY_WIRE_OP_WATCH_MSG: {
    const Gyro__WatchMsg *w = (const Gyro__WatchMsg *)m;
    if (w->msg_case == GYRO__WATCH_MSG__MSG_EVENT && w->event) {
      gy_wire_op_event_t *ev = take(&mem, 1, sizeof(*ev));
      *ev = event_view(w->event);
      out->events = ev;
      out->nevents = 1;
      out->watch = GY_WIRE_OP_WATCH_EVENT;
    } else if (w->msg_case == GYRO__WATCH_MSG__MSG_STATUS && w->status) {
      status_view(w->status, &mem, &out->status);
      out->watch = GY_WIRE_OP_WATCH_STATUS;
    }
    break;
  }
  }
  return 0;
}

void gy_wire_op_reply_free(gy_wire_op_reply_t *r) {
  if (r->msg_) protobuf_c_message_free_unpacked(r->msg_, NULL);
  free(r->mem_);
  r->msg_ = NULL;
  r->mem_ = NULL;
}

/* ------------------------------------------ JSON ------------------------------------------ */

static json_t *msg_json(const ProtobufCMessage *m);

static json_t *num_json(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

static json_t *str_json(const char *s) {
  json_t *j = json_string(s ? s : "");
  return j ? j : json_string("(not UTF-8)");
}

static size_t elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_ENUM:
    return sizeof(int);
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(void *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  }
  return 0;
}

/* The JSON value of one (non-repeated) field value at p; NULL for an absent sub-message. */
static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return json_integer(*(const int32_t *)p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return json_integer(*(const int64_t *)p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return json_integer(*(const uint32_t *)p);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return json_integer((json_int_t) * (const uint64_t *)p);
  case PROTOBUF_C_TYPE_FLOAT:
    return num_json(*(const float *)p);
  case PROTOBUF_C_TYPE_DOUBLE:
    return num_json(*(const double *)p);
  case PROTOBUF_C_TYPE_BOOL:
    return json_boolean(*(const protobuf_c_boolean *)p);
  case PROTOBUF_C_TYPE_ENUM: {
    int v = *(const int *)p;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    return ev ? json_string(ev->name) : json_integer(v);
  }
  case PROTOBUF_C_TYPE_STRING:
    return str_json(*(char *const *)p);
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    char *hex = malloc(b->len * 2 + 1);
    if (!hex) return json_null();
    for (size_t i = 0; i < b->len; i++)
      snprintf(hex + 2 * i, 3, "%02x", b->data[i]);
    hex[b->len * 2] = '\0';
    json_t *j = json_string(hex);
    free(hex);
    return j;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
    return sub ? msg_json(sub) : NULL;
  }
  }
  return json_null();
}

/* Every field of m, named as in gyro.proto; a oneof shows only its set member. */
static json_t *msg_json(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  json_t *o = json_object();
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(char *const *)(base + f->offset);
      json_t *a = json_array();
      for (size_t k = 0; k < n; k++) {
        json_t *v = value_json(f, arr + k * elem_size(f->type));
        json_array_append_new(a, v ? v : json_null());
      }
      json_object_set_new(o, f->name, a);
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(const uint32_t *)(base + f->quantifier_offset) != f->id)
      continue;
    json_t *v = value_json(f, base + f->offset);
    if (v) json_object_set_new(o, f->name, v);
  }
  return o;
}

json_t *gy_wire_op_reply_json(const gy_wire_op_reply_t *r) {
  return r->msg_ ? msg_json(r->msg_) : json_object();
}

json_t *gy_wire_op_event_json(const gy_wire_op_reply_t *r, size_t i) {
  if (!r->msg_ || r->kind != GY_WIRE_OP_EVENTS_REPLY) return NULL;
  const Gyro__EventsReply *e = r->msg_;
  return i < e->n_events ? msg_json(&e->events[i]->base) : NULL;
}
