#!/usr/bin/env bash
# Fuzzes every decoder an untrusted peer can reach (frame reader, MessagePack-RPC, the control
# protocol, typed Codable values; Tests/FuzzHarness) with libFuzzer for SECONDS (default 60).
# Seeds come from Tests/FuzzCorpus; an input that crashes is written there as crash-<hash>:
# commit it, and the ordinary tests replay it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scripts/setup.sh
FORKKIT_FUZZ=1 swift build --sanitize=fuzzer --scratch-path .build-fuzz -c release -j 2 --product forkkit-fuzz
mkdir -p .build-fuzz/corpus
exec .build-fuzz/release/forkkit-fuzz -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
    -artifact_prefix=Tests/FuzzCorpus/ .build-fuzz/corpus Tests/FuzzCorpus
