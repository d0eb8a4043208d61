#!/bin/bash
# spike_recovery: the closed loop's benchmark. One poisoned corpus (random bytes over the `code`
# samples of steps 250-257) trained four ways with the same seed, each a real job under
# `gyroctl launch` (gyro-controller + 2 CPU workers, data parallel 2, Gloo on loopback):
#   clean         no corruption, default policy
#   poisoned      corruption, gyro watching only (every detector set to on_fire: alert)
#   loop-memory   corruption, the default policy: roll back (from the in-memory snapshot), skip
#   loop-disk     the same with checkpoint.keep_in_memory: 0, so the rollback reads the disk
# and reports the final validation loss per channel, steps lost to rollbacks, wall time from
# detection (the spike_suspected event, or the repair's decision when it was taken at once) to
# the first step trained after the resume, and a PNG
# of the loss curves with the events marked (gnuplot).
#
#   bash bench/spike_recovery.sh [--steps N] [--out DIR]     (after scripts/setup.sh)
#
# Writes DIR/summary.json, DIR/summary.md (the table for bench/RESULTS.md) and
# DIR/spike_recovery.png (default DIR: build/bench/spike_recovery).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=400
OUT=build/bench/spike_recovery
while (($#)); do
  case $1 in
  --steps) STEPS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  -h | --help) sed -n 2,17p "$0"; exit 0 ;;
  *) echo "spike_recovery: unknown argument $1" >&2; exit 2 ;;
  esac
done
GYROCTL=build/cli/gyroctl
[ -x "$GYROCTL" ] || { echo "spike_recovery: build gyro first (scripts/setup.sh)" >&2; exit 1; }
export GY_DATA_DIR=${GY_DATA_DIR:-$(pwd)/data/shards}
[ -f "$GY_DATA_DIR/code/train_000.bin" ] || { echo "spike_recovery: no shards in $GY_DATA_DIR" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "spike_recovery: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
export OMP_WAIT_POLICY=PASSIVE
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# A private copy of the binaries: a rebuild while the benchmark runs cannot mix versions.
mkdir -p "$OUT/bin/cli" "$OUT/bin/controller" "$OUT/bin/worker"
cp build/cli/gyroctl "$OUT/bin/cli/"
cp build/controller/gyro-controller "$OUT/bin/controller/"
cp build/worker/gyro-worker "$OUT/bin/worker/"
GYROCTL=$OUT/bin/cli/gyroctl

cat >"$OUT/observe-only.yaml" <<'YAML'
# every detector reports (an alert event) but nothing is repaired: "without gyro's loop"
detect:
  loss: {on_fire: alert}
  channel_loss: {on_fire: alert}
  grad_norm: {on_fire: alert}
  grad_norm_shallow: {on_fire: alert}
  ppl: {on_fire: alert}
YAML

# mkcfg NAME CORRUPT(0|1) POLICY KEEP_IN_MEMORY
mkcfg() {
  local name=$1 corrupt=$2 policy=$3 keep=$4 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  {
    cat <<YAML
run: {name: $name, seed: 1337, steps: $STEPS, threads: 1}
model: {layers: 4, channels: 128, heads: 4, context: 128, vocab: 256}
train: {batch: 8, seq_len: 128, top_k: 16}
optimizer: {lr: 1.0e-3, beta2: 0.95, weight_decay: 0.1, grad_clip: 1.0}
schedule: {kind: cosine, warmup: 50, min_lr_frac: 0.1}
data:
  channels:
    - {name: zh, train: ['$GY_DATA_DIR/zh/train_000.bin'], val: '$GY_DATA_DIR/zh/val.bin'}
    - {name: en, train: ['$GY_DATA_DIR/en/train_000.bin'], val: '$GY_DATA_DIR/en/val.bin'}
    - {name: code, train: ['$GY_DATA_DIR/code/train_000.bin'], val: '$GY_DATA_DIR/code/val.bin'}
YAML
    # steps 250-257 consume sample ids [4000, 4128): 2 DP ranks x batch 8
    [ "$corrupt" = 1 ] && echo "  corrupt: [{channel: code, from: 4000, to: 4128, kind: random_bytes}]"
    cat <<YAML
eval: {every: 50, sequences: 200}
checkpoint: {dir: $OUT/$name-ckpt, every: 25, keep_in_memory: $keep, keep: 100}
controller: {listen: "127.0.0.1:$port", world: 2, tp: 1, window: 4, heartbeat_ms: 500, lost_after_ms: 20000${policy:+, policy: $policy}}
YAML
  } >"$OUT/$name.yaml"
}

mkcfg clean 0 "" 2
mkcfg poisoned 1 "$OUT/observe-only.yaml" 2
mkcfg loop-memory 1 "" 2
mkcfg loop-disk 1 "" 0
for name in clean poisoned loop-memory loop-disk; do
  t0=$(date +%s.%N)
  "$GYROCTL" launch "$OUT/$name.yaml" --run-dir "$OUT/$name" >"$OUT/$name.out" 2>&1 ||
    { tail -n 20 "$OUT/$name.out" >&2; echo "spike_recovery: $name failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print('%s: %.1f s' % ('$name', $t1 - $t0))" | tee -a "$OUT/wall.txt"
done

python3 - "$OUT" "$STEPS" <<'PY'
import datetime, json, re, statistics, sys
out, STEPS = sys.argv[1], int(sys.argv[2])
RUNS = ["clean", "poisoned", "loop-memory", "loop-disk"]
WORLD = 2

def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()

summary = {}
for name in RUNS:
    d = "%s/%s" % (out, name)
    events = []
    for line in open(d + "/controller.log"):
        try:
            j = json.loads(line)
            m = re.match(r"event (\d+) (\S+) step (-?\d+): (.*)", j.get("msg", ""), re.S)
        except ValueError:
            continue
        if m:
            events.append({"ts": epoch(j["ts"]), "kind": m.group(2), "step": int(m.group(3)),
                           "text": m.group(4)})
    recs = [[json.loads(l) for l in open("%s/worker-%d.jsonl" % (d, r)) if l.startswith("{")]
            for r in range(WORLD)]
    # the curve: the last record of each step (a rolled-back step is replaced by its replay),
    # mean over the data-parallel ranks
    curve = {}
    for r in range(WORLD):
        last = {}
        for x in recs[r]:
            if x["type"] == "step":
                last[x["step"]] = x
        for s, x in last.items():
            curve.setdefault(s, []).append(x)
    with open("%s/%s.curve" % (out, name), "w") as f:
        for s in sorted(curve):
            xs = curve[s]
            code = [x["loss_ch"].get("code") for x in xs if x["loss_ch"].get("code") is not None]
            f.write("%d %.6f %s\n" % (s, statistics.mean(x["loss"] for x in xs),
                                      "%.6f" % statistics.mean(code) if code else "NaN"))
    rbs = [x for x in recs[0] if x["type"] == "directive" and x["kind"] == "rollback"]
    val = [x for x in recs[0] if x["type"] == "eval" and x["step"] == STEPS][-1]["val_loss"]
    recov = []
    for rb in rbs:
        # the detection that led to this rollback: the last spike_suspected before it, or a
        # repair decided at once from TRAIN (a spike again in the steps a repair replays)
        sus = [e for e in events if e["ts"] <= rb["ts"] and (e["kind"] == "spike_suspected" or (
            e["kind"] == "rollback" and e["text"].startswith("TRAIN -> ROLLBACK")))]
        # the first step trained after the restore (rank 0): the record of step to_step after it
        after = [x for x in recs[0] if x["type"] == "step" and x.get("ts", 0) > rb["ts"]]
        if not sus or not after:
            continue
        recov.append({"detect_step": sus[-1]["step"], "to_step": rb["to_step"],
                      "at_step": rb["at_step"], "from": rb.get("restored_from"),
                      "apply_ms": rb.get("apply_ms"),
                      "detect_to_resume_s": after[0]["ts"] - sus[-1]["ts"]})
    marks = [(e["kind"], e["step"]) for e in events
             if e["kind"] in ("spike_suspected", "rollback", "alert", "recovered_spike")]
    summary[name] = {"val_loss": val, "rollbacks": len(rbs),
                     "steps_lost": sum(x["at_step"] - x["to_step"] for x in rbs),
                     "recoveries": recov,
                     "spike_events": sum(1 for e in events if e["kind"] == "spike_suspected"),
                     "marks": marks}
json.dump(summary, open(out + "/summary.json", "w"), indent=1)

clean = summary["clean"]["val_loss"]
chs = sorted(clean)
lines = ["| run | " + " | ".join("val %s" % c for c in chs) +
         " | vs clean (worst) | rollbacks | steps lost | detection -> first step after resume |",
         "|---|" + "---|" * len(chs) + "---|---|---|---|"]
for name in RUNS:
    s = summary[name]
    worst = max(abs(s["val_loss"][c] - clean[c]) / clean[c] for c in chs)
    rec = "; ".join("%.2f s (%s, restore %.0f ms)" % (r["detect_to_resume_s"], r["from"],
                                                      r["apply_ms"] or 0)
                    for r in s["recoveries"]) or "-"
    lines.append("| %s | %s | %+.2f%% | %d | %d | %s |" % (
        name, " | ".join("%.4f" % s["val_loss"][c] for c in chs), 100 * worst, s["rollbacks"],
        s["steps_lost"], rec))
open(out + "/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# the plot: training loss of the code channel per step, the three ways, events of the loop run
gp = ["set terminal pngcairo size 1200,600 font 'sans,11'",
      "set output '%s/spike_recovery.png'" % out,
      "set title 'Random bytes in the code channel at steps 250-257: code training loss'",
      "set xlabel 'step'", "set ylabel 'loss (nats/byte)'", "set yrange [0:10]",
      "set key top right", "set grid"]
for kind, step in summary["loop-memory"]["marks"]:
    if kind in ("spike_suspected", "rollback"):
        col = "#d62728" if kind == "rollback" else "#ff7f0e"
        gp.append("set arrow from %d, graph 0 to %d, graph 1 nohead lc rgb '%s' dt 2" %
                  (step, step, col))
gp.append("plot '%s/clean.curve' u 1:3 w l lw 1.5 lc rgb '#2ca02c' t 'clean', "
          "'%s/poisoned.curve' u 1:3 w l lw 1.5 lc rgb '#7f7f7f' t 'poisoned, no loop', "
          "'%s/loop-memory.curve' u 1:3 w l lw 1.5 lc rgb '#1f77b4' t 'poisoned, gyro loop "
          "(dashed: spike suspected / rollback)'" % (out, out, out))
open(out + "/plot.gp", "w").write("\n".join(gp) + "\n")
PY
gnuplot "$OUT/plot.gp"
echo "spike_recovery: $OUT/summary.md, $OUT/spike_recovery.png"
