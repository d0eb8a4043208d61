/* data_opts: what the run config says of the training data (channels, their shards and weights,
 * corruption injection for demos and tests) and the half-open id range of skip lists. Plain
 * types, shared by the run config (config/run_config.h) and the data loader (worker/data.h). */
#ifndef GY_CONFIG_DATA_OPTS_H
#define GY_CONFIG_DATA_OPTS_H

#include <stdint.h>

#define GY_MAX_CHANNELS 16
#define GY_CHANNEL_NAME_MAX 32

/* A half-open range of sample ids [first, last). */
typedef struct {
  uint64_t first, last; /* [first, last) */
} gy_range_t;

/* ---- corruption injection (demos and tests) ---- */
typedef enum {
  GY_CORRUPT_RANDOM_BYTES = 0, /* uniform random bytes: a loss jump */
  GY_CORRUPT_BINARY_NOISE = 1, /* binary-file-like bytes (many zeros, the rest random): a jump */
  GY_CORRUPT_REPEAT = 2,       /* one token repeated: a loss drop */
  GY_CORRUPT_EMPTY_LINES = 3,  /* nothing but newlines: a loss drop */
} gy_corrupt_kind_t;

typedef struct {
  int channel;    /* channel index, or -1 for any channel */
  uint64_t first; /* sample ids [first, last) */
  uint64_t last;
  gy_corrupt_kind_t kind;
  int token; /* GY_CORRUPT_REPEAT: the repeated token (default ' ') */
} gy_corrupt_t;

/* ---- channels ---- */
typedef struct {
  char name[GY_CHANNEL_NAME_MAX];
  double weight; /* mixing weight > 0 (relative) */
  int nfiles;
  char **files;   /* training shards, in order: the channel's token stream */
  char *val_file; /* held-out shard (may be NULL: no evaluation for this channel) */
  int shuffle;    /* 1: permute samples within an epoch (default); 0: sequential */
} gy_channel_opts_t;

typedef struct {
  int nchannels;
  gy_channel_opts_t *channels;
  int seq_len; /* T: a sample is T+1 consecutive tokens (inputs and shifted targets) */
  uint64_t seed;
  int vocab_size; /* tokens >= vocab_size in a shard are refused at open */
  int ncorrupt;
  gy_corrupt_t *corrupt;
  int val_sequences; /* held-out sequences per channel used by evaluation (default 200) */
} gy_data_opts_t;

#endif
