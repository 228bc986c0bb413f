#!/bin/sh
# tests/sanitizers/run-tsan.sh [BUILD_DIR] - ThreadSanitizer run: builds the
# project with -DMW_TSAN=ON (default /tmp/mw-tsan-build), runs the unit tests
# and one Postfix integration test (INTEGRATION, default
# integration/test_postfix_ratelimit) against the instrumented daemon, and
# reports every data race / lock-order report from any process.
# Exit 0 clean, 1 failures or reports.  Last line "N passed, N failed".
# Run as root like the integration tests (Postfix, network namespaces).
# Note: libunbound, libspf2, libopendkim, hiredis and OpenSSL are
# not instrumented; races inside them are invisible, and a report whose
# stack is entirely inside one of them is listed in tsan.supp with a reason.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
build=${1:-/tmp/mw-tsan-build}
reports=$build-reports
# second_deadlock_stack: both stacks of a lock-order inversion.
# exitcode=0: a report must not turn an otherwise passing test into a
# failure twice; reports are counted from the log files instead.
TSAN_OPTIONS="log_path=$reports/tsan:second_deadlock_stack=1:history_size=4:exitcode=0:suppressions=$here/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export TSAN_OPTIONS
san_run TSan "$build" "$reports" "-DMW_TSAN=ON -DMW_SANITIZE=OFF"
