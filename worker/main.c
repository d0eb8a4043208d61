/*
 * gyro-worker: the worker process. Two modes on the same engine:
 *  - standalone (--standalone --config FILE): trains on the run config's channels and prints
 *    one JSON object per step on stdout (events and logs on stderr);
 *  - supervised (--controller ADDR, when libgyro-agent is built): joins the controller's gang
 *    through agent/agent.h, gets its rank, run config and start step from it, takes a step only
 *    when granted, applies directives (checkpoint, hyper-parameters, pause, stop, rollback) at
 *    exactly the step the controller names, and reports every step (with the checkpoint that
 *    reached the disk since the last report, if any). Same step records on stdout, plus one
 *    {"type":"directive",...} record per applied directive. A rollback restores the checkpoint
 *    of to_step, forgets the later ones, adds the skip ranges to the skip list (which keeps
 *    every range it had: a skip is never undone), applies the hyper-parameters sent with it,
 *    and training goes on from to_step: the steps after it run again. Step and directive
 *    records carry "ts" (wall clock, seconds since the epoch); a directive record carries
 *    "apply_ms" and, for a rollback, "restored_from" ("memory": the in-memory ring, or "disk").
 *
 * Exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration, 3 (supervised) the
 * controller re-formed the gang in a way this process cannot continue: start it again.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef GY_HAVE_AGENT
#include "agent/agent.h"
#include "common/rpc.h"
#include "worker/comm.h"
#include "worker/directive.h"
#endif
#include "common/err.h"
#include "common/log.h"
#include "kernels/llmc_io.h"
#include "config/run_config.h"
#include "worker/nvml.h"
#include "config/policy_file.h"
#include "worker/train.h"

static volatile sig_atomic_t stop_requested = 0;
#ifdef GY_HAVE_AGENT
static gy_agent_t *volatile signal_agent = NULL; /* woken by a signal while parked */
#endif
static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
#ifdef GY_HAVE_AGENT
  if (signal_agent) gy_agent_interrupt(signal_agent);
#endif
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: gyro-worker --standalone --config FILE [options]\n"
          "       gyro-worker --controller HOST:PORT[,HOST:PORT...] [options]\n"
          "  --steps N            train until N steps are done (default: run.steps)\n"
          "  --resume FILE        restore a checkpoint file first\n"
          "  --threads N          CPU threads (default: run.threads, 0 = all cores)\n"
          "  --export-llmc FILE   at the end, write the model as an llm.c model file\n"
          "  --eval-only          evaluate held-out perplexity once and exit\n"
          "  --quiet-steps        print eval and checkpoint records only\n"
          "  --policy FILE        a policy file whose guard: section sets the per-sample guard\n"
          "                       (default: the built-in policy; supervised workers get the\n"
          "                       controller's)\n"
          "parallel training (one process per rank; every rank prints the same records):\n"
          "  --rank R --world W   this process's rank of W (default 0 of 1)\n"
          "  --tp T               tensor-parallel group size (divides W; data-parallel = W/T)\n"
          "  --rdzv file:DIR      rendezvous store: a fresh folder all ranks can reach\n"
          "  --backend gloo|nccl  collectives (default gloo)\n"
          "  --comm-timeout MS    a dead or hung peer fails a collective after MS (30000)\n"
          "  --no-overlap         reduce gradients after the backward pass, not during it\n"
          "supervised by gyro-controller (rank, world, tp, config and start step come from it):\n"
          "  --controller ADDRS   controller address(es), tried in turn while one is down\n"
          "  --worker-id ID       unique worker name (default HOST:PID)\n"
          "  --ordinal N          preferred rank, e.g. a StatefulSet index (default: any)\n"
          "  --join-token T       the controller's join token (visible in `ps`: prefer\n"
          "                       --join-token-file or $GYRO_JOIN_TOKEN)\n"
          "  --join-token-file F  read the join token from file F\n"
          "  --tls-ca F           talk TLS to the controller; F: the CA of its certificate\n"
          "                       (default $GYRO_TLS_CA)\n"
          "  --tls-cert F --tls-key F  this worker's certificate and key for mutual TLS\n"
          "                       (default $GYRO_TLS_CERT, $GYRO_TLS_KEY)\n"
          "  --tls-server-name N  name to check the controller's certificate against\n"
          "  (--threads, --backend, --comm-timeout, --no-overlap and --quiet-steps apply too)\n"
          "  -h, --help\n"
          "exit codes: 0 done, 1 runtime failure, 2 usage or configuration, 3 re-formed gang: "
          "restart\n");
}

/* Wall-clock time in seconds since the epoch (records carry it as "ts"). */
static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static json_t *num_or_null(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

/* Where a masked sample's tokens and its quarantined region lie, in shard-file terms. */
typedef struct {
  const char *file;
  uint64_t offset, q_offset, q_length;
  uint32_t length;
} where_t;

static void masked_where(const gy_trainer_t *tr, gy_data_t *d, const gy_masked_sample_t *m,
                         where_t *w) {
  uint64_t T = (uint64_t)gy_trainer_seq_len(tr);
  int file = -1, qfile = -1;
  uint64_t off = 0, qoff = 0;
  memset(w, 0, sizeof(*w));
  if (gy_data_file_offset(d, m->channel, m->index * T, &file, &off)) return;
  w->file = gy_data_file_path(d, m->channel, file);
  w->offset = off;
  w->length = (uint32_t)(T + 1);
  /* the region, clipped to the file the sample starts in (a document may cross a shard's end) */
  if (gy_data_file_offset(d, m->channel, m->q_first, &qfile, &qoff) || qfile != file) qoff = 0;
  uint64_t file_end = off + (gy_data_file_tokens(d, m->channel, file) - off);
  uint64_t qend = qoff + (m->q_last - m->q_first);
  w->q_offset = qoff;
  w->q_length = (qend < file_end ? qend : file_end) - qoff;
}

static json_t *masked_json(const gy_trainer_t *tr, gy_data_t *d, const gy_masked_sample_t *m) {
  char why[48];
  gy_guard_reason(&m->verdict, why, sizeof(why));
  where_t w;
  masked_where(tr, d, m, &w);
  json_t *o = json_pack(
      "{s:I, s:s, s:i, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", (json_int_t)m->id,
      "channel", gy_data_channel_name(d, m->channel), "rank", m->rank, "reason", why, "loss",
      num_or_null(m->stats[GY_GSTAT_LOSS]), "median", num_or_null(m->verdict.median), "threshold",
      num_or_null(m->verdict.threshold), "entropy", num_or_null(m->stats[GY_GSTAT_ENTROPY]),
      "repeat", num_or_null(m->stats[GY_GSTAT_REPEAT]), "nontext",
      num_or_null(m->stats[GY_GSTAT_NONTEXT]), "highbyte", num_or_null(m->stats[GY_GSTAT_HIGHBYTE]),
      "markup", num_or_null(m->stats[GY_GSTAT_MARKUP]));
  if (w.file) {
    json_object_set_new(o, "file", json_string(w.file));
    json_object_set_new(o, "offset", json_integer((json_int_t)w.offset));
    json_object_set_new(o, "document", json_integer((json_int_t)m->document));
    json_object_set_new(o, "quarantine",
                        json_pack("{s:I, s:I, s:b}", "offset", (json_int_t)w.q_offset, "length",
                                  (json_int_t)w.q_length, "new", m->q_new));
  }
  return o;
}

/* A step's JSON line; compute_ms < 0: not measured (not written). */
static void emit_step(const gy_trainer_t *tr, gy_data_t *d, const gy_step_report_t *r,
                      double compute_ms, int log_samples) {
  json_t *o = json_object();
  json_object_set_new(o, "type", json_string("step"));
  json_object_set_new(o, "step", json_integer(r->step));
  json_object_set_new(o, "ts", json_real(wall_s()));
  json_object_set_new(o, "loss", num_or_null(r->loss));
  json_t *lc = json_object(), *tc = json_object();
  for (int c = 0; c < gy_data_nchannels(d); c++) {
    const char *n = gy_data_channel_name(d, c);
    json_object_set_new(
        lc, n, r->ch_tokens[c] ? num_or_null(r->ch_loss_sum[c] / r->ch_tokens[c]) : json_null());
    json_object_set_new(tc, n, json_integer((json_int_t)r->ch_tokens[c]));
  }
  json_object_set_new(o, "loss_ch", lc);
  json_object_set_new(o, "tokens_ch", tc);
  json_object_set_new(o, "grad_norm", num_or_null(r->opt.global));
  json_object_set_new(o, "grad_norm_shallow", num_or_null(r->opt.shallow));
  json_object_set_new(o, "grad_norm_deep", num_or_null(r->opt.deep));
  json_object_set_new(o, "nonfinite", json_boolean(r->opt.nonfinite));
  json_object_set_new(o, "update_ratio", num_or_null(r->opt.update_ratio));
  json_object_set_new(o, "lr", json_real(r->opt.lr));
  json_object_set_new(o, "step_ms", json_real(r->step_ms));
  if (compute_ms >= 0) json_object_set_new(o, "compute_ms", json_real(compute_ms));
  json_object_set_new(o, "tokens_per_s", json_real(r->tokens_per_s));
  json_t *top = json_array();
  for (int i = 0; i < r->ntop; i++)
    json_array_append_new(top, json_pack("{s:I, s:s, s:o}", "id", (json_int_t)r->top[i].id,
                                         "channel", gy_data_channel_name(d, r->top[i].channel),
                                         "loss", num_or_null(r->top[i].loss)));
  json_object_set_new(o, "top", top);
  json_t *bottom = json_array();
  for (int i = 0; i < r->nbottom; i++)
    json_array_append_new(bottom,
                          json_pack("{s:I, s:s, s:o}", "id", (json_int_t)r->bottom[i].id, "channel",
                                    gy_data_channel_name(d, r->bottom[i].channel), "loss",
                                    num_or_null(r->bottom[i].loss)));
  json_object_set_new(o, "bottom", bottom);
  json_object_set_new(o, "samples", json_integer(r->samples));
  json_t *mc = json_object(), *ml = json_array();
  for (int c = 0; c < gy_data_nchannels(d); c++)
    json_object_set_new(mc, gy_data_channel_name(d, c), json_integer((json_int_t)r->ch_masked[c]));
  for (int i = 0; i < r->nmasked; i++)
    json_array_append_new(ml, masked_json(tr, d, &r->masked[i]));
  json_object_set_new(o, "masked_ch", mc);
  json_object_set_new(o, "masked", ml);
  if (log_samples) { /* train.log_samples: this rank's batch, [id, channel, index, masked, loss] */
    const uint64_t *ids, *idx;
    const int *chs;
    const uint8_t *kept;
    const float(*st)[GY_GSTAT_COUNT];
    int B = gy_trainer_last_batch(tr, &ids, &chs, &idx, &kept, &st);
    json_t *sa = json_array();
    for (int b = 0; b < B; b++)
      json_array_append_new(sa, json_pack("[I, s, I, b, o]", (json_int_t)ids[b],
                                          gy_data_channel_name(d, chs[b]), (json_int_t)idx[b],
                                          !kept[b], num_or_null(st[b][GY_GSTAT_LOSS])));
    json_object_set_new(o, "samples_drawn", sa);
  }
  gy_json_emit(o);
}

static void emit_eval(int64_t step, gy_data_t *d, const gy_eval_report_t *e) {
  json_t *o = json_object(), *vl = json_object(), *pp = json_object(), *ug = json_object();
  json_t *cz = json_object(), *ci = json_object();
  json_object_set_new(o, "type", json_string("eval"));
  json_object_set_new(o, "step", json_integer(step));
  for (int c = 0; c < e->nchannels; c++) {
    const char *n = gy_data_channel_name(d, c);
    json_object_set_new(vl, n, num_or_null(e->val_loss[c]));
    json_object_set_new(pp, n, num_or_null(e->ppl[c]));
    json_object_set_new(ug, n, num_or_null(e->unigram[c]));
    json_object_set_new(cz, n, num_or_null(e->cloze[c]));
    json_object_set_new(ci, n, json_integer((json_int_t)e->cloze_items[c]));
  }
  json_object_set_new(o, "val_loss", vl);
  json_object_set_new(o, "ppl", pp);
  json_object_set_new(o, "unigram", ug);
  json_object_set_new(o, "cloze", cz);
  json_object_set_new(o, "cloze_items", ci);
  gy_json_emit(o);
}

#ifdef GY_HAVE_AGENT
/* ------------------------------ supervised mode (--controller) ------------------------------ */

typedef struct {
  const char *controller, *worker_id, *join_token;
  const char *tls_ca, *tls_cert, *tls_key, *tls_server_name; /* NULL: plaintext */
  int ordinal;
  int threads;
  int quiet;
} supervised_opts_t;

/* ckpt_step >= 0: the checkpoint of that step reached the disk since the last report. */
/* GPU health for the step reports. GYRO_GPU=N names this worker's GPU (NVML device N); NVML
 * is loaded at run time (worker/nvml.h) and read every GPU_HEALTH_EVERY steps, so a CPU worker,
 * or one where the driver is absent, reports none. */
#define GPU_HEALTH_EVERY 10
typedef struct {
  gy_nvml_t *nvml;
  int index; /* -1: no GPU health */
  gy_gpu_health_t h;
  int have;
} gpu_watch_t;

static void gpu_watch_open(gpu_watch_t *g) {
  memset(g, 0, sizeof(*g));
  g->index = -1;
  const char *env = getenv("GYRO_GPU");
  if (!env || !*env) return;
  char *end, err[256] = "";
  long idx = strtol(env, &end, 10);
  if (*end || idx < 0 || idx > 1024) {
    gy_log(GY_LOG_WARN, "worker", "GYRO_GPU='%s' is not a GPU index: no GPU health", env);
    return;
  }
  if (gy_nvml_open(&g->nvml, NULL, err, sizeof(err))) {
    gy_log(GY_LOG_WARN, "worker", "GPU health unavailable: %s", err);
    return;
  }
  g->index = (int)idx;
}

static const gy_gpu_health_t *gpu_watch_read(gpu_watch_t *g, int64_t step) {
  if (g->index < 0) return NULL;
  if (!g->have || step % GPU_HEALTH_EVERY == 0) {
    char err[256] = "";
    if (gy_nvml_read(g->nvml, g->index, &g->h, err, sizeof(err))) {
      if (!g->have) gy_log(GY_LOG_WARN, "worker", "GPU %d health: %s", g->index, err);
      g->have = 0;
      return NULL;
    }
    g->have = 1;
  }
  return &g->h;
}

static void report_step(gy_agent_t *a, const gy_trainer_t *tr, gy_data_t *d,
                        const gy_step_report_t *r, double compute_ms, int64_t ckpt_step,
                        uint64_t ckpt_bytes, const gy_gpu_health_t *h) {
  gy_agent_gpu_t gpu;
  if (h)
    gpu = (gy_agent_gpu_t){.index = h->index,
                           .name = h->name,
                           .has_temp = h->has_temp,
                           .temp_c = h->temp_c,
                           .has_mem = h->has_mem,
                           .mem_used_bytes = h->mem_used,
                           .mem_total_bytes = h->mem_total,
                           .has_util = h->has_util,
                           .util_gpu_pct = h->util_gpu,
                           .util_mem_pct = h->util_mem,
                           .has_sm_clock = h->has_sm_clock,
                           .sm_clock_mhz = h->sm_clock_mhz,
                           .has_throttle = h->has_throttle,
                           .throttle_reasons = h->throttle,
                           .has_ecc = h->has_ecc,
                           .ecc_uncorrected = h->ecc_uncorrected,
                           .has_xid = h->has_xid,
                           .xid_count = h->xid_count,
                           .last_xid = h->last_xid};
  gy_agent_channel_t ch[GY_MAX_CHANNELS];
  gy_agent_sample_t top[GY_TOPK_MAX], bottom[GY_TOPK_MAX];
  int nch = gy_data_nchannels(d);
  for (int c = 0; c < nch; c++)
    ch[c] = (gy_agent_channel_t){gy_data_channel_name(d, c), r->ch_loss_sum[c], r->ch_tokens[c],
                                 r->ch_masked[c]};
  gy_agent_masked_t masked[GY_MASKED_MAX];
  char why[GY_MASKED_MAX][48];
  for (int i = 0; i < r->nmasked; i++) {
    const gy_masked_sample_t *m = &r->masked[i];
    gy_guard_reason(&m->verdict, why[i], sizeof(why[i]));
    where_t w;
    masked_where(tr, d, m, &w);
    masked[i] = (gy_agent_masked_t){.id = m->id,
                                    .channel = gy_data_channel_name(d, m->channel),
                                    .loss = m->stats[GY_GSTAT_LOSS],
                                    .reason = why[i],
                                    .median = m->verdict.median,
                                    .threshold = m->verdict.threshold,
                                    .entropy = m->stats[GY_GSTAT_ENTROPY],
                                    .repeat = m->stats[GY_GSTAT_REPEAT],
                                    .nontext = m->stats[GY_GSTAT_NONTEXT],
                                    .highbyte = m->stats[GY_GSTAT_HIGHBYTE],
                                    .markup = m->stats[GY_GSTAT_MARKUP],
                                    .rank = m->rank,
                                    .where = {.file = w.file,
                                              .offset = w.offset,
                                              .length = w.length,
                                              .document = m->document,
                                              .region_offset = w.q_offset,
                                              .region_length = w.q_length}};
  }
  for (int i = 0; i < r->ntop; i++)
    top[i] = (gy_agent_sample_t){r->top[i].id, gy_data_channel_name(d, r->top[i].channel),
                                 r->top[i].loss};
  for (int i = 0; i < r->nbottom; i++)
    bottom[i] = (gy_agent_sample_t){r->bottom[i].id, gy_data_channel_name(d, r->bottom[i].channel),
                                    r->bottom[i].loss};
  gy_agent_report_t ar = {.step = r->step,
                          .loss = r->loss,
                          .channels = ch,
                          .nchannels = nch,
                          .grad_norm = r->opt.global,
                          .grad_norm_shallow = r->opt.shallow,
                          .grad_norm_deep = r->opt.deep,
                          .update_ratio = r->opt.update_ratio,
                          .lr = r->opt.lr,
                          .nonfinite = r->opt.nonfinite,
                          .step_ms = r->step_ms,
                          .compute_ms = compute_ms,
                          .tokens_per_s = r->tokens_per_s,
                          .top = top,
                          .bottom = bottom,
                          .nbottom = r->nbottom,
                          .gpu = h ? &gpu : NULL,
                          .samples = r->samples,
                          .masked = masked,
                          .nmasked = r->nmasked,
                          .ntop = r->ntop,
                          .has_checkpoint = ckpt_step >= 0,
                          .checkpoint_step = ckpt_step,
                          .checkpoint_bytes = ckpt_bytes};
  int rc = gy_agent_report(a, &ar);
  if (rc)
    gy_log(GY_LOG_WARN, "worker", "report of step %" PRId64 " not sent: %s", r->step,
           gy_strerror(rc));
}

/* Sends an evaluation to the controller (rank 0 only: every rank computed the same figures);
 * ckpt: the evaluation is of the checkpoint of `step`. */
static void report_eval(gy_agent_t *a, int rank, gy_data_t *d, int64_t step,
                        const gy_eval_report_t *e, int ckpt) {
  if (rank != 0) return;
  gy_agent_source_eval_t src[GY_MAX_CHANNELS];
  int n = 0;
  for (int c = 0; c < e->nchannels; c++)
    if (e->tokens[c]) /* a channel without a held-out set has no figures */
      src[n++] = (gy_agent_source_eval_t){.source = gy_data_channel_name(d, c),
                                          .loss = e->val_loss[c],
                                          .ppl = e->ppl[c],
                                          .tokens = e->tokens[c],
                                          .cloze_accuracy = e->cloze_items[c] ? e->cloze[c] : 0,
                                          .cloze_items = (uint32_t)e->cloze_items[c]};
  gy_agent_eval_t ev = {
      .step = step, .sources = src, .nsources = n, .has_checkpoint = ckpt, .checkpoint_step = step};
  int rc = gy_agent_eval(a, &ev);
  if (rc)
    gy_log(GY_LOG_WARN, "worker", "evaluation of step %" PRId64 " not sent: %s", step,
           gy_strerror(rc));
}

/* The directive semantics (worker/directive.h) reach libgyro-agent through these. */
typedef struct {
  gy_agent_t *a;
  int rank;
  gy_data_t *d;
} directive_ctx_t;

static int directive_ack(void *ctx, uint64_t seq, int64_t step, int ok, const char *error,
                         uint64_t checkpoint_bytes) {
  directive_ctx_t *c = ctx;
  return gy_agent_ack(c->a, seq, step, ok, error, checkpoint_bytes);
}

/* A directive's checkpoint was evaluated: the record on stdout, the figures to the controller. */
static void directive_eval(void *ctx, int64_t step, const gy_eval_report_t *ev) {
  directive_ctx_t *c = ctx;
  emit_eval(step, c->d, ev);
  report_eval(c->a, c->rank, c->d, step, ev, 1);
}

/* An assignment's guard settings and quarantine list into the trainer (after its checkpoint is
 * restored). 0, or an error (printed). */
static int apply_assignment(gy_trainer_t *tr, const gy_agent_assignment_t *asg, int rank) {
  char err[512];
  int rc;
  if (asg->has_guard && (rc = gy_trainer_set_guard(tr, &asg->guard, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: rank %d: the policy's guard settings: %s\n", rank, err);
    return rc;
  }
  if (!asg->nquar) return 0;
  int n = gy_directive_quarantine(tr, asg->quar, asg->nquar, "assignment");
  if (n < 0) {
    fprintf(stderr, "gyro-worker: rank %d: the quarantine in force: %s\n", rank, gy_strerror(n));
    return n;
  }
  gy_log(GY_LOG_INFO, "worker", "rank %d: quarantine in force: %d of %d entries applied", rank, n,
         asg->nquar);
  return 0;
}

static int run_supervised(const supervised_opts_t *so, gy_parallel_t par) {
  gy_agent_t *a = NULL;
  gy_trainer_t *tr = NULL;
  gy_run_config_t cfg;
  int have_cfg = 0, exit_code = 1, rc;
  char err[1024] = "", *prefix = NULL;
  gpu_watch_t gpu;
  gpu_watch_open(&gpu);
  gy_agent_opts_t ao = {.controllers = so->controller,
                        .worker_id = so->worker_id,
                        .ordinal = so->ordinal,
                        .join_token = so->join_token,
                        .tls_ca = so->tls_ca,
                        .tls_cert = so->tls_cert,
                        .tls_key = so->tls_key,
                        .tls_server_name = so->tls_server_name};
  if ((rc = gy_agent_create(&a, &ao))) {
    fprintf(stderr, "gyro-worker: --controller '%s': %s\n", so->controller, gy_strerror(rc));
    return 2;
  }
  /* the heartbeats' progress excludes the time waiting for peers (worker/comm_timed.c) */
  gy_agent_set_collective_clock(a, gy_comm_blocked_ns, gy_comm_in_collective_ns);
  signal_agent = a;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  gy_agent_assignment_t asg;
  if ((rc = gy_agent_join(a, &asg, -1))) {
    fprintf(stderr, "gyro-worker: cannot join the controller at %s: %s\n", so->controller,
            gy_agent_errmsg(a)[0] ? gy_agent_errmsg(a) : gy_strerror(rc));
    exit_code = rc == GY_EINVAL ? 2 : 1;
    goto out;
  }
  /* The config comes as text; relative paths in it are relative to the controller's folder. */
  rc = gy_run_config_parse(&cfg, "run config", asg.config_yaml, strlen(asg.config_yaml),
                           asg.config_dir, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyro-worker: the run config from the controller (folder %s): %s\n",
            asg.config_dir, err);
    exit_code = 2;
    goto out;
  }
  have_cfg = 1;
  if (so->threads >= 0) cfg.threads = so->threads;
  if (!(prefix = strdup(asg.rdzv_prefix))) goto out;
  par.rank = asg.rank;
  par.world = asg.world;
  par.tp = asg.tp;
  par.rdzv = NULL;
  par.store = gy_agent_store(a);
  par.prefix = prefix;
  if ((rc = gy_trainer_create_parallel(&tr, &cfg, &par, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: rank %d: %s\n", par.rank, err);
    exit_code = rc == GY_ECONFIG || rc == GY_EINVAL ? 2 : 1;
    goto out;
  }
  if (asg.start_step > 0) {
    char path[4096];
    gy_trainer_ckpt_path(tr, asg.start_step, path, sizeof(path));
    if (access(path, R_OK)) {
      fprintf(stderr,
              "gyro-worker: rank %d: the gang starts at step %" PRId64 " but its checkpoint "
              "%s is missing\n",
              par.rank, asg.start_step, path);
      goto out;
    }
    if ((rc = gy_trainer_restore(tr, asg.start_step, err, sizeof(err)))) {
      fprintf(stderr, "gyro-worker: rank %d: cannot restore step %" PRId64 ": %s\n", par.rank,
              asg.start_step, err);
      goto out;
    }
  }
  /* the run's skips in force (the restored checkpoint may be older than some of them) */
  for (int i = 0; i < asg.nskip; i++)
    if ((rc = gy_trainer_skip(tr, asg.skip[2 * i], asg.skip[2 * i + 1]))) {
      fprintf(stderr, "gyro-worker: rank %d: skip [%" PRIu64 ", %" PRIu64 "): %s\n", par.rank,
              asg.skip[2 * i], asg.skip[2 * i + 1], gy_strerror(rc));
      goto out;
    }
  /* the run policy's guard and the quarantine in force (the checkpoint may predate entries) */
  if ((rc = apply_assignment(tr, &asg, par.rank))) goto out;
  uint64_t asg_gen = asg.generation;
  gy_data_t *d = gy_trainer_data(tr);
  int64_t steps = cfg.steps;
  directive_ctx_t dctx = {.a = a, .rank = par.rank, .d = d};
  gy_directive_agent_t dag = {.ctx = &dctx, .ack = directive_ack, .eval = directive_eval};
  gy_log(GY_LOG_INFO, "worker",
         "run '%s': rank %d of %d (tp %d), generation %" PRIu64 ", %zu "
         "parameters, steps %" PRId64 "..%" PRId64,
         cfg.name, par.rank, par.world, par.tp, asg.generation,
         gy_gpt_num_params(gy_trainer_model(tr)), gy_trainer_step_count(tr), steps);
  exit_code = 0;
  while (gy_trainer_step_count(tr) < steps) {
    int64_t done = gy_trainer_step_count(tr);
    gy_agent_directive_t dir;
    rc = stop_requested ? GY_AGENT_INTERRUPTED : gy_agent_wait_grant(a, done, &dir);
    if (rc == GY_AGENT_DIRECTIVE) {
      if ((rc = gy_directive_apply(&dag, tr, &dir, steps, &cfg)) == 0) continue;
      exit_code = rc > 0 ? 0 : 1; /* STOP, or a directive that could not be carried out */
      break;
    }
    if (rc == GY_AGENT_REASSIGNED) {
      fprintf(stderr, "gyro-worker: %s\n", gy_agent_errmsg(a));
      exit_code = 3;
      break;
    }
    if (rc == GY_AGENT_INTERRUPTED) {
      fprintf(stderr,
              "gyro-worker: rank %d: stopped by a signal at step %" PRId64 " of %" PRId64 "\n",
              par.rank, done, steps);
      exit_code = 1;
      break;
    }
    if (rc != GY_AGENT_GO) {
      fprintf(stderr, "gyro-worker: rank %d: lost the controller at step %" PRId64 ": %s\n",
              par.rank, done, gy_agent_errmsg(a)[0] ? gy_agent_errmsg(a) : gy_strerror(rc));
      exit_code = 1;
      break;
    }
    /* rejoined a newer gang at the same step (the agent went on by itself): its assignment may
     * carry guard settings and quarantine changes made while there was no gang */
    const gy_agent_assignment_t *cur = gy_agent_assignment(a);
    if (cur && cur->generation != asg_gen) {
      asg_gen = cur->generation;
      if (apply_assignment(tr, cur, par.rank)) {
        exit_code = 1;
        break;
      }
    }
    gy_step_report_t r;
    int64_t waited0 = gy_comm_blocked_ns(); /* the step's own work excludes waiting for peers */
    if ((rc = gy_trainer_step(tr, &r))) {
      fprintf(stderr, "gyro-worker: rank %d: step %" PRId64 " failed: %s\n", par.rank, done,
              gy_trainer_last_error(tr)[0] ? gy_trainer_last_error(tr) : gy_strerror(rc));
      exit_code = 1;
      break;
    }
    double compute_ms = r.step_ms - (double)(gy_comm_blocked_ns() - waited0) / 1e6;
    if (compute_ms < 0) compute_ms = 0;
    if (!so->quiet) emit_step(tr, d, &r, compute_ms, cfg.log_samples);
    done = gy_trainer_step_count(tr);
    int ckpt_due = cfg.ckpt_every > 0 && (done % cfg.ckpt_every == 0 || done == steps);
    /* The last step's checkpoint is written before its report, which then carries it: the
     * controller commits it before the run is done (after, nothing would report it). */
    int final_ckpt = ckpt_due && done == steps;
    if (final_ckpt) {
      if ((rc = gy_trainer_checkpoint(tr, err, sizeof(err))) ||
          (rc = gy_trainer_flush(tr, err, sizeof(err)))) {
        fprintf(stderr, "gyro-worker: checkpoint failed: %s\n", err);
        exit_code = 1;
        break;
      }
      char path[4096];
      gy_trainer_ckpt_path(tr, done, path, sizeof(path));
      gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "checkpoint", "step", (json_int_t)done,
                             "path", path));
    }
    /* a checkpoint that reached the disk since the last report travels with this one */
    /* (one per report, oldest first; the last report takes the newest, its final checkpoint) */
    int64_t ckpt_steps[16];
    uint64_t ckpt_bytes[16];
    if ((rc = gy_trainer_ckpt_written(tr, ckpt_steps, ckpt_bytes, final_ckpt ? 16 : 1, err,
                                      sizeof(err))) < 0) {
      fprintf(stderr, "gyro-worker: rank %d: checkpoint write failed: %s\n", par.rank, err);
      exit_code = 1;
      break;
    }
    report_step(a, tr, d, &r, compute_ms, rc > 0 ? ckpt_steps[rc - 1] : -1,
                rc > 0 ? ckpt_bytes[rc - 1] : 0, gpu_watch_read(&gpu, r.step));
    gy_eval_report_t ev;
    /* With evaluation on (eval.every > 0), every checkpoint is evaluated too: the controller
     * keeps each checkpoint's held-out figures (gyroctl checkpoints). Every rank takes the same
     * decision (evaluation is collective). */
    if (cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == steps || ckpt_due)) {
      if ((rc = gy_trainer_eval(tr, &ev))) {
        fprintf(stderr, "gyro-worker: rank %d: evaluation at step %" PRId64 " failed: %s\n",
                par.rank, done,
                gy_trainer_last_error(tr)[0] ? gy_trainer_last_error(tr) : gy_strerror(rc));
        exit_code = 1;
        break;
      }
      emit_eval(done, d, &ev);
      report_eval(a, par.rank, d, done, &ev, ckpt_due);
    }
    if (ckpt_due && !final_ckpt) {
      if ((rc = gy_trainer_checkpoint(tr, err, sizeof(err)))) {
        fprintf(stderr, "gyro-worker: checkpoint failed: %s\n", err);
        exit_code = 1;
        break;
      }
      char path[4096];
      gy_trainer_ckpt_path(tr, done, path, sizeof(path));
      gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "checkpoint", "step", (json_int_t)done,
                             "path", path));
    }
  }
out:
  if (tr && gy_trainer_flush(tr, err, sizeof(err))) {
    fprintf(stderr, "gyro-worker: checkpoint write failed: %s\n", err);
    exit_code = 1;
  }
  gy_trainer_destroy(tr); /* before the agent: the trainer borrows its store */
  signal_agent = NULL;
  gy_agent_destroy(a);
  gy_nvml_close(gpu.nvml);
  free(prefix);
  if (have_cfg) gy_run_config_free(&cfg);
  return exit_code;
}
#endif

int main(int argc, char **argv) {
  const char *config = NULL, *resume = NULL, *export_llmc = NULL, *policy = NULL;
  int standalone = 0, eval_only = 0, quiet = 0, parallel_given = 0;
  const char *controller = NULL, *worker_id = NULL, *join_token = NULL, *join_token_file = NULL;
  const char *tls_ca = getenv("GYRO_TLS_CA"), *tls_cert = getenv("GYRO_TLS_CERT"),
             *tls_key = getenv("GYRO_TLS_KEY"), *tls_server_name = NULL;
  int ordinal = -1;
  int64_t steps = -1;
  int threads = -1;
  gy_parallel_t par = {.rank = 0, .world = 1, .tp = 1, .backend = "gloo", .timeout_ms = 30000};
  static const struct option opts[] = {{"standalone", no_argument, 0, 'S'},
                                       {"config", required_argument, 0, 'c'},
                                       {"steps", required_argument, 0, 'n'},
                                       {"resume", required_argument, 0, 'r'},
                                       {"threads", required_argument, 0, 't'},
                                       {"export-llmc", required_argument, 0, 'x'},
                                       {"eval-only", no_argument, 0, 'e'},
                                       {"quiet-steps", no_argument, 0, 'q'},
                                       {"policy", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'},
                                       {"rank", required_argument, 0, 'R'},
                                       {"world", required_argument, 0, 'W'},
                                       {"tp", required_argument, 0, 'P'},
                                       {"rdzv", required_argument, 0, 'Z'},
                                       {"backend", required_argument, 0, 'B'},
                                       {"comm-timeout", required_argument, 0, 'O'},
                                       {"no-overlap", no_argument, 0, 'N'},
                                       {"controller", required_argument, 0, 'C'},
                                       {"worker-id", required_argument, 0, 'I'},
                                       {"ordinal", required_argument, 0, 'o'},
                                       {"join-token", required_argument, 0, 'T'},
                                       {"join-token-file", required_argument, 0, 'J'},
                                       {"tls-ca", required_argument, 0, 'a'},
                                       {"tls-cert", required_argument, 0, 'k'},
                                       {"tls-key", required_argument, 0, 'y'},
                                       {"tls-server-name", required_argument, 0, 's'},
                                       {0, 0, 0, 0}};
  int c;
  char *end;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'S':
      standalone = 1;
      break;
    case 'c':
      config = optarg;
      break;
    case 'n':
      steps = strtoll(optarg, &end, 10);
      if (*end || steps < 0) {
        fprintf(stderr, "gyro-worker: --steps wants a non-negative integer, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'r':
      resume = optarg;
      break;
    case 't':
      threads = (int)strtol(optarg, &end, 10);
      if (*end || threads < 0) {
        fprintf(stderr, "gyro-worker: --threads wants a non-negative integer, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'x':
      export_llmc = optarg;
      break;
    case 'e':
      eval_only = 1;
      break;
    case 'q':
      quiet = 1;
      break;
    case 'p':
      policy = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'R':
    case 'W':
    case 'P':
    case 'O': {
      long v = strtol(optarg, &end, 10);
      if (*end || v < (c == 'R' ? 0 : 1) || v > 1000000) {
        fprintf(stderr, "gyro-worker: --%s wants a %s integer, got '%s'\n",
                c == 'R'   ? "rank"
                : c == 'W' ? "world"
                : c == 'P' ? "tp"
                           : "comm-timeout",
                c == 'R' ? "non-negative" : "positive", optarg);
        return 2;
      }
      if (c != 'O') parallel_given = 1;
      if (c == 'R')
        par.rank = (int)v;
      else if (c == 'W')
        par.world = (int)v;
      else if (c == 'P')
        par.tp = (int)v;
      else
        par.timeout_ms = (int)v;
      break;
    }
    case 'Z':
      par.rdzv = optarg;
      parallel_given = 1;
      break;
    case 'C':
      controller = optarg;
      break;
    case 'I':
      worker_id = optarg;
      break;
    case 'T':
      join_token = optarg;
      break;
    case 'J':
      join_token_file = optarg;
      break;
    case 'a':
      tls_ca = optarg;
      break;
    case 'k':
      tls_cert = optarg;
      break;
    case 'y':
      tls_key = optarg;
      break;
    case 's':
      tls_server_name = optarg;
      break;
    case 'o':
      ordinal = (int)strtol(optarg, &end, 10);
      if (*end || !optarg[0] || ordinal < 0 || ordinal > 1000000) {
        fprintf(stderr, "gyro-worker: --ordinal wants a non-negative integer, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'B':
      if (strcmp(optarg, "gloo") && strcmp(optarg, "nccl")) {
        fprintf(stderr, "gyro-worker: --backend wants gloo or nccl, got '%s'\n", optarg);
        return 2;
      }
      par.backend = optarg;
      break;
    case 'N':
      par.no_overlap = 1;
      break;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (controller) {
    const char *bad = standalone       ? "--standalone"
                      : config         ? "--config"
                      : resume         ? "--resume"
                      : export_llmc    ? "--export-llmc"
                      : eval_only      ? "--eval-only"
                      : policy         ? "--policy"
                      : steps >= 0     ? "--steps"
                      : parallel_given ? "--rank/--world/--tp/--rdzv"
                      : optind != argc ? argv[optind]
                                       : NULL;
    if (bad) {
      fprintf(stderr,
              "gyro-worker: %s does not go with --controller (the controller gives the "
              "config, rank and steps)\n",
              bad);
      usage(stderr);
      return 2;
    }
#ifdef GY_HAVE_AGENT
    /* The join token: --join-token-file, else --join-token (visible in `ps`), else
     * $GYRO_JOIN_TOKEN. It is never printed. */
    char *file_token = NULL, terr[600];
    if (join_token_file) {
      if (gy_rpc_token_read_file(join_token_file, &file_token, terr, sizeof(terr))) {
        fprintf(stderr, "gyro-worker: --join-token-file: %s\n", terr);
        return 2;
      }
      join_token = file_token;
    } else if (!join_token) {
      join_token = getenv("GYRO_JOIN_TOKEN");
    }
    if (join_token && *join_token &&
        gy_rpc_token_check("the join token", join_token, terr, sizeof(terr))) {
      fprintf(stderr, "gyro-worker: %s\n", terr);
      free(file_token);
      return 2;
    }
    supervised_opts_t so = {.controller = controller,
                            .worker_id = worker_id,
                            .join_token = join_token,
                            .tls_ca = tls_ca,
                            .tls_cert = tls_cert,
                            .tls_key = tls_key,
                            .tls_server_name = tls_server_name,
                            .ordinal = ordinal,
                            .threads = threads,
                            .quiet = quiet};
    int src = run_supervised(&so, par);
    if (file_token) memset(file_token, 0, strlen(file_token));
    free(file_token);
    return src;
#else
    fprintf(stderr, "gyro-worker: this build has no --controller mode (libgyro-agent was not "
                    "built)\n");
    return 2;
#endif
  }
  if (worker_id || join_token || join_token_file || ordinal >= 0) {
    fprintf(stderr, "gyro-worker: --worker-id, --ordinal and --join-token(-file) need "
                    "--controller\n");
    return 2;
  }
  if (!standalone || !config || optind != argc) {
    if (!standalone) fprintf(stderr, "gyro-worker: give --standalone or --controller ADDR\n");
    usage(stderr);
    return 2;
  }
  char err[1024] = "";
  gy_run_config_t cfg;
  int rc = gy_run_config_load(&cfg, config, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyro-worker: %s\n", err);
    return 2;
  }
  if (threads >= 0) cfg.threads = threads;
  if (steps < 0) steps = cfg.steps;
  gy_trainer_t *tr = NULL;
  if (par.rank >= par.world || par.world % par.tp) {
    fprintf(stderr,
            "gyro-worker: --rank %d --world %d --tp %d: rank must be < world and tp must "
            "divide world\n",
            par.rank, par.world, par.tp);
    gy_run_config_free(&cfg);
    return 2;
  }
  if (par.world > 1 && !par.rdzv) {
    fprintf(stderr, "gyro-worker: --world %d needs --rdzv file:DIR\n", par.world);
    gy_run_config_free(&cfg);
    return 2;
  }
  rc = gy_trainer_create_parallel(&tr, &cfg, &par, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyro-worker: %s\n", err);
    gy_run_config_free(&cfg);
    return rc == GY_ECONFIG || rc == GY_EINVAL ? 2 : 1;
  }
  int exit_code = 0;
  gy_data_t *d = gy_trainer_data(tr);
  if (policy) {
    gy_policy_t pol;
    if ((rc = gy_policy_load(&pol, policy, err, sizeof(err))) ||
        (rc = gy_trainer_set_guard(tr, &pol.guard, err, sizeof(err)))) {
      fprintf(stderr, "gyro-worker: --policy %s: %s\n", policy, err);
      gy_trainer_destroy(tr);
      gy_run_config_free(&cfg);
      return 2;
    }
  }
  if (resume && (rc = gy_trainer_restore_file(tr, resume, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: cannot resume: %s\n", err);
    exit_code = 1;
    goto out;
  }
  gy_log(GY_LOG_INFO, "worker",
         "run '%s': %zu parameters, starting at step %" PRId64 " of %" PRId64, cfg.name,
         gy_gpt_num_params(gy_trainer_model(tr)), gy_trainer_step_count(tr), steps);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  gy_eval_report_t ev;
  if (eval_only) {
    if ((rc = gy_trainer_eval(tr, &ev)) == 0) emit_eval(gy_trainer_step_count(tr), d, &ev);
    goto out;
  }
  while (gy_trainer_step_count(tr) < steps && !stop_requested) {
    gy_step_report_t r;
    if ((rc = gy_trainer_step(tr, &r))) {
      fprintf(stderr, "gyro-worker: rank %d: step %" PRId64 " failed: %s\n", par.rank,
              gy_trainer_step_count(tr),
              gy_trainer_last_error(tr)[0] ? gy_trainer_last_error(tr) : gy_strerror(rc));
      exit_code = 1;
      goto out;
    }
    if (!quiet) emit_step(tr, d, &r, -1, cfg.log_samples);
    int64_t done = gy_trainer_step_count(tr);
    if (cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == steps)) {
      if ((rc = gy_trainer_eval(tr, &ev)) == 0) emit_eval(done, d, &ev);
    }
    if (cfg.ckpt_every > 0 && (done % cfg.ckpt_every == 0 || done == steps)) {
      if ((rc = gy_trainer_checkpoint(tr, err, sizeof(err)))) {
        fprintf(stderr, "gyro-worker: checkpoint failed: %s\n", err);
        exit_code = 1;
        goto out;
      }
      char path[4096];
      gy_trainer_ckpt_path(tr, done, path, sizeof(path));
      gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "checkpoint", "step", (json_int_t)done,
                             "path", path));
    }
  }
  if (stop_requested)
    gy_log(GY_LOG_WARN, "worker", "stopped by signal at step %" PRId64, gy_trainer_step_count(tr));
out:
  if (gy_trainer_flush(tr, err, sizeof(err))) {
    fprintf(stderr, "gyro-worker: checkpoint write failed: %s\n", err);
    exit_code = 1;
  }
  if (!exit_code && export_llmc &&
      (rc = gy_llmc_save(gy_trainer_model(tr), export_llmc, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: export failed: %s\n", err);
    exit_code = 1;
  }
  gy_trainer_destroy(tr);
  gy_run_config_free(&cfg);
  return exit_code;
}
