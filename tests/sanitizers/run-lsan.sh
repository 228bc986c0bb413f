#!/bin/sh
# tests/sanitizers/run-lsan.sh [BUILD_DIR] - AddressSanitizer + leak
# detection (and UBSan) run: builds with -DMW_SANITIZE=ON (default
# /tmp/mw-lsan-build), runs the unit tests and one Postfix integration test
# (INTEGRATION, default integration/test_postfix_ratelimit) against the
# instrumented daemon, and reports every ASan/LSan/UBSan report from any
# process, the daemon's exit-time leak check included (the daemon gets
# SIGTERM from the harness and exits normally, so LSan runs).
# Exit 0 clean, 1 failures or reports.  Last line "N passed, N failed".
# Third-party leaks are suppressed in ../fuzz/lsan.supp (each with a reason).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
build=${1:-/tmp/mw-lsan-build}
reports=$build-reports
ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
LSAN_OPTIONS="suppressions=$here/../fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
san_run ASan+LSan "$build" "$reports" "-DMW_SANITIZE=ON -DMW_TSAN=OFF"
