/*
 * metrics_process.h - the standard Prometheus process_* metrics from
 * /proc/self (what every Prometheus client library exports, so dashboards
 * and alerts written for any exporter work on mailwarden too):
 *
 *   process_cpu_seconds_total      user + system CPU time
 *   process_resident_memory_bytes  resident set size
 *   process_virtual_memory_bytes   virtual memory size
 *   process_open_fds               open file descriptors
 *   process_max_fds                the RLIMIT_NOFILE soft limit
 *   process_start_time_seconds     start time, seconds since the epoch
 *
 * Thread-safe (reads /proc on each call, keeps no state).  Linux only; where
 * /proc cannot be read the affected samples are left out (never invented).
 */
#ifndef MW_CORE_METRICS_PROCESS_H
#define MW_CORE_METRICS_PROCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* The fields of /proc/PID/stat that the metrics use (proc(5)). */
typedef struct mw_proc_stat {
    unsigned long long utime, stime;   /* clock ticks */
    unsigned long long starttime;      /* clock ticks after boot */
    unsigned long long vsize;          /* bytes */
    unsigned long long rss;            /* pages */
} mw_proc_stat;

/* Parse the text of /proc/PID/stat (buf[0..len), need not be NUL-terminated).
 * The command name (field 2) may hold blanks and parentheses: the fields are
 * counted after its last ')'.  false on anything malformed (*out zeroed). */
bool mw_proc_stat_parse(const char *buf, size_t len, mw_proc_stat *out);

/* The "btime SECONDS" line of /proc/stat (boot time); false if absent/bad. */
bool mw_proc_btime_parse(const char *buf, size_t len, unsigned long long *btime);

/* Append the process_* families (HELP, TYPE, sample) in the text format
 * 0.0.4, read from /proc/self now. */
void mw_metrics_render_process(mw_buf *out);

#endif
