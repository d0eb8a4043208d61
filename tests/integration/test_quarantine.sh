# The guard and the quarantine end to end, on real processes (`gyroctl launch`: a controller and
# one CPU worker on a free loopback port, the default policy): the en channel trains on a small
# shard (the first 40,000 tokens of the shipped one) with 4 KiB of /usr/bin/ls spliced in as byte
# tokens at a random offset. Asserted: the worker's guard masks samples of the junk and the
# controller tells them (samples_masked events) and lists their regions (`gyroctl quarantine
# list --json` names the file with a range overlapping the splice); `--preview` reads the region
# here; the operator's add is refused for an unknown channel (exit 1, named) or an empty range
# (exit 2), accepted for a real region and reaches the worker as a quarantine directive; a
# release of the guard's entry reaches it too (the worker's records show both); the run then
# stops on the operator's word. Every wait is bounded.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
G=$BUILD/cli/gyroctl
[ -x "$G" ] || fail "$G not built"
[ -r /usr/bin/ls ] || fail "/usr/bin/ls is not readable (the junk this test splices)"

expect_rc() { # expect_rc WANT CMD...: runs CMD, fails unless it exits WANT
  local want=$1 rc=0
  shift
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, want $want: $(cat "$TMP/out" "$TMP/err")"
}

# ---- usage errors: exit 2 (no controller needed)
expect_rc 2 "$G" quarantine
expect_rc 2 "$G" quarantine frob
expect_rc 2 "$G" quarantine list extra
expect_rc 2 "$G" quarantine add --channel en --file f.bin --offset 5
expect_rc 2 "$G" quarantine add --channel en --file f.bin --offset 5 --length 0
grep -q "empty region" "$TMP/err" || fail "add --length 0: $(cat "$TMP/err")"
expect_rc 2 "$G" quarantine release
expect_rc 2 "$G" quarantine release abc
expect_rc 0 "$G" --help
grep -q "quarantine list" "$TMP/out" || fail "--help lacks quarantine"

# ---- the shard with junk: en tokens [0, 40000), 4096 bytes of /usr/bin/ls at a random offset
JUNK=$TMP/en_junk.bin
SPLICE=$(python3 - "$DATA/en/train_000.bin" "$JUNK" <<'PY'
import random, struct, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    hdr = struct.unpack("256i", f.read(1024))
    assert hdr[0] == 20240520, "not a shard"
    toks = list(struct.unpack("<40000H", f.read(80000)))
junk = open("/usr/bin/ls", "rb").read()[:4096]
assert len(junk) == 4096
off = random.randrange(4000, 40000 - 4096 - 2000)
toks[off:off + 4096] = list(junk)
h = [0] * 256
h[0], h[1], h[2] = 20240520, 1, len(toks)
with open(dst, "wb") as f:
    f.write(struct.pack("256i", *h))
    f.write(struct.pack("<%dH" % len(toks), *toks))
print(off)
PY
)
echo "junk spliced at token $SPLICE of $JUNK"

PORT=$(free_port)
export GYRO_CONTROLLER=127.0.0.1:$PORT
STEPS=20000 # the operator's stop ends it (the verbs need a gang that takes directives)
cat >"$TMP/run.yaml" <<YAML
run: {name: quarantine, seed: 11, steps: $STEPS, threads: 2}
model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}
train: {batch: 8, top_k: 4}
optimizer: {lr: 1.0e-3}
schedule: {kind: cosine, warmup: 10, min_lr_frac: 0.1}
data:
  channels:
    - {name: zh, train: ['\${GY_DATA_DIR}/zh/train_000.bin'], val: '\${GY_DATA_DIR}/zh/val.bin'}
    - {name: en, train: ['$JUNK'], val: '\${GY_DATA_DIR}/en/val.bin'}
    - {name: code, train: ['\${GY_DATA_DIR}/code/train_000.bin'], val: '\${GY_DATA_DIR}/code/val.bin'}
eval: {every: 0, sequences: 16}
checkpoint: {dir: $TMP/ckpt, every: 10, keep: 100}
controller: {listen: '127.0.0.1:$PORT', world: 1, tp: 1, window: 4, heartbeat_ms: 200}
YAML
"$G" launch "$TMP/run.yaml" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 &
LPID=$!
cleanup() {
  kill -TERM "$LPID" 2>/dev/null && wait "$LPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
diag() {
  echo "--- launch output"; tail -n 30 "$TMP/launch.out"
  for f in "$TMP"/run/*; do echo "--- $f"; tail -n 8 "$f"; done
}

# the guard's entry over the splice: wait (bounded: 240 s, the run goes on meanwhile)
entry=""
for _ in $(seq 1 1200); do
  kill -0 "$LPID" 2>/dev/null || { diag; fail "launch exited before the junk was quarantined"; }
  if "$G" --timeout 2000 --json quarantine list >"$TMP/list.json" 2>"$TMP/list.err"; then
    entry=$(python3 - "$TMP/list.json" "$JUNK" "$SPLICE" <<'PY'
import json, sys
q = json.load(open(sys.argv[1]))
f, s = sys.argv[2], int(sys.argv[3])
for e in q["entries"]:
    o, n = int(e["offset"]), int(e["length"])
    if e["file"] == f and e["channel"] == "en" and o < s + 4096 and s < o + n and \
       not e["released"] and int(e["first_step"]) >= 0:
        print(e["id"])
        break
PY
)
    [ -n "$entry" ] && break
  fi
  sleep 0.2
done
[ -n "$entry" ] || { diag; cat "$TMP/list.json"; fail "no quarantine entry overlaps the splice"; }
echo "quarantine entry $entry overlaps the junk: $(python3 -c "
import json,sys; print([e for e in json.load(open(sys.argv[1]))['entries'] if e['id']==int(sys.argv[2])])" "$TMP/list.json" "$entry")"
python3 - "$TMP/list.json" <<'PY' || fail "quarantine list --json: $(cat "$TMP/list.json")"
import json, sys
q = json.load(open(sys.argv[1]))
assert q["total"] >= 1 and q["active"] >= 1, q
for e in q["entries"]:
    for k in ("id", "channel", "file", "offset", "length", "document", "reason", "first_step",
              "released", "hits"):
        assert k in e, (k, e)
PY

# the controller told the masked samples, with their provenance
expect_rc 0 "$G" --json events
python3 - "$TMP/out" "$JUNK" <<'PY' || { cat "$TMP/out"; fail "no samples_masked event naming the file"; }
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert any(e["kind"] == "samples_masked" and sys.argv[2] in e["message"] for e in evs)
assert any(e["kind"] == "quarantined" and sys.argv[2] in e["message"] for e in evs)
n = sum(e["kind"] == "samples_masked" for e in evs)
rb = sum(e["kind"] == "rollback" and "masked share" in e["message"] for e in evs)
print(f"{n} steps masked samples; {rb} rollback decisions on the masked share")
PY

# the table and the preview, read from the shard here
expect_rc 0 "$G" quarantine list --preview
grep -q "en_junk.bin" "$TMP/out" && grep -q "preview: " "$TMP/out" ||
  fail "quarantine list --preview: $(cat "$TMP/out")"
expect_rc 0 "$G" --json quarantine list --preview
python3 -c "
import json, sys
q = json.load(open(sys.argv[1]))
assert all('preview' in e for e in q['entries'] if e['file'] == sys.argv[2]), q" "$TMP/out" "$JUNK" ||
  fail "quarantine list --json --preview: $(cat "$TMP/out")"

# ---- the operator: refusals, an add, a release
expect_rc 1 "$G" quarantine add --channel fr --file en_junk.bin --offset 10 --length 100
grep -q "unknown channel 'fr'" "$TMP/err" || fail "add to an unknown channel: $(cat "$TMP/err")"
expect_rc 1 "$G" quarantine add --channel en --file nothere.bin --offset 10 --length 100
grep -q "no training shard of channel en" "$TMP/err" || fail "add of an unknown file: $(cat "$TMP/err")"
expect_rc 1 "$G" quarantine release 999999
grep -q "no entry 999999" "$TMP/err" || fail "release of an unknown id: $(cat "$TMP/err")"
expect_rc 0 "$G" --json quarantine add --channel en --file en_junk.bin --offset 100 --length 64 \
  --reason bad_header
python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
e = r['entries'][0]
assert e['reason'] == 'bad_header' and int(e['offset']) == 100 and int(e['length']) == 64, r
assert int(r['seq']) > 0, r" "$TMP/out" || fail "quarantine add: $(cat "$TMP/out")"
expect_rc 0 "$G" --json quarantine release "$entry"
python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['entries'][0]['released'] and int(r['entries'][0]['id']) == int(sys.argv[2]), r
assert int(r['seq']) > 0, r" "$TMP/out" "$entry" || fail "quarantine release: $(cat "$TMP/out")"

# both reached the worker: its records hold the directives, applied
ok=0
for _ in $(seq 1 600); do
  if python3 - "$TMP/run/worker-0.jsonl" <<'PY'; then ok=1; break; fi
import json, sys
added = released = False
for ln in open(sys.argv[1]):
    try:
        o = json.loads(ln)
    except ValueError:
        continue
    if o.get("type") != "directive" or o.get("kind") != "quarantine" or not o.get("ok"):
        continue
    for q in o.get("quarantine", []):
        added |= not q["released"] and q["offset"] == 100 and o.get("applied") == 1
        released |= bool(q["released"])
sys.exit(0 if added and released else 1)
PY
  sleep 0.1
done
[ $ok -eq 1 ] || { diag; fail "the quarantine directives never reached the worker"; }
expect_rc 0 "$G" quarantine list
echo "--- the list at the end"
cat "$TMP/out"

expect_rc 0 "$G" stop
for _ in $(seq 1 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LPID" 2>/dev/null && { diag; fail "launch still runs 60 s after stop"; }
echo "ok"
