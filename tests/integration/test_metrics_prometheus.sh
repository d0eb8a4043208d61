# The controller's HTTP surface scraped by a real Prometheus (Debian's `prometheus`, on loopback,
# in a temp dir) during a real run: gyro-controller with --http and two CPU workers (DP=2, Gloo).
#  - bad addresses and webhook URLs are refused at start (exit 2) naming the flag or the config
#    key (with its file and line);
#  - /healthz, /readyz, /, /static/..., 404 for anything else, 405 for POST, 400 for a bad query
#    or a request body, 431 for oversized headers; `promtool check metrics` accepts /metrics;
#  - Prometheus scrapes it (up == 1) and its HTTP API returns the expected series: the step
#    advancing, one training-loss series per channel, one throughput series per rank, the
#    reports counter and a committed checkpoint.
source "$GY_SOURCE_DIR/tests/lib/common.sh"
need_data
CTL=$BUILD/controller/gyro-controller
[ -x "$CTL" ] || fail "$CTL is not built"
[ -x "$WORKER" ] || fail "$WORKER is not built"
command -v prometheus >/dev/null || fail "prometheus not installed (apt-get install prometheus)"
command -v promtool >/dev/null || fail "promtool not installed (apt-get install prometheus)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
expect_exit2() { # expect_exit2 PATTERN ARGS...: the controller refuses to start with PATTERN
  local pat=$1 rc=0
  shift
  timeout 10 "$CTL" "$@" >"$TMP/bad.out" 2>"$TMP/bad.err" || rc=$?
  [ $rc -eq 2 ] || fail "'$*' exited $rc, want 2: $(cat "$TMP/bad.err")"
  grep -q -- "$pat" "$TMP/bad.err" || fail "'$*': want '$pat' in: $(cat "$TMP/bad.err")"
}

# ---- bad input: refused at start, the flag or the key named
write_config "$TMP/bad1.yaml" 10 'controller: {listen: "127.0.0.1:0", world: 1, http: "127.0.0.1:http"}'
expect_exit2 "bad1.yaml:.*controller.http.*not HOST:PORT" --config "$TMP/bad1.yaml"
write_config "$TMP/bad2.yaml" 10 'controller: {listen: "127.0.0.1:0", world: 1, http: "127.0.0.1:70000"}'
expect_exit2 "bad2.yaml:.*controller.http" --config "$TMP/bad2.yaml"
write_config "$TMP/bad3.yaml" 10 'controller: {listen: "127.0.0.1:0", world: 1, webhook_url: "ftp://x"}'
expect_exit2 "bad3.yaml:.*controller.webhook_url.*http" --config "$TMP/bad3.yaml"
write_config "$TMP/ok.yaml" 10 'controller: {listen: "127.0.0.1:0", world: 1}'
expect_exit2 "\-\-http: .*brackets" --config "$TMP/ok.yaml" --http "::1:80"
expect_exit2 "\-\-http: .*not a number" --config "$TMP/ok.yaml" --http "127.0.0.1:"
expect_exit2 "\-\-webhook: .*not http" --config "$TMP/ok.yaml" --webhook "localhost:9"
# an address in use: exit 1, said
python3 -c "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()
print(s.getsockname()[1]); sys.stdout.flush(); time.sleep(60)" >"$TMP/busy.port" &
PIDS+=($!)
for i in $(seq 50); do [ -s "$TMP/busy.port" ] && break; sleep 0.1; done
BUSY=$(cat "$TMP/busy.port")
rc=0
timeout 10 "$CTL" --config "$TMP/ok.yaml" --http "127.0.0.1:$BUSY" >"$TMP/busy.out" 2>"$TMP/busy.err" || rc=$?
[ $rc -eq 1 ] || fail "HTTP port in use: exit $rc, want 1"
grep -q "cannot serve HTTP on 127.0.0.1:$BUSY" "$TMP/busy.err" || fail "busy: $(cat "$TMP/busy.err")"

# ---- a real run with the HTTP surface
PORT=$(free_port)
HP=$(free_port)
CFG=$TMP/run.yaml
write_config "$CFG" 400 "controller: {listen: \"127.0.0.1:$PORT\", world: 2, tp: 1, heartbeat_ms: 200, http: \"127.0.0.1:$HP\"}"
sed -i "s/^run: {\(.*\)threads: 2}/run: {\1threads: 1}/;
        s/^model: .*/model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}/;
        s/^checkpoint: {\(.*\)every: 0,/checkpoint: {\1every: 20,/" "$CFG"
grep -q 'every: 20' "$CFG" || fail "config not written as intended"
"$CTL" --config "$CFG" --grace-ms 60000 >"$TMP/ctl.out" 2>"$TMP/ctl.err" &
CTL_PID=$!
PIDS+=($CTL_PID)
for i in $(seq 600); do
  grep -q '"type":"http"' "$TMP/ctl.out" 2>/dev/null && break
  sleep 0.1
done
grep -q "\"url\":\"http://127.0.0.1:$HP/\"" "$TMP/ctl.out" || fail "no http line: $(cat "$TMP/ctl.out" "$TMP/ctl.err")"
U=http://127.0.0.1:$HP
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
[ "$(code $U/healthz)" = 200 ] && grep -q ok "$TMP/body" || fail "/healthz"
[ "$(code $U/readyz)" = 200 ] && grep -q "gang not formed" "$TMP/body" || fail "/readyz before the gang: $(cat "$TMP/body")"
for r in 0 1; do
  OMP_NUM_THREADS=1 "$WORKER" --controller "127.0.0.1:$PORT" --worker-id "w$r" --ordinal $r \
    --threads 1 --comm-timeout 20000 >"$TMP/w$r.jsonl" 2>"$TMP/w$r.err" &
  PIDS+=($!)
done
[ "$(code $U/nope)" = 404 ] || fail "/nope: want 404"
[ "$(code $U/static/../metrics)" = 404 ] || [ "$(code --path-as-is $U/static/../metrics)" = 404 ] || fail "/static/../metrics: want 404"
[ "$(code -X POST -d x=1 $U/metrics)" = 405 ] || fail "POST /metrics: want 405"
[ "$(code -X DELETE $U/api/events)" = 405 ] || fail "DELETE: want 405"
[ "$(code "$U/api/series?since=abc")" = 400 ] || fail "since=abc: want 400"
[ "$(code "$U/api/events?since=-3")" = 400 ] || fail "events since=-3: want 400"
[ "$(code -X GET --data-binary hello $U/metrics)" = 400 ] || fail "GET with a body: want 400"
BIG=$(head -c 20000 /dev/zero | tr '\0' a)
c=$(code -H "X-Big: $BIG" $U/metrics)
[ "$c" = 431 ] || [ "$c" = 413 ] || fail "20 KB of headers: $c, want 431"
[ "$(code -D "$TMP/hdr" $U/)" = 200 ] && grep -q '<script src="/static/app.js">' "$TMP/body" || fail "/: no page"
grep -qi "^content-security-policy: default-src 'self'" "$TMP/hdr" || fail "/: no CSP header"
[ "$(code $U/static/uPlot.iife.min.js)" = 200 ] && grep -q uPlot "$TMP/body" || fail "uPlot not served"
[ "$(code $U/static/uPlot.LICENSE)" = 200 ] && grep -q MIT "$TMP/body" || fail "uPlot licence not served"
[ "$(code -D "$TMP/hdr" $U/metrics)" = 200 ] || fail "/metrics"
grep -qi "^content-type: text/plain; version=0.0.4" "$TMP/hdr" || fail "/metrics content type: $(cat "$TMP/hdr")"
promtool check metrics <"$TMP/body" >"$TMP/lint" 2>&1 || fail "promtool check metrics: $(cat "$TMP/lint")"

# ---- Prometheus scrapes it
PP=$(free_port)
cat >"$TMP/prom.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: gyro
    static_configs: [{targets: ['127.0.0.1:$HP']}]
YAML
prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom" \
  --web.listen-address="127.0.0.1:$PP" --log.level=warn >"$TMP/prom.log" 2>&1 &
PIDS+=($!)
P=http://127.0.0.1:$PP
query() { curl -s --get "$P/api/v1/query" --data-urlencode "query=$1"; }
ok=0
for i in $(seq 200); do # up to 40 s
  if query 'gyro_run_step > 30' | grep -q '"result":\[{'; then ok=1; break; fi
  sleep 0.2
done
[ $ok = 1 ] || { tail -5 "$TMP/prom.log" "$TMP/ctl.err" >&2; fail "Prometheus never saw gyro_run_step > 30"; }
# the queries of the design: one series per channel, per rank, the counters
curl -s $U/metrics >"$TMP/metrics.txt"
python3 - "$P" "$SRC/examples/grafana/gyro-dashboard.json" "$TMP/metrics.txt" <<'PY'
import json, sys, time, urllib.parse, urllib.request
P = sys.argv[1]
def q(expr):
    u = P + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    r = json.load(urllib.request.urlopen(u, timeout=5))
    if r.get("status") != "success":
        sys.exit("FAIL: query %s: %s" % (expr, r))
    return r["data"]["result"]
def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)
up = q('up{job="gyro"}')
if not up or up[0]["value"][1] != "1":
    fail("up: %s" % up)
ch = sorted(x["metric"]["channel"] for x in q("gyro_train_channel_loss_nats"))
if ch != ["code", "en", "zh"]:
    fail("channels: %s" % ch)
for x in q("gyro_train_channel_loss_nats"):
    v = float(x["value"][1])
    if not 0.5 < v < 7:
        fail("loss %s = %s" % (x["metric"], v))
ranks = sorted(x["metric"]["rank"] for x in q("gyro_rank_throughput_tokens_per_second"))
if ranks != ["0", "1"]:
    fail("ranks: %s" % ranks)
if not q("gyro_reports_total > 60"):
    fail("reports: %s" % q("gyro_reports_total"))
if not q('gyro_train_grad_norm{group="global"} > 0'):
    fail("grad norm")
if not q('gyro_run_state{state="TRAIN"} == 1 or gyro_run_state{state="DONE"} == 1'):
    fail("state: %s" % q("gyro_run_state == 1"))
# the checkpoint of step 20 (or a later one) is committed by now
deadline = time.time() + 20
while not q("gyro_checkpoint_step >= 20"):
    if time.time() > deadline:
        fail("no committed checkpoint: %s" % q("gyro_checkpoint_step"))
    time.sleep(0.5)
# the step advances between scrapes
a = float(q("gyro_run_step")[0]["value"][1])
deadline = time.time() + 20
while float(q("gyro_run_step")[0]["value"][1]) <= a and a < 399:
    if time.time() > deadline:
        fail("gyro_run_step stuck at %s" % a)
    time.sleep(0.5)
print("prometheus: channels %s, ranks %s, step %s" % (ch, ranks, q("gyro_run_step")[0]["value"][1]))
# the Grafana dashboard's queries: valid PromQL, on metrics this controller exports (the GPU,
# held-out, alert and checkpoint-size families appear only once something reports them)
import re
dash = json.load(open(sys.argv[2]))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
exported = set(re.findall(r"^# TYPE (\S+) ", open(sys.argv[3]).read(), re.M))
later = {"gyro_gpu_temperature_celsius", "gyro_gpu_memory_used_bytes",
         "gyro_gpu_utilization_ratio", "gyro_eval_perplexity", "gyro_alerts_total"}
for e in exprs:
    q(e.replace("$job", "gyro"))
    for name in re.findall(r"\b(gyro_[a-z_]+)\{", e):
        if name not in exported and name not in later:
            fail("the Grafana dashboard queries %s, which /metrics does not export" % name)
print("grafana: %d queries accepted by Prometheus" % len(exprs))
PY
[ "$(code $U/readyz)" = 200 ] && grep -q "generation 1" "$TMP/body" || fail "/readyz during the run: $(cat "$TMP/body")"
echo "PASS"
