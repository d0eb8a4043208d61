# Data- and tensor-parallel training over Gloo (real processes on loopback) gives the same
# per-step losses as one process on the same global batch: DP=2, TP=2 and DP=2 x TP=2 against
# DP=1 x TP=1, 20 steps, relative tolerance 1e-4 on the loss (float sums in another order), and
# 1e-3 on the gradient norm. Then a rank is killed mid-run: the survivors fail fast with a
# clear error, and their last checkpoint is intact.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
STEPS=20

source "$GY_SOURCE_DIR/tests/lib/gang.sh"

run_gang single 1 1 8
run_gang dp2 2 1 4
run_gang tp2 2 2 8
run_gang dp2tp2 4 2 4
run_gang dp2_nooverlap 2 1 4 --no-overlap

python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
def load(name, rank=0):
    return [r for r in map(json.loads, open("%s/%s.%d.jsonl" % (d, name, rank))) if r["type"] == "step"]
base = load("single")
assert len(base) == 20
for name, world in (("dp2", 2), ("tp2", 2), ("dp2tp2", 4), ("dp2_nooverlap", 2)):
    ranks = [load(name, r) for r in range(world)]
    for r in ranks[1:]:  # every rank reports the same figures
        assert [x["loss"] for x in r] == [x["loss"] for x in ranks[0]], name
    worst_l = worst_g = 0.0
    for a, b in zip(base, ranks[0]):
        rl = abs(a["loss"] - b["loss"]) / abs(a["loss"])
        rg = abs(a["grad_norm"] - b["grad_norm"]) / abs(a["grad_norm"])
        worst_l, worst_g = max(worst_l, rl), max(worst_g, rg)
        assert rl < 1e-4, (name, a["step"], a["loss"], b["loss"])
        assert rg < 1e-3, (name, a["step"], a["grad_norm"], b["grad_norm"])
        for c in a["loss_ch"]:
            if a["loss_ch"][c] is not None:
                assert abs(a["loss_ch"][c] - b["loss_ch"][c]) < 1e-3 * abs(a["loss_ch"][c]), (name, c)
        assert sorted(t["id"] for t in a["top"]) == sorted(t["id"] for t in b["top"]), name
    print("%-14s 20 steps: max relative loss difference %.2e, grad norm %.2e (final loss %.6f vs %.6f)"
          % (name, worst_l, worst_g, ranks[0][-1]["loss"], base[-1]["loss"]))
PY

# A rank dies: train a DP=2 gang with a checkpoint at step 5, kill rank 1 at step ~8; rank 0
# must exit non-zero within the timeout with a clear message, and its step-5 checkpoint stays
# valid.
write_config "$TMP/kill.yaml" 400
sed -i "s/train: {batch: 8,/train: {batch: 4,/; s#$TMP/ckpt#$TMP/ckpt_kill#; s/every: 0, keep_in/every: 5, keep_in/" "$TMP/kill.yaml"
mkdir -p "$TMP/rdzv_kill"
start=$(date +%s)
for r in 0 1; do
  OMP_NUM_THREADS=1 "$WORKER" --standalone --config "$TMP/kill.yaml" --threads 1 --rank $r --world 2 \
    --rdzv "file:$TMP/rdzv_kill" --comm-timeout 10000 >"$TMP/kill.$r.jsonl" 2>"$TMP/kill.$r.err" &
  eval "pid$r=\$!"
done
for _ in $(seq 1 200); do
  grep -q '"step":8,' "$TMP/kill.1.jsonl" 2>/dev/null && break
  sleep 0.1
done
kill -9 "$pid1"
set +e
wait "$pid0"
rc=$?
set -e
elapsed=$(($(date +%s) - start))
[ $rc -ne 0 ] || fail "rank 0 survived its peer's death"
grep -q "rank 0: step .* failed: .*all-reduce" "$TMP/kill.0.err" || fail "no clear error: $(tail -3 "$TMP/kill.0.err")"
echo "peer killed: rank 0 exited $rc after ${elapsed}s total: $(grep failed "$TMP/kill.0.err" | head -1)"
[ "$elapsed" -lt 60 ] || fail "took ${elapsed}s"
ck=$(printf "%s/ckpt_kill/step_%08d.rank0.gyck" "$TMP" 5)
sed "s/every: 5, keep_in/every: 0, keep_in/" "$TMP/kill.yaml" >"$TMP/kill_resume.yaml"
# The surviving checkpoint is intact: a 2-rank gang resumes from it.
mkdir -p "$TMP/rdzv_resume"
for r in 0 1; do
  OMP_NUM_THREADS=1 "$WORKER" --standalone --config "$TMP/kill_resume.yaml" --threads 1 --rank $r \
    --world 2 --rdzv "file:$TMP/rdzv_resume" --steps 7 \
    --resume "$(printf "%s/ckpt_kill/step_%08d.rank%d.gyck" "$TMP" 5 $r)" >"$TMP/resume.$r.jsonl" &
done
wait
grep -q '"step":6,' "$TMP/resume.0.jsonl" || fail "resume from the surviving checkpoint failed"
echo "the step-5 checkpoints resumed a new gang: ok ($ck)"

# Restoring into another layout is refused with a clear error (resharding is not supported).
set +e
"$WORKER" --standalone --config "$TMP/kill_resume.yaml" --threads 1 --resume "$ck" >/dev/null 2>"$TMP/layout.err"
rc=$?
set -e
[ $rc -eq 1 ] || fail "layout mismatch: exit $rc"
grep -q "parallel layout dp=2 tp=1 rank 0 of 2 does not match this run's dp=1 tp=1 rank 0 of 1" "$TMP/layout.err" ||
  fail "layout message: $(cat "$TMP/layout.err")"
echo "layout mismatch refused: $(cat "$TMP/layout.err")"
