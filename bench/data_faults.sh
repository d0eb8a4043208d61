#!/bin/bash
# data_faults: bad data inside real shards, three ways. Real-world junk (bytes of compiled
# programs and of gzip files, raw HTML, repeated spans, blank lines, Chinese verse in English:
# bench/data_faults_splice.py) is spliced into the en shard at random offsets, covering 0.1%, 1%
# and 5% of the channel. Each corpus is trained by a real job under `gyroctl launch`
# (gyro-controller + 2 CPU workers, data parallel 2, Gloo on loopback), with train.log_samples
# so every sample drawn is on record. The model: 2 layers, 64 wide, 4 heads, context 64, batch 8
# per rank (--layers, --channels, --seq change it; the guard's content rules do not depend on it,
# its loss rule does):
#   clean          no junk, the default policy (the guard's false positives)
#   off-<share>    junk, gyro off: the guard disabled, every detector alert-only (no repair)
#   gyro-<share>   junk, the default policy (the guard, the quarantine and the ladder)
# Ground truth: the splice offsets. A sample is junk when half or more of its tokens were
# spliced in. Reported per share: recall (junk samples drawn that the guard masked), precision
# (masked samples that overlap a splice), junk samples trained after their splice was first
# sighted, false positives of the clean run, rollbacks and the steps and seconds they cost, the
# final held-out loss per channel against the clean run, and a PNG (gnuplot) of the en held-out
# loss.
#
#   bash bench/data_faults.sh [--steps N] [--shares "0.001 0.01 0.05"] [--out DIR] [--seed S]
#                             [--layers L] [--channels C] [--seq T]
#
# Writes DIR/summary.json, DIR/summary.md (the table for bench/RESULTS.md) and
# DIR/data_faults.png (default DIR: build/bench/data_faults).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=1000
SHARES="0.001 0.01 0.05"
OUT=build/bench/data_faults
SEED=7
LAYERS=2
CHANNELS=64
SEQ=64
while (($#)); do
  case $1 in
  --layers) LAYERS=$2; shift 2 ;;
  --channels) CHANNELS=$2; shift 2 ;;
  --seq) SEQ=$2; shift 2 ;;
  --steps) STEPS=$2; shift 2 ;;
  --shares) SHARES=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --seed) SEED=$2; shift 2 ;;
  -h | --help) sed -n 2,26p "$0"; exit 0 ;;
  *) echo "data_faults: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x build/cli/gyroctl ] || { echo "data_faults: build gyro first (scripts/setup.sh)" >&2; exit 1; }
DATA=${GY_DATA_DIR:-$(pwd)/data/shards}
[ -f "$DATA/en/train_000.bin" ] || { echo "data_faults: no shards in $DATA" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "data_faults: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
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

cat >"$OUT/off.yaml" <<'YAML'
# gyro off: no guard, and every detector only reports (an alert event): nothing is repaired
guard: {enabled: false}
detect:
  loss: {on_fire: alert}
  channel_loss: {on_fire: alert}
  grad_norm: {on_fire: alert}
  grad_norm_shallow: {on_fire: alert}
  ppl: {on_fire: alert}
YAML

# corpus NAME SHARE: DIR/NAME-data, the shards with SHARE of en spliced (0: a clean copy)
corpus() {
  local d=$OUT/$1-data
  mkdir -p "$d/en"
  for ch in zh code; do ln -s "$DATA/$ch" "$d/$ch"; done
  cp "$DATA/en/val.bin" "$d/en/val.bin"
  if [ "$2" = 0 ]; then
    ln -s "$DATA/en/train_000.bin" "$d/en/train_000.bin"
  else
    python3 bench/data_faults_splice.py --shard "$DATA/en/train_000.bin" \
      --out "$d/en/train_000.bin" --share "$2" --seed "$SEED" \
      --other-language "$DATA/zh/train_000.bin" --manifest "$OUT/$1-splices.json" >/dev/null
  fi
}

# mkcfg NAME DATA_DIR POLICY
mkcfg() {
  local name=$1 data=$2 policy=$3 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$OUT/$name.yaml" <<YAML
run: {name: $name, seed: 1337, steps: $STEPS, threads: 1}
model: {layers: $LAYERS, channels: $CHANNELS, heads: 4, context: $SEQ, vocab: 256}
train: {batch: 8, seq_len: $SEQ, top_k: 16, log_samples: true}
optimizer: {lr: 1.0e-3, beta2: 0.95, weight_decay: 0.1, grad_clip: 1.0}
schedule: {kind: cosine, warmup: 50, min_lr_frac: 0.1}
data:
  channels:
    - {name: zh, train: ['$data/zh/train_000.bin'], val: '$data/zh/val.bin'}
    - {name: en, train: ['$data/en/train_000.bin'], val: '$data/en/val.bin'}
    - {name: code, train: ['$data/code/train_000.bin'], val: '$data/code/val.bin'}
eval: {every: 100, sequences: 200}
checkpoint: {dir: $OUT/$name-ckpt, every: 50, keep_in_memory: 2, keep: 100}
controller: {listen: "127.0.0.1:$port", world: 2, tp: 1, window: 4, heartbeat_ms: 500, lost_after_ms: 20000${policy:+, policy: $policy}}
YAML
}

RUNS="clean"
corpus clean 0
mkcfg clean "$OUT/clean-data" ""
for s in $SHARES; do
  corpus "p$s" "$s"
  mkcfg "off-$s" "$OUT/p$s-data" "$OUT/off.yaml"
  mkcfg "gyro-$s" "$OUT/p$s-data" ""
  RUNS="$RUNS off-$s gyro-$s"
done
for name in $RUNS; do
  t0=$(date +%s.%N)
  "$GYROCTL" launch "$OUT/$name.yaml" --run-dir "$OUT/$name" >"$OUT/$name.out" 2>&1 ||
    { tail -n 20 "$OUT/$name.out" >&2; echo "data_faults: $name failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print('%s: %.1f s' % ('$name', $t1 - $t0))" | tee -a "$OUT/wall.txt"
done

python3 - "$OUT" "$STEPS" "$SHARES" "$SEQ" <<'PY'
import json, re, statistics, sys
out, STEPS, SHARES = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
T, WORLD = int(sys.argv[4]), 2


def records(name):
    """per rank: the last record of each step (a replayed step replaces the one rolled back),
    the evals, the directives"""
    ranks = []
    for r in range(WORLD):
        steps, evals, dirs = {}, [], []
        for line in open("%s/%s/worker-%d.jsonl" % (out, name, r)):
            if not line.startswith("{"):
                continue
            x = json.loads(line)
            if x["type"] == "step":
                steps[x["step"]] = x
            elif x["type"] == "eval":
                evals.append(x)
            elif x["type"] == "directive":
                dirs.append(x)
        ranks.append((steps, evals, dirs))
    return ranks


def splices(name):
    try:
        m = json.load(open("%s/%s-splices.json" % (out, name)))
    except FileNotFoundError:
        return []
    return [(s["offset"], s["offset"] + s["length"], s["kind"]) for s in m["splices"]]


def judge(name, spl):
    ranks = records(name)
    drawn = []  # (step, rank, splice or None, junk share, masked, channel)
    every = []  # (step, rank, trained-or-masked) for every sample: false positives
    step_ms = []
    for r, (steps, _, _) in enumerate(ranks):
        for s, x in sorted(steps.items()):
            step_ms.append(x["step_ms"])
            for ident, ch, idx, masked, _loss in x["samples_drawn"]:
                sp, share = None, 0.0
                if ch == "en":
                    a, b = idx * T, idx * T + T + 1
                    for i, (s0, e0, _) in enumerate(spl):
                        o = max(0, min(b, e0) - max(a, s0))
                        if o:
                            sp, share = i, o / (T + 1)
                            break
                drawn.append((s, r, sp, share, masked, ch))
    junk = [d for d in drawn if d[3] >= 0.5]
    masked = [d for d in drawn if d[4]]
    first = {}
    for d in sorted(drawn, key=lambda d: (d[0], d[1])):
        if d[4] and d[2] is not None and d[2] not in first:
            first[d[2]] = d[0]
    late = [d for d in junk if not d[4] and d[2] in first and d[0] > first[d[2]]]
    kinds = {}
    for d in junk:
        k = kinds.setdefault(spl[d[2]][2], [0, 0])
        k[0] += 1
        k[1] += d[4]
    steps0, evals0, dirs0 = ranks[0]
    rbs = [x for x in dirs0 if x["kind"] == "rollback" and x.get("ok")]
    lost = sum(x["at_step"] - x["to_step"] for x in rbs)
    med_ms = statistics.median(step_ms) if step_ms else 0
    final = [e for e in evals0 if e["step"] == STEPS]
    curve = sorted((e["step"], e["val_loss"].get("en")) for e in evals0)
    return {"samples": len(drawn), "junk_drawn": len(junk),
            "junk_masked": sum(1 for d in junk if d[4]),
            "masked": len(masked),
            "masked_on_junk": sum(1 for d in masked if d[2] is not None),
            "late": len(late), "kinds": kinds, "rollbacks": len(rbs), "steps_lost": lost,
            "seconds_lost": lost * med_ms / 1e3 + sum((x.get("apply_ms") or 0) for x in rbs) / 1e3,
            "step_ms": med_ms, "val": final[-1]["val_loss"] if final else None, "curve": curve}


summary = {"clean": judge("clean", [])}
for s in SHARES:
    spl = splices("p" + s)
    summary["off-" + s] = judge("off-" + s, spl)
    summary["gyro-" + s] = judge("gyro-" + s, spl)
json.dump(summary, open(out + "/summary.json", "w"), indent=1)

clean = summary["clean"]
chs = sorted(clean["val"])
fp = clean["masked"] / max(1, clean["samples"])
lines = ["Clean run: %d samples, %d masked (false positives: %.3f%%), %d rollbacks." %
         (clean["samples"], clean["masked"], 100 * fp, clean["rollbacks"]), "",
         "| run | junk drawn | masked (recall) | precision | trained after first sighting | "
         "rollbacks | steps lost | s lost | " + " | ".join("val %s (vs clean)" % c for c in chs) + " |",
         "|---|---|---|---|---|---|---|---|" + "---|" * len(chs)]
for s in SHARES:
    for way in ("off", "gyro"):
        x = summary["%s-%s" % (way, s)]
        rec = x["junk_masked"] / max(1, x["junk_drawn"])
        prec = x["masked_on_junk"] / max(1, x["masked"])
        vals = " | ".join("%.4f (%+.2f%%)" % (x["val"][c], 100 * (x["val"][c] - clean["val"][c]) /
                                               clean["val"][c]) for c in chs)
        lines.append("| %s %.1f%% | %d | %d (%.1f%%) | %s | %d | %d | %d | %.1f | %s |" % (
            way, 100 * float(s), x["junk_drawn"], x["junk_masked"], 100 * rec,
            "%.1f%%" % (100 * prec) if x["masked"] else "-", x["late"], x["rollbacks"],
            x["steps_lost"], x["seconds_lost"], vals))
lines.append("")
lines.append("Recall by kind (gyro runs, drawn/masked): " + "; ".join(
    "%s%%: %s" % (100 * float(s), ", ".join("%s %d/%d" % (k, v[0], v[1]) for k, v in
                                           sorted(summary["gyro-" + s]["kinds"].items())))
    for s in SHARES))
open(out + "/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

worst = SHARES[-1]
for name in ("clean", "off-" + worst, "gyro-" + worst):
    with open("%s/%s.curve" % (out, name), "w") as f:
        for step, v in summary[name]["curve"]:
            f.write("%d %s\n" % (step, "NaN" if v is None else "%.6f" % v))
gp = ["set terminal pngcairo size 1100,550 font 'sans,11'",
      "set output '%s/data_faults.png'" % out,
      "set title 'Junk spliced into %.0f%% of the en shard: en held-out loss'" % (100 * float(worst)),
      "set xlabel 'step'", "set ylabel 'held-out loss (nats/byte)'", "set key top right",
      "set grid",
      "plot '%s/clean.curve' w lp lw 1.5 lc rgb '#2ca02c' t 'clean', "
      "'%s/off-%s.curve' w lp lw 1.5 lc rgb '#7f7f7f' t 'junk, gyro off', "
      "'%s/gyro-%s.curve' w lp lw 1.5 lc rgb '#1f77b4' t 'junk, gyro (guard + quarantine)'" %
      (out, out, worst, out, worst)]
open(out + "/plot.gp", "w").write("\n".join(gp) + "\n")
PY
gnuplot "$OUT/plot.gp"
echo "data_faults: $OUT/summary.md, $OUT/data_faults.png"
