/*
 * engine.h - session and message state, trust class, checks, policy and
 * verdict.  Knows nothing of the milter protocol: front ends (milter, `check`) turn
 * their events into these calls and the verdict into their own actions.
 *
 * Lifecycle
 *   mw_engine_create()  once, with a loaded config (ownership passes in);
 *                       or mw_engine_new() + mw_engine_reload() when the
 *                       engine's address is needed before the config can
 *                       be built (serve: listeners bound as root, the
 *                       runtime built after the privilege drop)
 *   mw_engine_reload()  on SIGHUP: builds a complete new runtime (config,
 *                       resolver, checkers, policy) and swaps it in
 *                       atomically; a failure leaves the old one in place
 *   mw_session_new()    per SMTP connection, from any thread
 *   ... helo/mail/rcpt/header/eoh/body/eom, abort between messages ...
 *   mw_session_free()   at connection close (the one cleanup path)
 *
 * Reload semantics: a message is evaluated entirely under the runtime that
 * was current when its MAIL FROM arrived; new messages see the new runtime.
 * Runtimes are reference counted and freed when the last message using one
 * ends, so a reload never pulls a config out from under a message.
 *
 * Thread safety: the engine is shared; a session belongs to one thread at a
 * time (the milter server guarantees this per connection).
 */
#ifndef MW_ENGINE_ENGINE_H
#define MW_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "arc.h"
#include "config.h"
#include "dkim.h"
#include "dmarc.h"
#include "fromhdr.h"
#include "reputation.h"
#include "policy.h"
#include "spf.h"

typedef struct mw_engine mw_engine;
typedef struct mw_session mw_session;

/* Create from cfg (owned by the engine on success; on failure the caller
 * still owns it).  NULL on error with a reason in err. */
mw_engine *mw_engine_create(mw_config *cfg, char *err, size_t errlen);
/* An engine with no configuration yet: the first mw_engine_reload() gives
 * it generation 1.  No session may start before that (front ends may be
 * opened, not run).  Never NULL. */
mw_engine *mw_engine_new(void);
/* Swap in a new config (same ownership rule).  false + reason on error;
 * the running configuration is then unchanged. */
bool mw_engine_reload(mw_engine *e, mw_config *cfg, char *err, size_t errlen);
void mw_engine_destroy(mw_engine **e);
/* Number of messages currently between MAIL FROM and their end. */
unsigned mw_engine_active_messages(mw_engine *e);
/* Wait until no message is in flight or timeout_ms passes; true if idle. */
bool mw_engine_wait_idle(mw_engine *e, unsigned timeout_ms);
/* Graceful stop: once draining, front ends refuse new connections with a
 * temporary failure while messages in flight finish. */
void mw_engine_set_draining(mw_engine *e);
bool mw_engine_draining(mw_engine *e);
/* Reload generation (1 for the first config), for logs and tests. */
unsigned mw_engine_generation(mw_engine *e);

/* ---- verdict ---- */

typedef struct mw_header {
    char *name;
    char *value;      /* folded with "\n\t" where long */
} mw_header;

typedef struct mw_header_ref {
    char    *name;
    unsigned index;   /* 1-based occurrence among headers of this name */
} mw_header_ref;

/*
 * One Authentication-Results header of the message as the engine counted
 * it, and what the verdict does with it.  The engine is the one place that
 * decides what an A-R header is: the name is compared ASCII
 * case-insensitively with blanks before the colon ignored
 * ("Authentication-Results :"), which is how Postfix (is_header), Sendmail
 * (chompheader) and Exim (header_testname) name and count it too.  Front
 * ends act on this list; they never re-derive it.
 */
typedef struct mw_ar_header {
    unsigned    index;        /* 1-based occurrence among A-R headers */
    bool        removed;      /* claims our authserv-id: the verdict removes it */
    const char *value;        /* kept headers: the value as received (NUL-terminated,
                               * folds as received); NULL for removed ones */
    size_t      vlen;
} mw_ar_header;

typedef struct mw_verdict {
    mw_action   action;
    char        rcode[4];     /* "550"; "" for accept */
    char        xcode[10];    /* "5.7.23"; "" when none */
    char       *text;         /* reply text (no code), NULL for accept */
    const char *rule;         /* policy rule that decided */
    char       *quarantine_reason;
    mw_header     *add;       /* insert at the top, add[0] topmost */
    size_t         nadd;
    mw_header_ref *remove;    /* delete; highest index first per name; the
                               * name is the canonical "Authentication-Results" */
    size_t         nremove;
    /* every A-R header of the message in order, removed or kept (for front
     * ends that can only remove by name, like Exim, and re-add the others);
     * values point into the session, valid like the verdict */
    mw_ar_header  *ar;
    size_t         nar;
} mw_verdict;

/* A refusal at connect, MAIL or RCPT time (rate limits). */
typedef struct mw_reply {
    mw_action   action;       /* MW_ACTION_TEMPFAIL or MW_ACTION_REJECT */
    char        rcode[4];
    char        xcode[10];
    char        text[256];
    const char *rule;         /* owned by the runtime; valid until the next message */
} mw_reply;

/* ---- per-message results (for `check`, logs and later checks) ---- */

typedef struct mw_results {
    mw_trust        trust;
    const char     *trust_reason;  /* "client 192.0.2.1 in internal networks", ... */
    bool            spf_skipped;
    mw_spf_outcome  spf;           /* MAIL FROM identity (for a null sender: the HELO check) */
    mw_spf_outcome  spf_helo;      /* HELO identity */
    /* header From */
    unsigned        nfrom;         /* From headers seen */
    mw_from         from;          /* parse of the first one */
    /* DKIM */
    bool            dkim_verified; /* verification ran (inbound) */
    mw_dkim_results dkim;          /* one entry per signature */
    size_t          nsigned;       /* signatures we added */
    mw_dkim_key_info signed_with[8];
    const char     *not_signed;    /* why not signed (outbound or inbound), NULL if signed */
    /* ARC (inbound, arc.verify) */
    bool            arc_done;      /* the chain was verified (arc below is meaningful) */
    mw_arc_status   arc;
    /* DMARC (inbound) */
    bool            dmarc_done;    /* evaluated (dmarc below is meaningful) */
    mw_dmarc_outcome dmarc;
    unsigned        dmarc_override;    /* MW_DMARC_OVR_* bits */
    char            dmarc_override_text[128];
    bool            from_enforcing;
    bool            history_written;
    /* reputation of the client (when reputation.enabled) */
    bool            reputation_done;
    mw_rep_result   reputation;
} mw_results;

/* ---- session ---- */

/* client_ip: textual address or NULL/"" when unknown (unix socket peers);
 * client_name: the MTA's name for the client (may be NULL). */
mw_session *mw_session_new(mw_engine *e, const char *client_ip, const char *client_name);
void mw_session_free(mw_session **s);

/* MTA macros: "{auth_authen}", "{daemon_name}", "i" (queue id),
 * "{client_ptr}" ...; unknown names are ignored.  Copies the value. */
void mw_session_macro(mw_session *s, const char *name, const char *value);
/* Connection-time checks (per-connection rate limits); call once the
 * connect macros are set.  A refusal is returned by mw_session_refusal(). */
void mw_session_connect(mw_session *s);
void mw_session_helo(mw_session *s, const char *helo);
/* Start of a message.  from: envelope sender as given ("<a@b>" or "a@b"). */
void mw_session_mail(mw_session *s, const char *from);
void mw_session_rcpt(mw_session *s, const char *rcpt);
/* A recipient whose RCPT-stage limits were already charged elsewhere (Exim:
 * at RCPT time through mw_engine_rcpt_check): counted, not charged again. */
void mw_session_rcpt_checked(mw_session *s, const char *rcpt);
/* One header as received (value unfolded or folded; length-carrying). */
void mw_session_header(mw_session *s, const char *name, const char *value, size_t vlen);
void mw_session_eoh(mw_session *s);
void mw_session_body(mw_session *s, const unsigned char *chunk, size_t len);
/* End of message: evaluate and return the verdict (owned by the session,
 * valid until the next message starts or the session is freed).  Also
 * writes the per-message summary log line. */
const mw_verdict *mw_session_eom(mw_session *s);
/* The refusal of the last connect/MAIL/RCPT step, or NULL when it was
 * accepted.  A refused MAIL ends the message (it is logged and forgotten);
 * a refused recipient is not counted. */
const mw_reply *mw_session_refusal(const mw_session *s);

/* RCPT-time decision for a front end without an SMTP session (Exim's
 * ${readsocket}): trust from auth/ip, rate limits of the RCPT stage.
 * out->action is MW_ACTION_ACCEPT when the recipient may go on. */
void mw_engine_rcpt_check(mw_engine *e, const char *ip, const char *helo, const char *from,
                          const char *rcpt, const char *auth, mw_reply *out);

/* The message was aborted (RSET, connection lost): forget it. */
void mw_session_abort(mw_session *s);

/* Authentication-Results headers of the current message seen so far: the
 * index (1-based) of the last one, as the verdict's ar[] will number it.
 * A front end that must know which of its headers the engine took for an
 * A-R (Exim: to tell which ones Exim can remove by name) compares this
 * before and after mw_session_header() instead of judging names itself. */
size_t mw_session_ar_count(const mw_session *s);
/* Results of the current/last message (valid like the verdict). */
const mw_results *mw_session_results(const mw_session *s);
/* Trace lines of the current/last message, in order. */
size_t mw_session_trace_count(const mw_session *s);
const char *mw_session_trace(const mw_session *s, size_t i);
/* Identifier used in log lines: queue id if known, else a session id. */
const char *mw_session_id(const mw_session *s);

#endif
