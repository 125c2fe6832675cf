#!/usr/bin/env bash
# Install everything lvsbus, its demo and its tests need, on Debian, as root. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages and the tests build network namespaces)" >&2
  exit 1
fi

APT_PACKAGES=(iproute2 iputils-ping procps kmod busybox-static qemu-system-x86 ipvsadm curl chromium chromium-driver bird2 dnsmasq-base openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
echo "setup: pip install -e .[test]"
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
