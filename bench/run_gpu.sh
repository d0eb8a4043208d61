#!/usr/bin/env bash
# bench/run_gpu.sh BUILD_DIR [STEPS]: gyro's CUDA GPT (bench/train_gpu, GPT-2 124M, bf16, the
# largest micro-batch that fits), then the same model and batch in PyTorch, eager and
# torch.compile (bench/torch_gpt2.py), and a comparison table. Each run's JSON line is printed
# too. Needs a GPU; the PyTorch rows need PyTorch (they are reported as missing otherwise).
set -euo pipefail
build=${1:?usage: bench/run_gpu.sh BUILD_DIR [STEPS]}
steps=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/gyro-gpu-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT

rc=0
"$build/bench/train_gpu" --json --steps "$steps" >"$out/1-gyro.json" || rc=$?
if [ "$rc" -eq 77 ]; then
  echo "skipped: no GPU"
  exit 77
elif [ "$rc" -ne 0 ]; then
  echo "run_gpu: train_gpu failed (exit $rc)" >&2
  exit "$rc"
fi
cat "$out/1-gyro.json"
batch=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch"])' \
  "$out/1-gyro.json")

n=2
for mode in eager compile; do
  f="$out/$n-torch-$mode.json"
  if python3 "$here/torch_gpt2.py" --mode "$mode" --batch "$batch" --steps "$steps" \
    --json >"$f"; then
    cat "$f"
  else
    echo "run_gpu: torch_gpt2.py --mode $mode failed or was skipped (exit $?)" >&2
    rm -f "$f"
  fi
  n=$((n + 1))
done

python3 - "$out"/*.json <<'PY'
import json, sys
rows = [json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:]]
base = rows[0]["tokens_per_s"]
print()
print("device: %s, batch %d x %d tokens, %s, %.1fM params"
      % (rows[0]["device"], rows[0]["batch"], rows[0]["seq"], rows[0]["dtype"],
         rows[0]["params"] / 1e6))
print("| impl | ms/step | tokens/s | TFLOP/s | MFU | tokens/s vs gyro |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    mfu = "%.1f %%" % (100 * r["mfu"]) if r.get("mfu") is not None else "n/a"
    print("| %s | %.1f | %.0f | %.1f | %s | %.2fx |"
          % (r["impl"], r["ms_per_step"], r["tokens_per_s"], r["tflops"], mfu,
             r["tokens_per_s"] / base))
print("FLOPs per token = 6N + 6LCT = %.4g; MFU against the peak %s TFLOP/s (dense bf16)"
      % (rows[0]["flops_per_token"], rows[0].get("peak_tflops")))
PY
