# Shared helpers for gyro's shell tests. Source it; it sets BUILD, SRC, DATA and TMP (removed at
# exit) and fails fast on errors.
set -euo pipefail
BUILD=${GY_BUILD_DIR:?GY_BUILD_DIR must point at the build folder}
SRC=${GY_SOURCE_DIR:?GY_SOURCE_DIR must point at the source folder}
DATA=${GY_DATA_DIR:-$SRC/data/shards}
export GY_DATA_DIR=$DATA
WORKER=$BUILD/worker/gyro-worker
TMP=$(mktemp -d /tmp/gyro-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

need_data() {
  for ch in zh en code; do
    [ -f "$DATA/$ch/train_000.bin" ] && [ -f "$DATA/$ch/val.bin" ] ||
      fail "prepared shards missing in $DATA (run: bash scripts/prep-data.sh build data/shards)"
  done
}

# write_config FILE STEPS [extra YAML appended verbatim]
# A small model on the three shipped channels; every test derives from it.
write_config() {
  local file=$1 steps=$2 extra=${3:-}
  cat >"$file" <<YAML
run: {name: test, seed: 1234, steps: $steps, threads: 2}
model: {layers: 4, channels: 128, heads: 4, context: 128, vocab: 256}
train: {batch: 8, top_k: 4}
optimizer: {lr: 3.0e-3, weight_decay: 0.0, grad_clip: 1.0}
schedule: {kind: cosine, warmup: 20, min_lr_frac: 0.1}
data:
  channels:
    - {name: zh, train: ['\${GY_DATA_DIR}/zh/train_000.bin'], val: '\${GY_DATA_DIR}/zh/val.bin'}
    - {name: en, train: ['\${GY_DATA_DIR}/en/train_000.bin'], val: '\${GY_DATA_DIR}/en/val.bin'}
    - {name: code, train: ['\${GY_DATA_DIR}/code/train_000.bin'], val: '\${GY_DATA_DIR}/code/val.bin'}
eval: {every: 0, sequences: 64}
checkpoint: {dir: $TMP/ckpt, every: 0, keep_in_memory: 2, keep: 100}
$extra
YAML
}
