/*
 * session_priv.h (engine-private) - the session structure shared by the
 * files that implement it: session.c (flow, trust, SPF, DKIM, verdict),
 * session_dmarc.c (DMARC and history) and session_limits.c (rate limits
 * and reputation).
 */
#ifndef MW_ENGINE_SESSION_PRIV_H
#define MW_ENGINE_SESSION_PRIV_H

#include "buf.h"
#include "authres.h"
#include "engine_priv.h"

#define MAX_TRACE 200
#define MAX_REPLY_TEXT 400
#define MAX_HELD_HEADERS 10000          /* headers held until end of headers */
#define MAX_HELD_BYTES (2 * 1024 * 1024)
#define MAX_SIGN_KEYS 8
#define MAX_FROM_DOMAINS 16
#define MAX_TRUSTED_AR 4

/* An Authentication-Results header seen (see mw_ar_header); a kept one's
 * value is at [off, off + len) of the session's ar_text, one buffer for
 * them all rather than a copy each. */
typedef struct ar_seen {
    bool   removed;
    size_t off, len;
} ar_seen;

/* A header held until end of headers (signing keys depend on From). */
typedef struct held_header {
    char  *name;
    char  *value;
    size_t vlen;
} held_header;

struct mw_session {
    mw_engine  *engine;
    mw_runtime *rt;              /* held from MAIL until the message ends */
    bool        in_message;
    char        sid[24];

    /* connection */
    char   *client_ip;           /* NULL when unknown */
    char   *client_name;
    mw_addr client_addr;
    bool    have_addr;
    char   *helo;
    char   *auth_authen;
    char   *daemon_name;
    char   *queue_id;

    /* message */
    char         *mail_from;     /* without <>; "" for the null sender */
    unsigned      nrcpt;
    ar_seen      *ars;           /* every A-R header, in order: ars[i] has index i + 1 */
    size_t        nars, nar_removed;
    mw_buf        ar_text;       /* the kept A-R values, NUL after each */
    unsigned long body_bytes;
    mw_results    res;
    char          trust_reason[160];
    mw_verdict    verdict;
    char        **trace;
    size_t        ntrace;

    /* DKIM */
    held_header  *held;
    size_t        nheld, held_bytes;
    bool          held_overflow;
    bool          eoh_done;
    mw_dkim_msg  *dkim;
    mw_arc_msg   *arc;              /* ARC verification (and sealing) of this message */
    bool          dkim_verifying;
    size_t        sign_keys[MAX_SIGN_KEYS];
    size_t        nsign_keys;
    char          sign_domain[256];   /* the identity's domain: d= of "%" keys */
    char        **dkim_sigs;
    size_t        ndkim_sigs;
    char          not_signed[256];

    /* every domain named by any From header (for from_enforcing) */
    char         *from_domains[MAX_FROM_DOMAINS];
    size_t        nfrom_domains;
    bool          from_domains_over;   /* more domains than kept: assume one enforces */
    char         *first_rcpt_domain;
    char        **rcpts;            /* accepted recipients, lower case (policy: recipient) */
    size_t        nrcpts;

    /* refusal of the last connect/MAIL/RCPT step (rate limits) */
    bool          refused;
    mw_reply      refusal;
    uint64_t      t_mail_ns;        /* monotonic time of MAIL FROM (metrics) */
    bool          rate_limited;     /* this message hit a limit (reputation: bad) */
    bool          connect_done;
    bool          eom_done;         /* verdict given for the current message */
    bool          dkim_overflow;    /* inbound headers too many/large: DKIM not verified */

    /* A-R results from trusted upstream hosts (dmarc.trusted_authserv_ids) */
    /* Only the first MAX_TRUSTED_AR are used: they can only add passes
     * (ignoring more makes DMARC stricter, never laxer), so this is not a
     * cap on safety work; the trace says when some were ignored. */
    mw_authres_parsed *trusted_ar[MAX_TRUSTED_AR];
    size_t        ntrusted_ar;
    bool          quarantined_by_header;   /* dmarc.quarantine_action = header */

    /* mailing list headers (List-Id, List-Post): the list's host name */
    char          list_host[256];
    const char   *list_header;             /* "List-Id" or "List-Post"; NULL: none */

    /* report.failure on: the header as received, for a failure report */
    mw_buf        failrep_hdrs;
    bool          failrep_trunc;           /* more than MW_FAILREP_HEADER_MAX received */
};

/* Append a trace line (also logged at debug level). */
void mw_sess_trace(mw_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Printable, length-capped copy of untrusted text (valid until b changes). */
const char *mw_sess_safe(mw_buf *b, const char *text);

/* session_arc.c */
/* At end of headers (inbound, arc.verify or arc.seal): start the chain
 * check with the held headers. */
void mw_sess_arc_begin(mw_session *s);
void mw_sess_arc_body(mw_session *s, const unsigned char *chunk, size_t len);
/* End of message, before DMARC: the chain's status into s->res.arc. */
void mw_sess_arc_finish(mw_session *s);
void mw_sess_arc_clear(mw_session *s);
/* arc=pass|fail|none with smtp.remote-ip (and header.oldest-pass) into ar. */
void mw_sess_arc_authres(mw_session *s, mw_authres *ar);
/* Does a trusted sealer's passing chain show an aligned pass for the From
 * domain?  what: the override text ("arc SEALER"). */
bool mw_sess_arc_trusted(mw_session *s, char *what, size_t wlen);
/* arc.seal: the new ARC set for a message we relay, carrying authres (our
 * A-R value).  false (traced) when none is added. */
bool mw_sess_arc_seal(mw_session *s, const mw_verdict *v, const char *authres, mw_arc_set *set);

/* session_dmarc.c */
void mw_sess_run_dmarc(mw_session *s);
/* Note a List-Id or List-Post header (the list's host name); other names
 * are ignored.  name is already trimmed of blanks before the colon. */
void mw_sess_note_list_header(mw_session *s, const char *name, const char *value, size_t vlen);
/* The DMARC disposition applied to the message: "reject", "quarantine" or "none". */
const char *mw_sess_dmarc_applied(const mw_session *s, const mw_verdict *v);
/* Did the verdict apply less than a DMARC failure's requested disposition? */
bool mw_sess_dmarc_lowered(const mw_session *s, const mw_verdict *v);
/* One history record for the message; false when it could not be written. */
bool mw_sess_write_history(mw_session *s, const mw_verdict *v);

/* session_failrep.c (RFC 9991 failure reports) */
#define MW_FAILREP_HEADER_MAX (64 * 1024)  /* header bytes kept for a report */
/* Keep a header for a possible failure report (report.failure on, inbound). */
void mw_sess_failrep_header(mw_session *s, const char *name, const char *value, size_t vlen);
/* After the verdict: queue a failure report when the policy domain asks
 * for one (ruf, fo) and report.failure is on; counted and traced. */
void mw_sess_failure_report(mw_session *s, const mw_verdict *v);

/* session_limits.c */
/* Charge the rate limits of a stage; on refusal fills s->refusal and
 * returns false. */
bool mw_sess_ratelimit(mw_session *s, mw_rl_stage stage, const char *rcpt);
/* MAIL and end of message: the stage's rate limits and the reputation
 * score (MAIL: the client; EOM: again when authenticated domains are known)
 * in one store round trip.  On refusal fills s->refusal and returns false. */
bool mw_sess_stage_state(mw_session *s, mw_rl_stage stage);
/* Reputation: score on its own (a round trip), record the outcome after
 * the verdict (sent without waiting). */
void mw_sess_reputation_score(mw_session *s);
void mw_sess_reputation_record(mw_session *s, const mw_verdict *v);

#endif
