# common.sh - shared by run-tsan.sh and run-lsan.sh (sourced, not run).
# Builds the project in BUILD with the given CMake flags, runs the unit
# tests and one Postfix integration test (INTEGRATION, a ctest -R regex)
# with the instrumented binaries, collects every sanitizer report written
# by any process (test programs and the daemon the integration test
# starts) through *_OPTIONS log_path, prints them, and ends with one line
# "N passed, N failed" (ctest results + one failure per report that
# involves mailwarden code; see classify.py).
# Environment: JOBS (default nproc), NICE (e.g. "nice -n 19"),
# MW_SAN_UNIT_EXCLUDE (ctest -E regex for unit tests to leave out),
# INTEGRATION (default integration/test_postfix_ratelimit: 12 parallel
# sessions, two daemons sharing one Redis, Redis killed mid-load).

san_top=$(cd "$(dirname "$0")/../.." && pwd)
san_jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
san_nice=${NICE:-}
INTEGRATION=${INTEGRATION:-integration/test_postfix_ratelimit}

# san_run NAME BUILD_DIR REPORT_DIR "CMAKE FLAGS" OPTIONS_VAR
san_run() {
    name=$1 build=$2 reports=$3 flags=$4
    rm -rf "$reports"
    mkdir -p "$reports"
    echo "=== $name: configure + build in $build ($flags)"
    # shellcheck disable=SC2086
    if ! $san_nice cmake -S "$san_top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo $flags >"$build.cmake.log" 2>&1 ||
       ! $san_nice cmake --build "$build" -j"$san_jobs" >"$build.build.log" 2>&1; then
        cat "$build.cmake.log" "$build.build.log" 2>/dev/null | tail -40
        echo "=== $name: build FAILED"
        echo "0 passed, 1 failed"
        return 1
    fi
    log="$build.ctest.log"
    : >"$log"
    echo "=== $name: unit tests"
    # shellcheck disable=SC2086
    $san_nice ctest --test-dir "$build" -L unit ${MW_SAN_UNIT_EXCLUDE:+-E "$MW_SAN_UNIT_EXCLUDE"} \
        --output-on-failure --timeout 900 >>"$log" 2>&1
    echo "=== $name: $INTEGRATION (daemon instrumented)"
    $san_nice ctest --test-dir "$build" -R "$INTEGRATION" --output-on-failure --timeout 900 >>"$log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ Test +#' "$log"
    pass=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log")
    skip=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Skipped|Not Run' "$log")
    fail=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Timeout|Exception|Child aborted|SEGFAULT)' "$log")
    if [ "$fail" -ne 0 ]; then
        echo "--- failing test output (from $log):"
        grep -E -A30 '\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception' "$log" | head -120
    fi
    # sanitizer reports from every instrumented process; those whose access
    # stacks never reach mailwarden code (races inside libunbound's own
    # threads, say) are shown but not counted (classify.py)
    nrep=0
    set -- "$reports"/*
    if [ -e "$1" ]; then
        /usr/bin/python3 "$san_top/tests/sanitizers/classify.py" "$@"
        nrep=$?
    fi
    echo "=== $name: ctest $pass passed, $fail failed, $skip skipped; $nrep sanitizer report(s) involving mailwarden code (logs in $reports)"
    echo "$pass passed, $((fail + nrep)) failed"
    [ "$fail" -eq 0 ] && [ "$nrep" -eq 0 ]
}
