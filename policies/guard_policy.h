/* guard_policy: the per-sample guard's settings (the `guard:` section of a policy file): which
 * figures of a sample are judged, the thresholds of each rule, the share of a step that may be
 * masked before the controller's ladder takes over, and the quarantine's extent. Plain values, no
 * I/O; the guard itself (worker/guard.h) runs on the workers. */
#ifndef GY_GUARD_POLICY_H
#define GY_GUARD_POLICY_H

#include <stddef.h>
#include <stdint.h>

/* XX(NAME, name, unit): the figures of one sample the guard judges, in this order. The content
 * statistics that need bytes (nontext, highbyte) exist only for a byte-level vocabulary (256);
 * with another tokenizer they are 0 and their rules never fire. */
#define GY_GUARD_STAT_MAP(XX)                                                                      \
  XX(LOSS, "loss", "nats")          /* mean cross-entropy over the sample's tokens */              \
  XX(ENTROPY, "entropy", "bits")    /* Shannon entropy of the sample's token histogram, blanks     \
                                       (space, tab) left out */                                    \
  XX(REPEAT, "repeat", "share")     /* share of tokens inside periodic spans (period <= 16) */     \
  XX(NONTEXT, "nontext", "share")   /* share of control bytes and bytes of broken UTF-8 */         \
  XX(HIGHBYTE, "highbyte", "share") /* share of bytes >= 0x80 (the script of the text) */          \
  XX(MARKUP, "markup", "share")     /* share of bytes in markup: closing tags, tags with           \
                                       attributes, character entities */

typedef enum {
#define GY_GUARD_STAT_ENUM(n, s, u) GY_GSTAT_##n,
  GY_GUARD_STAT_MAP(GY_GUARD_STAT_ENUM)
#undef GY_GUARD_STAT_ENUM
      GY_GSTAT_COUNT
} gy_guard_stat_t;

const char *gy_guard_stat_name(int s); /* "loss", ...; "?" when out of range */

/* One rule: a figure v of a sample fires when, with median m and MAD d of its channel's recent
 * kept samples and threshold = max(z * 1.4826 * d, floor), (high and v > m + threshold) or
 * (low and v < m - threshold). z == 0 turns the rule off. */
typedef struct {
  double z;     /* robust sigmas, >= 0 */
  double floor; /* absolute floor of the threshold, > 0 */
  int high, low;
} gy_guard_rule_t;

#define GY_GUARD_MAX_WINDOW 4096

typedef struct {
  int enabled; /* 0: nothing is masked (the figures are still measured and reported) */
  int window;  /* per channel: the figures of its last `window` kept samples, 8..4096 */
  int warmup;  /* kept samples of a channel before its content rules may fire, 1..window; the
                  loss rule waits for a full window (early in a run the loss falls fast) */
  gy_guard_rule_t rule[GY_GSTAT_COUNT];
  double max_step_share; /* the controller: a step that masks more than this share of its
                            samples is a spike the samples alone do not explain, (0, 1] */
  double budget;         /* the false-positive budget on clean data: the share of samples a
                            clean run may mask (documentation and benchmarks), [0, 1] */
  /* Quarantine by content: a masked sample's document (gyro-prep's index) is never trained
   * again when it holds at most quarantine_max_tokens tokens; otherwise, or without an index,
   * the sample's tokens widened by quarantine_margin on each side. 0 in `quarantine`: off. */
  int quarantine;
  uint64_t quarantine_max_tokens; /* 1..2^40 */
  uint64_t quarantine_margin;     /* 0..2^40 */
} gy_guard_opts_t;

/* The shipped default (identical to the `guard:` section of examples/policies/default.yaml). */
void gy_guard_default(gy_guard_opts_t *o);
/* 1 when every field of a and b is equal. */
int gy_guard_equal(const gy_guard_opts_t *a, const gy_guard_opts_t *b);
/* 0, or GY_ECONFIG with the field named in errmsg. */
int gy_guard_check(const gy_guard_opts_t *o, char *errmsg, size_t errlen);

#endif
