#!/bin/bash
# screenshot.sh: the dashboard picture of the README. Runs the demo job (examples/demo.yaml: a
# controller and four CPU workers, the en samples of steps 500-503 corrupted) with
# `gyroctl launch` on free loopback ports, waits until the controller has repaired the spike
# (a rollback, then training past step 570), takes a headless-Chromium screenshot of the
# dashboard and stops the job.
#
#   bash scripts/screenshot.sh [BUILD_DIR] [OUT.png]      (defaults: build, docs/dashboard.png)
#
# Needs the build (gyroctl, gyro-controller, gyro-worker), the prepared shards (GY_DATA_DIR,
# default data/shards) and chromium. About three minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-docs/dashboard.png}
export GY_DATA_DIR=${GY_DATA_DIR:-$PWD/data/shards}
G=$BUILD/cli/gyroctl
[ -x "$G" ] || { echo "screenshot: $G is not built" >&2; exit 1; }
CHROME=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROME" ] || { echo "screenshot: chromium is not installed" >&2; exit 1; }
TMP=$(mktemp -d /tmp/gyro-shot.XXXXXX)
LPID=
cleanup() {
  if [ -n "$LPID" ]; then kill -INT "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
HP=$(free_port)
CFG=$TMP/demo.yaml
sed -e "s#^\(  listen: *\)[^ ]*#\1127.0.0.1:$PORT#" \
    -e "s#^\(  http: *\)[^ ]*#\1127.0.0.1:$HP#" \
    -e "s#^\(  dir: *\)[^ ]*#\1$TMP/ckpt#" \
    examples/demo.yaml >"$CFG"
grep -q "127.0.0.1:$HP" "$CFG" || { echo "screenshot: cannot set controller.http" >&2; exit 1; }
# relative paths in the config are relative to its folder: the data paths are absolute here
"$G" launch "$CFG" --run-dir "$TMP/run" >"$TMP/launch.log" 2>&1 &
LPID=$!
U=http://127.0.0.1:$HP
echo "screenshot: demo running, dashboard at $U/ (log: $TMP/launch.log)"
for i in $(seq 1800); do # up to 15 minutes
  if ! kill -0 "$LPID" 2>/dev/null; then
    tail -n 20 "$TMP/launch.log" >&2
    echo "screenshot: the job ended before the repair was seen" >&2
    exit 1
  fi
  if python3 - "$U" <<'PY' 2>/dev/null; then break; fi
import json, sys, urllib.request
u = sys.argv[1]
ev = json.load(urllib.request.urlopen(u + "/api/events?since=0", timeout=5))["events"]
s = json.load(urllib.request.urlopen(u + "/api/series?since=560", timeout=5))
sys.exit(0 if any(e["kind"] == "rollback" for e in ev) and s["step"] >= 570 else 1)
PY
  sleep 0.5
done
mkdir -p "$(dirname "$OUT")"
timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$TMP/chrome" \
  --window-size=1280,2300 --virtual-time-budget=8000 --screenshot="$TMP/shot.png" "$U/" \
  2>"$TMP/chrome.log" >/dev/null
[ -s "$TMP/shot.png" ] || { tail -n 5 "$TMP/chrome.log" >&2; exit 1; }
cp "$TMP/shot.png" "$OUT"
echo "screenshot: $OUT"
