/* llmc_io: llm.c's GPT-2 model file (magic 20240326, version 3 = fp32), read and written. */
#ifndef GY_LLMC_IO_H
#define GY_LLMC_IO_H

#include <stddef.h>

#include "kernels/gpt.h"

#define GY_LLMC_MODEL_MAGIC 20240326
#define GY_LLMC_MODEL_VERSION 3

/* Reads the header of an llm.c model file into cfg (qk_norm = 0). */
int gy_llmc_read_config(const char *path, gy_gpt_config_t *cfg, char *errmsg, size_t errlen);
/* Loads the parameters of path into m, whose config must match the file's exactly. */
int gy_llmc_load(gy_gpt_t *m, const char *path, char *errmsg, size_t errlen);
/* Writes m's parameters as an llm.c model file (refused with GY_ENOTSUP when qk_norm is on:
 * llm.c has no such tensors). Written to a temporary file, fsynced, renamed. */
int gy_llmc_save(gy_gpt_t *m, const char *path, char *errmsg, size_t errlen);

#endif
