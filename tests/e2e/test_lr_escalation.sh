# Scenario 3 of the closed loop: a learning rate far too high for part of the run
# (schedule.boost multiplies it from step 95 to the end; a rollback replays it, since it belongs
# to the configuration, so only the controller's knob changes can tame it). The same 4-worker
# job as tests/e2e/test_scenarios.sh, twice, with the default policy:
#  a. 20x: spikes recur after each rollback, the ladder climbs to the rungs that change
#     hyper-parameters (grad_clip, eps, shallow scale), and the run recovers and finishes.
#  b. 300x: no rung tames it (the exploding losses also make the guard mask most samples of a
#     step: trigger "masked" climbs the same ladder); after the last rung the run goes to
#     HALTED with an alert, the
#     gang is parked (paused) and `gyroctl status` says HALTED; the operator stops it.
# In both: never more rollbacks than rungs (no loop), every rank applied the same directives.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
source "$GY_SOURCE_DIR/tests/lib/scenario.sh"

boost() { echo "s/^schedule: {\(.*\)}/schedule: {\1, boost: {from: 95, to: 150, factor: $1}}/"; }

# check NAME MODE: the assertions over the controller's log and the workers' records.
check() {
  python3 - "$TMP" "$@" <<'PY'
import json, re, sys
tmp, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
d = "%s/%s" % (tmp, name)
WORLD, STEPS, RUNGS = 4, 150, 4

def fail(msg):
    print("FAIL: %s: %s" % (name, msg))
    sys.exit(1)

events = []
for line in open(d + "/controller.log"):
    try:
        m = re.match(r"event (\d+) (\S+) step (-?\d+): (.*)", json.loads(line).get("msg", ""), re.S)
    except (ValueError, AttributeError):
        continue
    if m:
        events.append((m.group(2), int(m.group(3)), m.group(4)))
for k, s, t in events:
    if k in ("spike_suspected", "rollback", "recovered_spike", "halted", "alert"):
        print("  event %-16s step %4d: %s" % (k, s, t[:160]))
kinds = [k for k, _, _ in events]
recs = [[json.loads(l) for l in open("%s/worker-%d.jsonl" % (d, r)) if l.startswith("{")]
        for r in range(WORLD)]
rbs = [[x for x in rs if x["type"] == "directive" and x["kind"] == "rollback"] for rs in recs]
key = lambda x: (x["seq"], x["at_step"], x["to_step"], x["skip"], x["reason"])
for r in range(1, WORLD):
    if [key(x) for x in rbs[r]] != [key(x) for x in rbs[0]]:
        fail("ranks 0 and %d applied different rollbacks" % r)
if not all(x["ok"] for r in range(WORLD) for x in rbs[r]):
    fail("a rollback failed")
n = len(rbs[0])
print("  %d rollbacks: %s" % (n, "; ".join(x["reason"] for x in rbs[0])))
if n > RUNGS:
    fail("%d rollbacks for one region, more than the ladder's %d rungs: a loop" % (n, RUNGS))
if [s for k, s, _ in events if k == "spike_suspected" and s < 95]:
    fail("a spike was suspected before the learning rate was raised")
# the ladder reached hyper-parameter changes, and every rank applied them
if not any("grad_clip x0.5" in x["reason"] for x in rbs[0]):
    fail("the ladder never reached the rung that changes hyper-parameters")
if not re.search(r"escalated to rung [34]", " ".join(t for k, _, t in events if k == "alert")):
    fail("no alert tells that the repair escalated to a knob rung")
if mode == "recover":
    if "halted" in kinds:
        fail("the run halted; it should recover at 20x")
    for r in range(WORLD):
        got = {x["step"] for x in recs[r] if x["type"] == "step"}
        if got != set(range(STEPS)):
            fail("rank %d did not train steps %s" % (r, sorted(set(range(STEPS)) - got)[:10]))
    ev = [x for x in recs[0] if x["type"] == "eval" and x["step"] == STEPS]
    if not ev:
        fail("no final evaluation")
    val = ev[-1]["val_loss"]
    print("  final val loss: " + ", ".join("%s %.4f" % (c, v) for c, v in sorted(val.items())))
    if not all(v < 4.0 for v in val.values()):
        fail("the run finished but did not recover: %s" % val)
    print("%s: recovered after %d rollbacks (last: %s), done at step %d" %
          (name, n, rbs[0][-1]["reason"], STEPS))
elif mode == "halt":
    if "halted" not in kinds:
        fail("no halted event")
    h = [t for k, _, t in events if k == "halted"][0]
    if "exhausted" not in h:
        fail("the halt does not say the ladder is exhausted: " + h)
    if not any(k == "alert" and "halted" in t for k, _, t in events):
        fail("no alert for the halt")
    if n != RUNGS:
        fail("want exactly %d rollbacks (one per rung) before the halt, got %d" % (RUNGS, n))
    print("%s: halted after %d rollbacks with an alert" % (name, n))
PY
}

T0=$SECONDS
# a. 20x (on the shipped, filtered corpora 20x recovers on rung 3, 25x on rung 4, 30x exhausts
# the ladder): recovers once the knobs change
mkcfg lr20 150 "" "" "$(boost 20)"
grep -q 'boost: {from: 95' "$TMP/lr20.yaml" || fail "lr20: config not written as intended"
launch lr20
check lr20 recover || fail "scenario 3a"

# b. 300x: halts with an alert, parked until the operator decides
mkcfg lr300 150 "" "" "$(boost 300)"
port=$(sed -n 's/.*listen: "127.0.0.1:\([0-9]*\)".*/\1/p' "$TMP/lr300.yaml")
"$GYROCTL" launch "$TMP/lr300.yaml" --run-dir "$TMP/lr300" >"$TMP/lr300.out" 2>&1 &
LPID=$!
halted=
for ((i = 0; i < 3000; i++)); do
  if grep -q -- '-> HALTED' "$TMP/lr300/controller.log" 2>/dev/null; then
    halted=1
    break
  fi
  kill -0 "$LPID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$halted" ] || { tail -n 20 "$TMP/lr300.out" >&2; fail "lr300: the run never halted"; }
# the gang parks at the granted horizon (the PAUSE directive applies there, like every
# directive), then stays parked: the status says HALTED and no step runs
for ((i = 0; i < 600; i++)); do
  grep -q 'PAUSE applied' "$TMP/lr300/controller.log" && break
  sleep 0.1
done
grep -q 'PAUSE applied' "$TMP/lr300/controller.log" || fail "lr300: the gang was never parked"
sleep 1
status=
for ((i = 0; i < 100; i++)); do
  status=$("$GYROCTL" --controller "127.0.0.1:$port" status 2>&1) || true
  grep -q 'HALTED' <<<"$status" && break
  sleep 0.1
done
grep -q 'HALTED' <<<"$status" || { echo "$status" >&2; fail "lr300: gyroctl status does not say HALTED"; }
last1=$(grep -c '"type":"step"' "$TMP/lr300/worker-0.jsonl")
sleep 2
last2=$(grep -c '"type":"step"' "$TMP/lr300/worker-0.jsonl")
[ "$last1" = "$last2" ] || fail "lr300: workers kept training while halted ($last1 -> $last2 steps)"
"$GYROCTL" --controller "127.0.0.1:$port" stop >/dev/null || fail "lr300: gyroctl stop failed"
rc=0
wait "$LPID" || rc=$?
LPID=
echo "lr300: gyroctl launch exited $rc after the operator's stop"
check lr300 halt || fail "scenario 3b"
echo "scenario 3 in $((SECONDS - T0)) s"
echo "PASS"
