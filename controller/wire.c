/* wire: see wire.h. */
#include "controller/wire.h"

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

void gy_wire_hparams_in(const Gyro__HParams *h, gy_fleet_hparams_t *out) {
  if (!h) {
    *out = (gy_fleet_hparams_t){0};
    return;
  }
  *out = (gy_fleet_hparams_t){.lr_scale = h->lr_scale,
                              .grad_clip = h->grad_clip,
                              .eps = h->eps,
                              .weight_decay = h->weight_decay,
                              .shallow_scale = h->shallow_scale,
                              .shallow_layers = h->shallow_layers,
                              .z_loss = h->z_loss,
                              .beta1 = h->beta1,
                              .beta2 = h->beta2,
                              .present = h->present,
                              .wsd_decay_now = h->wsd_decay_now};
}

void gy_wire_hparams_out(const gy_fleet_hparams_t *h, Gyro__HParams *out) {
  out->lr_scale = h->lr_scale;
  out->grad_clip = h->grad_clip;
  out->eps = h->eps;
  out->weight_decay = h->weight_decay;
  out->shallow_scale = h->shallow_scale;
  out->shallow_layers = h->shallow_layers;
  out->z_loss = h->z_loss;
  out->beta1 = h->beta1;
  out->beta2 = h->beta2;
  out->wsd_decay_now = h->wsd_decay_now;
  out->present = h->present;
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
