#!/usr/bin/env bash
# Installs what vmsight needs on a Debian 12 machine (idempotent), then builds the TypeScript.
# Everything here is safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: QEMU to run guests; busybox-static, cpio, gcc + static libc to build the
# guest initramfs; xz/zstd/lz4 to unpack kernels and modules; bpftool for the independent BTF
# check; gdb as the peer in the event benchmark; nats-server for the tests of `serve --publish`;
# make, libelf1 and libssl3 run the kbuild tools that build the test rootkit module (guests/rootkit);
# python3-pefile for Volatility 3, the peer that reads vmsight's symbol files in the interop test.
# chromium, driven by playwright-core, is the real browser of the dashboard tests.
packages=(qemu-system-x86 busybox-static cpio xz-utils zstd lz4 bpftool gcc libc6-dev make libelf1 libssl3 gdb ca-certificates nats-server python3-pefile chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "vmsight setup: missing Debian packages: ${missing[*]}" >&2
    echo "  run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "vmsight setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages: reinstall only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "vmsight setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

bash scripts/build-native.sh
npx tsc -p .
node dist/scripts/build-web.js   # the dashboard `vmsight serve` serves
node dist/scripts/build-cli.js   # the `vmsight` command: one bundle loads faster than a hundred modules
