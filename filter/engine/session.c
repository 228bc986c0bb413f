/*
 * session.c - one SMTP session and its current message: trust class,
 * checks, policy, verdict, header edits, trace and the summary log line.
 *
 * Flow per message
 *   MAIL   take a runtime reference, decide the trust class, run SPF for
 *          the HELO and MAIL FROM identities (inbound only)
 *   header note every Authentication-Results header claiming our
 *          authserv-id, with its occurrence index, for removal
 *   EOM    ask the policy, build the verdict (reply, header edits), log
 *
 * Every decision adds a trace line, so `check` and the debug log can say
 * why (e.g. "trust: internal (client 10.1.2.3 in internal networks)").
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "authres.h"
#include "engine_priv.h"
#include "idna.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

#include "session_priv.h"

#define AR_NAME "Authentication-Results"


_Static_assert(MW_ML_TRUST_INBOUND == (int)MW_TRUST_INBOUND && MW_ML_TRUST_AUTHENTICATED == (int)MW_TRUST_AUTHENTICATED &&
               MW_ML_TRUST_INTERNAL == (int)MW_TRUST_INTERNAL && MW_ML_TRUST_SUBMISSION == (int)MW_TRUST_SUBMISSION,
               "metrics labels follow mw_trust");
_Static_assert(MW_ML_ACTION_ACCEPT == (int)MW_ACTION_ACCEPT && MW_ML_ACTION_REJECT == (int)MW_ACTION_REJECT &&
               MW_ML_ACTION_TEMPFAIL == (int)MW_ACTION_TEMPFAIL && MW_ML_ACTION_QUARANTINE == (int)MW_ACTION_QUARANTINE &&
               MW_ML_ACTION_DISCARD == (int)MW_ACTION_DISCARD, "metrics labels follow mw_action");

/* A refusal (connect/MAIL/RCPT: s->refusal; end of message: the verdict) for the metrics. */
static void count_refusal(mw_action action, const char *stage, const char *rule)
{
    if (action == MW_ACTION_REJECT)
        mw_metric_inc_l(MW_M_REJECTS, stage, rule);
    else if (action == MW_ACTION_TEMPFAIL)
        mw_metric_inc_l(MW_M_TEMPFAILS, stage, rule);
}

/* ---- trace ---- */

void mw_sess_trace(mw_session *s, const char *fmt, ...)
{
    if (s->ntrace >= MAX_TRACE)
        return;
    mw_buf b = MW_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    s->trace = mw_reallocarray(s->trace, s->ntrace + 1, sizeof *s->trace);
    s->trace[s->ntrace++] = mw_buf_steal(&b);
    if (mw_log_debug_enabled())
        mw_debug("%s: trace: %s", s->sid, s->trace[s->ntrace - 1]);
}

/* printable, length-capped copy of untrusted text for trace/log lines */
const char *mw_sess_safe(mw_buf *b, const char *s)
{
    mw_buf_reset(b);
    if (!s)
        return "(none)";
    mw_str_printable(b, s, strlen(s), 200);
    return mw_buf_cstr(b);
}

/* ---- message state ---- */

static void verdict_clear(mw_verdict *v)
{
    for (size_t i = 0; i < v->nadd; i++) {
        free(v->add[i].name);
        free(v->add[i].value);
    }
    free(v->add);
    for (size_t i = 0; i < v->nremove; i++)
        free(v->remove[i].name);
    free(v->remove);
    free(v->ar);
    free(v->text);
    free(v->quarantine_reason);
    memset(v, 0, sizeof *v);
}

static void held_clear(mw_session *s)
{
    for (size_t i = 0; i < s->nheld; i++) {
        free(s->held[i].name);
        free(s->held[i].value);
    }
    MW_FREE(&s->held);
    s->nheld = s->held_bytes = 0;
    s->held_overflow = false;
}

static void message_clear(mw_session *s)
{
    held_clear(s);
    mw_dkim_msg_free(&s->dkim);
    mw_dkim_sigs_free(s->dkim_sigs, s->ndkim_sigs);
    s->dkim_sigs = NULL;
    s->ndkim_sigs = 0;
    s->nsign_keys = 0;
    s->sign_domain[0] = '\0';
    s->dkim_verifying = false;
    s->eoh_done = false;
    s->eom_done = false;
    s->dkim_overflow = false;
    s->not_signed[0] = '\0';
    mw_dkim_results_clear(&s->res.dkim);
    mw_from_clear(&s->res.from);
    mw_dmarc_outcome_clear(&s->res.dmarc);
    mw_sess_arc_clear(s);
    for (size_t i = 0; i < s->nfrom_domains; i++)
        free(s->from_domains[i]);
    s->nfrom_domains = 0;
    MW_FREE(&s->first_rcpt_domain);
    for (size_t i = 0; i < s->nrcpts; i++)
        free(s->rcpts[i]);
    MW_FREE(&s->rcpts);
    s->nrcpts = 0;
    s->quarantined_by_header = false;
    s->list_host[0] = '\0';
    s->list_header = NULL;
    for (size_t i = 0; i < s->ntrusted_ar; i++) {
        mw_authres_parsed_clear(s->trusted_ar[i]);
        MW_FREE(&s->trusted_ar[i]);
    }
    s->ntrusted_ar = 0;
    if (s->in_message || s->rt)
        mw_engine_release(s->engine, &s->rt, s->in_message);
    s->in_message = false;
    MW_FREE(&s->mail_from);
    s->nrcpt = 0;
    s->rate_limited = false;
    MW_FREE(&s->ars);
    s->nars = s->nar_removed = 0;
    mw_buf_free(&s->ar_text);
    mw_buf_free(&s->failrep_hdrs);
    s->failrep_trunc = false;
    s->from_domains_over = false;
    s->body_bytes = 0;
    mw_spf_outcome_clear(&s->res.spf);
    mw_spf_outcome_clear(&s->res.spf_helo);
    memset(&s->res, 0, sizeof s->res);
    s->trust_reason[0] = '\0';
    verdict_clear(&s->verdict);
    for (size_t i = 0; i < s->ntrace; i++)
        free(s->trace[i]);
    MW_FREE(&s->trace);
    s->ntrace = 0;
}

mw_session *mw_session_new(mw_engine *e, const char *client_ip, const char *client_name)
{
    mw_session *s = mw_calloc(1, sizeof *s);
    s->engine = e;
    snprintf(s->sid, sizeof s->sid, "S%lu", mw_engine_next_session(e));
    if (client_ip && *client_ip) {
        s->client_ip = mw_strdup(client_ip);
        s->have_addr = mw_addr_parse(client_ip, &s->client_addr);
    }
    s->client_name = mw_strdup(client_name);
    return s;
}

void mw_session_free(mw_session **ps)
{
    mw_session *s = *ps;
    if (!s)
        return;
    message_clear(s);
    free(s->client_ip);
    free(s->client_name);
    free(s->helo);
    free(s->auth_authen);
    free(s->daemon_name);
    free(s->queue_id);
    free(s);
    *ps = NULL;
}

const char *mw_session_id(const mw_session *s)
{
    return s->queue_id ? s->queue_id : s->sid;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = (v && *v) ? mw_strdup(v) : NULL;
}

void mw_session_macro(mw_session *s, const char *name, const char *value)
{
    if (!name || !value)
        return;
    if (strcmp(name, "{auth_authen}") == 0)
        set_str(&s->auth_authen, value);
    else if (strcmp(name, "{daemon_name}") == 0)
        set_str(&s->daemon_name, value);
    else if (strcmp(name, "i") == 0 || strcmp(name, "{i}") == 0)
        set_str(&s->queue_id, value);
}

void mw_session_helo(mw_session *s, const char *helo)
{
    set_str(&s->helo, helo);
}

/* ---- trust class ---- */

static bool is_submission_daemon(const mw_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->nsubmission_daemons; i++)
        if (strcasecmp(cfg->submission_daemons[i], name) == 0)
            return true;
    return false;
}

static void decide_trust(mw_session *s)
{
    const mw_config *cfg = s->rt->cfg;
    mw_buf b = MW_BUF_INIT;
    if (s->auth_authen) {
        s->res.trust = MW_TRUST_AUTHENTICATED;
        snprintf(s->trust_reason, sizeof s->trust_reason, "SMTP AUTH as %s", mw_sess_safe(&b, s->auth_authen));
    } else if (is_submission_daemon(cfg, s->daemon_name)) {
        s->res.trust = MW_TRUST_SUBMISSION;
        snprintf(s->trust_reason, sizeof s->trust_reason, "received by submission daemon %s",
                 mw_sess_safe(&b, s->daemon_name));
    } else if (s->have_addr && mw_cidr_set_contains(cfg->internal_networks, &s->client_addr)) {
        s->res.trust = MW_TRUST_INTERNAL;
        snprintf(s->trust_reason, sizeof s->trust_reason, "client %s in internal networks", s->client_ip);
    } else {
        s->res.trust = MW_TRUST_INBOUND;
        snprintf(s->trust_reason, sizeof s->trust_reason, "client %s not internal, not authenticated%s",
                 s->client_ip ? s->client_ip : "(unknown)",
                 s->daemon_name ? ", not a submission daemon" : "");
    }
    s->res.trust_reason = s->trust_reason;
    mw_sess_trace(s, "trust: %s (%s)", mw_trust_name(s->res.trust), s->trust_reason);
    mw_buf_free(&b);
}

/* ---- SPF ---- */

static void trace_spf(mw_session *s, const char *what, const mw_spf_outcome *o)
{
    mw_buf a = MW_BUF_INIT, b = MW_BUF_INIT;
    mw_sess_trace(s, "spf %s: %s for %s (%s)", what, mw_spf_result_name(o->result),
          mw_sess_safe(&a, o->identity), mw_sess_safe(&b, o->reason ? o->reason : "no detail"));
    mw_buf_free(&a);
    mw_buf_free(&b);
}

static void run_spf(mw_session *s)
{
    const mw_config *cfg = s->rt->cfg;
    if (!cfg->spf_enabled) {
        s->res.spf_skipped = true;
        mw_sess_trace(s, "spf: disabled in config");
        return;
    }
    if (mw_trust_outbound(s->res.trust)) {
        s->res.spf_skipped = true;
        mw_sess_trace(s, "spf: skipped, outbound mail (%s)", mw_trust_name(s->res.trust));
        return;
    }
    if (!s->client_ip || !s->have_addr) {
        s->res.spf_skipped = true;
        mw_sess_trace(s, "spf: skipped, client address unknown");
        return;
    }
    /* HELO identity: evaluated and reported on its own; RFC 7208 §2.3. */
    if (cfg->spf_helo && s->helo) {
        mw_spf_check(s->rt->spf, s->client_ip, s->helo, s->mail_from, MW_SPF_SCOPE_HELO, &s->res.spf_helo);
        trace_spf(s, "helo", &s->res.spf_helo);
    }
    /* MAIL FROM identity; for the null sender it is postmaster@HELO
     * (RFC 7208 §2.4), which is the HELO check again: reuse it. */
    if (!*s->mail_from && s->res.spf_helo.evaluated) {
        mw_spf_outcome *d = &s->res.spf, *h = &s->res.spf_helo;
        d->result = h->result;
        d->scope = MW_SPF_SCOPE_HELO;
        d->identity = mw_strdup(h->identity);
        d->domain = mw_strdup(h->domain);
        d->client_ip = mw_strdup(h->client_ip);
        d->helo = mw_strdup(h->helo);
        d->explanation = mw_strdup(h->explanation);
        d->reason = mw_strdup(h->reason);
        d->evaluated = true;
        mw_sess_trace(s, "spf mailfrom: null sender, using the HELO result");
    } else {
        mw_spf_check(s->rt->spf, s->client_ip, s->helo, s->mail_from, MW_SPF_SCOPE_MAILFROM, &s->res.spf);
        trace_spf(s, "mailfrom", &s->res.spf);
    }
}

void mw_session_connect(mw_session *s)
{
    s->refused = false;
    if (s->connect_done)
        return;
    s->connect_done = true;
    s->rt = mw_engine_acquire(s->engine, false);
    decide_trust(s);
    bool ok = mw_sess_ratelimit(s, MW_RL_CONNECT, NULL);
    mw_engine_release(s->engine, &s->rt, false);
    if (!ok) {
        count_refusal(s->refusal.action, "connect", s->refusal.rule);
        mw_log_kv kv[] = {{"id", mw_session_id(s)}, {"client", s->client_ip ? s->client_ip : "unknown"},
                          {"trust", mw_trust_name(s->res.trust)}, {"rule", s->refusal.rule},
                          {"reply", s->refusal.text}};
        mw_log_fields(MW_LOG_INFO, "connection refused", kv, sizeof kv / sizeof kv[0]);
    }
}

const mw_reply *mw_session_refusal(const mw_session *s)
{
    return s->refused ? &s->refusal : NULL;
}

static void log_refused(mw_session *s, const char *stage, const char *rcpt)
{
    count_refusal(s->refusal.action, stage, s->refusal.rule);
    mw_log_kv kv[] = {{"id", mw_session_id(s)}, {"client", s->client_ip ? s->client_ip : "unknown"},
                      {"from", s->mail_from}, {"rcpt", rcpt}, {"trust", mw_trust_name(s->res.trust)},
                      {"stage", stage}, {"rule", s->refusal.rule}, {"reply", s->refusal.text}};
    mw_log_fields(MW_LOG_INFO, "refused", kv, sizeof kv / sizeof kv[0]);
}

void mw_session_mail(mw_session *s, const char *from)
{
    message_clear(s);
    s->refused = false;
    s->rt = mw_engine_acquire(s->engine, true);
    s->in_message = true;
    s->t_mail_ns = mw_metrics_now_ns();
    s->mail_from = mw_addr_strip(from ? from : "");
    decide_trust(s);
    /* MAIL rate limits and the client's reputation: one store round trip */
    if (!mw_sess_stage_state(s, MW_RL_MAIL)) {
        /* the MTA refuses MAIL: this transaction ends here */
        log_refused(s, "mail", NULL);
        mw_sess_reputation_record(s, &s->verdict);
        mw_engine_message_done(s->engine);
        s->in_message = false;
        return;
    }
    uint64_t t0 = mw_metrics_now_ns();
    run_spf(s);
    if (!s->res.spf_skipped)
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_SPF, mw_metrics_now_ns() - t0);
}

static void session_rcpt(mw_session *s, const char *rcpt, bool limits)
{
    s->refused = false;
    if (!s->rt || !s->in_message)
        return;
    char *a = mw_addr_strip(rcpt ? rcpt : "");
    if (limits && !mw_sess_ratelimit(s, MW_RL_RCPT, a)) {
        log_refused(s, "rcpt", a);
        free(a);
        return;   /* not counted: the MTA refuses this recipient */
    }
    if (s->nrcpt++ == 0) {
        s->first_rcpt_domain = mw_strdup(mw_addr_domain(a));
        mw_str_lower(s->first_rcpt_domain);
    }
    mw_str_lower(a);
    s->rcpts = mw_reallocarray(s->rcpts, s->nrcpts + 1, sizeof *s->rcpts);
    s->rcpts[s->nrcpts++] = a;   /* kept for the policy (recipient conditions) */
}

void mw_session_rcpt(mw_session *s, const char *rcpt)
{
    session_rcpt(s, rcpt, true);
}

void mw_session_rcpt_checked(mw_session *s, const char *rcpt)
{
    session_rcpt(s, rcpt, false);
}

void mw_engine_rcpt_check(mw_engine *e, const char *ip, const char *helo, const char *from,
                          const char *rcpt, const char *auth, mw_reply *out)
{
    memset(out, 0, sizeof *out);
    out->action = MW_ACTION_ACCEPT;
    mw_session *s = mw_session_new(e, ip, NULL);
    if (auth && *auth)
        mw_session_macro(s, "{auth_authen}", auth);
    mw_session_helo(s, helo);
    s->rt = mw_engine_acquire(e, false);
    s->mail_from = mw_addr_strip(from ? from : "");
    decide_trust(s);
    char *a = mw_addr_strip(rcpt ? rcpt : "");
    if (!mw_sess_ratelimit(s, MW_RL_RCPT, a)) {
        *out = s->refusal;
        out->rule = NULL;   /* owned by the runtime released below */
        log_refused(s, "rcpt", a);
    }
    free(a);
    mw_engine_release(e, &s->rt, false);
    mw_session_free(&s);
}

static void hold_header(mw_session *s, const char *name, const char *value, size_t vlen)
{
    if (s->held_overflow || s->eoh_done)
        return;
    size_t nlen = strlen(name);
    if (s->nheld >= MAX_HELD_HEADERS || s->held_bytes + nlen + vlen > MAX_HELD_BYTES) {
        s->held_overflow = true;
        mw_sess_trace(s, "dkim: more than %d headers or %d bytes of headers: DKIM skipped for this message",
              MAX_HELD_HEADERS, MAX_HELD_BYTES);
        return;
    }
    /* capacity 64, then doubling (full exactly when nheld is 64 times a
     * power of two): growing by 64 copied the array once per 64 headers */
    size_t blocks = s->nheld / 64;
    if (s->nheld % 64 == 0 && (blocks & (blocks - 1)) == 0)
        s->held = mw_reallocarray(s->held, s->nheld ? 2 * s->nheld : 64, sizeof *s->held);
    held_header *h = &s->held[s->nheld++];
    h->name = mw_strndup(name, nlen);
    h->value = mw_malloc(vlen + 1);
    memcpy(h->value, value, vlen);
    h->value[vlen] = '\0';
    h->vlen = vlen;
    s->held_bytes += nlen + vlen;
}

/* Remember a From domain for from_enforcing.  Each costs a DNS lookup, so
 * only MAX_FROM_DOMAINS are kept; one more means the From headers could hide
 * an enforcing domain past the cap, so the message counts as from a domain
 * that enforces DMARC (fail safe), and the trace says so. */
static void add_from_domain(mw_session *s, const char *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < s->nfrom_domains; i++)
        if (strcmp(s->from_domains[i], d) == 0)
            return;
    if (s->nfrom_domains >= MAX_FROM_DOMAINS) {
        if (!s->from_domains_over)
            mw_sess_trace(s, "from: more than %d domains in From headers: treated as from a domain "
                          "that enforces DMARC", MAX_FROM_DOMAINS);
        s->from_domains_over = true;
        return;
    }
    s->from_domains[s->nfrom_domains++] = mw_strdup(d);
}

static void recovered_domain(void *arg, const char *domain)
{
    add_from_domain(arg, domain);
}

static void note_from(mw_session *s, const char *value, size_t vlen)
{
    /* collect the domains of every From header, even malformed ones, so a
     * spoof split over several From headers is judged by all its domains.
     * The first From is parsed once, straight into the result the policy
     * reads; later ones into a scratch copy (each header: one parse). */
    mw_from later;
    bool first = ++s->res.nfrom == 1;
    mw_from *f = first ? &s->res.from : &later;
    mw_from_parse(value, vlen, f);
    for (size_t i = 0; i < f->naddr && i < MW_FROM_MAX_ADDRS; i++)
        add_from_domain(s, f->domain[i]);
    if (f->naddr > MW_FROM_MAX_ADDRS && !s->from_domains_over) {
        /* the parser kept only the first addresses: the others are unseen */
        mw_sess_trace(s, "from: more than %d addresses in a From header: treated as from a domain "
                      "that enforces DMARC", MW_FROM_MAX_ADDRS);
        s->from_domains_over = true;
    }
    if (f->status == MW_FROM_UNPARSABLE || f->status == MW_FROM_NODOMAIN || f->naddr == 0) {
        /* The parser gave up: every domain a reader could see after an '@'
         * in the raw value counts, so a malformed From cannot hide an
         * enforcing domain from the policy; one that looks like a domain
         * but cannot be read fails closed. */
        bool unreadable = false;
        mw_from_recover_domains(value, vlen, recovered_domain, s, &unreadable);
        if (unreadable && !s->from_domains_over) {
            mw_sess_trace(s, "from: a From domain cannot be read: treated as from a domain that enforces DMARC");
            s->from_domains_over = true;
        }
    }
    if (!first) {
        mw_from_clear(&later);
        if (s->res.nfrom == 2)
            mw_sess_trace(s, "from: more than one From header");
    } else if (s->res.from.status != MW_FROM_OK) {
        mw_buf b = MW_BUF_INIT;
        mw_str_printable(&b, value, vlen, 120);
        mw_sess_trace(s, "from: header From \"%s\" is %s (%s)", mw_buf_cstr(&b),
                      mw_from_status_name(s->res.from.status), s->res.from.why);
        mw_buf_free(&b);
    }
}

/* Header name equality, ASCII case-insensitive, ignoring white space
 * before the colon: blanks (RFC 5322 §4.5.3 obsolete syntax "From :", which
 * MUAs still read and Postfix, Sendmail and Exim count under the trimmed
 * name) and folds or CRs ("Name\n : v", a header to Sendmail and Exim).
 * The one place that says what a header is called. */
static bool name_is(const char *name, const char *want)
{
    size_t n = strlen(name);
    while (n && strchr(" \t\r\n\v\f", name[n - 1]))
        n--;
    return mw_str_ieq(name, n, want, strlen(want));
}

/* A header from a trusted upstream (dmarc.trusted_authserv_ids): keep its
 * parsed results for DMARC. */
static void note_trusted_ar(mw_session *s, unsigned index, const char *value, size_t vlen)
{
    const mw_config *cfg = s->rt->cfg;
    for (size_t i = 0; i < cfg->ndmarc_trusted_authserv_ids; i++) {
        if (!mw_authres_id_is(value, vlen, cfg->dmarc_trusted_authserv_ids[i]))
            continue;
        if (s->ntrusted_ar >= MAX_TRUSTED_AR) {
            mw_sess_trace(s, "authres: header #%u from trusted upstream %s ignored: only the first %d are used",
                          index, cfg->dmarc_trusted_authserv_ids[i], MAX_TRUSTED_AR);
            return;
        }
        mw_authres_parsed *p = mw_calloc(1, sizeof *p);
        if (mw_authres_parse(value, vlen, p)) {
            s->trusted_ar[s->ntrusted_ar++] = p;
            mw_sess_trace(s, "authres: header #%u from trusted upstream %s (%zu results)", index, p->id, p->nri);
        } else {
            free(p);
        }
        return;
    }
}

/* Every Authentication-Results header is recorded with its occurrence
 * index and whether it is removed (it claims our authserv-id); the kept
 * ones' values too, for front ends that remove by name and re-add the
 * others.  No cap: every forged header is removed, whatever their number
 * (the front ends bound the header bytes they accept). */
static void note_ar(mw_session *s, const char *value, size_t vlen)
{
    const mw_config *cfg = s->rt->cfg;
    bool ours = mw_authres_is_ours(value, vlen, cfg->authserv_id);
    if (s->nars % 64 == 0)
        s->ars = mw_reallocarray(s->ars, s->nars + 64, sizeof *s->ars);
    ar_seen *a = &s->ars[s->nars++];
    unsigned index = (unsigned)s->nars;
    a->removed = ours && cfg->ar_remove_forged;
    a->off = a->len = 0;
    if (!ours && cfg->ndmarc_trusted_authserv_ids)
        note_trusted_ar(s, index, value, vlen);
    if (!a->removed) {
        a->off = s->ar_text.len;
        a->len = vlen;
        mw_buf_append(&s->ar_text, value, vlen);
        mw_buf_putc(&s->ar_text, '\0');
        return;
    }
    s->nar_removed++;
    mw_sess_trace(s, "authres: header #%u claims our authserv-id %s: will be removed", index, cfg->authserv_id);
}

void mw_session_header(mw_session *s, const char *name, const char *value, size_t vlen)
{
    if (!s->rt)
        return;
    hold_header(s, name, value, vlen);
    mw_sess_failrep_header(s, name, value, vlen);
    if (name_is(name, "From"))
        note_from(s, value, vlen);
    else if (name_is(name, "List-Id") || name_is(name, "List-Post"))
        mw_sess_note_list_header(s, name_is(name, "List-Id") ? "List-Id" : "List-Post", value, vlen);
    else if (name_is(name, AR_NAME))
        note_ar(s, value, vlen);
}

/* Which keys sign this message?  Sets s->sign_keys or s->not_signed. */
static void decide_signing(mw_session *s)
{
    const mw_config *cfg = s->rt->cfg;
    const mw_dkim_signer *signer = s->rt->dkim_signer;
    mw_buf b = MW_BUF_INIT;
    const char *identity = NULL;
    if (!mw_trust_outbound(s->res.trust)) {
        snprintf(s->not_signed, sizeof s->not_signed, "inbound mail: %s", s->trust_reason);
    } else if (!cfg->dkim_sign) {
        snprintf(s->not_signed, sizeof s->not_signed, "dkim.sign is off");
    } else if (mw_dkim_signer_nkeys(signer) == 0) {
        snprintf(s->not_signed, sizeof s->not_signed, "no signing keys configured");
    } else if (cfg->dkim_identity == MW_DKIM_ID_ENVELOPE) {
        if (s->mail_from && *s->mail_from)
            identity = s->mail_from;
        else
            snprintf(s->not_signed, sizeof s->not_signed, "null envelope sender (dkim.identity = envelope)");
    } else if (cfg->dkim_identity == MW_DKIM_ID_AUTH) {
        if (s->auth_authen)
            identity = s->auth_authen;
        else
            snprintf(s->not_signed, sizeof s->not_signed, "not SMTP-authenticated (dkim.identity = auth)");
    } else if (s->res.nfrom != 1) {
        snprintf(s->not_signed, sizeof s->not_signed, "%s header From", s->res.nfrom ? "more than one" : "no");
    } else if (s->res.from.status != MW_FROM_OK) {
        snprintf(s->not_signed, sizeof s->not_signed, "header From is %s (%s)",
                 mw_from_status_name(s->res.from.status), s->res.from.why);
    } else {
        identity = s->res.from.addr[0];
    }
    if (identity) {
        char why[200] = "";
        s->nsign_keys = mw_dkim_signer_lookup(signer, identity, s->sign_keys, MAX_SIGN_KEYS, why, sizeof why);
        const char *at = strrchr(identity, '@');
        snprintf(s->sign_domain, sizeof s->sign_domain, "%s", at != NULL ? at + 1 : identity);
        if (s->nsign_keys == 0)
            snprintf(s->not_signed, sizeof s->not_signed, "%s", why[0] ? why : "no signing-table match");
    }
    if (s->nsign_keys == 0) {
        s->res.not_signed = s->not_signed;
        mw_sess_trace(s, "dkim: not signed: %s", mw_sess_safe(&b, s->not_signed));
    } else {
        for (size_t i = 0; i < s->nsign_keys; i++) {
            mw_dkim_key_info ki;
            if (mw_dkim_signer_key(signer, s->sign_keys[i], &ki))
                mw_sess_trace(s, "dkim: will sign for %s with key %s (d=%s s=%s %s)", mw_sess_safe(&b, identity), ki.name,
                      ki.per_domain ? s->sign_domain : ki.domain, ki.selector, ki.algorithm);
        }
    }
    mw_buf_free(&b);
}

void mw_session_eoh(mw_session *s)
{
    if (!s->rt || s->eoh_done)
        return;
    s->eoh_done = true;
    mw_runtime *rt = s->rt;
    s->dkim_verifying = !mw_trust_outbound(s->res.trust) && rt->dkim_verifier != NULL;
    decide_signing(s);
    mw_sess_arc_begin(s);
    if (!s->dkim_verifying && s->nsign_keys == 0) {
        held_clear(s);
        return;
    }
    if (s->held_overflow) {
        s->dkim_overflow = s->dkim_verifying;   /* say so in A-R, not silently */
        s->dkim_verifying = false;
        s->nsign_keys = 0;
        snprintf(s->not_signed, sizeof s->not_signed, "too many or too large headers");
        s->res.not_signed = s->not_signed;
        held_clear(s);
        return;
    }
    s->dkim = mw_dkim_msg_begin(s->dkim_verifying ? rt->dkim_verifier : NULL, rt->dkim_signer, s->sign_keys,
                                s->nsign_keys, mw_session_id(s));
    mw_dkim_msg_sign_domain(s->dkim, s->sign_domain);
    for (size_t i = 0; s->dkim && i < s->nheld; i++)
        mw_dkim_msg_header(s->dkim, s->held[i].name, s->held[i].value, s->held[i].vlen);
    if (s->dkim)
        mw_dkim_msg_eoh(s->dkim);
    held_clear(s);
}

void mw_session_body(mw_session *s, const unsigned char *chunk, size_t len)
{
    s->body_bytes += len;
    if (s->dkim)
        mw_dkim_msg_body(s->dkim, chunk, len);
    if (s->arc)
        mw_sess_arc_body(s, chunk, len);
}

static const char *dnssec_name(mw_dkim_dnssec d)
{
    switch (d) {
    case MW_DKIM_DNSSEC_SECURE: return "secure";
    case MW_DKIM_DNSSEC_BOGUS: return "bogus";
    case MW_DKIM_DNSSEC_UNPROTECTED: return "unprotected";
    default: return NULL;
    }
}

/* End of message for DKIM: collect verification results and signatures. */
static void dkim_finish(mw_session *s)
{
    if (!s->dkim)
        return;
    mw_dkim_msg_end(s->dkim, s->dkim_verifying ? &s->res.dkim : NULL, &s->dkim_sigs, &s->ndkim_sigs);
    mw_dkim_msg_free(&s->dkim);
    mw_buf a = MW_BUF_INIT, b = MW_BUF_INIT;
    if (s->dkim_verifying) {
        s->res.dkim_verified = true;
        if (s->res.dkim.nsig == 0)
            mw_sess_trace(s, "dkim: no signature");
        for (size_t i = 0; i < s->res.dkim.nsig; i++) {
            const mw_dkim_sig *g = &s->res.dkim.sig[i];
            mw_sess_trace(s, "dkim: %s d=%s s=%s a=%s (%s)", mw_dkim_result_name(g->result), mw_sess_safe(&a, g->domain),
                  mw_sess_safe(&b, g->selector), g->algorithm ? g->algorithm : "?", g->reason ? g->reason : "");
        }
        if (s->res.dkim.nskipped)
            mw_sess_trace(s, "dkim: %zu more signature(s) not evaluated (dkim.max_signatures)", s->res.dkim.nskipped);
    }
    if (s->nsign_keys) {
        for (size_t i = 0; i < s->nsign_keys && s->res.nsigned < 8; i++)
            if (mw_dkim_signer_key(s->rt->dkim_signer, s->sign_keys[i], &s->res.signed_with[s->res.nsigned])) {
                mw_dkim_key_info *ki = &s->res.signed_with[s->res.nsigned++];
                if (ki->per_domain)   /* OpenDKIM's %: d= was the sender's domain */
                    ki->domain = s->sign_domain;
            }
        if (s->ndkim_sigs != s->nsign_keys) {
            snprintf(s->not_signed, sizeof s->not_signed, "signing failed for %zu of %zu key(s) (see log)",
                     s->nsign_keys - s->ndkim_sigs, s->nsign_keys);
            s->res.not_signed = s->not_signed;
            s->res.nsigned = s->ndkim_sigs < s->res.nsigned ? s->ndkim_sigs : s->res.nsigned;
            mw_sess_trace(s, "dkim: %s", s->not_signed);
        }
        mw_sess_trace(s, "dkim: added %zu signature(s)", s->ndkim_sigs);
    }
    mw_buf_free(&a);
    mw_buf_free(&b);
}

void mw_session_abort(mw_session *s)
{
    message_clear(s);
}

/* ---- verdict ---- */

static void add_header(mw_verdict *v, const char *name, const char *value)
{
    v->add = mw_reallocarray(v->add, v->nadd + 1, sizeof *v->add);
    v->add[v->nadd].name = mw_strdup(name);
    v->add[v->nadd].value = mw_strdup(value);
    v->nadd++;
}

static void build_headers(mw_session *s)
{
    const mw_config *cfg = s->rt->cfg;
    mw_verdict *v = &s->verdict;

    /* removals, highest index first so earlier indices do not shift; the
     * name is the canonical one, whatever spacing or case the message used
     * (the MTAs count "Authentication-Results :" under it) */
    if (s->nar_removed)
        v->remove = mw_reallocarray(NULL, s->nar_removed, sizeof *v->remove);
    for (size_t i = s->nars; i-- > 0;) {
        if (!s->ars[i].removed)
            continue;
        v->remove[v->nremove].name = mw_strdup(AR_NAME);
        v->remove[v->nremove].index = (unsigned)i + 1;
        v->nremove++;
    }
    if (s->nars)
        v->ar = mw_reallocarray(NULL, s->nars, sizeof *v->ar);
    for (size_t i = 0; i < s->nars; i++) {
        const ar_seen *a = &s->ars[i];
        v->ar[i] = (mw_ar_header){.index = (unsigned)i + 1, .removed = a->removed,
                                  .value = a->removed ? NULL : s->ar_text.data + a->off, .vlen = a->len};
    }
    v->nar = s->nars;
    for (size_t i = 0; i < s->ndkim_sigs; i++)
        add_header(v, "DKIM-Signature", s->dkim_sigs[i]);
    if (s->quarantined_by_header)
        add_header(v, "X-Mailwarden-Quarantine", v->quarantine_reason ? v->quarantine_reason : "dmarc");
    if (mw_trust_outbound(s->res.trust) || (s->res.spf_skipped && !s->res.dkim_verified && !s->dkim_overflow))
        return;

    mw_authres *ar = mw_authres_new(cfg->authserv_id);
    if (s->dkim_overflow)
        mw_authres_add(ar, "dkim", "permerror", "not verified: too many or too large headers", NULL);
    if (s->res.dkim_verified) {
        if (s->res.dkim.nsig == 0)
            mw_authres_add(ar, "dkim", "none", NULL, NULL);
        for (size_t i = 0; i < s->res.dkim.nsig; i++) {
            const mw_dkim_sig *g = &s->res.dkim.sig[i];
            mw_buf c = MW_BUF_INIT;
            if (g->bits)
                mw_buf_printf(&c, "%u-bit key", g->bits);
            const char *dn = dnssec_name(g->dnssec);
            if (dn)
                mw_buf_printf(&c, "%s%s", c.len ? "; " : "", dn);
            if (g->result != MW_DKIM_PASS && g->reason && *g->reason)
                mw_buf_printf(&c, "%s%s", c.len ? "; " : "", g->reason);
            const char *props[] = {"header.d", g->domain,   "header.i", g->identity, "header.s", g->selector,
                                   "header.a", g->algorithm, "header.b", g->b_prefix, NULL};
            mw_authres_add(ar, "dkim", mw_dkim_result_name(g->result), c.len ? mw_buf_cstr(&c) : NULL, props);
            mw_buf_free(&c);
        }
    }
    mw_sess_arc_authres(s, ar);
    if (s->res.spf.evaluated) {
        const mw_spf_outcome *o = &s->res.spf;
        if (o->scope == MW_SPF_SCOPE_MAILFROM) {
            const char *props[] = {"smtp.mailfrom", o->identity, NULL};
            mw_authres_add(ar, "spf", mw_spf_result_name(o->result), NULL, props);
        }
    }
    if (s->res.spf_helo.evaluated) {
        const mw_spf_outcome *o = &s->res.spf_helo;
        const char *props[] = {"smtp.helo", o->helo ? o->helo : s->helo, NULL};
        mw_authres_add(ar, "spf", mw_spf_result_name(o->result), NULL, props);
    }
    if (s->res.dmarc_done && s->res.dmarc.result != MW_DMARC_NONE) {
        const mw_dmarc_outcome *o = &s->res.dmarc;
        mw_buf c = MW_BUF_INIT;
        if (!o->record.p) {
            /* temperror/permerror before a usable record was found */
            mw_authres_add(ar, "dmarc", mw_dmarc_result_name(o->result), o->reason,
                           (const char *const[]){"header.from", o->from_domain, NULL});
            goto dmarc_done;
        }
        mw_buf_printf(&c, "p=%s", mw_dmarc_policy_name(o->record.p));
        if (o->record.sp)
            mw_buf_printf(&c, " sp=%s", mw_dmarc_policy_name(o->record.sp));
        if (o->record.np)
            mw_buf_printf(&c, " np=%s", mw_dmarc_policy_name(o->record.np));
        if (o->testing)
            mw_buf_puts(&c, " t=y");
        mw_buf_printf(&c, " dis=%s", mw_sess_dmarc_applied(s, v));
        if (s->res.dmarc_override_text[0])
            mw_buf_printf(&c, " override=%s", s->res.dmarc_override_text);
        /* policy.dmarc takes none, quarantine or reject only: the disposition
         * asked for, else (temperror, permerror) the applicable policy. */
        mw_dmarc_policy pd = o->disposition != MW_DMARC_P_UNSPEC ? o->disposition : o->policy;
        const char *props[] = {"header.from", o->from_domain,
                               pd != MW_DMARC_P_UNSPEC ? "policy.dmarc" : NULL, mw_dmarc_policy_name(pd), NULL};
        mw_authres_add(ar, "dmarc", mw_dmarc_result_name(o->result), mw_buf_cstr(&c), props);
    dmarc_done:
        mw_buf_free(&c);
    } else if (s->res.dmarc_done) {
        const char *props[] = {"header.from", s->res.dmarc.from_domain, NULL};
        mw_authres_add(ar, "dmarc", "none", NULL, props);
    } else if (s->rt->dmarc && s->res.nfrom != 1) {
        mw_authres_add(ar, "dmarc", "permerror", s->res.nfrom ? "more than one From header" : "no From header", NULL);
    } else if (s->rt->dmarc && s->res.from.status != MW_FROM_OK) {
        mw_authres_add(ar, "dmarc", "permerror", s->res.from.why, NULL);
    }
    mw_buf b = MW_BUF_INIT;
    mw_authres_render(ar, &b);
    add_header(v, "Authentication-Results", mw_buf_cstr(&b));
    mw_authres_free(&ar);
    mw_arc_set set = {0};
    if (mw_sess_arc_seal(s, v, mw_buf_cstr(&b), &set)) {
        add_header(v, "ARC-Seal", set.as);
        add_header(v, "ARC-Message-Signature", set.ams);
        add_header(v, "ARC-Authentication-Results", set.aar);
    }
    mw_arc_set_clear(&set);

    if (cfg->spf_received_header && s->res.spf.evaluated) {
        mw_buf_reset(&b);
        mw_spf_received_spf(&s->res.spf, cfg->hostname, &b);
        add_header(v, "Received-SPF", mw_buf_cstr(&b));
    }
    mw_buf_free(&b);
}

/* Expand %{name} placeholders (and %% -> %) of a reply template; the
 * policy loader has already refused unknown placeholders. */
static void expand_reply(mw_session *s, const char *tpl, const char *rule, mw_buf *out)
{
    for (const char *p = tpl; *p;) {
        if (p[0] == '%' && p[1] == '%') {
            mw_buf_putc(out, '%');
            p += 2;
            continue;
        }
        if (p[0] == '%' && p[1] == '{') {
            const char *end = strchr(p, '}');
            if (end) {
                size_t n = (size_t)(end - p - 2);
                const char *name = p + 2;
                const mw_spf_outcome *o = &s->res.spf;
                if (n == 15 && strncmp(name, "spf_explanation", n) == 0) {
                    if (o->explanation && *o->explanation)
                        mw_buf_puts(out, o->explanation);
                    else if (o->evaluated)
                        mw_buf_printf(out, "SPF %s: %s does not designate %s as permitted sender",
                                      mw_spf_result_name(o->result), o->domain ? o->domain : "sender domain",
                                      s->client_ip ? s->client_ip : "the client");
                    else
                        mw_buf_puts(out, "SPF not evaluated");
                } else if (n == 13 && strncmp(name, "sender_domain", n) == 0) {
                    mw_buf_puts(out, s->mail_from ? mw_addr_domain(s->mail_from) : "");
                } else if (n == 9 && strncmp(name, "client_ip", n) == 0) {
                    mw_buf_puts(out, s->client_ip ? s->client_ip : "");
                } else if (n == 4 && strncmp(name, "rule", n) == 0) {
                    mw_buf_puts(out, rule);
                } else if (n == 11 && strncmp(name, "from_domain", n) == 0) {
                    const char *fd = s->res.from.status == MW_FROM_OK ? s->res.from.domain[0]
                                     : s->nfrom_domains ? s->from_domains[0] : "";
                    mw_buf_puts(out, fd);
                } else if (n == 12 && strncmp(name, "dmarc_policy", n) == 0) {
                    mw_buf_puts(out, s->res.dmarc_done ? mw_dmarc_policy_name(s->res.dmarc.policy) : "none");
                }
                p = end + 1;
                continue;
            }
        }
        mw_buf_putc(out, *p++);
    }
}

/* Split "550 5.7.23 text" into the verdict; sanitise the text. */
static void set_reply(mw_verdict *v, const char *reply, const char *dcode, const char *dx, const char *dtext)
{
    const char *p = reply ? reply : "";
    snprintf(v->rcode, sizeof v->rcode, "%s", dcode);
    snprintf(v->xcode, sizeof v->xcode, "%s", dx);
    if (strlen(p) >= 3 && (p[0] == '4' || p[0] == '5') && p[1] >= '0' && p[1] <= '9' &&
        p[2] >= '0' && p[2] <= '9' && (p[3] == ' ' || p[3] == '\0')) {
        memcpy(v->rcode, p, 3);
        v->rcode[3] = '\0';
        p += 3;
        while (*p == ' ')
            p++;
        size_t xl = strspn(p, "0123456789.");
        if (xl >= 5 && xl < sizeof v->xcode && (p[xl] == ' ' || p[xl] == '\0') && p[0] == v->rcode[0]) {
            memcpy(v->xcode, p, xl);
            v->xcode[xl] = '\0';
            p += xl;
            while (*p == ' ')
                p++;
        }
    }
    if (!*p)
        p = dtext;
    /* reply text: printable ASCII only, no CR/LF, capped */
    mw_buf t = MW_BUF_INIT;
    for (; *p && t.len < MAX_REPLY_TEXT; p++) {
        unsigned char c = (unsigned char)*p;
        mw_buf_putc(&t, (c >= 0x20 && c < 0x7f) ? (char)c : '?');
    }
    v->text = mw_buf_steal(&t);
}

/* policy_shadow: what the second policy would have done; logged and counted
 * only where its action differs (the message gets the real verdict). */
static void shadow_eval(mw_session *s, const mw_policy_facts *f, const mw_policy_decision *real)
{
    mw_policy_decision sd;
    mw_policy_eval(s->rt->shadow, f, &sd);
    if (sd.action == real->action)
        return;
    mw_sess_trace(s, "policy_shadow %s: rule \"%s\" -> %s (the verdict is %s, rule \"%s\")",
                  mw_policy_name(s->rt->shadow), sd.rule, mw_action_name(sd.action), mw_action_name(real->action),
                  real->rule);
    const mw_log_kv kv[] = {{"queue_id", s->queue_id}, {"session", s->sid},
                            {"shadow_policy", mw_policy_name(s->rt->shadow)}, {"shadow_rule", sd.rule},
                            {"shadow_action", mw_action_name(sd.action)}, {"action", mw_action_name(real->action)},
                            {"rule", real->rule}};
    mw_log_fields(MW_LOG_INFO, "policy_shadow", kv, sizeof kv / sizeof kv[0]);
    mw_metric_inc_l(MW_M_POLICY_SHADOW_DIFFS, sd.rule, NULL);
}

static void summary_log(mw_session *s)
{
    const mw_verdict *v = &s->verdict;
    char nrcpt[16];
    snprintf(nrcpt, sizeof nrcpt, "%u", s->nrcpt);
    /* the disposition asked for; for temperror/permerror the applicable policy */
    mw_dmarc_policy dmarc_pol = MW_DMARC_P_UNSPEC;
    if (s->res.dmarc_done && s->res.dmarc.result != MW_DMARC_NONE)
        dmarc_pol = s->res.dmarc.disposition != MW_DMARC_P_UNSPEC ? s->res.dmarc.disposition : s->res.dmarc.policy;
    char dkim_summary[256] = "", signed_summary[256] = "";
    size_t off = 0;
    for (size_t i = 0; s->res.dkim_verified && i < s->res.dkim.nsig && off < sizeof dkim_summary - 1; i++) {
        int n = snprintf(dkim_summary + off, sizeof dkim_summary - off, "%s%s:%s", i ? "," : "",
                         mw_dkim_result_name(s->res.dkim.sig[i].result),
                         s->res.dkim.sig[i].domain ? s->res.dkim.sig[i].domain : "?");
        if (n < 0)
            break;
        off += (size_t)n;
    }
    if (s->res.dkim_verified && s->res.dkim.nsig == 0)
        snprintf(dkim_summary, sizeof dkim_summary, "none");
    off = 0;
    for (size_t i = 0; i < s->res.nsigned && off < sizeof signed_summary - 1; i++) {
        int n = snprintf(signed_summary + off, sizeof signed_summary - off, "%s%s/%s", i ? "," : "",
                         s->res.signed_with[i].domain, s->res.signed_with[i].selector);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    char rep_summary[160] = "";
    if (s->res.reputation_done) {
        const mw_rep_result *rr = &s->res.reputation;
        snprintf(rep_summary, sizeof rep_summary, "ip:%s%.2f/%u,net:%s%.2f/%u,domain:%s%.2f/%u",
                 rr->ip.known ? "" : "?", rr->ip.score, rr->ip.samples, rr->net.known ? "" : "?", rr->net.score,
                 rr->net.samples, rr->domain.known ? "" : "?", rr->domain.score, rr->domain.samples);
    }
    char reply[512] = "";
    if (v->text)
        snprintf(reply, sizeof reply, "%s %s %s", v->rcode, v->xcode, v->text);
    mw_log_kv kv[] = {
        {"id", mw_session_id(s)},
        {"client", s->client_ip ? s->client_ip : "unknown"},
        {"helo", s->helo},
        {"from", s->mail_from},
        {"rcpts", nrcpt},
        {"trust", mw_trust_name(s->res.trust)},
        {"spf", s->res.spf.evaluated ? mw_spf_result_name(s->res.spf.result) : NULL},
        {"spf_helo", s->res.spf_helo.evaluated ? mw_spf_result_name(s->res.spf_helo.result) : NULL},
        {"dkim", dkim_summary[0] ? dkim_summary : NULL},
        {"dmarc", s->res.dmarc_done ? mw_dmarc_result_name(s->res.dmarc.result) : NULL},
        {"dmarc_policy", dmarc_pol != MW_DMARC_P_UNSPEC ? mw_dmarc_policy_name(dmarc_pol) : NULL},
        {"dmarc_override", s->res.dmarc_override_text[0] ? s->res.dmarc_override_text : NULL},
        {"arc", s->res.arc_done && s->rt->cfg->arc_verify ? mw_arc_result_name(s->res.arc.result) : NULL},
        {"header_from", s->res.dmarc_done ? s->res.dmarc.from_domain : NULL},
        {"rate_limited", s->rate_limited ? "yes" : NULL},
        {"reputation", rep_summary[0] ? rep_summary : NULL},
        {"signed", signed_summary[0] ? signed_summary : NULL},
        {"not_signed", mw_trust_outbound(s->res.trust) ? s->res.not_signed : NULL},
        {"action", mw_action_name(v->action)},
        {"rule", v->rule},
        {"reply", v->text ? reply : NULL},
        {"removed_ar", s->nar_removed ? "yes" : NULL},
    };
    mw_log_fields(MW_LOG_INFO, "message", kv, sizeof kv / sizeof kv[0]);
}

/* The metrics of one decided message (next to its summary log line). */
static void count_message(mw_session *s, bool history_tempfail)
{
    const mw_verdict *v = &s->verdict;
    const mw_results *r = &s->res;
    mw_metric_inc(MW_M_MESSAGES, (unsigned)r->trust, (unsigned)v->action);
    if (r->spf.evaluated)
        mw_metric_inc_l(MW_M_CHECK_RESULTS, "spf", mw_spf_result_name(r->spf.result));
    if (r->spf_helo.evaluated)
        mw_metric_inc_l(MW_M_CHECK_RESULTS, "spf_helo", mw_spf_result_name(r->spf_helo.result));
    if (r->dkim_verified) {
        for (size_t i = 0; i < r->dkim.nsig; i++)
            mw_metric_inc_l(MW_M_CHECK_RESULTS, "dkim", mw_dkim_result_name(r->dkim.sig[i].result));
        if (r->dkim.nsig == 0)
            mw_metric_inc(MW_M_CHECK_RESULTS, MW_ML_CHECK_DKIM, MW_ML_RESULT_NONE);
    }
    if (r->dmarc_done)
        mw_metric_inc_l(MW_M_CHECK_RESULTS, "dmarc", mw_dmarc_result_name(r->dmarc.result));
    for (size_t i = 0; i < r->nsigned; i++)
        mw_metric_inc_l(MW_M_DKIM_SIGNATURES, r->signed_with[i].algorithm, NULL);
    count_refusal(v->action, "eom", history_tempfail ? "history" : v->rule);
    if (s->t_mail_ns)
        mw_metric_observe(MW_M_MESSAGE_SECONDS, 0, mw_metrics_now_ns() - s->t_mail_ns);
}

const mw_verdict *mw_session_eom(mw_session *s)
{
    /* a second end of message without a new MAIL FROM: the same verdict
     * (nothing is evaluated, recorded or charged twice) */
    if (s->eom_done)
        return &s->verdict;
    if (!s->rt) {
        /* end of message without MAIL FROM (should not happen): evaluate anyway */
        mw_session_mail(s, "");
    }
    if (!s->eoh_done)
        mw_session_eoh(s);
    uint64_t t0 = mw_metrics_now_ns();
    bool verifying = s->dkim_verifying, signing = s->nsign_keys > 0;
    dkim_finish(s);
    uint64_t t1 = mw_metrics_now_ns();
    if (verifying || signing)
        mw_metric_observe(MW_M_CHECK_SECONDS, verifying ? MW_ML_CHK_DKIM_VERIFY : MW_ML_CHK_DKIM_SIGN, t1 - t0);
    mw_sess_arc_finish(s);
    t1 = mw_metrics_now_ns();
    mw_sess_run_dmarc(s);
    if (s->res.dmarc_done)
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_DMARC, mw_metrics_now_ns() - t1);
    /* authenticated domains are known now: score them too (the MAIL-time
     * score only had the client address), in the same store round trip as
     * the end-of-message rate limits (session_limits.c) */
    bool eom_allowed = mw_sess_stage_state(s, MW_RL_EOM);
    mw_verdict *v = &s->verdict;
    verdict_clear(v);

    mw_policy_facts f = {0};
    f.trust = s->res.trust;
    f.client = s->have_addr ? &s->client_addr : NULL;
    f.sender_domain = (s->mail_from && *s->mail_from) ? mw_addr_domain(s->mail_from) : s->helo;
    f.spf_done = s->res.spf.evaluated;
    f.spf = s->res.spf.result;
    f.helo_spf_done = s->res.spf_helo.evaluated;
    f.helo_spf = s->res.spf_helo.result;
    f.null_sender = s->mail_from && !*s->mail_from;
    f.dmarc_done = s->res.dmarc_done;
    f.dmarc = s->res.dmarc.result;
    f.dmarc_policy = s->res.dmarc.policy;
    f.dmarc_disposition = s->res.dmarc.disposition;
    f.dmarc_override = s->res.dmarc_override;
    f.from_done = s->res.nfrom > 0;
    f.from_status = s->res.nfrom > 1 ? MW_FROM_MULTIPLE : s->res.nfrom == 0 ? MW_FROM_EMPTY : s->res.from.status;
    f.from_domain = s->res.from.status == MW_FROM_OK ? s->res.from.domain[0]
                    : s->nfrom_domains ? s->from_domains[0] : NULL;
    f.from_enforcing = s->res.from_enforcing;
    if (s->res.reputation_done) {
        f.rep_ip = (mw_policy_rep){s->res.reputation.ip.known, s->res.reputation.ip.score};
        f.rep_net = (mw_policy_rep){s->res.reputation.net.known, s->res.reputation.net.score};
        f.rep_domain = (mw_policy_rep){s->res.reputation.domain.known, s->res.reputation.domain.score};
    }

    /* DKIM, ARC, recipients, list headers (policy conditions) */
    const char **pass_domains = NULL;
    if (s->res.dkim_verified) {
        f.dkim_done = true;
        pass_domains = mw_reallocarray(NULL, s->res.dkim.nsig + 1, sizeof *pass_domains);
        if (s->res.dkim.nsig == 0)
            f.dkim_results |= 1u << MW_DKIM_NONE;
        for (size_t i = 0; i < s->res.dkim.nsig; i++) {
            const mw_dkim_sig *g = &s->res.dkim.sig[i];
            f.dkim_results |= 1u << g->result;
            if (g->result == MW_DKIM_PASS && g->domain) {
                pass_domains[f.ndkim_pass++] = g->domain;
                if (s->res.from.status == MW_FROM_OK && s->res.from.domain[0] &&
                    strcasecmp(g->domain, s->res.from.domain[0]) == 0)
                    f.signed_by_from = true;
            }
        }
        f.dkim_pass_domains = pass_domains;
        if (s->res.dmarc_done && s->res.dmarc.dkim_aligned)
            f.signed_by_from = true;   /* relaxed alignment, as DMARC judged it */
    }
    f.arc_done = s->res.arc_done && s->rt->cfg->arc_verify;
    f.arc = s->res.arc.result;
    f.rcpts = (const char *const *)s->rcpts;
    f.nrcpts = s->nrcpts;
    f.rate_limited = s->rate_limited;
    f.list_mail = s->list_header != NULL;

    mw_policy_decision d;
    bool eom_limited = false;
    if (!eom_allowed) {
        eom_limited = true;
        /* a per-message limit refuses the whole message */
        d.action = s->refusal.action;
        d.rule = s->refusal.rule ? s->refusal.rule : "ratelimit";
        d.reply = NULL;
        s->refused = false;   /* reported through the verdict, not as a refusal */
    } else {
        uint64_t tp = mw_metrics_now_ns();
        mw_policy_eval(s->rt->policy, &f, &d);
        mw_metric_observe(MW_M_CHECK_SECONDS, MW_ML_CHK_POLICY, mw_metrics_now_ns() - tp);
        if (s->rt->shadow)
            shadow_eval(s, &f, &d);
    }
    free(pass_domains);
    v->action = d.action;
    v->rule = d.rule;
    mw_sess_trace(s, "policy %s: rule \"%s\" -> %s", mw_policy_name(s->rt->policy), d.rule, mw_action_name(d.action));

    /* dmarc.reject_text replaces the rule's reply for DMARC rejects */
    const mw_config *cfg = s->rt->cfg;
    if (d.action == MW_ACTION_REJECT && s->res.dmarc_done && s->res.dmarc.result == MW_DMARC_FAIL &&
        cfg->dmarc_reject_text && *cfg->dmarc_reject_text)
        d.reply = cfg->dmarc_reject_text;
    /* what "quarantine" means here (dmarc.quarantine_action) */
    if (d.action == MW_ACTION_QUARANTINE && cfg->dmarc_quarantine_action != MW_QUARANTINE_HOLD) {
        if (cfg->dmarc_quarantine_action == MW_QUARANTINE_HEADER)
            s->quarantined_by_header = true;
        mw_sess_trace(s, "quarantine: dmarc.quarantine_action = %s: delivered%s",
              cfg->dmarc_quarantine_action == MW_QUARANTINE_HEADER ? "header" : "deliver",
              s->quarantined_by_header ? " with X-Mailwarden-Quarantine" : "");
        v->action = MW_ACTION_ACCEPT;
        v->quarantine_reason = mw_strdup(d.rule);
    }
    mw_buf r = MW_BUF_INIT;
    if (d.reply)
        expand_reply(s, d.reply, d.rule, &r);
    switch (v->action) {
    case MW_ACTION_REJECT:
        set_reply(v, d.reply ? mw_buf_cstr(&r) : NULL, "550", "5.7.1", "Message rejected by policy");
        break;
    case MW_ACTION_TEMPFAIL:
        set_reply(v, d.reply ? mw_buf_cstr(&r) : NULL, "451", "4.7.1", "Temporary failure, try again later");
        break;
    case MW_ACTION_QUARANTINE:
        v->quarantine_reason = mw_strdup(d.rule);
        break;
    default:
        break;
    }
    if (eom_limited) {
        snprintf(v->rcode, sizeof v->rcode, "%s", s->refusal.rcode);
        snprintf(v->xcode, sizeof v->xcode, "%s", s->refusal.xcode);
        free(v->text);
        v->text = mw_strdup(s->refusal.text);
    }
    mw_buf_free(&r);
    if (v->text)
        mw_sess_trace(s, "reply: %s %s %s", v->rcode, v->xcode, v->text);

    /* A DMARC failure given less than its domain asked for, with no override
     * to say why: the policy rule decided (A-R, history <reason>, check). */
    if (!s->res.dmarc_override_text[0] && mw_sess_dmarc_lowered(s, v)) {
        snprintf(s->res.dmarc_override_text, sizeof s->res.dmarc_override_text, "local_policy rule %s",
                 v->rule ? v->rule : "?");
        mw_sess_trace(s, "dmarc: disposition %s instead of %s: %s", mw_sess_dmarc_applied(s, v),
                      mw_dmarc_policy_name(s->res.dmarc.disposition), s->res.dmarc_override_text);
    }
    bool history_tempfail = false;
    if (!mw_sess_write_history(s, v) && cfg->history_on_error == MW_HISTORY_ERR_TEMPFAIL &&
        v->action != MW_ACTION_REJECT) {
        history_tempfail = true;
        free(v->text);
        v->action = MW_ACTION_TEMPFAIL;
        snprintf(v->rcode, sizeof v->rcode, "451");
        snprintf(v->xcode, sizeof v->xcode, "4.3.0");
        v->text = mw_strdup("Temporary local problem (DMARC history), try again later");
        mw_sess_trace(s, "history: history.on_error = tempfail");
    }
    mw_sess_reputation_record(s, v);
    build_headers(s);
    mw_sess_failure_report(s, v);
    summary_log(s);
    count_message(s, history_tempfail);
    /* The message is decided: it no longer holds up a graceful shutdown.
     * The runtime reference stays until the next message so the verdict's
     * rule name (owned by the policy) remains valid. */
    if (s->in_message) {
        mw_engine_message_done(s->engine);
        s->in_message = false;
    }
    s->eom_done = true;
    return v;
}

size_t mw_session_ar_count(const mw_session *s)
{
    return s->nars;
}

const mw_results *mw_session_results(const mw_session *s)
{
    return &s->res;
}

size_t mw_session_trace_count(const mw_session *s)
{
    return s->ntrace;
}

const char *mw_session_trace(const mw_session *s, size_t i)
{
    return i < s->ntrace ? s->trace[i] : NULL;
}
