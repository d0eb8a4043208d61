# Supervised training: gyro-controller and four gyro-workers (--controller mode, DP=2 x TP=2,
# Gloo on loopback) with a small model.
#  1. 50 steps: every worker exits 0, and the controller's step records carry, for every step,
#     exactly the loss rank 0 printed (the figures travel over gRPC as doubles).
#  2. Directives: pause (no step records while paused), set lr_scale, resume, checkpoint: all
#     four ranks apply each one at the same step, between the step records of at_step - 1 and
#     at_step, and the checkpoint file of that step exists; every rank evaluated that
#     checkpoint (the same figures) and the controller committed it at the acks, with its
#     evaluation (gyroctl checkpoints). Then a worker is killed with -9: the
#     controller reports worker_lost within lost_after_ms + 2 s.
#  3. The controller is killed mid-run (-9): the workers stop at their grant horizon (at most
#     window + 1 more step records, then none while it is down), and when it is restarted on the same port they rejoin with
#     their steps done and train to the end; rank 0's records cover every step exactly once.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
CTL=$BUILD/controller/gyro-controller
CTLCLI=$BUILD/cli/gyroctl
[ -x "$CTL" ] || fail "$CTL is not built"
[ -x "$CTLCLI" ] || fail "$CTLCLI is not built"
[ -x "$WORKER" ] || fail "$WORKER is not built"
LOST_MS=3000
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT


# config NAME STEPS PORT: the small model, one thread, a controller section for 4 workers.
config() {
  local f=$TMP/$1.yaml
  write_config "$f" "$2" "controller: {listen: \"127.0.0.1:$3\", world: 4, tp: 2, window: 4, heartbeat_ms: 200, lost_after_ms: $LOST_MS}"
  sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
          s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
          s/^train: {batch: 8,/train: {batch: 4,/; s#$TMP/ckpt#$TMP/ckpt_$1#;
          s/^eval: .*/eval: {every: 1000, sequences: 8}/" "$f"
  echo "$f"
}

# wait_for SECONDS COMMAND...: polls every 0.1 s until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}
nsteps() { grep -c '"type":"step"' "$1" 2>/dev/null || true; }
at_least() { [ "$(nsteps "$1")" -ge "$2" ]; }

start_ctl() { # NAME CONFIG [ARGS...]: sets CTL_PID
  "$CTL" --config "$2" "${@:3}" >>"$TMP/$1.out" 2>>"$TMP/$1.err" &
  CTL_PID=$!
  PIDS+=($CTL_PID)
}
start_workers() { # NAME PORT: sets WPIDS
  local r
  WPIDS=()
  for r in 0 1 2 3; do
    OMP_NUM_THREADS=1 "$WORKER" --controller "127.0.0.1:$2" --worker-id "$1-w$r" --ordinal $r \
      --threads 1 --comm-timeout 20000 >"$TMP/$1.$r.jsonl" 2>"$TMP/$1.$r.err" &
    WPIDS+=($!)
    PIDS+=($!)
  done
}
wait_workers() { # NAME
  local r rc=0
  for r in 0 1 2 3; do
    wait "${WPIDS[$r]}" || { echo "worker $r exited $?" >&2; rc=1; }
  done
  [ $rc -eq 0 ] || { tail -n 5 "$TMP/$1".*.err "$TMP/$1.err" >&2; fail "$1: a worker failed"; }
}
stop_ctl() {
  kill "$CTL_PID" 2>/dev/null || true
  wait "$CTL_PID" 2>/dev/null || true
}
ctl() { "$CTLCLI" --controller "127.0.0.1:$PORT" --json "$@"; }

# ---- 1. 50 steps; the controller's losses are rank 0's ----
PORT=$(free_port)
CFG=$(config plain 50 "$PORT")
start_ctl plain "$CFG"
start_workers plain "$PORT"
wait_workers plain
wait_for 10 at_least "$TMP/plain.out" 50 || fail "controller printed $(nsteps "$TMP/plain.out") step records, want 50"
stop_ctl
python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
def steps(path):
    return [r for r in map(json.loads, open(path)) if r.get("type") == "step"]
ctl = {r["step"]: r for r in steps(d + "/plain.out")}
ranks = [steps("%s/plain.%d.jsonl" % (d, r)) for r in range(4)]
assert [r["step"] for r in ranks[0]] == list(range(50)), "rank 0 steps"
for r in ranks[1:]:
    assert [x["loss"] for x in r] == [x["loss"] for x in ranks[0]], "ranks disagree"
assert sorted(ctl) == list(range(50)), sorted(ctl)
for r in ranks[0]:
    assert ctl[r["step"]]["loss"] == r["loss"], (r["step"], ctl[r["step"]]["loss"], r["loss"])
print("plain: 50 steps, controller losses equal rank 0's (final %.6f)" % ranks[0][-1]["loss"])
PY

# ---- 2. directives, then a lost worker ----
PORT=$(free_port)
CFG=$(config dirs 100000 "$PORT")
start_ctl dirs "$CFG" --http 127.0.0.1:0
start_workers dirs "$PORT"
wait_for 60 at_least "$TMP/dirs.0.jsonl" 8 || fail "dirs: training did not start"
ctl pause >"$TMP/pause.json" || fail "gyroctl pause failed"
wait_for 10 grep -q '"kind":"pause"' "$TMP/dirs.0.jsonl" || fail "pause not applied"
sleep 0.3
n1=$(nsteps "$TMP/dirs.0.jsonl")
sleep 0.8
n2=$(nsteps "$TMP/dirs.0.jsonl")
[ "$n1" -eq "$n2" ] || fail "paused, but rank 0 went on from $n1 to $n2 steps"
ctl set lr_scale=0.5 >"$TMP/set.json" || fail "gyroctl set failed"
ctl resume >"$TMP/resume.json" || fail "gyroctl resume failed"
wait_for 10 at_least "$TMP/dirs.0.jsonl" $((n2 + 6)) || fail "no steps after resume"
ctl checkpoint >"$TMP/ckpt.json" || fail "gyroctl checkpoint failed"
all_ckpt() { local r; for r in 0 1 2 3; do grep -q '"kind":"checkpoint"' "$TMP/dirs.$r.jsonl" || return 1; done; }
wait_for 10 all_ckpt || fail "checkpoint not applied by every rank"
python3 - "$TMP" <<'PY'
import json, os, sys
d = sys.argv[1]
recs = [[json.loads(l) for l in open("%s/dirs.%d.jsonl" % (d, r))] for r in range(4)]
want = ["pause", "set_hparams", "resume", "checkpoint"]
per_rank = []
for r, rs in enumerate(recs):
    dirs = [x for x in rs if x["type"] == "directive"]
    assert [x["kind"] for x in dirs] == want, (r, [x["kind"] for x in dirs])
    assert all(x["ok"] for x in dirs), (r, dirs)
    # applied between the step records of at_step - 1 and at_step
    for i, x in enumerate(rs):
        if x["type"] != "directive":
            continue
        before = [y["step"] for y in rs[:i] if y["type"] == "step"]
        after = [y["step"] for y in rs[i + 1:] if y["type"] == "step"]
        assert before and before[-1] == x["at_step"] - 1, (r, x, before[-1:])
        assert not after or after[0] == x["at_step"], (r, x, after[:1])
    per_rank.append([(x["seq"], x["at_step"]) for x in dirs])
assert all(p == per_rank[0] for p in per_rank), per_rank
for name, (seq, at) in zip(want, per_rank[0]):
    reply = json.load(open("%s/%s.json" % (d, {"pause": "pause", "set_hparams": "set",
                                                 "resume": "resume", "checkpoint": "ckpt"}[name])))
    assert int(reply["seq"]) == seq and int(reply["at_step"]) == at, (name, reply, seq, at)
ck = [x for x in recs[0] if x["type"] == "checkpoint"]
assert ck and os.path.exists(ck[-1]["path"]), ck
# with evaluation on, the operator's checkpoint is evaluated by every rank (the same figures)
ck_at = per_rank[0][3][1]
evs = [[x for x in rs if x["type"] == "eval" and x["step"] == ck_at] for rs in recs]
assert all(len(e) == 1 for e in evs), ("evaluations of the checkpoint", ck_at, evs)
assert all(e[0]["val_loss"] == evs[0][0]["val_loss"] for e in evs), evs
open("%s/ck_at" % d, "w").write(str(ck_at))
print("directives: all 4 ranks applied", ", ".join("%s@%d" % (k, a) for k, (_, a) in
                                                   zip(want, per_rank[0])))
PY
# every rank acked the checkpoint: it is committed, with its evaluation
# (the records are written just before the acks: poll the controller for a few seconds)
ck_at=$(cat "$TMP/ck_at")
ck_committed() {
  ctl checkpoints >"$TMP/cks.json" || return 1
  python3 - "$TMP/cks.json" "$ck_at" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = [c for c in r["checkpoints"] if c["step"] == int(sys.argv[2])]
if not (c and c[0]["has_eval"]):
    sys.exit(1)
print("checkpoint %s: committed at the acks, evaluated (mean held-out loss %.4f)" %
      (sys.argv[2], c[0]["mean_loss"]))
PY
}
wait_for 10 ck_committed || fail "checkpoint $ck_at not committed with its evaluation: $(cat "$TMP/cks.json")"
# its size on /metrics: the four ranks' files, as on disk (each ack says its rank's file size)
HP=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l) if l.startswith("{") else {}
    if r.get("type") == "http": print(r["port"])' "$TMP/dirs.out")
[ -n "$HP" ] || fail "no http line: $(cat "$TMP/dirs.out")"
curl -sf "http://127.0.0.1:$HP/metrics" >"$TMP/dirs.metrics" || fail "/metrics"
grep -q "^gyro_checkpoint_step $ck_at\$" "$TMP/dirs.metrics" ||
  fail "gyro_checkpoint_step: $(grep checkpoint_step "$TMP/dirs.metrics"), want $ck_at"
files=$(find "$TMP/ckpt_dirs" -name "$(printf 'step_%08d' "$ck_at").rank*.gyck")
[ "$(echo "$files" | wc -l)" -eq 4 ] || fail "checkpoint $ck_at files: $files"
want=$(echo "$files" | xargs stat -c %s | awk '{s += $1} END {print s + 0}')
got=$(awk '/^gyro_checkpoint_size_bytes /{print $2}' "$TMP/dirs.metrics")
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) == float(sys.argv[2]) else 1)' "${got:-0}" "$want" ||
  fail "gyro_checkpoint_size_bytes ${got:-absent}, the files of checkpoint $ck_at hold $want bytes"
echo "checkpoint $ck_at: $want bytes in four files, as /metrics says"
t0=$(date +%s.%N)
kill -9 "${WPIDS[3]}"
lost() { grep -q worker_lost "$TMP/dirs.err" "$TMP/dirs.out"; }
wait_for $((LOST_MS / 1000 + 2)) lost || fail "no worker_lost event within $((LOST_MS + 2000)) ms"
t1=$(date +%s.%N)
echo "worker_lost reported after $(python3 -c "print('%.2f' % ($t1 - $t0))") s"
for p in "${WPIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
stop_ctl

# ---- 3. the controller dies and comes back ----
PORT=$(free_port)
STEPS=80
CFG=$(config rs $STEPS "$PORT")
start_ctl rs "$CFG"
start_workers rs "$PORT"
wait_for 60 at_least "$TMP/rs.0.jsonl" 20 || fail "rs: training did not start"
kill -9 "$CTL_PID"
n0=$(nsteps "$TMP/rs.0.jsonl")
wait "$CTL_PID" 2>/dev/null || true
# The workers may finish the steps already granted (up to window = 4 past the slowest rank's
# count; a rank's step record may trail its report by one), then park: wait until rank 0's
# count holds for 3 s (steps take far less, even under the sanitizers on a loaded machine).
parked() {
  local a b
  a=$(nsteps "$TMP/rs.0.jsonl")
  sleep 3
  b=$(nsteps "$TMP/rs.0.jsonl")
  [ "$a" -eq "$b" ]
}
wait_for 30 parked || fail "controller down, but rank 0 kept training: $(nsteps "$TMP/rs.0.jsonl") steps"
n2=$(nsteps "$TMP/rs.0.jsonl")
[ "$n2" -le $((n0 + 5)) ] ||
  fail "controller down at rank 0's step $n0, but rank 0 went on to $n2 steps (past its grant)"
[ "$n2" -lt $STEPS ] || fail "the run ended before the controller was restarted"
echo "controller down at $n0 steps: workers parked after $n2 steps"
start_ctl rs "$CFG"
wait_workers rs
stop_ctl
python3 - "$TMP" $STEPS "$n2" <<'PY'
import json, sys
d, steps, parked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for r in range(4):
    s = [x["step"] for x in map(json.loads, open("%s/rs.%d.jsonl" % (d, r))) if x["type"] == "step"]
    assert s == list(range(steps)), (r, s[:3], len(s))
ctl = [x["step"] for x in map(json.loads, open(d + "/rs.out")) if x.get("type") == "step"]
assert ctl[-1] == steps - 1 and parked in ctl, (ctl[-3:], parked)
print("restart: parked at %d, rejoined and trained to %d" % (parked, steps))
PY
echo "PASS"
