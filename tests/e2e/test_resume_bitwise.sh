# Train 2n steps straight; train n steps, checkpoint, and let a new process restore and train n
# more: the per-step losses and gradient norms must be bitwise identical (fixed thread count).
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
n=15
write_config "$TMP/a.yaml" $((2 * n))
sed "s#$TMP/ckpt#$TMP/ckpt_b#; s/every: 0, keep_in/every: $n, keep_in/" "$TMP/a.yaml" >"$TMP/b.yaml"
"$WORKER" --standalone --config "$TMP/a.yaml" >"$TMP/a.jsonl"
"$WORKER" --standalone --config "$TMP/b.yaml" --steps $n >"$TMP/b1.jsonl"
ck=$(printf "%s/ckpt_b/step_%08d.rank0.gyck" "$TMP" $n)
[ -f "$ck" ] || fail "no checkpoint at $ck"
"$WORKER" --standalone --config "$TMP/b.yaml" --resume "$ck" >"$TMP/b2.jsonl"
python3 - "$TMP/a.jsonl" "$TMP/b1.jsonl" "$TMP/b2.jsonl" <<'PY'
import json, sys
def steps(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if r["type"] == "step"}
a, b1, b2 = steps(sys.argv[1]), steps(sys.argv[2]), steps(sys.argv[3])
b = {**b1, **b2}
assert sorted(b) == sorted(a) == list(range(30)), (sorted(a), sorted(b))
assert min(b2) == 15, min(b2)
bad = [s for s in a if (a[s]["loss"], a[s]["grad_norm"], a[s]["loss_ch"], [t["id"] for t in a[s]["top"]])
       != (b[s]["loss"], b[s]["grad_norm"], b[s]["loss_ch"], [t["id"] for t in b[s]["top"]])]
assert not bad, "steps differ after resume: %s (e.g. %r vs %r)" % (bad, a[bad[0]]["loss"], b[bad[0]]["loss"])
print("resume: 30 steps bitwise identical; loss at step 29 = %r" % a[29]["loss"])
PY
