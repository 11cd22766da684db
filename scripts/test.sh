#!/usr/bin/env bash
# The whole test suite: installs what is missing, fetches the Debian test kernels and builds the
# guest images (cached), lints, then runs unit, fuzz (dist/test/fuzz, under a minute) and
# end-to-end tests in one node:test run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx biome check src test bench scripts
node dist/scripts/check-layers.js src
node dist/src/bundle/main.js images build
# Optional in the catalog, but the discovery end-to-end test boots it (an -rt build moves most
# task_struct members): fetch it here, where a failure to do so is plain.
node dist/src/bundle/main.js images build 6.1-rt
# The check end-to-end test boots 6.1 with the test rootkit, built against Debian's 6.1 headers.
node dist/src/bundle/main.js images build --rootkit 6.1
# One file at a time: end-to-end files boot TCG guests, and this machine has two cores. Only the
# test folders: test/support and test/fixtures hold scripts (a protocol client the fleet test
# spawns, the transcript recorders that rewrite test/fixtures) that are not tests.
node --test --test-concurrency=1 dist/test/unit dist/test/fuzz dist/test/e2e
