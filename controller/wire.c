/* wire: the controller's side of the wire layer (see wire.h).
 *
 * API, in order: the decoders from bytes, each with its free (join, session message with its
 * samples, masked samples and evaluation, command, quarantine, the other requests), then the
 * encoders (assignment with its quarantine list,
 * controller message, Operator replies, store replies). The HParams conversion is
 * wire/hparams.c's.
 *
 * Invariants: a decoder either returns 0 with its value filled, or an error (GY_EPROTO: the
 * bytes do not unpack; GY_ENOMEM) with `msg_` NULL, so *_free is always safe after it. Strings
 * of a decoded value are never NULL. Encoders build their message on the stack (*__INIT) with
 * borrowed pointers; repeated sub-messages live in one block sized by the counts, freed before
 * they return. */
#include "controller/wire.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/gyro.pb-c.h"
#include "wire/guard.h"

static void step_report(const Gyro__StepReport *r, gy_wire_channels_t *ch, gy_fleet_report_t *out) {
  size_t nch = r->n_channels;
  for (size_t i = 0; i < nch && i < GY_FLEET_MAX_CH; i++) {
    ch->name[i] = r->channels[i]->name;
    ch->loss_sum[i] = r->channels[i]->loss_sum;
    ch->tokens[i] = r->channels[i]->tokens;
  }
  *out = (gy_fleet_report_t){.generation = r->generation,
                             .rank = r->rank,
                             .step = r->step,
                             .loss = r->loss,
                             .nch = nch > GY_FLEET_MAX_CH ? GY_FLEET_MAX_CH + 1 : (int)nch,
                             .ch_name = ch->name,
                             .ch_loss_sum = ch->loss_sum,
                             .ch_tokens = ch->tokens,
                             .grad_norm = r->grad_norm,
                             .grad_norm_shallow = r->grad_norm_shallow,
                             .grad_norm_deep = r->grad_norm_deep,
                             .update_ratio = r->update_ratio,
                             .lr = r->lr,
                             .nonfinite = r->nonfinite,
                             .step_ms = r->step_ms,
                             .compute_ms = r->compute_ms,
                             .tokens_per_s = r->tokens_per_s,
                             .has_checkpoint = r->has_checkpoint,
                             .checkpoint_step = r->checkpoint_step,
                             .checkpoint_bytes = r->has_checkpoint ? r->checkpoint_bytes : 0};
}

static void join_in(const Gyro__JoinRequest *jr, gy_fleet_join_t *out) {
  *out = (gy_fleet_join_t){.worker_id = jr->worker_id,
                           .ordinal = jr->ordinal,
                           .host = jr->host,
                           .pid = jr->pid,
                           .steps_done = jr->steps_done,
                           .generation = jr->generation};
}

/* ------------------------------------- from bytes ------------------------------------- */

static const char *str(const char *s) {
  return s ? s : "";
}

static void free_msg(void **msg) {
  if (*msg) protobuf_c_message_free_unpacked(*msg, NULL);
  *msg = NULL;
}

int gy_wire_join_decode(const uint8_t *buf, size_t len, gy_wire_join_req_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__JoinRequest *jr = gyro__join_request__unpack(NULL, len, buf);
  if (!jr) return GY_EPROTO;
  join_in(jr, &out->join);
  out->join_token = str(jr->join_token);
  out->msg_ = jr;
  return 0;
}

void gy_wire_join_free(gy_wire_join_req_t *j) {
  free_msg(&j->msg_);
}

static void gpu_in(const Gyro__GpuHealth *g, gy_wire_gpu_t *o) {
  *o = (gy_wire_gpu_t){.index = g->index,
                       .name = str(g->name),
                       .has_temp = g->has_temp != 0,
                       .temp_c = g->temp_c,
                       .has_mem = g->has_mem != 0,
                       .mem_used_bytes = g->mem_used_bytes,
                       .mem_total_bytes = g->mem_total_bytes,
                       .has_util = g->has_util != 0,
                       .util_gpu_pct = g->util_gpu_pct,
                       .util_mem_pct = g->util_mem_pct,
                       .has_sm_clock = g->has_sm_clock != 0,
                       .sm_clock_mhz = g->sm_clock_mhz,
                       .has_throttle = g->has_throttle != 0,
                       .throttle_reasons = g->throttle_reasons,
                       .has_ecc = g->has_ecc != 0,
                       .ecc_uncorrected = g->ecc_uncorrected,
                       .has_xid = g->has_xid != 0,
                       .xid_count = g->xid_count,
                       .last_xid = g->last_xid};
}

int gy_wire_session_decode_with(const uint8_t *buf, size_t len, const gy_wire_alloc_t *alloc,
                                gy_wire_worker_msg_t *out) {
  /* the fields every kind may read; the report's arrays are filled only for a report */
  out->kind = GY_WIRE_WORKER_NONE;
  out->generation = out->seq = out->checkpoint_bytes = 0;
  out->rank = out->ok = out->has_gpu = 0;
  out->steps_done = out->step = 0;
  out->nsources = 0;
  out->msg_ = NULL;
  out->alloc_ = NULL;
  out->session_id = out->error = "";
  ProtobufCAllocator pa;
  if (alloc) pa = (ProtobufCAllocator){alloc->alloc, alloc->free, alloc->ud};
  Gyro__WorkerMsg *wm = gyro__worker_msg__unpack(alloc ? &pa : NULL, len, buf);
  if (!wm) return GY_EPROTO;
  out->msg_ = wm;
  out->alloc_ = alloc;
  switch (wm->msg_case) {
  case GYRO__WORKER_MSG__MSG_HELLO:
    out->kind = GY_WIRE_WORKER_HELLO;
    out->generation = wm->hello->generation;
    out->rank = wm->hello->rank;
    out->session_id = str(wm->hello->session_id);
    break;
  case GYRO__WORKER_MSG__MSG_REPORT:
    out->kind = GY_WIRE_WORKER_REPORT;
    out->generation = wm->report->generation;
    out->rank = wm->report->rank;
    out->step = wm->report->step;
    step_report(wm->report, &out->ch, &out->report);
    if (wm->report->gpu) {
      out->has_gpu = 1;
      gpu_in(wm->report->gpu, &out->gpu);
    }
    break;
  case GYRO__WORKER_MSG__MSG_ACK:
    out->kind = GY_WIRE_WORKER_ACK;
    out->generation = wm->ack->generation;
    out->rank = wm->ack->rank;
    out->seq = wm->ack->seq;
    out->step = wm->ack->step;
    out->ok = wm->ack->ok != 0;
    out->error = str(wm->ack->error);
    out->checkpoint_bytes = wm->ack->checkpoint_bytes;
    break;
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    out->kind = GY_WIRE_WORKER_HEARTBEAT;
    out->generation = wm->heartbeat->generation;
    out->rank = wm->heartbeat->rank;
    out->steps_done = wm->heartbeat->steps_done;
    out->progress = (gy_fleet_progress_t){.stepping = wm->heartbeat->stepping != 0,
                                          .own_ms = wm->heartbeat->own_ms,
                                          .in_collective_ms = wm->heartbeat->in_collective_ms};
    break;
  case GYRO__WORKER_MSG__MSG_EVAL:
    out->kind = GY_WIRE_WORKER_EVAL;
    out->generation = wm->eval->generation;
    out->rank = wm->eval->rank;
    out->step = wm->eval->step;
    out->nsources = wm->eval->n_sources;
    break;
  default:
    out->kind = GY_WIRE_WORKER_NONE;
    break;
  }
  return 0;
}

int gy_wire_session_decode(const uint8_t *buf, size_t len, gy_wire_worker_msg_t *out) {
  memset(out, 0, sizeof(*out));
  return gy_wire_session_decode_with(buf, len, NULL, out);
}

void gy_wire_session_free(gy_wire_worker_msg_t *m) {
  if (!m->msg_) return;
  if (m->alloc_) {
    ProtobufCAllocator pa = {m->alloc_->alloc, m->alloc_->free, m->alloc_->ud};
    gyro__worker_msg__free_unpacked(m->msg_, &pa);
  } else {
    gyro__worker_msg__free_unpacked(m->msg_, NULL);
  }
  m->msg_ = NULL;
}

void gy_wire_samples(const gy_wire_worker_msg_t *m, gy_core_sample_t *out, size_t max, size_t *ntop,
                     size_t *nbottom) {
  *ntop = *nbottom = 0;
  if (m->kind != GY_WIRE_WORKER_REPORT || !m->msg_) return;
  const Gyro__StepReport *r = ((const Gyro__WorkerMsg *)m->msg_)->report;
  for (size_t i = 0; i < r->n_top && *ntop < max; i++)
    out[(*ntop)++] = (gy_core_sample_t){r->top[i]->id, r->top[i]->loss, r->top[i]->channel};
  for (size_t i = 0; i < r->n_bottom && *nbottom < max; i++)
    out[max + (*nbottom)++] =
        (gy_core_sample_t){r->bottom[i]->id, r->bottom[i]->loss, r->bottom[i]->channel};
}

void gy_wire_masked(const gy_wire_worker_msg_t *m, gy_wire_masked_t *out) {
  out->in = (gy_core_guard_t){.masked = out->masked};
  if (m->kind != GY_WIRE_WORKER_REPORT || !m->msg_) return;
  const Gyro__StepReport *r = ((const Gyro__WorkerMsg *)m->msg_)->report;
  out->in.samples = r->samples > INT32_MAX ? INT32_MAX : (int)r->samples;
  for (size_t i = 0; i < r->n_channels && i < GY_FLEET_MAX_CH; i++)
    out->ch_masked[i] = r->channels[i]->masked;
  out->in.ch_masked = out->ch_masked;
  size_t n = r->n_masked < GY_WIRE_MASKED_MAX ? r->n_masked : GY_WIRE_MASKED_MAX;
  for (size_t i = 0; i < n; i++) {
    const Gyro__MaskedSample *x = r->masked[i];
    const Gyro__Provenance *w = x->where;
    out->masked[i] = (gy_core_masked_t){.id = x->id,
                                        .channel = x->channel,
                                        .reason = x->reason,
                                        .loss = x->loss,
                                        .median = x->median,
                                        .threshold = x->threshold,
                                        .rank = x->rank,
                                        .file = w && w->file && w->file[0] ? w->file : NULL,
                                        .offset = w ? w->offset : 0,
                                        .length = w ? w->length : 0,
                                        .document = w ? w->document : -1,
                                        .region_offset = w ? w->region_offset : 0,
                                        .region_length = w ? w->region_length : 0};
  }
  out->in.nmasked = n;
}

void gy_wire_eval(const gy_wire_worker_msg_t *m, gy_wire_eval_t *out) {
  static const Gyro__EvalReport none = GYRO__EVAL_REPORT__INIT;
  const Gyro__EvalReport *r = &none;
  if (m->kind == GY_WIRE_WORKER_EVAL && m->msg_) r = ((const Gyro__WorkerMsg *)m->msg_)->eval;
  size_t n = r->n_sources < GY_FLEET_MAX_CH ? r->n_sources : GY_FLEET_MAX_CH;
  for (size_t i = 0; i < n; i++) {
    const Gyro__SourceEval *x = r->sources[i];
    out->source[i] = x->source;
    out->loss[i] = x->loss;
    out->ppl[i] = x->ppl;
    out->cloze[i] = x->cloze_accuracy;
    out->tokens[i] = x->tokens;
    out->items[i] = x->cloze_items;
  }
  out->in = (gy_core_eval_in_t){.generation = r->generation,
                                .rank = r->rank,
                                .step = r->step,
                                .has_checkpoint = r->has_checkpoint,
                                .checkpoint_step = r->checkpoint_step,
                                .nsources = r->n_sources,
                                .source = out->source,
                                .loss = out->loss,
                                .ppl = out->ppl,
                                .cloze = out->cloze,
                                .tokens = out->tokens,
                                .items = out->items};
}

int gy_wire_command_decode(const uint8_t *buf, size_t len, gy_wire_command_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__CommandRequest *r = gyro__command_request__unpack(NULL, len, buf);
  if (!r) return GY_EPROTO;
  /* every range, the sample ids then the steps (one block; one more so it is never empty) */
  gy_fleet_skip_t *sk = malloc((r->n_skip + r->n_skip_steps + 1) * sizeof(*sk));
  if (!sk) {
    gyro__command_request__free_unpacked(r, NULL);
    return GY_ENOMEM;
  }
  for (size_t i = 0; i < r->n_skip; i++)
    sk[i] = (gy_fleet_skip_t){r->skip[i]->first, r->skip[i]->last};
  for (size_t i = 0; i < r->n_skip_steps; i++)
    sk[r->n_skip + i] = (gy_fleet_skip_t){r->skip_steps[i]->first, r->skip_steps[i]->last};
  out->kind = (int)r->kind;
  gy_wire_hparams_in(r->hparams, &out->hparams);
  out->to_step = r->to_step;
  out->newest = r->newest != 0;
  out->nskip_steps = r->n_skip_steps;
  out->token = str(r->token);
  out->cmd = (gy_core_cmd_t){.kind = out->kind,
                             .hp = out->hparams,
                             .to_step = r->to_step,
                             .newest = r->newest,
                             .skip = sk,
                             .nskip = r->n_skip,
                             .skip_steps = sk + r->n_skip,
                             .nskip_steps = r->n_skip_steps};
  /* more ranges than the fleet takes are refused by it: give it none of them */
  out->nskip = r->n_skip > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)r->n_skip;
  if (out->nskip && out->nskip <= GY_FLEET_MAX_SKIPS) out->skip = sk;
  out->mem_ = sk;
  out->msg_ = r;
  return 0;
}

void gy_wire_command_free(gy_wire_command_t *c) {
  free(c->mem_);
  c->mem_ = NULL;
  c->skip = NULL;
  free_msg(&c->msg_);
}

int gy_wire_quar_decode(const uint8_t *buf, size_t len, gy_wire_quar_req_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__QuarantineRequest *r = gyro__quarantine_request__unpack(NULL, len, buf);
  if (!r) return GY_EPROTO;
  /* one more than the core takes, so that it refuses an oversized request with a message */
  size_t n = r->n_entries < GY_CORE_QUAR_CMD_MAX + 1 ? r->n_entries : GY_CORE_QUAR_CMD_MAX + 1;
  gy_core_quar_region_t *rg = malloc((n ? n : 1) * sizeof(*rg));
  if (!rg) {
    gyro__quarantine_request__free_unpacked(r, NULL);
    return GY_ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    rg[i] = (gy_core_quar_region_t){.channel = str(r->entries[i]->channel),
                                    .file = str(r->entries[i]->file),
                                    .offset = r->entries[i]->offset,
                                    .length = r->entries[i]->length,
                                    .reason = str(r->entries[i]->reason)};
  out->op = (int)r->op;
  out->token = str(r->token);
  out->after_id = r->after_id;
  out->limit = r->limit;
  out->cmd.op =
      r->op == GYRO__QUARANTINE_REQUEST__OP__RELEASE ? GY_CORE_QUAR_RELEASE : GY_CORE_QUAR_ADD;
  out->cmd.add = rg;
  out->cmd.nadd = n;
  out->cmd.release = r->ids;
  out->cmd.nrelease = r->n_ids < GY_CORE_QUAR_CMD_MAX + 1 ? r->n_ids : GY_CORE_QUAR_CMD_MAX + 1;
  out->mem_ = rg;
  out->msg_ = r;
  return 0;
}

void gy_wire_quar_free(gy_wire_quar_req_t *q) {
  free(q->mem_);
  q->mem_ = NULL;
  q->cmd.add = NULL;
  q->cmd.release = NULL;
  free_msg(&q->msg_);
}

static const ProtobufCMessageDescriptor *const req_desc[] = {
    [GY_WIRE_REQ_STORE_SET] = &gyro__store_set_request__descriptor,
    [GY_WIRE_REQ_STORE_GET] = &gyro__store_get_request__descriptor,
    [GY_WIRE_REQ_EVENTS] = &gyro__events_request__descriptor,
    [GY_WIRE_REQ_WATCH] = &gyro__watch_request__descriptor,
    [GY_WIRE_REQ_POLICY_SET] = &gyro__policy_set_request__descriptor,
    [GY_WIRE_REQ_CHECKPOINTS] = &gyro__checkpoints_request__descriptor,
    [GY_WIRE_REQ_EMPTY] = &gyro__empty__descriptor,
};
#define REQ_KINDS (sizeof(req_desc) / sizeof(req_desc[0]))

int gy_wire_request_decode(gy_wire_req_kind_t kind, const uint8_t *buf, size_t len,
                           gy_wire_request_t *out) {
  memset(out, 0, sizeof(*out));
  if ((unsigned)kind >= REQ_KINDS) return GY_EINVAL;
  ProtobufCMessage *m = protobuf_c_message_unpack(req_desc[kind], NULL, len, buf);
  if (!m) return GY_EPROTO;
  out->kind = kind;
  out->key = out->yaml = out->name = out->token = "";
  out->msg_ = m;
  switch (kind) {
  case GY_WIRE_REQ_STORE_SET: {
    const Gyro__StoreSetRequest *r = (const Gyro__StoreSetRequest *)m;
    out->key = str(r->key);
    out->value = r->value.data;
    out->value_len = r->value.len;
    break;
  }
  case GY_WIRE_REQ_STORE_GET: {
    const Gyro__StoreGetRequest *r = (const Gyro__StoreGetRequest *)m;
    out->key = str(r->key);
    out->timeout_ms = r->timeout_ms;
    break;
  }
  case GY_WIRE_REQ_EVENTS: {
    const Gyro__EventsRequest *r = (const Gyro__EventsRequest *)m;
    out->since_id = r->since_id;
    out->token = str(r->token);
    break;
  }
  case GY_WIRE_REQ_WATCH: {
    const Gyro__WatchRequest *r = (const Gyro__WatchRequest *)m;
    out->steps = r->steps != 0;
    out->token = str(r->token);
    break;
  }
  case GY_WIRE_REQ_POLICY_SET: {
    const Gyro__PolicySetRequest *r = (const Gyro__PolicySetRequest *)m;
    out->yaml = str(r->yaml);
    out->name = str(r->name);
    out->token = str(r->token);
    break;
  }
  case GY_WIRE_REQ_CHECKPOINTS:
    out->token = str(((const Gyro__CheckpointsRequest *)m)->token);
    break;
  case GY_WIRE_REQ_EMPTY:
    break;
  }
  return 0;
}

void gy_wire_request_free(gy_wire_request_t *r) {
  free_msg(&r->msg_);
}

const char *gy_wire_request_name(gy_wire_req_kind_t kind) {
  const ProtobufCMessageDescriptor *d = (unsigned)kind < REQ_KINDS ? req_desc[kind] : NULL;
  return d ? d->short_name : "?";
}

/* -------------------------------------- encoders -------------------------------------- */

static char *s_(const char *s) {
  return (char *)(s ? s : "");
}

static int pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  *len = 0;
  if (!(*buf = malloc(n ? n : 1))) return GY_ENOMEM;
  *len = protobuf_c_message_pack(m, *buf);
  return 0;
}

/* n SkipRanges and their pointers, in one block (*mem, to free); NULL *ptrs when n is 0. */
static int skip_ranges(const gy_fleet_skip_t *r, size_t n, void **mem, Gyro__SkipRange ***ptrs) {
  *mem = NULL;
  *ptrs = NULL;
  if (!n) return 0;
  if (!r) return GY_EINVAL;
  char *m = malloc(n * (sizeof(Gyro__SkipRange) + sizeof(Gyro__SkipRange *)));
  if (!m) return GY_ENOMEM;
  Gyro__SkipRange *sk = (Gyro__SkipRange *)m;
  Gyro__SkipRange **p = (Gyro__SkipRange **)(m + n * sizeof(Gyro__SkipRange));
  for (size_t i = 0; i < n; i++) {
    gyro__skip_range__init(&sk[i]);
    sk[i].first = r[i].first;
    sk[i].last = r[i].last;
    p[i] = &sk[i];
  }
  *mem = m;
  *ptrs = p;
  return 0;
}

static int ptr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (const char *const *)a, y = (uintptr_t) * (const char *const *)b;
  return x < y ? -1 : x > y;
}

/* The quarantine list of an Assignment (its n entries, each file named once in
 * quarantine_files: entries of the same interned name share it) in one block (*mem, to free). */
static int quar_out(const gy_quar_entry_t *const *q, size_t n, void **mem, Gyro__Assignment *as) {
  *mem = NULL;
  if (!n) return 0;
  if (!q) return GY_EINVAL;
  size_t bytes =
      n * (sizeof(Gyro__QuarantineEntry) + sizeof(Gyro__QuarantineEntry *) + 2 * sizeof(char *));
  char *m = malloc(bytes);
  if (!m) return GY_ENOMEM;
  Gyro__QuarantineEntry *e = (Gyro__QuarantineEntry *)m;
  Gyro__QuarantineEntry **ep = (Gyro__QuarantineEntry **)(e + n);
  const char **files = (const char **)(ep + n), **sorted = files + n;
  for (size_t i = 0; i < n; i++)
    sorted[i] = q[i]->file;
  qsort(sorted, n, sizeof(*sorted), ptr_cmp);
  size_t nf = 0;
  for (size_t i = 0; i < n; i++)
    if (!nf || files[nf - 1] != sorted[i]) files[nf++] = sorted[i];
  for (size_t i = 0; i < n; i++) {
    gyro__quarantine_entry__init(&e[i]);
    e[i].id = q[i]->id;
    e[i].channel = (char *)q[i]->channel;
    e[i].offset = q[i]->offset;
    e[i].length = q[i]->length;
    e[i].released = q[i]->released != 0;
    const char **at = bsearch(&q[i]->file, files, nf, sizeof(*files), ptr_cmp);
    e[i].file_index = (uint32_t)(at - files);
    ep[i] = &e[i];
  }
  as->n_quarantine = n;
  as->quarantine = ep;
  as->n_quarantine_files = nf;
  as->quarantine_files = (char **)files;
  *mem = m;
  return 0;
}

int gy_wire_assignment_encode(const gy_wire_assignment_t *a, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  Gyro__Assignment as = GYRO__ASSIGNMENT__INIT;
  as.generation = a->generation;
  as.rank = a->rank;
  as.world = a->world;
  as.tp = a->tp;
  as.config_yaml = s_(a->config_yaml);
  as.session_id = s_(a->session_id);
  as.start_step = a->start_step;
  as.rdzv_prefix = s_(a->rdzv_prefix);
  as.heartbeat_ms = a->heartbeat_ms;
  as.hang_floor_ms = a->hang_floor_ms;
  as.hang_factor = a->hang_factor;
  as.config_dir = s_(a->config_dir);
  gy_wire_guard_msg_t gm;
  if (a->guard) as.guard = gy_wire_guard_out(a->guard, &gm);
  void *mem, *qmem = NULL;
  int rc = skip_ranges(a->skip, a->nskip, &mem, &as.skip);
  if (rc) return rc;
  as.n_skip = a->nskip;
  if ((rc = quar_out(a->quar, a->nquar, &qmem, &as))) {
    free(mem);
    return rc;
  }
  rc = pack(&as.base, buf, len);
  free(mem);
  free(qmem);
  return rc;
}

int gy_wire_ctl_encode(const gy_fleet_action_t *a, uint8_t *small, size_t cap, uint8_t **buf,
                       size_t *len) {
  *buf = NULL;
  *len = 0;
  Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
  Gyro__Grant g = GYRO__GRANT__INIT;
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  gy_wire_guard_msg_t gm;
  void *mem = NULL, *qmem = NULL;
  if (a->kind == GY_FLEET_ACT_GRANT) {
    g.generation = a->generation;
    g.horizon = a->step;
    cm.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
    cm.grant = &g;
  } else if (a->kind == GY_FLEET_ACT_DIRECTIVE) {
    d.generation = a->generation;
    d.seq = a->seq;
    d.at_step = a->step;
    d.kind = (Gyro__Directive__Kind)a->dir_kind;
    if (a->dir_kind == GY_DIR_ROLLBACK) {
      d.to_step = a->to_step;
      d.reason = (char *)a->msg;
      size_t n = a->nskip > 0 ? (size_t)a->nskip : 0;
      int rc = skip_ranges(a->skip, n, &mem, &d.skip);
      if (rc) return rc;
      d.n_skip = n;
    }
    if (a->dir_kind == GY_DIR_SET_HPARAMS ||
        (a->dir_kind == GY_DIR_ROLLBACK && a->hparams.present)) {
      gy_wire_hparams_out(&a->hparams, &hp);
      d.hparams = &hp;
    }
    if (a->dir_kind == GY_DIR_SET_GUARD && a->qdir)
      d.guard = gy_wire_guard_out(&a->qdir->guard, &gm);
    if (a->dir_kind == GY_DIR_QUARANTINE && a->qdir && a->qdir->nentries > 0) {
      size_t n = (size_t)a->qdir->nentries;
      char *m = malloc(n * (sizeof(Gyro__QuarantineEntry) + sizeof(Gyro__QuarantineEntry *)));
      if (!m) {
        free(mem);
        return GY_ENOMEM;
      }
      Gyro__QuarantineEntry *qe = (Gyro__QuarantineEntry *)m;
      Gyro__QuarantineEntry **qp = (Gyro__QuarantineEntry **)(qe + n);
      for (size_t i = 0; i < n; i++) {
        const gy_fleet_qentry_t *x = &a->qdir->entries[i];
        gyro__quarantine_entry__init(&qe[i]);
        qe[i].channel = (char *)x->channel;
        qe[i].file = (char *)x->file;
        qe[i].offset = x->offset;
        qe[i].length = x->length;
        qe[i].released = x->released != 0;
        qp[i] = &qe[i];
      }
      d.n_quarantine = n;
      d.quarantine = qp;
      qmem = m;
    }
    cm.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE;
    cm.directive = &d;
  } else {
    return GY_EINVAL;
  }
  size_t n = gyro__controller_msg__get_packed_size(&cm);
  uint8_t *b = small && n <= cap ? small : malloc(n ? n : 1);
  if (!b) {
    free(mem);
    free(qmem);
    return GY_ENOMEM;
  }
  *len = gyro__controller_msg__pack(&cm, b);
  *buf = b;
  free(mem);
  free(qmem);
  return 0;
}

/* A StatusReply of st, its repeated fields in *mem (to free). */
static int status_out(const gy_wire_op_status_t *st, Gyro__StatusReply *o, void **mem) {
  *mem = NULL;
  if ((st->nchannels && !st->channels) || (st->nranks && !st->ranks)) return GY_EINVAL;
  size_t n = st->nchannels * (sizeof(Gyro__ChannelStat) + sizeof(Gyro__ChannelStat *)) +
             st->nranks * (sizeof(Gyro__RankStatus) + sizeof(Gyro__RankStatus *));
  char *m = n ? malloc(n) : NULL;
  if (n && !m) return GY_ENOMEM;
  /* (no arithmetic on a NULL block: every count is 0 then) */
  Gyro__ChannelStat *ch = (Gyro__ChannelStat *)m;
  Gyro__RankStatus *rk = m ? (Gyro__RankStatus *)(ch + st->nchannels) : NULL;
  Gyro__ChannelStat **chp = m ? (Gyro__ChannelStat **)(rk + st->nranks) : NULL;
  Gyro__RankStatus **rkp = m ? (Gyro__RankStatus **)(chp + st->nchannels) : NULL;
  for (size_t i = 0; i < st->nchannels; i++) {
    gyro__channel_stat__init(&ch[i]);
    ch[i].name = s_(st->channels[i].name);
    ch[i].loss_sum = st->channels[i].loss_sum;
    ch[i].tokens = st->channels[i].tokens;
    chp[i] = &ch[i];
  }
  for (size_t i = 0; i < st->nranks; i++) {
    const gy_wire_op_rank_t *k = &st->ranks[i];
    gyro__rank_status__init(&rk[i]);
    rk[i].rank = k->rank;
    rk[i].worker_id = s_(k->worker_id);
    rk[i].host = s_(k->host);
    rk[i].pid = k->pid;
    rk[i].steps_done = k->steps_done;
    rk[i].tokens_per_s = k->tokens_per_s;
    rk[i].last_report_age_ms = k->last_report_age_ms;
    rk[i].alive = k->alive != 0;
    rkp[i] = &rk[i];
  }
  gyro__status_reply__init(o);
  o->run = s_(st->run);
  o->state = s_(st->state);
  o->step = st->step;
  o->horizon = st->horizon;
  o->generation = st->generation;
  o->world = st->world;
  o->tp = st->tp;
  o->loss = st->loss;
  o->n_channels = st->nchannels;
  o->channels = st->nchannels ? chp : NULL;
  o->grad_norm = st->grad_norm;
  o->tokens_per_s = st->tokens_per_s;
  o->n_ranks = st->nranks;
  o->ranks = st->nranks ? rkp : NULL;
  o->steps_total = st->steps_total;
  o->committed_step = st->committed_step;
  *mem = m;
  return 0;
}

static void event_out(const gy_wire_op_event_t *e, Gyro__Event *o) {
  gyro__event__init(o);
  o->id = e->id;
  o->time = e->time;
  o->step = e->step;
  o->kind = s_(e->kind);
  o->message = s_(e->message);
}

static int events_reply(const gy_wire_op_reply_t *r, uint8_t **buf, size_t *len) {
  if (r->nevents && !r->events) return GY_EINVAL;
  Gyro__EventsReply er = GYRO__EVENTS_REPLY__INIT;
  char *m = r->nevents ? malloc(r->nevents * (sizeof(Gyro__Event) + sizeof(Gyro__Event *))) : NULL;
  if (r->nevents && !m) return GY_ENOMEM;
  Gyro__Event *ev = (Gyro__Event *)m;
  Gyro__Event **evp = m ? (Gyro__Event **)(ev + r->nevents) : NULL;
  for (size_t i = 0; i < r->nevents; i++) {
    event_out(&r->events[i], &ev[i]);
    evp[i] = &ev[i];
  }
  er.n_events = r->nevents;
  er.events = r->nevents ? evp : NULL;
  int rc = pack(&er.base, buf, len);
  free(m);
  return rc;
}

static int checkpoints_reply(const gy_wire_op_reply_t *r, uint8_t **buf, size_t *len) {
  if (r->ncheckpoints && !r->checkpoints) return GY_EINVAL;
  size_t nsrc = 0;
  for (size_t i = 0; i < r->ncheckpoints; i++) {
    if (r->checkpoints[i].nsources && !r->checkpoints[i].sources) return GY_EINVAL;
    nsrc += r->checkpoints[i].nsources;
  }
  size_t bytes = r->ncheckpoints * (sizeof(Gyro__CheckpointInfo) + sizeof(Gyro__CheckpointInfo *)) +
                 nsrc * (sizeof(Gyro__SourceEval) + sizeof(Gyro__SourceEval *));
  char *m = bytes ? malloc(bytes) : NULL;
  if (bytes && !m) return GY_ENOMEM;
  Gyro__CheckpointInfo *ci = (Gyro__CheckpointInfo *)m;
  Gyro__SourceEval *se = m ? (Gyro__SourceEval *)(ci + r->ncheckpoints) : NULL;
  Gyro__CheckpointInfo **cip = m ? (Gyro__CheckpointInfo **)(se + nsrc) : NULL;
  Gyro__SourceEval **sep = m ? (Gyro__SourceEval **)(cip + r->ncheckpoints) : NULL;
  size_t k = 0;
  for (size_t i = 0; i < r->ncheckpoints; i++) {
    const gy_wire_op_checkpoint_t *c = &r->checkpoints[i];
    gyro__checkpoint_info__init(&ci[i]);
    ci[i].step = c->step;
    ci[i].clean = c->clean != 0;
    ci[i].has_eval = c->has_eval != 0;
    ci[i].best = c->best != 0;
    ci[i].mean_loss = c->mean_loss;
    ci[i].n_sources = c->nsources;
    ci[i].sources = c->nsources ? &sep[k] : NULL;
    for (size_t j = 0; j < c->nsources; j++, k++) {
      const gy_wire_op_source_eval_t *x = &c->sources[j];
      gyro__source_eval__init(&se[k]);
      se[k].source = s_(x->source);
      se[k].loss = x->loss;
      se[k].ppl = x->ppl;
      se[k].tokens = x->tokens;
      se[k].cloze_accuracy = x->cloze_accuracy;
      se[k].cloze_items = x->cloze_items;
      sep[k] = &se[k];
    }
    cip[i] = &ci[i];
  }
  Gyro__CheckpointsReply cr = GYRO__CHECKPOINTS_REPLY__INIT;
  cr.n_checkpoints = r->ncheckpoints;
  cr.checkpoints = r->ncheckpoints ? cip : NULL;
  cr.best_step = r->best_step;
  int rc = pack(&cr.base, buf, len);
  free(m);
  return rc;
}

static int quarantine_reply(const gy_wire_op_reply_t *r, uint8_t **buf, size_t *len) {
  if (r->nqentries && !r->qentries) return GY_EINVAL;
  size_t n = r->nqentries;
  char *m =
      n ? malloc(n * (sizeof(Gyro__QuarantineEntry) + sizeof(Gyro__QuarantineEntry *))) : NULL;
  if (n && !m) return GY_ENOMEM;
  Gyro__QuarantineEntry *qe = (Gyro__QuarantineEntry *)m;
  Gyro__QuarantineEntry **qp = m ? (Gyro__QuarantineEntry **)(qe + n) : NULL;
  for (size_t i = 0; i < n; i++) {
    const gy_wire_op_qentry_t *x = &r->qentries[i];
    gyro__quarantine_entry__init(&qe[i]);
    qe[i].id = x->id;
    qe[i].channel = s_(x->channel);
    qe[i].file = s_(x->file);
    qe[i].offset = x->offset;
    qe[i].length = x->length;
    qe[i].document = x->document;
    qe[i].reason = s_(x->reason);
    qe[i].first_step = x->first_step;
    qe[i].sample = x->sample;
    qe[i].released = x->released != 0;
    qe[i].loss = x->loss;
    qe[i].median = x->median;
    qe[i].threshold = x->threshold;
    qe[i].hits = x->hits;
    qe[i].changed_step = x->changed_step;
    qp[i] = &qe[i];
  }
  Gyro__QuarantineReply qr = GYRO__QUARANTINE_REPLY__INIT;
  qr.n_entries = n;
  qr.entries = n ? qp : NULL;
  qr.seq = r->seq;
  qr.at_step = r->at_step;
  qr.total = r->qtotal;
  qr.active = r->qactive;
  qr.next_id = r->qnext_id;
  int rc = pack(&qr.base, buf, len);
  free(m);
  return rc;
}

int gy_wire_reply_encode(const gy_wire_op_reply_t *r, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  void *mem = NULL;
  int rc;
  switch (r->kind) {
  case GY_WIRE_OP_STATUS_REPLY: {
    Gyro__StatusReply st;
    if ((rc = status_out(&r->status, &st, &mem))) return rc;
    rc = pack(&st.base, buf, len);
    free(mem);
    return rc;
  }
  case GY_WIRE_OP_COMMAND_REPLY: {
    Gyro__CommandReply cr = GYRO__COMMAND_REPLY__INIT;
    cr.seq = r->seq;
    cr.at_step = r->at_step;
    return pack(&cr.base, buf, len);
  }
  case GY_WIRE_OP_EVENTS_REPLY:
    return events_reply(r, buf, len);
  case GY_WIRE_OP_CHECKPOINTS_REPLY:
    return checkpoints_reply(r, buf, len);
  case GY_WIRE_OP_POLICY_REPLY: {
    Gyro__PolicyReply pr = GYRO__POLICY_REPLY__INIT;
    pr.yaml = s_(r->yaml);
    return pack(&pr.base, buf, len);
  }
  case GY_WIRE_OP_QUARANTINE_REPLY:
    return quarantine_reply(r, buf, len);
  case GY_WIRE_OP_WATCH_MSG: {
    Gyro__WatchMsg wm = GYRO__WATCH_MSG__INIT;
    Gyro__Event ev;
    Gyro__StatusReply st;
    if (r->watch == GY_WIRE_OP_WATCH_EVENT) {
      if (!r->events || r->nevents < 1) return GY_EINVAL;
      event_out(&r->events[0], &ev);
      wm.msg_case = GYRO__WATCH_MSG__MSG_EVENT;
      wm.event = &ev;
    } else if (r->watch == GY_WIRE_OP_WATCH_STATUS) {
      if ((rc = status_out(&r->status, &st, &mem))) return rc;
      wm.msg_case = GYRO__WATCH_MSG__MSG_STATUS;
      wm.status = &st;
    } else if (r->watch != GY_WIRE_OP_WATCH_NONE) {
      return GY_EINVAL;
    }
    rc = pack(&wm.base, buf, len);
    free(mem);
    return rc;
  }
  }
  return GY_EINVAL;
}

int gy_wire_store_value_encode(const void *val, size_t vlen, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  if (vlen && !val) return GY_EINVAL;
  Gyro__StoreValue v = GYRO__STORE_VALUE__INIT;
  v.value.data = (uint8_t *)val;
  v.value.len = vlen;
  return pack(&v.base, buf, len);
}

int gy_wire_empty_encode(uint8_t **buf, size_t *len) {
  Gyro__Empty e = GYRO__EMPTY__INIT;
  return pack(&e.base, buf, len);
}
