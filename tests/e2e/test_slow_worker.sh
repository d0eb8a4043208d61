# test_slow_worker: stragglers are judged on their own work, not on the step time every rank of a
# synchronous gang shares. A job of two workers under gyroctl launch; mid-run worker 1 is slowed
# from outside (a punisher stops it three quarters of the time), so its peer waits for it in the
# all-reduce and both report the same step time. The controller, told nothing,
# names rank 1 a straggler (a `straggler` event with its compute time against the other's),
# never rank 0, and the run finishes (exit 0).
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
GYROCTL=$BUILD/cli/gyroctl
[ -x "$GYROCTL" ] || fail "$GYROCTL is not built"
LPID=
PPID_=
cleanup() {
  if [ -n "$PPID_" ]; then kill "$PPID_" 2>/dev/null || true; fi
  if [ -n "$LPID" ]; then kill -TERM "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  if [ -n "${GY_KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
PORT=$(free_port)
STEPS=400
cfg=$TMP/run.yaml
small_job_config "$cfg" $STEPS "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 20000}"

"$GYROCTL" launch "$cfg" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 &
LPID=$!
wait_worker_steps "$TMP/run" 1 30 "$LPID" || { tail -n 20 "$TMP/launch.out" >&2; fail "the run did not get going"; }
wpid=$(pgrep -f "gyro-worker --controller 127.0.0.1:$PORT --worker-id w1 " | head -n 1)
[ -n "$wpid" ] || fail "cannot find worker 1's pid"
# The punisher: worker 1 runs 10 ms, then stands 30 ms (SIGSTOP, SIGCONT), until it is gone:
# its steps take several times as long, most of it inside its own work; worker 0 waits for it
# in the all-reduce, so both report the same step time.
python3 - "$wpid" <<'PY' &
import os, signal, sys, time
pid = int(sys.argv[1])
try:
    while True:
        time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.03)
        os.kill(pid, signal.SIGCONT)
except ProcessLookupError:
    pass
finally:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
PY
PPID_=$!
echo "slowing worker 1 (pid $wpid)"
rc=0
wait "$LPID" || rc=$?
LPID=
kill "$PPID_" 2>/dev/null || true
wait "$PPID_" 2>/dev/null || true
PPID_=
[ $rc -eq 0 ] || { tail -n 30 "$TMP/launch.out" >&2; fail "gyroctl launch exited $rc"; }
grep "straggler" "$TMP/run/controller.log" | head -n 3 | cut -c1-300
grep -q "event [0-9]* straggler .*rank 1 computes" "$TMP/run/controller.log" ||
  fail "rank 1, slowed, was not named a straggler"
if grep -q "event [0-9]* straggler .*rank 0 computes" "$TMP/run/controller.log"; then
  fail "rank 0, which only waited for rank 1, was named a straggler"
fi
echo "a slow rank: named on its compute time, its peer not blamed, the run finished"
