/* test_cloze: the held-out evaluation of the training engine (gy_trainer_eval) against a
 * brute-force computation on a small model. Two channels of real text (system headers as byte
 * tokens) with held-out shards; a few training steps; then, for every held-out sequence, the
 * model is run once per vocabulary token v with every target set to v: the cloze answer at a
 * position is the v of the smallest cross-entropy (the first one on a tie), which must be the
 * argmax the engine takes from the logits (over the real vocabulary only: the padded rows are
 * made to win if they were looked at). The engine's right items, item count (the last 32 positions
 * of each sequence), token count and held-out loss must equal the brute force's; a second
 * evaluation gives the same figures (deterministic). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test.h"
#include "tests/unit/data_fixture.h"
#include "config/run_config.h"
#include "worker/shard.h"
#include "worker/train.h"

#define T 40   /* longer than GY_CLOZE_TOKENS: the first positions are no items */
#define NSEQ 5 /* held-out sequences per channel: one full batch of 4 and one of 1 */
#define B 4

static const char *const texts[2][2] = {{"/usr/include/stdio.h", "/usr/include/stdlib.h"},
                                        {"/usr/include/string.h", "/usr/include/unistd.h"}};

static gy_trainer_t *make(const char *dir) {
  char *path = fx_path(dir, "run.yaml"), err[1024] = "";
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fprintf(f,
          "run: {name: cloze, seed: 11, steps: 10, threads: 1}\n"
          "model: {layers: 2, channels: 32, heads: 2, context: %d, vocab: 256, padded_vocab: 384}\n"
          "train: {batch: %d, top_k: 2}\n"
          "optimizer: {lr: 3.0e-3}\n"
          "data:\n  channels:\n"
          "    - {name: a, train: ['%s/c0_train.bin'], val: '%s/c0_val.bin'}\n"
          "    - {name: b, train: ['%s/c1_train.bin'], val: '%s/c1_val.bin'}\n"
          "eval: {every: 0, sequences: %d}\n"
          "checkpoint: {dir: %s/ckpt, every: 0}\n",
          T, B, dir, dir, dir, dir, NSEQ, dir);
  fclose(f);
  gy_run_config_t cfg;
  int rc = gy_run_config_load(&cfg, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_trainer_t *t = NULL;
  rc = gy_trainer_create(&t, &cfg, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_run_config_free(&cfg);
  free(path);
  return t;
}

int main(void) {
  (void)fx_write;
  char *dir = fx_tmpdir();
  fx_write_text_shards(dir, texts, 2);
  gy_trainer_t *t = make(dir);
  for (int i = 0; i < 8; i++) {
    gy_step_report_t r;
    REQUIRE(gy_trainer_step(t, &r) == 0);
  }
  gy_gpt_t *m = gy_trainer_model(t);
  gy_data_t *d = gy_trainer_data(t);
  const gy_gpt_config_t *mc = gy_gpt_config(m);
  int V = mc->vocab_size, Vp = mc->padded_vocab_size, C = mc->channels;
  REQUIRE(Vp > V);
  /* Padded rows of the token embedding (never trained, zero) get large random values: at every
   * position the largest of their 128 logits beats the real ones, so an argmax that looked at
   * the padded columns would never find a real token. */
  float *wte = gy_gpt_params(m) + gy_gpt_tensor_offset(m, GY_T_WTE);
  uint64_t seed = 12345;
  for (int v = V; v < Vp; v++)
    for (int k = 0; k < C; k++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      wte[(size_t)v * C + k] = 20.0f * ((float)(seed >> 40) / (float)(1 << 24) - 0.5f);
    }

  gy_eval_report_t e1, e2;
  REQUIRE(gy_trainer_eval(t, &e1) == 0);
  REQUIRE(gy_trainer_eval(t, &e2) == 0);
  CHECK_EQ_INT(e1.nchannels, 2);
  CHECK(memcmp(&e1, &e2, sizeof(e1)) == 0); /* deterministic */

  int *in = malloc(sizeof(int) * B * T), *tg = malloc(sizeof(int) * B * T);
  int *truth = malloc(sizeof(int) * B * T), *arg = malloc(sizeof(int) * B * T);
  float *best = malloc(sizeof(float) * B * T);
  uint16_t tok[T + 1];
  for (int ch = 0; ch < 2; ch++) {
    int n = gy_data_val_count(d, ch);
    CHECK_EQ_INT(n, NSEQ);
    double sum = 0;
    uint64_t ntok = 0, right = 0, items = 0;
    for (int i0 = 0; i0 < n; i0 += B) {
      int nb = n - i0 < B ? n - i0 : B;
      for (int b = 0; b < nb; b++) {
        gy_data_val_sample(d, ch, i0 + b, tok);
        for (int j = 0; j < T; j++) {
          in[b * T + j] = tok[j];
          truth[b * T + j] = tok[j + 1];
        }
      }
      float l;
      REQUIRE(gy_gpt_forward(m, in, truth, nb, T, 0.0f, &l) == 0);
      const float *tl = gy_gpt_token_losses(m);
      for (int j = 0; j < nb * T; j++)
        sum += tl[j];
      ntok += (uint64_t)nb * T;
      for (int j = 0; j < nb * T; j++) {
        best[j] = INFINITY;
        arg[j] = -1;
      }
      for (int v = 0; v < V; v++) { /* every target v at once: the cross-entropy of v */
        for (int j = 0; j < nb * T; j++)
          tg[j] = v;
        REQUIRE(gy_gpt_forward(m, in, tg, nb, T, 0.0f, &l) == 0);
        tl = gy_gpt_token_losses(m);
        for (int j = 0; j < nb * T; j++)
          if (tl[j] < best[j]) {
            best[j] = tl[j];
            arg[j] = v;
          }
      }
      for (int b = 0; b < nb; b++)
        for (int j = T - GY_CLOZE_TOKENS; j < T; j++) {
          items++;
          right += arg[b * T + j] == truth[b * T + j];
        }
    }
    printf("channel %d: %llu of %llu cloze items right (%.1f%%), held-out loss %.4f\n", ch,
           (unsigned long long)e1.cloze_right[ch], (unsigned long long)e1.cloze_items[ch],
           100 * e1.cloze[ch], e1.val_loss[ch]);
    CHECK_EQ_INT(e1.cloze_items[ch], (uint64_t)NSEQ * GY_CLOZE_TOKENS);
    CHECK_EQ_INT(items, e1.cloze_items[ch]);
    CHECK_MSG(right == e1.cloze_right[ch], "channel %d: brute force %llu right, engine %llu", ch,
              (unsigned long long)right, (unsigned long long)e1.cloze_right[ch]);
    CHECK(right > 0); /* a trained model gets some right: the comparison is not vacuous */
    CHECK(fabs(e1.cloze[ch] - (double)right / (double)items) < 1e-15);
    CHECK_EQ_INT(e1.tokens[ch], ntok);
    CHECK_MSG(e1.val_loss[ch] == sum / (double)ntok, "channel %d: loss %.17g vs %.17g", ch,
              e1.val_loss[ch], sum / (double)ntok);
    CHECK(fabs(e1.ppl[ch] - exp(e1.val_loss[ch])) < 1e-12 * e1.ppl[ch]);
  }
  free(in);
  free(tg);
  free(truth);
  free(arg);
  free(best);
  gy_trainer_destroy(t);
  fx_rmtree(dir);
  free(dir);
  GY_TEST_END();
}
