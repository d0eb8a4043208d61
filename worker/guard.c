/*
 * guard: the per-sample guard (tier 1 of data repair).
 *
 * API, in order: gy_guard_stat_name, gy_guard_default, gy_guard_check, gy_guard_content,
 * gy_guard_reason, gy_guard_create / gy_guard_destroy / gy_guard_set_opts / gy_guard_opts,
 * gy_guard_judge, gy_guard_seen, gy_guard_save / gy_guard_load / gy_guard_reset.
 *
 * Each channel keeps a ring of the figures (loss and content statistics) of its last `window`
 * kept samples. A batch is judged in two passes: first every sample against the medians and MADs
 * of the rings as they were before the batch (computed once per channel and statistic), then the
 * kept samples enter the rings in batch order. So a verdict is a pure function of the state and
 * the batch, and one bad sample in a batch cannot shield another. Masked samples never enter a
 * ring: a run of junk cannot become the baseline. Each rank of a data-parallel gang judges its
 * own samples with its own state (the state is per rank, saved in the rank's checkpoint).
 *
 * Why robust statistics: per-sample losses of clean text have heavy tails (tables of numbers,
 * hexadecimal constants), so a mean and standard deviation would either flag clean samples or,
 * once junk entered them, none. The median and the MAD ignore both. Floors keep a channel whose
 * figures barely vary (a share that is almost always 0) from firing on a tiny difference.
 *
 * Content statistics are cheap (one pass over T + 1 tokens): the entropy of the token histogram
 * (a run of one token or of newlines has none, random bytes have the most), the share of tokens
 * inside periodic spans (spans mostly of blanks excepted: indentation and aligned columns), and for
 * a byte vocabulary the shares of non-text bytes (control bytes other than tab, newline, carriage
 * return and form feed, and bytes that break UTF-8) and of bytes >= 0x80 (text of another script).
 *
 * State blob (little-endian): "GYGUARD1", uint32 nchannels, uint32 window, uint32 nstats, then
 * per channel uint64 seen, uint32 count, uint32 reserved, and `count` rows of nstats float32,
 * oldest first.
 */
#include "worker/guard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/le.h"
#include "common/utf8.h"

/* ---- content statistics ---- */

/* Length of the UTF-8 sequence at the byte tokens p[0..n) (gy_utf8_seq), 0 when it is broken.
 * A sequence cut by the sample's end is not broken (the sample is a window of a stream): a
 * multi-byte lead followed only by continuation bytes up to the end counts. */
static int utf8_len(const uint16_t *p, int n) {
  unsigned char b[4];
  int m = n < 4 ? n : 4;
  for (int i = 0; i < m; i++)
    b[i] = (unsigned char)p[i];
  int len = (int)gy_utf8_seq(b, (size_t)m, NULL);
  if (len || m == 4 || p[0] < 0xc2 || p[0] > 0xf4) return len;
  for (int i = 1; i < m; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  return m;
}

static int is_name(unsigned c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == ':';
}

/* Bytes of markup in n byte tokens: closing tags (</name>), tags with an attribute (<name ...
 * x="...">) and character entities (&lt; &#123;). An include (<stdio.h>) or a comparison is not
 * markup: what looks like a leftover of a web page is. */
static int markup_bytes(const uint16_t *t, int n) {
  int count = 0;
  for (int i = 0; i < n;) {
    if (t[i] == '<') {
      int j = i + 1, close = j < n && t[j] == '/', attr = 0;
      if (close) j++;
      int name = j;
      while (j < n && is_name(t[j]))
        j++;
      if (j > name) {
        int k = j;
        for (; k < n && k - i < 256 && t[k] != '>' && t[k] != '<' && t[k] != '\n'; k++)
          if (t[k] == '=' && k + 1 < n && (t[k + 1] == '"' || t[k + 1] == '\'')) attr = 1;
        /* a tag cut by the sample's end counts as far as it goes */
        if ((close || attr) && (k >= n || t[k] == '>')) {
          int end = k < n ? k + 1 : n;
          count += end - i;
          i = end;
          continue;
        }
      }
    } else if (t[i] == '&') {
      int j = i + 1;
      if (j < n && t[j] == '#') j++;
      int start = j;
      while (j < n && j - i < 10 && is_name(t[j]))
        j++;
      if (j > start && j < n && t[j] == ';') {
        count += j + 1 - i;
        i = j + 1;
        continue;
      }
    }
    i++;
  }
  return count;
}

void gy_guard_content(const uint16_t *tok, int n, int vocab, float stats[GY_GSTAT_COUNT]) {
  for (int s = 0; s < GY_GSTAT_COUNT; s++)
    if (s != GY_GSTAT_LOSS) stats[s] = 0;
  if (n <= 0) return;
  /* entropy of the histogram of the tokens other than blanks (indentation and aligned columns
   * carry no information, but are how code looks): sort a copy (n is small) and count runs */
  uint16_t buf[4097];
  uint16_t *v = n <= 4096 ? buf : malloc(sizeof(uint16_t) * (size_t)n);
  if (v) {
    int nb = 0;
    for (int i = 0; i < n; i++)
      if (tok[i] != ' ' && tok[i] != '\t') v[nb++] = tok[i];
    /* insertion sort is fine for a few hundred tokens */
    for (int i = 1; i < nb; i++) {
      uint16_t x = v[i];
      int j = i - 1;
      while (j >= 0 && v[j] > x) {
        v[j + 1] = v[j];
        j--;
      }
      v[j + 1] = x;
    }
    double h = 0;
    for (int i = 0; i < nb;) {
      int j = i;
      while (j < nb && v[j] == v[i])
        j++;
      double p = (double)(j - i) / nb;
      h -= p * log2(p);
      i = j;
    }
    stats[GY_GSTAT_ENTROPY] = (float)h;
    if (v != buf) free(v);
  }
  /* periodic spans: a run where tok[i] == tok[i - p] for at least max(8, 2p) positions marks
   * the run and the period before it */
  uint8_t mark[4097];
  uint8_t *m = n <= 4096 ? mark : calloc((size_t)n, 1);
  if (m) {
    memset(m, 0, (size_t)n);
    for (int p = 1; p <= 16 && p < n; p++) {
      int need = 2 * p > 8 ? 2 * p : 8;
      int run = 0;
      for (int i = p; i <= n; i++) {
        if (i < n && tok[i] == tok[i - p]) {
          run++;
          continue;
        }
        /* a run counts when enough of it is not blank: runs of blanks are indentation and
         * aligned columns, how code and tables look */
        if (run >= need) {
          int nonblank = 0;
          for (int k = i - run - p; k < i; k++)
            nonblank += tok[k] != ' ' && tok[k] != '\t';
          if (nonblank >= need)
            for (int k = i - run - p; k < i; k++)
              m[k] = 1;
        }
        run = 0;
      }
    }
    int c = 0;
    for (int i = 0; i < n; i++)
      c += m[i];
    stats[GY_GSTAT_REPEAT] = (float)c / n;
    if (m != mark) free(m);
  }
  if (vocab != 256) return;
  int bad = 0, high = 0;
  for (int i = 0; i < n;) {
    unsigned c = tok[i];
    if (c >= 0x80) {
      int len = utf8_len(tok + i, n - i);
      if (!len) {
        bad++, high++, i++;
        continue;
      }
      high += len;
      i += len;
      continue;
    }
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f) bad++;
    i++;
  }
  stats[GY_GSTAT_NONTEXT] = (float)bad / n;
  stats[GY_GSTAT_HIGHBYTE] = (float)high / n;
  stats[GY_GSTAT_MARKUP] = (float)markup_bytes(tok, n) / n;
}

void gy_guard_reason(const gy_guard_verdict_t *v, char *buf, size_t len) {
  if (!v->masked)
    snprintf(buf, len, "%s", "");
  else if (v->nonfinite)
    snprintf(buf, len, "nonfinite");
  else
    snprintf(buf, len, "%s_%s", gy_guard_stat_name(v->stat), v->high ? "high" : "low");
}

/* ---- the state ---- */

typedef struct {
  float *rows;   /* window x GY_GSTAT_COUNT, a ring */
  int count;     /* rows held (<= window) */
  int head;      /* next row written */
  uint64_t seen; /* kept samples ever entered */
} ring_t;

struct gy_guard {
  gy_guard_opts_t o;
  int nch;
  ring_t *ch;
};

int gy_guard_create(gy_guard_t **out, const gy_guard_opts_t *opts, int nchannels) {
  *out = NULL;
  char err[128];
  if (nchannels < 1 || gy_guard_check(opts, err, sizeof(err))) return GY_EINVAL;
  gy_guard_t *g = calloc(1, sizeof(*g));
  if (!g) return GY_ENOMEM;
  g->o = *opts;
  g->nch = nchannels;
  g->ch = calloc((size_t)nchannels, sizeof(ring_t));
  if (!g->ch) goto err;
  for (int c = 0; c < nchannels; c++)
    if (!(g->ch[c].rows = calloc((size_t)GY_GUARD_MAX_WINDOW * GY_GSTAT_COUNT, sizeof(float))))
      goto err;
  *out = g;
  return 0;
err:
  gy_guard_destroy(g);
  return GY_ENOMEM;
}

void gy_guard_destroy(gy_guard_t *g) {
  if (!g) return;
  if (g->ch)
    for (int c = 0; c < g->nch; c++)
      free(g->ch[c].rows);
  free(g->ch);
  free(g);
}

/* Row i (0 = oldest) of ring r of window w. */
static float *row(ring_t *r, int w, int i) {
  int start = (r->head - r->count + w) % w;
  return r->rows + (size_t)((start + i) % w) * GY_GSTAT_COUNT;
}

/* Re-packs every ring oldest first at index 0 for window w_new, keeping the newest rows. */
static void repack(gy_guard_t *g, int w_old, int w_new) {
  for (int c = 0; c < g->nch; c++) {
    ring_t *r = &g->ch[c];
    int keep = r->count < w_new ? r->count : w_new;
    float *copy = malloc(sizeof(float) * (size_t)(keep ? keep : 1) * GY_GSTAT_COUNT);
    if (!copy) { /* out of memory: start this channel afresh rather than keep a torn ring */
      r->count = r->head = 0;
      continue;
    }
    for (int i = 0; i < keep; i++)
      memcpy(copy + (size_t)i * GY_GSTAT_COUNT, row(r, w_old, r->count - keep + i),
             sizeof(float) * GY_GSTAT_COUNT);
    memcpy(r->rows, copy, sizeof(float) * (size_t)keep * GY_GSTAT_COUNT);
    free(copy);
    r->count = keep;
    r->head = keep % w_new;
  }
}

int gy_guard_set_opts(gy_guard_t *g, const gy_guard_opts_t *opts) {
  char err[128];
  if (gy_guard_check(opts, err, sizeof(err))) return GY_EINVAL;
  if (opts->window != g->o.window) repack(g, g->o.window, opts->window);
  g->o = *opts;
  return 0;
}

const gy_guard_opts_t *gy_guard_opts(const gy_guard_t *g) {
  return &g->o;
}

uint64_t gy_guard_seen(const gy_guard_t *g, int channel) {
  return channel >= 0 && channel < g->nch ? g->ch[channel].seen : 0;
}

void gy_guard_reset(gy_guard_t *g) {
  for (int c = 0; c < g->nch; c++)
    g->ch[c].count = g->ch[c].head = 0, g->ch[c].seen = 0;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static float median_of(float *v, int n) {
  qsort(v, (size_t)n, sizeof(float), cmp_float);
  return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* The baseline of channel c: each figure's median and threshold over its ring (scratch holds
 * window floats). */
static void baseline(const gy_guard_t *g, int c, float *scratch, float *med, float *thr) {
  const ring_t *r = &g->ch[c];
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    for (int k = 0; k < r->count; k++)
      scratch[k] = row((ring_t *)r, g->o.window, k)[s];
    med[s] = median_of(scratch, r->count);
    for (int k = 0; k < r->count; k++)
      scratch[k] = fabsf(scratch[k] - med[s]);
    float mad = median_of(scratch, r->count);
    double t = g->o.rule[s].z * 1.4826 * mad;
    thr[s] = (float)(t > g->o.rule[s].floor ? t : g->o.rule[s].floor);
  }
}

/* The first rule (from stat `from` on) that fires for figures x, into *v; 0 when none. */
static int fires(const gy_guard_t *g, const float *x, int from, const float *med, const float *thr,
                 gy_guard_verdict_t *v) {
  for (int s = from; s < GY_GSTAT_COUNT; s++) {
    const gy_guard_rule_t *ru = &g->o.rule[s];
    if (ru->z <= 0) continue;
    int hi = ru->high && x[s] > med[s] + thr[s];
    int lo = ru->low && x[s] < med[s] - thr[s];
    if (hi || lo) {
      *v = (gy_guard_verdict_t){
          .masked = 1, .stat = s, .high = hi, .median = med[s], .threshold = thr[s]};
      return 1;
    }
  }
  return 0;
}

int gy_guard_content_fires(const gy_guard_t *g, int channel, const float stats[GY_GSTAT_COUNT]) {
  if (!g->o.enabled || channel < 0 || channel >= g->nch) return -1;
  if (g->ch[channel].count < g->o.warmup) return -1;
  float med[GY_GSTAT_COUNT], thr[GY_GSTAT_COUNT];
  float *scratch = malloc(sizeof(float) * (size_t)g->o.window);
  if (!scratch) return -1;
  baseline(g, channel, scratch, med, thr);
  free(scratch);
  gy_guard_verdict_t v;
  return fires(g, stats, GY_GSTAT_LOSS + 1, med, thr, &v) ? v.stat : -1;
}

void gy_guard_judge(gy_guard_t *g, int n, const int *channels, const float (*stats)[GY_GSTAT_COUNT],
                    gy_guard_verdict_t *out) {
  /* the baseline of every channel and statistic, before the batch */
  float med[GY_GSTAT_COUNT], thr[GY_GSTAT_COUNT];
  float *scratch = malloc(sizeof(float) * (size_t)g->o.window);
  for (int i = 0; i < n; i++) {
    gy_guard_verdict_t *v = &out[i];
    memset(v, 0, sizeof(*v));
    v->stat = -1;
    if (!isfinite(stats[i][GY_GSTAT_LOSS])) {
      v->masked = g->o.enabled;
      v->nonfinite = 1;
      continue;
    }
  }
  /* channels in order, so each baseline is computed once */
  for (int c = 0; c < g->nch && scratch; c++) {
    ring_t *r = &g->ch[c];
    if (!g->o.enabled || r->count < g->o.warmup) continue;
    int have_base = 0;
    for (int i = 0; i < n; i++) {
      if (channels[i] != c || out[i].nonfinite) continue;
      if (!have_base) {
        baseline(g, c, scratch, med, thr);
        have_base = 1;
      }
      /* the loss rule waits for a full window: early in a run the loss falls fast, and a
       * baseline of the first samples lies above every sample that follows */
      fires(g, stats[i], r->count < g->o.window ? GY_GSTAT_LOSS + 1 : 0, med, thr, &out[i]);
    }
  }
  free(scratch);
  /* the kept samples enter their rings, in batch order */
  for (int i = 0; i < n; i++) {
    if (out[i].masked || out[i].nonfinite) continue;
    int c = channels[i];
    if (c < 0 || c >= g->nch) continue;
    ring_t *r = &g->ch[c];
    memcpy(r->rows + (size_t)r->head * GY_GSTAT_COUNT, stats[i], sizeof(float) * GY_GSTAT_COUNT);
    r->head = (r->head + 1) % g->o.window;
    if (r->count < g->o.window) r->count++;
    r->seen++;
  }
}

/* ---- the state as bytes ---- */

#define MAGIC "GYGUARD1"

int gy_guard_save(const gy_guard_t *g, uint8_t **out, size_t *len) {
  size_t n = 8 + 12;
  for (int c = 0; c < g->nch; c++)
    n += 16 + (size_t)g->ch[c].count * GY_GSTAT_COUNT * 4;
  uint8_t *b = malloc(n), *p = b;
  if (!b) return GY_ENOMEM;
  memcpy(p, MAGIC, 8);
  p += 8;
  gy_le_put32(p, (uint32_t)g->nch);
  p += 4;
  gy_le_put32(p, (uint32_t)g->o.window);
  p += 4;
  gy_le_put32(p, GY_GSTAT_COUNT);
  p += 4;
  for (int c = 0; c < g->nch; c++) {
    ring_t *r = &g->ch[c];
    gy_le_put64(p, r->seen);
    p += 8;
    gy_le_put32(p, (uint32_t)r->count);
    p += 4;
    gy_le_put32(p, 0);
    p += 4;
    for (int k = 0; k < r->count; k++) {
      const float *x = row(r, g->o.window, k);
      for (int s = 0; s < GY_GSTAT_COUNT; s++) {
        uint32_t u;
        memcpy(&u, &x[s], 4);
        gy_le_put32(p, u);
        p += 4;
      }
    }
  }
  *out = b;
  *len = n;
  return 0;
}

int gy_guard_load(gy_guard_t *g, const uint8_t *d, size_t len, char *errmsg, size_t errlen) {
  if (len < 20 || memcmp(d, MAGIC, 8)) {
    snprintf(errmsg, errlen, "guard state: bad magic or too short (%zu bytes)", len);
    return GY_ECORRUPT;
  }
  uint32_t nch = gy_le_get32(d + 8), win = gy_le_get32(d + 12), ns = gy_le_get32(d + 16);
  if ((int)nch != g->nch || ns != GY_GSTAT_COUNT || win < 1 || win > GY_GUARD_MAX_WINDOW) {
    snprintf(errmsg, errlen,
             "guard state: %u channels, window %u, %u figures; this run has %d channels and %d "
             "figures",
             nch, win, ns, g->nch, GY_GSTAT_COUNT);
    return GY_ECORRUPT;
  }
  /* validate the whole blob before touching the state */
  size_t off = 20;
  for (uint32_t c = 0; c < nch; c++) {
    if (off + 16 > len) goto short_blob;
    uint32_t count = gy_le_get32(d + off + 8);
    if (count > win) {
      snprintf(errmsg, errlen, "guard state: channel %u holds %u rows of a window of %u", c, count,
               win);
      return GY_ECORRUPT;
    }
    off += 16 + (size_t)count * ns * 4;
    if (off > len) goto short_blob;
  }
  if (off != len) goto short_blob;
  off = 20;
  for (int c = 0; c < g->nch; c++) {
    ring_t *r = &g->ch[c];
    r->seen = gy_le_get64(d + off);
    uint32_t count = gy_le_get32(d + off + 8);
    off += 16;
    int keep = (int)count < g->o.window ? (int)count : g->o.window;
    size_t skip = (size_t)(count - (uint32_t)keep) * ns * 4;
    off += skip;
    for (int k = 0; k < keep; k++)
      for (int s = 0; s < GY_GSTAT_COUNT; s++) {
        uint32_t u = gy_le_get32(d + off);
        memcpy(&r->rows[(size_t)k * GY_GSTAT_COUNT + s], &u, 4);
        off += 4;
      }
    r->count = keep;
    r->head = keep % g->o.window;
  }
  return 0;
short_blob:
  snprintf(errmsg, errlen, "guard state: %zu bytes do not match the rows it declares", len);
  return GY_ECORRUPT;
}
