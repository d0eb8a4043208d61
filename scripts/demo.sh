#!/bin/bash
# demo.sh: the main job. Installs and builds gyro (scripts/setup.sh), then runs the supervised
# job of examples/demo.yaml on this machine with `gyroctl launch`: a gyro-controller and four
# CPU workers (data-parallel 2 x tensor-parallel 2) training on the shipped corpora, with a
# live trace. Logs and every rank's step records go to build/runs/demo-<time>/.
#
#   bash scripts/demo.sh [extra gyroctl launch options]
#
# The engine alone, without the controller: bash scripts/demo.sh --standalone
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GY_DATA_DIR="$(pwd)/data/shards"
export GY_DATA_DIR
if [[ ${1:-} == --standalone ]]; then
  shift
  echo "demo: training examples/standalone.yaml in one process (records in build/demo.jsonl)" >&2
  build/worker/gyro-worker --standalone --config examples/standalone.yaml "$@" |
    tee build/demo.jsonl | python3 scripts/trace.py
  exit
fi
exec build/cli/gyroctl launch examples/demo.yaml "$@"
