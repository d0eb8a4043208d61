/* model: the shape of a GPT model (gy_gpt_config_t) and its check, shared by the run config
 * (config/run_config.h), the kernels that build the model and the checkpoints that record it. */
#ifndef GY_CONFIG_MODEL_H
#define GY_CONFIG_MODEL_H

#include <stddef.h>

typedef struct {
  int max_seq_len;       /* T_max: rows of the position embedding */
  int vocab_size;        /* V: real vocabulary */
  int padded_vocab_size; /* Vp >= V: rows of the token embedding (llm.c pads to 128) */
  int num_layers;        /* L */
  int num_heads;         /* NH, divides channels */
  int channels;          /* C */
  int qk_norm;           /* 1: LayerNorm (no bias) on each head's queries and keys */
  int tp_size;           /* tensor-parallel group size (0 or 1: no tensor parallelism) */
  int tp_rank;           /* this model's rank in the tensor-parallel group */
} gy_gpt_config_t;

/* Validates cfg; returns 0 or GY_EINVAL with a reason in errmsg. */
int gy_gpt_config_check(const gy_gpt_config_t *cfg, char *errmsg, size_t errlen);

#endif
