# etcd restarted mid-run: one gyro-controller on a real etcd (Debian's etcd-server, loopback),
# two workers. etcd is SIGKILLed while the run trains (a checkpoint commits every 10 steps, so
# the controller must write to the journal during the outage) and started again on the same
# data folder 2 s after the controller has met the outage (at most 30 s + 2 s). The controller
# rides through: it holds the run while the store does not answer (the workers park at their
# horizon), writes what waited once etcd is back, keeps its leadership (lease TTL 90 s: its
# keep-alives every 30 s and its fence, which trusts the lease for 2/3 of the TTL after the last
# confirmation, outlast the outage), and the run finishes with every step trained and every
# committed checkpoint's manifest in the journal.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
CTL=$BUILD/controller/gyro-controller
[ -x "$CTL" ] || fail "$CTL is not built"
[ -x "$WORKER" ] || fail "$WORKER is not built"
command -v etcd >/dev/null || fail "etcd is not installed (apt-get install etcd-server)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${GY_KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
EC=$(free_port)
EP=$(free_port)
start_etcd() {
  etcd --name t --data-dir "$TMP/etcd" --listen-client-urls "http://127.0.0.1:$EC" \
    --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$EP" \
    --initial-advertise-peer-urls "http://127.0.0.1:$EP" --initial-cluster "t=http://127.0.0.1:$EP" \
    >>"$TMP/etcd.log" 2>&1 &
  ETCD_PID=$!
  PIDS+=($!)
  local i
  for ((i = 0; i < 200; i++)); do
    python3 -c 'import sys, urllib.request; sys.exit(0 if b"true" in urllib.request.urlopen(sys.argv[1], timeout=1).read() else 1)' \
      "http://127.0.0.1:$EC/health" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "etcd did not start (see $TMP/etcd.log)"
}
start_etcd

STEPS=200
PORT=$(free_port)
cfg=$TMP/run.yaml
write_config "$cfg" $STEPS "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 10000}"
sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
        s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^train: .*/train: {batch: 4, top_k: 4}/;
        s|^checkpoint: {dir: [^,]*, every: 0,|checkpoint: {dir: $TMP/ckpt, every: 10,|" "$cfg"
"$CTL" --config "$cfg" --store "etcd://127.0.0.1:$EC" --lease-ttl 90 >"$TMP/ctl.out" 2>"$TMP/ctl.err" &
CPID=$!
PIDS+=($CPID)
WP=()
for r in 0 1; do
  "$WORKER" --controller "127.0.0.1:$PORT" --worker-id "w$r" --ordinal "$r" --threads 1 \
    >"$TMP/w$r.jsonl" 2>"$TMP/w$r.log" &
  WP+=($!)
  PIDS+=($!)
done
steps_in() { grep -c '"type":"step"' "$1" 2>/dev/null || true; }
for ((i = 0; i < 600; i++)); do [ "$(steps_in "$TMP/ctl.out")" -ge 40 ] && break; sleep 0.1; done
[ "$(steps_in "$TMP/ctl.out")" -ge 40 ] || fail "the run did not get to step 40"
kill -9 "$ETCD_PID"
wait "$ETCD_PID" 2>/dev/null || true
n0=$(steps_in "$TMP/ctl.out")
echo "etcd SIGKILLed at step $n0"
# etcd stays down until the controller has met the outage (its next journal write is the
# checkpoint at the next multiple of 10; on a loaded machine that takes a while), then 2 s more
NOTICED="holding the run until the store answers|events wait in memory|the store does not answer"
for ((i = 0; i < 300; i++)); do grep -qE "$NOTICED" "$TMP/ctl.err" && break; sleep 0.1; done
grep -qE "$NOTICED" "$TMP/ctl.err" || fail "the controller never noticed the outage (30 s, $(steps_in "$TMP/ctl.out") steps)"
sleep 2
n1=$(steps_in "$TMP/ctl.out")
start_etcd
echo "etcd back after $((i / 10 + 2)) s; the controller aggregated $((n1 - n0)) steps meanwhile (it holds the run at its next journal write)"
# the controller first: it ends when the run is done (workers would wait for a dead one)
wait "$CPID" || { tail -n 3 "$TMP/ctl.err" >&2; fail "the controller exited $?"; }
for p in "${WP[@]}"; do wait "$p" || fail "a worker failed (see $TMP/w*.log)"; done
python3 - "$TMP" "$STEPS" "$EC" <<'PY' || fail "records"
import base64, json, sys, urllib.request
tmp, steps, ec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for r in range(2):
    got = {json.loads(l)["step"] for l in open("%s/w%d.jsonl" % (tmp, r)) if l.startswith('{"type":"step"')}
    if got != set(range(steps)):
        print("FAIL: rank %d missed steps %s" % (r, sorted(set(range(steps)) - got)[:10])); sys.exit(1)
# every committed checkpoint's manifest is in the journal (etcd's JSON gateway: /v3/kv/range)
committed = sorted({int(l.split("checkpoint_committed step ")[1].split(":")[0])
                    for l in open(tmp + "/ctl.err") if "checkpoint_committed step " in l})
b64 = lambda s: base64.b64encode(s.encode()).decode()
req = json.dumps({"key": b64("/gyro/test/checkpoints/"), "range_end": b64("/gyro/test/checkpoints0")}).encode()
resp = json.load(urllib.request.urlopen("http://127.0.0.1:%s/v3/kv/range" % ec, req, timeout=5))
stored = sorted(json.loads(base64.b64decode(kv["value"]))["step"] for kv in resp.get("kvs", []))
if stored != committed:
    print("FAIL: journal manifests %s != committed %s" % (stored, committed)); sys.exit(1)
print("every step trained; %d checkpoint manifests in the journal, none lost" % len(stored))
PY
echo PASS
