#!/usr/bin/env bash
# test_prep_filter: gyro-prep's document filters end to end, on a crafted input folder: HTML
# pages that share navigation and footer lines (boilerplate), a fortune file holding an exact
# duplicate, a near duplicate, a repeated span, a document with control bytes and clean
# documents, and a binary file. Checks the shards (what went, what stayed), the report
# (counts per rule, examples with file, document and preview), the summary line, the
# thresholds' options, --no-filter, that the output is deterministic, and the document indexes
# beside the shards (valid, matching, removed when stale; a shard changed after prep makes the
# loader drop its index with a warning while the run still loads).
set -euo pipefail

prep=${GY_BUILD_DIR:?GY_BUILD_DIR is not set}/worker/gyro-prep
[[ -x $prep ]] || {
  echo "FAIL: $prep not built" >&2
  exit 1
}
tmp=$(mktemp -d /tmp/gy-test-prep-filter-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAIL: $what" >&2
    fails=$((fails + 1))
  fi
}
has() { grep -q -- "$1" <<<"$2"; }
lacks() { ! grep -qa -- "$1" <<<"$2"; }
text_of() { tail -c +1025 "$1" | tr -d '\000'; }
# jget FILE EXPR: a value of the JSON file, by a Python expression over j.
jget() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

mkdir -p "$tmp/in/site" "$tmp/in/fortunes"
for i in $(seq 1 12); do
  cat >"$tmp/in/site/page$i.html" <<EOF
<html><head><meta charset="utf-8"><title>Page $i of the manual</title></head><body>
<div class="nav">Home | Prev | Next | Index</div>
<p>Unique content of page $i: the chapter explains topic number $i in its own words, with
details that no other page repeats, so the page is kept.</p>
<div class="footer">Copyright the example project, all rights reserved</div>
</body></html>
EOF
done
long="The committee met on a rainy Tuesday to discuss the budget for the coming year, the state of"
long="$long the roads, the library's opening hours, the new bus timetable and a long list of small"
long="$long complaints about the noise from the market square on Saturday mornings. After two"
long="$long hours the chair closed the meeting, thanked the volunteers who had painted the hall"
long="$long and asked everyone to bring their ideas for the summer fair to the next session."
ha=$(for i in $(seq 1 40); do printf 'ha '; done)
printf '%s\n' \
  "A clean fortune about cats and their habits." "%" \
  "Exact duplicates are   dropped,
even when their whitespace differs." "%" \
  "$long" "%" \
  "Another clean fortune, about dogs this time." "%" \
  "exact duplicates are dropped, even when their whitespace differs." "%" \
  "${long/rainy/sunny}" "%" \
  "He laughed: $ha and stopped." "%" \
  "A bell rings here: $(printf '\a') and then stops." "%" \
  "A last clean fortune, about birds." >"$tmp/in/fortunes/mixed"
printf 'ELF\0\0\0binary payload\n' >"$tmp/in/blob.txt"

# 1. The defaults.
out=$tmp/out
summary=$("$prep" --out "$out" --name ch --val-tokens 0 --fortune "$tmp/in/fortunes/mixed" \
  "$tmp/in/site" "$tmp/in/blob.txt")
echo "$summary"
rep=$out/ch/prep_report.json
check "report written beside the shards" test -f "$rep" -a -f "$out/ch/train_000.bin"
txt=$(text_of "$out/ch/train_000.bin")
check "page text kept" has "Unique content of page 7" "$txt"
check "page titles kept (each page its own)" has "Page 12 of the manual" "$txt"
check "navigation line removed" lacks "Home | Prev" "$txt"
check "footer line removed" lacks "all rights reserved" "$txt"
check "clean fortunes kept" has "about dogs this time" "$txt"
check "first of the duplicates kept" has "Exact duplicates are" "$txt"
check "exact duplicate dropped" lacks "exact duplicates are dropped, even" "$txt"
check "first of the near duplicates kept" has "on a rainy Tuesday" "$txt"
check "near duplicate dropped" lacks "sunny Tuesday" "$txt"
check "repeated span dropped" lacks "He laughed" "$txt"
check "control bytes dropped" lacks "A bell rings" "$txt"
check "binary file dropped" lacks "binary payload" "$txt"

check "report: channel" test "$(jget "$rep" "j['channel']")" = ch
for rule in nontext repetition exact_duplicate near_duplicate; do
  check "report: $rule counts" test "$(jget "$rep" "j['dropped']['$rule']['documents']")" = \
    "$([[ $rule == nontext ]] && echo 2 || echo 1)"
done
check "report: nothing emptied" test "$(jget "$rep" "j['dropped']['empty']['documents']")" = 0
check "report: bytes dropped" \
  test "$(jget "$rep" "j['dropped']['near_duplicate']['bytes']")" -gt 200
check "report: 12 pages lost 2 lines each" \
  test "$(jget "$rep" "j['boilerplate_lines']['lines']")" = 24 -a \
  "$(jget "$rep" "j['boilerplate_lines']['documents']")" = 12
bp="j['boilerplate_lines']['examples'][0]"
check "report: boilerplate example" \
  test "$(jget "$rep" "$bp['line']")" = "Home | Prev | Next | Index"
check "report: boilerplate line in 12 documents" test "$(jget "$rep" "$bp['documents']")" = 12
ex="j['dropped']['exact_duplicate']['examples'][0]"
check "report: exact example names its file and fortune" \
  test "$(jget "$rep" "$ex['file'].endswith('/mixed'), $ex['document']")" = "True 4"
check "report: exact example names the original" \
  test "$(jget "$rep" "$ex['duplicate_of']['document']")" = 1
check "report: exact example preview" \
  has "exact duplicates are dropped" "$(jget "$rep" "$ex['preview']")"
ex="j['dropped']['near_duplicate']['examples'][0]"
check "report: near example similarity" \
  test "$(jget "$rep" "$ex['similarity'] >= 0.8 and $ex['duplicate_of']['document'] == 2")" = True
ex="j['dropped']['repetition']['examples'][0]"
check "report: repetition example" test "$(jget "$rep" "$ex['document'], \
  $ex['preview'].startswith('ha ha'), 'repeated 40 times' in $ex['why']")" = "6 True True"
check "report: control bytes previewed as hex" \
  test "$(jget "$rep" "[e['document'] for e in j['dropped']['nontext']['examples']]")" = "[-1, 7]"
check "report: binary file previewed as hex" \
  test "$(jget "$rep" "j['dropped']['nontext']['examples'][0]['preview_hex'][:12]")" = 454c46000000
check "report: options recorded" test "$(jget "$rep" "j['options']['repetition']['max_times'], \
  j['options']['near_dedup']['threshold']")" = "32 0.8"
want='"filtered":{"documents_dropped":5,"nontext":2,"repetition":1,"exact_duplicate":1,'
want+='"near_duplicate":1,"empty":0,"boilerplate_lines":24}'
check "summary: filtered counts" has "$want" "$summary"
check "summary: binary file skipped" has '"skipped_files":1' "$summary"

# 2. Deterministic: the same inputs give the same shards and report.
"$prep" --out "$tmp/out2" --name ch --val-tokens 0 --fortune "$tmp/in/fortunes/mixed" \
  "$tmp/in/site" "$tmp/in/blob.txt" >/dev/null
check "deterministic shards" cmp -s "$out/ch/train_000.bin" "$tmp/out2/ch/train_000.bin"
check "deterministic report" cmp -s "$rep" "$tmp/out2/ch/prep_report.json"

# 3. Thresholds: a looser near-duplicate limit and repetition limit keep those documents; the
# boilerplate needs more documents than there are pages; control bytes are allowed.
"$prep" --out "$tmp/out3" --name ch --val-tokens 0 --near-threshold 0.99 --rep-max-times 41 \
  --boilerplate-min-docs 13 --nontext-max 0.05 --exact-dedup 0 \
  --fortune "$tmp/in/fortunes/mixed" "$tmp/in/site" >/dev/null
txt=$(text_of "$tmp/out3/ch/train_000.bin")
check "--near-threshold 0.99 keeps the near duplicate" has "sunny Tuesday" "$txt"
check "--rep-max-times 41 keeps the laughter" has "He laughed" "$txt"
check "--boilerplate-min-docs 13 keeps the navigation" has "Home | Prev" "$txt"
check "--nontext-max 0.05 keeps the bell" has "A bell rings" "$txt"
check "--exact-dedup 0 keeps the duplicate" has "exact duplicates are dropped, even" "$txt"

# 4. --no-filter: everything but the binary file.
summary=$("$prep" --out "$tmp/out4" --name ch --val-tokens 0 --no-filter \
  --fortune "$tmp/in/fortunes/mixed" "$tmp/in/site" "$tmp/in/blob.txt")
check "--no-filter drops only the binary file" has '"documents_dropped":1,"nontext":1,' "$summary"

# 5. Bad thresholds are usage errors.
rc=0
"$prep" --out "$tmp/o" --name ch --near-threshold 1.5 "$tmp/in/site" 2>/dev/null || rc=$?
check "--near-threshold 1.5: exit 2" test $rc -eq 2
rc=0
"$prep" --out "$tmp/o" --name ch --rep-min-period 9 --rep-max-period 3 "$tmp/in/site" \
  2>/dev/null || rc=$?
check "min period above max period: exit 2" test $rc -eq 2

# 6. Document indexes: small shards, so that documents cross shard boundaries. Every
# train_NNN.bin has a train_NNN.docs that matches it (token count, CRC-32C) and lists where each
# document starts; the ordinals run 0 .. train_documents - 1 across the shards, a document
# crossing a boundary is entry 0 of the next shard under its own ordinal, and each document but
# the first starts right after the "\n\n" that joins it to the one before.
out6=$tmp/out6
summary=$("$prep" --out "$out6" --name ch --val-tokens 0 --shard-tokens 700 \
  --fortune "$tmp/in/fortunes/mixed" "$tmp/in/site")
ndocs=$(sed -n 's/.*"train_documents":\([0-9]*\).*/\1/p' <<<"$summary")
check_docs() { # check_docs DIR NDOCS: prints "ok", or fails saying what is wrong
  python3 - "$1" "$2" <<'PY'
import glob, os, struct, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

folder, ndocs = sys.argv[1], int(sys.argv[2])
shards = sorted(glob.glob(os.path.join(folder, "train_*.bin")))
stream, starts, ords, crossed = b"", [], [], 0
for path in shards:
    raw = open(path, "rb").read()
    ntok = struct.unpack_from("<i", raw, 8)[0]
    tokens = raw[1024:]
    docs = open(path[:-4] + ".docs", "rb").read()
    magic, n, crc, res, first, count = struct.unpack_from("<8sQIIQQ", docs)
    offs = struct.unpack_from("<%dQ" % count, docs, 40)
    assert magic == b"GYDOCS1\0", (path, magic)
    assert n == ntok and res == 0 and len(docs) == 40 + 8 * count, (path, n, ntok, res)
    assert crc == crc32c(tokens), (path, "crc")
    assert count >= 1 and offs[0] == 0, (path, offs[:1])
    assert all(a < b for a, b in zip(offs, offs[1:])) and offs[-1] < ntok, (path, "order")
    for i, o in enumerate(offs):
        if i == 0 and ords and first == ords[-1]:
            crossed += 1  # the previous shard's last document continues here
            continue
        starts.append(len(stream) // 2 + o)
        ords.append(first + i)
    stream += tokens
text = stream[::2]
assert ords == list(range(ndocs)), ("ordinals", ords[:5], len(ords), ndocs)
assert starts[0] == 0 and all(text[s - 2:s] == b"\n\n" for s in starts[1:]), "joiners"
assert crossed > 0, "no document crosses a shard boundary"
docs = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
assert any(d.startswith(b"A clean fortune about cats") for d in docs), "a fortune"
assert any(d.startswith(b"Page 7 of the manual") for d in docs), "a page"
print("ok")
PY
}
nbin() { find "$1" -maxdepth 1 -name 'train_*.bin' | wc -l; }
ndocsfiles() { find "$1" -maxdepth 1 -name 'train_*.docs' | wc -l; }
check "index beside every shard" test "$(nbin "$out6/ch")" -ge 3 -a \
  "$(ndocsfiles "$out6/ch")" = "$(nbin "$out6/ch")"
res=$(check_docs "$out6/ch" "$ndocs" 2>&1) || true
[[ $res == ok ]] || echo "$res" >&2
check "indexes valid and matching the shards" test "$res" = ok
before=$(nbin "$out6/ch")
"$prep" --out "$out6" --name ch --val-tokens 0 --shard-tokens 1400 \
  --fortune "$tmp/in/fortunes/mixed" "$tmp/in/site" >/dev/null
check "stale indexes removed with their shards" test "$(nbin "$out6/ch")" -lt "$before" -a \
  "$(ndocsfiles "$out6/ch")" = "$(nbin "$out6/ch")"
res=$(check_docs "$out6/ch" "$ndocs" 2>&1) || true
[[ $res == ok ]] || echo "$res" >&2
check "indexes valid after a run with fewer shards" test "$res" = ok

# The loader: a run on these shards loads their indexes silently; after a byte of one shard
# changes (junk spliced in after prep), the run still loads and trains, and one warning names
# that shard's index and why.
worker=$GY_BUILD_DIR/worker/gyro-worker
trains=$(printf "'%s'," "$out6"/ch/train_*.bin)
trains=${trains%,}
cat >"$tmp/run.yaml" <<YAML
run: {name: docs, seed: 7, steps: 1, threads: 1}
model: {layers: 1, channels: 32, heads: 2, context: 32, vocab: 256}
train: {batch: 2, seq_len: 32, top_k: 1}
data:
  channels:
    - {name: ch, train: [$trains]}
eval: {every: 0}
checkpoint: {dir: $tmp/ckpt, every: 0}
YAML
rc=0
"$worker" --standalone --config "$tmp/run.yaml" >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
check "run on indexed shards: exit 0" test $rc -eq 0
check "run on indexed shards: no index warning" lacks "document index" "$(cat "$tmp/run.err")"
python3 - "$out6/ch/train_001.bin" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
b[1024 + 2 * 10] = ord("#") if b[1024 + 2 * 10] != ord("#") else ord("!")
open(p, "wb").write(bytes(b))
PY
rc=0
"$worker" --standalone --config "$tmp/run.yaml" >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
err=$(cat "$tmp/run.err")
check "run on a changed shard: exit 0" test $rc -eq 0
check "run on a changed shard: trained a step" has '"step"' "$(cat "$tmp/run.out")"
check "run on a changed shard: the warning names the index and why" \
  has '"level":"warn".*train_001.docs: stale' "$err"
check "run on a changed shard: one warning" test "$(grep -c 'document index' <<<"$err")" = 1

if [[ $fails -ne 0 ]]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
