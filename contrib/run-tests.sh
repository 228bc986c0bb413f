#!/bin/sh
# run-tests.sh - install what the tests need, build twice (normal and
# ASan+UBSan), run every test (unit, conformance, integration) in both
# builds, and end with one summary line "N passed, N failed".
# Usage: contrib/run-tests.sh   (from anywhere; as root: Postfix, netns)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh contrib/install-deps.sh --test || exit 1

jobs=$(nproc 2>/dev/null || echo 2)
total_pass=0
total_fail=0
rc=0
for variant in asan normal; do
    dir="$top/build-test-$variant"
    flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo"
    [ "$variant" = asan ] && flags="-DCMAKE_BUILD_TYPE=Debug -DMW_SANITIZE=ON"
    echo "=== $variant build ($flags) ==="
    # shellcheck disable=SC2086
    if ! cmake -S "$top" -B "$dir" $flags >"$dir.cmake.log" 2>&1 || ! cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1; then
        cat "$dir.cmake.log" "$dir.build.log" 2>/dev/null | tail -50
        echo "=== $variant build FAILED ==="
        rc=1
        total_fail=$((total_fail + 1))
        continue
    fi
    log="$dir.ctest.log"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir "$dir" --output-on-failure --timeout 900 >"$log" 2>&1
    [ $? -eq 0 ] || rc=1
    cat "$log"
    # "N% tests passed, F tests failed out of T"
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    t=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/')
    if [ -z "$line" ]; then
        rc=1; total_fail=$((total_fail + 1))
    else
        total_pass=$((total_pass + t - f)); total_fail=$((total_fail + f))
    fi
done
# ThreadSanitizer: the daemon is multi-threaded (a thread per milter connection).  Unit tests and
# the Postfix rate-limit test (12 parallel sessions, two daemons, Redis
# killed mid-load) with an instrumented build; reports that reach our code
# count as failures (tests/sanitizers/run-tsan.sh).
echo "=== tsan build ==="
tsan_log="$top/build-test-tsan.log"
sh "$top/tests/sanitizers/run-tsan.sh" "$top/build-test-tsan" >"$tsan_log" 2>&1
[ $? -eq 0 ] || rc=1
cat "$tsan_log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tsan_log" | tail -1)
if [ -n "$line" ]; then
    p=${line%% passed*}
    f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed/\1/')
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
else
    rc=1; total_fail=$((total_fail + 1))
fi

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$rc" -eq 0 ]
