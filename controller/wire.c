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
