#!/usr/bin/env bash
# prep-data.sh: builds the three training channels (zh, en, code) as byte-level token shards
# from text shipped in Debian packages.
#
#   bash scripts/prep-data.sh BUILD_DIR OUT_DIR
#
# BUILD_DIR holds the built gyro-prep (BUILD_DIR/worker/gyro-prep). The output is
# OUT_DIR/{zh,en,code}/{train_000.bin,...,val.bin}, with summary.json and prep_report.json
# (what gyro-prep's filters dropped and why: non-text, repeated spans, exact and near
# duplicates, boilerplate lines; their defaults apply); see data/README.md. Each channel's
# training text is capped at 4 MiB (GY_PREP_MAX_BYTES overrides, e.g. GY_PREP_MAX_BYTES=16M),
# after the filters. A channel is rebuilt only when its shards are missing, older than
# gyro-prep, or were made with other inputs or options, so running this again is cheap.
set -euo pipefail

die() {
  echo "prep-data: $*" >&2
  exit 1
}

[[ $# -eq 2 ]] || {
  echo "usage: bash scripts/prep-data.sh BUILD_DIR OUT_DIR" >&2
  exit 2
}
build_dir=$1
out_dir=$2
prep=$build_dir/worker/gyro-prep
[[ -x $prep ]] ||
  die "$prep not found: build it first (cmake --build $build_dir --target gyro-prep)"
max_bytes=${GY_PREP_MAX_BYTES:-4M}

need_pkg() {
  local pkg=$1
  if command -v dpkg-query >/dev/null 2>&1; then
    local st
    st=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $st == *" installed" ]] || die "package '$pkg' is not installed (apt-get install $pkg)"
  fi
}
need_path() {
  [[ -e $1 ]] || die "$1 is missing: install the package '$2' (apt-get install $2)"
}

for pkg in debian-handbook fortunes-zh fortunes fortunes-min libc6-dev libpython3.11-stdlib; do
  need_pkg "$pkg"
done
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script needs Debian"

handbook=/usr/share/doc/debian-handbook/html
fortunes=/usr/share/games/fortunes
pylib=/usr/lib/python3.11
need_path "$handbook/zh-CN" debian-handbook
need_path "$handbook/en-US" debian-handbook
for f in chinese tang300 song100; do need_path "$fortunes/$f" fortunes-zh; done
need_path "$fortunes/fortunes" fortunes-min
need_path /usr/include/stdio.h libc6-dev
need_path "$pylib/os.py" libpython3.11-stdlib

# English fortune files: those of the fortunes and fortunes-min packages, without strfile's
# .dat indexes, the .u8 links and the ASCII-art files.
mapfile -t en_fortunes < <(dpkg-query -L fortunes fortunes-min |
  grep -E "^$fortunes/[^/]+$" | grep -v -E '\.(dat|u8)$' | grep -v -E '/(art|ascii-art)$' | sort -u)
[[ ${#en_fortunes[@]} -gt 0 ]] || die "no English fortune files listed by dpkg for 'fortunes'"

# C headers: libc6-dev's own, top level plus the sys/ and bits/ folders (multiarch included),
# so the channel does not depend on which other -dev packages a machine has.
mapfile -t headers < <(dpkg-query -L libc6-dev |
  grep -E '^/usr/include/([^/]+\.h|([^/]+/)?(sys|bits)/.+\.h)$' | sort -u)
[[ ${#headers[@]} -gt 0 ]] || die "no headers listed by dpkg for 'libc6-dev'"
py=("$pylib"/*.py)

# prep_channel NAME ARGS...: runs gyro-prep unless OUT_DIR/NAME is up to date.
prep_channel() {
  local name=$1
  shift
  local dir=$out_dir/$name
  local args
  args=$(printf '%s\n' --max-bytes "$max_bytes" "$@")
  if [[ -f $dir/val.bin && -f $dir/train_000.bin && -f $dir/prep.args &&
    -f $dir/prep_report.json ]] &&
    [[ $dir/val.bin -nt $prep && $(cat "$dir/prep.args") == "$args" ]]; then
    echo "prep-data: $name is up to date ($dir)" >&2
    [[ -f $dir/summary.json ]] && cat "$dir/summary.json"
    return 0
  fi
  mkdir -p "$dir"
  rm -f "$dir/prep.args"
  local summary
  summary=$("$prep" --out "$out_dir" --name "$name" --max-bytes "$max_bytes" "$@") ||
    die "gyro-prep failed for channel $name"
  printf '%s\n' "$summary" >"$dir/summary.json"
  printf '%s\n' "$args" >"$dir/prep.args"
  printf '%s\n' "$summary"
}

zh_args=(--ext ".html,.htm" "$handbook/zh-CN")
for f in chinese tang300 song100; do zh_args+=(--fortune "$fortunes/$f"); done
en_args=(--ext ".html,.htm" "$handbook/en-US")
for f in "${en_fortunes[@]}"; do en_args+=(--fortune "$f"); done

# The shipped corpora are built through gyro-prep's filters (data/README.md says what they
# drop): any data team removes repeated spans, tables and near duplicates before training, and
# the guard's false-positive budget holds on filtered text. GY_PREP_FILTER=0 builds them
# unfiltered.
filter=()
[[ ${GY_PREP_FILTER:-1} == 0 ]] && filter=(--no-filter)
prep_channel zh "${filter[@]}" "${zh_args[@]}"
prep_channel en "${filter[@]}" "${en_args[@]}"
prep_channel code "${filter[@]}" "${headers[@]}" "${py[@]}"
