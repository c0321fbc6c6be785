#!/usr/bin/env bash
# ForkKit's microbenchmarks (Benchmarks/Microbenchmarks, ordo-one/benchmark): the codec, one call,
# one batch, one fork; wall clock and heap allocations, as percentiles. Installs what ForkKit needs
# (scripts/setup.sh) first. Not part of CI.
#
#   scripts/microbench.sh                      run them all and print the table
#   scripts/microbench.sh thresholds-check     run them and check allocations against the committed
#                                              thresholds (Benchmarks/Microbenchmarks/Thresholds)
#   scripts/microbench.sh thresholds-update    rewrite those thresholds from a run (then commit them)
#   scripts/microbench.sh baseline-update [N]  run them and save the results as baseline N (main)
#   scripts/microbench.sh baseline-check [N]   run them, print the comparison with baseline N, and
#                                              check time and allocations against it
#
# Further arguments go to `swift package benchmark`, for example `--filter 'rpc_.*'`.
# Exit status: 0 when within the thresholds (or better than them: then a note says so), 2 for a
# regression, anything else when the run itself failed.
set -euo pipefail
command=${1:-run}
(($#)) && shift
case $command in
run | thresholds-check | thresholds-update | baseline-update | baseline-check) ;;
*)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64 ;;
esac
cd "$(dirname "$0")/.."
scripts/setup.sh
cd Benchmarks/Microbenchmarks

benchmark() { swift package --allow-writing-to-package-directory benchmark "$@"; }

# Runs a check. `swift package benchmark` exits 1 for any failure (the plugin's error is printed as
# `error: benchmarkThresholdRegression`, `error: benchmarkThresholdImprovement`, ...), not with the
# tool's own status (2 for a regression, 4 for improvements only), so its output is read: a
# regression exits 2, improvements beyond the tolerances pass with a note.
check() {
    local what=$1 status=0 output
    shift
    output=$(mktemp)
    benchmark "$@" 2>&1 | tee "$output" || status=$?
    if ((status != 0)) && grep -q 'error: benchmarkThresholdImprovement' "$output"; then
        echo "microbench: better than the $what beyond the tolerances; passing." >&2
        [[ $what == thresholds ]] && echo "microbench: lower them with scripts/microbench.sh thresholds-update, and commit them." >&2
        status=0
    elif ((status != 0)) && grep -q 'error: benchmarkThresholdRegression' "$output"; then
        echo "microbench: a regression beyond the tolerances of the $what (above)." >&2
        status=2
    fi
    rm -f "$output"
    return "$status"
}

case $command in
run)
    benchmark run "$@" ;;
thresholds-check)
    check thresholds thresholds check "$@" ;;
thresholds-update)
    # Allocations only: time is per machine, so it is checked against a saved baseline instead.
    benchmark thresholds update --metric mallocCountTotal "$@" ;;
baseline-update)
    name=main
    [[ $# -gt 0 && $1 != -* ]] && { name=$1; shift; }
    benchmark baseline update "$name" "$@" ;;
baseline-check)
    name=main
    [[ $# -gt 0 && $1 != -* ]] && { name=$1; shift; }
    # One run, saved as a baseline of its own, then compared (the table) and checked.
    benchmark baseline update latest "$@"
    benchmark baseline compare "$name" latest "$@"
    check baseline baseline check "$name" latest "$@" ;;
esac
