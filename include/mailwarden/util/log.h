/*
 * log.h - the one logging module: few verbs, syslog or stderr, text or JSON.
 *
 * Levels: debug (only when enabled), info, warn, error, fatal (logs and
 * exits 1: start-up and config problems only), panic (logs and aborts: our
 * own bugs only).  Bad external input is never fatal.
 *
 * Thread safety: mw_log_configure() may be called at any time; every line is
 * written under one lock so lines from different threads never interleave.
 *
 * Untrusted strings (HELO, addresses, header values) must pass through
 * mw_log_escape()/mw_str_printable() before they are logged; keys and secrets
 * are never logged.  Message-scoped lines start with the queue id.
 */
#ifndef MW_UTIL_LOG_H
#define MW_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { MW_LOG_DEBUG, MW_LOG_INFO, MW_LOG_WARN, MW_LOG_ERROR } mw_log_level;
/* STDERR: "TIME ident[pid]: level: msg" lines.  SYSLOG: syslog(3).
 * JOURNAL: stderr is systemd's journal stream: "<N>msg" lines (N the syslog
 * priority, which journald turns into PRIORITY=, so `journalctl -p` filters
 * them), no timestamp or pid of our own (the journal records both).  AUTO
 * (log.target = auto, the default) is resolved by the daemon with
 * mw_log_resolve_auto(); the tools treat it as STDERR. */
typedef enum { MW_LOG_TO_STDERR, MW_LOG_TO_SYSLOG, MW_LOG_TO_JOURNAL, MW_LOG_TO_AUTO } mw_log_target;
typedef enum { MW_LOG_FMT_TEXT, MW_LOG_FMT_JSON } mw_log_format;

/* One structured field of a summary line (value is logged escaped). */
typedef struct mw_log_kv {
    const char *key;
    const char *value;   /* NULL values are skipped */
} mw_log_kv;

/*
 * Set where and how lines go.  ident: program name for syslog/stderr
 * prefix; facility: syslog facility name ("mail", "local0".."local7",
 * "daemon"); returns false (and changes nothing) for an unknown facility.
 */
bool mw_log_configure(mw_log_target target, mw_log_format format, const char *ident,
                      const char *facility, mw_log_level min_level);
/* True when fd 2 is the journal stream systemd connected ($JOURNAL_STREAM
 * names its device and inode). */
bool mw_log_stderr_is_journal(void);
/* The target log.target = auto means for the daemon: the journal when
 * stderr is the journal stream, stderr when in the foreground, syslog
 * otherwise.  Other targets are returned unchanged, except that STDERR
 * becomes JOURNAL when stderr is the journal stream. */
mw_log_target mw_log_resolve_auto(mw_log_target t, bool foreground);
/* While on (start-up, before the daemon detaches from the terminal), lines
 * logged to syslog are also written to stderr, so whoever ran the command
 * sees why a start failed. */
void mw_log_copy_to_stderr(bool on);

/* Parse names used in the config ("debug", "info", ...).  false if unknown. */
bool mw_log_level_parse(const char *s, mw_log_level *out);
bool mw_log_facility_valid(const char *s);

void mw_log(mw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define mw_debug(...) mw_log(MW_LOG_DEBUG, __VA_ARGS__)
#define mw_info(...)  mw_log(MW_LOG_INFO, __VA_ARGS__)
#define mw_warn(...)  mw_log(MW_LOG_WARN, __VA_ARGS__)
#define mw_error(...) mw_log(MW_LOG_ERROR, __VA_ARGS__)
/* Like mw_warn/mw_error with ": strerror(errno)" appended. */
void mw_warn_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mw_error_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Start-up/config failure: log and exit(1). */
_Noreturn void mw_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Our own bug: log and abort(). */
_Noreturn void mw_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A structured line: text form "msg key=value key=value" (values with spaces
 * or quotes are quoted), JSON form {"ts":..,"level":..,"msg":..,key:value,..}
 * where the values of the counting keys (rcpts, size, ... : log.c's
 * number_keys) are JSON numbers when they are decimal integers, strings
 * otherwise.
 * Values are escaped here; callers pass raw strings.
 */
void mw_log_fields(mw_log_level level, const char *msg, const mw_log_kv *kv, size_t n);

/* True when debug lines would be written (guard expensive debug formatting). */
bool mw_log_debug_enabled(void);

#endif
