# Checkpoint evaluation end to end: a real controller (HTTP on a free port) and 2 CPU workers
# (2 layers, 64 wide, 60 steps, a checkpoint every 20, held-out evaluation on). Every checkpoint
# the workers write is evaluated (held-out loss, perplexity and cloze accuracy per source) and
# rank 0 sends the figures to the controller: `gyroctl checkpoints` lists every committed
# checkpoint with them and marks the best clean one; the figures are the workers' own (both
# ranks evaluated the same); /metrics has gyro_eval_perplexity and gyro_eval_cloze_accuracy per
# source and /api/series the evaluation points; the controller prints {"type":"eval"} lines.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
CTL=$BUILD/controller/gyro-controller
G=$BUILD/cli/gyroctl
for b in "$CTL" "$G" "$WORKER"; do [ -x "$b" ] || fail "$b not built"; done
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$(free_port)
CFG=$TMP/run.yaml
write_config "$CFG" 60 "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, heartbeat_ms: 200}"
sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
        s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^train: .*/train: {batch: 4, top_k: 4}/;
        s/^eval: .*/eval: {every: 60, sequences: 16}/;
        s/^checkpoint: {\(.*\)every: 0,/checkpoint: {\1every: 20,/" "$CFG"
grep -q 'every: 20' "$CFG" && grep -q 'sequences: 16' "$CFG" || fail "config not written as intended"

"$CTL" --config "$CFG" --http 127.0.0.1:0 --grace-ms 60000 >"$TMP/ctl.out" 2>"$TMP/ctl.err" &
CTL_PID=$!
PIDS+=($CTL_PID)
for _ in $(seq 600); do
  grep -q '"type":"http"' "$TMP/ctl.out" 2>/dev/null && break
  sleep 0.1
done
HP=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("type") == "http": print(r["port"])' "$TMP/ctl.out")
[ -n "$HP" ] || fail "no http line: $(cat "$TMP/ctl.out" "$TMP/ctl.err")"
export GYRO_CONTROLLER=127.0.0.1:$PORT

# before any checkpoint: an empty list, exit 0
"$G" checkpoints >"$TMP/empty.txt" || fail "checkpoints before the run: exit $?"
grep -q "no committed checkpoint yet" "$TMP/empty.txt" || fail "empty list: $(cat "$TMP/empty.txt")"
"$G" checkpoints --json >"$TMP/empty.json" || fail "checkpoints --json before the run"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["checkpoints"] == [] and r["best_step"] == -1, r' "$TMP/empty.json"
rc=0; "$G" checkpoints extra >/dev/null 2>"$TMP/err" || rc=$?
[ $rc -eq 2 ] || fail "checkpoints with an extra argument: exit $rc, want 2"

t0=$SECONDS
WP=()
for r in 0 1; do
  OMP_NUM_THREADS=1 "$WORKER" --controller "127.0.0.1:$PORT" --worker-id "w$r" --ordinal $r \
    --threads 1 >"$TMP/w$r.jsonl" 2>"$TMP/w$r.log" &
  WP+=($!)
  PIDS+=($!)
done
for r in 0 1; do
  wait "${WP[$r]}" || fail "worker $r exited $?: $(tail -n 5 "$TMP/w$r.log")"
done
echo "run: $((SECONDS - t0)) s"
# Committed: 20, 40 and 60 (a checkpoint is committed when every rank has reported it in a step
# report; the final one is written before the last step's report, which carries it).
"$G" checkpoints --json >"$TMP/ck.json" || fail "checkpoints --json: exit $?"
"$G" checkpoints >"$TMP/ck.txt" || fail "checkpoints: exit $?"
cat "$TMP/ck.txt"
grep -q "<- best" "$TMP/ck.txt" || fail "table: no best marked"
[ "$(grep -cE '^[ *] +(20|40|60) +clean' "$TMP/ck.txt")" -eq 3 ] || fail "table: want rows 20, 40, 60"

python3 - "$TMP/ck.json" "$TMP/w0.jsonl" "$TMP/w1.jsonl" "$TMP/ctl.out" <<'PY'
import json, math, sys
def fail(m):
    print("FAIL:", m); sys.exit(1)
def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))
r = json.load(open(sys.argv[1]))
cks = r["checkpoints"]
if [c["step"] for c in cks] != [20, 40, 60]:
    fail("committed checkpoints %s, want 20 40 60" % [c["step"] for c in cks])
recs = [[x for x in map(json.loads, open(p)) if x["type"] == "eval"] for p in sys.argv[2:4]]
for rk in (0, 1):
    if [x["step"] for x in recs[rk]] != [20, 40, 60]:
        fail("rank %d evaluated at %s, want 20 40 60 (every checkpoint)" % (rk, [x["step"] for x in recs[rk]]))
if recs[0] != recs[1]:
    fail("the ranks' evaluations differ: %s vs %s" % (recs[0], recs[1]))
for c, w in zip(cks, recs[0]):
    if not c["has_eval"] or not c["clean"]:
        fail("checkpoint %d: %s" % (c["step"], c))
    src = {s["source"]: s for s in c["sources"]}
    if sorted(src) != ["code", "en", "zh"]:
        fail("checkpoint %d: sources %s" % (c["step"], sorted(src)))
    for n, s in src.items():
        # gyroctl prints 10 significant digits
        if not close(s["loss"], w["val_loss"][n]) or not close(s["ppl"], w["ppl"][n]):
            fail("checkpoint %d %s: controller %s, worker %s" % (c["step"], n, s, w))
        if s["cloze_items"] != 16 * 32 or w["cloze_items"][n] != 16 * 32:
            fail("checkpoint %d %s: %d cloze items, want 16 x 32" % (c["step"], n, s["cloze_items"]))
        if not close(s["cloze_accuracy"], w["cloze"][n]) or not 0 <= s["cloze_accuracy"] <= 1:
            fail("checkpoint %d %s: cloze %s vs worker %s" % (c["step"], n, s["cloze_accuracy"], w["cloze"][n]))
        if s["tokens"] != 16 * 64:
            fail("checkpoint %d %s: %d tokens, want 16 x 64" % (c["step"], n, s["tokens"]))
    mean = sum(s["loss"] for s in c["sources"]) / 3
    if not close(c["mean_loss"], mean):
        fail("checkpoint %d: mean_loss %s, want %s" % (c["step"], c["mean_loss"], mean))
best = min(cks, key=lambda c: c["mean_loss"])
if r["best_step"] != best["step"] or [c["step"] for c in cks if c["best"]] != [best["step"]]:
    fail("best %s, want %d" % (r["best_step"], best["step"]))
# training helps: the held-out loss of the last checkpoint is below the first one's
if not cks[-1]["mean_loss"] < cks[0]["mean_loss"]:
    fail("held-out loss did not fall: %s" % [c["mean_loss"] for c in cks])
ev = [x for x in map(json.loads, open(sys.argv[4])) if x.get("type") == "eval"]
if [x["step"] for x in ev] != [20, 40, 60] or not all(x["checkpoint"] for x in ev):
    fail("controller eval lines: %s" % ev)
print("checkpoints:", [(c["step"], round(c["mean_loss"], 4)) for c in cks], "best", r["best_step"])
print("cloze at 60:", {s["source"]: s["cloze_accuracy"] for s in cks[-1]["sources"]})
PY
[ $? -eq 0 ] || fail "checkpoint list"

U=http://127.0.0.1:$HP
curl -sf "$U/metrics" >"$TMP/metrics" || fail "/metrics"
for src in zh en code; do
  grep -qE "^gyro_eval_perplexity\{source=\"$src\"\} [0-9.e+]+$" "$TMP/metrics" || fail "/metrics: no gyro_eval_perplexity for $src"
  grep -qE "^gyro_eval_cloze_accuracy\{source=\"$src\"\} [0-9.e+-]+$" "$TMP/metrics" || fail "/metrics: no gyro_eval_cloze_accuracy for $src"
  grep -qE "^gyro_eval_step\{source=\"$src\"\} 60$" "$TMP/metrics" || fail "/metrics: eval step of $src is not 60"
done
# the newest committed checkpoint (60) and its size: both ranks' files, as on disk
grep -q '^gyro_checkpoint_step 60$' "$TMP/metrics" || fail "gyro_checkpoint_step: $(grep checkpoint_step "$TMP/metrics")"
[ "$(find "$TMP" -name 'step_00000060.rank*.gyck' | wc -l)" -eq 2 ] ||
  fail "checkpoint 60 files: $(find "$TMP" -name '*.gyck')"
want=$(find "$TMP" -name 'step_00000060.rank*.gyck' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
got=$(awk '/^gyro_checkpoint_size_bytes /{print $2}' "$TMP/metrics")
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) == float(sys.argv[2]) else 1)' "${got:-0}" "$want" ||
  fail "gyro_checkpoint_size_bytes ${got:-absent}, the files hold $want bytes"
echo "checkpoint 60: $want bytes in two files, as /metrics says"
curl -sf "$U/api/series" >"$TMP/series.json" || fail "/api/series"
python3 - "$TMP/series.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ev = s["eval"]
pts = sorted((e["step"], e["source"]) for e in ev)
want = sorted((st, n) for st in (20, 40, 60) for n in ("zh", "en", "code"))
assert pts == want, pts
assert all(e["checkpoint"] and e["ppl"] > 1 and 0 <= e["cloze"] <= 1 for e in ev), ev
PY
[ $? -eq 0 ] || fail "/api/series eval points"
grep -q "gyro_eval_perplexity" "$TMP/metrics" && echo "metrics: $(grep -c '^gyro_eval_' "$TMP/metrics") gyro_eval_* samples"
echo "ok"
