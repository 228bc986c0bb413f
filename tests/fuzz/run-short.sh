#!/bin/sh
# tests/fuzz/run-short.sh [SECONDS] - build every fuzz target (build.sh) and
# run each for SECONDS (default 20, or $FUZZ_SECONDS) on a scratch copy of
# its seed corpus, so the repository's corpus is never written to.
# Exit status: 0 all clean, 1 a crash/leak/timeout/assertion (the input is
# kept in $FUZZ_OUT, default /tmp/mw-fuzz-out, and its path printed),
# 77 clang/libFuzzer missing.  The last line is "N passed, N failed".
# A slow input is a finding like a crash: each target has a per-input time
# limit (libFuzzer -timeout, see limits() below), and an input that takes
# longer fails the run as "timeout" (issue 13: parsers must be linear).
# Environment: FUZZ_BUILD (default /tmp/mw-fuzz-build), FUZZ_ONLY (space-
# separated target names, e.g. "fromhdr authres"), NICE ("nice -n 19"),
# FUZZ_TIMEOUT (seconds per input, overrides every target's own limit).
set -u
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-${FUZZ_SECONDS:-20}}
build=${FUZZ_BUILD:-/tmp/mw-fuzz-build}
out=${FUZZ_OUT:-/tmp/mw-fuzz-out}
nice_cmd=${NICE:-}

"$here/build.sh" "$build" >/dev/null
rc=$?
[ $rc -eq 77 ] && { echo "0 passed, 0 failed (skipped: no clang/libFuzzer)"; exit 77; }
[ $rc -ne 0 ] && { echo "fuzz build FAILED"; echo "0 passed, 1 failed"; exit 1; }

# "SECONDS-PER-INPUT MAX-LEN" for target $1.  The limits hold under ASan+UBSan
# on a busy machine: a linear parser takes milliseconds on its largest
# input.  Header and record parsers get inputs up to 1 MiB, so that
# quadratic work has room to show; the DNS-driven targets (key lookups with
# their own 1 s deadline) get more time; libconfig is itself quadratic in
# the settings of one group (tests/unit/test_core_parser_cost.c), and the
# config file is the administrator's, so its inputs stay small.
limits() {
    case $1 in
    fromhdr|authres|spf_record|dmarc_record|failrep|exim_request|exim_rcpt|history_line|proc_stat)
        echo "2 1048576" ;;
    dkim_verify|milter_session|arc)
        echo "10 262144" ;;
    config)
        echo "2 16384" ;;
    rptin_xml)
        echo "2 1048576" ;;
    rptin_unpack)
        # 64 KiB of deflate can inflate to the 64 MiB cap: the cap is
        # what is being tested, and filling it takes time under ASan
        echo "10 65536" ;;
    *)
        echo "2 262144" ;;
    esac
}

mkdir -p "$out"
pass=0
fail=0
targets=${FUZZ_ONLY:-$(cd "$here/corpus" && ls)}
for t in $targets; do
    bin="$build/fuzz_$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: MISSING binary"
        fail=$((fail + 1))
        continue
    fi
    scratch=$(mktemp -d "/tmp/mw-fuzz-$t-XXXXXX")
    log="$out/fuzz_$t.log"
    # shellcheck disable=SC2046
    set -- $(limits "$t")
    tmo=${FUZZ_TIMEOUT:-$1}
    maxlen=$2
    # -error_exitcode/-timeout_exitcode: libFuzzer's default 77 would read as "skip"
    # shellcheck disable=SC2086
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0} \
    $nice_cmd "$bin" -max_total_time="$secs" -timeout="$tmo" -rss_limit_mb=2560 -max_len="$maxlen" \
        -error_exitcode=1 -timeout_exitcode=2 -print_final_stats=1 \
        -artifact_prefix="$out/fuzz_$t-" "$scratch" "$here/corpus/$t" >"$log" 2>&1
    st=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
    if [ $st -eq 0 ]; then
        echo "fuzz_$t: ok (${runs:-?} runs in ${secs}s, $cov, at most ${tmo}s and $maxlen bytes per input)"
        pass=$((pass + 1))
    else
        if [ $st -eq 2 ]; then
            echo "fuzz_$t: FAILED (exit 2: an input took more than ${tmo}s: a slow parser)"
        else
            echo "fuzz_$t: FAILED (exit $st)"
        fi
        grep -E 'ERROR: |SUMMARY: |Assertion|runtime error|Test unit written to|timeout after' "$log" | head -8 | sed 's/^/    /'
        echo "    full log: $log"
        fail=$((fail + 1))
    fi
    rm -rf "$scratch"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
