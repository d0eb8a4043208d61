/*
 * train_eval: held-out evaluation of the trainer (gy_trainer_eval): loss, perplexity and cloze
 * accuracy per channel.
 *
 * API, in order: gy_trainer_eval.
 *
 * The held-out sequences are shared out over the data-parallel group (sequence i on rank
 * i % dp), B per forward pass, and the per-channel sums are reduced over the group, so every
 * rank gets the same figures and a fixed layout gives the same figures every time. A cloze item
 * is right when the top-1 prediction (argmax over the real vocabulary, lowest token on a tie; on
 * the GPU, gy_gpt_cuda_argmax) is the held-out token.
 *
 * Invariants: evaluation changes no training state (parameters, moments, step, knobs); it uses
 * the batch buffers only.
 */
#include "worker/train_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"

#ifdef GY_HAVE_CUDA_KERNELS
/* As cloze_count, from the top-1 predictions top1 [nb*T] (the GPU computes them). */
static uint64_t cloze_count_top1(const int *top1, const int *targets, int nb, int T,
                                 uint64_t *items) {
  int first = T > GY_CLOZE_TOKENS ? T - GY_CLOZE_TOKENS : 0;
  uint64_t right = 0;
  for (int b = 0; b < nb; b++)
    for (int i = first; i < T; i++)
      right += top1[b * T + i] == targets[b * T + i];
  *items += (uint64_t)nb * (uint64_t)(T - first);
  return right;
}
#endif

/* Right cloze items among the last GY_CLOZE_TOKENS positions of each of the nb sequences of the
 * last forward pass (logits [nb*T, Vp]; targets [nb*T]); their number goes to *items. */
static uint64_t cloze_count(const float *logits, const int *targets, int nb, int T, int V, int Vp,
                            uint64_t *items) {
  int first = T > GY_CLOZE_TOKENS ? T - GY_CLOZE_TOKENS : 0;
  uint64_t right = 0;
  for (int b = 0; b < nb; b++)
    for (int i = first; i < T; i++) {
      const float *row = logits + ((size_t)b * T + i) * (size_t)Vp;
      int best = 0;
      for (int v = 1; v < V; v++)
        if (row[v] > row[best]) best = v;
      right += best == targets[b * T + i];
    }
  *items += (uint64_t)nb * (uint64_t)(T - first);
  return right;
}

int gy_trainer_eval(gy_trainer_t *t, gy_eval_report_t *rep) {
  memset(rep, 0, sizeof(*rep));
  int nch = gy_data_nchannels(t->data), B = t->B, T = t->T;
  int V = gy_gpt_config(t->model)->vocab_size, Vp = gy_gpt_config(t->model)->padded_vocab_size;
  int dp = t->dp_size > 0 ? t->dp_size : 1, me = t->dp_rank;
  /* this rank's sums per channel: loss, tokens, right cloze items, cloze items */
  double sums[4 * GY_MAX_CHANNELS] = {0};
  rep->nchannels = nch;
  for (int ch = 0; ch < nch; ch++) {
    rep->unigram[ch] = gy_data_unigram_nats(t->data, ch);
    int n = gy_data_val_count(t->data, ch);
    double sum = 0;
    uint64_t ntok = 0, right = 0, items = 0;
    /* this rank's sequences: me, me + dp, me + 2 dp, ..., B per forward pass */
    for (int k0 = me; k0 < n; k0 += B * dp) {
      int nb = 0;
      for (int i = k0; i < n && nb < B; i += dp, nb++) {
        gy_data_val_sample(t->data, ch, i, t->tok);
        for (int j = 0; j < T; j++) {
          t->inputs[nb * T + j] = t->tok[j];
          t->targets[nb * T + j] = t->tok[j + 1];
        }
      }
      float l;
#ifdef GY_HAVE_CUDA_KERNELS
      if (t->dmodel) { /* the top-1 predictions come from the GPU, not the logits */
        int rc = gy_gpt_cuda_forward(t->dmodel, t->inputs, t->targets, nb, T, 0.0f, &l);
        if (rc == GY_ECOMM) return gy__train_comm_failure(t, rc);
        if (rc) return gy__train_cuda_fail(t, rc, "evaluation forward pass on the GPU");
        const float *tl = gy_gpt_cuda_token_losses(t->dmodel);
        for (int i = 0; i < nb * T; i++)
          sum += tl[i];
        ntok += (uint64_t)nb * (uint64_t)T;
        if ((rc = gy_gpt_cuda_argmax(t->dmodel, t->top1)))
          return gy__train_cuda_fail(t, rc, "evaluation predictions on the GPU");
        right += cloze_count_top1(t->top1, t->targets, nb, T, &items);
        continue;
      }
#endif
      int rc = gy_gpt_forward(t->model, t->inputs, t->targets, nb, T, 0.0f, &l);
      if (rc) return rc == GY_ECOMM ? gy__train_comm_failure(t, rc) : rc;
      const float *tl = gy_gpt_token_losses(t->model);
      for (int i = 0; i < nb * T; i++)
        sum += tl[i];
      ntok += (uint64_t)nb * (uint64_t)T;
      right += cloze_count(gy_gpt_logits(t->model), t->targets, nb, T, V, Vp, &items);
    }
    sums[ch] = sum;
    sums[GY_MAX_CHANNELS + ch] = (double)ntok;
    sums[2 * GY_MAX_CHANNELS + ch] = (double)right;
    sums[3 * GY_MAX_CHANNELS + ch] = (double)items;
  }
  if (dp > 1) {
    gy_comm_t *c = t->groups.dp;
    int rc = c->ops->allreduce(c, sums, 4 * GY_MAX_CHANNELS, GY_DT_F64, GY_OP_SUM);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "evaluation: data-parallel all-reduce: %s",
               c->errmsg);
      return gy__train_comm_failure(t, rc);
    }
  }
  for (int ch = 0; ch < nch; ch++) {
    double ntok = sums[GY_MAX_CHANNELS + ch], items = sums[3 * GY_MAX_CHANNELS + ch];
    rep->tokens[ch] = (uint64_t)ntok;
    rep->val_loss[ch] = ntok > 0 ? sums[ch] / ntok : NAN;
    rep->ppl[ch] = ntok > 0 ? exp(rep->val_loss[ch]) : NAN;
    rep->cloze_right[ch] = (uint64_t)sums[2 * GY_MAX_CHANNELS + ch];
    rep->cloze_items[ch] = (uint64_t)items;
    rep->cloze[ch] = items > 0 ? sums[2 * GY_MAX_CHANNELS + ch] / items : NAN;
  }
  return 0;
}
