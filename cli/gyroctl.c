/*
 * gyroctl: the operator's command line. Talks to gyro-controller's Operator service over gRPC
 * (common/rpc.h client) and prints human-readable tables, or the replies as JSON (--json) for
 * scripts. `gyroctl launch` (cli/launch.c) runs a whole job on one machine.
 *
 * Commands, in the order main() dispatches them: status, watch, pause, resume, stop, checkpoint,
 * set KEY=VALUE..., rollback --to STEP, skip --samples A-B | --steps A-B, events, policy show,
 * policy set FILE, checkpoints, quarantine list|add|release, launch CONFIG.
 *
 * Exit codes (also in usage()):
 *   0  ok
 *   1  the controller refused or failed the request (the gRPC status is printed), or a launched
 *      job failed
 *   2  usage error (unknown command or option, bad KEY=VALUE, bad config file)
 *   3  the controller is unreachable (UNAVAILABLE, or no answer within --timeout)
 *
 * Invariants: every request is encoded and every reply decoded by wire/operator_wire.c (this
 * file names no protobuf type); --json prints the wire layer's JSON of the reply, a generic
 * walk that shows every field the controller sent; the human tables read the decoded plain
 * structs. Nothing here keeps state between commands.
 * watch's stream callbacks run on the client's completion-queue thread: they only print and
 * set atomics; the main thread waits for the stream's end or SIGINT/SIGTERM with sigtimedwait
 * (both signals are blocked before any thread starts, so every thread inherits the mask).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/launch.h"
#include "common/err.h"
#include "common/rpc.h"
#include "proto/contract.h"
#include "wire/operator_wire.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

typedef struct {
  const char *addr;
  const char *token; /* NULL or "" when none */
  int json;
  int timeout_ms;
  char auth[1024];         /* "Bearer TOKEN" */
  gy_rpc_client_tls_t tls; /* all NULL: plaintext */
} ctl_opts_t;

static void usage(FILE *f) {
  fprintf(f,
          "usage: gyroctl [--controller ADDR] [--token T | --token-file F] [--json]\n"
          "               [--timeout MS] [--tls-ca F [--tls-cert F --tls-key F]\n"
          "               [--tls-server-name N]] COMMAND [ARGS]\n"
          "\n"
          "commands:\n"
          "  status                 run state, step, losses, throughput and a per-rank table\n"
          "  watch [--steps]        follow events (and, with --steps, every aggregated step)\n"
          "                         until the stream ends or Ctrl-C\n"
          "  pause | resume | stop | checkpoint\n"
          "                         directives: every rank applies them at the same step\n"
          "  set KEY=VALUE...       change run-time hyper-parameters; keys: lr_scale grad_clip\n"
          "                         eps weight_decay shallow_scale shallow_layers z_loss beta1\n"
          "                         beta2\n"
          "  rollback --to STEP     every rank restores the committed checkpoint of STEP (steps\n"
          "                         after it are trained again); refused when STEP is not one\n"
          "  skip --samples A-B | --steps A-B  (repeatable; inclusive ranges)\n"
          "                         never train on these sample ids again (or on the samples\n"
          "                         the steps A..B train on, converted by the controller). It\n"
          "                         is a rollback to the newest committed checkpoint carrying\n"
          "                         the skips (the workers apply skips only when restoring);\n"
          "                         refused when no checkpoint is committed yet\n"
          "  events [--since ID]    the audit log kept by the controller (last 4096 events):\n"
          "                         time, step, kind, transition, reason, evidence\n"
          "  checkpoints [--json]   the committed checkpoints: step, clean or suspect, held-out\n"
          "                         loss, perplexity and cloze accuracy per source (when\n"
          "                         evaluated); the best (lowest mean held-out loss among the\n"
          "                         clean ones) is marked\n"
          "  quarantine list [--json] [--preview]\n"
          "                         regions of shard files never trained on again (the guard's\n"
          "                         masked samples, the operator's): id, state, channel, token\n"
          "                         offset and length, document, reason, first step, file;\n"
          "                         --preview also shows each region's first tokens, read from\n"
          "                         the shard on this machine (escaped text)\n"
          "  quarantine add --channel C --file F --offset N --length N [--reason R]\n"
          "                         quarantine tokens [N, N+LENGTH) of shard F (a training shard\n"
          "                         of channel C: its path, or its tail such as en/train_000.bin)\n"
          "  quarantine release ID...\n"
          "                         train on those entries' regions again; add and release\n"
          "                         reach every rank at the same step\n"
          "  policy show            the repair policy in force, as YAML\n"
          "  policy set FILE        replace the repair policy (validated by the controller; a bad\n"
          "                         file is refused with FILE:LINE and key, the old one stays)\n"
          "  launch CONFIG [opts]   run the whole job on this machine (controller + workers);\n"
          "                         `gyroctl launch --help` lists its options\n"
          "\n"
          "options:\n"
          "  --controller ADDR      controller address (default $GYRO_CONTROLLER or "
          "127.0.0.1:7070)\n"
          "  --token T              operator token (default $GYRO_OPERATOR_TOKEN, else\n"
          "                         $GYRO_TOKEN); visible in `ps`: prefer --token-file or the\n"
          "                         environment\n"
          "  --token-file F         read the operator token from file F\n"
          "  --tls-ca F             talk TLS; F: the CA of the controller's certificate\n"
          "                         (default $GYRO_TLS_CA)\n"
          "  --tls-cert F, --tls-key F\n"
          "                         client certificate and key for mutual TLS (default\n"
          "                         $GYRO_TLS_CERT, $GYRO_TLS_KEY)\n"
          "  --tls-server-name N    name to check the controller's certificate against\n"
          "                         (default: the host of --controller)\n"
          "  --json                 print replies as JSON (one object per line for watch)\n"
          "  --timeout MS           deadline of each call (default 5000)\n"
          "  -h, --help\n"
          "\n"
          "exit codes: 0 ok; 1 the controller refused or failed the request (gRPC status shown);\n"
          "            2 usage error; 3 controller unreachable\n");
}

/* ---------------------------------------- JSON ---------------------------------------- */

/* Prints j (a new reference, taken) on one line. */
static void print_json(json_t *j) {
  if (!j) return;
  char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
  }
  json_decref(j);
}

/* ---------------------------------------- calls ---------------------------------------- */

/* The exit code for a failed call, after printing why on stderr. */
static int call_failed(const ctl_opts_t *o, const char *method, int rc, int st, const char *err) {
  if (st == GY_RPC_UNAVAILABLE || st == GY_RPC_DEADLINE_EXCEEDED || rc == GY_ETIMEDOUT) {
    fprintf(stderr, "gyroctl: controller %s unreachable (%s%s%s)\n", o->addr,
            st == GY_RPC_UNAVAILABLE ? "UNAVAILABLE" : "no answer within --timeout",
            *err ? ": " : "", err);
    return EXIT_UNREACHABLE;
  }
  if (st)
    fprintf(stderr, "gyroctl: %s refused: %s%s%s\n", method, gy_rpc_status_name(st),
            *err ? ": " : "", err);
  else
    fprintf(stderr, "gyroctl: %s failed: %s%s%s\n", method, gy_strerror(rc), *err ? ": " : "", err);
  return EXIT_REFUSED;
}

/* One unary Operator call: sends the request (enc: its encoder's return code; buf, len: the
 * encoding, taken and freed here), calls method, decodes the reply as `kind` into *out.
 * Returns an exit code (0 on success, *out then to be freed with gy_wire_op_reply_free). */
static int operator_call(const ctl_opts_t *o, const char *method, int enc, uint8_t *buf, size_t len,
                         gy_wire_op_reply_kind_t kind, gy_wire_op_reply_t *out) {
  char err[512] = "";
  gy_rpc_client_t *c = NULL;
  void *resp = NULL;
  size_t resp_len = 0;
  int st = 0, code;
  memset(out, 0, sizeof(*out));
  int rc = gy_rpc_client_create_tls(&c, o->addr, &o->tls, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyroctl: cannot reach controller %s: %s\n", o->addr,
            *err ? err : gy_strerror(rc));
    free(buf);
    return rc == GY_EIO || rc == GY_EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
  }
  if (enc) {
    code = call_failed(o, method, enc, 0, "");
    goto done;
  }
  rc = gy_rpc_unary(c, method, o->auth[0] ? "authorization" : NULL, o->auth[0] ? o->auth : NULL,
                    buf, len, o->timeout_ms, &resp, &resp_len, &st, err, sizeof(err));
  if (rc) {
    code = call_failed(o, method, rc, st, err);
    goto done;
  }
  rc = gy_wire_op_reply_decode(kind, resp, resp_len, out);
  if (rc == GY_EPROTO) {
    fprintf(stderr, "gyroctl: %s: the controller's reply does not decode as %s\n", method,
            gy_wire_op_reply_name(kind));
    code = EXIT_REFUSED;
    goto done;
  }
  if (rc) {
    code = call_failed(o, method, rc, 0, "");
    goto done;
  }
  code = EXIT_OK;
done:
  free(resp);
  free(buf);
  gy_rpc_client_destroy(c);
  return code;
}

/* ---------------------------------------- status ---------------------------------------- */

static void fmt_rate(char *buf, size_t len, double v) {
  if (!isfinite(v))
    snprintf(buf, len, "-");
  else if (v >= 1e6)
    snprintf(buf, len, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, len, "%.1fk", v / 1e3);
  else
    snprintf(buf, len, "%.0f", v);
}

static void print_losses(const gy_wire_op_status_t *r) {
  printf("loss %.4f", r->loss);
  for (size_t i = 0; i < r->nchannels; i++) {
    const gy_wire_op_channel_t *c = &r->channels[i];
    if (c->tokens)
      printf("  %s %.4f", c->name, c->loss_sum / (double)c->tokens);
    else
      printf("  %s -", c->name);
  }
}

static void print_status(const gy_wire_op_status_t *r) {
  char rate[32];
  printf("run %s   state %s   step %" PRId64 "/%" PRId64 "   horizon %" PRId64
         "   generation %" PRIu64 "   world %d (tp %d, dp %d)\n",
         r->run, r->state, r->step, r->steps_total, r->horizon, r->generation, r->world, r->tp,
         r->tp > 0 ? r->world / r->tp : r->world);
  print_losses(r);
  fmt_rate(rate, sizeof(rate), r->tokens_per_s);
  printf("   grad_norm %.4g   tokens/s %s\n", r->grad_norm, rate);
  if (!r->nranks) return;
  int ww = 6, hw = 4;
  for (size_t i = 0; i < r->nranks; i++) {
    int a = (int)strlen(r->ranks[i].worker_id), b = (int)strlen(r->ranks[i].host);
    if (a > ww) ww = a;
    if (b > hw) hw = b;
  }
  printf("\n%-4s  %-*s  %-*s  %8s  %8s  %8s  %8s  %s\n", "RANK", ww, "WORKER", hw, "HOST", "PID",
         "STEPS", "TOK/S", "AGE", "ALIVE");
  for (size_t i = 0; i < r->nranks; i++) {
    const gy_wire_op_rank_t *k = &r->ranks[i];
    char age[32];
    fmt_rate(rate, sizeof(rate), k->tokens_per_s);
    if (k->last_report_age_ms < 0 || !isfinite(k->last_report_age_ms))
      snprintf(age, 32, "-");
    else
      snprintf(age, sizeof(age), "%.1fs", k->last_report_age_ms / 1000.0);
    printf("%-4d  %-*s  %-*s  %8d  %8" PRId64 "  %8s  %8s  %s\n", k->rank, ww, k->worker_id, hw,
           k->host, k->pid, k->steps_done, rate, age, k->alive ? "yes" : "NO");
  }
}

static int cmd_status(const ctl_opts_t *o, int argc, char **argv) {
  (void)argv;
  if (argc != 1) {
    fprintf(stderr, "gyroctl: status takes no arguments\n");
    return EXIT_USAGE;
  }
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_op_empty_encode(&buf, &len);
  gy_wire_op_reply_t m;
  int code =
      operator_call(o, GY_METHOD_OPERATOR_STATUS, enc, buf, len, GY_WIRE_OP_STATUS_REPLY, &m);
  if (code) return code;
  if (o->json)
    print_json(gy_wire_op_reply_json(&m));
  else
    print_status(&m.status);
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

/* ------------------------------------- directives ------------------------------------- */

/* The settable hyper-parameters: name, proto field number (its `present` bit), integer or not. */
static const struct {
  const char *name;
  int field;
  int integer;
} hp_keys[] = {{"lr_scale", 1, 0},     {"grad_clip", 2, 0},     {"eps", 3, 0},
               {"weight_decay", 4, 0}, {"shallow_scale", 5, 0}, {"shallow_layers", 6, 1},
               {"z_loss", 7, 0},       {"beta1", 8, 0},         {"beta2", 9, 0}};

static int send_command(const ctl_opts_t *o, const gy_wire_op_command_t *req, const char *what);

/* Parses KEY=VALUE into hp; prints why and returns -1 on a bad key or value. */
static int parse_hparam(const char *arg, gy_hparams_t *hp) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !eq[1]) {
    fprintf(stderr, "gyroctl: set: '%s' is not KEY=VALUE\n", arg);
    return -1;
  }
  size_t kl = (size_t)(eq - arg);
  const char *val = eq + 1;
  for (size_t i = 0; i < sizeof(hp_keys) / sizeof(hp_keys[0]); i++) {
    if (strlen(hp_keys[i].name) != kl || strncmp(hp_keys[i].name, arg, kl)) continue;
    uint32_t bit = 1u << (hp_keys[i].field - 1);
    if (hp->present & bit) {
      fprintf(stderr, "gyroctl: set: %s given twice\n", hp_keys[i].name);
      return -1;
    }
    char *end;
    errno = 0;
    if (hp_keys[i].integer) {
      long v = strtol(val, &end, 10);
      if (*end || errno || v < 0 || v > 1000000) {
        fprintf(stderr, "gyroctl: set: %s wants a non-negative integer, got '%s'\n",
                hp_keys[i].name, val);
        return -1;
      }
      hp->shallow_layers = (int32_t)v;
    } else {
      float v = strtof(val, &end);
      int beta = hp_keys[i].field == 8 || hp_keys[i].field == 9;
      if (*end || errno || !isfinite(v) || v < 0 || (beta && v >= 1)) {
        fprintf(stderr, "gyroctl: set: %s wants a %s, got '%s'\n", hp_keys[i].name,
                beta ? "number in [0, 1)" : "finite non-negative number", val);
        return -1;
      }
      float *dst[] = {&hp->lr_scale,     &hp->grad_clip,     &hp->eps,
                      &hp->weight_decay, &hp->shallow_scale, NULL,
                      &hp->z_loss,       &hp->beta1,         &hp->beta2};
      *dst[hp_keys[i].field - 1] = v;
    }
    hp->present |= bit;
    return 0;
  }
  fprintf(stderr,
          "gyroctl: set: unknown key '%.*s' (keys: lr_scale grad_clip eps weight_decay "
          "shallow_scale shallow_layers z_loss beta1 beta2)\n",
          (int)kl, arg);
  return -1;
}

static int cmd_directive(const ctl_opts_t *o, int argc, char **argv, gy_wire_op_kind_t kind) {
  gy_wire_op_command_t req = {.kind = kind, .token = o->token};
  gy_hparams_t hp = {0};
  if (kind == GY_WIRE_OP_SET_HPARAMS) {
    if (argc < 2) {
      fprintf(stderr, "gyroctl: set wants at least one KEY=VALUE\n");
      return EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++)
      if (parse_hparam(argv[i], &hp)) return EXIT_USAGE;
    req.hparams = &hp;
  } else if (argc != 1) {
    fprintf(stderr, "gyroctl: %s takes no arguments\n", argv[0]);
    return EXIT_USAGE;
  }
  return send_command(o, &req, argv[0]);
}

/* ------------------------------------- rollback, skip ------------------------------------- */

/* Parses a non-negative integer; -1 when s is not one. */
static int parse_u64(const char *s, uint64_t *v) {
  char *end;
  if (!*s || *s == '-' || *s == '+') return -1;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (*end || errno || x > (uint64_t)INT64_MAX) return -1;
  *v = x;
  return 0;
}

/* Parses "A-B" (inclusive, A <= B) or "A" into the half-open range [A, B + 1). */
static int parse_range(const char *verb, const char *opt, const char *arg, gy_wire_op_range_t *r) {
  char buf[64];
  uint64_t a, b;
  if (strlen(arg) >= sizeof(buf)) goto bad;
  snprintf(buf, sizeof(buf), "%s", arg);
  char *dash = strchr(buf, '-');
  if (dash) *dash = 0;
  if (parse_u64(buf, &a)) goto bad;
  if (!dash)
    b = a;
  else if (parse_u64(dash + 1, &b) || b < a)
    goto bad;
  if (b == (uint64_t)INT64_MAX) goto bad;
  r->first = a;
  r->last = b + 1;
  return 0;
bad:
  fprintf(stderr, "gyroctl: %s: %s wants A-B with integers 0 <= A <= B (inclusive), got '%s'\n",
          verb, opt, arg);
  return -1;
}

/* Sends a Command and prints the reply; what says what was asked. */
static int send_command(const ctl_opts_t *o, const gy_wire_op_command_t *req, const char *what) {
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_op_command_encode(req, &buf, &len);
  gy_wire_op_reply_t m;
  int code =
      operator_call(o, GY_METHOD_OPERATOR_COMMAND, enc, buf, len, GY_WIRE_OP_COMMAND_REPLY, &m);
  if (code) return code;
  if (o->json)
    print_json(gy_wire_op_reply_json(&m));
  else
    printf("%s: accepted as directive %" PRIu64 ", applied by every rank at step %" PRId64 "\n",
           what, m.seq, m.at_step);
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

static int cmd_rollback(const ctl_opts_t *o, int argc, char **argv) {
  static const struct option opts[] = {{"to", required_argument, 0, 't'}, {0, 0, 0, 0}};
  uint64_t to = 0;
  int have = 0, c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (c != 't') return EXIT_USAGE;
    if (parse_u64(optarg, &to)) {
      fprintf(stderr, "gyroctl: rollback: --to wants a step (an integer >= 0), got '%s'\n", optarg);
      return EXIT_USAGE;
    }
    have = 1;
  }
  if (!have || optind != argc) {
    fprintf(stderr, "gyroctl: rollback wants --to STEP and nothing else\n");
    return EXIT_USAGE;
  }
  gy_wire_op_command_t req = {
      .kind = GY_WIRE_OP_ROLLBACK, .token = o->token, .to_step = (int64_t)to};
  char what[64];
  snprintf(what, sizeof(what), "rollback to step %" PRIu64, to);
  return send_command(o, &req, what);
}

#define SKIP_ARGS_MAX 256

static int cmd_skip(const ctl_opts_t *o, int argc, char **argv) {
  static const struct option opts[] = {
      {"samples", required_argument, 0, 's'}, {"steps", required_argument, 0, 'S'}, {0, 0, 0, 0}};
  static gy_wire_op_range_t rs[SKIP_ARGS_MAX], rt[SKIP_ARGS_MAX];
  size_t ns = 0, nt = 0;
  int c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (c != 's' && c != 'S') return EXIT_USAGE;
    if (ns + nt >= SKIP_ARGS_MAX) {
      fprintf(stderr, "gyroctl: skip: at most %d ranges\n", SKIP_ARGS_MAX);
      return EXIT_USAGE;
    }
    gy_wire_op_range_t *r = c == 's' ? &rs[ns] : &rt[nt];
    if (parse_range("skip", c == 's' ? "--samples" : "--steps", optarg, r)) return EXIT_USAGE;
    if (c == 's')
      ns++;
    else
      nt++;
  }
  if (optind != argc || !(ns + nt)) {
    fprintf(stderr, "gyroctl: skip wants --samples A-B and/or --steps A-B, and nothing else\n");
    return EXIT_USAGE;
  }
  gy_wire_op_command_t req = {.kind = GY_WIRE_OP_ROLLBACK,
                              .token = o->token,
                              .newest = 1,
                              .skip = rs,
                              .nskip = ns,
                              .skip_steps = rt,
                              .nskip_steps = nt};
  return send_command(o, &req, "skip (rollback to the newest committed checkpoint)");
}

/* ----------------------------------------- events ----------------------------------------- */

static void print_event(const gy_wire_op_event_t *e);

static int cmd_events(const ctl_opts_t *o, int argc, char **argv) {
  static const struct option opts[] = {{"since", required_argument, 0, 's'}, {0, 0, 0, 0}};
  uint64_t since = 0;
  int c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (c != 's') return EXIT_USAGE;
    if (parse_u64(optarg, &since)) {
      fprintf(stderr, "gyroctl: events: --since wants an event id, got '%s'\n", optarg);
      return EXIT_USAGE;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "gyroctl: events: unexpected argument '%s'\n", argv[optind]);
    return EXIT_USAGE;
  }
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_op_events_encode(since, o->token, &buf, &len);
  gy_wire_op_reply_t m;
  int code =
      operator_call(o, GY_METHOD_OPERATOR_EVENTS, enc, buf, len, GY_WIRE_OP_EVENTS_REPLY, &m);
  if (code) return code;
  for (size_t i = 0; i < m.nevents; i++) {
    if (o->json) {
      print_json(gy_wire_op_event_json(&m, i)); /* one object per line, like watch */
    } else {
      printf("%-6" PRIu64 " ", m.events[i].id);
      print_event(&m.events[i]);
    }
  }
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

/* -------------------------------------- checkpoints -------------------------------------- */

static void print_checkpoint(const gy_wire_op_checkpoint_t *c) {
  printf("%s %8" PRId64 "  %-7s", c->best ? "*" : " ", c->step, c->clean ? "clean" : "suspect");
  if (!c->has_eval) {
    printf("  (not evaluated)\n");
    return;
  }
  printf("  mean %7.4f", c->mean_loss);
  for (size_t k = 0; k < c->nsources; k++) {
    const gy_wire_op_source_eval_t *x = &c->sources[k];
    printf("  %s %.4f ppl %.2f", x->source, x->loss, x->ppl);
    if (x->cloze_items) printf(" cloze %.1f%%", 100.0 * x->cloze_accuracy);
  }
  printf("%s\n", c->best ? "  <- best" : "");
}

static int cmd_checkpoints(const ctl_opts_t *o, int argc, char **argv) {
  static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {0, 0, 0, 0}};
  int c, json = o->json;
  optind = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (c != 'j') return EXIT_USAGE;
    json = 1;
  }
  if (optind != argc) {
    fprintf(stderr, "gyroctl: checkpoints: unexpected argument '%s'\n", argv[optind]);
    return EXIT_USAGE;
  }
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_op_checkpoints_encode(o->token, &buf, &len);
  gy_wire_op_reply_t m;
  int code = operator_call(o, GY_METHOD_OPERATOR_CHECKPOINTS, enc, buf, len,
                           GY_WIRE_OP_CHECKPOINTS_REPLY, &m);
  if (code) return code;
  const gy_wire_op_reply_t *r = &m;
  if (json) {
    print_json(gy_wire_op_reply_json(&m));
  } else if (!r->ncheckpoints) {
    printf("no committed checkpoint yet\n");
  } else {
    printf("  %8s  %-7s  held-out figures per source (loss in nats)\n", "step", "state");
    for (size_t i = 0; i < r->ncheckpoints; i++)
      print_checkpoint(&r->checkpoints[i]);
    if (r->best_step >= 0)
      printf("best: checkpoint %" PRId64 " (lowest mean held-out loss among the clean ones)\n",
             r->best_step);
    else
      printf("best: none (no clean checkpoint has an evaluation)\n");
  }
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

/* ----------------------------------------- policy ----------------------------------------- */

#define POLICY_FILE_MAX (1 << 20)

static int cmd_policy(const ctl_opts_t *o, int argc, char **argv) {
  gy_wire_op_reply_t m;
  int code;
  uint8_t *buf;
  size_t len;
  if (argc == 2 && !strcmp(argv[1], "show")) {
    int enc = gy_wire_op_empty_encode(&buf, &len);
    code = operator_call(o, GY_METHOD_OPERATOR_POLICY_SHOW, enc, buf, len, GY_WIRE_OP_POLICY_REPLY,
                         &m);
  } else if (argc == 3 && !strcmp(argv[1], "set")) {
    const char *path = argv[2];
    FILE *f = fopen(path, "rb");
    if (!f) {
      fprintf(stderr, "gyroctl: policy set: cannot open %s: %s\n", path, strerror(errno));
      return EXIT_USAGE;
    }
    char *text = malloc(POLICY_FILE_MAX + 1);
    size_t n = text ? fread(text, 1, POLICY_FILE_MAX + 1, f) : 0;
    int bad = !text || ferror(f) || n > POLICY_FILE_MAX || memchr(text, 0, n);
    fclose(f);
    if (bad) {
      fprintf(stderr, "gyroctl: policy set: %s: %s\n", path,
              !text                 ? "out of memory"
              : n > POLICY_FILE_MAX ? "larger than 1 MiB"
                                    : "unreadable or not text");
      free(text);
      return EXIT_USAGE;
    }
    text[n] = 0;
    int enc = gy_wire_op_policy_set_encode(text, path, o->token, &buf, &len);
    free(text);
    code =
        operator_call(o, GY_METHOD_OPERATOR_POLICY_SET, enc, buf, len, GY_WIRE_OP_POLICY_REPLY, &m);
    if (!code && !o->json) {
      gy_wire_op_reply_free(&m);
      printf("policy set: %s accepted; the run uses it from now on\n", path);
      return EXIT_OK;
    }
  } else {
    fprintf(stderr, "gyroctl: policy wants `show` or `set FILE`\n");
    return EXIT_USAGE;
  }
  if (code) return code;
  if (o->json)
    print_json(gy_wire_op_reply_json(&m));
  else
    fputs(m.yaml, stdout);
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

/* --------------------------------------- quarantine --------------------------------------- */

#define PREVIEW_TOKENS 64

/* The safe preview of a region: its first tokens read from the shard file here (llm.c format:
 * a 256 x int32 header, magic 20240520, then uint16 tokens), as text with every byte outside
 * printable ASCII escaped (\n, \t, \xHH; a byte-level vocabulary), tokens >= 256 as <id>.
 * Into buf; 0, or -1 with why in buf (the file is not readable here, not a shard, ...). */
static int preview(const char *file, uint64_t offset, uint64_t length, char *buf, size_t len) {
  FILE *f = fopen(file, "rb");
  if (!f) {
    snprintf(buf, len, "(cannot read %s here: %s)", file, strerror(errno));
    return -1;
  }
  int32_t h[256];
  uint16_t tok[PREVIEW_TOKENS];
  size_t want = length < PREVIEW_TOKENS ? (size_t)length : PREVIEW_TOKENS, got = 0;
  if (fread(h, sizeof(h[0]), 256, f) != 256 || h[0] != 20240520) {
    fclose(f);
    snprintf(buf, len, "(%s is not a token shard)", file);
    return -1;
  }
  if ((uint64_t)(uint32_t)h[2] <= offset) {
    fclose(f);
    snprintf(buf, len, "(offset %llu is past the shard's %u tokens)", (unsigned long long)offset,
             (unsigned)h[2]);
    return -1;
  }
  if (!fseeko(f, (off_t)(1024 + 2 * offset), SEEK_SET)) got = fread(tok, 2, want, f);
  fclose(f);
  size_t o = 0;
  buf[0] = 0;
  for (size_t i = 0; i < got && o + 8 < len; i++) {
    unsigned t = tok[i];
    if (t >= 256)
      o += (size_t)snprintf(buf + o, len - o, "<%u>", t);
    else if (t == '\n')
      o += (size_t)snprintf(buf + o, len - o, "\\n");
    else if (t == '\t')
      o += (size_t)snprintf(buf + o, len - o, "\\t");
    else if (t == '\\')
      o += (size_t)snprintf(buf + o, len - o, "\\\\");
    else if (t < 0x20 || t >= 0x7f)
      o += (size_t)snprintf(buf + o, len - o, "\\x%02x", t);
    else
      buf[o++] = (char)t, buf[o] = 0;
  }
  if (got < want && o + 16 < len) snprintf(buf + o, len - o, "%s(short read)", o ? " " : "");
  return 0;
}

static void print_qentry(const gy_wire_op_qentry_t *e, int with_preview) {
  char first[32], doc[32];
  if (e->first_step < 0)
    snprintf(first, sizeof(first), "operator");
  else
    snprintf(first, sizeof(first), "%" PRId64, e->first_step);
  if (e->document < 0)
    snprintf(doc, sizeof(doc), "-");
  else
    snprintf(doc, sizeof(doc), "%" PRId64, e->document);
  printf("%-6" PRIu64 "  %-8s  %-8s  %12" PRIu64 "  %8" PRIu64 "  %6s  %-14s  %10s  %5u  %s\n",
         e->id, e->released ? "released" : "active", e->channel, e->offset, e->length, doc,
         e->reason, first, e->hits, e->file);
  if (with_preview) {
    char pv[PREVIEW_TOKENS * 4 + 64];
    preview(e->file, e->offset, e->length, pv, sizeof(pv));
    printf("        preview: %s\n", pv);
  }
}

static void print_qheader(void) {
  printf("%-6s  %-8s  %-8s  %12s  %8s  %6s  %-14s  %10s  %5s  %s\n", "ID", "STATE", "CHANNEL",
         "OFFSET", "LENGTH", "DOC", "REASON", "FIRST_STEP", "HITS", "FILE");
}

/* The JSON of a reply's entries with a "preview" member each (with_preview). */
static json_t *qentries_json(const gy_wire_op_reply_t *m, int with_preview) {
  json_t *j = gy_wire_op_reply_json(m);
  json_t *a = json_object_get(j, "entries");
  for (size_t i = 0; with_preview && i < json_array_size(a) && i < m->nqentries; i++) {
    const gy_wire_op_qentry_t *e = &m->qentries[i];
    char pv[PREVIEW_TOKENS * 4 + 64];
    int rc = preview(e->file, e->offset, e->length, pv, sizeof(pv));
    json_object_set_new(json_array_get(a, i), rc ? "preview_error" : "preview", json_string(pv));
  }
  return j;
}

/* quarantine list: every page of the controller's list, as a table or one JSON object
 * {"entries": [...], "total", "active"} (--json; --preview adds each region's first tokens, read
 * from the shard here). */
static int quar_list(const ctl_opts_t *o, int json, int with_preview) {
  uint64_t after = 0;
  json_t *all = json ? json_array() : NULL;
  uint64_t total = 0, active = 0;
  int first = 1;
  for (;;) {
    uint8_t *buf;
    size_t len;
    int enc = gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_LIST, o->token, NULL, 0, NULL, 0, after,
                                           0, &buf, &len);
    gy_wire_op_reply_t m;
    int code = operator_call(o, GY_METHOD_OPERATOR_QUARANTINE, enc, buf, len,
                             GY_WIRE_OP_QUARANTINE_REPLY, &m);
    if (code) {
      json_decref(all);
      return code;
    }
    total = m.qtotal;
    active = m.qactive;
    if (json) {
      json_t *j = qentries_json(&m, with_preview);
      json_array_extend(all, json_object_get(j, "entries"));
      json_decref(j);
    } else {
      if (first && !m.nqentries) printf("the quarantine list is empty\n");
      if (first && m.nqentries) print_qheader();
      for (size_t i = 0; i < m.nqentries; i++)
        print_qentry(&m.qentries[i], with_preview);
    }
    first = 0;
    uint64_t next = m.qnext_id;
    gy_wire_op_reply_free(&m);
    if (!next) break;
    after = next - 1;
  }
  if (json)
    print_json(json_pack("{s:o, s:I, s:I}", "entries", all, "total", (json_int_t)total, "active",
                         (json_int_t)active));
  else if (total)
    printf("%" PRIu64 " entries, %" PRIu64 " active\n", total, active);
  return EXIT_OK;
}

#define QUAR_IDS_MAX 1024

static int cmd_quarantine(const ctl_opts_t *o, int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, 0, 'j'},          {"preview", no_argument, 0, 'p'},
      {"channel", required_argument, 0, 'c'}, {"file", required_argument, 0, 'f'},
      {"offset", required_argument, 0, 'o'},  {"length", required_argument, 0, 'l'},
      {"reason", required_argument, 0, 'r'},  {0, 0, 0, 0}};
  if (argc < 2) {
    fprintf(stderr, "gyroctl: quarantine wants list, add or release\n");
    return EXIT_USAGE;
  }
  const char *verb = argv[1];
  int json = o->json, with_preview = 0, c, have_off = 0, have_len = 0;
  gy_wire_op_qentry_t e = {.document = -1};
  uint64_t v;
  optind = 0;
  while ((c = getopt_long(argc - 1, argv + 1, "+", opts, NULL)) != -1) {
    switch (c) {
    case 'j':
      json = 1;
      break;
    case 'p':
      with_preview = 1;
      break;
    case 'c':
      e.channel = optarg;
      break;
    case 'f':
      e.file = optarg;
      break;
    case 'r':
      e.reason = optarg;
      break;
    case 'o':
    case 'l':
      if (parse_u64(optarg, &v)) {
        fprintf(stderr,
                "gyroctl: quarantine: --%s wants a token count (an integer >= 0), got '%s'\n",
                c == 'o' ? "offset" : "length", optarg);
        return EXIT_USAGE;
      }
      if (c == 'o')
        e.offset = v, have_off = 1;
      else
        e.length = v, have_len = 1;
      break;
    default:
      return EXIT_USAGE;
    }
  }
  int rest = optind + 1; /* argv index of the first operand */
  if (!strcmp(verb, "list")) {
    if (rest != argc || e.channel || e.file || have_off || have_len || e.reason) {
      fprintf(stderr, "gyroctl: quarantine list takes --json and --preview only\n");
      return EXIT_USAGE;
    }
    return quar_list(o, json, with_preview);
  }
  uint8_t *buf;
  size_t len;
  int enc;
  if (!strcmp(verb, "add")) {
    if (rest != argc || !e.channel || !e.file || !have_off || !have_len || with_preview) {
      fprintf(stderr, "gyroctl: quarantine add wants --channel C --file F --offset N --length N "
                      "[--reason R] and nothing else\n");
      return EXIT_USAGE;
    }
    if (!e.length) {
      fprintf(stderr, "gyroctl: quarantine add: --length 0 is an empty region\n");
      return EXIT_USAGE;
    }
    enc = gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_ADD, o->token, &e, 1, NULL, 0, 0, 0, &buf,
                                       &len);
  } else if (!strcmp(verb, "release")) {
    static uint64_t ids[QUAR_IDS_MAX];
    size_t n = 0;
    if (e.channel || e.file || have_off || have_len || e.reason || with_preview || rest == argc) {
      fprintf(stderr, "gyroctl: quarantine release wants entry ids (see quarantine list)\n");
      return EXIT_USAGE;
    }
    for (int i = rest; i < argc; i++) {
      if (n == QUAR_IDS_MAX || parse_u64(argv[i], &ids[n]) || !ids[n]) {
        fprintf(stderr, "gyroctl: quarantine release: '%s' is not an entry id (at most %d)\n",
                argv[i], QUAR_IDS_MAX);
        return EXIT_USAGE;
      }
      n++;
    }
    enc = gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_RELEASE, o->token, NULL, 0, ids, n, 0, 0,
                                       &buf, &len);
  } else {
    fprintf(stderr, "gyroctl: quarantine wants list, add or release, not '%s'\n", verb);
    return EXIT_USAGE;
  }
  gy_wire_op_reply_t m;
  int code = operator_call(o, GY_METHOD_OPERATOR_QUARANTINE, enc, buf, len,
                           GY_WIRE_OP_QUARANTINE_REPLY, &m);
  if (code) return code;
  if (json) {
    print_json(gy_wire_op_reply_json(&m));
  } else {
    if (m.nqentries) print_qheader();
    for (size_t i = 0; i < m.nqentries; i++)
      print_qentry(&m.qentries[i], 0);
    if (m.seq)
      printf("quarantine %s: directive %" PRIu64 ", applied by every rank at step %" PRId64 "\n",
             verb, m.seq, m.at_step);
    else
      printf("quarantine %s: recorded; no gang takes a directive now: the workers get it with "
             "their next assignment\n",
             verb);
  }
  gy_wire_op_reply_free(&m);
  return EXIT_OK;
}

/* ----------------------------------------- watch ----------------------------------------- */

typedef struct {
  const ctl_opts_t *o;
  atomic_int done;
  atomic_int status;
  atomic_long received;
  char details[256]; /* written before done is set */
} watch_t;

static void print_event(const gy_wire_op_event_t *e) {
  char when[32] = "";
  time_t t = (time_t)e->time;
  struct tm tm;
  if (localtime_r(&t, &tm)) strftime(when, sizeof(when), "%H:%M:%S", &tm);
  printf("%s  step %-7" PRId64 " %-14s %s\n", when, e->step, e->kind, e->message);
}

static void print_step_line(const gy_wire_op_status_t *r) {
  char rate[32];
  fmt_rate(rate, sizeof(rate), r->tokens_per_s);
  printf("step %-7" PRId64 " ", r->step);
  print_losses(r);
  printf("  grad_norm %.3g  tok/s %s  %s\n", r->grad_norm, rate, r->state);
}

static void watch_on_message(void *ud, const uint8_t *msg, size_t len) {
  watch_t *w = ud;
  gy_wire_op_reply_t m;
  if (gy_wire_op_reply_decode(GY_WIRE_OP_WATCH_MSG, msg, len, &m)) {
    fprintf(stderr, "gyroctl: watch: a message from the controller does not decode (%zu bytes)\n",
            len);
    return;
  }
  atomic_fetch_add(&w->received, 1);
  if (w->o->json)
    print_json(gy_wire_op_reply_json(&m));
  else if (m.watch == GY_WIRE_OP_WATCH_EVENT)
    print_event(&m.events[0]);
  else if (m.watch == GY_WIRE_OP_WATCH_STATUS)
    print_step_line(&m.status);
  fflush(stdout);
  gy_wire_op_reply_free(&m);
}

static void watch_on_close(void *ud, int status, const char *details) {
  watch_t *w = ud;
  snprintf(w->details, sizeof(w->details), "%s", details ? details : "");
  atomic_store(&w->status, status);
  atomic_store(&w->done, 1);
}

static int cmd_watch(const ctl_opts_t *o, int argc, char **argv) {
  int steps = 0;
  static const struct option opts[] = {{"steps", no_argument, 0, 's'}, {0, 0, 0, 0}};
  int c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (c == 's')
      steps = 1;
    else
      return EXIT_USAGE;
  }
  if (optind != argc) {
    fprintf(stderr, "gyroctl: watch: unexpected argument '%s'\n", argv[optind]);
    return EXIT_USAGE;
  }
  char err[512] = "";
  gy_rpc_client_t *cl = NULL;
  gy_rpc_cstream_t *s = NULL;
  watch_t w = {.o = o};
  int code;
  int crc = gy_rpc_client_create_tls(&cl, o->addr, &o->tls, err, sizeof(err));
  if (crc) {
    fprintf(stderr, "gyroctl: cannot reach controller %s: %s\n", o->addr, err);
    return crc == GY_EIO || crc == GY_EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
  }
  gy_rpc_cstream_cbs_t cbs = {.on_message = watch_on_message, .on_close = watch_on_close};
  int rc = gy_rpc_cstream_open(cl, GY_METHOD_OPERATOR_WATCH, o->auth[0] ? "authorization" : NULL,
                               o->auth[0] ? o->auth : NULL, &cbs, &w, &s, err, sizeof(err));
  if (rc) {
    code = call_failed(o, GY_METHOD_OPERATOR_WATCH, rc, GY_RPC_UNAVAILABLE, err);
    goto done;
  }
  uint8_t *buf;
  size_t len;
  if ((rc = gy_wire_op_watch_encode(steps, o->token, &buf, &len))) {
    code = call_failed(o, GY_METHOD_OPERATOR_WATCH, rc, 0, "");
    goto done;
  }
  if (len > 1200) {
    free(buf);
    fprintf(stderr, "gyroctl: --token is too long\n");
    code = EXIT_USAGE;
    goto done;
  }
  gy_rpc_cstream_send(s, buf, len); /* a closed stream reports itself through on_close */
  free(buf);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int interrupted = 0;
  while (!atomic_load(&w.done)) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    if (sigtimedwait(&set, NULL, &ts) > 0) {
      interrupted = 1;
      break;
    }
  }
  if (interrupted) {
    code = EXIT_OK;
    goto done;
  }
  int st = atomic_load(&w.status);
  if (st == GY_RPC_OK) {
    if (!o->json) printf("(the controller ended the stream)\n");
    code = EXIT_OK;
  } else {
    code = call_failed(o, GY_METHOD_OPERATOR_WATCH, GY_ECOMM, st, w.details);
  }
done:
  gy_rpc_cstream_close(s);
  gy_rpc_client_destroy(cl);
  return code;
}

/* ----------------------------------------- main ----------------------------------------- */

/* The token read from --token-file: every command returns straight from main, so it is wiped
 * and freed at exit. */
static char *g_file_token;
static void free_file_token(void) {
  if (g_file_token) memset(g_file_token, 0, strlen(g_file_token));
  free(g_file_token);
  g_file_token = NULL;
}

int main(int argc, char **argv) {
  ctl_opts_t o = {.addr = getenv("GYRO_CONTROLLER"),
                  .token = getenv("GYRO_OPERATOR_TOKEN"),
                  .timeout_ms = 5000,
                  .tls = {.ca = getenv("GYRO_TLS_CA"),
                          .cert = getenv("GYRO_TLS_CERT"),
                          .key = getenv("GYRO_TLS_KEY")}};
  if (!o.token || !*o.token) o.token = getenv("GYRO_TOKEN");
  if (!o.addr || !*o.addr) o.addr = "127.0.0.1:7070";
  const char *token_file = NULL;
  char *file_token = NULL; /* owned by g_file_token: wiped and freed at exit */
  static const struct option opts[] = {{"controller", required_argument, 0, 'c'},
                                       {"token", required_argument, 0, 't'},
                                       {"token-file", required_argument, 0, 'F'},
                                       {"tls-ca", required_argument, 0, 'A'},
                                       {"tls-cert", required_argument, 0, 'C'},
                                       {"tls-key", required_argument, 0, 'K'},
                                       {"tls-server-name", required_argument, 0, 'N'},
                                       {"json", no_argument, 0, 'j'},
                                       {"timeout", required_argument, 0, 'T'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      o.addr = optarg;
      break;
    case 't':
      o.token = optarg;
      break;
    case 'F':
      token_file = optarg;
      break;
    case 'A':
      o.tls.ca = optarg;
      break;
    case 'C':
      o.tls.cert = optarg;
      break;
    case 'K':
      o.tls.key = optarg;
      break;
    case 'N':
      o.tls.target_name = optarg;
      break;
    case 'j':
      o.json = 1;
      break;
    case 'T': {
      char *end;
      errno = 0;
      long v = strtol(optarg, &end, 10);
      if (*end || errno || v < 1 || v > 3600000) {
        fprintf(stderr, "gyroctl: --timeout wants milliseconds in [1, 3600000], got '%s'\n",
                optarg);
        return EXIT_USAGE;
      }
      o.timeout_ms = (int)v;
      break;
    }
    case 'h':
      usage(stdout);
      return EXIT_OK;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "gyroctl: missing COMMAND\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!*o.addr) {
    fprintf(stderr, "gyroctl: --controller is empty\n");
    return EXIT_USAGE;
  }
  if (token_file) {
    char terr[600];
    if (gy_rpc_token_read_file(token_file, &file_token, terr, sizeof(terr))) {
      fprintf(stderr, "gyroctl: --token-file: %s\n", terr);
      return EXIT_USAGE;
    }
    o.token = g_file_token = file_token;
    atexit(free_file_token);
  }
  if (o.token && *o.token) {
    char terr[300];
    if (gy_rpc_token_check("--token", o.token, terr, sizeof(terr))) {
      fprintf(stderr, "gyroctl: %s\n", terr);
      return EXIT_USAGE;
    }
    snprintf(o.auth, sizeof(o.auth), "Bearer %s", o.token);
  }
  const char *cmd = argv[optind];
  int cargc = argc - optind;
  char **cargv = argv + optind;
  if (!strcmp(cmd, "launch")) return gy_launch_main(cargc, cargv, argv[0]);
  if (!strcmp(cmd, "help")) {
    usage(stdout);
    return EXIT_OK;
  }
  /* Block the stop signals before the gRPC client starts its threads: watch waits for them
   * with sigtimedwait, and unary calls end by their deadline anyway. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (!strcmp(cmd, "watch")) pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (!strcmp(cmd, "status")) return cmd_status(&o, cargc, cargv);
  if (!strcmp(cmd, "watch")) return cmd_watch(&o, cargc, cargv);
  if (!strcmp(cmd, "pause")) return cmd_directive(&o, cargc, cargv, GY_WIRE_OP_PAUSE);
  if (!strcmp(cmd, "resume")) return cmd_directive(&o, cargc, cargv, GY_WIRE_OP_RESUME);
  if (!strcmp(cmd, "stop")) return cmd_directive(&o, cargc, cargv, GY_WIRE_OP_STOP);
  if (!strcmp(cmd, "checkpoint")) return cmd_directive(&o, cargc, cargv, GY_WIRE_OP_CHECKPOINT);
  if (!strcmp(cmd, "set")) return cmd_directive(&o, cargc, cargv, GY_WIRE_OP_SET_HPARAMS);
  if (!strcmp(cmd, "rollback")) return cmd_rollback(&o, cargc, cargv);
  if (!strcmp(cmd, "skip")) return cmd_skip(&o, cargc, cargv);
  if (!strcmp(cmd, "events")) return cmd_events(&o, cargc, cargv);
  if (!strcmp(cmd, "policy")) return cmd_policy(&o, cargc, cargv);
  if (!strcmp(cmd, "checkpoints")) return cmd_checkpoints(&o, cargc, cargv);
  if (!strcmp(cmd, "quarantine")) return cmd_quarantine(&o, cargc, cargv);
  fprintf(stderr, "gyroctl: unknown command '%s'\n", cmd);
  usage(stderr);
  return EXIT_USAGE;
}
