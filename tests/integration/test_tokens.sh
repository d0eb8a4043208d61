# Bearer and join tokens, end to end with a real controller, a real worker and gyroctl:
#  1. tokens come from files and the environment (GYRO_OPERATOR_TOKEN, GYRO_JOIN_TOKEN,
#     --join-token-file, --operator-token-file, gyroctl --token-file); bad token files and a
#     config giving a token twice are refused at start (exit 2, the file or key named);
#  2. a worker with a wrong or missing join token is refused (exit 2, UNAUTHENTICATED) and an
#     event names it; the right token from the environment joins;
#  3. operator calls with a wrong or missing token are UNAUTHENTICATED (exit 1), each is an
#     event, and nothing changes: the status before and after is identical (the gang is paused
#     so that it stands still);
#  4. neither token, nor the wrong ones sent, appears in any line the controller, the worker or
#     gyroctl printed, nor in the events; the processes' command lines hold no token.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
G=$BUILD/cli/gyroctl
CTL=$BUILD/controller/gyro-controller
for b in "$G" "$CTL" "$WORKER"; do [ -x "$b" ] || fail "$b not built"; done

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

rnd() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
OP_TOKEN="op-$(rnd)"
JOIN_TOKEN="join-$(rnd)"
BAD_OP="badop-$(rnd)"
BAD_JOIN="badjoin-$(rnd)"
L=$TMP/logs # every line any process prints goes here
mkdir -p "$L"
printf '%s\n' "$JOIN_TOKEN" >"$TMP/join.token"
printf '%s' "$OP_TOKEN" >"$TMP/op.token"

write_config "$TMP/base.yaml" 100000
sed -i 's/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^train: .*/train: {batch: 4, top_k: 2}/' "$TMP/base.yaml"
ctl_config() { # ctl_config FILE EXTRA-YAML
  cp "$TMP/base.yaml" "$1"
  printf 'controller: {listen: "127.0.0.1:0", world: 1, heartbeat_ms: 200%s}\n' "$2" >>"$1"
}
N=0
expect_rc() { # expect_rc WANT CMD...: output kept in $L, the last one also in $TMP/out, $TMP/err
  local want=$1 rc=0
  shift
  N=$((N + 1))
  "$@" >"$L/cmd$N.out" 2>"$L/cmd$N.err" || rc=$?
  cp "$L/cmd$N.out" "$TMP/out"
  cp "$L/cmd$N.err" "$TMP/err"
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, want $want: $(cat "$TMP/out" "$TMP/err")"
}
err_has() { grep -qF -- "$1" "$TMP/err" || fail "stderr lacks '$1': $(cat "$TMP/err")"; }

# ---- 1. bad token sources: exit 2 at start
ctl_config "$TMP/plain.yaml" ""
expect_rc 2 timeout 10 "$CTL" --config "$TMP/plain.yaml" --operator-token-file "$TMP/none.token"
err_has "$TMP/none.token"
: >"$TMP/empty.token"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/plain.yaml" --join-token-file "$TMP/empty.token"
err_has "$TMP/empty.token"
err_has "empty"
printf 'two words\n' >"$TMP/space.token"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/plain.yaml" --join-token-file "$TMP/space.token"
err_has "printable ASCII"
ctl_config "$TMP/twice.yaml" ", operator_token: abc, operator_token_file: '$TMP/op.token'"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/twice.yaml"
err_has "controller.operator_token_file"
expect_rc 2 "$G" --token-file "$TMP/none.token" status
err_has "$TMP/none.token"
expect_rc 2 timeout 10 "$WORKER" --controller 127.0.0.1:1 --join-token-file "$TMP/empty.token"
err_has "$TMP/empty.token"
GYRO_JOIN_TOKEN="a b" expect_rc 2 timeout 10 "$WORKER" --controller 127.0.0.1:1
err_has "join token"

# ---- the controller: operator token from the environment, join token from a file
ctl_config "$TMP/run.yaml" ""
GYRO_OPERATOR_TOKEN=$OP_TOKEN "$CTL" --config "$TMP/run.yaml" --grace-ms 200 \
  --join-token-file "$TMP/join.token" >"$L/ctl.out" 2>"$L/ctl.err" &
CPID=$!
PIDS+=($CPID)
ADDR=
for _ in $(seq 1 600); do
  ADDR=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: j = json.loads(l)
    except ValueError: continue
    if j.get("type") == "listening": print("127.0.0.1:%d" % j["port"])' "$L/ctl.out")
  [ -n "$ADDR" ] && break
  kill -0 "$CPID" 2>/dev/null || fail "controller died: $(cat "$L/ctl.err")"
  sleep 0.1
done
[ -n "$ADDR" ] || fail "the controller does not listen"
A=(--controller "$ADDR" --timeout 10000)
GOOD=(--token-file "$TMP/op.token")

# ---- 2. join tokens
expect_rc 2 timeout 20 "$WORKER" --controller "$ADDR" --worker-id nojoin
err_has "missing join token"
expect_rc 2 timeout 20 "$WORKER" --controller "$ADDR" --worker-id badjoin --join-token "$BAD_JOIN"
err_has "wrong join token"
grep -q "worker nojoin: missing join token" "$L/ctl.err" || fail "no event for the missing token"
grep -q "worker badjoin: wrong join token" "$L/ctl.err" || fail "no event for the wrong token"

GYRO_JOIN_TOKEN=$JOIN_TOKEN "$WORKER" --controller "$ADDR" --worker-id w0 --threads 1 \
  --quiet-steps >"$L/worker.out" 2>"$L/worker.err" &
WPID=$!
PIDS+=($WPID)

# Pause the gang once it trains, so that the status stands still.
paused=0
for _ in $(seq 1 200); do
  if "$G" "${A[@]}" "${GOOD[@]}" pause >>"$L/pause.out" 2>>"$L/pause.err"; then
    paused=1
    break
  fi
  sleep 0.1
done
[ "$paused" = 1 ] || fail "cannot pause: $(tail -n 5 "$L/pause.err")"
status_json() { # the status without the one field that moves with the clock
  "$G" "${A[@]}" "${GOOD[@]}" --json status >"$L/st$1.json" 2>>"$L/st.err" ||
    fail "status with the token failed: $(cat "$L/st.err")"
  python3 -c 'import json,sys
j = json.load(open(sys.argv[1]))
for r in j.get("ranks", []): r.pop("last_report_age_ms", None)
print(json.dumps(j, sort_keys=True))' "$L/st$1.json"
}
for _ in $(seq 1 600); do
  s=$(status_json 0)
  case "$s" in *'"state": "PAUSED"'*) break ;; esac
  sleep 0.1
done
case "$s" in *'"state": "PAUSED"'*) ;; *) fail "not PAUSED: $s" ;; esac
BEFORE=$(status_json 1)
events_before=$("$G" "${A[@]}" "${GOOD[@]}" --json events | wc -l)

# ---- 3. operator calls without the right token: UNAUTHENTICATED, an event each, no change
for args in "status" "resume" "stop" "set lr_scale=0.5" "checkpoint" "events" "policy show" \
  "rollback --to 0"; do
  # shellcheck disable=SC2086
  expect_rc 1 "$G" "${A[@]}" $args
  err_has "UNAUTHENTICATED"
  # shellcheck disable=SC2086
  expect_rc 1 "$G" "${A[@]}" --token "$BAD_OP" $args
  err_has "UNAUTHENTICATED"
done
GYRO_OPERATOR_TOKEN=$BAD_OP expect_rc 1 "$G" "${A[@]}" resume
err_has "UNAUTHENTICATED"
printf '%s\n' "$BAD_OP" >"$TMP/bad.token"
expect_rc 1 "$G" "${A[@]}" --token-file "$TMP/bad.token" watch
err_has "UNAUTHENTICATED"
sleep 0.5 # a wrongly accepted resume would have moved the gang by now
AFTER=$(status_json 2)
[ "$BEFORE" = "$AFTER" ] || fail "refused calls changed the status:
before $BEFORE
after  $AFTER"
"$G" "${A[@]}" "${GOOD[@]}" --json events >"$L/events.json" || fail "events with the token failed"
nref=$(grep -c '"refused"' "$L/events.json" || true)
[ "$nref" -ge 18 ] || fail "only $nref refused events: $(tail -n 5 "$L/events.json")"
[ "$(wc -l <"$L/events.json")" -gt "$events_before" ] || fail "no new events"
# The token works from the environment and from --token too.
GYRO_OPERATOR_TOKEN=$OP_TOKEN expect_rc 0 "$G" "${A[@]}" status
grep -q PAUSED "$TMP/out" || fail "status with the token from the environment: $(cat "$TMP/out")"

# ---- 4. no process shows a token on its command line
for p in $CPID $WPID; do
  tr '\0' ' ' </proc/$p/cmdline >"$TMP/cmdline"
  for t in "$OP_TOKEN" "$JOIN_TOKEN"; do
    grep -qF "$t" "$TMP/cmdline" && fail "pid $p shows a token on its command line"
  done
done

# Stop the run with the token; then no printed line may hold any token.
expect_rc 0 "$G" "${A[@]}" "${GOOD[@]}" stop
rc=0
timeout 60 tail --pid="$WPID" -f /dev/null || rc=$?
[ "$rc" -eq 0 ] || fail "the worker did not stop"
wait "$WPID" || fail "the worker exited $?: $(tail -n 5 "$L/worker.err")"
kill -TERM "$CPID" 2>/dev/null || true
wait "$CPID" || true
for t in "$OP_TOKEN" "$JOIN_TOKEN" "$BAD_OP" "$BAD_JOIN"; do
  if grep -rlF -- "$t" "$L" >"$TMP/leak"; then
    fail "a token appears in: $(cat "$TMP/leak")"
  fi
done
[ "$(cat "$L"/*.err "$L"/*.out | wc -l)" -gt 50 ] || fail "too little output captured to judge"
echo "ok: tokens from files and the environment, refusals change nothing, no token printed"
