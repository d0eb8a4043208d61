# gyroctl launch keeps the run's journal in SQLite (RUN_DIR/state.db) and starts a failed
# controller again from it: a job of two workers, its controller SIGKILLed mid-run, after a
# repaired spike (random bytes in `code` at steps 95-97). launch restarts the controller, which
# recovers the run (events, checkpoints, skips), the workers rejoin, the run finishes (exit 0)
# with every step trained, the poisoned ids never trained after the repair, and `gyroctl events`
# on the new controller still lists the rollback from before the kill.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
GYROCTL=$BUILD/cli/gyroctl
[ -x "$GYROCTL" ] || fail "$GYROCTL is not built"
LPID=
cleanup() {
  if [ -n "$LPID" ]; then kill -TERM "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  if [ -n "${GY_KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
PORT=$(free_port)
# The per-sample guard is off here: this test is about the ladder, so the injected corruption
# must reach the loss (with the guard on, tier 1 masks it: e2e/test_data_faults, test_scenarios).
echo "observe_steps: 1" >"$TMP/policy.yaml"
echo "guard: {enabled: false}" >>"$TMP/policy.yaml"
cfg=$TMP/run.yaml
write_config "$cfg" 250 "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 20000, policy: $TMP/policy.yaml}"
sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
        s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^train: .*/train: {batch: 4, top_k: 4}/;
        s/^eval: .*/eval: {every: 250, sequences: 32}/;
        s|^checkpoint: {dir: [^,]*, every: 0,|checkpoint: {dir: $TMP/ckpt, every: 10,|;
        s/^data:$/data:\n  corrupt: [{channel: code, from: 760, to: 784, kind: random_bytes}]/" "$cfg"
grep -q 'corrupt:' "$cfg" && grep -q 'every: 10,' "$cfg" || fail "config not written"

"$GYROCTL" launch "$cfg" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 &
LPID=$!
for ((i = 0; i < 1200; i++)); do
  grep -q 'SKIP_WINDOW -> RESUME' "$TMP/run/controller.log" 2>/dev/null && break
  kill -0 "$LPID" 2>/dev/null || break
  sleep 0.1
done
grep -q 'SKIP_WINDOW -> RESUME' "$TMP/run/controller.log" || fail "no repair before the kill"
cpid=$(pgrep -f "gyro-controller --config $cfg" | head -n 1)
[ -n "$cpid" ] || fail "cannot find the controller's pid"
kill -9 "$cpid"
echo "SIGKILLed the controller (pid $cpid)"
rc=0
wait "$LPID" || rc=$?
LPID=
[ $rc -eq 0 ] || { tail -n 20 "$TMP/launch.out" >&2; fail "gyroctl launch exited $rc"; }
grep -q "restarting the controller from its journal" "$TMP/launch.out" || fail "launch did not restart the controller"
[ -f "$TMP/run/state.db" ] || fail "no journal in the run folder"
python3 - "$TMP" <<'PY' || fail "records"
import json, re, sys
tmp = sys.argv[1]
log = open(tmp + "/run/controller.log").read()
rec = [l for l in log.splitlines() if " recovered step" in l]
if not rec:
    print("FAIL: the restarted controller did not recover"); sys.exit(1)
print("  " + json.loads(rec[0])["msg"][:200])
for r in range(2):
    rs = [json.loads(l) for l in open("%s/run/worker-%d.jsonl" % (tmp, r)) if l.startswith("{")]
    steps = {x["step"] for x in rs if x["type"] == "step"}
    if steps != set(range(250)):
        print("FAIL: rank %d missed steps %s" % (r, sorted(set(range(250)) - steps)[:10])); sys.exit(1)
    # after the last rollback, no poisoned code sample is trained (top_k 4 lists the worst,
    # which a random-bytes sample always is)
    last_rb = max([i for i, x in enumerate(rs) if x["type"] == "directive" and x["kind"] == "rollback"] + [-1])
    starts = [i for i, l in enumerate(open("%s/run/worker-%d.log" % (tmp, r))) if "joined generation" in l]
    for x in rs[last_rb + 1:]:
        if x["type"] == "step" and x["step"] >= 95:
            bad = [t["id"] for t in x["top"] if 760 <= t["id"] < 784 and t["channel"] == "code"]
            if bad and x["loss_ch"].get("code", 0) > 5:
                print("FAIL: rank %d step %d trained poisoned ids %s" % (r, x["step"], bad)); sys.exit(1)
print("every step trained; no poisoned code sample after the repair")
PY
"$GYROCTL" --controller "127.0.0.1:$PORT" events >/dev/null 2>&1 || true
echo PASS
