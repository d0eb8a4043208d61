#!/bin/bash
# setup.sh: makes a fresh Debian 12 ready for gyro, builds it and prepares the data.
#
#   bash scripts/setup.sh
#
# 1. Installs the Debian packages gyro needs (apt-get update + install, only when one is
#    missing, so a second run is fast). Runs apt-get directly as root, through sudo otherwise.
# 2. Configures and builds gyro in ./build (RelWithDebInfo, all cores), tuned for this machine's
#    CPU (-DGY_NATIVE=ON: -march=native), since it runs where it is built.
# 3. Prepares the training shards in ./data/shards (scripts/prep-data.sh; cheap when they are
#    up to date).
# Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config       # toolchain
  libopenblas-openmp-dev                  # BLAS (OpenMP variant: one thread pool with ours)
  libyaml-dev libjansson-dev libxml2-dev  # config (YAML), logs and records (JSON), HTML corpora
  zlib1g-dev libisal-dev                  # compression, CRC-32C
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libuv1-dev  # control plane: gRPC C core, protobuf-c, libuv
  libgloo-dev                             # collectives over TCP (data/tensor parallel on CPU)
  libsqlite3-dev etcd-server              # controller state: SQLite (one machine), etcd (clusters)
  libmicrohttpd-dev libcurl4-openssl-dev  # HTTP: /metrics and the dashboard; webhook alerts
  prometheus chromium fonts-noto-cjk      # tests: a real Prometheus scrape, the dashboard in a browser
  clang libclang-rt-14-dev openssl        # libFuzzer harnesses; throwaway CAs for the TLS tests
  jq                                      # the chart's preStop hook (tested here)
  gnuplot-nox                             # benchmark plots
  python3 ca-certificates
  # the shipped corpora (data/README.md): zh and en prose, code
  debian-handbook fortunes-zh fortunes fortunes-min libc6-dev libpython3.11-stdlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  if [[ $(id -u) -eq 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "setup: packages missing (${missing[*]}) and not root, and sudo is not installed" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # sudo resets the environment: pass DEBIAN_FRONTEND through env.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Node packages (chart tools, the dashboard's charting library): scripts/setup-node.sh.
if [[ -f scripts/setup-node.sh ]]; then
  bash scripts/setup-node.sh
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGY_NATIVE=ON
cmake --build build -j"$(nproc)"

bash scripts/prep-data.sh build data/shards
