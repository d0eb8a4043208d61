# test_hung_worker: liveness is progress, not a heartbeat. A job of two workers under gyroctl
# launch; mid-run the trainer thread of worker 1 is stopped alone (ptrace: its heartbeat thread
# goes on beating, its session stays open), so its peer waits for it in the all-reduce. The
# product, with nothing told in advance, finds the stuck rank — the controller's hang rule (a
# worker_hung event with the evidence, the session ended "declared hung"), or, should the stop
# land inside a collective, the worker's own watchdog — the stuck process ends, launch starts it
# again, the gang re-forms from the newest checkpoint and the run finishes (exit 0) with every
# step trained. The hang floor is set to 5 s here (the default, 60 s, would only make the test
# slower); the rest is the shipped configuration.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
GYROCTL=$BUILD/cli/gyroctl
[ -x "$GYROCTL" ] || fail "$GYROCTL is not built"
LPID=
TPID=
cleanup() {
  if [ -n "$TPID" ]; then kill "$TPID" 2>/dev/null || true; fi
  if [ -n "$LPID" ]; then kill -TERM "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  if [ -n "${GY_KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
PORT=$(free_port)
STEPS=600
cfg=$TMP/run.yaml
small_job_config "$cfg" $STEPS "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 20000, hang_floor_ms: 5000}"
sed -i "s|^checkpoint: {dir: [^,]*, every: 0,|checkpoint: {dir: $TMP/ckpt, every: 10,|" "$cfg"
grep -q 'every: 10,' "$cfg" || fail "config not written"

"$GYROCTL" launch "$cfg" --run-dir "$TMP/run" >"$TMP/launch.out" 2>&1 &
LPID=$!
# wait until the run is well under way (a checkpoint committed, steps going on)
wait_worker_steps "$TMP/run" 1 40 "$LPID" || { tail -n 20 "$TMP/launch.out" >&2; fail "the run did not get going"; }
wpid=$(pgrep -f "gyro-worker --controller 127.0.0.1:$PORT --worker-id w1 " | head -n 1)
[ -n "$wpid" ] || fail "cannot find worker 1's pid"
# Stop the trainer (the main thread) alone: PTRACE_SEIZE + PTRACE_INTERRUPT stop that one
# thread; the others (heartbeats, gRPC) run on. The tracer stays until the process is gone.
python3 - "$wpid" >"$TMP/tracer.out" 2>&1 <<'PY' &
import ctypes, os, sys, time
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0 or libc.ptrace(PTRACE_INTERRUPT, pid, None, None) != 0:
    print("ptrace failed: errno %d" % ctypes.get_errno()); sys.exit(1)
print("stopped the trainer thread of pid %d" % pid, flush=True)
t0 = time.time()
while time.time() - t0 < 300:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    try:
        os.waitpid(pid, os.WNOHANG | 0x40000000)  # __WALL: reap the tracee's stops and its end
    except ChildProcessError:
        pass
    time.sleep(0.1)
print("the process is gone after %.1f s" % (time.time() - t0), flush=True)
PY
TPID=$!
for ((i = 0; i < 100; i++)); do
  grep -q "stopped the trainer" "$TMP/tracer.out" && break
  kill -0 "$TPID" 2>/dev/null || break
  sleep 0.1
done
grep -q "stopped the trainer" "$TMP/tracer.out" || { cat "$TMP/tracer.out" >&2; fail "could not stop the trainer thread"; }
echo "stopped the trainer thread of worker 1 (pid $wpid)"
rc=0
wait "$LPID" || rc=$?
LPID=
[ $rc -eq 0 ] || { tail -n 30 "$TMP/launch.out" >&2; fail "gyroctl launch exited $rc"; }
wait "$TPID" 2>/dev/null || true
TPID=
cat "$TMP/tracer.out"
grep -q "the process is gone" "$TMP/tracer.out" || fail "the stuck worker's process did not end"
grep -q "worker 1 .*restarting it" "$TMP/launch.out" || fail "launch did not start worker 1 again"
hung=$(grep -c '"worker_hung"\|event [0-9]* worker_hung' "$TMP/run/controller.log" || true)
dog=$(grep -c "watchdog: the trainer has been stuck" "$TMP/run/worker-1.log" || true)
[ "${hung:-0}" -ge 1 ] || [ "${dog:-0}" -ge 1 ] || fail "neither the controller nor the worker's watchdog found the hang"
[ "${hung:-0}" -ge 1 ] && grep -m1 "worker_hung" "$TMP/run/controller.log" | cut -c1-300
python3 - "$TMP" "$STEPS" <<'PY' || fail "steps"
import json, sys
tmp, n = sys.argv[1], int(sys.argv[2])
for r in range(2):
    rs = [json.loads(l) for l in open("%s/run/worker-%d.jsonl" % (tmp, r)) if l.startswith("{")]
    steps = {x["step"] for x in rs if x.get("type") == "step"}
    if steps != set(range(n)):
        print("FAIL: rank %d missed steps %s" % (r, sorted(set(range(n)) - steps)[:10])); sys.exit(1)
print("  every step of both ranks trained")
PY
echo "a hung trainer thread: found, its process replaced, the run finished"
