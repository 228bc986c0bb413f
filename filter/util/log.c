/*
 * log.c - one logging module: syslog or stderr, text or JSON.
 *
 * Design: the settings and every write are under one mutex, so lines from
 * the milter's connection threads never interleave and a reload may reconfigure logging
 * while other threads log.  Formatting happens outside the lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "strutil.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static mw_log_target log_target = MW_LOG_TO_STDERR;
static mw_log_format log_format = MW_LOG_FMT_TEXT;
/* Read without the lock on every log call and every trace check
 * (mw_log_debug_enabled, called per trace line of every message): taking
 * log_lock there made the connection threads queue on it (measured behind
 * Postfix, 20 sessions: the most contended futex of the daemon). */
static _Atomic int log_min = MW_LOG_INFO;
static char log_ident[64] = "mailwarden";
static int syslog_open;
static bool copy_stderr;

static const struct { const char *name; int fac; } facilities[] = {
    {"mail", LOG_MAIL}, {"daemon", LOG_DAEMON}, {"user", LOG_USER},
    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

static const char *level_names[] = {"debug", "info", "warning", "error"};

bool mw_log_facility_valid(const char *s)
{
    for (size_t i = 0; i < sizeof facilities / sizeof facilities[0]; i++)
        if (s && strcasecmp(s, facilities[i].name) == 0)
            return true;
    return false;
}

bool mw_log_level_parse(const char *s, mw_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (s && (strcasecmp(s, names[i]) == 0 || strcasecmp(s, level_names[i]) == 0)) {
            *out = (mw_log_level)i;
            return true;
        }
    return false;
}

bool mw_log_configure(mw_log_target target, mw_log_format format, const char *ident,
                      const char *facility, mw_log_level min_level)
{
    int fac = LOG_MAIL;
    if (facility) {
        size_t i;
        for (i = 0; i < sizeof facilities / sizeof facilities[0]; i++)
            if (strcasecmp(facility, facilities[i].name) == 0)
                break;
        if (i == sizeof facilities / sizeof facilities[0])
            return false;
        fac = facilities[i].fac;
    }
    pthread_mutex_lock(&log_lock);
    if (ident)
        snprintf(log_ident, sizeof log_ident, "%s", ident);
    log_target = target;
    log_format = format;
    atomic_store_explicit(&log_min, (int)min_level, memory_order_relaxed);
    if (target == MW_LOG_TO_SYSLOG) {
        if (syslog_open)
            closelog();
        openlog(log_ident, LOG_PID | LOG_NDELAY, fac);
        syslog_open = 1;
    }
    pthread_mutex_unlock(&log_lock);
    return true;
}

bool mw_log_stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

mw_log_target mw_log_resolve_auto(mw_log_target t, bool foreground)
{
    bool journal = mw_log_stderr_is_journal();
    if (t == MW_LOG_TO_AUTO)
        return journal ? MW_LOG_TO_JOURNAL : foreground ? MW_LOG_TO_STDERR : MW_LOG_TO_SYSLOG;
    if (t == MW_LOG_TO_STDERR && journal)
        return MW_LOG_TO_JOURNAL;
    return t;
}

void mw_log_copy_to_stderr(bool on)
{
    pthread_mutex_lock(&log_lock);
    copy_stderr = on;
    pthread_mutex_unlock(&log_lock);
}

bool mw_log_debug_enabled(void)
{
    return atomic_load_explicit(&log_min, memory_order_relaxed) <= MW_LOG_DEBUG;
}

static int syslog_prio(mw_log_level l)
{
    switch (l) {
    case MW_LOG_DEBUG: return LOG_DEBUG;
    case MW_LOG_INFO: return LOG_INFO;
    case MW_LOG_WARN: return LOG_WARNING;
    default: return LOG_ERR;
    }
}

/* "2026-12-05T09:00:00.123Z" */
static void timestamp(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%.20s.%03dZ", tbuf, (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Write one finished line (msg is the text body, or a JSON object's
 * members after the timestamp and level: `"msg":...,...}`). */
static void emit(mw_log_level level, const char *msg, bool is_json_obj)
{
    if ((int)level < atomic_load_explicit(&log_min, memory_order_relaxed))
        return;
    char tbuf[40];
    timestamp(tbuf, sizeof tbuf);     /* outside the lock: only the write is serialised */
    int pid = (int)getpid();
    pthread_mutex_lock(&log_lock);
    mw_buf line = MW_BUF_INIT;
    if (log_format == MW_LOG_FMT_JSON) {
        /* the journal and syslog stamp lines themselves; a JSON line
         * written anywhere else carries its own time */
        mw_buf_putc(&line, '{');
        if (log_target != MW_LOG_TO_JOURNAL) {
            mw_buf_puts(&line, "\"ts\":");
            mw_json_cstr(&line, tbuf);
            mw_buf_putc(&line, ',');
        }
        mw_buf_puts(&line, "\"level\":");
        mw_json_cstr(&line, level_names[level]);
        mw_buf_putc(&line, ',');
        if (is_json_obj) {
            mw_buf_puts(&line, msg);
        } else {
            mw_buf_puts(&line, "\"msg\":");
            mw_json_cstr(&line, msg);
            mw_buf_putc(&line, '}');
        }
    }
    const char *out = log_format == MW_LOG_FMT_JSON ? mw_buf_cstr(&line) : msg;
    if (log_target == MW_LOG_TO_SYSLOG) {
        syslog(syslog_prio(level), "%s", out);
        if (copy_stderr && level >= MW_LOG_WARN) {
            fprintf(stderr, "%s: %s: %s\n", log_ident, level_names[level], msg);
            fflush(stderr);
        }
    } else if (log_target == MW_LOG_TO_JOURNAL) {
        /* one "<N>" per line: a message is one line (callers escape) */
        fprintf(stderr, "<%d>%s\n", syslog_prio(level), out);
        fflush(stderr);
    } else {
        if (log_format == MW_LOG_FMT_JSON)
            fprintf(stderr, "%s\n", out);
        else
            fprintf(stderr, "%s %s[%d]: %s: %s\n", tbuf, log_ident, pid, level_names[level], msg);
        fflush(stderr);
    }
    pthread_mutex_unlock(&log_lock);
    mw_buf_free(&line);
}

static void vlog(mw_log_level level, const char *suffix, const char *fmt, va_list ap)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_vprintf(&b, fmt, ap);
    if (suffix) {
        mw_buf_puts(&b, ": ");
        mw_buf_puts(&b, suffix);
    }
    emit(level, mw_buf_cstr(&b), false);
    mw_buf_free(&b);
}

void mw_log(mw_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void mw_warn_errno(const char *fmt, ...)
{
    char eb[128];
    const char *e = strerror_r(errno, eb, sizeof eb);
    va_list ap;
    va_start(ap, fmt);
    vlog(MW_LOG_WARN, e, fmt, ap);
    va_end(ap);
}

void mw_error_errno(const char *fmt, ...)
{
    char eb[128];
    const char *e = strerror_r(errno, eb, sizeof eb);
    va_list ap;
    va_start(ap, fmt);
    vlog(MW_LOG_ERROR, e, fmt, ap);
    va_end(ap);
}

void mw_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(MW_LOG_ERROR, NULL, fmt, ap);
    va_end(ap);
    exit(1);
}

void mw_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(MW_LOG_ERROR, "panic (this is a bug)", fmt, ap);
    va_end(ap);
    abort();
}

static bool needs_quotes(const char *v)
{
    if (!*v)
        return true;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f)
            return true;
    return false;
}

/* Keys whose values count something: numbers in JSON.  (A table here rather
 * than a flag per field: a queue id may be all digits and must stay a string,
 * so it is the key that decides, not the look of the value.) */
static bool is_number_key(const char *key)
{
    static const char *const number_keys[] = {"rcpts", "size", "bytes", "count", "pid", "generation",
                                              "errors", "messages", NULL};
    for (size_t i = 0; number_keys[i] != NULL; i++)
        if (strcmp(key, number_keys[i]) == 0)
            return true;
    return false;
}

/* A JSON integer: -?(0|[1-9][0-9]*), at most 18 digits. */
static bool is_integer(const char *v)
{
    const char *p = v + (*v == '-');
    size_t n = strspn(p, "0123456789");
    return n > 0 && n <= 18 && p[n] == '\0' && (p[0] != '0' || n == 1);
}

void mw_log_fields(mw_log_level level, const char *msg, const mw_log_kv *kv, size_t n)
{
    pthread_mutex_lock(&log_lock);
    mw_log_format fmt = log_format;
    pthread_mutex_unlock(&log_lock);

    mw_buf b = MW_BUF_INIT;
    if (fmt == MW_LOG_FMT_JSON) {
        /* the members after "level" (emit() writes "ts" and "level") */
        mw_buf_puts(&b, "\"msg\":");
        mw_json_cstr(&b, msg);
        for (size_t i = 0; i < n; i++) {
            if (!kv[i].value)
                continue;
            mw_buf_putc(&b, ',');
            mw_json_cstr(&b, kv[i].key);
            mw_buf_putc(&b, ':');
            if (is_number_key(kv[i].key) && is_integer(kv[i].value))
                mw_buf_puts(&b, kv[i].value);
            else
                mw_json_cstr(&b, kv[i].value);
        }
        mw_buf_putc(&b, '}');
        emit(level, mw_buf_cstr(&b), true);
    } else {
        mw_buf_puts(&b, msg);
        for (size_t i = 0; i < n; i++) {
            if (!kv[i].value)
                continue;
            mw_buf_printf(&b, " %s=", kv[i].key);
            if (needs_quotes(kv[i].value)) {
                mw_buf_putc(&b, '"');
                mw_str_printable(&b, kv[i].value, strlen(kv[i].value), 512);
                mw_buf_putc(&b, '"');
            } else {
                mw_str_printable(&b, kv[i].value, strlen(kv[i].value), 512);
            }
        }
        emit(level, mw_buf_cstr(&b), false);
    }
    mw_buf_free(&b);
}
