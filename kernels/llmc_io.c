/*
 * llmc_io: llm.c's GPT-2 model file, so a gyro model can start from (or be handed to) llm.c.
 *
 * API, in order: gy_llmc_read_config (header only, plus the file-size check),
 * gy_llmc_load (parameters into a model of the same config), gy_llmc_save.
 *
 * Format (llm.c train_gpt2.c, gpt2_build_from_checkpoint): a header of 256 little-endian int32
 * ([0] magic 20240326, [1] version, [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp, the rest 0),
 * then the 16 parameter tensors in llm.c's order (wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw,
 * attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb), back to back. Version 3 stores
 * fp32 and is the one read and written here; version 5 (bf16) is refused with GY_ENOTSUP.
 *
 * Invariants: gy_gpt's tensors 0..15 are exactly llm.c's, with the same shapes, so the file's
 * parameter bytes are those tensors' floats (gy_gpt_tensor_offset/size locate them). A file is
 * accepted only if its size is exactly header + parameters, which also bounds every read.
 * Floats are written in host order, which is llm.c's (little-endian); a big-endian build is
 * refused at compile time. Saving goes through a temporary file, fsync and rename, so a crash
 * never leaves a half-written model under the final name.
 */
#include "llmc_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fsutil.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llmc_io assumes a little-endian host (llm.c files store host-order floats)"
#endif

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)
#define LLMC_VERSION_BF16 5

static const char *errstr(int e, char *buf, size_t n) {
  return strerror_r(e, buf, n); /* GNU variant (_GNU_SOURCE): returns the message */
}

static int32_t get_i32(const uint8_t *p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24);
}

static void put_i32(uint8_t *p, int32_t v) {
  uint32_t u = (uint32_t)v;
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(u >> (8 * i));
}

/* Number of floats in llm.c's 16 tensors for cfg (whose sizes were bounded by the caller, so
 * this cannot overflow 64 bits). Mirrors llm.c's fill_in_parameter_sizes. */
static uint64_t llmc_num_params(const gy_gpt_config_t *c) {
  uint64_t L = (uint64_t)c->num_layers, C = (uint64_t)c->channels;
  uint64_t Vp = (uint64_t)c->padded_vocab_size, T = (uint64_t)c->max_seq_len;
  return Vp * C + T * C              /* wte, wpe */
         + 2 * L * C                 /* ln1w, ln1b */
         + L * 3 * C * C + L * 3 * C /* qkvw, qkvb */
         + L * C * C + L * C         /* attprojw, attprojb */
         + 2 * L * C                 /* ln2w, ln2b */
         + L * 4 * C * C + L * 4 * C /* fcw, fcb */
         + L * C * 4 * C + L * C     /* fcprojw, fcprojb */
         + 2 * C;                    /* lnfw, lnfb */
}

/* Opens path, validates its header and size, fills cfg. On success *fd_out is open (the caller
 * closes it). */
static int open_model(const char *path, gy_gpt_config_t *cfg, int *fd_out, char *errmsg,
                      size_t errlen) {
  char eb[128];
  uint8_t h[HEADER_BYTES];
  int rc = GY_ECORRUPT;
  *fd_out = -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    gy_errmsg(errmsg, errlen, "%s: cannot open llm.c model file: %s", path,
              errstr(e, eb, sizeof eb));
    return e == ENOENT ? GY_ENOENT : GY_EIO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "%s: not a readable regular file", path);
    goto err;
  }
  if (st.st_size < HEADER_BYTES) {
    gy_errmsg(errmsg, errlen, "%s: truncated llm.c model file: %lld bytes, the header alone is %d",
              path, (long long)st.st_size, HEADER_BYTES);
    goto err;
  }
  ssize_t n;
  do {
    n = pread(fd, h, sizeof h, 0);
  } while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof h) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "%s: cannot read the %d-byte header: %s", path, HEADER_BYTES,
              n < 0 ? errstr(errno, eb, sizeof eb) : "short read");
    goto err;
  }
  int32_t magic = get_i32(h), version = get_i32(h + 4);
  if (magic != GY_LLMC_MODEL_MAGIC) {
    gy_errmsg(errmsg, errlen, "%s: bad magic %d (an llm.c GPT-2 model file starts with %d)", path,
              magic, GY_LLMC_MODEL_MAGIC);
    goto err;
  }
  if (version == LLMC_VERSION_BF16) {
    rc = GY_ENOTSUP;
    gy_errmsg(errmsg, errlen,
              "%s: llm.c model version 5 (bf16 parameters) is not supported; gyro "
              "reads version %d (fp32)",
              path, GY_LLMC_MODEL_VERSION);
    goto err;
  }
  if (version != GY_LLMC_MODEL_VERSION) {
    gy_errmsg(errmsg, errlen, "%s: unknown llm.c model version %d (expected %d, fp32)", path,
              version, GY_LLMC_MODEL_VERSION);
    goto err;
  }
  gy_gpt_config_t c = {
      .max_seq_len = get_i32(h + 8),
      .vocab_size = get_i32(h + 12),
      .num_layers = get_i32(h + 16),
      .num_heads = get_i32(h + 20),
      .channels = get_i32(h + 24),
      .padded_vocab_size = get_i32(h + 28),
      .qk_norm = 0,
  };
  /* Bounds far above any GPT-2 size, low enough that the parameter count fits 64 bits. */
  const char *why = NULL;
  if (c.max_seq_len < 1 || c.max_seq_len > (1 << 20))
    why = "maxT not in [1, 2^20]";
  else if (c.vocab_size < 1 || c.vocab_size > (1 << 24))
    why = "vocab_size not in [1, 2^24]";
  else if (c.num_layers < 1 || c.num_layers > 4096)
    why = "num_layers not in [1, 4096]";
  else if (c.channels < 1 || c.channels > (1 << 16))
    why = "channels not in [1, 2^16]";
  else if (c.num_heads < 1 || c.channels % c.num_heads)
    why = "num_heads does not divide channels";
  else if (c.padded_vocab_size < c.vocab_size || c.padded_vocab_size > (1 << 24))
    why = "padded_vocab_size not in [vocab_size, 2^24]";
  if (why) {
    gy_errmsg(errmsg, errlen,
              "%s: bad llm.c model header (maxT %d, V %d, L %d, NH %d, C %d, Vp %d): "
              "%s",
              path, c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels,
              c.padded_vocab_size, why);
    goto err;
  }
  char why2[256];
  if (gy_gpt_config_check(&c, why2, sizeof why2) != 0) {
    rc = GY_ENOTSUP;
    gy_errmsg(errmsg, errlen, "%s: llm.c model not usable by gyro: %s", path, why2);
    goto err;
  }
  uint64_t want = (uint64_t)HEADER_BYTES + 4 * llmc_num_params(&c);
  uint64_t have = (uint64_t)st.st_size;
  if (have < want) {
    gy_errmsg(errmsg, errlen,
              "%s: truncated llm.c model file: expected %llu bytes (header + %llu "
              "fp32 parameters), found %llu",
              path, (unsigned long long)want, (unsigned long long)llmc_num_params(&c),
              (unsigned long long)have);
    goto err;
  }
  if (have > want) {
    gy_errmsg(errmsg, errlen,
              "%s: %llu trailing bytes after the expected %llu (header + %llu fp32 "
              "parameters)",
              path, (unsigned long long)(have - want), (unsigned long long)want,
              (unsigned long long)llmc_num_params(&c));
    goto err;
  }
  *cfg = c;
  *fd_out = fd;
  return 0;

err:
  close(fd);
  return rc;
}

int gy_llmc_read_config(const char *path, gy_gpt_config_t *cfg, char *errmsg, size_t errlen) {
  if (!path || !cfg) return GY_EINVAL;
  int fd;
  int rc = open_model(path, cfg, &fd, errmsg, errlen);
  if (rc == 0) close(fd);
  return rc;
}

int gy_llmc_load(gy_gpt_t *m, const char *path, char *errmsg, size_t errlen) {
  if (!m || !path) return GY_EINVAL;
  char eb[128];
  gy_gpt_config_t fc;
  int fd, rc = open_model(path, &fc, &fd, errmsg, errlen);
  if (rc != 0) return rc;
  const gy_gpt_config_t *mc = gy_gpt_config(m);
  if (mc->tp_size > 1) {
    close(fd);
    gy_errmsg(errmsg, errlen,
              "%s: cannot load an llm.c file into a tensor-parallel shard (load it at tp 1)", path);
    return GY_ENOTSUP;
  }
  if (mc->qk_norm || mc->max_seq_len != fc.max_seq_len || mc->vocab_size != fc.vocab_size ||
      mc->padded_vocab_size != fc.padded_vocab_size || mc->num_layers != fc.num_layers ||
      mc->num_heads != fc.num_heads || mc->channels != fc.channels) {
    rc = GY_EMISMATCH;
    gy_errmsg(errmsg, errlen,
              "%s: model config differs from the file's: model (maxT %d, V %d, Vp "
              "%d, L %d, NH %d, C %d%s) vs file (maxT %d, V %d, Vp %d, L %d, NH %d, C %d)",
              path, mc->max_seq_len, mc->vocab_size, mc->padded_vocab_size, mc->num_layers,
              mc->num_heads, mc->channels, mc->qk_norm ? ", qk_norm" : "", fc.max_seq_len,
              fc.vocab_size, fc.padded_vocab_size, fc.num_layers, fc.num_heads, fc.channels);
    goto out;
  }
  float *params = gy_gpt_params(m);
  off_t pos = HEADER_BYTES;
  for (int i = 0; i < GY_GPT_LLMC_TENSORS; i++) {
    uint8_t *dst = (uint8_t *)(params + gy_gpt_tensor_offset(m, i));
    size_t left = gy_gpt_tensor_size(m, i) * sizeof(float);
    while (left > 0) {
      ssize_t n = pread(fd, dst, left, pos);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        rc = GY_EIO;
        gy_errmsg(errmsg, errlen, "%s: reading tensor %s failed: %s", path, gy_gpt_tensor_name(i),
                  n < 0 ? errstr(errno, eb, sizeof eb) : "unexpected end of file");
        goto out;
      }
      dst += n;
      left -= (size_t)n;
      pos += n;
    }
  }
  /* The size check in open_model and the config equality make this hold; a gy_gpt whose
   * tensors 0..15 stopped matching llm.c's would break it. */
  if ((uint64_t)pos != (uint64_t)HEADER_BYTES + 4 * llmc_num_params(&fc)) {
    rc = GY_EMISMATCH;
    gy_errmsg(errmsg, errlen, "%s: gyro's tensor layout does not match llm.c's", path);
  }
out:
  close(fd);
  return rc;
}

int gy_llmc_save(gy_gpt_t *m, const char *path, char *errmsg, size_t errlen) {
  if (!m || !path || !*path) return GY_EINVAL;
  const gy_gpt_config_t *c = gy_gpt_config(m);
  if (c->tp_size > 1) {
    gy_errmsg(errmsg, errlen, "%s: cannot save a tensor-parallel shard as an llm.c file", path);
    return GY_ENOTSUP;
  }
  if (c->qk_norm) {
    gy_errmsg(errmsg, errlen,
              "%s: cannot save a qk_norm model as an llm.c file (llm.c has no "
              "query/key norm tensors)",
              path);
    return GY_ENOTSUP;
  }
  uint8_t h[HEADER_BYTES];
  memset(h, 0, sizeof h);
  put_i32(h, GY_LLMC_MODEL_MAGIC);
  put_i32(h + 4, GY_LLMC_MODEL_VERSION);
  put_i32(h + 8, c->max_seq_len);
  put_i32(h + 12, c->vocab_size);
  put_i32(h + 16, c->num_layers);
  put_i32(h + 20, c->num_heads);
  put_i32(h + 24, c->channels);
  put_i32(h + 28, c->padded_vocab_size);

  struct iovec iov[1 + GY_GPT_LLMC_TENSORS];
  const float *params = gy_gpt_params(m);
  iov[0] = (struct iovec){.iov_base = h, .iov_len = sizeof h};
  for (int i = 0; i < GY_GPT_LLMC_TENSORS; i++)
    iov[1 + i] = (struct iovec){.iov_base = (void *)(params + gy_gpt_tensor_offset(m, i)),
                                .iov_len = gy_gpt_tensor_size(m, i) * sizeof(float)};
  return gy_write_file_atomic(path, iov, 1 + GY_GPT_LLMC_TENSORS, errmsg, errlen);
}
