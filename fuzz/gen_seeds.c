/* gen_seeds: writes the binary seeds of fuzz/corpus/ (encoded requests for fuzz_messages, a tiny
 * valid checkpoint for fuzz_ckpt) with the same generated protobuf-c code and checkpoint writer
 * the product uses. Run from scripts/fuzz.sh into fuzz/corpus/ when the seeds are missing:
 *
 *   gen_seeds CORPUS_DIR   (writes CORPUS_DIR/fuzz_messages/seed-*, CORPUS_DIR/fuzz_ckpt/seed-*)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proto/gyro.pb-c.h"
#include "worker/ckpt.h"

static const char *dir;

static void put(const char *harness, const char *name, uint8_t type, const void *p, size_t n) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", dir, harness);
  mkdir(path, 0755);
  snprintf(path, sizeof(path), "%s/%s/seed-%s", dir, harness, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  if (type != 0xff) fputc(type, f);
  if (n) fwrite(p, 1, n, f);
  fclose(f);
}

static void put_msg(const char *name, uint8_t type, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(n + 1);
  protobuf_c_message_pack(m, b);
  put("fuzz_messages", name, type, b, n);
  free(b);
}

/* Appends one session frame [rank][len u16][WorkerMsg] to buf at *off. */
static void frame(uint8_t *buf, size_t *off, int rank, const Gyro__WorkerMsg *wm) {
  size_t n = gyro__worker_msg__get_packed_size(wm);
  buf[(*off)++] = (uint8_t)rank;
  buf[(*off)++] = (uint8_t)(n & 0xff);
  buf[(*off)++] = (uint8_t)(n >> 8);
  gyro__worker_msg__pack(wm, buf + *off);
  *off += n;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen_seeds CORPUS_DIR\n");
    return 2;
  }
  dir = argv[1];

  Gyro__JoinRequest jr = GYRO__JOIN_REQUEST__INIT;
  jr.worker_id = "worker-0";
  jr.ordinal = 0;
  jr.join_token = "tok";
  jr.host = "node-a";
  jr.pid = 4242;
  put_msg("join", 0, &jr.base);
  jr.steps_done = 40;
  jr.generation = 3;
  jr.ordinal = -1;
  put_msg("rejoin", 0, &jr.base);

  /* a session: both ranks report steps 0 and 1 (3 channels, top samples), heartbeats, an ack */
  static uint8_t buf[8192];
  size_t off = 0;
  Gyro__ChannelStat ch[3] = {GYRO__CHANNEL_STAT__INIT, GYRO__CHANNEL_STAT__INIT,
                             GYRO__CHANNEL_STAT__INIT};
  Gyro__ChannelStat *chp[3] = {&ch[0], &ch[1], &ch[2]};
  const char *names[3] = {"zh", "en", "code"};
  for (int i = 0; i < 3; i++) {
    ch[i].name = (char *)names[i];
    ch[i].loss_sum = 100.0 + i;
    ch[i].tokens = 64;
  }
  Gyro__SampleLoss top = GYRO__SAMPLE_LOSS__INIT, *topp = &top;
  top.id = 17;
  top.channel = "en";
  top.loss = 5.5f;
  for (int step = 0; step < 2; step++)
    for (int rank = 0; rank < 2; rank++) {
      Gyro__StepReport r = GYRO__STEP_REPORT__INIT;
      r.generation = 1;
      r.rank = rank;
      r.step = step;
      r.loss = 4.5;
      r.n_channels = 3;
      r.channels = chp;
      r.grad_norm = 1.5;
      r.lr = 1e-3;
      r.step_ms = 20;
      r.tokens_per_s = 9000;
      r.n_top = 1;
      r.top = &topp;
      r.has_checkpoint = step == 1;
      r.checkpoint_step = step == 1 ? 2 : 0;
      Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
      wm.msg_case = GYRO__WORKER_MSG__MSG_REPORT;
      wm.report = &r;
      frame(buf, &off, rank, &wm);
    }
  Gyro__Heartbeat hb = GYRO__HEARTBEAT__INIT;
  hb.generation = 1;
  hb.rank = 1;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_HEARTBEAT;
  wm.heartbeat = &hb;
  frame(buf, &off, 1, &wm);
  Gyro__DirectiveAck ack = GYRO__DIRECTIVE_ACK__INIT;
  ack.generation = 1;
  ack.seq = 1;
  ack.rank = 0;
  ack.step = 2;
  ack.ok = 1;
  wm.msg_case = GYRO__WORKER_MSG__MSG_ACK;
  wm.ack = &ack;
  frame(buf, &off, 0, &wm);
  Gyro__Hello hello = GYRO__HELLO__INIT;
  hello.session_id = "s-unknown";
  hello.generation = 1;
  hello.rank = 0;
  wm.msg_case = GYRO__WORKER_MSG__MSG_HELLO;
  wm.hello = &hello;
  frame(buf, &off, 0, &wm);
  put("fuzz_messages", "session", 1, buf, off);

  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  hp.lr_scale = 0.5f;
  hp.grad_clip = 0.8f;
  hp.present = 3;
  Gyro__CommandRequest cr = GYRO__COMMAND_REQUEST__INIT;
  cr.kind = GYRO__DIRECTIVE__KIND__SET_HPARAMS;
  cr.hparams = &hp;
  cr.token = "tok";
  put_msg("command-set", 2, &cr.base);
  Gyro__SkipRange sr = GYRO__SKIP_RANGE__INIT, *srp = &sr;
  sr.first = 100;
  sr.last = 164;
  cr.kind = GYRO__DIRECTIVE__KIND__ROLLBACK;
  cr.to_step = 0;
  cr.n_skip = 1;
  cr.skip = &srp;
  put_msg("command-rollback", 2, &cr.base);

  Gyro__StoreSetRequest ss = GYRO__STORE_SET_REQUEST__INIT;
  ss.key = "g1/rank0";
  ss.value.data = (uint8_t *)"127.0.0.1:29500";
  ss.value.len = 15;
  put_msg("store-set", 3, &ss.base);
  Gyro__StoreGetRequest sg = GYRO__STORE_GET_REQUEST__INIT;
  sg.key = "g1/rank0";
  sg.timeout_ms = 1000;
  put_msg("store-get", 4, &sg.base);
  /* a session whose rank 0 reports masked samples with their provenance (the guard) */
  {
    static uint8_t mbuf[8192];
    size_t moff = 0;
    Gyro__Provenance pv = GYRO__PROVENANCE__INIT;
    pv.file = "/data/en/train_000.bin";
    pv.offset = 123456;
    pv.length = 65;
    pv.document = 17;
    pv.region_offset = 123000;
    pv.region_length = 2048;
    Gyro__MaskedSample ms[2] = {GYRO__MASKED_SAMPLE__INIT, GYRO__MASKED_SAMPLE__INIT};
    Gyro__MaskedSample *msp[2] = {&ms[0], &ms[1]};
    for (int i = 0; i < 2; i++) {
      ms[i].id = 40 + (uint64_t)i;
      ms[i].channel = "en";
      ms[i].loss = 9.5f;
      ms[i].reason = i ? "nontext_high" : "loss_high";
      ms[i].median = 3.1f;
      ms[i].threshold = 1.5f;
      ms[i].where = &pv;
    }
    ch[1].masked = 2;
    for (int rank = 0; rank < 2; rank++) {
      Gyro__StepReport r = GYRO__STEP_REPORT__INIT;
      r.generation = 1;
      r.rank = rank;
      r.step = 0;
      r.loss = 4.5;
      r.n_channels = 3;
      r.channels = chp;
      r.samples = 8;
      r.n_masked = 2;
      r.masked = msp;
      Gyro__WorkerMsg w2 = GYRO__WORKER_MSG__INIT;
      w2.msg_case = GYRO__WORKER_MSG__MSG_REPORT;
      w2.report = &r;
      frame(mbuf, &moff, rank, &w2);
    }
    ch[1].masked = 0;
    put("fuzz_messages", "session-masked", 1, mbuf, moff);
    Gyro__QuarantineEntry qe = GYRO__QUARANTINE_ENTRY__INIT, *qep = &qe;
    qe.channel = "en";
    qe.file = "en/train_000.bin";
    qe.offset = 4096;
    qe.length = 2048;
    qe.reason = "operator";
    Gyro__QuarantineRequest qr = GYRO__QUARANTINE_REQUEST__INIT;
    qr.op = GYRO__QUARANTINE_REQUEST__OP__ADD;
    qr.token = "tok";
    qr.n_entries = 1;
    qr.entries = &qep;
    put_msg("quarantine-add", 18, &qr.base);
    uint64_t ids[2] = {1, 7};
    Gyro__QuarantineRequest rr = GYRO__QUARANTINE_REQUEST__INIT;
    rr.op = GYRO__QUARANTINE_REQUEST__OP__RELEASE;
    rr.n_ids = 2;
    rr.ids = ids;
    put_msg("quarantine-release", 18, &rr.base);
  }
  Gyro__EventsRequest er = GYRO__EVENTS_REQUEST__INIT;
  er.since_id = 10;
  er.token = "tok";
  put_msg("events", 5, &er.base);
  Gyro__PolicySetRequest ps = GYRO__POLICY_SET_REQUEST__INIT;
  ps.yaml = "observe_steps: 3\nmax_rollbacks: 8\n";
  ps.name = "p.yaml";
  put_msg("policy-set", 6, &ps.base);
  Gyro__WatchRequest wr = GYRO__WATCH_REQUEST__INIT;
  wr.steps = 1;
  wr.token = "tok";
  put_msg("watch", 7, &wr.base);
  put("fuzz_messages", "empty", 8, NULL, 0);

  /* a tiny valid checkpoint: two blobs */
  float w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const char *state = "{\"step\": 3}";
  gy_ckpt_meta_t meta = {.step = 3, .config_hash = 0x1234, .rank = 0, .world = 1, .dp = 1, .tp = 1};
  gy_ckpt_blob_t blobs[2] = {{.name = "param/wte", .data = w, .nbytes = sizeof(w)},
                             {.name = "state", .data = state, .nbytes = strlen(state)}};
  gy_ckpt_buf_t *b = NULL;
  if (gy_ckpt_build(&b, &meta, blobs, 2)) {
    fprintf(stderr, "gen_seeds: gy_ckpt_build failed\n");
    return 1;
  }
  put("fuzz_ckpt", "tiny", 0xff, gy_ckpt_buf_data(b), gy_ckpt_buf_len(b));
  gy_ckpt_buf_unref(b);
  return 0;
}
