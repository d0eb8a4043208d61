#!/bin/bash
# demo.sh: the main job. Installs and builds gyro (scripts/setup.sh), then trains the
# standalone run of examples/standalone.yaml on the shipped corpora and prints a readable
# trace (the raw JSON records go to build/demo.jsonl).
#
#   bash scripts/demo.sh [extra gyro-worker options, e.g. --steps 200]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GY_DATA_DIR="$(pwd)/data/shards"
export GY_DATA_DIR
echo "demo: training examples/standalone.yaml (records in build/demo.jsonl)" >&2
build/worker/gyro-worker --standalone --config examples/standalone.yaml "$@" |
  tee build/demo.jsonl | python3 scripts/trace.py
