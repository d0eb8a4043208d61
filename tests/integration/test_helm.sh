#!/bin/bash
# test_helm: the Helm chart (helm/gyro), its examples and the Dockerfiles, offline.
#
#  1. helm lint --strict with the default values and each example.
#  2. helm template: defaults, helm/examples/multi-node-gpu.yaml, helm/examples/cpu.yaml, etcd
#     external, TLS from an existing Secret; each render is decoded by kubectl (offline) and every
#     object validated with kubernetes-models (tests/integration/helm_validate.js: types,
#     required fields, unknown fields), and the key facts asserted (2 controller replicas,
#     Parallel/OnDelete StatefulSet, GPU requests, PDB, anti-affinity, /dev/shm, preStop,
#     non-root read-only containers, etcd members, no token outside the Secret, ...).
#     Every file in helm/examples renders and validates, and one whose workers request
#     nvidia.com/gpu must train on it: run.device cuda in the rendered run config and GYRO_GPU
#     (the GPU's index, which turns NVML health on) in the worker's environment.
#  3. Bad values files are refused, each with a message naming the field.
#  4. The flags the chart passes exist in the binaries' --help (the ones not built yet are listed
#     in PENDING_FLAGS and reported), every binary the chart runs is a CMake target that a
#     Dockerfile installs, every COPY source of the Dockerfiles exists, base images are pinned,
#     and the build packages are those of scripts/setup.sh.
#  5. The render at work: the real gyro-controller and 2 real gyro-workers run with the
#     rendered arguments, run config, policy and token files (pod paths mapped to a temp dir) and
#     train; the rendered preStop hook asks for a checkpoint and returns once every rank has
#     written it, and gives up at once (without failing the hook) when its token is refused.
source "$(dirname "$0")/../lib/common.sh"

HELM=$SRC/node_modules/.bin-k8s/helm
KUBECTL=$SRC/node_modules/.bin-k8s/kubectl
CHART=$SRC/helm/gyro
VALIDATE=$SRC/tests/integration/helm_validate.js
for f in "$HELM" "$KUBECTL"; do
  [ -x "$f" ] || fail "$f missing: run scripts/setup-node.sh (installs helm, kubectl, kubernetes-models)"
done
[ -d "$SRC/node_modules/kubernetes-models" ] ||
  fail "node_modules/kubernetes-models missing: run scripts/setup-node.sh"
command -v node >/dev/null || fail "node missing: run scripts/setup-node.sh"
command -v jq >/dev/null || fail "jq missing (the preStop hook uses it): apt-get install jq"
export KUBECONFIG=/dev/null HELM_CACHE_HOME=$TMP/helm-cache HELM_CONFIG_HOME=$TMP/helm-config \
  HELM_DATA_HOME=$TMP/helm-data GY_SOURCE_DIR=$SRC
JT=join-$RANDOM$RANDOM-tok
OT=oper-$RANDOM$RANDOM-tok

# --- 1. lint ---------------------------------------------------------------------------------
"$HELM" lint --strict "$CHART" >"$TMP/lint.out" 2>&1 || { cat "$TMP/lint.out"; fail "helm lint"; }
for ex in "$SRC"/helm/examples/*.yaml; do
  "$HELM" lint --strict "$CHART" -f "$ex" >"$TMP/lint.out" 2>&1 ||
    { cat "$TMP/lint.out"; fail "helm lint -f $ex"; }
done
echo "lint: default + $(ls "$SRC"/helm/examples/*.yaml | wc -l) examples"

# --- 2. render, validate, assert -------------------------------------------------------------
# render NAME FACTS_JSON [helm args...]: helm template -> NDJSON -> helm_validate.js
render() {
  local name=$1 facts=$2
  shift 2
  "$HELM" template gy "$CHART" --namespace train "$@" >"$TMP/$name.yaml" 2>"$TMP/$name.err" ||
    { cat "$TMP/$name.err"; fail "helm template ($name)"; }
  "$KUBECTL" patch --local -f "$TMP/$name.yaml" --type merge -p '{}' \
    -o jsonpath='{@}{"\n"}' >"$TMP/$name.ndjson" 2>"$TMP/$name.err" ||
    { cat "$TMP/$name.err"; fail "kubectl could not decode the $name render"; }
  echo "$facts" >"$TMP/$name.facts.json"
  node "$VALIDATE" validate "$TMP/$name.ndjson" --expect "$TMP/$name.facts.json" ||
    fail "render $name: invalid objects or facts (above)"
}
TOKENS=(--set "auth.joinToken=$JT" --set "auth.operatorToken=$OT")
render default "{\"controllerReplicas\":2,\"workerReplicas\":2,\"gpusPerPod\":1,\"etcd\":\"bundled\",
  \"secrets\":[\"$JT\",\"$OT\"],\"binaries\":\"$TMP/binaries.txt\"}" "${TOKENS[@]}"
# A generated token must not leak either.
"$HELM" template gy "$CHART" >"$TMP/gen.yaml"
gen=$("$KUBECTL" patch --local -f "$TMP/gen.yaml" --type merge -p '{}' \
  -o jsonpath='{.data.join-token}' 2>/dev/null | tr -d '\n')
[ -n "$gen" ] || fail "no generated join token in the default render"
gen=$(printf '%s' "$gen" | base64 -d)
[ "${#gen}" -ge 32 ] || fail "generated join token too short: ${#gen}"
[ "$(grep -c -- "$gen" "$TMP/gen.yaml")" -eq 0 ] || fail "the generated join token appears in clear"
render gpu "{\"controllerReplicas\":2,\"workerReplicas\":16,\"gpusPerPod\":1,\"etcd\":\"bundled\",
  \"secrets\":[\"$JT\",\"$OT\"]}" -f "$SRC/helm/examples/multi-node-gpu.yaml" "${TOKENS[@]}"
render cpu "{\"controllerReplicas\":1,\"workerReplicas\":2,\"gpusPerPod\":0,\"etcd\":\"none\",
  \"secrets\":[\"$JT\",\"$OT\"],\"binaries\":\"$TMP/binaries-cpu.txt\"}" \
  -f "$SRC/helm/examples/cpu.yaml" "${TOKENS[@]}"
render external '{"controllerReplicas":2,"etcd":"external","etcdEndpoints":"etcd-a.infra:2379,etcd-b.infra:2379"}' \
  --set etcd.mode=external --set-json 'etcd.external.endpoints=["etcd-a.infra:2379","etcd-b.infra:2379"]'
render tls '{"controllerReplicas":2,"etcd":"bundled"}' \
  --set tls.enabled=true --set tls.existingSecret=gyro-certs --set auth.existingSecret=gyro-auth
grep -q 'secretName: gyro-certs' "$TMP/tls.yaml" || fail "tls.existingSecret not mounted"
grep -q 'secretName: gyro-auth' "$TMP/tls.yaml" || fail "auth.existingSecret not used"
! grep -q 'kind: Secret' "$TMP/tls.yaml" || fail "a Secret rendered although both are existing ones"
# Every example renders and validates; one whose workers request a GPU must train on it.
# gpu_check NDJSON: says why and returns 1 when the render's workers request nvidia.com/gpu but
# the run config they are sent would train on the CPU (run.device not cuda) or the worker
# container does not name its GPU for NVML health (GYRO_GPU, an index below its GPU count).
# The run config's sections are JSON (configmap.yaml); one that cannot be read fails.
gpu_check() {
  local nd=$1 gpus dev idx
  gpus=$(jq -r 'select(.kind == "StatefulSet" and (.metadata.name | endswith("-worker")))
      | .spec.template.spec.containers[] | select(.name == "worker")
      | (.resources.limits["nvidia.com/gpu"] // .resources.requests["nvidia.com/gpu"] // 0)' \
    "$nd") || { echo "cannot read the workers' resources"; return 1; }
  [[ $gpus =~ ^[0-9]+$ ]] || { echo "no worker StatefulSet, or GPUs '$gpus'"; return 1; }
  [ "$gpus" -gt 0 ] || return 0
  dev=$(jq -r 'select(.kind == "ConfigMap") | .data["run.yaml"] // empty' "$nd" |
    awk '/^run:[[:space:]]*$/ {f = 1; next} /^[^[:space:]]/ {f = 0} f' |
    jq -r '.device // "cpu"') || { echo "cannot read run: of the rendered run.yaml"; return 1; }
  [ "$dev" = cuda ] ||
    { echo "workers request $gpus nvidia.com/gpu but run.device is ${dev:-cpu}: they would train on the CPU"; return 1; }
  idx=$(jq -r 'select(.kind == "StatefulSet" and (.metadata.name | endswith("-worker")))
      | .spec.template.spec.containers[] | select(.name == "worker")
      | [.env[]? | select(.name == "GYRO_GPU") | .value] | last // empty' "$nd")
  [[ $idx =~ ^[0-9]+$ ]] && [ "$idx" -lt "$gpus" ] ||
    { echo "workers request $gpus nvidia.com/gpu but GYRO_GPU is '${idx}': no GPU index, no NVML health"; return 1; }
}
nex=0
for ex in "$SRC"/helm/examples/*.yaml; do
  n=$(basename "$ex" .yaml)
  render "example-$n" '{}' -f "$ex" "${TOKENS[@]}"
  why=$(gpu_check "$TMP/example-$n.ndjson") || fail "helm/examples/$n.yaml: $why"
  nex=$((nex + 1))
done
why=$(gpu_check "$TMP/default.ndjson") || fail "default values: $why"
# The check has teeth: GPU workers on the CPU, or without NVML, are caught.
jq -c 'if .kind == "ConfigMap" and .data["run.yaml"] then
         .data["run.yaml"] |= sub("\"device\": \"cuda\""; "\"device\": \"cpu\"") else . end' \
  "$TMP/gpu.ndjson" >"$TMP/gpu-on-cpu.ndjson"
why=$(gpu_check "$TMP/gpu-on-cpu.ndjson") && fail "gpu_check passed GPU workers with run.device cpu"
grep -q 'would train on the CPU' <<<"$why" || fail "gpu_check on run.device cpu: $why"
jq -c 'if .kind == "ConfigMap" and .data["run.yaml"] then
         .data["run.yaml"] |= sub("\"device\": \"cuda\",?"; "") else . end' \
  "$TMP/gpu.ndjson" >"$TMP/gpu-no-device.ndjson"
why=$(gpu_check "$TMP/gpu-no-device.ndjson") && fail "gpu_check passed GPU workers without run.device"
render gpu-no-nvml '{}' -f "$SRC/helm/examples/multi-node-gpu.yaml" "${TOKENS[@]}" \
  --set workers.gpuHealth=false
why=$(gpu_check "$TMP/gpu-no-nvml.ndjson") && fail "gpu_check passed GPU workers without GYRO_GPU"
grep -q 'GYRO_GPU' <<<"$why" || fail "gpu_check without GYRO_GPU: $why"
echo "examples: $nex rendered; GPU workers train on their GPU (run.device cuda, GYRO_GPU, NVML)"
# perPod checkpoints give each worker a claim template; shared mode one RWX claim.
grep -q 'volumeClaimTemplates' "$TMP/cpu.yaml" && grep -q 'name: checkpoints' "$TMP/cpu.yaml" ||
  fail "checkpoints.mode perPod has no volumeClaimTemplates"
grep -q 'ReadWriteMany' "$TMP/default.yaml" || fail "shared checkpoints claim is not ReadWriteMany"

# --- 3. bad values ---------------------------------------------------------------------------
# bad NAME EXPECTED_TEXT [template-only]: the values file $TMP/bad-NAME.yaml must be refused by
# helm template and (schema errors) helm lint, naming the field. Cross-field checks written as
# a template's fail stop helm template and helm install, while helm lint only logs them.
bad() {
  local name=$1 want=$2 only=${3:-} out
  if out=$("$HELM" template gy "$CHART" -f "$TMP/bad-$name.yaml" 2>&1); then
    fail "bad values $name were accepted"
  fi
  grep -qF -- "$want" <<<"$out" || { echo "$out"; fail "bad values $name: message lacks '$want'"; }
  if [ -z "$only" ] && "$HELM" lint "$CHART" -f "$TMP/bad-$name.yaml" >/dev/null 2>&1; then
    fail "helm lint accepted $name"
  fi
  echo "refused $name: $(grep -F -- "$want" <<<"$out" | head -n1 | sed 's/^ *//')"
}
printf 'controller:\n  replicas: -1\n' >"$TMP/bad-replicas.yaml"
bad replicas "at '/controller/replicas': minimum"
printf 'controller:\n  grpcPort: 70000\n' >"$TMP/bad-port.yaml"
bad port "at '/controller/grpcPort': maximum"
printf 'etcd:\n  clientPort: 0\n' >"$TMP/bad-port0.yaml"
bad port0 "at '/etcd/clientPort': minimum"
printf 'workers:\n  replica: 4\n' >"$TMP/bad-unknown.yaml"
bad unknown "additional properties 'replica' not allowed"
printf 'workers:\n  backend: mpi\n' >"$TMP/bad-enum.yaml"
bad enum "at '/workers/backend': value must be one of"
printf 'checkpoints:\n  mode: nfs\n' >"$TMP/bad-mode.yaml"
bad mode "at '/checkpoints/mode'"
printf 'workers:\n  replicas: 0\n' >"$TMP/bad-world.yaml"
bad world "at '/workers/replicas': minimum"
printf 'workers:\n  replicas: "4"\n' >"$TMP/bad-type.yaml"
bad type "at '/workers/replicas'"
printf 'etcd:\n  mode: external\n' >"$TMP/bad-external.yaml"
bad external "at '/etcd/external/endpoints'"
printf 'run:\n  config:\n    controller: {world: 2}\n' >"$TMP/bad-owned.yaml"
bad owned "at '/run/config': additional properties 'controller' not allowed"
printf 'auth:\n  joinToken: "a b"\n' >"$TMP/bad-token.yaml"
bad token "at '/auth/joinToken'"
printf 'workers:\n  replicas: 3\nrun:\n  controller: {tp: 2}\n' >"$TMP/bad-tp.yaml"
bad tp "workers.replicas (3) must be a multiple of run.controller.tp (2)" template-only
printf 'controller:\n  replicas: 2\n  pdb: {minAvailable: 2}\n' >"$TMP/bad-pdb.yaml"
bad pdb "controller.pdb.minAvailable (2) must be below controller.replicas (2)" template-only
printf 'tls:\n  enabled: true\n  ca: x\n' >"$TMP/bad-pem.yaml"
bad pem "tls.enabled without tls.existingSecret needs tls.cert" template-only
printf 'etcd:\n  mode: none\n' >"$TMP/bad-election.yaml"
bad election "at '/controller/replicas': maximum: got 2, want 1"
printf 'workers:\n  gpusPerPod: 0\n' >"$TMP/bad-nccl.yaml"
bad nccl "at '/workers/backend': value must be 'gloo'"
printf 'run:\n  config:\n    run: {device: cpu}\n' >"$TMP/bad-gpu-idle.yaml"
bad gpu-idle "at '/run/config/run/device': value must be 'cuda'"
printf 'workers:\n  gpusPerPod: 0\n  backend: gloo\nrun:\n  config:\n    run: {device: cuda}\n' \
  >"$TMP/bad-cuda-nogpu.yaml"
bad cuda-nogpu "at '/run/config/run/device': value must be 'cpu'"
printf 'controller:\n  probes: {type: grpc}\ntls:\n  enabled: true\n  existingSecret: x\n' \
  >"$TMP/bad-probe.yaml"
bad probe "at '/controller/probes/type': value must be 'http'"

# --- 4. flags, binaries, Dockerfiles ---------------------------------------------------------
# Flags the chart passes that the binaries do not have yet (none today); anything else unknown
# fails the test. cpu.yaml must need none of them.
PENDING_FLAGS=" "
declare -A BIN=([gyro-controller]=$BUILD/controller/gyro-controller
  [gyro-worker]=$BUILD/worker/gyro-worker [gyroctl]=$BUILD/cli/gyroctl)
declare -A KNOWN
for b in "${!BIN[@]}"; do
  [ -x "${BIN[$b]}" ] || fail "${BIN[$b]} not built"
  KNOWN[$b]=" $("${BIN[$b]}" --help 2>&1 | grep -o -- '--[a-z][a-z-]*' | sort -u | tr '\n' ' ') "
done
pending_used=""
for r in default gpu cpu tls; do
  node "$VALIDATE" flags "$TMP/$r.ndjson" >"$TMP/$r.flags" || fail "flags of render $r"
  grep -q '^gyro-worker --ordinal$' "$TMP/$r.flags" || fail "no worker flags found in render $r"
  while read -r b f; do
    [ "$b" = etcd ] && continue # the bundled etcd's own image
    [ -n "${BIN[$b]:-}" ] || fail "render $r runs $b, which the project does not build"
    [[ ${KNOWN[$b]} == *" $f "* ]] && continue
    [[ $PENDING_FLAGS == *" $f "* && $r != cpu ]] ||
      fail "render $r passes $b $f, which $b --help does not list"
    [[ $pending_used == *" $b $f"* ]] || pending_used+=" $b $f"
  done <"$TMP/$r.flags"
done
for f in $PENDING_FLAGS; do
  for b in gyro-controller gyro-worker; do
    [[ ${KNOWN[$b]} == *" $f "* ]] && echo "note: $b now has $f: take it out of PENDING_FLAGS"
  done
done
echo "flags: every flag exists, except the pending:$pending_used"

# Binaries the chart runs: CMake targets, installed by a Dockerfile under /usr/local/bin.
sort -u "$TMP/binaries.txt" "$TMP/binaries-cpu.txt" >"$TMP/bins"
[ "$(wc -l <"$TMP/bins")" -ge 3 ] || fail "the chart runs fewer binaries than expected: $(cat "$TMP/bins")"
while read -r b; do
  grep -rqs --include=CMakeLists.txt "add_executable($b " "$SRC"/{controller,worker,cli} ||
    fail "the chart runs $b, which no CMakeLists.txt builds"
  grep -qE "^COPY --from=build .*/$b( .*)? /usr/local/bin/$" "$SRC"/docker/Dockerfile.* ||
    fail "the chart runs $b, which no Dockerfile installs in /usr/local/bin"
done <"$TMP/bins"
# COPY sources exist, base images are pinned, build packages come from scripts/setup.sh.
eval "$(sed -n '/^PACKAGES=(/,/^)/p' "$SRC/scripts/setup.sh")"
[ "${#PACKAGES[@]}" -gt 10 ] || fail "could not read PACKAGES from scripts/setup.sh"
for df in "$SRC"/docker/Dockerfile.*; do
  while read -r _ args; do
    set -- $args
    [[ $1 == --from=* ]] && continue
    while [ $# -gt 1 ]; do
      [ -e "$SRC/$1" ] || fail "$df: COPY source $1 does not exist"
      shift
    done
  done < <(grep -E '^COPY ' "$df")
  while read -r _ image _; do
    image=${image//\$\{CUDA_TAG\}/12.8.1}
    [[ $image == *:* && $image != *:latest ]] || fail "$df: base image $image is not pinned"
  done < <(grep -E '^FROM [^ ]+[:/]' "$df")
  pkgs=$(awk '/apt-get install -y --no-install-recommends \\$/ {f=1; next} f && /&& rm/ {exit}
              f {gsub(/\\/, ""); print}' "$df" | tr ' ' '\n' | grep -v '^$')
  [ -n "$pkgs" ] || fail "$df: no build packages found"
  for p in $pkgs; do
    [[ " ${PACKAGES[*]} " == *" $p "* ]] || fail "$df installs $p, which scripts/setup.sh does not"
  done
done
grep -q '^build' "$SRC/.dockerignore" && grep -q '^node_modules' "$SRC/.dockerignore" ||
  fail ".dockerignore does not keep build folders and node_modules out of the context"
echo "binaries: $(tr '\n' ' ' <"$TMP/bins")built and installed; Dockerfiles consistent"

# --- 5. the rendered config and hooks at work ------------------------------------------------
# The cpu example's controller and workers run here with exactly the rendered arguments; only
# the pod paths are mapped to this test's folders (/etc/gyro/X -> $TMP/X) and the addresses to
# loopback.
need_data
mkdir -p "$TMP/config" "$TMP/auth" "$TMP/hooks" "$TMP/ck"
render live '{}' -f "$SRC/helm/examples/cpu.yaml" "${TOKENS[@]}" --set run.name=live \
  --set run.config.run.steps=100000 --set run.config.eval.every=0 \
  --set run.config.checkpoint.every=0 --set-file run.policy="$SRC/examples/policies/default.yaml"
node "$VALIDATE" extract "$TMP/live.ndjson" gy-gyro-config "$TMP/config" || fail "no ConfigMap"
mv "$TMP/config/prestop.sh" "$TMP/hooks/"
printf '%s\n' "$JT" >"$TMP/auth/join-token"
printf '%s' "$OT" >"$TMP/auth/operator-token"
# pod_args SUFFIX CONTAINER [sed expressions]: the rendered args with pod paths mapped.
pod_args() {
  local suffix=$1 c=$2
  shift 2
  node "$VALIDATE" args "$TMP/live.ndjson" "$suffix" "$c" | sed -e "s|/etc/gyro/|$TMP/|g" "$@"
}
mapfile -t CTL_ARGS < <(pod_args -controller controller -e 's|^--listen=.*|--listen=127.0.0.1:0|')
[ "${#CTL_ARGS[@]}" -ge 4 ] || fail "no controller args rendered"
export GYRO_CONFIG_DIR=$TMP/config GYRO_CHECKPOINT_DIR=$TMP/ck GYRO_PRESTOP_LOG=$TMP/prestop.log
: >"$GYRO_PRESTOP_LOG"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
"${BIN[gyro-controller]}" "${CTL_ARGS[@]}" >"$TMP/ctl.out" 2>"$TMP/ctl.err" &
pids+=($!)
for _ in $(seq 600); do grep -q listening "$TMP/ctl.out" 2>/dev/null && break; sleep 0.1; done
port=$(grep -m1 listening "$TMP/ctl.out" | grep -o '"port":[0-9]*' | cut -d: -f2) ||
  fail "controller did not start with the rendered args (${CTL_ARGS[*]}): $(cat "$TMP/ctl.err")"
export GYRO_CONTROLLER=127.0.0.1:$port
for i in 0 1; do
  mapfile -t W_ARGS < <(pod_args -worker worker -e "s|^--controller=.*|--controller=$GYRO_CONTROLLER|" \
    -e "s|\$(POD_NAME)|gy-gyro-worker-$i|" -e "s|\$(GYRO_ORDINAL)|$i|" -e 's|^--threads=.*|--threads=1|')
  "${BIN[gyro-worker]}" "${W_ARGS[@]}" >"$TMP/w$i.out" 2>"$TMP/w$i.err" &
  pids+=($!)
done
step=0
deadline=$((SECONDS + 120)) # generous: a sanitizer build on a busy machine is slow
while [ $SECONDS -lt $deadline ]; do
  step=$("${BIN[gyroctl]}" --token-file "$TMP/auth/operator-token" --json status 2>/dev/null |
    jq -r '.step // 0') || step=0
  step=${step:-0}
  [ "$step" -ge 3 ] && break
  sleep 0.2
done
[ "$step" -ge 3 ] ||
  fail "the gang did not train with the rendered args (step $step): $(tail -3 "$TMP/w0.err")"
# The preStop hook as rendered (sh prestop.sh WAIT --token-file=...), gyroctl on the PATH.
mapfile -t HOOK < <(
  "$KUBECTL" patch --local -f "$TMP/live.yaml" --type merge -p '{}' \
    -o jsonpath='{.spec.template.spec.containers[0].lifecycle.preStop.exec.command[*]}' |
  tr ' ' '\n' | sed -e "s|/etc/gyro/|$TMP/|g" | grep -v '^$')
[ "${HOOK[1]:-}" = "$TMP/hooks/prestop.sh" ] || fail "unexpected preStop command: ${HOOK[*]}"
hook_path=$(dirname "${BIN[gyroctl]}"):$PATH
# With a wrong operator token the hook cannot ask: it gives up at once and never fails.
printf 'wrong-token' >"$TMP/wrong-token"
PATH=$hook_path "${HOOK[0]}" "${HOOK[1]}" 5 --token-file="$TMP/wrong-token" ||
  fail "prestop.sh failed the hook"
grep -q 'refused or controller unreachable' "$TMP/prestop.log" ||
  fail "prestop with a wrong token: $(cat "$TMP/prestop.log")"
t0=$(date +%s%N)
PATH=$hook_path "${HOOK[@]}" || fail "prestop.sh failed the hook"
ms=$((($(date +%s%N) - t0) / 1000000))
at=$(grep -o 'checkpoint of step [0-9]* committed' "$TMP/prestop.log" | grep -o '[0-9]*') ||
  fail "prestop.sh did not see its checkpoint committed: $(cat "$TMP/prestop.log")"
for r in 0 1; do
  f=$(printf '%s/live/step_%08d.rank%d.gyck' "$TMP/ck" "$at" "$r")
  [ -s "$f" ] || fail "preStop checkpoint $f missing"
done
committed=$("${BIN[gyroctl]}" --token-file "$TMP/auth/operator-token" --json status |
  jq -r .committed_step)
[ "$committed" -ge "$at" ] || fail "committed_step $committed < $at"
echo "live: rendered args trained 2 workers; preStop checkpoint of step $at on both ranks in ${ms} ms"
echo "test_helm: ok"
