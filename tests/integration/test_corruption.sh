# Corruption injection is visible in the channel's loss: random bytes and binary noise make a
# jump, one repeated token and empty lines make a drop, at exactly the injected step, in
# exactly the injected channel (the guard off: a policy with guard.enabled false, so the samples
# reach the loss). With the default policy the guard masks those samples instead: each is listed
# as masked at its step, with the rule that fired, and the channel's loss stays at its baseline.
# Also: a real corrupted shard file (random bytes written into the middle of a copy of a real
# shard) makes the samples drawn from it spike (guard off), or be masked (guard on).
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
# batch 8, world 1: step s consumes ids [8s, 8s+8). Train 150 clean steps, then one corrupted
# step per kind, spaced so the loss settles between them.
write_config "$TMP/run.yaml" 210 "$(cat <<'Y'
  corrupt:
    - {channel: en, from: 1200, to: 1208, kind: random_bytes}
    - {channel: code, from: 1360, to: 1368, kind: binary_noise}
    - {channel: code, from: 1520, to: 1528, kind: repeat, token: 32}
    - {channel: zh, from: 1600, to: 1608, kind: empty_lines}
Y
)"
# the corrupt list belongs under data:, which write_config ends with; move it there
python3 - "$TMP/run.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
i = s.index("  corrupt:"); block = s[i:]; s = s[:i]
j = s.index("eval:")
open(p, "w").write(s[:j] + block + s[j:])
PY
echo "guard: {enabled: false}" >"$TMP/noguard.yaml"
"$WORKER" --standalone --config "$TMP/run.yaml" --policy "$TMP/noguard.yaml" >"$TMP/out.jsonl"
"$WORKER" --standalone --config "$TMP/run.yaml" >"$TMP/guarded.jsonl"
python3 - "$TMP/guarded.jsonl" <<'PY'
import json, sys
rows = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "step"}
for s, ch in ((150, "en"), (170, "code"), (190, "code"), (200, "zh")):
    m = [x for x in rows[s]["masked"] if x["channel"] == ch and 8 * s <= x["id"] < 8 * s + 8]
    print("guard on, step %d %s: masked %s" % (s, ch, [(x["id"], x["reason"]) for x in m]))
    assert m, "the guard masked none of the corrupted samples"
    assert rows[s]["masked_ch"][ch] == len(m), "masked samples of other steps or channels"
PY
python3 - "$TMP/out.jsonl" <<'PY'
import json, sys, statistics as st
rows = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "step"}
def base(ch, s):
    v = [rows[k]["loss_ch"][ch] for k in range(s - 12, s - 2) if rows[k]["loss_ch"][ch] is not None]
    return st.median(v)
checks = [(150, "en", "jump"), (170, "code", "jump"), (190, "code", "drop"), (200, "zh", "drop")]
for s, ch, kind in checks:
    v, b = rows[s]["loss_ch"][ch], base(ch, s)
    print("step %d %s: loss %.3f vs baseline %.3f (%s expected)" % (s, ch, v, b, kind))
    if kind == "jump":
        assert v > b + 1.0, "no jump"
        ids = [t["id"] for t in rows[s]["top"]]
        assert any(8 * s <= i < 8 * s + 8 for i in ids)
    else:
        assert v < b - 0.5, "no drop"
    # the other channels of that step are untouched
    for other in rows[s]["loss_ch"]:
        if other != ch and rows[s]["loss_ch"][other] is not None:
            assert abs(rows[s]["loss_ch"][other] - base(other, s)) < 1.0, other
PY

# A real corrupted shard: a copy of the en shard with random bytes written over en samples
# 320..326. With shuffle off, en's j-th draw is sample j, and en takes every third id, so
# those samples are consumed around step 120 (ids 960..983): the en loss spikes there, and only
# there.
python3 - "$DATA/en/train_000.bin" "$TMP/en_bad.bin" <<'PY'
import random, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
T = 128
rnd = random.Random(7)
for t in range(320 * T, 327 * T + 1):
    struct.pack_into("<H", b, 1024 + 2 * t, rnd.randrange(256))
open(sys.argv[2], "wb").write(bytes(b))
PY
write_config "$TMP/shard.yaml" 140
sed -i "s#'\${GY_DATA_DIR}/en/train_000.bin'\]#'$TMP/en_bad.bin'], shuffle: false#" "$TMP/shard.yaml"
grep -q "en_bad.bin'], shuffle: false" "$TMP/shard.yaml" || fail "could not point en at the bad shard"
"$WORKER" --standalone --config "$TMP/shard.yaml" --policy "$TMP/noguard.yaml" >"$TMP/shard.jsonl"
"$WORKER" --standalone --config "$TMP/shard.yaml" >"$TMP/shard_guarded.jsonl"
python3 - "$TMP/shard_guarded.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "step"]
hit = sorted({r["step"] for r in rows for m in r["masked"] if m["channel"] == "en"})
print("real corrupted shard, guard on: en samples masked at steps %s" % hit)
assert hit and all(117 <= s <= 123 for s in hit), hit
PY
python3 - "$TMP/shard.jsonl" <<'PY'
import json, sys, statistics as st
rows = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "step"}
en = {s: rows[s]["loss_ch"]["en"] for s in rows if rows[s]["loss_ch"]["en"] is not None}
base = st.median(en[s] for s in range(100, 116) if s in en)
hit = [s for s in range(100, 140) if s in en and en[s] > base + 1.0]
print("real corrupted shard: en baseline %.3f, spikes at steps %s" % (base, hit))
assert hit and all(117 <= s <= 123 for s in hit), hit
PY
