# gang.sh: a data/tensor-parallel gang of standalone gyro-workers (sourced after common.sh).
#   run_gang NAME WORLD TP BATCH [WORKER_ARGS...]: writes $TMP/NAME.yaml (write_config with
#     $STEPS steps, BATCH sequences per data-parallel rank, checkpoints in $TMP/ckpt_NAME, then
#     the sed script $GANG_SED if set), starts WORLD workers on a file rendezvous with tp TP
#     (collective timeout $GANG_TIMEOUT_MS, default 20000), each printing to $TMP/NAME.R.jsonl
#     and $TMP/NAME.R.err, and fails unless every one exits 0.
run_gang() {
  local name=$1 world=$2 tp=$3 batch=$4
  shift 4
  write_config "$TMP/$name.yaml" "$STEPS"
  sed -i "s/train: {batch: 8,/train: {batch: $batch,/; s#$TMP/ckpt#$TMP/ckpt_$name#" "$TMP/$name.yaml"
  if [ -n "${GANG_SED:-}" ]; then sed -i "$GANG_SED" "$TMP/$name.yaml"; fi
  local pids=() r
  mkdir -p "$TMP/rdzv_$name"
  for ((r = 0; r < world; r++)); do
    OMP_NUM_THREADS=1 "$WORKER" --standalone --config "$TMP/$name.yaml" --threads 1 \
      --rank $r --world "$world" --tp "$tp" --rdzv "file:$TMP/rdzv_$name" \
      --comm-timeout "${GANG_TIMEOUT_MS:-20000}" "$@" >"$TMP/$name.$r.jsonl" 2>"$TMP/$name.$r.err" &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [ $rc -eq 0 ] || { tail -n 3 "$TMP/$name".*.err >&2; fail "gang $name failed"; }
}
