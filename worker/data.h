/* data: training channels, deterministic sample order, skip lists, corruption injection,
 * held-out sets. */
#ifndef GY_DATA_H
#define GY_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "config/data_opts.h"

/* ---- skip list: sorted, merged, half-open ranges of sample ids ---- */
typedef struct {
  gy_range_t *r;
  size_t n, cap;
} gy_skiplist_t;

void gy_skiplist_init(gy_skiplist_t *s);
void gy_skiplist_free(gy_skiplist_t *s);
/* Adds [first, last) (first < last), merging with overlapping or adjacent ranges. */
int gy_skiplist_add(gy_skiplist_t *s, uint64_t first, uint64_t last);
int gy_skiplist_contains(const gy_skiplist_t *s, uint64_t id);
/* The n-th (0-based) sample id that is not skipped. */
uint64_t gy_skiplist_map(const gy_skiplist_t *s, uint64_t n);
/* Total number of ids covered. */
uint64_t gy_skiplist_count(const gy_skiplist_t *s);

/* ---- corruption injection (demos and tests) ---- */
const char *gy_corrupt_kind_name(gy_corrupt_kind_t k);
/* Parses "random_bytes" | "binary_noise" | "repeat" | "empty_lines"; -1 if unknown. */
int gy_corrupt_kind_parse(const char *s);

/* ---- channels and the sampler ---- */
typedef struct gy_data gy_data_t;

/* Opens every shard and builds the sampler. The callee copies opts. Errors name the channel
 * and file in errmsg. */
int gy_data_create(gy_data_t **out, const gy_data_opts_t *opts, char *errmsg, size_t errlen);
void gy_data_destroy(gy_data_t *d);

int gy_data_nchannels(const gy_data_t *d);
const char *gy_data_channel_name(const gy_data_t *d, int ch);
int gy_data_channel_index(const gy_data_t *d, const char *name); /* -1 if absent */
uint64_t gy_data_channel_samples(const gy_data_t *d, int ch);    /* samples per epoch */

/* Channel of sample id (a pure function of the mixing weights). */
int gy_data_sample_channel(const gy_data_t *d, uint64_t id);
/* Tokens of sample id (T+1 of them, corruption applied), and its channel. A pure function of
 * (seed, weights, shards, id). */
void gy_data_sample(const gy_data_t *d, uint64_t id, uint16_t *tokens, int *channel);
/* Where sample id comes from: its channel, the epoch of that channel it falls in, and its
 * sample index within the channel's token stream (tokens [index*T, index*T + T + 1)). A pure
 * function of (seed, weights, shards, id); any output pointer may be NULL. */
void gy_data_sample_locate(const gy_data_t *d, uint64_t id, int *channel, uint64_t *epoch,
                           uint64_t *index);
/* Number of training tokens in channel ch (all its shards). */
uint64_t gy_data_channel_tokens(const gy_data_t *d, int ch);
/* ---- quarantine: regions of a channel's token stream never trained on again ---- */
typedef struct {
  int channel;
  uint64_t first, last; /* stream tokens [first, last) */
} gy_qregion_t;
/* Sorted by (channel, first), merged: never overlapping nor touching within a channel. */
typedef struct {
  gy_qregion_t *r;
  size_t n, cap;
} gy_quarantine_t;

void gy_quarantine_init(gy_quarantine_t *q);
void gy_quarantine_free(gy_quarantine_t *q);
/* Adds [first, last) of channel's stream (merging). Returns 1 when the set grew, 0 when it held
 * the range already, GY_EINVAL (empty range) or GY_ENOMEM (set unchanged). */
int gy_quarantine_add(gy_quarantine_t *q, int channel, uint64_t first, uint64_t last);
/* Removes [first, last) of channel's stream (splitting ranges). Returns 1 when the set changed,
 * 0 when not, GY_ENOMEM. */
int gy_quarantine_remove(gy_quarantine_t *q, int channel, uint64_t first, uint64_t last);
/* 1 when [first, last) of channel's stream overlaps a quarantined range. */
int gy_quarantine_overlaps(const gy_quarantine_t *q, int channel, uint64_t first, uint64_t last);

/* gy_data_sample with quarantine q (NULL: none): a sample whose tokens overlap a quarantined
 * range is replaced by the next sample of its channel's order in that epoch that does not (so
 * ids, batch shapes and every skip keep their meaning). *used: the sample index whose tokens
 * were read (may be NULL). A pure function of (seed, weights, shards, q, id). */
void gy_data_sample_q(const gy_data_t *d, const gy_quarantine_t *q, uint64_t id, uint16_t *tokens,
                      int *channel, uint64_t *used);

/* The document of channel ch holding stream token `stream`, from gyro-prep's index: its ordinal
 * into *doc and its stream tokens [*first, *last). GY_ENOENT when the channel has no (valid)
 * index. */
int gy_data_document(const gy_data_t *d, int ch, uint64_t stream, int64_t *doc, uint64_t *first,
                     uint64_t *last);

/* The shard file of channel ch holding stream token `stream` and the offset in it; GY_ERANGE. */
int gy_data_file_offset(const gy_data_t *d, int ch, uint64_t stream, int *file, uint64_t *offset);
/* The path of shard file `file` of channel ch (NULL when out of range), and its tokens. */
const char *gy_data_file_path(const gy_data_t *d, int ch, int file);
uint64_t gy_data_file_tokens(const gy_data_t *d, int ch, int file);

/* Ids of the B samples that step consumes on data-parallel rank (of world ranks): the
 * unskipped ids number (step*world + rank)*B ... +B-1, in order. */
void gy_data_batch_ids(const gy_data_t *d, const gy_skiplist_t *skip, uint64_t step, int rank,
                       int world, int B, uint64_t *ids);

/* Held-out set: number of sequences of channel ch (min(val_sequences, what the file holds)),
 * and sequence i (T+1 tokens). */
int gy_data_val_count(const gy_data_t *d, int ch);
void gy_data_val_sample(const gy_data_t *d, int ch, int i, uint16_t *tokens);
/* Entropy (nats/token) of the channel's unigram token distribution over its training shards:
 * the loss of the best model that ignores context. */
double gy_data_unigram_nats(const gy_data_t *d, int ch);

#endif
