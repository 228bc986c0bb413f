/*
 * report_failure.h - DMARC failure reports (RFC 9991): when one is wanted
 * (fo), the report message (multipart/report; report-type=feedback-report,
 * RFC 5965/6591), redaction of address local parts, the per-destination
 * rate limit, and the spool that carries a report from the daemon (which
 * queues it) to `mailwarden report --failure` (which sends it).
 *
 * The whole flow is described in docs/reports.md ("Failure reports").
 *
 * Thread safety: the builder, redactor and spool functions keep no state;
 * a limiter is safe to share between threads (one mutex).
 */
#ifndef MW_CHECKS_REPORT_FAILURE_H
#define MW_CHECKS_REPORT_FAILURE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "config.h"

/* ---- when (fo) ------------------------------------------------------------------ */

/* What the evaluation found, for the fo decision. */
typedef struct mw_failrep_facts {
    bool dmarc_fail;      /* the DMARC result is fail */
    bool spf_aligned;     /* SPF gave an aligned pass */
    bool dkim_aligned;    /* DKIM gave an aligned pass */
    bool spf_failed;      /* SPF evaluated to fail (any alignment) */
    bool dkim_failed;     /* some DKIM signature evaluated to fail (any alignment) */
} mw_failrep_facts;

/*
 * Does fo (MW_DMARC_FO_* bits from the record) ask for a report?  Only a
 * DMARC failure is ever reported (RFC 9991 reports "authentication
 * failures" of DMARC): 0 when neither SPF nor DKIM gave an aligned pass, 1
 * when either did not, d when a DKIM signature failed, s when SPF failed.
 * The reason (which option matched, or why none did) goes into why.
 */
bool mw_failrep_wanted(unsigned fo, const mw_failrep_facts *f, char *why, size_t whylen);

/* ---- redaction ------------------------------------------------------------------- */

/*
 * Append text to out with the local part of every address replaced by
 * "redacted-" and the first 16 hex digits of the SHA-256 of the local part
 * (lower-cased): the same address gives the same token in every report, so
 * a domain owner can still correlate.  An address is a run of dot-atom
 * characters (or a quoted string) directly before an '@' that is directly
 * followed by a domain character.  Everything else is copied unchanged.
 */
void mw_failrep_redact(const char *text, size_t len, mw_buf *out);

/*
 * Append one header field as received ("Name: value" + CRLF) to hdrs, the
 * header section a report carries.  Every line break inside the value
 * becomes CRLF, followed by a blank when the next line does not start
 * with one, so a value can never add a field of its own.
 */
void mw_failrep_header_append(mw_buf *hdrs, const char *name, const char *value, size_t vlen);

/* ---- the report --------------------------------------------------------------------- */

typedef struct mw_failrep_dkim {
    const char *domain, *selector;   /* of one signature (NULL: unknown) */
} mw_failrep_dkim;

/* Everything a report says (all borrowed; NULL or "" where unknown). */
typedef struct mw_failrep_info {
    mw_failrep_mode mode;           /* redacted or full */
    const char *user_agent;         /* "mailwarden/0.1.0" */
    const char *reporting_host;     /* our host name */
    time_t      arrival;
    const char *source_ip;
    const char *envelope_id;        /* the MTA's queue id */
    const char *mail_from;          /* envelope sender ("" null sender) */
    const char *rcpt_to;            /* first envelope recipient */
    const char *reported_domain;    /* header From domain */
    const char *policy_domain;
    const char *authres;            /* our Authentication-Results value */
    bool        spf_aligned, dkim_aligned;
    const char *delivery_result;    /* delivered, spam, policy, reject, other */
    const mw_failrep_dkim *dkim;    /* DKIM-Domain / DKIM-Selector: the first usable one */
    size_t      ndkim;
    const char *headers;            /* the message header as received: "Name: value" lines */
    size_t      headers_len;
    bool        headers_truncated;  /* more were received than kept */
} mw_failrep_info;

/*
 * The report into out (reset first), CRLF line ends, without From and To
 * (`mailwarden report --failure` puts them in front when it sends): Date,
 * Subject, Message-ID, MIME-Version, Auto-Submitted, Content-Type
 * multipart/report; report-type=feedback-report, then a text/plain part,
 * the message/feedback-report part (Feedback-Type: auth-failure, Version:
 * 1, User-Agent, Auth-Failure: dmarc, Authentication-Results,
 * Original-Envelope-Id, Original-Mail-From, Original-Rcpt-To,
 * Arrival-Date, Source-IP, Reported-Domain, Identity-Alignment,
 * Delivery-Result, DKIM-Domain/DKIM-Selector when known) and the header
 * as text/rfc822-headers (redacted in MW_FAILREP_REDACTED mode, the
 * envelope addresses too).  Outside text is made safe: field values lose
 * control characters and line breaks; the header keeps its folding but
 * every line break becomes CRLF + a blank, so no line of it can start a
 * MIME boundary or a header; lines over 998 bytes are folded; NUL bytes
 * become '?'.  id_out (33 bytes) gets the report id: 32 hex digits.
 */
void mw_failrep_build(const mw_failrep_info *in, mw_buf *out, char id_out[33]);

/* ---- rate limit ---------------------------------------------------------------------- */

typedef struct mw_failrep_limiter mw_failrep_limiter;

#define MW_FAILREP_LIMIT_DESTS 4096   /* destinations tracked in one hour */

mw_failrep_limiter *mw_failrep_limiter_create(void);
void mw_failrep_limiter_destroy(mw_failrep_limiter **l);

typedef enum mw_failrep_take {
    MW_FRL_OK = 0,       /* counted; queue the report */
    MW_FRL_LIMITED,      /* rate reports to dest this UTC hour already */
    MW_FRL_FULL          /* MW_FAILREP_LIMIT_DESTS destinations this hour already */
} mw_failrep_take;

/*
 * Take one report for dest (an address) in the UTC hour of now, at most
 * rate per hour.  *log_it is set the first time in the hour that dest (or,
 * for MW_FRL_FULL, any destination) is refused: the caller logs once per
 * window and counts every refusal.
 */
mw_failrep_take mw_failrep_limiter_take(mw_failrep_limiter *l, const char *dest, unsigned rate,
                                        time_t now, bool *log_it);

/* ---- spool ----------------------------------------------------------------------------- */

#define MW_FAILREP_MAX_DESTS 16       /* ruf addresses per report */
#define MW_FAILREP_MAX_FILE (1024 * 1024)

/* One queued report. */
typedef struct mw_failrep_spooled {
    char   id[33];
    char   domain[256];                 /* policy domain */
    time_t time;                        /* when it was queued */
    char  *dest[MW_FAILREP_MAX_DESTS];  /* safe addresses (owned) */
    size_t ndest;
    const char *msg;                    /* the report (borrowed from the parsed data) */
    size_t msg_len;
} mw_failrep_spooled;

/*
 * The spool file for a report: a "mailwarden-failure-report 1" line, id,
 * domain, time and one "to" line per destination, a blank line, the
 * message.  Into out (reset first).
 */
void mw_failrep_spool_format(const mw_failrep_spooled *r, mw_buf *out);

/*
 * Parse a spool file (strict: every line and field checked, each address
 * again through the rua address rules) into out (clear it with
 * mw_failrep_spooled_clear, also after false).  false with a reason.
 */
bool mw_failrep_spool_parse(const char *data, size_t len, mw_failrep_spooled *out, char *why,
                            size_t whylen);
void mw_failrep_spooled_clear(mw_failrep_spooled *r);

/*
 * Write data as dir/new/NAME (NAME = "<time>.<id>"): dir, dir/tmp and
 * dir/new are created (0750) when missing; the file is written to
 * dir/tmp with O_EXCL|O_NOFOLLOW, fsynced, renamed into dir/new and the
 * directory fsynced, so a reader sees a whole file or none.  false + err.
 */
bool mw_failrep_spool_write(const char *dir, const char *name, const mw_buf *data, char *err,
                            size_t errlen);

#endif
