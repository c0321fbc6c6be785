#!/usr/bin/env bash
# The benchmarks, with their peers installed: scripts/bench.sh spawn [--json] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --peers
swift build -c release -j 2
exec .build/release/forkkit-bench "${@:-all}"
