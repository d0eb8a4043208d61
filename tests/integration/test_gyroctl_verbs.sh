# gyroctl's operator verbs against a real supervised run (`gyroctl launch`: a controller and 2 CPU
# workers on a free loopback port): usage errors exit 2; events lists gang_formed; policy show
# prints YAML that policy set takes back; a bad policy file is refused (exit 1, FILE:LINE and the
# key) and the policy in force stays; rollback --to a committed checkpoint is applied by every
# worker (their records show the rollback directive) and to an uncommitted step is refused
# (exit 1); skip --samples / --steps roll back to the newest committed checkpoint with the skips
# (visible in the workers' rollback records).
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

# ---- usage errors: exit 2
expect_rc 2 "$G" rollback
expect_rc 2 "$G" rollback --to abc
expect_rc 2 "$G" rollback --to -3
expect_rc 2 "$G" rollback --to 3 extra
expect_rc 2 "$G" skip
expect_rc 2 "$G" skip --samples 9-3
grep -q "inclusive" "$TMP/err" || fail "skip 9-3: $(cat "$TMP/err")"
expect_rc 2 "$G" skip --samples x
expect_rc 2 "$G" skip --steps 1-2 more
expect_rc 2 "$G" events extra
expect_rc 2 "$G" events --since -1
expect_rc 2 "$G" policy
expect_rc 2 "$G" policy frob
expect_rc 2 "$G" policy set
expect_rc 2 "$G" policy set "$TMP/missing.yaml"
grep -q "missing.yaml" "$TMP/err" || fail "policy set missing: $(cat "$TMP/err")"
expect_rc 0 "$G" --help
grep -q "rollback --to STEP" "$TMP/out" || fail "--help lacks rollback"
grep -q "newest committed checkpoint" "$TMP/out" || fail "--help does not say what skip does"

# ---- a real run: controller + 2 workers under gyroctl launch
PORT=$(free_port)
export GYRO_CONTROLLER=127.0.0.1:$PORT
STEPS=20000 # only the operator's stop ends it: a short run could finish between two verbs
cat >"$TMP/run.yaml" <<YAML
run: {name: verbs, seed: 7, steps: $STEPS, threads: 1}
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
# rollback_record TO [SKIP_JSON]: waits until both workers' records hold an ok rollback directive
# to step TO (whose skip list holds every range of SKIP_JSON, a JSON list of [first, last]).
rollback_record() {
  local to=$1 skip=${2:-[]}
  for _ in $(seq 1 300); do
    if python3 - "$TMP/run" "$to" "$skip" <<'PY'; then return 0; fi
import json, sys
d, to, want = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
for r in (0, 1):
    ok = False
    try:
        lines = open(f"{d}/worker-{r}.jsonl").read().splitlines()
    except OSError:
        sys.exit(1)
    for ln in lines:
        try:
            o = json.loads(ln)
        except ValueError:
            continue
        if o.get("type") == "directive" and o.get("kind") == "rollback" and o.get("ok") and \
           o.get("to_step") == to and all(w in o.get("skip", []) for w in want):
            ok = True
    if not ok:
        sys.exit(1)
PY
    sleep 0.1
  done
  diag
  fail "no rollback directive to step $to with skips $skip in the workers' records"
}

# Pause early: the verbs are exercised on a parked gang.
paused=0
for _ in $(seq 1 600); do
  kill -0 "$LPID" 2>/dev/null || { diag; fail "launch exited before the pause"; }
  rc=0
  "$G" --timeout 2000 pause >"$TMP/pause.out" 2>"$TMP/pause.err" || rc=$?
  if [ $rc -eq 0 ]; then paused=1; break; fi
  sleep 0.02
done
[ $paused -eq 1 ] || { diag; fail "pause never accepted: $(cat "$TMP/pause.err")"; }

# skip before any committed checkpoint: refused with a clear message
expect_rc 1 "$G" skip --samples 5-9
grep -q "no committed checkpoint" "$TMP/err" || fail "skip without a checkpoint: $(cat "$TMP/err")"

# ---- events: the audit log
expect_rc 0 "$G" events
grep -q "gang_formed" "$TMP/out" || { diag; fail "events lacks gang_formed: $(cat "$TMP/out")"; }
expect_rc 0 "$G" --json events
python3 - "$TMP/out" <<'PY'
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert evs and all({"id", "time", "kind", "message"} <= set(e) for e in evs), evs[:3]
ids = [int(e["id"]) for e in evs]
assert ids == sorted(ids), ids
assert any(e["kind"] == "gang_formed" for e in evs), evs
PY
last=$(python3 -c "import json,sys; print(max(int(json.loads(l)['id']) for l in open(sys.argv[1]) if l.strip()))" "$TMP/out")
expect_rc 0 "$G" --json events --since "$last"
python3 -c "
import json, sys
ids = [int(json.loads(l)['id']) for l in open(sys.argv[1]) if l.strip()]
assert all(i > $last for i in ids), ids" "$TMP/out" || fail "events --since $last: $(cat "$TMP/out")"

# ---- policy: show, set it back, a bad file refused
expect_rc 0 "$G" policy show
cp "$TMP/out" "$TMP/policy0.yaml"
grep -q "observe_steps" "$TMP/policy0.yaml" || fail "policy show: $(cat "$TMP/policy0.yaml")"
expect_rc 0 "$G" policy set "$TMP/policy0.yaml"
sed 's/^observe_steps:.*/observe_steps: 7/' "$TMP/policy0.yaml" >"$TMP/policy1.yaml"
grep -q "^observe_steps: 7" "$TMP/policy1.yaml" || fail "cannot edit the policy's observe_steps"
expect_rc 0 "$G" policy set "$TMP/policy1.yaml"
expect_rc 0 "$G" policy show
grep -q "^observe_steps: 7" "$TMP/out" || fail "policy set not in force: $(cat "$TMP/out")"
cp "$TMP/out" "$TMP/policy1.shown"
printf 'observe_steps: 3\nbogus_key: 1\n' >"$TMP/bad.yaml"
expect_rc 1 "$G" policy set "$TMP/bad.yaml"
grep -q "bad.yaml:2" "$TMP/err" || fail "bad policy: no FILE:LINE: $(cat "$TMP/err")"
grep -q "bogus_key" "$TMP/err" || fail "bad policy: key not named: $(cat "$TMP/err")"
echo "bad policy: $(cat "$TMP/err")"
expect_rc 0 "$G" policy show
cmp -s "$TMP/out" "$TMP/policy1.shown" || fail "a refused policy changed the policy in force"

# ---- rollback: take a checkpoint, roll back to it; an uncommitted step is refused
expect_rc 0 "$G" checkpoint
# a worker tells of its checkpoint in its next step report: train on to get it committed
expect_rc 0 "$G" resume
committed=-1
for _ in $(seq 1 200); do
  committed=$("$G" --json status | field committed_step)
  [ -n "$committed" ] && [ "$committed" -ge 0 ] && break
  sleep 0.05
done
[ -n "$committed" ] && [ "$committed" -ge 0 ] || { diag; fail "checkpoint never committed"; }
echo "committed checkpoint: step $committed"
expect_rc 1 "$G" rollback --to $((committed + 1))
grep -q "FAILED_PRECONDITION" "$TMP/err" || fail "rollback to an uncommitted step: $(cat "$TMP/err")"
expect_rc 0 "$G" rollback --to "$committed"
echo "rollback: $(cat "$TMP/out")"
rollback_record "$committed"

# ---- skip: a rollback to the newest committed checkpoint carrying the skips
expect_rc 0 "$G" skip --samples 1000000-1000009
echo "skip: $(cat "$TMP/out")"
rollback_record "$committed" '[[1000000, 1000010]]'
expect_rc 0 "$G" skip --steps 300-301
ok=0
for _ in $(seq 1 300); do
  if python3 - "$TMP/run/worker-0.jsonl" <<'PY'; then ok=1; break; fi
import json, sys
rb = []
for ln in open(sys.argv[1]):
    try:
        o = json.loads(ln)
    except ValueError:
        continue
    if o.get("type") == "directive" and o.get("kind") == "rollback" and o.get("ok"):
        rb.append(o)
# the third rollback: steps 300..301 with dp 2 and batch 4 train on 16 sample ids
sys.exit(0 if len(rb) >= 3 and sum(b - a for a, b in rb[-1]["skip"]) == 16 else 1)
PY
  sleep 0.1
done
[ $ok -eq 1 ] || { diag; fail "skip --steps: no rollback record skipping 16 ids"; }
expect_rc 0 "$G" events
grep -q "operator skip" "$TMP/out" || fail "events lacks the operator skip: $(cat "$TMP/out")"
[ -z "${GY_TEST_VERBOSE:-}" ] || cat "$TMP/out"

expect_rc 0 "$G" stop
for _ in $(seq 1 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LPID" 2>/dev/null && { diag; fail "launch still runs 60 s after stop"; }
echo "ok"
