# gyro-worker from the outside: a bad config exits 2 with file, line and key; a corrupt
# checkpoint given to --resume exits 1 naming the file and the blob; an llm.c export loads back
# through model.init_from and evaluates to exactly the same held-out loss.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data

# bad config: exit 2, "FILE:LINE: key '...'"
write_config "$TMP/bad.yaml" 10
sed -i 's/model: {layers: 4, channels: 128, heads: 4,/model: {layers: 4, channels: 128, heads: 5,/' "$TMP/bad.yaml"
set +e
"$WORKER" --standalone --config "$TMP/bad.yaml" >"$TMP/out" 2>"$TMP/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "bad config: exit $rc, want 2"
grep -q "$TMP/bad.yaml:2: key 'model.heads'" "$TMP/err" || fail "bad config message: $(cat "$TMP/err")"
echo "bad config: $(cat "$TMP/err")"

set +e
"$WORKER" --standalone --config "$TMP/missing.yaml" 2>"$TMP/err"; rc=$?
"$WORKER" --standalone --config "$TMP/bad.yaml" --steps -3 2>/dev/null; rc2=$?
"$WORKER" --config "$TMP/bad.yaml" 2>/dev/null; rc3=$?
set -e
[ $rc -eq 2 ] && [ $rc2 -eq 2 ] && [ $rc3 -eq 2 ] || fail "usage errors: $rc $rc2 $rc3"
grep -q "missing.yaml" "$TMP/err" || fail "missing config message: $(cat "$TMP/err")"

# train 20 steps, checkpoint, export to llm.c
write_config "$TMP/run.yaml" 20
sed -i 's/every: 0, keep_in/every: 20, keep_in/; s/every: 0, sequences: 64/every: 20, sequences: 16/' "$TMP/run.yaml"
"$WORKER" --standalone --config "$TMP/run.yaml" --export-llmc "$TMP/model.bin" >"$TMP/run.jsonl"
ck=$(printf "%s/ckpt/step_%08d.rank0.gyck" "$TMP" 20)
[ -f "$ck" ] && [ -f "$TMP/model.bin" ] || fail "checkpoint or export missing"

# corrupt checkpoint: exit 1, file and blob named
cp "$ck" "$TMP/bad.gyck"
python3 - "$TMP/bad.gyck" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x01
open(p, "wb").write(bytes(b))
PY
set +e
"$WORKER" --standalone --config "$TMP/run.yaml" --resume "$TMP/bad.gyck" >/dev/null 2>"$TMP/err"
rc=$?
set -e
[ $rc -eq 1 ] || fail "corrupt checkpoint: exit $rc, want 1"
grep -q "bad.gyck: blob '.*': CRC-32C mismatch" "$TMP/err" || fail "message: $(cat "$TMP/err")"
echo "corrupt checkpoint: $(cat "$TMP/err")"

# llm.c export -> init_from: same held-out loss, bit for bit
sed "s#model: {layers: 4, channels: 128, heads: 4, context: 128, vocab: 256}#model: {layers: 4, channels: 128, heads: 4, context: 128, vocab: 256, init_from: '$TMP/model.bin'}#" \
  "$TMP/run.yaml" >"$TMP/init.yaml"
grep -q init_from "$TMP/init.yaml" || fail "init_from not set"
"$WORKER" --standalone --config "$TMP/init.yaml" --eval-only >"$TMP/init.jsonl"
python3 - "$TMP/run.jsonl" "$TMP/init.jsonl" <<'PY'
import json, sys
a = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "eval"][-1]
b = [r for r in map(json.loads, open(sys.argv[2])) if r["type"] == "eval"][-1]
assert a["val_loss"] == b["val_loss"], (a["val_loss"], b["val_loss"])
print("llm.c export reloaded: held-out losses identical", a["val_loss"])
PY
