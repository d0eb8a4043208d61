# scenario.sh: helpers for the closed loop's end-to-end scenarios (sourced after common.sh).
#   mkcfg NAME STEPS CORRUPT_ENTRY POLICY_FILE [EXTRA_SED]: writes $TMP/NAME.yaml, a 4-worker
#     job (DP=4) of a small model with a checkpoint every 10 steps; EXTRA_SED is one more sed
#     script applied to the config.
#   launch NAME [KILL_AT_STEP]: runs it under `gyroctl launch` into $TMP/NAME/.
GYROCTL=$BUILD/cli/gyroctl
[ -x "$GYROCTL" ] || fail "$GYROCTL is not built"
[ -x "$BUILD/controller/gyro-controller" ] || fail "gyro-controller is not built"
[ -x "$WORKER" ] || fail "$WORKER is not built"
LPID=
cleanup() {
  if [ -n "$LPID" ]; then
    kill -TERM "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
  fi
  if [ -n "${GY_KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# mkcfg NAME STEPS CORRUPT_ENTRY POLICY_FILE [EXTRA_SED]: writes $TMP/NAME.yaml (CORRUPT_ENTRY
# is a YAML flow map for data.corrupt or empty; POLICY_FILE empty for the built-in default).
mkcfg() {
  local name=$1 steps=$2 corrupt=$3 policy=$4 extra=${5:-} port pol=
  port=$(free_port)
  [ -n "$policy" ] && pol=", policy: $policy"
  local cfg=$TMP/$name.yaml
  write_config "$cfg" "$steps" "controller: {listen: \"127.0.0.1:$port\", world: 4, tp: 1, window: 4, heartbeat_ms: 200, lost_after_ms: 10000$pol}"
  sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
          s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
          s/^train: .*/train: {batch: 4, top_k: 16}/;
          s/^eval: .*/eval: {every: $steps, sequences: 32}/;
          s|^checkpoint: {dir: [^,]*, every: 0,|checkpoint: {dir: $TMP/$name-ckpt, every: 10,|" "$cfg"
  if [ -n "$corrupt" ]; then
    sed -i "s/^data:$/data:\n  corrupt: [$corrupt]/" "$cfg"
    grep -q 'corrupt:' "$cfg" || fail "$name: config not written as intended"
  fi
  grep -q 'every: 10,' "$cfg" && grep -q 'top_k: 16' "$cfg" || fail "$name: config not written as intended"
  if [ -n "$extra" ]; then sed -i "$extra" "$cfg"; fi
}

# launch NAME [KILL_AT_STEP]: runs the job into $TMP/NAME/; with KILL_AT_STEP, SIGKILLs worker 1
# once its records reach that step. Fails unless gyroctl exits 0, and at once if the run halts.
launch() {
  local name=$1 kill_at=${2:-} t0=$SECONDS rc=0
  "$GYROCTL" launch "$TMP/$name.yaml" --run-dir "$TMP/$name" >"$TMP/$name.out" 2>&1 &
  LPID=$!
  if [ -n "$kill_at" ]; then
    local pid= i
    for ((i = 0; i < 1200; i++)); do
      if grep -q "\"type\":\"step\",\"step\":$kill_at," "$TMP/$name/worker-1.jsonl" 2>/dev/null; then
        pid=$(sed -n 's/.*worker w1 (host [^,]*, pid \([0-9]*\), ordinal 1) joined.*/\1/p' \
          "$TMP/$name/controller.log" | tail -n 1)
        break
      fi
      kill -0 "$LPID" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$pid" ] || fail "$name: worker 1 never reached step $kill_at"
    kill -9 "$pid"
    echo "$name: SIGKILLed worker 1 (pid $pid) at its step >= $kill_at"
  fi
  # a run that halts parks its gang until an operator decides: it would never end, so a halt
  # stops the job and fails at once (bounded: 480 s for the whole run)
  local i
  for ((i = 0; i < 2400; i++)); do
    kill -0 "$LPID" 2>/dev/null || break
    if grep -q -- '-> HALTED' "$TMP/$name/controller.log" 2>/dev/null; then
      grep -- '-> HALTED' "$TMP/$name/controller.log" | head -n 1 | cut -c1-400 >&2
      kill -TERM "$LPID" 2>/dev/null || true
      wait "$LPID" 2>/dev/null || true
      LPID=
      fail "$name: the run halted"
    fi
    sleep 0.2
  done
  if kill -0 "$LPID" 2>/dev/null; then
    kill -TERM "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
    LPID=
    fail "$name: the run did not finish within 480 s"
  fi
  wait "$LPID" || rc=$?
  LPID=
  [ $rc -eq 0 ] || { tail -n 20 "$TMP/$name.out" >&2; fail "$name: gyroctl launch exited $rc"; }
  echo "$name: ran in $((SECONDS - t0)) s"
}

