/*
 * model: the check of a GPT model's shape (config/model.h). Pure: no allocation, no I/O, so the
 * controller and gyroctl can check a run config without linking the kernels.
 */
#include "config/model.h"

#include <stdio.h>

#include "common/err.h"

int gy_gpt_config_check(const gy_gpt_config_t *c, char *errmsg, size_t errlen) {
  const char *why = NULL;
  if (c->num_layers < 1)
    why = "num_layers must be >= 1";
  else if (c->channels < 1)
    why = "channels must be >= 1";
  else if (c->num_heads < 1 || c->channels % c->num_heads)
    why = "num_heads must divide channels";
  else if (c->max_seq_len < 1)
    why = "max_seq_len must be >= 1";
  else if (c->vocab_size < 2 || c->vocab_size > 65536)
    why = "vocab_size must be in [2, 65536]";
  else if (c->padded_vocab_size < c->vocab_size)
    why = "padded_vocab_size must be >= vocab_size";
  else if (c->tp_size > 1 && c->num_heads % c->tp_size)
    why = "tp_size must divide num_heads";
  else if (c->tp_size > 1 && (c->tp_rank < 0 || c->tp_rank >= c->tp_size))
    why = "tp_rank must be in [0, tp_size)";
  if (why) {
    if (errmsg) snprintf(errmsg, errlen, "model config: %s", why);
    return GY_EINVAL;
  }
  return 0;
}
