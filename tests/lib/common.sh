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

# free_port: a loopback TCP port that nothing holds, picked at random below the kernel's
# ephemeral range. A test binds it later (a controller, etcd, a standby), and a port from the
# ephemeral range could meanwhile become the source port of some connection (a worker dialling
# a standby that does not listen yet may even connect to itself); random, so tests running side
# by side seldom pick the same. Where that range starts at 20000 or lower: any free port.
free_port() {
  python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 0
for _ in range(500):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(20000, low) if low > 20000 else 0))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit("free_port: no free port found")
PY
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

# small_job_config FILE STEPS EXTRA: write_config for a small two-layer model, one thread per
# worker, batch 4 (jobs of several workers on a 2-core machine).
small_job_config() {
  write_config "$@"
  sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
          s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
          s/^train: .*/train: {batch: 4, top_k: 4}/" "$1"
}

# wait_worker_steps RUN_DIR RANK N PID: waits (bounded: 180 s) until rank RANK of a gyroctl launch
# run has logged N steps, or PID (the launch) is gone. 0 when it has.
wait_worker_steps() {
  local n=0 i
  for ((i = 0; i < 1800; i++)); do
    n=$(grep -c '"type": *"step"' "$1/worker-$2.jsonl" 2>/dev/null || true)
    [ "${n:-0}" -ge "$3" ] && return 0
    kill -0 "$4" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
