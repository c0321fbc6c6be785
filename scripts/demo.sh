#!/usr/bin/env bash
# The main demo: the same CPU-bound parallel map on worker processes (ForkPool), on threads and on
# one thread, compared in a table. Extra arguments go to forkkit-demo (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release -j 2 --product forkkit-demo
exec .build/release/forkkit-demo "$@"
