/*
 * fuzz_proc_stat.c - the /proc/PID/stat and /proc/stat parsers
 * (core/metrics_process.h): exact-size buffer, no NUL terminator.
 */
#include <assert.h>
#include <string.h>

#include "fuzz_common.h"
#include "metrics_process.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = fz_exact(data, size);
    mw_proc_stat st;
    unsigned long long b;

    memset(&st, 0x5a, sizeof st);
    if (!mw_proc_stat_parse(v, size, &st))
        assert(st.rss == 0 && st.utime == 0);
    (void)mw_proc_btime_parse(v, size, &b);
    free(v);
    return 0;
}
