#!/usr/bin/env bash
# The whole test suite, against real processes, sockets and descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Builds every target, including the test worker and plugin that the tests start and load.
swift build --build-tests -j 2
swift test --skip-build
