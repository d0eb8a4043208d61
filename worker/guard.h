/* guard: the per-sample guard (tier 1 of data repair, DESIGN.md §12). After the forward pass and
 * before the backward pass, every sample of a rank's batch is judged against its channel's recent
 * samples: a sample that is an outlier for its channel on its loss or on a cheap statistic of its
 * content is masked out of the loss, so it never produces a gradient. Pure: no I/O, no clock, no
 * randomness; the state (each channel's recent figures) travels in the checkpoint, so a replay
 * decides the same way. */
#ifndef GY_GUARD_H
#define GY_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "policies/guard_policy.h"

/* The content statistics of n tokens (the sample's T + 1). vocab: the tokenizer's size (the byte
 * statistics need 256). Writes every stat except LOSS. */
void gy_guard_content(const uint16_t *tokens, int n, int vocab, float stats[GY_GSTAT_COUNT]);

/* A verdict on one sample. */
typedef struct {
  int masked;              /* 1: out of the loss */
  int stat;                /* the rule that fired first (in stat order), -1 when kept */
  int high;                /* 1: above the median, 0: below */
  int nonfinite;           /* the loss was NaN or Inf (masked whatever the rules say) */
  float median, threshold; /* of that stat in the sample's channel (0 when none fired) */
} gy_guard_verdict_t;

/* "loss_high", "repeat_high", "nonfinite", ...; "" when kept. */
void gy_guard_reason(const gy_guard_verdict_t *v, char *buf, size_t len);

typedef struct gy_guard gy_guard_t;

int gy_guard_create(gy_guard_t **out, const gy_guard_opts_t *opts, int nchannels);
void gy_guard_destroy(gy_guard_t *g); /* NULL is a no-op */
/* New options (the recent figures are kept; a smaller window keeps the newest). */
int gy_guard_set_opts(gy_guard_t *g, const gy_guard_opts_t *opts);
const gy_guard_opts_t *gy_guard_opts(const gy_guard_t *g);

/* Judges a batch: n samples, their channels and figures (stats[i][GY_GSTAT_COUNT]). Every sample
 * is judged against the state before the batch (the order of the batch does not matter), then
 * the kept samples' figures enter their channels' windows. Writes n verdicts. */
void gy_guard_judge(gy_guard_t *g, int n, const int *channels, const float (*stats)[GY_GSTAT_COUNT],
                    gy_guard_verdict_t *out);

/* The first content rule (every figure but the loss) that fires for figures `stats` of a window
 * of channel's stream against the channel's current baseline, or -1 (none, or the guard is off
 * or still warming up). The state does not change: what a quarantine uses to find how far a run
 * of junk around a masked sample extends. */
int gy_guard_content_fires(const gy_guard_t *g, int channel, const float stats[GY_GSTAT_COUNT]);

/* Kept samples seen per channel (for reports and tests). */
uint64_t gy_guard_seen(const gy_guard_t *g, int channel);

/* The state as bytes (for the checkpoint): malloc'ed into *out, its length into *len. */
int gy_guard_save(const gy_guard_t *g, uint8_t **out, size_t *len);
/* Restores a state saved by gy_guard_save (the options stay). A malformed blob is refused with
 * GY_ECORRUPT and errmsg; the state is unchanged. */
int gy_guard_load(gy_guard_t *g, const uint8_t *data, size_t len, char *errmsg, size_t errlen);
/* Forgets every channel's figures (a fresh start). */
void gy_guard_reset(gy_guard_t *g);

#endif
