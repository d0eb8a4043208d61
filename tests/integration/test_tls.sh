# TLS on the control plane, with a throwaway PKI made by openssl in the test's temp folder:
# CA A (a server certificate for 127.0.0.1/localhost, a client certificate) and an unrelated
# CA B (with its own client certificate).
#  1. bad TLS files are refused at start with exit 2 and the file named (missing, not PEM, a key
#     that is not the certificate's, client auth without a CA) by the controller, gyroctl and
#     the worker;
#  2. controller with mutual TLS: gyroctl with A's client certificate gets a real status, and a
#     real worker joins with it and trains the run to its end; gyroctl with no certificate, with
#     B's certificate, in plaintext, or trusting B instead of A is refused (exit 3, nothing
#     served); a worker with B's certificate never joins;
#  3. controller with TLS and no client auth: gyroctl with only the CA works, plaintext does
#     not.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
G=$BUILD/cli/gyroctl
CTL=$BUILD/controller/gyro-controller
for b in "$G" "$CTL" "$WORKER"; do [ -x "$b" ] || fail "$b not built"; done
command -v openssl >/dev/null || fail "openssl not installed"
# every gyroctl call is bounded (its RPCs are, by --timeout; its exit too, this way): a client
# that hangs fails the test with exit 124 instead of hanging it
GYROCTL=$G
gctl() { timeout -k 5 60 "$GYROCTL" "$@"; }
G=gctl

PIDS=()
cleanup() {
  local rc=$? p i left
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # every process must end within 20 s of SIGTERM; one that does not is named, killed, and
  # fails the test (rather than hanging it until ctest's timeout)
  for ((i = 0; i < 200; i++)); do
    left=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      echo "FAIL: process $p ($(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | cut -c1-200)) did not stop within 20 s of SIGTERM" >&2
      kill -9 "$p" 2>/dev/null || true
      rc=1
    fi
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT

# ---- the PKI (EC P-256 keys: quick to make)
P=$TMP/pki
mkdir -p "$P"
mkkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
mkca() { # mkca NAME
  mkkey "$P/$1.key"
  openssl req -x509 -new -key "$P/$1.key" -subj "/CN=gyro test $1" -days 2 -out "$P/$1.pem" \
    2>/dev/null
}
mkcert() { # mkcert NAME CA EXTENSIONS
  mkkey "$P/$1.key"
  openssl req -new -key "$P/$1.key" -subj "/CN=$1" -out "$P/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$P/$1.ext"
  openssl x509 -req -in "$P/$1.csr" -CA "$P/$2.pem" -CAkey "$P/$2.key" -CAcreateserial -days 2 \
    -extfile "$P/$1.ext" -out "$P/$1.pem" 2>/dev/null
}
mkca caA
mkca caB
mkcert server caA "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
mkcert client caA "extendedKeyUsage=clientAuth"
mkcert intruder caB "extendedKeyUsage=clientAuth"
for f in caA caB server client intruder; do [ -s "$P/$f.pem" ] || fail "openssl did not make $f"; done
echo "not a certificate" >"$P/junk.pem"

write_config "$TMP/base.yaml" 12
# A smaller model than the default so that the supervised run ends in a few seconds.
sed -i 's/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^train: .*/train: {batch: 4, top_k: 2}/' "$TMP/base.yaml"

# ctl_config FILE TLS-YAML: the base config with a controller section on a free port.
ctl_config() {
  cp "$TMP/base.yaml" "$1"
  printf 'controller: {listen: "127.0.0.1:0", world: 1, heartbeat_ms: 200%s}\n' "$2" >>"$1"
}

expect_rc() { # expect_rc WANT CMD...: runs CMD (output in $TMP/out, $TMP/err), checks the status
  local want=$1 rc=0
  shift
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, want $want: $(cat "$TMP/out" "$TMP/err")"
}
err_names() { # err_names TEXT: the last command's stderr mentions TEXT
  grep -qF -- "$1" "$TMP/err" || fail "the error does not name '$1': $(cat "$TMP/err")"
}

# ---- 1. bad files: exit 2 at start, naming the file
ctl_config "$TMP/c1.yaml" ", tls: {cert: '$P/missing.pem', key: '$P/server.key'}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c1.yaml"
err_names "$P/missing.pem"
ctl_config "$TMP/c2.yaml" ", tls: {cert: '$P/junk.pem', key: '$P/server.key'}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c2.yaml"
err_names "$P/junk.pem"
err_names "no PEM certificate"
ctl_config "$TMP/c3.yaml" ", tls: {cert: '$P/server.pem', key: '$P/client.key'}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c3.yaml"
err_names "is not the private key of certificate"
ctl_config "$TMP/c4.yaml" ", tls: {cert: '$P/server.pem', key: '$P/server.key', client_auth: true}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c4.yaml"
err_names "controller.tls.client_auth"
ctl_config "$TMP/c5.yaml" ", tls: {cert: '$P/server.pem'}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c5.yaml"
err_names "controller.tls"
ctl_config "$TMP/c6.yaml" ", tls: {cert: '$P/server.pem', key: '$P/server.key', bogus: 1}"
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c6.yaml"
err_names "controller.tls.bogus"
ctl_config "$TMP/c7.yaml" ""
expect_rc 2 timeout 10 "$CTL" --config "$TMP/c7.yaml" --tls-cert "$P/server.pem" \
  --tls-key "$P/nokey.pem"
err_names "$P/nokey.pem"
expect_rc 2 "$G" --controller 127.0.0.1:1 --tls-ca "$P/missing-ca.pem" status
err_names "$P/missing-ca.pem"
expect_rc 2 "$G" --controller 127.0.0.1:1 --tls-ca "$P/caA.pem" --tls-cert "$P/client.pem" status
err_names "certificate needs its key"
expect_rc 2 "$G" --controller 127.0.0.1:1 --tls-ca "$P/junk.pem" status
err_names "$P/junk.pem"
expect_rc 2 timeout 10 "$WORKER" --controller 127.0.0.1:1 --tls-ca "$P/caA.pem" \
  --tls-cert "$P/client.pem" --tls-key "$P/junk.pem"
grep -qF "$P/junk.pem" "$TMP/err" || fail "worker: the error does not name the key: $(cat "$TMP/err")"

# start_ctl CONFIG NAME [FLAGS...]: starts a controller, sets ADDR once it listens.
start_ctl() {
  local cfg=$1 name=$2
  shift 2
  "$CTL" --config "$cfg" --grace-ms 200 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  CPID=$!
  ADDR=
  for _ in $(seq 1 600); do
    ADDR=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: j = json.loads(l)
    except ValueError: continue
    if j.get("type") == "listening": print("127.0.0.1:%d" % j["port"])' "$TMP/$name.out")
    [ -n "$ADDR" ] && return 0
    kill -0 "$CPID" 2>/dev/null || fail "controller $name died: $(cat "$TMP/$name.err")"
    sleep 0.1
  done
  fail "controller $name does not listen: $(cat "$TMP/$name.err")"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"; }

# ---- 2. mutual TLS (from the config file)
ctl_config "$TMP/mtls.yaml" ", tls: {cert: '$P/server.pem', key: '$P/server.key', ca: '$P/caA.pem', client_auth: true}"
start_ctl "$TMP/mtls.yaml" mtls
grep -q "mutual TLS" "$TMP/mtls.err" || fail "the controller does not say it runs mutual TLS"
A=(--controller "$ADDR" --timeout 10000)
GOOD=(--tls-ca "$P/caA.pem" --tls-cert "$P/client.pem" --tls-key "$P/client.key")

expect_rc 0 "$G" "${A[@]}" "${GOOD[@]}" --json status
[ "$(field state <"$TMP/out")" = INIT ] || fail "mTLS status: $(cat "$TMP/out")"
expect_rc 0 "$G" "${A[@]}" "${GOOD[@]}" --tls-server-name localhost status
grep -q "INIT" "$TMP/out" || fail "mTLS status (server name localhost): $(cat "$TMP/out")"
# The same through the environment.
GYRO_TLS_CA=$P/caA.pem GYRO_TLS_CERT=$P/client.pem GYRO_TLS_KEY=$P/client.key \
  expect_rc 0 "$G" "${A[@]}" status

expect_rc 3 "$G" "${A[@]}" --tls-ca "$P/caA.pem" status # no client certificate
expect_rc 3 "$G" "${A[@]}" --tls-ca "$P/caA.pem" --tls-cert "$P/intruder.pem" \
  --tls-key "$P/intruder.key" status # a certificate of another CA
expect_rc 3 "$G" "${A[@]}" status    # plaintext
expect_rc 3 "$G" "${A[@]}" --tls-ca "$P/caB.pem" --tls-cert "$P/client.pem" \
  --tls-key "$P/client.key" status   # does not trust the server's CA
expect_rc 3 "$G" "${A[@]}" "${GOOD[@]}" --tls-server-name gyro.example status # wrong name
expect_rc 3 "$G" "${A[@]}" pause     # a plaintext command changes nothing either
# The controller saw each refusal as a failed handshake (gRPC's own log lines).
grep -q "peer did not return a certificate" "$TMP/mtls.err" ||
  fail "no handshake failure for the client without a certificate: $(cat "$TMP/mtls.err")"
grep -q "certificate verify failed" "$TMP/mtls.err" ||
  fail "no handshake failure for the foreign certificate: $(cat "$TMP/mtls.err")"

# A worker with B's certificate never gets in (it retries; stopped after 3 s).
rc=0
timeout 3 "$WORKER" --controller "$ADDR" --tls-ca "$P/caA.pem" --tls-cert "$P/intruder.pem" \
  --tls-key "$P/intruder.key" --worker-id intruder >"$TMP/intruder.out" 2>&1 || rc=$?
[ "$rc" -eq 124 ] || fail "the intruding worker exited $rc: $(cat "$TMP/intruder.out")"
grep -q 'intruder' "$TMP/mtls.err" && fail "the intruding worker got in: $(cat "$TMP/mtls.err")"

# The real worker joins over mutual TLS and trains the run to its end.
rc=0
timeout 120 "$WORKER" --controller "$ADDR" "${GOOD[@]}" --worker-id good --threads 1 \
  --quiet-steps >"$TMP/good.out" 2>"$TMP/good.err" || rc=$?
[ "$rc" -eq 0 ] || fail "the worker over mTLS exited $rc: $(tail -n 20 "$TMP/good.err")"
grep -q 'worker good' "$TMP/mtls.err" || fail "no join event for the worker: $(cat "$TMP/mtls.err")"
for _ in $(seq 1 600); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
grep -q '"type":"done"' "$TMP/mtls.out" || fail "the mTLS run did not finish: $(tail "$TMP/mtls.out")"
grep -q '"type":"step","step":11' "$TMP/mtls.out" || fail "step 11 missing: $(tail "$TMP/mtls.out")"

# ---- 3. TLS without client auth, from the flags
ctl_config "$TMP/tls.yaml" ""
start_ctl "$TMP/tls.yaml" tls --tls-cert "$P/server.pem" --tls-key "$P/server.key"
grep -q "not required" "$TMP/tls.err" || fail "the controller does not say client certs are off"
A=(--controller "$ADDR" --timeout 10000)
expect_rc 0 "$G" "${A[@]}" --tls-ca "$P/caA.pem" --json status
[ "$(field state <"$TMP/out")" = INIT ] || fail "TLS status: $(cat "$TMP/out")"
expect_rc 3 "$G" "${A[@]}" status # plaintext
expect_rc 3 "$G" "${A[@]}" --tls-ca "$P/caB.pem" status
kill -TERM "$CPID"
for ((i = 0; i < 200; i++)); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$CPID" 2>/dev/null; then
  kill -9 "$CPID"
  fail "the TLS controller did not stop within 20 s of SIGTERM: $(tail -n 3 "$TMP/tls.err")"
fi
wait "$CPID" || fail "the TLS controller did not stop cleanly"
echo "ok: TLS and mutual TLS on the control plane"
