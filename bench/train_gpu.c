/*
 * bench/train_gpu: speed of one GPU training step (forward, backward, AdamW) of gyro's CUDA GPT
 * (kernels/gpt_cuda.h), GPT-2 124M shape by default, bf16 compute with float master weights.
 *
 *   train_gpu [--layers 12] [--channels 768] [--heads 12] [--seq 1024] [--vocab 50257]
 *             [--padded-vocab 50304] [--batch 0] [--steps 20] [--warmup 3] [--dtype bf16|f32]
 *             [--device 0] [--json]
 *
 * --batch 0 (default) takes the largest micro-batch in {64, 48, 32, 24, 16, 12, 8, 4, 2, 1} whose
 * model fits in device memory and runs a step. Tokens are uniform random (fixed seed): the speed
 * does not depend on them.
 *
 * Model FLOPs per token = 6 * N + 6 * L * C * T, N = every parameter (padded vocabulary
 * included), the second term the causal attention products (forward + backward). MFU = achieved
 * FLOP/s / the device's dense bf16 peak from the table below (found by the device's name; unknown
 * devices report no MFU). A step is timed from the forward's start to the optimizer's end (the
 * optimizer waits for the device); the figures are medians over the measured steps.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/gpt_cuda.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, by device name; 0 if unknown. Order
 * matters: the more specific names first. */
static double peak_bf16_tflops(const char *name) {
  static const struct {
    const char *a, *b; /* both must appear in the name (b may be NULL) */
    double tflops;
  } table[] = {
      {"H100", "PCIe", 756.0}, /* H100 PCIe */
      {"H100", "NVL", 835.0},  /* H100 NVL */
      {"H100", NULL, 989.0},   /* H100 SXM ("NVIDIA H100 80GB HBM3") */
      {"H200", NULL, 989.0},   /* H200 SXM */
      {"H800", NULL, 989.0},   {"GH200", NULL, 989.0}, {"B200", NULL, 2250.0},
      {"A100", NULL, 312.0},   {"A800", NULL, 312.0},  {"L40S", NULL, 362.0},
      {"A10G", NULL, 70.0},
  };
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
    if (strstr(name, table[i].a) && (!table[i].b || strstr(name, table[i].b)))
      return table[i].tflops;
  return 0.0;
}

static void usage(void) {
  fprintf(stderr, "usage: train_gpu [--layers L] [--channels C] [--heads NH] [--seq T] "
                  "[--vocab V] [--padded-vocab Vp] [--batch B|0] [--steps S] [--warmup W] "
                  "[--dtype bf16|f32] [--device D] [--json]\n");
}

/* One training step; returns 0 or a gyro error. */
static int step(gy_gpt_cuda_t *m, gy_adamw_cuda_t *o, const gy_knobs_t *k, const int *in,
                const int *tg, int B, int T, int s, float *loss) {
  int rc = gy_gpt_cuda_forward(m, in, tg, B, T, k->z_loss, loss);
  if (!rc) rc = gy_gpt_cuda_backward(m);
  gy_step_stats_t st;
  if (!rc) rc = gy_adamw_cuda_step(o, k, s, &st);
  return rc;
}

int main(int argc, char **argv) {
  gy_gpt_config_t cfg = {.max_seq_len = 1024,
                         .vocab_size = 50257,
                         .padded_vocab_size = 50304,
                         .num_layers = 12,
                         .num_heads = 12,
                         .channels = 768};
  int batch = 0, steps = 20, warmup = 3, device = 0, json = 0;
  gy_cuda_dtype_t dt = GY_CUDA_BF16;
  static const struct option opts[] = {{"layers", required_argument, 0, 'l'},
                                       {"channels", required_argument, 0, 'c'},
                                       {"heads", required_argument, 0, 'h'},
                                       {"seq", required_argument, 0, 't'},
                                       {"vocab", required_argument, 0, 'v'},
                                       {"padded-vocab", required_argument, 0, 'p'},
                                       {"batch", required_argument, 0, 'b'},
                                       {"steps", required_argument, 0, 's'},
                                       {"warmup", required_argument, 0, 'w'},
                                       {"dtype", required_argument, 0, 'd'},
                                       {"device", required_argument, 0, 'g'},
                                       {"json", no_argument, 0, 'j'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'l':
      cfg.num_layers = atoi(optarg);
      break;
    case 'c':
      cfg.channels = atoi(optarg);
      break;
    case 'h':
      cfg.num_heads = atoi(optarg);
      break;
    case 't':
      cfg.max_seq_len = atoi(optarg);
      break;
    case 'v':
      cfg.vocab_size = atoi(optarg);
      break;
    case 'p':
      cfg.padded_vocab_size = atoi(optarg);
      break;
    case 'b':
      batch = atoi(optarg);
      break;
    case 's':
      steps = atoi(optarg);
      break;
    case 'w':
      warmup = atoi(optarg);
      break;
    case 'g':
      device = atoi(optarg);
      break;
    case 'j':
      json = 1;
      break;
    case 'd':
      if (strcmp(optarg, "bf16") == 0) {
        dt = GY_CUDA_BF16;
      } else if (strcmp(optarg, "f32") == 0) {
        dt = GY_CUDA_F32;
      } else {
        fprintf(stderr, "train_gpu: --dtype must be bf16 or f32, not '%s'\n", optarg);
        return 2;
      }
      break;
    default:
      usage();
      return 2;
    }
  }
  char err[512] = "";
  if (gy_gpt_config_check(&cfg, err, sizeof(err)) || batch < 0 || steps < 1 || warmup < 0) {
    fprintf(stderr, "train_gpu: %s\n", err[0] ? err : "--batch >= 0, --steps >= 1, --warmup >= 0");
    return 2;
  }
  if (gy_cuda_device_count() <= device) {
    printf("skipped: no GPU (train_gpu needs CUDA device %d)\n", device);
    return 77;
  }
  char name[256] = "";
  size_t total_mem = 0;
  gy_cuda_device_info(device, name, sizeof(name), &total_mem, NULL);
  int T = cfg.max_seq_len;

  static const int tries[] = {64, 48, 32, 24, 16, 12, 8, 4, 2, 1};
  int ntries = batch ? 1 : (int)(sizeof(tries) / sizeof(tries[0]));
  gy_gpt_cuda_t *m = NULL;
  gy_adamw_cuda_t *o = NULL;
  int *in = NULL, *tg = NULL, B = 0, rc = 0;
  gy_knobs_t k;
  gy_knobs_default(&k);
  float loss0 = 0;
  for (int i = 0; i < ntries; i++) {
    B = batch ? batch : tries[i];
    rc = gy_gpt_cuda_create(&m, &cfg, B, dt, device, err, sizeof(err));
    if (!rc) rc = gy_gpt_cuda_init_params(m, 1);
    if (!rc) rc = gy_adamw_cuda_create(&o, m);
    if (!rc) {
      in = malloc(sizeof(int) * (size_t)B * T);
      tg = malloc(sizeof(int) * (size_t)B * T);
      if (!in || !tg) return 1;
      uint64_t s = 12345;
      for (size_t j = 0; j < (size_t)B * T; j++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        in[j] = (int)((s >> 33) % (uint64_t)cfg.vocab_size);
        tg[j] = (int)((s >> 13) % (uint64_t)cfg.vocab_size);
      }
      rc = step(m, o, &k, in, tg, B, T, 0, &loss0); /* the first step allocates cuBLAS state */
    }
    if (!rc) break;
    fprintf(stderr, "train_gpu: batch %d does not run (%s)%s\n", B, gy_strerror(rc),
            rc == GY_ENOMEM && !batch ? ", trying a smaller one" : "");
    gy_adamw_cuda_destroy(o);
    gy_gpt_cuda_destroy(m);
    free(in), free(tg);
    o = NULL, m = NULL, in = NULL, tg = NULL;
    if (rc != GY_ENOMEM) break;
  }
  if (rc) {
    fprintf(stderr, "train_gpu: %s\n", err[0] ? err : gy_cuda_last_error());
    return 1;
  }

  double *t = malloc(sizeof(double) * (size_t)steps);
  float loss = 0, loss_first = loss0;
  for (int s = 1; s <= warmup + steps && !rc; s++) {
    double t0 = now_s();
    rc = step(m, o, &k, in, tg, B, T, s, &loss);
    if (s > warmup) t[s - warmup - 1] = now_s() - t0;
  }
  if (rc) {
    fprintf(stderr, "train_gpu: step failed: %s: %s\n", gy_strerror(rc), gy_cuda_last_error());
    return 1;
  }
  qsort(t, (size_t)steps, sizeof(double), cmp_d);
  double med = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
  double n_params = (double)gy_gpt_cuda_num_params(m);
  double L = cfg.num_layers, C = cfg.channels;
  double flops_tok = 6.0 * n_params + 6.0 * L * C * T;
  double tokens = (double)B * T, tok_s = tokens / med, tflops = flops_tok * tok_s / 1e12;
  double peak = peak_bf16_tflops(name);
  double mem_gib = (double)gy_gpt_cuda_device_bytes(m) / (1 << 30);

  if (json) {
    json_t *j = json_object();
    json_object_set_new(j, "bench", json_string("train_gpu"));
    json_object_set_new(j, "impl", json_string("gyro"));
    json_object_set_new(j, "device", json_string(name));
    json_object_set_new(j, "dtype", json_string(gy_cuda_dtype_name(dt)));
    json_object_set_new(j, "layers", json_integer(cfg.num_layers));
    json_object_set_new(j, "channels", json_integer(cfg.channels));
    json_object_set_new(j, "heads", json_integer(cfg.num_heads));
    json_object_set_new(j, "seq", json_integer(T));
    json_object_set_new(j, "vocab", json_integer(cfg.vocab_size));
    json_object_set_new(j, "padded_vocab", json_integer(cfg.padded_vocab_size));
    json_object_set_new(j, "batch", json_integer(B));
    json_object_set_new(j, "params", json_integer((json_int_t)n_params));
    json_object_set_new(j, "steps", json_integer(steps));
    json_object_set_new(j, "ms_per_step", json_real(med * 1e3));
    json_object_set_new(j, "ms_min", json_real(t[0] * 1e3));
    json_object_set_new(j, "tokens_per_s", json_real(tok_s));
    json_object_set_new(j, "flops_per_token", json_real(flops_tok));
    json_object_set_new(j, "tflops", json_real(tflops));
    json_object_set_new(j, "peak_tflops", peak > 0 ? json_real(peak) : json_null());
    json_object_set_new(j, "mfu", peak > 0 ? json_real(tflops / peak) : json_null());
    json_object_set_new(j, "loss_first", json_real(loss_first));
    json_object_set_new(j, "loss_last", json_real(loss));
    json_object_set_new(j, "model_mem_gib", json_real(mem_gib));
    gy_json_emit(j);
  } else {
    printf("device %s (%.1f GiB), %s, L=%d C=%d NH=%d T=%d Vp=%d, batch %d, %.1fM params\n", name,
           (double)total_mem / (1 << 30), gy_cuda_dtype_name(dt), cfg.num_layers, cfg.channels,
           cfg.num_heads, T, cfg.padded_vocab_size, B, n_params / 1e6);
    printf("step %.2f ms (min %.2f), %.0f tokens/s, %.1f TFLOP/s", med * 1e3, t[0] * 1e3, tok_s,
           tflops);
    if (peak > 0)
      printf(", MFU %.1f%% of %.0f TFLOP/s\n", 100.0 * tflops / peak, peak);
    else
      printf(", MFU n/a (no peak known for this device)\n");
    printf("loss %.4f -> %.4f; model memory %.1f GiB\n", loss_first, loss, mem_gib);
  }
  free(t), free(in), free(tg);
  gy_adamw_cuda_destroy(o);
  gy_gpt_cuda_destroy(m);
  return 0;
}
