/* test_wire: the wire layer's conversions (wire/hparams, wire/agent_wire, wire/operator_wire,
 * controller/wire). Round trips: a C value is encoded by one side and decoded by the other
 * (agent -> controller, gyroctl -> controller, controller -> agent, controller -> gyroctl), or a
 * message built with the generated code the way the controller builds it is decoded by the agent's
 * or gyroctl's decoder; every field comes back. Malformed bytes are GY_EPROTO everywhere, and the
 * free functions are safe after a failed decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "controller/wire.h"
#include "proto/gyro.pb-c.h"
#include "tests/test.h"
#include "wire/agent_wire.h"
#include "wire/hparams.h"
#include "wire/operator_wire.h"

/* Bytes that unpack as no message: a field 1 of wire type 2 whose length runs past the end. */
static const uint8_t bad[] = {0x0a, 0x7f, 0x01};

static uint8_t *pack_msg(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(*len ? *len : 1);
  REQUIRE(b);
  protobuf_c_message_pack(m, b);
  return b;
}

static gy_hparams_t sample_hparams(void) {
  return (gy_hparams_t){.present = GY_HP_LR_SCALE | GY_HP_SHALLOW_LAYERS | GY_HP_BETA2 |
                                   GY_HP_WSD_DECAY_NOW,
                        .lr_scale = 0.5f,
                        .grad_clip = 1.25f,
                        .eps = 1e-7f,
                        .weight_decay = 0.1f,
                        .shallow_scale = 0.25f,
                        .shallow_layers = 3,
                        .z_loss = 1e-4f,
                        .beta1 = 0.8f,
                        .beta2 = 0.95f,
                        .wsd_decay_now = 1};
}

static void test_hparams_round_trip(void) {
  gy_hparams_t h = sample_hparams(), back;
  Gyro__HParams m = GYRO__HPARAMS__INIT;
  gy_wire_hparams_out(&h, &m);
  size_t len;
  uint8_t *b = pack_msg(&m.base, &len);
  Gyro__HParams *u = gyro__hparams__unpack(NULL, len, b);
  REQUIRE(u);
  gy_wire_hparams_in(u, &back);
  CHECK(!memcmp(&h, &back, sizeof(h)));
  gyro__hparams__free_unpacked(u, NULL);
  free(b);
  gy_wire_hparams_in(NULL, &back);
  CHECK(back.present == 0 && back.lr_scale == 0 && back.wsd_decay_now == 0);
}

static void test_agent_join_round_trip(void) {
  gy_wire_agent_join_t j = {.worker_id = "w-1",
                            .ordinal = 3,
                            .join_token = "tok",
                            .host = "node7",
                            .pid = 4242,
                            .steps_done = 17,
                            .generation = 5};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_agent_join_encode(&j, &b, &len));
  gy_wire_join_req_t d;
  REQUIRE(!gy_wire_join_decode(b, len, &d));
  CHECK(!strcmp(d.join.worker_id, "w-1") && !strcmp(d.join.host, "node7"));
  CHECK(!strcmp(d.join_token, "tok"));
  CHECK_EQ_INT(d.join.ordinal, 3);
  CHECK_EQ_INT(d.join.pid, 4242);
  CHECK_EQ_INT(d.join.steps_done, 17);
  CHECK_EQ_INT(d.join.generation, 5);
  gy_wire_join_free(&d);
  free(b);
  CHECK_EQ_INT(gy_wire_join_decode(bad, sizeof(bad), &d), GY_EPROTO);
  gy_wire_join_free(&d);
}

static void test_agent_session_round_trip(void) {
  gy_agent_channel_t ch[2] = {{"en", 12.5, 100, 0}, {"zh", 3.25, 40, 0}};
  gy_agent_sample_t top[1] = {{99, "en", 7.5f}};
  gy_agent_gpu_t gpu = {.index = 1, .name = "H100", .has_temp = 1, .temp_c = 70};
  gy_agent_report_t rep = {.step = 41,
                           .loss = 2.5,
                           .channels = ch,
                           .nchannels = 2,
                           .grad_norm = 1.5,
                           .grad_norm_shallow = 0.5,
                           .grad_norm_deep = 1.0,
                           .update_ratio = 1e-3,
                           .lr = 3e-4,
                           .nonfinite = 1,
                           .step_ms = 12,
                           .tokens_per_s = 1000,
                           .top = top,
                           .ntop = 1,
                           .gpu = &gpu,
                           .has_checkpoint = 1,
                           .checkpoint_step = 40,
                           .checkpoint_bytes = 1234};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_agent_report_encode(9, 1, &rep, &b, &len));
  gy_wire_worker_msg_t m;
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_REPORT);
  const gy_fleet_report_t *r = &m.report;
  CHECK_EQ_INT(r->generation, 9);
  CHECK_EQ_INT(r->rank, 1);
  CHECK_EQ_INT(r->step, 41);
  CHECK(r->loss == 2.5 && r->grad_norm == 1.5 && r->grad_norm_shallow == 0.5);
  CHECK(r->grad_norm_deep == 1.0 && r->update_ratio == 1e-3 && r->lr == 3e-4);
  CHECK(r->nonfinite && r->step_ms == 12 && r->tokens_per_s == 1000);
  CHECK_EQ_INT(r->nch, 2);
  CHECK(!strcmp(r->ch_name[1], "zh") && r->ch_loss_sum[1] == 3.25 && r->ch_tokens[1] == 40);
  CHECK(r->has_checkpoint && r->checkpoint_step == 40 && r->checkpoint_bytes == 1234);
  gy_wire_session_free(&m);

  /* without a checkpoint the step goes as -1 and the bytes as 0 */
  rep.has_checkpoint = 0;
  REQUIRE(!gy_wire_agent_report_encode(9, 1, &rep, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(!m.report.has_checkpoint && m.report.checkpoint_step == -1 &&
        m.report.checkpoint_bytes == 0);
  gy_wire_session_free(&m);

  REQUIRE(!gy_wire_agent_hello_encode("s-1", 9, 1, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_HELLO && !strcmp(m.session_id, "s-1") && m.generation == 9 &&
        m.rank == 1);
  gy_wire_session_free(&m);

  REQUIRE(!gy_wire_agent_heartbeat_encode(9, 1, 77, NULL, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_HEARTBEAT && m.steps_done == 77 && m.generation == 9);
  CHECK(!m.progress.stepping);
  gy_wire_session_free(&m);
  /* a heartbeat from inside a step carries the trainer's progress */
  gy_agent_progress_t pg = {.stepping = 1, .in_step_ms = 900, .own_ms = 700, .in_collective_ms = 5};
  REQUIRE(!gy_wire_agent_heartbeat_encode(9, 1, 77, &pg, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.progress.stepping && m.progress.own_ms == 700 && m.progress.in_collective_ms == 5);
  gy_wire_session_free(&m);

  REQUIRE(!gy_wire_agent_ack_encode(9, 1, 5, 30, 1, "", 4096, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_ACK && m.seq == 5 && m.step == 30 && m.ok &&
        m.checkpoint_bytes == 4096 && !strcmp(m.error, ""));
  gy_wire_session_free(&m);
  /* a failed ack carries its reason and no size */
  REQUIRE(!gy_wire_agent_ack_encode(9, 1, 6, 30, 0, "no such step", 4096, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(!m.ok && m.checkpoint_bytes == 0 && !strcmp(m.error, "no such step"));
  gy_wire_session_free(&m);

  gy_agent_source_eval_t src[2] = {{"en", 3.0, 20.1, 500, 0.5, 10}, {"zh", 2.0, 7.4, 300, 0, 0}};
  gy_agent_eval_t ev = {.step = 50, .sources = src, .nsources = 2};
  REQUIRE(!gy_wire_agent_eval_encode(9, 0, &ev, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_EVAL && m.step == 50 && m.nsources == 2 && m.rank == 0);
  gy_wire_session_free(&m);

  CHECK_EQ_INT(gy_wire_agent_report_encode(9, 1, &(gy_agent_report_t){.nchannels = 2}, &b, &len),
               GY_EINVAL);
  CHECK_EQ_INT(gy_wire_session_decode(bad, sizeof(bad), &m), GY_EPROTO);
  gy_wire_session_free(&m);
}

static void test_agent_store_round_trip(void) {
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_agent_store_set_encode("g1/rank0", "abc", 3, &b, &len));
  gy_wire_request_t r;
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_STORE_SET, b, len, &r));
  free(b);
  CHECK(!strcmp(r.key, "g1/rank0") && r.value_len == 3 && !memcmp(r.value, "abc", 3));
  gy_wire_request_free(&r);
  REQUIRE(!gy_wire_agent_store_get_encode("g1/x", 2500, &b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_STORE_GET, b, len, &r));
  free(b);
  CHECK(!strcmp(r.key, "g1/x") && r.timeout_ms == 2500);
  gy_wire_request_free(&r);

  Gyro__StoreValue v = GYRO__STORE_VALUE__INIT;
  v.value.data = (uint8_t *)"\x01\x02";
  v.value.len = 2;
  b = pack_msg(&v.base, &len);
  void *val;
  size_t vlen;
  REQUIRE(!gy_wire_agent_store_value_decode(b, len, &val, &vlen));
  CHECK(vlen == 2 && !memcmp(val, "\x01\x02", 2));
  free(val);
  free(b);
  CHECK_EQ_INT(gy_wire_agent_store_value_decode(bad, sizeof(bad), &val, &vlen), GY_EPROTO);
  CHECK(val == NULL && vlen == 0);
}

static void test_agent_assignment_decode(void) {
  Gyro__SkipRange s0 = GYRO__SKIP_RANGE__INIT, s1 = GYRO__SKIP_RANGE__INIT;
  s0.first = 10, s0.last = 20, s1.first = 30, s1.last = 31;
  Gyro__SkipRange *sp[2] = {&s0, &s1};
  Gyro__Assignment a = GYRO__ASSIGNMENT__INIT;
  a.generation = 4, a.rank = 1, a.world = 2, a.tp = 1, a.start_step = 100, a.heartbeat_ms = 250;
  a.config_yaml = "run: x\n", a.config_dir = "/cfg", a.rdzv_prefix = "g4", a.session_id = "s";
  a.n_skip = 2, a.skip = sp;
  size_t len;
  uint8_t *b = pack_msg(&a.base, &len);
  gy_wire_agent_assignment_t d;
  REQUIRE(!gy_wire_agent_assignment_decode(b, len, &d));
  free(b);
  const gy_agent_assignment_t *g = &d.asg;
  CHECK(g->generation == 4 && g->rank == 1 && g->world == 2 && g->tp == 1);
  CHECK(g->start_step == 100 && g->heartbeat_ms == 250);
  CHECK(!strcmp(g->config_yaml, "run: x\n") && !strcmp(g->config_dir, "/cfg"));
  CHECK(!strcmp(g->rdzv_prefix, "g4") && !strcmp(g->session_id, "s"));
  CHECK(g->nskip == 2 && g->skip[0] == 10 && g->skip[1] == 20 && g->skip[2] == 30 &&
        g->skip[3] == 31);
  gy_wire_agent_assignment_free(&d);
  CHECK_EQ_INT(gy_wire_agent_assignment_decode(bad, sizeof(bad), &d), GY_EPROTO);
  gy_wire_agent_assignment_free(&d);
}

static void test_agent_controller_msg_decode(void) {
  Gyro__Grant gr = GYRO__GRANT__INIT;
  gr.generation = 3, gr.horizon = 64;
  Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
  cm.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT, cm.grant = &gr;
  size_t len;
  uint8_t *b = pack_msg(&cm.base, &len);
  gy_wire_agent_ctl_t m;
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_AGENT_CTL_GRANT && m.generation == 3 && m.horizon == 64);
  gy_wire_agent_ctl_free(&m);

  /* a directive as the session service builds it: the knobs through gy_wire_hparams_out */
  gy_hparams_t h = sample_hparams();
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  gy_wire_hparams_out(&h, &hp);
  Gyro__SkipRange s0 = GYRO__SKIP_RANGE__INIT;
  s0.first = 5, s0.last = 9;
  Gyro__SkipRange *sp[1] = {&s0};
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  d.generation = 3, d.seq = 12, d.at_step = 40, d.kind = GYRO__DIRECTIVE__KIND__ROLLBACK;
  d.hparams = &hp, d.to_step = 30, d.n_skip = 1, d.skip = sp, d.reason = "spike";
  cm.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE, cm.grant = NULL, cm.directive = &d;
  b = pack_msg(&cm.base, &len);
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_AGENT_CTL_DIRECTIVE && m.generation == 3);
  CHECK(m.dir.seq == 12 && m.dir.at_step == 40 && m.dir.kind == GY_DIRECTIVE_ROLLBACK);
  CHECK(m.dir.to_step == 30 && m.dir.nskip == 1 && m.dir.skip[0].first == 5 &&
        m.dir.skip[0].last == 9);
  CHECK(!strcmp(m.dir.reason, "spike"));
  CHECK(!memcmp(&m.dir.hparams, &h, sizeof(h)));
  gy_wire_agent_ctl_free(&m);

  /* an empty ControllerMsg decodes as NONE */
  Gyro__ControllerMsg empty = GYRO__CONTROLLER_MSG__INIT;
  b = pack_msg(&empty.base, &len);
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_AGENT_CTL_NONE && !strcmp(m.dir.reason, ""));
  gy_wire_agent_ctl_free(&m);
  CHECK_EQ_INT(gy_wire_agent_ctl_decode(bad, sizeof(bad), &m), GY_EPROTO);
  gy_wire_agent_ctl_free(&m);
}

static void test_operator_command_round_trip(void) {
  gy_hparams_t h = sample_hparams();
  gy_wire_op_range_t skip[2] = {{1, 5}, {9, 10}}, steps[1] = {{20, 22}};
  gy_wire_op_command_t c = {.kind = GY_WIRE_OP_ROLLBACK,
                            .hparams = &h,
                            .token = "t0k",
                            .to_step = 300,
                            .skip = skip,
                            .nskip = 2,
                            .skip_steps = steps,
                            .nskip_steps = 1,
                            .newest = 1};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_op_command_encode(&c, &b, &len));
  gy_wire_command_t d;
  REQUIRE(!gy_wire_command_decode(b, len, &d));
  free(b);
  CHECK_EQ_INT(d.kind, GY_DIR_ROLLBACK);
  CHECK(!memcmp(&d.hparams, &h, sizeof(h)));
  CHECK(!strcmp(d.token, "t0k") && d.to_step == 300 && d.newest && d.nskip_steps == 1);
  CHECK(d.nskip == 2 && d.skip[0].first == 1 && d.skip[0].last == 5 && d.skip[1].first == 9 &&
        d.skip[1].last == 10);
  gy_wire_command_free(&d);

  /* no hparams: nothing present */
  c = (gy_wire_op_command_t){.kind = GY_WIRE_OP_PAUSE};
  REQUIRE(!gy_wire_op_command_encode(&c, &b, &len));
  REQUIRE(!gy_wire_command_decode(b, len, &d));
  free(b);
  CHECK(d.kind == GY_DIR_PAUSE && d.hparams.present == 0 && d.nskip == 0 && !d.skip &&
        !strcmp(d.token, ""));
  gy_wire_command_free(&d);

  c.nskip = GY_WIRE_OP_RANGES_MAX + 1;
  c.skip = skip;
  CHECK_EQ_INT(gy_wire_op_command_encode(&c, &b, &len), GY_EINVAL);
  CHECK_EQ_INT(gy_wire_command_decode(bad, sizeof(bad), &d), GY_EPROTO);
  gy_wire_command_free(&d);
}

static void test_operator_requests_round_trip(void) {
  uint8_t *b;
  size_t len;
  gy_wire_request_t r;
  REQUIRE(!gy_wire_op_events_encode(42, "tk", &b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_EVENTS, b, len, &r));
  free(b);
  CHECK(r.since_id == 42 && !strcmp(r.token, "tk"));
  gy_wire_request_free(&r);
  REQUIRE(!gy_wire_op_watch_encode(1, NULL, &b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_WATCH, b, len, &r));
  free(b);
  CHECK(r.steps == 1 && !strcmp(r.token, ""));
  gy_wire_request_free(&r);
  REQUIRE(!gy_wire_op_policy_set_encode("spike: {}\n", "p.yaml", "tk", &b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_POLICY_SET, b, len, &r));
  free(b);
  CHECK(!strcmp(r.yaml, "spike: {}\n") && !strcmp(r.name, "p.yaml") && !strcmp(r.token, "tk"));
  gy_wire_request_free(&r);
  REQUIRE(!gy_wire_op_checkpoints_encode("tk", &b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_CHECKPOINTS, b, len, &r));
  free(b);
  CHECK(!strcmp(r.token, "tk"));
  gy_wire_request_free(&r);
  REQUIRE(!gy_wire_op_empty_encode(&b, &len));
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_EMPTY, b, len, &r));
  free(b);
  CHECK(len == 0);
  gy_wire_request_free(&r);
  CHECK_EQ_INT(gy_wire_request_decode(GY_WIRE_REQ_EVENTS, bad, sizeof(bad), &r), GY_EPROTO);
  gy_wire_request_free(&r);
}

static void test_operator_status_decode(void) {
  Gyro__ChannelStat c0 = GYRO__CHANNEL_STAT__INIT;
  c0.name = "en", c0.loss_sum = 30, c0.tokens = 10;
  Gyro__ChannelStat *cp[1] = {&c0};
  Gyro__RankStatus k0 = GYRO__RANK_STATUS__INIT, k1 = GYRO__RANK_STATUS__INIT;
  k0.rank = 0, k0.worker_id = "w0", k0.host = "h0", k0.pid = 10, k0.steps_done = 7, k0.alive = 1;
  k1.rank = 1, k1.worker_id = "w1", k1.host = "h1", k1.last_report_age_ms = 2500;
  Gyro__RankStatus *kp[2] = {&k0, &k1};
  Gyro__StatusReply s = GYRO__STATUS_REPLY__INIT;
  s.run = "demo", s.state = "TRAIN", s.step = 7, s.horizon = 11, s.generation = 2, s.world = 2;
  s.tp = 1, s.loss = 3.5, s.n_channels = 1, s.channels = cp, s.grad_norm = 0.7;
  s.tokens_per_s = 900, s.n_ranks = 2, s.ranks = kp, s.steps_total = 100, s.committed_step = 5;
  size_t len;
  uint8_t *b = pack_msg(&s.base, &len);
  gy_wire_op_reply_t r;
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_STATUS_REPLY, b, len, &r));
  const gy_wire_op_status_t *st = &r.status;
  CHECK(!strcmp(st->run, "demo") && !strcmp(st->state, "TRAIN"));
  CHECK(st->step == 7 && st->horizon == 11 && st->generation == 2 && st->world == 2);
  CHECK(st->tp == 1 && st->loss == 3.5 && st->grad_norm == 0.7 && st->tokens_per_s == 900);
  CHECK(st->steps_total == 100 && st->committed_step == 5);
  CHECK(st->nchannels == 1 && !strcmp(st->channels[0].name, "en") &&
        st->channels[0].loss_sum == 30 && st->channels[0].tokens == 10);
  CHECK(st->nranks == 2 && !strcmp(st->ranks[1].worker_id, "w1") &&
        !strcmp(st->ranks[0].host, "h0"));
  CHECK(st->ranks[0].pid == 10 && st->ranks[0].steps_done == 7 && st->ranks[0].alive);
  CHECK(!st->ranks[1].alive && st->ranks[1].last_report_age_ms == 2500);
  /* the JSON names every field as gyro.proto does */
  json_t *j = gy_wire_op_reply_json(&r);
  CHECK(!strcmp(json_string_value(json_object_get(j, "state")), "TRAIN"));
  CHECK(json_integer_value(json_object_get(j, "committed_step")) == 5);
  CHECK(json_array_size(json_object_get(j, "ranks")) == 2);
  json_decref(j);
  gy_wire_op_reply_free(&r);

  /* the same status inside a WatchMsg */
  Gyro__WatchMsg w = GYRO__WATCH_MSG__INIT;
  w.msg_case = GYRO__WATCH_MSG__MSG_STATUS, w.status = &s;
  free(b);
  b = pack_msg(&w.base, &len);
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_WATCH_MSG, b, len, &r));
  CHECK(r.watch == GY_WIRE_OP_WATCH_STATUS && r.status.nranks == 2 && r.status.step == 7);
  gy_wire_op_reply_free(&r);
  free(b);
  CHECK_EQ_INT(gy_wire_op_reply_decode(GY_WIRE_OP_STATUS_REPLY, bad, sizeof(bad), &r), GY_EPROTO);
  gy_wire_op_reply_free(&r);
  CHECK(!strcmp(gy_wire_op_reply_name(GY_WIRE_OP_STATUS_REPLY), "gyro.StatusReply"));
}

static void test_operator_replies_decode(void) {
  Gyro__Event e0 = GYRO__EVENT__INIT, e1 = GYRO__EVENT__INIT;
  e0.id = 1, e0.time = 1700000000.5, e0.step = 3, e0.kind = "gang_formed", e0.message = "g1";
  e1.id = 2, e1.kind = "done";
  Gyro__Event *ep[2] = {&e0, &e1};
  Gyro__EventsReply er = GYRO__EVENTS_REPLY__INIT;
  er.n_events = 2, er.events = ep;
  size_t len;
  uint8_t *b = pack_msg(&er.base, &len);
  gy_wire_op_reply_t r;
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_EVENTS_REPLY, b, len, &r));
  free(b);
  CHECK(r.nevents == 2 && r.events[0].id == 1 && r.events[0].time == 1700000000.5);
  CHECK(r.events[0].step == 3 && !strcmp(r.events[0].kind, "gang_formed") &&
        !strcmp(r.events[0].message, "g1") && !strcmp(r.events[1].message, ""));
  json_t *j = gy_wire_op_event_json(&r, 1);
  CHECK(j && !strcmp(json_string_value(json_object_get(j, "kind")), "done"));
  json_decref(j);
  CHECK(gy_wire_op_event_json(&r, 2) == NULL);
  gy_wire_op_reply_free(&r);

  Gyro__SourceEval s0 = GYRO__SOURCE_EVAL__INIT;
  s0.source = "en", s0.loss = 2.5, s0.ppl = 12.2, s0.tokens = 64, s0.cloze_accuracy = 0.5;
  s0.cloze_items = 8;
  Gyro__SourceEval *sp[1] = {&s0};
  Gyro__CheckpointInfo c0 = GYRO__CHECKPOINT_INFO__INIT, c1 = GYRO__CHECKPOINT_INFO__INIT;
  c0.step = 10, c0.clean = 1, c0.has_eval = 1, c0.n_sources = 1, c0.sources = sp;
  c0.mean_loss = 2.5, c0.best = 1;
  c1.step = 20;
  Gyro__CheckpointInfo *cp[2] = {&c0, &c1};
  Gyro__CheckpointsReply cr = GYRO__CHECKPOINTS_REPLY__INIT;
  cr.n_checkpoints = 2, cr.checkpoints = cp, cr.best_step = 10;
  b = pack_msg(&cr.base, &len);
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_CHECKPOINTS_REPLY, b, len, &r));
  free(b);
  CHECK(r.ncheckpoints == 2 && r.best_step == 10);
  const gy_wire_op_checkpoint_t *c = &r.checkpoints[0];
  CHECK(c->step == 10 && c->clean && c->has_eval && c->best && c->mean_loss == 2.5);
  CHECK(c->nsources == 1 && !strcmp(c->sources[0].source, "en") && c->sources[0].ppl == 12.2 &&
        c->sources[0].tokens == 64 && c->sources[0].cloze_items == 8 &&
        c->sources[0].cloze_accuracy == 0.5 && c->sources[0].loss == 2.5);
  CHECK(r.checkpoints[1].step == 20 && !r.checkpoints[1].clean && r.checkpoints[1].nsources == 0);
  gy_wire_op_reply_free(&r);

  Gyro__CommandReply cmr = GYRO__COMMAND_REPLY__INIT;
  cmr.seq = 8, cmr.at_step = 99;
  b = pack_msg(&cmr.base, &len);
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_COMMAND_REPLY, b, len, &r));
  free(b);
  CHECK(r.seq == 8 && r.at_step == 99);
  gy_wire_op_reply_free(&r);

  Gyro__PolicyReply pr = GYRO__POLICY_REPLY__INIT;
  pr.yaml = "a: 1\n";
  b = pack_msg(&pr.base, &len);
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_POLICY_REPLY, b, len, &r));
  free(b);
  CHECK(!strcmp(r.yaml, "a: 1\n"));
  gy_wire_op_reply_free(&r);

  Gyro__WatchMsg w = GYRO__WATCH_MSG__INIT;
  w.msg_case = GYRO__WATCH_MSG__MSG_EVENT, w.event = &e0;
  b = pack_msg(&w.base, &len);
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_WATCH_MSG, b, len, &r));
  free(b);
  CHECK(r.watch == GY_WIRE_OP_WATCH_EVENT && r.nevents == 1 && r.events[0].id == 1);
  j = gy_wire_op_reply_json(&r);
  CHECK(json_object_get(j, "event") && !json_object_get(j, "status"));
  json_decref(j);
  gy_wire_op_reply_free(&r);

  gy_wire_op_reply_kind_t kinds[] = {GY_WIRE_OP_COMMAND_REPLY, GY_WIRE_OP_EVENTS_REPLY,
                                     GY_WIRE_OP_CHECKPOINTS_REPLY, GY_WIRE_OP_POLICY_REPLY,
                                     GY_WIRE_OP_WATCH_MSG};
  for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
    CHECK_EQ_INT(gy_wire_op_reply_decode(kinds[i], bad, sizeof(bad), &r), GY_EPROTO);
    gy_wire_op_reply_free(&r);
  }
}

/* ---------------------------- controller/wire.c: the rest ---------------------------- */

/* A counting allocator: what the session decoder takes through gy_wire_alloc_t. */
typedef struct {
  int allocs, frees;
} count_t;
static void *count_alloc(void *ud, size_t n) {
  ((count_t *)ud)->allocs++;
  return malloc(n);
}
static void count_free(void *ud, void *p) {
  ((count_t *)ud)->frees++;
  free(p);
}

static void test_controller_session_details(void) {
  gy_agent_channel_t ch[1] = {{"en", 12.5, 100, 0}};
  gy_agent_sample_t top[2] = {{99, "en", 7.5f}, {98, "zh", 7.0f}}, bottom[1] = {{5, "en", 0.5f}};
  gy_agent_gpu_t gpu = {.index = 1,
                        .name = "H100",
                        .has_temp = 1,
                        .temp_c = 70,
                        .has_mem = 1,
                        .mem_used_bytes = 10,
                        .mem_total_bytes = 80,
                        .has_util = 1,
                        .util_gpu_pct = 95,
                        .util_mem_pct = 40,
                        .has_sm_clock = 1,
                        .sm_clock_mhz = 1980,
                        .has_throttle = 1,
                        .throttle_reasons = 0x20,
                        .has_ecc = 1,
                        .ecc_uncorrected = 2,
                        .has_xid = 1,
                        .xid_count = 3,
                        .last_xid = 79};
  gy_agent_report_t rep = {.step = 41,
                           .loss = 2.5,
                           .channels = ch,
                           .nchannels = 1,
                           .top = top,
                           .ntop = 2,
                           .bottom = bottom,
                           .nbottom = 1,
                           .gpu = &gpu};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_agent_report_encode(9, 0, &rep, &b, &len));
  count_t cnt = {0};
  gy_wire_alloc_t a = {count_alloc, count_free, &cnt};
  gy_wire_worker_msg_t m;
  REQUIRE(!gy_wire_session_decode_with(b, len, &a, &m));
  free(b);
  CHECK(cnt.allocs > 0);
  CHECK(m.kind == GY_WIRE_WORKER_REPORT && m.step == 41 && m.report.step == 41);
  CHECK(m.has_gpu && m.gpu.index == 1 && !strcmp(m.gpu.name, "H100"));
  CHECK(m.gpu.has_temp && m.gpu.temp_c == 70 && m.gpu.has_mem && m.gpu.mem_used_bytes == 10 &&
        m.gpu.mem_total_bytes == 80);
  CHECK(m.gpu.has_util && m.gpu.util_gpu_pct == 95 && m.gpu.util_mem_pct == 40);
  CHECK(m.gpu.has_sm_clock && m.gpu.sm_clock_mhz == 1980);
  CHECK(m.gpu.has_throttle && m.gpu.throttle_reasons == 0x20 && m.gpu.has_ecc &&
        m.gpu.ecc_uncorrected == 2);
  CHECK(m.gpu.has_xid && m.gpu.xid_count == 3 && m.gpu.last_xid == 79);
  gy_core_sample_t s[2 * 4];
  size_t ntop, nbottom;
  gy_wire_samples(&m, s, 4, &ntop, &nbottom);
  CHECK(ntop == 2 && nbottom == 1);
  CHECK(s[0].id == 99 && s[0].loss == 7.5f && !strcmp(s[0].channel, "en") && s[1].id == 98);
  CHECK(s[4].id == 5 && s[4].loss == 0.5f);
  gy_wire_samples(&m, s, 1, &ntop, &nbottom); /* at most max of each */
  CHECK(ntop == 1 && nbottom == 1 && s[1].id == 5);
  gy_wire_eval_t ev;
  gy_wire_eval(&m, &ev); /* not an evaluation: none */
  CHECK(ev.in.nsources == 0);
  gy_wire_session_free(&m);
  CHECK_EQ_INT(cnt.allocs, cnt.frees);
  gy_wire_session_free(&m); /* twice: a no-op */

  /* no GPU: none */
  rep.gpu = NULL;
  REQUIRE(!gy_wire_agent_report_encode(9, 0, &rep, &b, &len));
  REQUIRE(!gy_wire_session_decode_with(b, len, NULL, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_WORKER_REPORT && !m.has_gpu);
  gy_wire_session_free(&m);

  gy_agent_source_eval_t src[2] = {{"en", 3.0, 20.1, 500, 0.5, 10}, {"zh", 2.0, 7.4, 300, 0, 0}};
  gy_agent_eval_t e = {
      .step = 50, .sources = src, .nsources = 2, .has_checkpoint = 1, .checkpoint_step = 50};
  REQUIRE(!gy_wire_agent_eval_encode(9, 0, &e, &b, &len));
  REQUIRE(!gy_wire_session_decode_with(b, len, &a, &m));
  free(b);
  gy_wire_eval(&m, &ev);
  CHECK(ev.in.generation == 9 && ev.in.rank == 0 && ev.in.step == 50 && ev.in.nsources == 2);
  CHECK(ev.in.has_checkpoint && ev.in.checkpoint_step == 50);
  CHECK(!strcmp(ev.in.source[1], "zh") && ev.in.loss[0] == 3.0 && ev.in.ppl[0] == 20.1 &&
        ev.in.cloze[0] == 0.5 && ev.in.tokens[1] == 300 && ev.in.items[0] == 10);
  gy_wire_samples(&m, s, 4, &ntop, &nbottom);
  CHECK(ntop == 0 && nbottom == 0);
  gy_wire_session_free(&m);
  CHECK_EQ_INT(cnt.allocs, cnt.frees);

  /* malformed through the allocator: GY_EPROTO, nothing kept */
  CHECK_EQ_INT(gy_wire_session_decode_with(bad, sizeof(bad), &a, &m), GY_EPROTO);
  CHECK(m.msg_ == NULL);
  gy_wire_session_free(&m);
  CHECK_EQ_INT(cnt.allocs, cnt.frees);
}

static void test_controller_command_ranges(void) {
  gy_wire_op_range_t skip[2] = {{1, 5}, {9, 10}}, steps[1] = {{20, 22}};
  gy_wire_op_command_t c = {.kind = GY_WIRE_OP_ROLLBACK,
                            .skip = skip,
                            .nskip = 2,
                            .skip_steps = steps,
                            .nskip_steps = 1,
                            .newest = 1};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_op_command_encode(&c, &b, &len));
  gy_wire_command_t d;
  REQUIRE(!gy_wire_command_decode(b, len, &d));
  free(b);
  CHECK(d.cmd.kind == GY_DIR_ROLLBACK && d.cmd.newest && d.cmd.reason == NULL);
  CHECK(d.cmd.nskip == 2 && d.cmd.skip[1].first == 9 && d.cmd.skip[1].last == 10);
  CHECK(d.cmd.nskip_steps == 1 && d.cmd.skip_steps[0].first == 20 &&
        d.cmd.skip_steps[0].last == 22);
  gy_wire_command_free(&d);

  /* more ranges than the fleet takes: the core still gets them all, the fleet's view none */
  size_t n = GY_FLEET_MAX_SKIPS + 1;
  gy_wire_op_range_t *many = calloc(n, sizeof(*many));
  REQUIRE(many);
  for (size_t i = 0; i < n; i++)
    many[i] = (gy_wire_op_range_t){2 * i, 2 * i + 1};
  /* (gyroctl sends at most GY_WIRE_OP_RANGES_MAX: build the request in pieces of that) */
  Gyro__SkipRange *rs = calloc(n, sizeof(*rs));
  Gyro__SkipRange **rp = calloc(n, sizeof(*rp));
  REQUIRE(rs && rp);
  for (size_t i = 0; i < n; i++) {
    gyro__skip_range__init(&rs[i]);
    rs[i].first = many[i].first, rs[i].last = many[i].last;
    rp[i] = &rs[i];
  }
  Gyro__CommandRequest req = GYRO__COMMAND_REQUEST__INIT;
  req.kind = GYRO__DIRECTIVE__KIND__ROLLBACK, req.n_skip = n, req.skip = rp;
  b = pack_msg(&req.base, &len);
  REQUIRE(!gy_wire_command_decode(b, len, &d));
  free(b);
  CHECK(d.nskip == GY_FLEET_MAX_SKIPS + 1 && d.skip == NULL);
  CHECK(d.cmd.nskip == n && d.cmd.skip[n - 1].first == 2 * (n - 1));
  gy_wire_command_free(&d);
  free(rs);
  free(rp);
  free(many);
}

/* A report's guard figures: agent -> controller (gy_wire_masked), every field; a sample
 * without provenance has no file; rank 0's list is cut at GY_WIRE_MASKED_MAX. */
static void test_masked_round_trip(void) {
  gy_agent_channel_t ch[2] = {{"en", 12.5, 100, 3}, {"zh", 3.25, 40, 1}};
  gy_agent_masked_t mk[2] = {
      {.id = 77,
       .channel = "en",
       .loss = 9.5f,
       .reason = "loss_high",
       .median = 3.0f,
       .threshold = 1.5f,
       .entropy = 7.9f,
       .rank = 1,
       .where = {.file = "/d/en/train_000.bin",
                 .offset = 4096,
                 .length = 65,
                 .document = 12,
                 .region_offset = 4000,
                 .region_length = 900}},
      {.id = 78, .channel = "zh", .loss = 0.1f, .reason = "repeat_high", .rank = 0}};
  gy_agent_report_t rep = {
      .step = 5, .channels = ch, .nchannels = 2, .samples = 16, .masked = mk, .nmasked = 2};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_agent_report_encode(2, 0, &rep, &b, &len));
  gy_wire_worker_msg_t m;
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  gy_wire_masked_t w;
  gy_wire_masked(&m, &w);
  CHECK_EQ_INT(w.in.samples, 16);
  CHECK(w.in.ch_masked && w.in.ch_masked[0] == 3 && w.in.ch_masked[1] == 1);
  CHECK_EQ_INT(w.in.nmasked, 2);
  const gy_core_masked_t *x = &w.in.masked[0];
  CHECK(x->id == 77 && !strcmp(x->channel, "en") && !strcmp(x->reason, "loss_high"));
  CHECK(x->loss == 9.5f && x->median == 3.0f && x->threshold == 1.5f && x->rank == 1);
  CHECK(x->file && !strcmp(x->file, "/d/en/train_000.bin") && x->offset == 4096 &&
        x->length == 65 && x->document == 12 && x->region_offset == 4000 &&
        x->region_length == 900);
  CHECK(w.in.masked[1].file == NULL && w.in.masked[1].document == -1);
  gy_wire_session_free(&m);
  /* another kind of message has no guard figures */
  REQUIRE(!gy_wire_agent_hello_encode("s", 2, 0, &b, &len));
  REQUIRE(!gy_wire_session_decode(b, len, &m));
  free(b);
  gy_wire_masked(&m, &w);
  CHECK(w.in.nmasked == 0 && w.in.samples == 0);
  gy_wire_session_free(&m);
  /* more than a report may list is refused by the agent's encoder */
  gy_agent_masked_t many[GY_WIRE_MASKED_MAX + 1];
  memset(many, 0, sizeof(many));
  rep.masked = many;
  rep.nmasked = GY_WIRE_MASKED_MAX + 1;
  CHECK_EQ_INT(gy_wire_agent_report_encode(2, 0, &rep, &b, &len), GY_EINVAL);
}

static void test_controller_assignment_round_trip(void) {
  gy_fleet_skip_t sk[2] = {{10, 20}, {30, 31}};
  gy_wire_assignment_t as = {.generation = 4,
                             .rank = 1,
                             .world = 2,
                             .tp = 1,
                             .config_yaml = "run: x\n",
                             .session_id = "s",
                             .rdzv_prefix = "g4",
                             .config_dir = NULL,
                             .start_step = 100,
                             .heartbeat_ms = 250,
                             .skip = sk,
                             .nskip = 2};
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_assignment_encode(&as, &b, &len));
  gy_wire_agent_assignment_t d;
  REQUIRE(!gy_wire_agent_assignment_decode(b, len, &d));
  free(b);
  const gy_agent_assignment_t *g = &d.asg;
  CHECK(g->generation == 4 && g->rank == 1 && g->world == 2 && g->tp == 1);
  CHECK(g->start_step == 100 && g->heartbeat_ms == 250);
  CHECK(!strcmp(g->config_yaml, "run: x\n") && !strcmp(g->config_dir, ""));
  CHECK(!strcmp(g->rdzv_prefix, "g4") && !strcmp(g->session_id, "s"));
  CHECK(g->nskip == 2 && g->skip[0] == 10 && g->skip[1] == 20 && g->skip[2] == 30 &&
        g->skip[3] == 31);
  CHECK(!g->has_guard && g->nquar == 0);
  gy_wire_agent_assignment_free(&d);
  as.nskip = 0;
  REQUIRE(!gy_wire_assignment_encode(&as, &b, &len));
  REQUIRE(!gy_wire_agent_assignment_decode(b, len, &d));
  free(b);
  CHECK(d.asg.nskip == 0);
  gy_wire_agent_assignment_free(&d);
  /* the guard and the quarantine: every field; each file named once in the message */
  gy_guard_opts_t guard;
  gy_guard_default(&guard);
  guard.window = 100;
  guard.rule[GY_GSTAT_REPEAT].low = 1;
  guard.quarantine_margin = 7;
  const char *f0 = "/d/en/train_000.bin", *f1 = "/d/zh/train_000.bin";
  gy_quar_entry_t e[3] = {
      {.id = 1, .channel = "en", .file = f0, .offset = 10, .length = 5},
      {.id = 2, .channel = "zh", .file = f1, .offset = 0, .length = 9, .released = 1},
      {.id = 3, .channel = "en", .file = f0, .offset = 900, .length = 1}};
  const gy_quar_entry_t *ep[3] = {&e[1], &e[0], &e[2]};
  as.guard = &guard;
  as.quar = ep;
  as.nquar = 3;
  REQUIRE(!gy_wire_assignment_encode(&as, &b, &len));
  Gyro__Assignment *raw = gyro__assignment__unpack(NULL, len, b);
  REQUIRE(raw);
  CHECK_EQ_INT(raw->n_quarantine_files, 2);
  gyro__assignment__free_unpacked(raw, NULL);
  REQUIRE(!gy_wire_agent_assignment_decode(b, len, &d));
  free(b);
  CHECK(d.asg.has_guard && gy_guard_equal(&d.asg.guard, &guard));
  REQUIRE(d.asg.nquar == 3);
  CHECK(!strcmp(d.asg.quar[0].channel, "zh") && !strcmp(d.asg.quar[0].file, f1) &&
        d.asg.quar[0].released && d.asg.quar[0].length == 9);
  CHECK(!strcmp(d.asg.quar[1].file, f0) && d.asg.quar[1].offset == 10 && !d.asg.quar[1].released);
  CHECK(!strcmp(d.asg.quar[2].file, f0) && d.asg.quar[2].offset == 900);
  gy_wire_agent_assignment_free(&d);
  /* an entry whose file index is outside the table is malformed */
  Gyro__QuarantineEntry qe = GYRO__QUARANTINE_ENTRY__INIT, *qep = &qe;
  qe.file_index = 1;
  char *files[1] = {"x"};
  Gyro__Assignment ra = GYRO__ASSIGNMENT__INIT;
  ra.n_quarantine = 1;
  ra.quarantine = &qep;
  ra.n_quarantine_files = 1;
  ra.quarantine_files = files;
  b = pack_msg(&ra.base, &len);
  CHECK_EQ_INT(gy_wire_agent_assignment_decode(b, len, &d), GY_EPROTO);
  gy_wire_agent_assignment_free(&d);
  free(b);
  as.guard = NULL;
  as.nquar = 0;
  as.nskip = 1, as.skip = NULL;
  CHECK_EQ_INT(gy_wire_assignment_encode(&as, &b, &len), GY_EINVAL);
}

static void test_controller_ctl_round_trip(void) {
  gy_fleet_action_t a = {.kind = GY_FLEET_ACT_GRANT, .rank = -1, .generation = 3, .step = 64};
  uint8_t small[256], *b;
  size_t len;
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  CHECK(b == small); /* a grant fits the caller's buffer */
  gy_wire_agent_ctl_t m;
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  CHECK(m.kind == GY_WIRE_AGENT_CTL_GRANT && m.generation == 3 && m.horizon == 64);
  gy_wire_agent_ctl_free(&m);

  /* a rollback with its skips, reason and knobs; without a buffer of the caller's */
  gy_fleet_skip_t sk[1] = {{5, 9}};
  a = (gy_fleet_action_t){.kind = GY_FLEET_ACT_DIRECTIVE,
                          .generation = 3,
                          .step = 40,
                          .seq = 12,
                          .dir_kind = GY_DIR_ROLLBACK,
                          .hparams = sample_hparams(),
                          .to_step = 30,
                          .nskip = 1,
                          .skip = sk};
  snprintf(a.msg, sizeof(a.msg), "spike");
  REQUIRE(!gy_wire_ctl_encode(&a, NULL, 0, &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  free(b);
  CHECK(m.kind == GY_WIRE_AGENT_CTL_DIRECTIVE && m.generation == 3);
  CHECK(m.dir.seq == 12 && m.dir.at_step == 40 && m.dir.kind == GY_DIRECTIVE_ROLLBACK);
  CHECK(m.dir.to_step == 30 && m.dir.nskip == 1 && m.dir.skip[0].first == 5 &&
        m.dir.skip[0].last == 9 && !strcmp(m.dir.reason, "spike"));
  gy_hparams_t h = sample_hparams();
  CHECK(!memcmp(&m.dir.hparams, &h, sizeof(h)));
  gy_wire_agent_ctl_free(&m);

  /* a rollback without knobs sends none; a pause sends neither target, skips nor reason */
  a.hparams.present = 0;
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  CHECK(m.dir.hparams.present == 0 && m.dir.nskip == 1);
  gy_wire_agent_ctl_free(&m);
  a.dir_kind = GY_DIR_PAUSE;
  a.hparams = sample_hparams();
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  CHECK(m.dir.kind == GY_DIRECTIVE_PAUSE && m.dir.to_step == 0 && m.dir.nskip == 0 &&
        !strcmp(m.dir.reason, "") && m.dir.hparams.present == 0);
  gy_wire_agent_ctl_free(&m);
  /* set_hparams: the knobs */
  a.dir_kind = GY_DIR_SET_HPARAMS;
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  CHECK(m.dir.kind == GY_DIRECTIVE_SET_HPARAMS && !memcmp(&m.dir.hparams, &h, sizeof(h)));
  gy_wire_agent_ctl_free(&m);

  /* quarantine: the entries, in order; set_guard: the guard */
  gy_fleet_qentry_t qe[2] = {{"en", "/d/en/train_000.bin", 10, 20, 0},
                             {"zh", "zh/train_001.bin", 5, 6, 1}};
  gy_fleet_qdir_t qd = {.entries = qe, .nentries = 2};
  gy_guard_default(&qd.guard);
  qd.guard.enabled = 0;
  qd.guard.max_step_share = 0.5;
  a.dir_kind = GY_DIR_QUARANTINE;
  a.qdir = &qd;
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  if (b != small) free(b);
  CHECK(m.dir.kind == GY_DIRECTIVE_QUARANTINE && m.dir.nquar == 2);
  CHECK(!strcmp(m.dir.quar[0].channel, "en") &&
        !strcmp(m.dir.quar[0].file, "/d/en/train_000.bin") && m.dir.quar[0].offset == 10 &&
        m.dir.quar[0].length == 20 && !m.dir.quar[0].released);
  CHECK(!strcmp(m.dir.quar[1].file, "zh/train_001.bin") && m.dir.quar[1].released);
  gy_wire_agent_ctl_free(&m);
  a.dir_kind = GY_DIR_SET_GUARD;
  REQUIRE(!gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len));
  REQUIRE(!gy_wire_agent_ctl_decode(b, len, &m));
  if (b != small) free(b);
  CHECK(m.dir.kind == GY_DIRECTIVE_SET_GUARD && m.dir.nquar == 0);
  CHECK(gy_guard_equal(&m.dir.guard, &qd.guard));
  gy_wire_agent_ctl_free(&m);

  a.kind = GY_FLEET_ACT_EVENT;
  CHECK_EQ_INT(gy_wire_ctl_encode(&a, small, sizeof(small), &b, &len), GY_EINVAL);
}

/* gyroctl's QuarantineRequest into the controller's input, and its QuarantineReply back to
 * gyroctl: every field. */
static void test_quarantine_round_trip(void) {
  gy_wire_op_qentry_t add = {.channel = "en",
                             .file = "en/train_000.bin",
                             .offset = 4096,
                             .length = 2048,
                             .reason = "junk"};
  uint8_t *b;
  size_t len;
  REQUIRE(
      !gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_ADD, "tok", &add, 1, NULL, 0, 0, 0, &b, &len));
  gy_wire_quar_req_t r;
  REQUIRE(!gy_wire_quar_decode(b, len, &r));
  free(b);
  CHECK(r.op == 1 && !strcmp(r.token, "tok") && r.cmd.op == GY_CORE_QUAR_ADD && r.cmd.nadd == 1);
  CHECK(!strcmp(r.cmd.add[0].channel, "en") && !strcmp(r.cmd.add[0].file, "en/train_000.bin") &&
        r.cmd.add[0].offset == 4096 && r.cmd.add[0].length == 2048 &&
        !strcmp(r.cmd.add[0].reason, "junk"));
  gy_wire_quar_free(&r);
  uint64_t ids[3] = {4, 5, 9};
  REQUIRE(!gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_RELEASE, NULL, NULL, 0, ids, 3, 0, 0, &b,
                                        &len));
  REQUIRE(!gy_wire_quar_decode(b, len, &r));
  free(b);
  CHECK(r.op == 2 && r.cmd.op == GY_CORE_QUAR_RELEASE && r.cmd.nrelease == 3 &&
        r.cmd.release[2] == 9);
  gy_wire_quar_free(&r);
  REQUIRE(!gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_LIST, NULL, NULL, 0, NULL, 0, 41, 100, &b,
                                        &len));
  REQUIRE(!gy_wire_quar_decode(b, len, &r));
  free(b);
  CHECK(r.op == 0 && r.after_id == 41 && r.limit == 100);
  gy_wire_quar_free(&r);
  CHECK_EQ_INT(gy_wire_quar_decode(bad, sizeof(bad), &r), GY_EPROTO);
  gy_wire_quar_free(&r);
  CHECK_EQ_INT(
      gy_wire_op_quarantine_encode(GY_WIRE_OP_QUAR_RELEASE, NULL, NULL, 0, NULL, 2, 0, 0, &b, &len),
      GY_EINVAL);
  /* the reply */
  gy_wire_op_qentry_t e[2] = {{.id = 3,
                               .channel = "en",
                               .file = "/d/en/train_000.bin",
                               .offset = 10,
                               .length = 20,
                               .document = 7,
                               .reason = "loss_high",
                               .first_step = 120,
                               .sample = 9999,
                               .loss = 9.5f,
                               .median = 3.0f,
                               .threshold = 1.5f,
                               .hits = 4,
                               .changed_step = 130},
                              {.id = 4,
                               .channel = "zh",
                               .file = "f",
                               .length = 1,
                               .document = -1,
                               .reason = "operator",
                               .first_step = -1,
                               .released = 1}};
  gy_wire_op_reply_t rep = {.kind = GY_WIRE_OP_QUARANTINE_REPLY,
                            .qentries = e,
                            .nqentries = 2,
                            .seq = 8,
                            .at_step = 140,
                            .qtotal = 10,
                            .qactive = 9,
                            .qnext_id = 5};
  REQUIRE(!gy_wire_reply_encode(&rep, &b, &len));
  gy_wire_op_reply_t back;
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_QUARANTINE_REPLY, b, len, &back));
  free(b);
  CHECK(back.nqentries == 2 && back.seq == 8 && back.at_step == 140 && back.qtotal == 10 &&
        back.qactive == 9 && back.qnext_id == 5);
  const gy_wire_op_qentry_t *x = &back.qentries[0];
  CHECK(x->id == 3 && !strcmp(x->channel, "en") && !strcmp(x->file, "/d/en/train_000.bin") &&
        x->offset == 10 && x->length == 20 && x->document == 7 && !strcmp(x->reason, "loss_high") &&
        x->first_step == 120 && x->sample == 9999 && x->loss == 9.5f && x->median == 3.0f &&
        x->threshold == 1.5f && x->hits == 4 && x->changed_step == 130 && !x->released);
  CHECK(back.qentries[1].released && back.qentries[1].first_step == -1 &&
        back.qentries[1].document == -1);
  json_t *j = gy_wire_op_reply_json(&back);
  CHECK(json_integer_value(
            json_object_get(json_array_get(json_object_get(j, "entries"), 0), "offset")) == 10);
  json_decref(j);
  gy_wire_op_reply_free(&back);
  CHECK(!strcmp(gy_wire_op_reply_name(GY_WIRE_OP_QUARANTINE_REPLY), "gyro.QuarantineReply"));
}

static void test_controller_store_round_trip(void) {
  uint8_t *b;
  size_t len;
  REQUIRE(!gy_wire_store_value_encode("abc", 3, &b, &len));
  void *val;
  size_t vlen;
  REQUIRE(!gy_wire_agent_store_value_decode(b, len, &val, &vlen));
  free(b);
  CHECK(vlen == 3 && !memcmp(val, "abc", 3));
  free(val);
  REQUIRE(!gy_wire_store_value_encode(NULL, 0, &b, &len));
  REQUIRE(!gy_wire_agent_store_value_decode(b, len, &val, &vlen));
  free(b);
  CHECK(vlen == 0);
  free(val);
  CHECK_EQ_INT(gy_wire_store_value_encode(NULL, 1, &b, &len), GY_EINVAL);
  REQUIRE(!gy_wire_empty_encode(&b, &len));
  CHECK(len == 0);
  gy_wire_request_t r;
  REQUIRE(!gy_wire_request_decode(GY_WIRE_REQ_EMPTY, b, len, &r));
  free(b);
  gy_wire_request_free(&r);
  CHECK(!strcmp(gy_wire_request_name(GY_WIRE_REQ_STORE_SET), "StoreSetRequest"));
  CHECK(!strcmp(gy_wire_request_name(GY_WIRE_REQ_EMPTY), "Empty"));
  CHECK(!strcmp(gy_wire_request_name((gy_wire_req_kind_t)99), "?"));
}

/* The controller fills gyroctl's plain structs and encodes them; gyroctl's decoder gives the
 * same values back. */
static void test_controller_replies_round_trip(void) {
  gy_wire_op_channel_t ch[1] = {{"en", 30, 10}};
  gy_wire_op_rank_t rk[2] = {
      {.rank = 0, .worker_id = "w0", .host = "h0", .pid = 10, .steps_done = 7, .alive = 1},
      {.rank = 1, .worker_id = "w1", .host = NULL, .last_report_age_ms = 2500, .tokens_per_s = 5}};
  gy_wire_op_status_t st = {.run = "demo",
                            .state = "TRAIN",
                            .step = 7,
                            .horizon = 11,
                            .generation = 2,
                            .world = 2,
                            .tp = 1,
                            .loss = 3.5,
                            .channels = ch,
                            .nchannels = 1,
                            .grad_norm = 0.7,
                            .tokens_per_s = 900,
                            .ranks = rk,
                            .nranks = 2,
                            .steps_total = 100,
                            .committed_step = 5};
  uint8_t *b;
  size_t len;
  gy_wire_op_reply_t r;
  for (int watch = 0; watch < 2; watch++) {
    gy_wire_op_reply_t in = {.kind = watch ? GY_WIRE_OP_WATCH_MSG : GY_WIRE_OP_STATUS_REPLY,
                             .watch = GY_WIRE_OP_WATCH_STATUS,
                             .status = st};
    REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
    REQUIRE(!gy_wire_op_reply_decode(in.kind, b, len, &r));
    free(b);
    const gy_wire_op_status_t *o = &r.status;
    CHECK(!watch || r.watch == GY_WIRE_OP_WATCH_STATUS);
    CHECK(!strcmp(o->run, "demo") && !strcmp(o->state, "TRAIN"));
    CHECK(o->step == 7 && o->horizon == 11 && o->generation == 2 && o->world == 2 && o->tp == 1);
    CHECK(o->loss == 3.5 && o->grad_norm == 0.7 && o->tokens_per_s == 900);
    CHECK(o->steps_total == 100 && o->committed_step == 5);
    CHECK(o->nchannels == 1 && !strcmp(o->channels[0].name, "en") &&
          o->channels[0].loss_sum == 30 && o->channels[0].tokens == 10);
    CHECK(o->nranks == 2 && !strcmp(o->ranks[0].worker_id, "w0") &&
          !strcmp(o->ranks[0].host, "h0") && !strcmp(o->ranks[1].host, ""));
    CHECK(o->ranks[0].pid == 10 && o->ranks[0].steps_done == 7 && o->ranks[0].alive);
    CHECK(o->ranks[1].rank == 1 && !o->ranks[1].alive && o->ranks[1].last_report_age_ms == 2500 &&
          o->ranks[1].tokens_per_s == 5);
    gy_wire_op_reply_free(&r);
  }

  gy_wire_op_event_t ev[2] = {{1, 1700000000.5, 3, "gang_formed", "g1"}, {2, 0, 0, "done", NULL}};
  gy_wire_op_reply_t in = {.kind = GY_WIRE_OP_EVENTS_REPLY, .events = ev, .nevents = 2};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_EVENTS_REPLY, b, len, &r));
  free(b);
  CHECK(r.nevents == 2 && r.events[0].id == 1 && r.events[0].time == 1700000000.5 &&
        r.events[0].step == 3 && !strcmp(r.events[0].kind, "gang_formed") &&
        !strcmp(r.events[0].message, "g1") && !strcmp(r.events[1].kind, "done") &&
        !strcmp(r.events[1].message, ""));
  gy_wire_op_reply_free(&r);
  in = (gy_wire_op_reply_t){.kind = GY_WIRE_OP_EVENTS_REPLY};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_EVENTS_REPLY, b, len, &r));
  free(b);
  CHECK(r.nevents == 0);
  gy_wire_op_reply_free(&r);

  in = (gy_wire_op_reply_t){
      .kind = GY_WIRE_OP_WATCH_MSG, .watch = GY_WIRE_OP_WATCH_EVENT, .events = ev, .nevents = 1};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_WATCH_MSG, b, len, &r));
  free(b);
  CHECK(r.watch == GY_WIRE_OP_WATCH_EVENT && r.nevents == 1 && r.events[0].id == 1 &&
        !strcmp(r.events[0].message, "g1"));
  gy_wire_op_reply_free(&r);

  gy_wire_op_source_eval_t se[2] = {{"en", 2.5, 12.2, 64, 0.5, 8}, {"zh", 3.5, 33.1, 32, 0, 0}};
  gy_wire_op_checkpoint_t ck[2] = {{.step = 10,
                                    .clean = 1,
                                    .has_eval = 1,
                                    .best = 1,
                                    .sources = se,
                                    .nsources = 2,
                                    .mean_loss = 3.0},
                                   {.step = 20}};
  in = (gy_wire_op_reply_t){
      .kind = GY_WIRE_OP_CHECKPOINTS_REPLY, .checkpoints = ck, .ncheckpoints = 2, .best_step = 10};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_CHECKPOINTS_REPLY, b, len, &r));
  free(b);
  CHECK(r.ncheckpoints == 2 && r.best_step == 10);
  const gy_wire_op_checkpoint_t *c = &r.checkpoints[0];
  CHECK(c->step == 10 && c->clean && c->has_eval && c->best && c->mean_loss == 3.0);
  CHECK(c->nsources == 2 && !strcmp(c->sources[1].source, "zh") && c->sources[0].ppl == 12.2 &&
        c->sources[0].tokens == 64 && c->sources[0].cloze_items == 8 &&
        c->sources[0].cloze_accuracy == 0.5 && c->sources[1].loss == 3.5);
  CHECK(r.checkpoints[1].step == 20 && !r.checkpoints[1].clean && !r.checkpoints[1].has_eval &&
        r.checkpoints[1].nsources == 0);
  gy_wire_op_reply_free(&r);

  in = (gy_wire_op_reply_t){.kind = GY_WIRE_OP_COMMAND_REPLY, .seq = 8, .at_step = 99};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_COMMAND_REPLY, b, len, &r));
  free(b);
  CHECK(r.seq == 8 && r.at_step == 99);
  gy_wire_op_reply_free(&r);

  in = (gy_wire_op_reply_t){.kind = GY_WIRE_OP_POLICY_REPLY, .yaml = "a: 1\n"};
  REQUIRE(!gy_wire_reply_encode(&in, &b, &len));
  REQUIRE(!gy_wire_op_reply_decode(GY_WIRE_OP_POLICY_REPLY, b, len, &r));
  free(b);
  CHECK(!strcmp(r.yaml, "a: 1\n"));
  gy_wire_op_reply_free(&r);

  /* bad arguments */
  in = (gy_wire_op_reply_t){.kind = GY_WIRE_OP_EVENTS_REPLY, .nevents = 1};
  CHECK_EQ_INT(gy_wire_reply_encode(&in, &b, &len), GY_EINVAL);
  in = (gy_wire_op_reply_t){.kind = GY_WIRE_OP_WATCH_MSG, .watch = GY_WIRE_OP_WATCH_EVENT};
  CHECK_EQ_INT(gy_wire_reply_encode(&in, &b, &len), GY_EINVAL);
  in = (gy_wire_op_reply_t){.kind = (gy_wire_op_reply_kind_t)42};
  CHECK_EQ_INT(gy_wire_reply_encode(&in, &b, &len), GY_EINVAL);
}

int main(void) {
  RUN(test_hparams_round_trip);
  RUN(test_agent_join_round_trip);
  RUN(test_agent_session_round_trip);
  RUN(test_agent_store_round_trip);
  RUN(test_agent_assignment_decode);
  RUN(test_agent_controller_msg_decode);
  RUN(test_operator_command_round_trip);
  RUN(test_operator_requests_round_trip);
  RUN(test_operator_status_decode);
  RUN(test_operator_replies_decode);
  RUN(test_controller_session_details);
  RUN(test_controller_command_ranges);
  RUN(test_masked_round_trip);
  RUN(test_controller_assignment_round_trip);
  RUN(test_controller_ctl_round_trip);
  RUN(test_controller_store_round_trip);
  RUN(test_controller_replies_round_trip);
  RUN(test_quarantine_round_trip);
  GY_TEST_END();
}
