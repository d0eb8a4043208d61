# Data- and tensor-parallel training on the GPU (run.device cuda, fp32) gives the per-step losses
# of one CPU process on the same global batch, as tests/integration/test_parallel.sh does for the
# CPU: TP=2 and DP=2 with the gloo backend (two processes; with one GPU they share it, and Gloo
# sums host copies of the device buffers), and, with two GPUs or more, TP=2 and DP=2 with the
# nccl backend (one GPU per rank, sums on the device). 5 steps (as tests/gpu/test_train_cuda.c:
# float sums on the GPU differ from the CPU's in order); relative tolerance 1e-4 on the
# loss and 1e-3 on the gradient norm; every rank reports the same figures. Without a GPU or
# without CUDA in the build it prints "skipped: no GPU" and exits 77.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
STEPS=5

ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${ngpu:-0}" -lt 1 ] || ! grep -q '^CMAKE_CUDA_COMPILER:[A-Z]*=.*nvcc' "$BUILD/CMakeCache.txt"; then
  echo "skipped: no GPU"
  exit 77
fi

source "$GY_SOURCE_DIR/tests/lib/gang.sh"
GANG_TIMEOUT_MS=60000
on() { GANG_SED="s/^run: {/run: {device: $1, dtype: fp32, /"; } # the device of the next gangs

on cpu
run_gang single 1 1 8
on cuda
run_gang cuda1 1 1 8
run_gang tp2_gloo 2 2 8 --backend gloo
run_gang dp2_gloo 2 1 4 --backend gloo
gangs="cuda1:1 tp2_gloo:2 dp2_gloo:2"
if [ "$ngpu" -ge 2 ]; then
  run_gang tp2_nccl 2 2 8 --backend nccl
  run_gang dp2_nccl 2 1 4 --backend nccl
  gangs="$gangs tp2_nccl:2 dp2_nccl:2"
else
  echo "one GPU: the nccl gangs need one GPU per rank and are not run"
fi

python3 - "$TMP" $STEPS $gangs <<'PY'
import json, sys
d, steps = sys.argv[1], int(sys.argv[2])
def load(name, rank=0):
    return [r for r in map(json.loads, open("%s/%s.%d.jsonl" % (d, name, rank))) if r["type"] == "step"]
base = load("single")
assert len(base) == steps, len(base)
for spec in sys.argv[3:]:
    name, world = spec.split(":")
    ranks = [load(name, r) for r in range(int(world))]
    for r in ranks[1:]:
        assert [x["loss"] for x in r] == [x["loss"] for x in ranks[0]], name
    assert len(ranks[0]) == steps, (name, len(ranks[0]))
    worst_l = worst_g = 0.0
    for a, b in zip(base, ranks[0]):
        rl = abs(a["loss"] - b["loss"]) / abs(a["loss"])
        rg = abs(a["grad_norm"] - b["grad_norm"]) / abs(a["grad_norm"])
        worst_l, worst_g = max(worst_l, rl), max(worst_g, rg)
        assert rl < 1e-4, (name, a["step"], a["loss"], b["loss"])
        assert rg < 1e-3, (name, a["step"], a["grad_norm"], b["grad_norm"])
    print("%-10s %d steps: max relative loss difference vs one CPU process %.2e, grad norm %.2e"
          % (name, steps, worst_l, worst_g))
PY
