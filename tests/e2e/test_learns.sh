# On the shipped corpora, a small model's held-out loss falls well below the unigram baseline
# of every channel within a few hundred steps.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
write_config "$TMP/run.yaml" 400
sed -i 's/every: 0, sequences: 64/every: 100, sequences: 64/' "$TMP/run.yaml"
"$WORKER" --standalone --config "$TMP/run.yaml" --quiet-steps >"$TMP/out.jsonl"
python3 - "$TMP/out.jsonl" <<'PY'
import json, sys
ev = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "eval"]
assert ev and ev[-1]["step"] == 400, ev
for r in ev:
    print("step %d: " % r["step"] + ", ".join("%s val %.3f (unigram %.3f)" % (c, r["val_loss"][c], r["unigram"][c]) for c in r["val_loss"]))
last = ev[-1]
for c, v in last["val_loss"].items():
    u = last["unigram"][c]
    # "well below": at least 0.5 nats under the unigram entropy (perplexity 1.65x lower)
    assert v < u - 0.5, "channel %s: val loss %.3f not well below unigram %.3f" % (c, v, u)
PY
