/* test_llmc_io: llm.c model files. A small model is saved, its header read back, loaded into a
 * second model (identical parameters, identical loss on the same batch) and saved again
 * (identical bytes); truncated, over-long, wrong-magic, bf16 and mismatched files are refused
 * with errors naming the file; a qk_norm model cannot be saved. Files live in a mkdtemp folder
 * removed at the end. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "kernels/gpt.h"
#include "kernels/llmc_io.h"
#include "tests/test.h"

static char tmpdir[64];

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
  REQUIRE(p && fread(p, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return p;
}

static void write_all(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f && (n == 0 || fwrite(p, 1, n, f) == n) && fclose(f) == 0);
}

static void put_i32(uint8_t *p, int32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)((uint32_t)v >> (8 * i));
}

int main(void) {
  strcpy(tmpdir, "/tmp/gy_test_llmc.XXXXXX");
  REQUIRE(mkdtemp(tmpdir) != NULL);
  char path[256], path2[256], bad[256], err[1024] = "";
  snprintf(path, sizeof path, "%s/model.bin", tmpdir);
  snprintf(path2, sizeof path2, "%s/model2.bin", tmpdir);
  snprintf(bad, sizeof bad, "%s/bad.bin", tmpdir);

  gy_gpt_config_t cfg = {.max_seq_len = 16,
                         .vocab_size = 250,
                         .padded_vocab_size = 256,
                         .num_layers = 2,
                         .num_heads = 4,
                         .channels = 32,
                         .qk_norm = 0};
  gy_gpt_t *a = NULL, *b = NULL;
  REQUIRE(gy_gpt_create(&a, &cfg, 2) == 0);
  REQUIRE(gy_gpt_create(&b, &cfg, 2) == 0);
  gy_gpt_init_params(a, 1234);
  /* Perturb every parameter (biases and padded rows included) so that each float is checked. */
  float *pa = gy_gpt_params(a);
  size_t np = gy_gpt_num_params(a);
  uint64_t s = 99;
  for (size_t i = 0; i < np; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    pa[i] += (float)((int)(s >> 40) % 2001 - 1000) * 1e-5f;
  }

  /* Save and read the header back. */
  int rc = gy_llmc_save(a, path, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  size_t len = 0;
  uint8_t *bytes = read_all(path, &len);
  REQUIRE(bytes);
  size_t n16 = 0;
  for (int i = 0; i < GY_GPT_LLMC_TENSORS; i++)
    n16 += gy_gpt_tensor_size(a, i);
  CHECK_EQ_INT(len, 1024 + 4 * n16);
  CHECK_EQ_INT(n16, np); /* no qk_norm: the 16 tensors are the whole model */
  int32_t h[8];
  memcpy(h, bytes, sizeof h);
  CHECK_EQ_INT(h[0], 20240326);
  CHECK_EQ_INT(h[1], 3);
  CHECK_EQ_INT(h[2], 16);
  CHECK_EQ_INT(h[3], 250);
  CHECK_EQ_INT(h[4], 2);
  CHECK_EQ_INT(h[5], 4);
  CHECK_EQ_INT(h[6], 32);
  CHECK_EQ_INT(h[7], 256);
  /* The first parameter floats are wte's, as llm.c expects. */
  CHECK(memcmp(bytes + 1024, pa + gy_gpt_tensor_offset(a, GY_T_WTE), 64) == 0);

  gy_gpt_config_t rc_cfg;
  memset(&rc_cfg, 0x55, sizeof rc_cfg);
  rc = gy_llmc_read_config(path, &rc_cfg, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  CHECK(memcmp(&rc_cfg, &cfg, sizeof cfg) == 0);

  /* Load into a second model: identical parameters; saving it gives identical bytes. */
  rc = gy_llmc_load(b, path, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  CHECK(memcmp(gy_gpt_params(b), pa, np * sizeof(float)) == 0);
  rc = gy_llmc_save(b, path2, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  size_t len2 = 0;
  uint8_t *bytes2 = read_all(path2, &len2);
  REQUIRE(bytes2);
  CHECK(len2 == len && memcmp(bytes, bytes2, len) == 0);
  free(bytes2);

  /* The same batch gives the same loss on both models. */
  int inputs[2 * 16], targets[2 * 16];
  for (int i = 0; i < 32; i++) {
    inputs[i] = (i * 37 + 11) % 250;
    targets[i] = (i * 53 + 7) % 250;
  }
  float la = -1, lb = -2;
  CHECK_EQ_INT(gy_gpt_forward(a, inputs, targets, 2, 16, 0.0f, &la), 0);
  CHECK_EQ_INT(gy_gpt_forward(b, inputs, targets, 2, 16, 0.0f, &lb), 0);
  CHECK_MSG(la == lb && la > 0.0f, "loss %.9g vs %.9g", la, lb);

  /* Truncated (inside the parameters, and inside the header). */
  write_all(bad, bytes, len - 4);
  rc = gy_llmc_read_config(bad, &rc_cfg, err, sizeof err);
  CHECK_EQ_INT(rc, GY_ECORRUPT);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "truncated"), "%s", err);
  CHECK_EQ_INT(gy_llmc_load(b, bad, err, sizeof err), GY_ECORRUPT);
  write_all(bad, bytes, 100);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "truncated"), "%s", err);
  write_all(bad, bytes, 0);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  /* Trailing bytes. */
  uint8_t *longer = malloc(len + 8);
  REQUIRE(longer);
  memcpy(longer, bytes, len);
  memset(longer + len, 0, 8);
  write_all(bad, longer, len + 8);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "trailing"), "%s", err);
  free(longer);

  /* Wrong magic; bf16 version; unknown version; nonsense sizes. */
  uint8_t *m = malloc(len);
  REQUIRE(m);
  memcpy(m, bytes, len);
  put_i32(m, 20240520); /* a token shard's magic */
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "magic"), "%s", err);
  CHECK_EQ_INT(gy_llmc_load(b, bad, err, sizeof err), GY_ECORRUPT);
  memcpy(m, bytes, len);
  put_i32(m + 4, 5);
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ENOTSUP);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "bf16"), "%s", err);
  put_i32(m + 4, 4);
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  memcpy(m, bytes, len);
  put_i32(m + 20, 5); /* NH = 5 does not divide C = 32 */
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strstr(err, bad) == err, "%s", err);
  memcpy(m, bytes, len);
  put_i32(m + 28, 100); /* Vp < V */
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  memcpy(m, bytes, len);
  put_i32(m + 16, -3); /* negative L */
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  memcpy(m, bytes, len);
  put_i32(m + 24, 0x7FFFFFFF); /* absurd C */
  write_all(bad, m, len);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ECORRUPT);
  free(m);

  /* Missing file. */
  snprintf(bad, sizeof bad, "%s/missing.bin", tmpdir);
  CHECK_EQ_INT(gy_llmc_read_config(bad, &rc_cfg, err, sizeof err), GY_ENOENT);
  CHECK(strstr(err, bad) == err);
  CHECK_EQ_INT(gy_llmc_load(b, bad, err, sizeof err), GY_ENOENT);

  /* Config mismatch: a model of another shape refuses the file and keeps its parameters. */
  gy_gpt_config_t cfg3 = cfg;
  cfg3.max_seq_len = 8;
  gy_gpt_t *c = NULL;
  REQUIRE(gy_gpt_create(&c, &cfg3, 1) == 0);
  gy_gpt_init_params(c, 5);
  float first = gy_gpt_params(c)[0];
  CHECK_EQ_INT(gy_llmc_load(c, path, err, sizeof err), GY_EMISMATCH);
  CHECK_MSG(strstr(err, path) == err && strstr(err, "maxT 8"), "%s", err);
  CHECK(gy_gpt_params(c)[0] == first);
  gy_gpt_destroy(c);

  /* qk_norm: cannot be saved (nor loaded into). */
  gy_gpt_config_t cfgq = cfg;
  cfgq.qk_norm = 1;
  REQUIRE(gy_gpt_create(&c, &cfgq, 1) == 0);
  gy_gpt_init_params(c, 5);
  snprintf(bad, sizeof bad, "%s/qk.bin", tmpdir);
  CHECK_EQ_INT(gy_llmc_save(c, bad, err, sizeof err), GY_ENOTSUP);
  CHECK_MSG(strstr(err, bad) == err && strstr(err, "qk_norm"), "%s", err);
  CHECK(access(bad, F_OK) != 0);
  CHECK_EQ_INT(gy_llmc_load(c, path, err, sizeof err), GY_EMISMATCH);
  gy_gpt_destroy(c);

  /* Saving into a folder that does not exist. */
  snprintf(bad, sizeof bad, "%s/no/such/model.bin", tmpdir);
  CHECK_EQ_INT(gy_llmc_save(a, bad, err, sizeof err), GY_EIO);
  CHECK_MSG(strstr(err, bad) == err, "%s", err);

  free(bytes);
  gy_gpt_destroy(a);
  gy_gpt_destroy(b);
  rm_tree(tmpdir);
  GY_TEST_END();
}
