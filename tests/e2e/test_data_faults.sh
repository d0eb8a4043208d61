# test_data_faults: bad data inside a real shard never reaches the weights, under the shipped
# default policy. Real-world junk (bytes of a compiled program and of a gzip file, a repeated
# span, blank lines, Chinese text; raw HTML is left to bench/data_faults.sh, where a window of a
# web page may be plain text) is spliced into a copy of the en shard at offsets drawn from a
# seed the test does not choose ($RANDOM, printed), 3% of the channel. A job of two workers
# under gyroctl launch, the built-in policy (no policy file), trains 400 steps with
# train.log_samples, so every sample each rank drew is in its records. Then, from the splice
# offsets (the ground truth) and the records:
#   - at least 80% of the junk samples drawn (half or more of their tokens junk) were masked by
#     the guard before the backward pass;
#   - no junk sample was trained after its splice was first sighted (the quarantine);
#   - the junk caused no rollback (isolated bad samples are the guard's, not the ladder's);
#   - the worker's records name the spliced file and offsets inside it for what they masked.
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
SEED=${GY_FAULT_SEED:-$RANDOM}
echo "splice seed $SEED (GY_FAULT_SEED=$SEED reproduces this run)"
mkdir -p "$TMP/data/en"
for ch in zh code; do ln -s "$DATA/$ch" "$TMP/data/$ch"; done
cp "$DATA/en/val.bin" "$TMP/data/en/val.bin"
python3 "$SRC/bench/data_faults_splice.py" --shard "$DATA/en/train_000.bin" \
  --out "$TMP/data/en/train_000.bin" --share 0.03 --seed "$SEED" \
  --other-language "$DATA/zh/train_000.bin" --manifest "$TMP/splices.json" \
  --kinds binary,compressed,repeated,empty,language ||
  fail "cannot splice the junk"
export GY_DATA_DIR=$TMP/data
PORT=$(free_port)
cfg=$TMP/run.yaml
small_job_config "$cfg" 400 "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 20000}"
sed -i 's/^train: {\(.*\)}/train: {\1, log_samples: true}/' "$cfg"
grep -q "log_samples: true" "$cfg" || fail "cannot turn on train.log_samples"

rc=0
timeout 540 "$GYROCTL" launch "$cfg" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 || rc=$?
[ $rc -eq 0 ] || { tail -n 30 "$TMP/launch.out" >&2; fail "gyroctl launch exited $rc"; }

python3 - "$TMP/splices.json" "$TMP/run" "$TMP/data/en/train_000.bin" <<'PY' || fail "see above"
import json, re, sys
man, run, path = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
T = 64
spl = [(s["offset"], s["offset"] + s["length"], s["kind"]) for s in man["splices"]]

def junk(idx):
    """(share of the sample's tokens that are junk, the splice) for en sample index idx"""
    a, b = idx * T, idx * T + T + 1
    for i, (s, e, _) in enumerate(spl):
        o = max(0, min(b, e) - max(a, s))
        if o:
            return o / (T + 1), i
    return 0.0, None

drawn = []  # (step, rank, splice, share, masked)
masked_records = []
for rank in (0, 1):
    last = {}
    for line in open("%s/worker-%d.jsonl" % (run, rank)):
        if not line.startswith("{"):
            continue
        x = json.loads(line)
        if x.get("type") == "step":
            last[x["step"]] = x  # a step replayed after a rollback: its last record counts
    for step, x in sorted(last.items()):
        for ident, ch, idx, m, _loss in x["samples_drawn"]:
            if ch == "en":
                share, sp = junk(idx)
                if sp is not None:
                    drawn.append((step, rank, sp, share, m))
        if rank == 0:
            masked_records += x["masked"]
bad = [d for d in drawn if d[3] >= 0.5]
hit = [d for d in bad if d[4]]
print("junk samples drawn: %d (%d more overlap a splice's edge); masked: %d" %
      (len(bad), len(drawn) - len(bad), len(hit)))
kinds = {}
for d in bad:
    k = spl[d[2]][2]
    kinds.setdefault(k, [0, 0])
    kinds[k][0] += 1
    kinds[k][1] += d[4]
print("by kind (drawn, masked):", kinds)
ok = True
if len(bad) < 5:
    print("too few junk samples drawn (%d) for the test to say anything" % len(bad)); ok = False
elif len(hit) < 0.8 * len(bad):
    print("the guard masked %d of %d junk samples (< 80%%)" % (len(hit), len(bad))); ok = False
first = {}
for step, rank, sp, share, m in sorted(drawn):
    if m and sp not in first:
        first[sp] = step
late = [d for d in bad if not d[4] and d[2] in first and d[0] > first[d[2]]]
if late:
    print("trained after their splice was first sighted:", late); ok = False
named = [r for r in masked_records if r["channel"] == "en" and r.get("file") == path]
inside = [r for r in named if any(s <= r["offset"] + T and r["offset"] < e for s, e, _ in spl)]
if hit and not inside:
    print("no masked record names the spliced file at a spliced offset"); ok = False
rollbacks = [l for l in open(run + "/controller.log") if re.search(r"event \d+ rollback ", l)]
if rollbacks:
    print("the junk caused a rollback:", rollbacks[0][:300]); ok = False
sys.exit(0 if ok else 1)
PY
echo "junk spliced into a shard: masked before the backward pass, quarantined, no rollback"
