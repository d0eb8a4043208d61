#!/bin/bash
# test.sh: sets up and builds gyro (scripts/setup.sh), runs the test suite, then the unit and
# integration and fuzz tests again in an AddressSanitizer/UBSan build (build-asan), compiles the
# CPU-only tree where nvcc is installed (build-cpu), then the libFuzzer harnesses
# (scripts/fuzz.sh).
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -L unit    # extra arguments go to the first ctest run
#
# Exits non-zero when any step or test fails (every step still runs, so one report shows all).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }

# The example configs and the tests read the prepared shards through this variable.
GY_DATA_DIR="$(pwd)/data/shards"
export GY_DATA_DIR

failed=()
ctest --test-dir build --output-on-failure -j2 "$@" || failed+=("ctest build $*")

if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGY_SANITIZE=ON &&
  cmake --build build-asan -j"$(nproc)"; then
  # test_tls is left out here: under the sanitizers one CI run in several hung, where is not
  # known (a known open problem, see docs/ARCHITECTURE.md); it runs in the main pass.
  ctest --test-dir build-asan --output-on-failure -j2 -L 'unit|integration|fuzz' \
    -E 'integration/test_tls' ||
    failed+=("ctest build-asan -L 'unit|integration|fuzz'")
else
  failed+=("sanitizer build")
fi

# Where nvcc is installed the main build has the CUDA parts: the CPU-only tree (what a machine
# without the CUDA toolkit builds) must compile too.
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  if ! { cmake -S . -B build-cpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGY_CUDA=OFF \
    -DGY_BUILD_BENCH=OFF >/dev/null && cmake --build build-cpu -j"$(nproc)"; }; then
    failed+=("CPU-only build")
  fi
fi

# libFuzzer harnesses (clang), each for a bounded time; crashes found earlier are replayed.
if [[ -f scripts/fuzz.sh ]]; then
  bash scripts/fuzz.sh || failed+=("fuzz harnesses")
fi

if ((${#failed[@]})); then
  printf 'test: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test: all passed" >&2
