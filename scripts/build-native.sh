#!/usr/bin/env bash
# Builds native/build/vmsight-mem.node, the optional mmap reader for file-backed guest RAM and
# dumps. Without it vmsight reads those files with pread: slower, same results. Needs gcc and
# Node's C headers (node_api.h), found beside the node binary or in /usr/include/node.
set -euo pipefail
cd "$(dirname "$0")/.."
src=native/vmsight-mem.c
out=native/build/vmsight-mem.node
[ -f "$out" ] && [ "$out" -nt "$src" ] && exit 0

prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
headers=""
for d in "$prefix/include/node" /usr/include/node /usr/local/include/node; do
  if [ -f "$d/node_api.h" ]; then headers="$d"; break; fi
done
# Debian's own nodejs (built on libnode) keeps its headers in libnode-dev; only then install it,
# since next to another vendor's nodejs apt might resolve the conflict by removing that.
if [ -z "$headers" ] && [ "$(id -u)" -eq 0 ] &&
  dpkg-query -W -f='${Depends}' nodejs 2>/dev/null | grep -q libnode; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnode-dev >/dev/null 2>&1 || true
  [ -f /usr/include/node/node_api.h ] && headers=/usr/include/node
fi
if [ -z "$headers" ]; then
  echo "vmsight setup: Node's C headers (node_api.h) not found: file-backed RAM and dumps will be read with pread" >&2
  exit 0
fi
mkdir -p native/build
gcc -O2 -Wall -Wextra -shared -fPIC -I"$headers" "$src" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "vmsight setup: built $out"
