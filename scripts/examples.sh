#!/usr/bin/env bash
# Builds and runs every example with small sizes and checks what each prints (CI runs this, so no
# example can rot). Each check is a line the example must print.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -j 2
bin=.build/debug
failed=0

check() {  # check NAME "expected text" ... -- COMMAND ...
    local name=$1; shift
    local expected=()
    while [ "$1" != "--" ]; do expected+=("$1"); shift; done
    shift
    echo "== $name: $*"
    local output
    if ! output=$(timeout 300 "$@" 2>&1); then
        echo "$output"; echo "FAILED: $name exited with an error"; failed=1; return
    fi
    echo "$output"
    for text in "${expected[@]}"; do
        if ! grep -qF -- "$text" <<<"$output"; then echo "FAILED: $name did not print: $text"; failed=1; fi
    done
}

check quickstart "7 from" "exit code 0" -- $bin/forkkit-quickstart
check remote-functions "area of 3 x 4: 12.0" "3 x 4 scaled by 2 and 0.5: 6.0 x 2.0" "caught BadShape as itself: a rectangle cannot be -1.0 wide" \
    "caught: forkkit_remote_functions.Overflow from 'add-all'" "the sum does not fit" "worker-pid=" \
    "progress events: [1, 2, 3, 4, 5]" "child ended: exit code 0" -- $bin/forkkit-remote-functions
check work-queue "factored 300 numbers" "every number's factors multiply back to it: true" -- $bin/forkkit-work-queue 300
check distributed-actors "digest of hello, 3 rounds:" "caught TooManyRounds as itself: 5000 rounds" "200 digests in 2 workers; each actor made 100 and 100" \
    -- $bin/forkkit-distributed-actors
check pool-service "factored 300 of 300" "factored 300 numbers; every product checks: true" "place=local stream=stdout" "is prime" \
    "service group ended; the pool has 0 workers left" -- $bin/forkkit-pool-service 300
check async-countdown "12 ticks" "they ran concurrently" -- $bin/forkkit-async-countdown
check shared-table "all four read the same table: true" -- $bin/forkkit-shared-table 32
check remote-pool "worker" ": direct command" "10000 squares, the last 100000000" "direct command:" -- $bin/forkkit-remote-pool
check plugin-host "9 words" "worker ended: exit code 0" -- $bin/forkkit-plugin-host
check prefork-exec "served by pid" 'now holds: "hi\n"' -- \
    $bin/forkkit-prefork-exec --servers 2 --connections 4 --exec-runs 20 --parent-megabytes 50
exit $failed
