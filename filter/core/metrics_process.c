/*
 * metrics_process.c - process_* metrics from /proc/self (metrics_process.h).
 *
 * Read at scrape time, not sampled: the values are the kernel's, the
 * scrape interval is Prometheus's business.  The parsers take a pointer
 * and a length and never trust the text (a fuzz target drives them).
 */
#include "metrics_process.h"
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Unsigned decimal at *p (up to end), no sign; advances *p. */
static bool get_ull(const char **p, const char *end, unsigned long long *v)
{
    unsigned long long n = 0;
    const char *s = *p;

    if (s >= end || *s < '0' || *s > '9')
        return false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (n > (~0ULL - 9) / 10)
            return false;
        n = n * 10 + (unsigned long long)(*s - '0');
    }
    *p = s;
    *v = n;
    return true;
}

bool mw_proc_stat_parse(const char *buf, size_t len, mw_proc_stat *out)
{
    const char *end = buf + len, *p = NULL;
    mw_proc_stat r = {0};

    memset(out, 0, sizeof *out);
    for (const char *q = buf; q < end; q++)   /* the last ')' ends the command name */
        if (*q == ')')
            p = q + 1;
    if (p == NULL || memchr(buf, '(', (size_t)(p - buf)) == NULL)
        return false;
    /* fields 3.. after ")": state is field 3; utime 14, stime 15, starttime 22,
     * vsize 23, rss 24 */
    for (int field = 3; field <= 24; field++) {
        if (p >= end || *p != ' ')
            return false;
        p++;
        const char *tok = p;
        while (p < end && *p != ' ' && *p != '\n')
            p++;
        if (p == tok)
            return false;
        unsigned long long *dst = field == 14 ? &r.utime : field == 15 ? &r.stime
                                : field == 22 ? &r.starttime : field == 23 ? &r.vsize
                                : field == 24 ? &r.rss : NULL;
        if (dst != NULL) {
            const char *t = tok;
            if (!get_ull(&t, p, dst) || t != p)
                return false;
        }
    }
    *out = r;
    return true;
}

bool mw_proc_btime_parse(const char *buf, size_t len, unsigned long long *btime)
{
    const char *end = buf + len;

    for (const char *line = buf; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl != NULL ? nl : end;
        if (le - line > 6 && memcmp(line, "btime ", 6) == 0) {
            const char *p = line + 6;
            return get_ull(&p, le, btime) && p == le;
        }
        line = le + 1;
    }
    return false;
}

/* Read a small /proc file whole; its length, or -1. */
static ssize_t slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    size_t n = mw_read_full(fd, buf, size);
    close(fd);
    return (ssize_t)n;
}

static void family(mw_buf *out, const char *name, const char *type, const char *help)
{
    mw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void mw_metrics_render_process(mw_buf *out)
{
    char buf[4096];
    ssize_t n;
    mw_proc_stat st;
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

    n = slurp("/proc/self/stat", buf, sizeof buf);
    if (n > 0 && tck > 0 && mw_proc_stat_parse(buf, (size_t)n, &st)) {
        family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        mw_buf_printf(out, "process_cpu_seconds_total %.2f\n", (double)(st.utime + st.stime) / (double)tck);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        mw_buf_printf(out, "process_virtual_memory_bytes %llu\n", st.vsize);
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        mw_buf_printf(out, "process_resident_memory_bytes %llu\n", st.rss * (unsigned long long)(page > 0 ? page : 4096));
        unsigned long long btime = 0;
        n = slurp("/proc/stat", buf, sizeof buf);
        if (n > 0 && mw_proc_btime_parse(buf, (size_t)n, &btime)) {
            family(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds.");
            mw_buf_printf(out, "process_start_time_seconds %.2f\n",
                          (double)btime + (double)st.starttime / (double)tck);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        long fds = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        mw_buf_printf(out, "process_open_fds %ld\n", fds > 0 ? fds - 1 : 0);   /* not opendir's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            mw_buf_puts(out, "process_max_fds +Inf\n");
        else
            mw_buf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}
