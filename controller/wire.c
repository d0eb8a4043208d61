/* wire: the controller's side of the wire layer (see wire.h).
 *
 * API, in order: gy_wire_step_report and gy_wire_join (unpacked message -> fleet input), then
 * the decoders from bytes, each with its free: join, session message, command, the other
 * requests. The HParams conversion is wire/hparams.c's.
 *
 * Invariants: a decoder either returns 0 with its value filled, or an error (GY_EPROTO: the
 * bytes do not unpack; GY_ENOMEM) with `msg_` NULL, so *_free is always safe after it. Strings
 * of a decoded value are never NULL. A decoder converts with the very functions the services
 * call on the messages they unpack themselves, so the fuzz harness tests what they run. */
#include "controller/wire.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/gyro.pb-c.h"

void gy_wire_step_report(const Gyro__StepReport *r, gy_wire_channels_t *ch,
                         gy_fleet_report_t *out) {
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
                             .tokens_per_s = r->tokens_per_s,
                             .has_checkpoint = r->has_checkpoint,
                             .checkpoint_step = r->checkpoint_step,
                             .checkpoint_bytes = r->has_checkpoint ? r->checkpoint_bytes : 0};
}

void gy_wire_join(const Gyro__JoinRequest *jr, gy_fleet_join_t *out) {
  *out = (gy_fleet_join_t){.worker_id = jr->worker_id,
                           .ordinal = jr->ordinal,
                           .host = jr->host,
                           .pid = jr->pid,
                           .steps_done = jr->steps_done,
                           .generation = jr->generation};
}

void gy_wire_samples(const Gyro__StepReport *r, gy_core_sample_t *out, size_t max, size_t *ntop,
                     size_t *nbottom) {
  *ntop = *nbottom = 0;
  for (size_t i = 0; i < r->n_top && *ntop < max; i++)
    out[(*ntop)++] = (gy_core_sample_t){r->top[i]->id, r->top[i]->loss, r->top[i]->channel};
  for (size_t i = 0; i < r->n_bottom && *nbottom < max; i++)
    out[max + (*nbottom)++] =
        (gy_core_sample_t){r->bottom[i]->id, r->bottom[i]->loss, r->bottom[i]->channel};
}

void gy_wire_eval(const Gyro__EvalReport *r, gy_wire_eval_t *out) {
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
  gy_wire_join(jr, &out->join);
  out->join_token = str(jr->join_token);
  out->msg_ = jr;
  return 0;
}

void gy_wire_join_free(gy_wire_join_req_t *j) {
  free_msg(&j->msg_);
}

int gy_wire_session_decode(const uint8_t *buf, size_t len, gy_wire_worker_msg_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__WorkerMsg *wm = gyro__worker_msg__unpack(NULL, len, buf);
  if (!wm) return GY_EPROTO;
  out->msg_ = wm;
  out->session_id = out->error = "";
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
    gy_wire_step_report(wm->report, &out->ch, &out->report);
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

void gy_wire_session_free(gy_wire_worker_msg_t *m) {
  free_msg(&m->msg_);
}

int gy_wire_command_decode(const uint8_t *buf, size_t len, gy_wire_command_t *out) {
  memset(out, 0, sizeof(*out));
  Gyro__CommandRequest *r = gyro__command_request__unpack(NULL, len, buf);
  if (!r) return GY_EPROTO;
  out->kind = (int)r->kind;
  gy_wire_hparams_in(r->hparams, &out->hparams);
  out->to_step = r->to_step;
  out->newest = r->newest != 0;
  out->nskip_steps = r->n_skip_steps;
  out->token = str(r->token);
  /* more ranges than the fleet takes are refused by it: copy none of them */
  out->nskip = r->n_skip > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)r->n_skip;
  if (out->nskip && out->nskip <= GY_FLEET_MAX_SKIPS) {
    if (!(out->skip = malloc((size_t)out->nskip * sizeof(*out->skip)))) {
      gyro__command_request__free_unpacked(r, NULL);
      return GY_ENOMEM;
    }
    for (int i = 0; i < out->nskip; i++)
      out->skip[i] = (gy_fleet_skip_t){r->skip[i]->first, r->skip[i]->last};
  }
  out->msg_ = r;
  return 0;
}

void gy_wire_command_free(gy_wire_command_t *c) {
  free(c->skip);
  c->skip = NULL;
  free_msg(&c->msg_);
}

int gy_wire_request_decode(gy_wire_req_kind_t kind, const uint8_t *buf, size_t len,
                           gy_wire_request_t *out) {
  static const ProtobufCMessageDescriptor *desc[] = {
      [GY_WIRE_REQ_STORE_SET] = &gyro__store_set_request__descriptor,
      [GY_WIRE_REQ_STORE_GET] = &gyro__store_get_request__descriptor,
      [GY_WIRE_REQ_EVENTS] = &gyro__events_request__descriptor,
      [GY_WIRE_REQ_WATCH] = &gyro__watch_request__descriptor,
      [GY_WIRE_REQ_POLICY_SET] = &gyro__policy_set_request__descriptor,
      [GY_WIRE_REQ_CHECKPOINTS] = &gyro__checkpoints_request__descriptor,
      [GY_WIRE_REQ_EMPTY] = &gyro__empty__descriptor,
  };
  memset(out, 0, sizeof(*out));
  if ((unsigned)kind >= sizeof(desc) / sizeof(desc[0])) return GY_EINVAL;
  ProtobufCMessage *m = protobuf_c_message_unpack(desc[kind], NULL, len, buf);
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
