# gyroctl from the outside: usage errors exit 2, an unreachable controller exits 3; then a real
# supervised run started with `gyroctl launch` (a controller and 2 CPU workers on a free
# loopback port): status (table and --json), pause -> PAUSED and the step stops advancing,
# resume, set lr_scale=0.5, checkpoint (files appear), stop -> the run ends and launch exits 0.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
G=$BUILD/cli/gyroctl
[ -x "$G" ] || fail "$G not built"

expect_rc() { # expect_rc WANT CMD...: runs CMD, fails unless it exits WANT
  local want=$1 rc=0
  shift
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, want $want: $(cat "$TMP/out" "$TMP/err")"
}

# ---- usage errors: exit 2, with a message
expect_rc 2 "$G"
expect_rc 2 "$G" frobnicate
expect_rc 2 "$G" --timeout abc status
expect_rc 2 "$G" status extra
expect_rc 2 "$G" set
expect_rc 2 "$G" set bogus=1
grep -q "unknown key 'bogus'" "$TMP/err" || fail "set bogus: $(cat "$TMP/err")"
expect_rc 2 "$G" set lr_scale=abc
expect_rc 2 "$G" set beta2=1.5
expect_rc 2 "$G" set lr_scale
expect_rc 2 "$G" watch --nope
expect_rc 2 "$G" launch
expect_rc 2 "$G" launch "$TMP/missing.yaml"
grep -q "missing.yaml" "$TMP/err" || fail "launch missing config: $(cat "$TMP/err")"
expect_rc 0 "$G" --help
grep -q "exit codes" "$TMP/out" || fail "--help does not document the exit codes"

# ---- unreachable controller: exit 3 (a port nothing listens on)
DEAD=$(free_port)
expect_rc 3 "$G" --controller "127.0.0.1:$DEAD" --timeout 2000 status
expect_rc 3 "$G" --controller "127.0.0.1:$DEAD" --timeout 2000 pause
expect_rc 3 "$G" --controller "127.0.0.1:$DEAD" --timeout 2000 watch

# ---- a real run: controller + 2 workers under gyroctl launch
PORT=$(free_port)
export GYRO_CONTROLLER=127.0.0.1:$PORT
# Long enough that only the operator's stop ends it: under the sanitizers a 60-step run could
# finish between the checkpoint and the stop (a STOP in state DONE is refused).
STEPS=${GY_TEST_GYROCTL_STEPS:-20000}
cat >"$TMP/run.yaml" <<YAML
run: {name: ctl, seed: 7, steps: $STEPS, threads: 1}
model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}
train: {batch: 4, top_k: 2}
optimizer: {lr: 1.0e-3}
schedule: {kind: cosine, warmup: 10, min_lr_frac: 0.1}
data:
  channels:
    - {name: zh, train: ['\${GY_DATA_DIR}/zh/train_000.bin'], val: '\${GY_DATA_DIR}/zh/val.bin'}
    - {name: en, train: ['\${GY_DATA_DIR}/en/train_000.bin'], val: '\${GY_DATA_DIR}/en/val.bin'}
    - {name: code, train: ['\${GY_DATA_DIR}/code/train_000.bin'], val: '\${GY_DATA_DIR}/code/val.bin'}
eval: {every: 0, sequences: 16}
checkpoint: {dir: $TMP/ckpt, every: 0, keep: 100}
controller: {listen: '127.0.0.1:$PORT', world: 2, tp: 1, window: 4, heartbeat_ms: 200}
YAML
"$G" launch "$TMP/run.yaml" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 &
LPID=$!
cleanup() {
  kill -TERM "$LPID" 2>/dev/null && wait "$LPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
diag() { # what to print when something fails
  echo "--- launch output"; tail -n 30 "$TMP/launch.out"
  for f in "$TMP"/run/*; do echo "--- $f"; tail -n 8 "$f"; done
}
field() { # field NAME: a field of the --json status on stdin
  python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"
}

# Pause as early as the controller takes it: a tiny run is over in a few seconds.
paused=0
for _ in $(seq 1 600); do
  kill -0 "$LPID" 2>/dev/null || { diag; fail "launch exited before the pause"; }
  rc=0
  "$G" --timeout 2000 pause >"$TMP/pause.out" 2>"$TMP/pause.err" || rc=$?
  if [ $rc -eq 0 ]; then paused=1; break; fi
  sleep 0.02
done
[ $paused -eq 1 ] || { diag; fail "pause never accepted: $(cat "$TMP/pause.err")"; }
echo "pause: $(cat "$TMP/pause.out")"

state=""
for _ in $(seq 1 200); do
  state=$("$G" --json status | field state)
  [ "$state" = PAUSED ] && break
  sleep 0.1
done
[ "$state" = PAUSED ] || { diag; fail "state after pause: '$state', want PAUSED"; }
s1=$("$G" --json status | field step)
sleep 1.5
s2=$("$G" --json status | field step)
[ "$s1" = "$s2" ] || { diag; fail "paused run advanced from step $s1 to $s2"; }
[ "$s1" -lt $((STEPS - 1)) ] || fail "paused only at step $s1 of $STEPS"
echo "paused at step $s1"

# status: the human table and the JSON
"$G" status >"$TMP/status.txt"
cat "$TMP/status.txt"
grep -q "state PAUSED" "$TMP/status.txt" || fail "status table: no 'state PAUSED'"
grep -q "^RANK" "$TMP/status.txt" || fail "status table: no per-rank table"
[ "$(grep -cE '^[01] ' "$TMP/status.txt")" -eq 2 ] || fail "status table: want 2 rank rows"
"$G" --json status >"$TMP/status.json"
python3 - "$TMP/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["state"] == "PAUSED" and s["world"] == 2 and len(s["ranks"]) == 2, s
assert s["generation"] >= 1, s
PY

expect_rc 0 "$G" resume
for _ in $(seq 1 100); do
  s3=$("$G" --json status | field step)
  [ "$s3" -gt "$s1" ] && break
  sleep 0.05
done
[ "$s3" -gt "$s1" ] || { diag; fail "resume: step stays at $s3"; }
echo "resumed: step $s3"

expect_rc 0 "$G" set lr_scale=0.5
echo "set: $(cat "$TMP/out")"
expect_rc 0 "$G" --json checkpoint
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['at_step'] > 0, r" "$TMP/out"
echo "checkpoint: $(cat "$TMP/out")"
for _ in $(seq 1 100); do
  ls "$TMP"/ckpt/*.gyck >/dev/null 2>&1 && break
  sleep 0.1
done
ls "$TMP"/ckpt/*.gyck >/dev/null 2>&1 || { diag; fail "checkpoint: no file in $TMP/ckpt"; }

expect_rc 0 "$G" stop
echo "stop: $(cat "$TMP/out")"
rc=0
for _ in $(seq 1 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LPID" 2>/dev/null && { diag; fail "launch still runs 60 s after stop"; }
wait "$LPID" || rc=$?
[ $rc -eq 0 ] || { diag; fail "launch exited $rc after stop, want 0"; }
grep -q "the run is done" "$TMP/launch.out" || { diag; fail "launch did not report the end"; }
for f in controller.log worker-0.jsonl worker-0.log worker-1.jsonl worker-1.log; do
  [ -f "$TMP/run/$f" ] || fail "run folder lacks $f"
done
expect_rc 3 "$G" --timeout 2000 status
echo "launch output:"
cat "$TMP/launch.out"
echo "ok"
