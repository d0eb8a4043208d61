#!/usr/bin/env bash
# test_prep: gyro-prep on a temporary folder holding an HTML page with Chinese text, a fortune
# file with ANSI colour escapes, a gzip file, a binary file and a file the --ext filter leaves
# out. Checks the shards' layout, that the text is there and the markup, scripts, escapes and
# the binary are not, the held-out split, determinism and the exit codes.
set -euo pipefail

prep=${GY_BUILD_DIR:?GY_BUILD_DIR is not set}/worker/gyro-prep
[[ -x $prep ]] || {
  echo "FAIL: $prep not built" >&2
  exit 1
}
tmp=$(mktemp -d /tmp/gy-test-prep-XXXXXX)
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

mkdir -p "$tmp/in/sub" "$tmp/fortunes"
cat >"$tmp/in/page.html" <<'EOF'
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>静夜思 页面</title>
<style>.poem { color: red }</style>
<script>var secret_js = "不应出现";</script></head>
<body><div class="poem"><h1>静夜思</h1>
<p>床前明月光，
   疑是地上霜。</p><p>举头望明月，<b>低头</b>思故乡。</p>
<pre>line one
  line two</pre>
<p>A &amp; B &lt; C</p></div></body></html>
EOF
esc=$'\e'
printf '%s\n' "${esc}[32m《登鹳雀楼》${esc}[m" "${esc}[1;33m作者：王之涣${esc}[0m" \
  "白日依山尽，黄河入海流。" "%" "The ${esc}[35;1mcolourful${esc}[m fortune." "%" "" "%" \
  "Last one without a newline" >"$tmp/fortunes/quotes"
printf 'compressed words inside a gzip file\n' | gzip -c >"$tmp/in/sub/notes.txt.gz"
cp "$(type -P true)" "$tmp/in/tool" # a real ELF binary
printf 'markdown that --ext leaves out\n' >"$tmp/in/sub/readme.md"

has() { grep -q -- "$1" <<<"$2"; }
hasx() { grep -qx -- "$1" <<<"$2"; }
lacks() { ! grep -qa -- "$1" <<<"$2"; }
lacksx() { ! grep -qx -- "$1" <<<"$2"; }

# Tokens of a shard as text: skip the 1024-byte header, drop the zero high bytes.
text_of() { tail -c +1025 "$1" | tr -d '\000'; }
header_of() { od -An -t d4 -N 12 "$1" | tr -s ' ' | sed 's/^ //'; }

# 1. Everything to training (--val-tokens 0), no --ext filter.
out=$tmp/out1
summary=$("$prep" --out "$out" --name zh --val-tokens 0 --fortune "$tmp/fortunes/quotes" "$tmp/in")
echo "$summary"
check "train shard exists" test -f "$out/zh/train_000.bin"
check "val shard exists" test -f "$out/zh/val.bin"
ntok=$(($(stat -c %s "$out/zh/train_000.bin") - 1024))
check "header: magic, version, token count" \
  test "$(header_of "$out/zh/train_000.bin")" = "20240520 1 $((ntok / 2))"
check "empty held-out set" test "$(header_of "$out/zh/val.bin")" = "20240520 1 0"
txt=$(text_of "$out/zh/train_000.bin")
check "html text present, wrapped CJK joined" has "床前明月光，疑是地上霜。" "$txt"
check "html title present" hasx "静夜思 页面" "$txt"
check "paragraph break kept" hasx "举头望明月，低头思故乡。" "$txt"
check "pre kept verbatim" hasx "  line two" "$txt"
check "entities decoded" hasx "A & B < C" "$txt"
check "no tags" lacks "<[a-z/!]" "$txt"
check "no script" lacks "secret_js\|不应出现" "$txt"
check "no style" lacks "color: red" "$txt"
check "fortune text present" hasx "白日依山尽，黄河入海流。" "$txt"
check "fortune title present" hasx "《登鹳雀楼》" "$txt"
check "fortunes split into documents" hasx "The colourful fortune." "$txt"
check "last fortune kept" hasx "Last one without a newline" "$txt"
check "no ESC bytes" lacks "$esc" "$txt"
check "no escape parameters" lacks "\[[0-9;]*m" "$txt"
check "no % separators" lacksx "%" "$txt"
check "gzip text present" hasx "compressed words inside a gzip file" "$txt"
check "binary skipped" lacks "ELF" "$txt"
check "summary: one skipped file" has '"skipped_files":1' "$summary"
check "summary: 4 files read" has '"files":4,' "$summary"
check "summary: channel" has '"channel":"zh"' "$summary"
check "summary: token count" has "\"train_tokens\":$((ntok / 2))," "$summary"
check "documents joined by a blank line" hasx "" "$txt"

# 2. Same inputs again: byte-identical output.
"$prep" --out "$tmp/out2" --name zh --val-tokens 0 --fortune "$tmp/fortunes/quotes" "$tmp/in" \
  >/dev/null
check "deterministic" cmp -s "$out/zh/train_000.bin" "$tmp/out2/zh/train_000.bin"

# 3. --ext keeps only the named types inside folders.
summary=$("$prep" --out "$tmp/out3" --name en --val-tokens 0 --ext .html,.gz "$tmp/in")
txt=$(text_of "$tmp/out3/en/train_000.bin")
check "--ext: html and gz read" has '"files":2,' "$summary"
check "--ext: markdown left out" lacks "markdown" "$txt"

# 4. A held-out split on real text: many one-line documents, small shards, a byte cap.
for i in $(seq 1 300); do echo "line $i of the corpus"; echo "%"; done >"$tmp/fortunes/many"
summary=$("$prep" --out "$tmp/out4" --name en --val-tokens 500 --shard-tokens 1000 \
  --max-bytes 3000 --fortune "$tmp/fortunes/many")
echo "$summary"
val=$(($(stat -c %s "$tmp/out4/en/val.bin") - 1024))
check "held-out set filled up to --val-tokens" test $((val / 2)) -gt 400 -a $((val / 2)) -le 500
# The cap is an upper bound: a document separator ("\n\n") that would cross it ends the text
# one or two bytes short, depending on where documents end (the held-out split hashes paths).
train_tokens=$(echo "$summary" | sed -n 's/.*"train_tokens":\([0-9]*\).*/\1/p')
check "training text capped by --max-bytes" test "$train_tokens" -ge 2998 -a "$train_tokens" -le 3000
check "three training shards" \
  test -f "$tmp/out4/en/train_002.bin" -a ! -f "$tmp/out4/en/train_003.bin"
vtxt=$(text_of "$tmp/out4/en/val.bin")
first_val=$(head -n 1 <<<"$vtxt")
ttxt=$(for f in "$tmp"/out4/en/train_00*.bin; do text_of "$f"; done)
check "held-out documents are not in training" lacksx "$first_val" "$ttxt"
check "training documents are not held out" lacksx "$(head -n 1 <<<"$ttxt")" "$vtxt"
# A later run with fewer shards removes the stale ones.
"$prep" --out "$tmp/out4" --name en --val-tokens 500 --shard-tokens 1000 --max-bytes 1500 \
  --fortune "$tmp/fortunes/many" >/dev/null
check "stale shards removed" \
  test -f "$tmp/out4/en/train_001.bin" -a ! -f "$tmp/out4/en/train_002.bin"

# 5. Exit codes: 2 for usage errors, 1 for I/O errors.
rc=0
"$prep" --name zh "$tmp/in" 2>/dev/null || rc=$?
check "missing --out: exit 2" test $rc -eq 2
rc=0
"$prep" --out "$tmp/o" --name zh --max-bytes 12x "$tmp/in" 2>/dev/null || rc=$?
check "bad size: exit 2" test $rc -eq 2
rc=0
"$prep" --out "$tmp/o" --name a/b "$tmp/in" 2>/dev/null || rc=$?
check "bad channel name: exit 2" test $rc -eq 2
rc=0
err=$("$prep" --out "$tmp/o" --name zh "$tmp/nonexistent" 2>&1) || rc=$?
check "missing input: exit 1" test $rc -eq 1
check "missing input: named" has "nonexistent" "$err"
rc=0
"$prep" --out "$tmp/o" --name zh "$tmp/in/tool" 2>/dev/null || rc=$?
check "only binary input: exit 1" test $rc -eq 1

if [[ $fails -ne 0 ]]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
