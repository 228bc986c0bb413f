/*
 * reports_in.h - `mailwarden reports-in`: the store of received DMARC
 * aggregate reports (reports_in_store.c, SQLite) and its renderings
 * (reports_in_out.c: text, JSON, HTML).  The command itself is
 * reports_in.c.
 */
#ifndef MW_TOOLS_REPORTS_IN_H
#define MW_TOOLS_REPORTS_IN_H

#include <stdbool.h>
#include <stdio.h>

#include "buf.h"
#include "rptin.h"

#ifndef MW_REPORTS_IN_DB
#define MW_REPORTS_IN_DB "/var/lib/mailwarden/reports-in.db"
#endif

typedef struct mw_rin_db mw_rin_db;

/* Open (creating the file and schema when absent) the store at path.
 * NULL + why on failure.  Close with mw_rin_close (NULLs *db). */
mw_rin_db *mw_rin_open(const char *path, char *why, size_t whylen);
void mw_rin_close(mw_rin_db **db);

typedef enum { MW_RIN_STORED, MW_RIN_DUP, MW_RIN_FAIL } mw_rin_status;
/*
 * Store one parsed report in one transaction: all its rows or nothing.
 * A report already stored (same org_name and report_id) stores nothing and
 * returns MW_RIN_DUP.  origin says where it came from (kept for the user).
 */
mw_rin_status mw_rin_store(mw_rin_db *db, const mw_rptin_report *r, const char *origin, char *why,
                           size_t whylen);

/* Per source IP, over the reports whose date range ends in (from, to]. */
typedef struct mw_rin_source {
    char              *ip;
    unsigned long long messages;
    unsigned long long spf_pass, dkim_pass;        /* raw auth results */
    unsigned long long spf_aligned, dkim_aligned;  /* policy_evaluated */
    unsigned long long dmarc_pass;                 /* either aligned */
    unsigned long long quarantined, rejected;      /* disposition applied */
    char              *header_from;                /* the most frequent header_from */
} mw_rin_source;

typedef struct mw_rin_period {
    long long          from, to;
    unsigned long long reports, messages, dmarc_pass;
    mw_rin_source     *src;                        /* by messages, descending */
    size_t             nsrc;
} mw_rin_period;

typedef struct mw_rin_summary {
    const char   *domain;      /* NULL: every domain */
    mw_rin_period cur;
    bool          compared;    /* prev is filled (the window is bounded) */
    mw_rin_period prev;        /* the same length just before cur */
    char        **domains;     /* policy domains seen in cur */
    size_t        ndomains;
} mw_rin_summary;

/* Fill s for domain (NULL = all) and the window (from, to]; from ==
 * LLONG_MIN means everything up to `to` (no comparison). */
bool mw_rin_summarise(mw_rin_db *db, const char *domain, long long from, long long to, mw_rin_summary *s,
                      char *why, size_t whylen);
void mw_rin_summary_free(mw_rin_summary *s);

/* A pass-rate change of at least this many percentage points is reported. */
#define MW_RIN_CHANGE_POINTS 10

/* Renderings (reports_in_out.c).  Untrusted strings are escaped for each. */
void mw_rin_text(const mw_rin_summary *s, mw_buf *out);
void mw_rin_json(const mw_rin_summary *s, mw_buf *out);
void mw_rin_html(const mw_rin_summary *s, mw_buf *out);

#endif
