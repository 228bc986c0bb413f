/*
 * test_core_metrics_process.c - process_* metrics (metrics_process.c): the
 * /proc/PID/stat and /proc/stat parsers on fixed and hostile text, and the
 * rendered families on this very process.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "metrics_process.h"
#include "mwtest.h"

/* A real line from Linux 6.1 (fields 1..52), command name with blanks and ')'. */
static const char STAT[] =
    "4242 (mail) warden (x)) S 1 4242 4242 0 -1 4194560 2810 0 0 0 "
    "137 58 0 0 20 0 5 0 123456 987654321 2048 18446744073709551615 "
    "1 1 0 0 0 0 0 4096 16386 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

static void test_stat_parse(void)
{
    mw_proc_stat st;

    MW_TEST_ASSERT(mw_proc_stat_parse(STAT, strlen(STAT), &st));
    MW_TEST_EQ_INT(st.utime, 137);
    MW_TEST_EQ_INT(st.stime, 58);
    MW_TEST_EQ_INT(st.starttime, 123456);
    MW_TEST_EQ_INT(st.vsize, 987654321);
    MW_TEST_EQ_INT(st.rss, 2048);
    /* not NUL-terminated: only len bytes are read */
    char *copy = malloc(sizeof STAT - 1);
    memcpy(copy, STAT, sizeof STAT - 1);
    MW_TEST_ASSERT(mw_proc_stat_parse(copy, sizeof STAT - 1, &st));
    MW_TEST_EQ_INT(st.rss, 2048);
    free(copy);
}

static void test_stat_hostile(void)
{
    mw_proc_stat st;
    const char *bad[] = {
        "",
        "4242 mail S 1 2 3",                                   /* no parentheses */
        "4242 (mail S 1 2 3",                                  /* no ')' */
        "4242 (mail) S 1 4242 4242 0 -1 4194560 2810 0 0 0",   /* cut before utime */
        "4242 (mail) S 1 4242 4242 0 -1 4194560 2810 0 0 0 x 58 0 0 20 0 5 0 1 2 3",   /* utime x */
        "4242 (mail) S 1 4242 4242 0 -1 4194560 2810 0 0 0 1 58 0 0 20 0 5 0 1 2 -3",  /* negative rss */
        "4242 (mail) S 1 4242 4242 0 -1 4194560 2810 0 0 0 1 58 0 0 20 0 5 0 1 2 99999999999999999999999",
        "4242 (mail) S  1 4242 4242 0 -1 4194560 2810 0 0 0 1 58 0 0 20 0 5 0 1 2 3",  /* empty field */
        ") (",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&st, 0x5a, sizeof st);
        if (!MW_TEST_ASSERT(!mw_proc_stat_parse(bad[i], strlen(bad[i]), &st)))
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        MW_TEST_EQ_INT(st.rss, 0);   /* zeroed on failure */
    }
}

static void test_btime(void)
{
    static const char s[] = "cpu  1 2 3\ncpu0 1 2 3\nintr 5\nctxt 9\nbtime 1764921600\nprocesses 77\n";
    unsigned long long b = 0;

    MW_TEST_ASSERT(mw_proc_btime_parse(s, strlen(s), &b));
    MW_TEST_EQ_INT(b, 1764921600);
    MW_TEST_ASSERT(!mw_proc_btime_parse("cpu 1\n", 6, &b));
    MW_TEST_ASSERT(!mw_proc_btime_parse("btime x\n", 8, &b));
    MW_TEST_ASSERT(!mw_proc_btime_parse("btime ", 6, &b));
    MW_TEST_ASSERT(!mw_proc_btime_parse("btime 12 13\n", 12, &b));
}

/* The value of a sample "name VALUE" in text, or -1. */
static double sample(const char *text, const char *name)
{
    char want[128];
    snprintf(want, sizeof want, "\n%s ", name);
    const char *p = strstr(text, want);
    return p != NULL ? strtod(p + strlen(want), NULL) : -1;
}

static void test_render_self(void)
{
    time_t t0 = time(NULL);
    mw_buf b = MW_BUF_INIT, b2 = MW_BUF_INIT;
    const char *fams[] = {"process_cpu_seconds_total counter", "process_resident_memory_bytes gauge",
                          "process_virtual_memory_bytes gauge", "process_open_fds gauge",
                          "process_max_fds gauge", "process_start_time_seconds gauge"};

    mw_buf_putc(&b, '\n');
    mw_metrics_render_process(&b);
    const char *t = mw_buf_cstr(&b);
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "# TYPE %s\n", fams[i]);
        if (!MW_TEST_ASSERT(strstr(t, want) != NULL))
            fprintf(stderr, "  missing %s in:\n%s", fams[i], t);
    }
    double rss = sample(t, "process_resident_memory_bytes"), vsz = sample(t, "process_virtual_memory_bytes");
    MW_TEST_ASSERT(rss > 0 && rss <= vsz);
    MW_TEST_ASSERT(sample(t, "process_cpu_seconds_total") >= 0);
    double start = sample(t, "process_start_time_seconds");
    /* this test binary started a moment ago (generous: a slow, loaded machine) */
    if (!MW_TEST_ASSERT(start > (double)t0 - 600 && start <= (double)t0 + 2))
        fprintf(stderr, "  start %f, now %ld\n", start, (long)t0);

    /* one more open descriptor shows as exactly one more */
    double fds = sample(t, "process_open_fds");
    int fd = open("/dev/null", O_RDONLY);
    mw_buf_putc(&b2, '\n');
    mw_metrics_render_process(&b2);
    MW_TEST_EQ_INT((long)sample(mw_buf_cstr(&b2), "process_open_fds"), (long)fds + 1);
    MW_TEST_ASSERT(sample(mw_buf_cstr(&b2), "process_max_fds") >= fds + 1);
    close(fd);
    mw_buf_free(&b);
    mw_buf_free(&b2);
}

int main(void)
{
    MW_TEST_RUN(test_stat_parse);
    MW_TEST_RUN(test_stat_hostile);
    MW_TEST_RUN(test_btime);
    MW_TEST_RUN(test_render_self);
    return MW_TEST_SUMMARY();
}
