# test_include_dirs: include directories are per target. A probe compiled with the exact flags
# of one module's source can include that module's headers and those of the libraries its target
# links, and nothing else: the controller cannot include the trainer's headers, the run config
# module cannot include the controller's, the trainer cannot include the controller's.
source "$GY_SOURCE_DIR/tests/lib/common.sh"

db="$BUILD/compile_commands.json"
[[ -f $db ]] || fail "no $db (CMAKE_EXPORT_COMPILE_COMMANDS)"
tmp=$TMP

# The compile command of source $1 (a path relative to the repository root), with the source
# file and the output replaced by a probe that includes header $2. Returns the compiler's status.
probe() {
  local src="$GY_SOURCE_DIR/$1" header=$2
  local cmd
  cmd=$(jq -r --arg f "$src" '.[] | select(.file == $f) | .command' "$db" | head -1)
  [[ -n $cmd ]] || fail "no compile command for $1"
  printf '#include "%s"\nint gy_probe_(void);\nint gy_probe_(void) { return 0; }\n' "$header" \
    >"$tmp/probe.c"
  cmd=${cmd//"$src"/"$tmp/probe.c"}
  cmd=$(sed -E "s# -o [^ ]+# -o $tmp/probe.o#" <<<"$cmd")
  (cd "$BUILD" && eval "$cmd") >"$tmp/out" 2>&1
}

expect_ok() {
  probe "$1" "$2" || { cat "$tmp/out"; fail "$1 cannot include $2"; }
}
expect_refused() {
  if probe "$1" "$2"; then fail "$1 can include $2: its target does not depend on it"; fi
  grep -q "No such file" "$tmp/out" || { cat "$tmp/out"; fail "$1 with $2: not a missing file"; }
}

expect_ok controller/fleet.c controller/run.h
expect_ok controller/fleet.c config/run_config.h   # gy_controller links gy_config
expect_ok controller/fleet.c policies/policy.h
expect_ok controller/fleet.c common/err.h
expect_refused controller/fleet.c worker/train.h
expect_refused controller/fleet.c kernels/gpt.h
expect_refused controller/fleet.c agent/agent.h
expect_ok config/run_config.c config/model.h
expect_ok config/run_config.c policies/policy.h
expect_refused config/run_config.c controller/fleet.h
expect_refused config/run_config.c worker/train.h
expect_ok worker/train.c kernels/gpt.h
expect_refused worker/train.c controller/fleet.h
expect_refused common/log.c config/run_config.h
expect_refused policies/policy.c controller/run.h
echo "include directories: per target, as the links go"
