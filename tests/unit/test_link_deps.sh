# test_link_deps: gyro-controller and gyroctl link no training library. They read the run config
# through gy_config (config/), so neither the binaries nor any library they load names OpenBLAS,
# OpenMP, Gloo, CUDA or NCCL, and neither binary itself needs libstdc++ (Debian's gRPC core is
# C++ inside, so libstdc++ does appear among the libraries libgrpc loads: only through it, and
# through the sanitizer runtimes in a sanitizer build).
source "$GY_SOURCE_DIR/tests/lib/common.sh"

for bin in "$BUILD/controller/gyro-controller" "$BUILD/cli/gyroctl"; do
  [[ -x $bin ]] || fail "$bin is not built"
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [[ -n $needed ]] || fail "readelf found no NEEDED entries in $bin"
  if grep -Ei 'openblas|blas|gomp|libomp|gloo|stdc\+\+|cuda|cublas|nccl|nvidia-ml' <<<"$needed"; then
    fail "$(basename "$bin") itself needs a training library (above)"
  fi
  loaded=$(ldd "$bin")
  if grep -Ei 'openblas|gomp|gloo|cuda|cublas|nccl|nvidia-ml' <<<"$loaded"; then
    fail "$(basename "$bin") loads a training library (above)"
  fi
  # libstdc++ only as a dependency of a library the binary needs that is written in C++ (gRPC).
  if grep -q 'libstdc++' <<<"$loaded"; then
    via=""
    for lib in $needed; do
      path=$(awk -v l="$lib" '$1 == l {print $3}' <<<"$loaded")
      # (the whole output first: grep -q would close the pipe early, a failure under pipefail)
      [[ -n $path ]] && deps=$(ldd "$path") && grep -q 'libstdc++' <<<"$deps" && via="$via $lib"
    done
    # (gRPC's own libraries, Abseil and RE2, may be named directly, as in a sanitizer build,
    # whose runtime, libasan/libubsan, is C++ too)
    grep -q 'libgrpc' <<<"$via" || fail "$(basename "$bin") loads libstdc++ through:$via"
    grep -qv 'libgrpc\|libgpr\|libabsl_\|libre2\|libasan\|libubsan' <<<"$(tr ' ' '\n' <<<"$via" | sed '/^$/d')" &&
      fail "$(basename "$bin") loads libstdc++ through more than gRPC's stack:$via"
  fi
  echo "ok: $(basename "$bin") needs: $(tr '\n' ' ' <<<"$needed")"
done
echo "test_link_deps: ok"
