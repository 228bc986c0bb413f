/*
 * history.h - the DMARC aggregate history on disk: append-only, one line
 * per message evaluated against a published policy, versioned and
 * checksummed so a torn tail after a crash is detected and skipped, files
 * rotated by time, fsync policy configurable.  No SQL.  The report tool
 * reads one or more history directories (a fleet's hosts).
 *
 * Thread safety: the writer is shared by all threads (one lock around the
 * append); the reader is single-threaded.
 */
#ifndef MW_CHECKS_HISTORY_H
#define MW_CHECKS_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* One DKIM signature as recorded. */
typedef struct mw_history_dkim {
    char *domain, *selector, *result;
} mw_history_dkim;

/* Everything an RFC 9990 aggregate report needs about one message. */
typedef struct mw_history_record {
    time_t  time;
    char   *source_ip;
    char   *header_from;        /* domain */
    char   *envelope_from;      /* domain ("" for null sender) */
    char   *envelope_to;        /* domain of the first recipient */
    char   *spf_domain, *spf_scope, *spf_result;   /* scope "mfrom" or "helo" */
    mw_history_dkim *dkim;
    size_t  ndkim;
    /* policy as published */
    char   *policy_domain, *p, *sp, *np, *adkim, *aspf, *t, *psd, *discovery;
    /* policy evaluated */
    char   *disposition;        /* none|quarantine|reject as applied */
    char   *dkim_aligned, *spf_aligned;   /* "pass"/"fail" */
    char   *override;           /* local override reason(s) or NULL */
    char  **rua;                /* NULL-terminated */
    char   *reporter_host;      /* this host (fleet merge) */
} mw_history_record;

void mw_history_record_clear(mw_history_record *r);

typedef struct mw_history_options {
    unsigned fsync_interval_ms;   /* fsync at least this often (default 1000; 0 = every record) */
    unsigned rotate_seconds;      /* new file per period (default 3600) */
} mw_history_options;

typedef struct mw_history mw_history;

/* Open (create, one level, mode 0750) the directory for appending and open
 * the current period's file; starts the flusher thread when
 * fsync_interval_ms > 0.  o may be NULL (defaults).  NULL + reason on error,
 * which names the effective user: a directory or current file that user
 * cannot write is an error here, not at the first record or rotation.
 * Everything is created as the calling process's effective user: call it
 * after dropping privileges. */
mw_history *mw_history_open(const char *dir, const mw_history_options *o, char *err, size_t errlen);
/* Append one record.  false (with errno-style reason logged once per
 * interval) when the disk refuses (ENOSPC, EIO): the caller applies the
 * configured action. */
bool mw_history_append(mw_history *h, const mw_history_record *r);
/* Flush and fsync now (shutdown, rotation). */
void mw_history_sync(mw_history *h);
/* How many records this writer appended are known to be on disk (synced
 * by the flusher, a rotation, mw_history_sync() or, with
 * fsync_interval_ms 0, the append itself).  For tests and metrics. */
uint64_t mw_history_synced(mw_history *h);
void mw_history_close(mw_history **h);

/* Reader statistics. */
typedef struct mw_history_stats {
    size_t records, torn, bad_checksum, bad_version, files;
} mw_history_stats;

/* Call cb for every intact record in dir with time in [from, to) (files
 * outside the window are skipped by name).  cb returns false to stop.
 * The record passed to cb is freed after cb returns.  stats (may be NULL)
 * is reset first: records = delivered to cb; torn = incomplete or
 * undecodable lines; bad_checksum; bad_version = intact lines of another
 * format version; files = files read.  false + err on an I/O error (the
 * other files are still read). */
bool mw_history_read(const char *dir, time_t from, time_t to,
                     bool (*cb)(const mw_history_record *r, void *arg), void *arg,
                     mw_history_stats *stats, char *err, size_t errlen);

#endif
