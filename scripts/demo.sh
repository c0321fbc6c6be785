#!/usr/bin/env bash
# The main demo: AnyEvent::Fork's classic examples (pre-forked servers on one listening socket,
# fork+exec from a template), run for real. Extra arguments go to forkkit-demo (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release -j 2 --product forkkit-demo
exec .build/release/forkkit-demo "$@"
