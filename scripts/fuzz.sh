#!/bin/bash
# fuzz.sh: builds the libFuzzer harnesses of fuzz/ with clang (build-fuzz/), replays every saved
# crash (fuzz/crashes/<harness>/) and the seed corpus (fuzz/corpus/<harness>/), then fuzzes each
# harness for a bounded time. Fails on any crash and prints the reproducer's path.
#
#   bash scripts/fuzz.sh                       # every harness, 30 s each
#   GY_FUZZ_SECONDS=300 bash scripts/fuzz.sh fuzz_policy
#
# A reproducer is kept under build-fuzz/artifacts/<harness>/; once the bug is fixed, copy it to
# fuzz/crashes/<harness>/ so that every later run replays it. New corpus entries found while
# fuzzing stay in build-fuzz/corpus-run/ (not in the repository).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

SECONDS_EACH=${GY_FUZZ_SECONDS:-30}
HARNESSES=(fuzz_messages fuzz_run_config fuzz_policy fuzz_ckpt)
if (($#)); then HARNESSES=("$@"); fi
B=build-fuzz

command -v clang >/dev/null ||
  { echo "fuzz: clang is not installed (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
mkdir -p "$B"
if ! { CC=clang cmake -S fuzz -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$B/configure.log" 2>&1 ||
  { cat "$B/configure.log" >&2; false; }; } || ! cmake --build "$B" -j2; then
  echo "fuzz: cannot build the harnesses" >&2
  exit 1
fi

failed=()
for h in "${HARNESSES[@]}"; do
  [ -x "$B/$h" ] || { echo "fuzz: no harness $h" >&2; failed+=("$h: not built"); continue; }
  art=$B/artifacts/$h
  work=$B/corpus-run/$h
  mkdir -p "$art" "$work" "fuzz/corpus/$h" "fuzz/crashes/$h"

  # 1. replay the saved crashes and the seeds (one run each)
  mapfile -t saved < <(find "fuzz/crashes/$h" -type f ! -name '.*' | sort)
  if ((${#saved[@]})); then
    if ! "$B/$h" -runs=1 "${saved[@]}" >"$B/$h.replay.log" 2>&1; then
      tail -n 40 "$B/$h.replay.log" >&2
      echo "fuzz: $h: a saved crash fails again (see above; inputs in fuzz/crashes/$h/)" >&2
      failed+=("$h: replay of fuzz/crashes/$h")
      continue
    fi
  fi
  if ! "$B/$h" -runs=0 "fuzz/corpus/$h" >"$B/$h.seeds.log" 2>&1; then
    tail -n 40 "$B/$h.seeds.log" >&2
    failed+=("$h: the seed corpus fuzz/corpus/$h")
    continue
  fi

  # 2. fuzz for a bounded time (new inputs go to the work folder; the seeds are read only)
  log=$B/$h.log
  rc=0
  # a fixed seed (GY_FUZZ_SEED, default 1): a run's mutations are reproducible, so a failure
  # is the same failure on the next run (0: a random seed, for longer exploration)
  "$B/$h" -seed="${GY_FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="$art/" -rss_limit_mb=2048 -timeout=10 "$work" "fuzz/corpus/$h" \
    >"$log" 2>&1 || rc=$?
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)
  if ((rc != 0)); then
    tail -n 40 "$log" >&2
    repro=$(grep -ao "Test unit written to [^ ]*" "$log" | tail -n 1 | sed 's/Test unit written to //')
    echo "fuzz: $h FAILED after ${execs:-?} executions; reproducer: ${repro:-$art/}" >&2
    echo "fuzz: replay it with: $B/$h ${repro:-$art/crash-...}" >&2
    failed+=("$h: ${repro:-crash}")
  else
    echo "fuzz: $h ok: ${execs:-?} executions in ${SECONDS_EACH} s, ${#saved[@]} saved crash(es) replayed"
  fi
done

if ((${#failed[@]})); then
  printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: all harnesses passed"
