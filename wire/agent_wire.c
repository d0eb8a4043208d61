/* agent_wire: the Worker protocol's messages to and from the agent's C types (see
 * agent_wire.h).
 *
 * API, in order: the encoders of what the agent sends (join, hello, heartbeat, report, eval,
 * ack, store set, store get), then the decoders of what it receives (assignment, controller
 * message, store value).
 *
 * Invariants: outgoing messages live on the encoder's stack (*__INIT, arrays sized by the
 * caller's counts, at most 1024 each) and only borrow the caller's pointers for the call; the
 * encoding is the only thing allocated. A decoder never leaves a half-built value: on error its
 * private fields are NULL. The HParams of a directive go through wire/hparams.c. */
#include "wire/agent_wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/contract.h"
#include "proto/gyro.pb-c.h"
#include "wire/guard.h"
#include "wire/hparams.h"

#define LIST_MAX 1024
/* The most masked samples a step report carries (gyro.StepReport.masked). */
#define MASKED_MAX GY_WIRE_MASKED_MAX

static char *s_(const char *s) {
  return (char *)(s ? s : "");
}

/* Encodes m into a new buffer. */
static int pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  *buf = malloc(n ? n : 1);
  *len = 0;
  if (!*buf) return GY_ENOMEM;
  *len = protobuf_c_message_pack(m, *buf);
  return 0;
}

static int pack_worker(Gyro__WorkerMsg *m, uint8_t **buf, size_t *len) {
  return pack(&m->base, buf, len);
}

/* ------------------------------------ what it sends ------------------------------------ */

int gy_wire_agent_join_encode(const gy_wire_agent_join_t *j, uint8_t **buf, size_t *len) {
  Gyro__JoinRequest req = GYRO__JOIN_REQUEST__INIT;
  req.worker_id = s_(j->worker_id);
  req.ordinal = j->ordinal;
  req.join_token = s_(j->join_token);
  req.host = s_(j->host);
  req.pid = j->pid;
  req.steps_done = j->steps_done;
  req.generation = j->generation;
  return pack(&req.base, buf, len);
}

int gy_wire_agent_hello_encode(const char *session_id, uint64_t generation, int rank, uint8_t **buf,
                               size_t *len) {
  Gyro__Hello hello = GYRO__HELLO__INIT;
  hello.session_id = s_(session_id);
  hello.generation = generation;
  hello.rank = rank;
  Gyro__WorkerMsg m = GYRO__WORKER_MSG__INIT;
  m.msg_case = GYRO__WORKER_MSG__MSG_HELLO;
  m.hello = &hello;
  return pack_worker(&m, buf, len);
}

static uint32_t ms32(int64_t ms) {
  return ms <= 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

int gy_wire_agent_heartbeat_encode(uint64_t generation, int rank, int64_t steps_done,
                                   const gy_agent_progress_t *p, uint8_t **buf, size_t *len) {
  Gyro__Heartbeat hb = GYRO__HEARTBEAT__INIT;
  hb.generation = generation;
  hb.rank = rank;
  hb.steps_done = steps_done;
  if (p && p->stepping) {
    hb.stepping = 1;
    hb.in_step_ms = ms32(p->in_step_ms);
    hb.own_ms = ms32(p->own_ms);
    hb.in_collective_ms = ms32(p->in_collective_ms);
  }
  Gyro__WorkerMsg m = GYRO__WORKER_MSG__INIT;
  m.msg_case = GYRO__WORKER_MSG__MSG_HEARTBEAT;
  m.heartbeat = &hb;
  return pack_worker(&m, buf, len);
}

static void sample_out(const gy_agent_sample_t *x, Gyro__SampleLoss *o) {
  gyro__sample_loss__init(o);
  o->id = x->id;
  o->channel = s_(x->channel);
  o->loss = x->loss;
}

static void gpu_out(const gy_agent_gpu_t *g, Gyro__GpuHealth *gh) {
  gh->index = g->index;
  gh->name = s_(g->name);
  gh->has_temp = g->has_temp != 0;
  gh->temp_c = g->temp_c;
  gh->has_mem = g->has_mem != 0;
  gh->mem_used_bytes = g->mem_used_bytes;
  gh->mem_total_bytes = g->mem_total_bytes;
  gh->has_util = g->has_util != 0;
  gh->util_gpu_pct = g->util_gpu_pct;
  gh->util_mem_pct = g->util_mem_pct;
  gh->has_sm_clock = g->has_sm_clock != 0;
  gh->sm_clock_mhz = g->sm_clock_mhz;
  gh->has_throttle = g->has_throttle != 0;
  gh->throttle_reasons = g->throttle_reasons;
  gh->has_ecc = g->has_ecc != 0;
  gh->ecc_uncorrected = g->ecc_uncorrected;
  gh->has_xid = g->has_xid != 0;
  gh->xid_count = g->xid_count;
  gh->last_xid = g->last_xid;
}

static int count_ok(int n, const void *arr) {
  return n >= 0 && n <= LIST_MAX && (!n || arr);
}

int gy_wire_agent_report_encode(uint64_t generation, int rank, const gy_agent_report_t *rep,
                                uint8_t **buf, size_t *len) {
  if (!rep || !count_ok(rep->nchannels, rep->channels) || !count_ok(rep->ntop, rep->top) ||
      !count_ok(rep->nbottom, rep->bottom) || !count_ok(rep->nmasked, rep->masked) ||
      rep->nmasked > MASKED_MAX || rep->samples < 0)
    return GY_EINVAL;
  Gyro__MaskedSample ms[rep->nmasked > 0 ? rep->nmasked : 1];
  Gyro__MaskedSample *msp[rep->nmasked > 0 ? rep->nmasked : 1];
  Gyro__Provenance pv[rep->nmasked > 0 ? rep->nmasked : 1];
  Gyro__ChannelStat cs[rep->nchannels > 0 ? rep->nchannels : 1];
  Gyro__ChannelStat *csp[rep->nchannels > 0 ? rep->nchannels : 1];
  Gyro__SampleLoss sl[rep->ntop > 0 ? rep->ntop : 1];
  Gyro__SampleLoss *slp[rep->ntop > 0 ? rep->ntop : 1];
  Gyro__SampleLoss bl[rep->nbottom > 0 ? rep->nbottom : 1];
  Gyro__SampleLoss *blp[rep->nbottom > 0 ? rep->nbottom : 1];
  Gyro__StepReport r = GYRO__STEP_REPORT__INIT;
  r.generation = generation;
  r.rank = rank;
  r.step = rep->step;
  r.loss = rep->loss;
  for (int i = 0; i < rep->nchannels; i++) {
    gyro__channel_stat__init(&cs[i]);
    cs[i].name = s_(rep->channels[i].name);
    cs[i].loss_sum = rep->channels[i].loss_sum;
    cs[i].tokens = rep->channels[i].tokens;
    cs[i].masked = rep->channels[i].masked;
    csp[i] = &cs[i];
  }
  r.n_channels = (size_t)rep->nchannels;
  r.channels = csp;
  r.grad_norm = rep->grad_norm;
  r.grad_norm_shallow = rep->grad_norm_shallow;
  r.grad_norm_deep = rep->grad_norm_deep;
  r.update_ratio = rep->update_ratio;
  r.lr = rep->lr;
  r.nonfinite = rep->nonfinite != 0;
  r.step_ms = rep->step_ms;
  r.compute_ms = rep->compute_ms;
  r.tokens_per_s = rep->tokens_per_s;
  for (int i = 0; i < rep->ntop; i++) {
    sample_out(&rep->top[i], &sl[i]);
    slp[i] = &sl[i];
  }
  r.n_top = (size_t)rep->ntop;
  r.top = slp;
  for (int i = 0; i < rep->nbottom; i++) {
    sample_out(&rep->bottom[i], &bl[i]);
    blp[i] = &bl[i];
  }
  r.n_bottom = (size_t)rep->nbottom;
  r.bottom = blp;
  r.samples = (uint32_t)rep->samples;
  for (int i = 0; i < rep->nmasked; i++) {
    const gy_agent_masked_t *x = &rep->masked[i];
    gyro__masked_sample__init(&ms[i]);
    ms[i].id = x->id;
    ms[i].channel = s_(x->channel);
    ms[i].loss = x->loss;
    ms[i].reason = s_(x->reason);
    ms[i].median = x->median;
    ms[i].threshold = x->threshold;
    ms[i].entropy = x->entropy;
    ms[i].repeat = x->repeat;
    ms[i].nontext = x->nontext;
    ms[i].highbyte = x->highbyte;
    ms[i].markup = x->markup;
    ms[i].rank = x->rank;
    if (x->where.file) {
      gyro__provenance__init(&pv[i]);
      pv[i].file = s_(x->where.file);
      pv[i].offset = x->where.offset;
      pv[i].length = x->where.length;
      pv[i].document = x->where.document;
      pv[i].region_offset = x->where.region_offset;
      pv[i].region_length = x->where.region_length;
      ms[i].where = &pv[i];
    }
    msp[i] = &ms[i];
  }
  r.n_masked = (size_t)rep->nmasked;
  r.masked = msp;
  Gyro__GpuHealth gh = GYRO__GPU_HEALTH__INIT;
  if (rep->gpu) {
    gpu_out(rep->gpu, &gh);
    r.gpu = &gh;
  }
  r.has_checkpoint = rep->has_checkpoint != 0;
  r.checkpoint_step = rep->has_checkpoint ? rep->checkpoint_step : -1;
  r.checkpoint_bytes = rep->has_checkpoint ? rep->checkpoint_bytes : 0;
  Gyro__WorkerMsg m = GYRO__WORKER_MSG__INIT;
  m.msg_case = GYRO__WORKER_MSG__MSG_REPORT;
  m.report = &r;
  return pack_worker(&m, buf, len);
}

int gy_wire_agent_eval_encode(uint64_t generation, int rank, const gy_agent_eval_t *ev,
                              uint8_t **buf, size_t *len) {
  if (!ev || !count_ok(ev->nsources, ev->sources)) return GY_EINVAL;
  int n = ev->nsources > 0 ? ev->nsources : 1;
  Gyro__SourceEval se[n];
  Gyro__SourceEval *sep[n];
  Gyro__EvalReport r = GYRO__EVAL_REPORT__INIT;
  r.generation = generation;
  r.rank = rank;
  r.step = ev->step;
  for (int i = 0; i < ev->nsources; i++) {
    const gy_agent_source_eval_t *x = &ev->sources[i];
    gyro__source_eval__init(&se[i]);
    se[i].source = s_(x->source);
    se[i].loss = x->loss;
    se[i].ppl = x->ppl;
    se[i].tokens = x->tokens;
    se[i].cloze_accuracy = x->cloze_accuracy;
    se[i].cloze_items = x->cloze_items;
    sep[i] = &se[i];
  }
  r.n_sources = (size_t)ev->nsources;
  r.sources = sep;
  r.has_checkpoint = ev->has_checkpoint != 0;
  r.checkpoint_step = ev->has_checkpoint ? ev->checkpoint_step : -1;
  Gyro__WorkerMsg m = GYRO__WORKER_MSG__INIT;
  m.msg_case = GYRO__WORKER_MSG__MSG_EVAL;
  m.eval = &r;
  return pack_worker(&m, buf, len);
}

int gy_wire_agent_ack_encode(uint64_t generation, int rank, uint64_t seq, int64_t step, int ok,
                             const char *error, uint64_t checkpoint_bytes, uint8_t **buf,
                             size_t *len) {
  Gyro__DirectiveAck ack = GYRO__DIRECTIVE_ACK__INIT;
  ack.generation = generation;
  ack.rank = rank;
  ack.seq = seq;
  ack.step = step;
  ack.ok = ok != 0;
  ack.error = s_(error);
  ack.checkpoint_bytes = ok ? checkpoint_bytes : 0;
  Gyro__WorkerMsg m = GYRO__WORKER_MSG__INIT;
  m.msg_case = GYRO__WORKER_MSG__MSG_ACK;
  m.ack = &ack;
  return pack_worker(&m, buf, len);
}

int gy_wire_agent_store_set_encode(const char *key, const void *val, size_t vlen, uint8_t **buf,
                                   size_t *len) {
  if (!val && vlen) return GY_EINVAL;
  Gyro__StoreSetRequest req = GYRO__STORE_SET_REQUEST__INIT;
  req.key = s_(key);
  req.value.data = (uint8_t *)val;
  req.value.len = vlen;
  return pack(&req.base, buf, len);
}

int gy_wire_agent_store_get_encode(const char *key, int32_t timeout_ms, uint8_t **buf,
                                   size_t *len) {
  Gyro__StoreGetRequest req = GYRO__STORE_GET_REQUEST__INIT;
  req.key = s_(key);
  req.timeout_ms = timeout_ms;
  return pack(&req.base, buf, len);
}

/* ---------------------------------- what it receives ---------------------------------- */

int gy_wire_agent_assignment_decode(const uint8_t *buf, size_t len,
                                    gy_wire_agent_assignment_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__Assignment *m = gyro__assignment__unpack(NULL, len, buf);
  if (!m) return GY_EPROTO;
  if (m->n_skip > INT32_MAX / 2) {
    gyro__assignment__free_unpacked(m, NULL);
    return GY_EPROTO;
  }
  if (m->n_skip && !(out->skip_ = malloc(m->n_skip * 2 * sizeof(*out->skip_)))) {
    gyro__assignment__free_unpacked(m, NULL);
    return GY_ENOMEM;
  }
  for (size_t i = 0; i < m->n_skip; i++) {
    out->skip_[2 * i] = m->skip[i] ? m->skip[i]->first : 0;
    out->skip_[2 * i + 1] = m->skip[i] ? m->skip[i]->last : 0;
  }
  if (m->n_quarantine > (1 << 20) ||
      (m->n_quarantine && !(out->quar_ = calloc(m->n_quarantine, sizeof(*out->quar_))))) {
    int rc = m->n_quarantine > (1 << 20) ? GY_EPROTO : GY_ENOMEM;
    free(out->skip_);
    out->skip_ = NULL;
    gyro__assignment__free_unpacked(m, NULL);
    return rc;
  }
  for (size_t i = 0; i < m->n_quarantine; i++) {
    const Gyro__QuarantineEntry *e = m->quarantine[i];
    if (!e || e->file_index >= m->n_quarantine_files) {
      free(out->skip_);
      free(out->quar_);
      out->skip_ = NULL;
      out->quar_ = NULL;
      gyro__assignment__free_unpacked(m, NULL);
      return GY_EPROTO;
    }
    out->quar_[i] = (gy_agent_quar_t){.channel = s_(e->channel),
                                      .file = s_(m->quarantine_files[e->file_index]),
                                      .offset = e->offset,
                                      .length = e->length,
                                      .released = e->released != 0};
  }
  out->msg_ = m;
  out->asg = (gy_agent_assignment_t){.generation = m->generation,
                                     .rank = m->rank,
                                     .world = m->world,
                                     .tp = m->tp,
                                     .start_step = m->start_step,
                                     .heartbeat_ms = m->heartbeat_ms,
                                     .hang_floor_ms = m->hang_floor_ms,
                                     .hang_factor = m->hang_factor,
                                     .config_yaml = s_(m->config_yaml),
                                     .config_dir = s_(m->config_dir),
                                     .rdzv_prefix = s_(m->rdzv_prefix),
                                     .session_id = s_(m->session_id),
                                     .skip = out->skip_,
                                     .nskip = (int)m->n_skip,
                                     .has_guard = m->guard != NULL,
                                     .quar = out->quar_,
                                     .nquar = (int)m->n_quarantine};
  gy_wire_guard_in(m->guard, &out->asg.guard);
  return 0;
}

void gy_wire_agent_assignment_free(gy_wire_agent_assignment_t *a) {
  if (a->msg_) gyro__assignment__free_unpacked(a->msg_, NULL);
  free(a->skip_);
  free(a->quar_);
  a->msg_ = NULL;
  a->skip_ = NULL;
  a->quar_ = NULL;
}

int gy_wire_agent_ctl_decode(const uint8_t *buf, size_t len, gy_wire_agent_ctl_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__ControllerMsg *m = gyro__controller_msg__unpack(NULL, len, buf);
  if (!m) return GY_EPROTO;
  out->dir.reason = "";
  if (m->msg_case == GYRO__CONTROLLER_MSG__MSG_GRANT && m->grant) {
    out->kind = GY_WIRE_AGENT_CTL_GRANT;
    out->generation = m->grant->generation;
    out->horizon = m->grant->horizon;
  } else if (m->msg_case == GYRO__CONTROLLER_MSG__MSG_DIRECTIVE && m->directive) {
    const Gyro__Directive *d = m->directive;
    if (d->n_skip > INT32_MAX) {
      gyro__controller_msg__free_unpacked(m, NULL);
      return GY_EPROTO;
    }
    if (d->n_quarantine > INT32_MAX) {
      gyro__controller_msg__free_unpacked(m, NULL);
      return GY_EPROTO;
    }
    if ((d->n_skip && !(out->skip_ = calloc(d->n_skip, sizeof(*out->skip_)))) ||
        (d->n_quarantine && !(out->quar_ = calloc(d->n_quarantine, sizeof(*out->quar_))))) {
      free(out->skip_);
      out->skip_ = NULL;
      gyro__controller_msg__free_unpacked(m, NULL);
      return GY_ENOMEM;
    }
    for (size_t i = 0; i < d->n_quarantine; i++) {
      const Gyro__QuarantineEntry *e = d->quarantine[i];
      out->quar_[i] = (gy_agent_quar_t){.channel = s_(e ? e->channel : NULL),
                                        .file = s_(e ? e->file : NULL),
                                        .offset = e ? e->offset : 0,
                                        .length = e ? e->length : 0,
                                        .released = e && e->released};
    }
    for (size_t i = 0; i < d->n_skip; i++) {
      out->skip_[i].first = d->skip[i] ? d->skip[i]->first : 0;
      out->skip_[i].last = d->skip[i] ? d->skip[i]->last : 0;
    }
    out->kind = GY_WIRE_AGENT_CTL_DIRECTIVE;
    out->generation = d->generation;
    out->dir.seq = d->seq;
    out->dir.at_step = d->at_step;
    out->dir.kind = (gy_directive_kind_t)d->kind;
    gy_wire_hparams_in(d->hparams, &out->dir.hparams);
    out->dir.to_step = d->to_step;
    out->dir.skip = out->skip_;
    out->dir.nskip = (int)d->n_skip;
    out->dir.reason = s_(d->reason);
    out->dir.quar = out->quar_;
    out->dir.nquar = (int)d->n_quarantine;
    gy_wire_guard_in(d->guard, &out->dir.guard);
  }
  out->msg_ = m;
  return 0;
}

void gy_wire_agent_ctl_free(gy_wire_agent_ctl_t *m) {
  if (m->msg_) gyro__controller_msg__free_unpacked(m->msg_, NULL);
  free(m->skip_);
  free(m->quar_);
  m->msg_ = NULL;
  m->skip_ = NULL;
  m->quar_ = NULL;
}

int gy_wire_agent_store_value_decode(const uint8_t *buf, size_t len, void **val, size_t *vlen) {
  *val = NULL;
  *vlen = 0;
  Gyro__StoreValue *v = gyro__store_value__unpack(NULL, len, buf);
  if (!v) return GY_EPROTO;
  *val = malloc(v->value.len ? v->value.len : 1);
  if (!*val) {
    gyro__store_value__free_unpacked(v, NULL);
    return GY_ENOMEM;
  }
  if (v->value.len) memcpy(*val, v->value.data, v->value.len);
  *vlen = v->value.len;
  gyro__store_value__free_unpacked(v, NULL);
  return 0;
}
