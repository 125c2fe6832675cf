#!/usr/bin/env bash
# Install everything, then run the demo LVS cluster (root: it builds network namespaces; where this
# kernel has no IPVS they live inside a qemu VM with Debian's kernel, see README "The demo").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (sudo bash scripts/demo.sh): the demo builds network namespaces and moves IP addresses" >&2
  exit 1
fi
bash scripts/setup.sh
exec lvsbus demo "$@"
