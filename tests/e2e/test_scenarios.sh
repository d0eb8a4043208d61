# The closed loop's end-to-end scenarios (issue 5), each a whole job under `gyroctl launch`: a
# real gyro-controller and four CPU gyro-workers (DP=4, tp 1, --threads 1, Gloo on loopback), a
# small model (2 layers, 64 channels, 4 heads, context 64), batch 4 per rank with top_k 16 (the
# top samples are merged over the DP group: every trained id is listed in the step records), a checkpoint every 10 steps, 150 steps. With no
# skips the ids of step s are [16s, 16s+16).
# The corruptions start at step 95: before that the detectors' default 64-step window still
# holds this small model's descent from its initial loss (at step 60 the code baseline's MAD is
# 0.47, a threshold of 4.2 nats, and 6.7 against a median of 3.4 did not fire).
#  1. random bytes in `code` for the samples of steps 95-97: the per-sample guard masks them
#     before the backward pass (a step with too many of them may also climb the ladder: trigger
#     "masked", a rollback that skips them); none is ever trained; the run finishes and its final
#     validation loss per channel is within 2% of the clean run's (same seed, run too).
#  2. one token repeated in `zh` for the samples of step 95: the same, for a drop.
#  4. worker 1 SIGKILLed at step ~65: gyroctl restarts it, the controller rolls back (no skip) to
#     the newest clean committed checkpoint, the gang re-forms (generation 2), the run finishes.
#  5. a clean run of 300 steps (and the clean reference of 1): no rollback, no suspected spike
#     that did not recover by itself, and the guard masks at most the policy's false-positive
#     budget (guard.budget).
# Scenario 3 (a learning rate far too high) is tested elsewhere. Every scenario runs under the
# shipped default policy (no policy file).
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
source "$GY_SOURCE_DIR/tests/lib/scenario.sh"

# check NAME MODE [ARGS]: the assertions, in Python over the controller's log and the workers'
# records.
check() {
  python3 - "$TMP" "$@" <<'PY'
import json, re, sys
tmp, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
d = "%s/%s" % (tmp, name)
WORLD, STEPS = 4, int(sys.argv[4])

def fail(msg):
    print("FAIL: %s: %s" % (name, msg))
    sys.exit(1)

def events_of(path):
    ev = []
    for line in open(path):
        try:
            m = re.match(r"event (\d+) (\S+) step (-?\d+): (.*)",
                         json.loads(line).get("msg", ""), re.S)
        except (ValueError, AttributeError):
            continue
        if m:
            ev.append((m.group(2), int(m.group(3)), m.group(4)))
    return ev

events = events_of(d + "/controller.log")
for k, s, t in events:
    if k in ("spike_suspected", "rollback", "skip", "resumed", "recovered_spike", "halted",
             "alert", "anomaly", "worker_lost", "gang_formed"):
        print("  event %-16s step %4d: %s" % (k, s, t[:200]))
kinds = [k for k, _, _ in events]
if "halted" in kinds:
    fail("the run halted")
recs = [[json.loads(l) for l in open("%s/worker-%d.jsonl" % (d, r)) if l.startswith("{")]
        for r in range(WORLD)]
rbs = [[x for x in rs if x["type"] == "directive" and x["kind"] == "rollback"] for rs in recs]
for x in rbs[0]:
    print("  rank 0 rollback seq %d at step %d to step %d (%d steps lost), skip %s: %s" %
          (x["seq"], x["at_step"], x["to_step"], x["at_step"] - x["to_step"], x["skip"],
           x["reason"]))
if not all(x["ok"] for r in range(WORLD) for x in rbs[r]):
    fail("a rollback failed")

# every rank trained every step; the final curve is the last record of each step
for r in range(WORLD):
    got = {x["step"] for x in recs[r] if x["type"] == "step"}
    if got != set(range(STEPS)):
        fail("rank %d did not train steps %s" % (r, sorted(set(range(STEPS)) - got)[:10]))
evals = [[x for x in recs[r] if x["type"] == "eval" and x["step"] == STEPS] for r in range(WORLD)]
if not evals[0]:
    fail("no final evaluation")
val = evals[0][-1]["val_loss"]
print("  final val loss: " + ", ".join("%s %.4f" % (c, v) for c, v in sorted(val.items())))
json.dump(val, open(d + "/val.json", "w"))
if '"type":"done"' not in open(d + "/controller.log").read().replace(" ", ""):
    fail("the controller never recorded the run as done")

if mode == "clean":
    # no repair: no rollback, no halt; a suspected spike must have recovered by itself (a
    # transient gradient-norm jump is watched, not repaired: a recovered_spike event)
    if rbs[0] or "halted" in kinds:
        fail("a clean run rolled back or halted (a false positive)")
    if kinds.count("spike_suspected") != kinds.count("recovered_spike"):
        fail("a spike suspected on clean data did not recover by itself")
    steps = [x for x in recs[0] if x["type"] == "step"]
    n = sum(x["samples"] for x in steps)
    m = sum(sum(x["masked_ch"].values()) for x in steps)
    if m > 0.005 * n:  # guard.budget of the default policy
        fail("the guard masked %d of %d clean samples (%.2f%%), over its 0.5%% budget" %
             (m, n, 100.0 * m / n))
    print("%s: clean, %d steps, no repair (%d transient spikes watched), %d of %d samples masked"
          % (name, STEPS, kinds.count("spike_suspected"), m, n))
    sys.exit(0)

if mode == "guarded":
    # the guard's: every poisoned sample that was drawn was masked before the backward pass
    # (never trained); a step with too many of them may climb the ladder (trigger "masked"),
    # and the ranks then agree; the run finishes within 2% of the clean run's held-out loss
    ch, lo, hi, ref = sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
    key = lambda x: (x["seq"], x["at_step"], x["to_step"], x["skip"], x["reason"])
    for r in range(1, WORLD):
        if [key(x) for x in rbs[r]] != [key(x) for x in rbs[0]]:
            fail("ranks 0 and %d applied different rollbacks" % r)
    drawn = masked = 0
    for r in range(WORLD):
        for x in recs[r]:
            if x["type"] != "step":
                continue
            listed = {t["id"]: t for t in x["top"] + x.get("bottom", [])}
            gone = {m["id"]: m for m in x["masked"]}
            if len(listed) != x["samples"] - sum(x["masked_ch"].values()):
                fail("rank %d step %d lists %d trained ids and masked %d of %d" %
                     (r, x["step"], len(listed), sum(x["masked_ch"].values()), x["samples"]))
            for t in listed.values():
                if lo <= t["id"] < hi and t["channel"] == ch:
                    fail("rank %d step %d trained poisoned id %d" % (r, x["step"], t["id"]))
            if r == 0:
                for m in gone.values():
                    if lo <= m["id"] < hi and m["channel"] == ch:
                        masked += 1
    if not masked:
        fail("no poisoned id was masked: the corruption did not happen")
    print("  %d poisoned %s samples masked by the guard (as drawn, every rollback's replay "
          "included), none trained" % (masked, ch))
    for k, _, t in events:
        if k == "rollback" and "-> ROLLBACK" in t and "masked at step" not in t:
            fail("a rollback not for masked samples: %s" % t[:200])
    if ref != "-":
        clean = json.load(open("%s/%s/val.json" % (tmp, ref)))
        for c, v in sorted(clean.items()):
            rel = (val[c] - v) / v
            print("  %s val loss %.4f vs clean %.4f (%+.2f%%)" % (c, val[c], v, 100 * rel))
            if abs(rel) > 0.02:
                fail("%s final val loss %.4f is %.2f%% from the clean run's %.4f" %
                     (c, val[c], 100 * rel, v))
    print("%s: %d rollback(s), %d steps rolled back, run done at step %d" %
          (name, len(rbs[0]), sum(x["at_step"] - x["to_step"] for x in rbs[0]), STEPS))
    sys.exit(0)

if mode == "kill":
    if "worker_lost" not in kinds:
        fail("no worker_lost event")
    if "restarting it" not in open(tmp + "/" + name + ".out").read():
        fail("gyroctl did not restart the killed worker")
    lost = [i for i, (k, _, _) in enumerate(events) if k == "worker_lost"][0]
    # the newest clean committed checkpoint before the loss
    ck = [s for k, s, t in events[:lost] if k == "checkpoint" and "committed, clean" in t]
    if not ck:
        fail("no clean checkpoint committed before the worker was lost")
    gens = [t for k, _, t in events[lost:] if k == "gang_formed"]
    if not gens or "generation 1 " in gens[0]:
        fail("the gang did not re-form with a new generation: %s" % gens)
    # the restore is the re-formed gang's start (no ROLLBACK directive, no skip)
    if "start step %d " % ck[-1] not in gens[0]:
        fail("the gang re-formed from another step than %d: %s" % (ck[-1], gens[0]))
    rb = [s for k, s, t in events if k == "rollback" and "lost" in t]
    if rb != [ck[-1]]:
        fail("want one rollback for the lost worker, to step %d: %s" % (ck[-1], rb))
    if any(x["skip"] for r in range(WORLD) for x in rbs[r]):
        fail("a lost worker's rollback skipped data")
    print("%s: worker lost, rolled back to step %d (%d steps lost), re-formed: %s; done at %d" %
          (name, ck[-1], [s for k, s, _ in events if k == "worker_lost"][0] - ck[-1], gens[0][:60],
           STEPS))
    sys.exit(0)
fail("unknown mode " + mode)
PY
}

T0=$SECONDS
# the clean reference for 1 (and a first check of no false positives)
mkcfg clean 150 "" ""
launch clean
check clean clean 150 || fail "clean reference"

# 1. random bytes in code for the samples of steps 95-97, the default policy
mkcfg code 150 "{channel: code, from: 1520, to: 1568, kind: random_bytes}" ""
launch code
check code guarded 150 code 1520 1568 clean || fail "scenario 1"

# 2. one token repeated in zh for the samples of step 95, the default policy
mkcfg zh 150 "{channel: zh, from: 1520, to: 1536, kind: repeat}" ""
launch zh
check zh guarded 150 zh 1520 1536 - || fail "scenario 2"

# 4. a worker SIGKILLed mid-run
mkcfg kill 150 "" ""
launch kill 65
check kill kill 150 || fail "scenario 4"

# 5. a clean run of 300 steps: no false positives
mkcfg long 300 "" ""
launch long
check long clean 300 || fail "scenario 5"
echo "all scenarios in $((SECONDS - T0)) s"
echo "PASS"
