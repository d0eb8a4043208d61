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
