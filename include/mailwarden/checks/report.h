/*
 * report.h - DMARC aggregate reports (RFC 9990; RFC 7489 format as an
 * option) from the on-disk history (history.h): no database.
 *
 *   report_agg.c    history directories -> one mw_report per (policy
 *                   domain, period), rows grouped and counted
 *   report_xml.c    mw_report -> XML (libxml2 xmlTextWriter), report id,
 *                   file name
 *   report_mail.c   gzip (zlib), the MIME message, DKIM signing with our
 *                   signer, rua URI parsing
 *   report_dest.c   external destination verification (_report._dmarc),
 *                   the destination's own rua replacing the address
 *   report_split.c  a report too large for one mail split by source range
 *   report_state.c  the state journal: what was sent to whom, so a rerun or
 *                   a crashed run neither double-sends nor skips
 *
 * The command itself (periods, delivery, pacing, retries, destination
 * verification) is filter/tools/report.c.
 *
 * Thread safety: none needed (the report tool is single-threaded); no
 * globals.
 */
#ifndef MW_CHECKS_REPORT_H
#define MW_CHECKS_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dmarc.h"
#include "dns.h"
#include "history.h"

/* ---- aggregation --------------------------------------------------------- */

typedef struct mw_report_dkim {
    char *domain, *selector, *result;   /* selector "" when the history has none */
} mw_report_dkim;

/* One <record>: every message with the same source IP, disposition,
 * alignment results, override, identifiers and authentication results. */
typedef struct mw_report_row {
    char *key;                 /* the grouping key (internal; rows are sorted by it) */
    unsigned long long count;
    char *source_ip;
    char *disposition;         /* as applied: none, quarantine, reject */
    char *dkim_aligned, *spf_aligned;   /* pass / fail */
    char *override;            /* the history's override text, NULL if none */
    char *header_from, *envelope_from, *envelope_to;   /* "" when unknown */
    char *spf_domain, *spf_scope, *spf_result;         /* "" when unknown */
    mw_report_dkim *dkim;
    size_t ndkim;
} mw_report_row;

/* One report: a policy domain and a period. */
typedef struct mw_report {
    char  *policy_domain;
    time_t begin, end;         /* the period [begin, end) (UTC, interval-aligned) */
    /* the policy as published (from the period's latest record); "" absent */
    char  *p, *sp, *np, *adkim, *aspf, *t, *psd, *discovery;
    time_t policy_time;        /* time of the record the policy was taken from */
    char **rua;                /* NULL-terminated, as published (latest record) */
    size_t nrua;
    mw_report_row *rows;       /* sorted by source IP, then key */
    size_t nrows;
    unsigned long long messages;   /* sum of the row counts */
} mw_report;

typedef struct mw_report_set {
    mw_report *r;              /* sorted by policy domain, then begin */
    size_t n;
    mw_history_stats stats;    /* summed over every directory read */
    size_t bad_records;        /* intact records refused alone: their policy domain is not
                                  a host name or their source IP not an address */
    char   bad_why[200];       /* the first such refusal (escaped), "" when none */
    void *priv;                /* internal: the lookup index while adding */
} mw_report_set;

/*
 * Read every history directory (one per MTA host) for records with time in
 * [from, to) and aggregate them into out (cleared first): one report per
 * (policy domain, interval-aligned period).  Torn or corrupt history lines
 * are skipped and counted in out->stats, never fatal.  Records without a
 * policy domain are ignored.  Returns false when a directory could not be
 * read (reason of the first such in err); the others are still used.
 */
bool mw_report_aggregate(const char *const *dirs, size_t ndirs, time_t from, time_t to,
                         unsigned interval, mw_report_set *out, char *err, size_t errlen);
void mw_report_set_free(mw_report_set *s);

/* Add one history record to the set (the building block of
 * mw_report_aggregate; for tests).  false when r has no policy domain, or
 * (counted in s->bad_records, reason in s->bad_why) when its policy domain
 * is not a valid host name or its source IP not an IPv4/IPv6 address: such
 * a record is refused alone, the others are unaffected. */
bool mw_report_add(mw_report_set *s, const mw_history_record *r, unsigned interval);
/* Sort reports and rows (done by mw_report_aggregate). */
void mw_report_finish(mw_report_set *s);

/* ---- XML ----------------------------------------------------------------------- */

typedef struct mw_report_meta {
    const char      *org_name;
    const char      *email;
    const char      *extra_contact;   /* NULL or "": none */
    const char      *receiver;        /* file name and Submitter */
    const char      *generator;       /* "mailwarden 0.1.0" (RFC 9990 only) */
    mw_report_format format;
} mw_report_meta;

/* The report id: 32 lower-case hex digits (a SHA-256 prefix) of receiver,
 * policy domain and period, so unique per (receiver, domain, period) and
 * the same on every run.  Caller frees. */
char *mw_report_id(const mw_report *r, const mw_report_meta *m);

/* "receiver!policy-domain!begin!end!id.xml.gz" (end as in <date_range>:
 * the period's last second).  Caller frees. */
char *mw_report_filename(const mw_report *r, const mw_report_meta *m, const char *id);

/*
 * The report as XML (UTF-8, with declaration) into out (reset first), in
 * m->format: RFC 9990 (namespace urn:ietf:params:xml:ns:dmarc-2.0) or RFC
 * 7489.  Integer timestamps, lower-case enumerations, never an empty
 * auth_results (an SPF result "none" is written when nothing else is
 * known), reason elements only with a type.  false + err on a libxml2
 * error.
 */
bool mw_report_xml(const mw_report *r, const mw_report_meta *m, const char *id, mw_buf *out,
                   char *err, size_t errlen);

/* ---- splitting ------------------------------------------------------------------- */

/* One report as mailed: the whole report or one source range of it. */
typedef struct mw_report_part {
    mw_report view;   /* shallow copy: rows point into the whole report (not owned);
                         messages is the sum of this part's rows */
    char     *id;     /* its report id (owned) */
    mw_buf    xml;    /* its XML (owned) */
    mw_buf    gz;     /* its gzip XML (owned) */
} mw_report_part;

typedef struct mw_report_parts {
    mw_report_part *p;
    size_t          n;
} mw_report_parts;

/*
 * r as one or more reports whose gzip XML is at most max_gz bytes (0: no
 * limit) into out (overwritten; free with mw_report_parts_free, before r).
 * A report that fits is one part with id mw_report_id(r, m).  Otherwise
 * the rows (sorted by source IP) are cut into contiguous source ranges,
 * the rows of one source IP kept together unless they alone are too big;
 * each part is a complete report with its own id (mw_report_part_id), in
 * row order.  A single row larger than max_gz is a part of its own (the
 * caller's size check refuses it).  false + err on an XML or gzip error.
 */
bool mw_report_split(const mw_report *r, const mw_report_meta *m, size_t max_gz,
                     mw_report_parts *out, char *err, size_t errlen);
void mw_report_parts_free(mw_report_parts *ps);

/* The id of the part of r holding rows [first, first + n): 32 hex digits,
 * stable across runs, distinct from mw_report_id and from other parts.
 * Caller frees. */
char *mw_report_part_id(const mw_report *r, const mw_report_meta *m, size_t first, size_t n);

/* ---- delivery pieces --------------------------------------------------------------- */

/* gzip (RFC 1952) of in into out (reset first).  false on a zlib error. */
bool mw_report_gzip(const void *in, size_t len, mw_buf *out);

/*
 * One rua URI: "mailto:addr[!size[kmgt]]".  The address (percent-decoded,
 * domain lower-cased) into *addr (caller frees), the size limit in bytes
 * into *max_size (0: none; saturates, never wraps).  The address is a
 * dot-atom local part of at most 64 bytes of RFC 5322 atext, '@', a valid
 * host name, 254 bytes in all: it holds no blank, control character,
 * quote, bracket or comma, so it is safe in RCPT TO, a header and the
 * state journal.  false for other schemes, a malformed or overlong
 * address or size junk after '!' (reason in why).
 */
bool mw_report_rua_parse(const char *uri, char **addr, unsigned long long *max_size, char *why,
                         size_t whylen);
/* The same in format f: RFC 7489 as above; RFC 9990 (where size limits
 * are obsolete) ignores a "!..." suffix entirely, junk included, and
 * *max_size is always 0. */
bool mw_report_rua_parse_fmt(const char *uri, mw_report_format f, char **addr,
                             unsigned long long *max_size, char *why, size_t whylen);

/* ---- external destinations ------------------------------------------------------ */

typedef struct mw_report_target {
    char              *addr;    /* safe address (mw_report_rua_parse_fmt) */
    unsigned long long limit;   /* its "!size" (RFC 7489 format only), 0: none */
} mw_report_target;

/* The verdict on one (policy domain, rua host). */
typedef struct mw_report_dest {
    int               result;    /* 1 authorised, 0 refused, -1 not known now (DNS) */
    char              why[300];  /* for the output line */
    mw_report_target *override;  /* authorised with the destination's own rua: these */
    size_t            noverride; /* addresses replace the published one (same host) */
} mw_report_dest;

/* Free the override list (d itself is the caller's). */
void mw_report_dest_clear(mw_report_dest *d);

/*
 * Verify rua host for policy_domain (RFC 9990 "Verifying External
 * Destinations"): the same domain or organizational domain (dmarc's method)
 * is authorised without a query; otherwise the TXT records at
 * <policy_domain>._report._dmarc.<host> decide (mw_report_dest_from_txt).
 * DNS trouble: -1; no such record, or a name too long for DNS: 0.
 * out is cleared first; free it with mw_report_dest_clear().
 */
void mw_report_dest_verify(mw_dns *dns, mw_dmarc *dmarc, const char *policy_domain,
                           const char *host, mw_report_format f, mw_report_dest *out);

/*
 * The decision on the n TXT strings found at name: authorised (1) when at
 * least one is a v=DMARC1 record; the rua URIs of those records (parsed in
 * format f) become out->override.  Refused (0) when there is none, when
 * their rua holds no usable mailto: address, or when any override address
 * names a host other than host (then neither address gets a report).
 */
void mw_report_dest_from_txt(const char *name, const char *const *txt, const size_t *len,
                             size_t n, const char *host, mw_report_format f, mw_report_dest *out);

typedef struct mw_report_mail {
    const char *from;          /* From address */
    const char *to;            /* To address */
    const char *filename;      /* attachment name */
    const char *id;            /* report id */
    time_t      now;           /* Date */
    const char *msgid_host;    /* right side of the Message-ID */
} mw_report_mail;

/*
 * The report mail (CRLF line ends) into out (reset first): From, To, Date,
 * Subject "Report Domain: D Submitter: S Report-ID: <ID>", Message-ID,
 * MIME-Version, Auto-Submitted: auto-generated, multipart/mixed with a short
 * text part and the gzip attachment (application/gzip, base64).
 */
void mw_report_mime(const mw_report *r, const mw_report_meta *m, const mw_report_mail *mail,
                    const mw_buf *gz, mw_buf *out);

/*
 * DKIM-sign msg (as built by mw_report_mime) in place with every signer
 * key the signing table gives identity (the From address): the
 * DKIM-Signature headers are prepended.  Returns how many were added (0
 * when no key matches: reason in why).
 */
size_t mw_report_sign(const mw_dkim_signer *signer, const char *identity, mw_buf *msg, char *why,
                      size_t whylen);

/* ---- state journal --------------------------------------------------------------------- */

/* Status of one (report id, destination address). */
typedef enum mw_report_status {
    MW_RS_NONE = 0,     /* never tried */
    MW_RS_SENDING,      /* handed to the relay, outcome unknown (crash): resent */
    MW_RS_SENT,         /* the relay answered 250 to the final dot */
    MW_RS_DEFERRED,     /* 4xx / connection trouble after the retries: next run retries */
    MW_RS_FAILED,       /* 5xx: not retried */
    MW_RS_REFUSED,      /* external destination not authorised (_report._dmarc) */
    MW_RS_TOOBIG,       /* larger than the destination's or our size limit */
    MW_RS_SUPPRESSED    /* destination suppressed after repeated 5xx */
} mw_report_status;

const char *mw_report_status_name(mw_report_status s);
/* Does the status end the business for (id, destination)? (sent, failed,
 * refused, toobig, suppressed) */
bool mw_report_status_final(mw_report_status s);

typedef struct mw_report_state mw_report_state;

/*
 * Open the state directory (created 0750 if missing): take its lock
 * (another run holding it is an error), read the journal (a torn last
 * line is ignored), compact it (write temp, fsync, rename, fsync the
 * directory; entries of periods that ended more than 60 days before now
 * are dropped) and open it for appending.  readonly (dry runs): read only,
 * no lock, a missing directory is an empty state.  NULL + err on error.
 */
mw_report_state *mw_report_state_open(const char *dir, bool readonly, time_t now, char *err,
                                      size_t errlen);
void mw_report_state_close(mw_report_state **s);

/* Can s be a journal field (an id, destination or domain): 1..512 bytes of
 * visible ASCII?  mw_report_state_set() refuses anything else, so callers
 * check first and refuse that destination alone. */
bool mw_report_state_key_ok(const char *s);

/* Status of (id, dest) and how many attempts were recorded. */
mw_report_status mw_report_state_get(const mw_report_state *s, const char *id, const char *dest,
                                     unsigned *attempts);
/*
 * Record a status for (id, dest) of the report for domain/period: one
 * journal line, written and fdatasynced before returning.  false (reason
 * in err) when id, dest or domain fails mw_report_state_key_ok() (nothing
 * written) or when the disk refuses: the caller must stop sending.
 */
bool mw_report_state_set(mw_report_state *s, const char *id, const char *dest,
                         mw_report_status st, const char *domain, time_t begin, time_t end,
                         time_t now, char *err, size_t errlen);

/*
 * Was the report of domain for [begin, end) sent (or being sent: a crash)
 * to dest under an id that is not one of ids[nids]?  That is the same data
 * split differently by an earlier run (report.max_size changed, or history
 * that arrived late changed the rows): the caller does not send it again.
 * *other (may be NULL) gets the id found (borrowed from s).
 */
bool mw_report_state_sent_other(const mw_report_state *s, const char *domain, time_t begin,
                                time_t end, const char *dest, const char *const *ids, size_t nids,
                                const char **other);

/* Destination bookkeeping: a 5xx (got_5xx) or a success from dest.  After
 * `after` consecutive 5xx the destination is suppressed until now +
 * suppress_for.  false on a write error. */
bool mw_report_state_dest_result(mw_report_state *s, const char *dest, bool got_5xx,
                                 unsigned after, unsigned suppress_for, time_t now, char *err,
                                 size_t errlen);
/* Is dest suppressed at now?  *until (may be NULL) gets the end. */
bool mw_report_state_suppressed(const mw_report_state *s, const char *dest, time_t now,
                                time_t *until);

/* Periods: "open" when a run started sending it, "done" when every
 * destination of every report in it reached a final status. */
bool mw_report_state_period(mw_report_state *s, time_t begin, time_t end, bool done, time_t now,
                            char *err, size_t errlen);
/* Periods still open (a crashed run or deferred mail) that ended after
 * since: up to max pairs into begins/ends; returns how many. */
size_t mw_report_state_open_periods(const mw_report_state *s, time_t since, time_t *begins,
                                    time_t *ends, size_t max);

#endif
