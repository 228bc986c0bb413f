/*
 * session_dmarc.c - DMARC for the current message: evaluation with the
 * header From, SPF and DKIM results, local overrides, and the history
 * record an aggregate report is built from.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "session_priv.h"
#include "strutil.h"

/* ---- DMARC ---- */

static bool glob_any(char *const *pats, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (mw_glob_match(pats[i], s))
            return true;
    return false;
}

/* Is host equal to domain or below it (both lower case)? */
static bool host_at_or_below(const char *host, const char *domain)
{
    size_t lh = strlen(host), ld = strlen(domain);
    if (ld == 0 || lh < ld)
        return false;
    return strcasecmp(host + lh - ld, domain) == 0 && (lh == ld || host[lh - ld - 1] == '.');
}

void mw_sess_note_list_header(mw_session *s, const char *name, const char *value, size_t vlen)
{
    /* List-Id: "phrase <list-label.host.example>" (RFC 2919): the part in
     * angle brackets; List-Post: "<mailto:list@host.example>" (RFC 2369):
     * the address's domain.  The first usable one of either counts. */
    if (s->list_header != NULL && strcmp(s->list_header, "List-Id") == 0)
        return;
    const char *lt = memchr(value, '<', vlen);
    if (lt == NULL)
        return;
    const char *gt = memchr(lt, '>', vlen - (size_t)(lt - value));
    if (gt == NULL)
        return;
    const char *b = lt + 1;
    size_t n = (size_t)(gt - b);
    if (strcmp(name, "List-Post") == 0) {
        if (n < 7 || strncasecmp(b, "mailto:", 7) != 0)
            return;
        const char *at = memchr(b, '@', n);
        if (at == NULL)
            return;
        n -= (size_t)(at + 1 - b);
        b = at + 1;
        const char *q = memchr(b, '?', n);   /* mailto:list@host?subject=... */
        if (q != NULL)
            n = (size_t)(q - b);
    }
    char host[256];
    if (n == 0 || n >= sizeof host)
        return;
    memcpy(host, b, n);
    host[n] = '\0';
    mw_str_lower(host);
    if (!mw_domain_valid(host) || strchr(host, '.') == NULL)
        return;
    memcpy(s->list_host, host, n + 1);
    s->list_header = name;
}

/* A mailing list: List-Id/List-Post names a host at or below the d= of a
 * passing DKIM signature (the list signed what it sent).  The From domain
 * is not the list's: then DMARC would have passed. */
static const char *list_signer(const mw_session *s)
{
    const mw_results *r = &s->res;
    if (s->list_header == NULL || !r->dkim_verified)
        return NULL;
    for (size_t i = 0; i < r->dkim.nsig; i++) {
        const mw_dkim_sig *g = &r->dkim.sig[i];
        if (g->result == MW_DKIM_PASS && g->domain != NULL && strchr(g->domain, '.') != NULL &&
            host_at_or_below(s->list_host, g->domain))
            return g->domain;
    }
    return NULL;
}

/* dmarc.forwarders: a network holding the client, or a domain glob matched
 * by a passing DKIM d= or the SPF-passed domain.  The match, for the text. */
static bool forwarder_match(const mw_session *s, char *what, size_t wlen)
{
    const mw_config *cfg = s->rt->cfg;
    const mw_results *r = &s->res;
    for (size_t i = 0; i < cfg->ndmarc_forwarders; i++) {
        const char *e = cfg->dmarc_forwarders[i];
        bool net = strchr(e, ':') != NULL || strchr(e, '/') != NULL || isdigit((unsigned char)e[strlen(e) - 1]);
        if (net) {
            if (!s->have_addr)
                continue;
            mw_cidr_set *set = mw_cidr_set_new();
            bool in = mw_cidr_set_add(set, e, NULL, 0) && mw_cidr_set_contains(set, &s->client_addr);
            mw_cidr_set_free(&set);
            if (in) {
                snprintf(what, wlen, "%s", s->client_ip ? s->client_ip : e);
                return true;
            }
            continue;
        }
        for (size_t k = 0; r->dkim_verified && k < r->dkim.nsig; k++)
            if (r->dkim.sig[k].result == MW_DKIM_PASS && r->dkim.sig[k].domain &&
                mw_glob_match(e, r->dkim.sig[k].domain)) {
                snprintf(what, wlen, "%s", r->dkim.sig[k].domain);
                return true;
            }
        if (r->spf.evaluated && r->spf.result == MW_SPF_PASS && r->spf.domain && mw_glob_match(e, r->spf.domain)) {
            snprintf(what, wlen, "%s", r->spf.domain);
            return true;
        }
    }
    return false;
}

/* Local overrides (config), as MW_DMARC_OVR_* bits with a text for A-R. */
static void dmarc_overrides(mw_session *s)
{
    const mw_config *cfg = s->rt->cfg;
    mw_results *r = &s->res;
    mw_buf t = MW_BUF_INIT;
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig; i++)
        if (r->dkim.sig[i].result == MW_DKIM_PASS &&
            glob_any(cfg->dmarc_never_reject, cfg->ndmarc_never_reject, r->dkim.sig[i].domain)) {
            r->dmarc_override |= MW_DMARC_OVR_NEVER_REJECT;
            mw_buf_printf(&t, "never_reject %s", r->dkim.sig[i].domain);
            break;
        }
    if (!(r->dmarc_override & MW_DMARC_OVR_NEVER_REJECT) && r->spf.evaluated && r->spf.result == MW_SPF_PASS &&
        glob_any(cfg->dmarc_never_reject, cfg->ndmarc_never_reject, r->spf.domain)) {
        r->dmarc_override |= MW_DMARC_OVR_NEVER_REJECT;
        mw_buf_printf(&t, "never_reject %s", r->spf.domain);
    }
    if (r->from.status == MW_FROM_OK &&
        glob_any(cfg->dmarc_always_enforce, cfg->ndmarc_always_enforce, r->from.domain[0])) {
        r->dmarc_override |= MW_DMARC_OVR_ALWAYS_ENFORCE;
        mw_buf_printf(&t, "%salways_enforce", t.len ? ", " : "");
    }
    if (s->have_addr && mw_cidr_set_contains(cfg->dmarc_allow_networks, &s->client_addr)) {
        r->dmarc_override |= MW_DMARC_OVR_ALLOW_NETWORK;
        mw_buf_printf(&t, "%sallow_networks", t.len ? ", " : "");
    }
    /* Other knowledge before a reject (RFC 9989 §5): only for a failure, and
     * the policy decides what they are worth (the shipped ones quarantine). */
    if (r->dmarc.result == MW_DMARC_FAIL) {
        const char *ls = list_signer(s);
        if (ls != NULL) {
            r->dmarc_override |= MW_DMARC_OVR_MAILING_LIST;
            mw_buf_printf(&t, "%smailing_list %s", t.len ? ", " : "", s->list_host);
            mw_sess_trace(s, "dmarc: mailing list: %s names %s and DKIM d=%s passed", s->list_header,
                          s->list_host, ls);
        } else if (s->list_header != NULL) {
            mw_sess_trace(s, "dmarc: %s names %s, but no passing DKIM signature of that domain: "
                          "not treated as a mailing list", s->list_header, s->list_host);
        }
        char what[256];
        if (mw_sess_arc_trusted(s, what, sizeof what)) {
            r->dmarc_override |= MW_DMARC_OVR_TRUSTED_ARC;
            mw_buf_printf(&t, "%strusted_forwarder %s", t.len ? ", " : "", what);
        }
        if (forwarder_match(s, what, sizeof what)) {
            r->dmarc_override |= MW_DMARC_OVR_FORWARDER;
            mw_buf_printf(&t, "%strusted_forwarder %s", t.len ? ", " : "", what);
            mw_sess_trace(s, "dmarc: known forwarder (dmarc.forwarders): %s", what);
        }
    }
    snprintf(r->dmarc_override_text, sizeof r->dmarc_override_text, "%s", mw_buf_cstr(&t));
    if (t.len)
        mw_sess_trace(s, "dmarc: local override: %s", mw_buf_cstr(&t));
    mw_buf_free(&t);
}

void mw_sess_run_dmarc(mw_session *s)
{
    mw_runtime *rt = s->rt;
    mw_results *r = &s->res;
    if (!rt->dmarc || mw_trust_outbound(r->trust))
        return;
    /* Does any From domain involved publish an enforcing policy?  Asked only
     * when the From is unusable (the policy's from-malformed rules use it). */
    bool from_ok = r->nfrom == 1 && r->from.status == MW_FROM_OK;
    if (!from_ok) {
        r->from_enforcing = s->from_domains_over;   /* see add_from_domain() */
        for (size_t i = 0; i < s->nfrom_domains && !r->from_enforcing; i++) {
            bool te = false;
            if (mw_dmarc_domain_enforcing(rt->dmarc, s->from_domains[i], &te)) {
                r->from_enforcing = true;
                mw_sess_trace(s, "dmarc: From domain %s publishes an enforcing policy", s->from_domains[i]);
            }
        }
        mw_sess_trace(s, "dmarc: not evaluated: %s header From%s", r->nfrom == 0 ? "no" : r->nfrom > 1 ? "more than one" : mw_from_status_name(r->from.status),
              r->from_enforcing ? " (a domain involved enforces DMARC)" : "");
        return;
    }
    mw_dmarc_input in = {0};
    in.from_domain = r->from.domain[0];
    in.spf_done = r->spf.evaluated;
    in.spf_result = r->spf.result;
    in.spf_domain = r->spf.domain;
    in.dkim = r->dkim_verified ? r->dkim.sig : NULL;
    in.ndkim = r->dkim_verified ? r->dkim.nsig : 0;

    /* Results from trusted upstream hosts (dmarc.trusted_authserv_ids):
     * their spf=pass and dkim=pass count for alignment here too. */
    mw_dkim_sig extra[16];
    mw_dkim_sig merged[32];
    size_t nextra = 0;
    char up_spf[256] = "";
    for (size_t t = 0; t < s->ntrusted_ar; t++) {
        const mw_authres_parsed *p = s->trusted_ar[t];
        for (size_t i = 0; i < p->nri; i++) {
            const mw_ar_resinfo *ri = &p->ri[i];
            if (strcmp(ri->result, "pass") != 0)
                continue;
            if (strcmp(ri->method, "dkim") == 0 && mw_ar_prop(ri, "header.d") && nextra < 16) {
                memset(&extra[nextra], 0, sizeof extra[nextra]);
                extra[nextra].result = MW_DKIM_PASS;
                extra[nextra].domain = (char *)mw_ar_prop(ri, "header.d");
                extra[nextra].selector = (char *)mw_ar_prop(ri, "header.s");
                nextra++;
                mw_sess_trace(s, "dmarc: using dkim=pass header.d=%s from trusted %s", mw_ar_prop(ri, "header.d"),
                              p->id);
            } else if (strcmp(ri->method, "spf") == 0 && !up_spf[0] && mw_ar_prop(ri, "smtp.mailfrom")) {
                const char *mf = mw_ar_prop(ri, "smtp.mailfrom");
                snprintf(up_spf, sizeof up_spf, "%s", mw_addr_domain(mf));
                mw_str_lower(up_spf);
                mw_sess_trace(s, "dmarc: using spf=pass smtp.mailfrom=%s from trusted %s", mf, p->id);
            }
        }
    }
    if (up_spf[0] && !(in.spf_done && in.spf_result == MW_SPF_PASS)) {
        in.spf_done = true;
        in.spf_result = MW_SPF_PASS;
        in.spf_domain = up_spf;
    }
    if (nextra) {
        size_t n = 0;
        for (size_t i = 0; i < in.ndkim && n < 16; i++)
            merged[n++] = in.dkim[i];
        for (size_t i = 0; i < nextra; i++)
            merged[n++] = extra[i];
        in.dkim = merged;
        in.ndkim = n;
    }
    in.pct_sample = (uint32_t)random();
    mw_dmarc_evaluate(rt->dmarc, &in, &r->dmarc);
    r->dmarc_done = true;
    mw_dmarc_outcome *o = &r->dmarc;
    mw_sess_trace(s, "dmarc: %s for %s (policy %s=%s from %s, disposition %s%s; spf %s, dkim %s): %s",
          mw_dmarc_result_name(o->result), in.from_domain, o->policy_source ? o->policy_source : "-",
          mw_dmarc_policy_name(o->policy), o->policy_domain ? o->policy_domain : "-",
          mw_dmarc_policy_name(o->disposition), o->testing ? ", t=y" : "", o->spf_aligned ? "aligned" : "unaligned",
          o->dkim_aligned ? "aligned" : "unaligned", o->reason ? o->reason : "");
    if (o->result == MW_DMARC_FAIL || o->result == MW_DMARC_PASS)
        dmarc_overrides(s);
}

static int disp_rank(const char *d)
{
    return strcmp(d, "reject") == 0 ? 2 : strcmp(d, "quarantine") == 0 ? 1 : 0;
}

const char *mw_sess_dmarc_applied(const mw_session *s, const mw_verdict *v)
{
    return v->action == MW_ACTION_REJECT ? "reject"
           : (v->action == MW_ACTION_QUARANTINE || s->quarantined_by_header) ? "quarantine"
                                                                             : "none";
}

bool mw_sess_dmarc_lowered(const mw_session *s, const mw_verdict *v)
{
    const mw_dmarc_outcome *o = &s->res.dmarc;
    if (!s->res.dmarc_done || o->result != MW_DMARC_FAIL || o->disposition == MW_DMARC_P_UNSPEC)
        return false;
    return disp_rank(mw_sess_dmarc_applied(s, v)) < disp_rank(mw_dmarc_policy_name(o->disposition));
}

static char *dup_or_empty(const char *v)
{
    return mw_strdup(v ? v : "");
}

/* One history record per message evaluated against a published policy. */
bool mw_sess_write_history(mw_session *s, const mw_verdict *v)
{
    mw_runtime *rt = s->rt;
    mw_results *r = &s->res;
    if (!rt->history || !r->dmarc_done || r->dmarc.result == MW_DMARC_NONE || !r->dmarc.policy_domain)
        return true;
    /* A message we defer (4xx) is not received yet: the sender retries, and
     * the attempt that ends it (accepted, quarantined or refused) is the one
     * recorded, so the domain owner's report counts it once. */
    if (v->action == MW_ACTION_TEMPFAIL) {
        mw_sess_trace(s, "history: not recorded: deferred (4xx); the final attempt will be");
        return true;
    }
    const mw_dmarc_outcome *o = &r->dmarc;
    mw_history_record h = {0};
    h.time = time(NULL);
    h.source_ip = dup_or_empty(s->client_ip);
    h.header_from = dup_or_empty(o->from_domain);
    h.envelope_from = dup_or_empty(s->mail_from && *s->mail_from ? mw_addr_domain(s->mail_from) : "");
    h.envelope_to = dup_or_empty(s->first_rcpt_domain);
    h.spf_domain = dup_or_empty(r->spf.domain);
    h.spf_scope = mw_strdup(r->spf.scope == MW_SPF_SCOPE_HELO ? "helo" : "mfrom");
    h.spf_result = mw_strdup(r->spf.evaluated ? mw_spf_result_name(r->spf.result) : "none");
    if (r->dkim_verified && r->dkim.nsig) {
        h.dkim = mw_calloc(r->dkim.nsig, sizeof *h.dkim);
        for (size_t i = 0; i < r->dkim.nsig; i++) {
            h.dkim[i].domain = dup_or_empty(r->dkim.sig[i].domain);
            h.dkim[i].selector = dup_or_empty(r->dkim.sig[i].selector);
            h.dkim[i].result = mw_strdup(mw_dkim_result_name(r->dkim.sig[i].result));
        }
        h.ndkim = r->dkim.nsig;
    }
    h.policy_domain = dup_or_empty(o->policy_domain);
    h.p = mw_strdup(mw_dmarc_policy_name(o->record.p));
    h.sp = mw_strdup(o->record.sp ? mw_dmarc_policy_name(o->record.sp) : "");
    h.np = mw_strdup(o->record.np ? mw_dmarc_policy_name(o->record.np) : "");
    char a[2] = {o->record.adkim ? o->record.adkim : 'r', 0}, b[2] = {o->record.aspf ? o->record.aspf : 'r', 0};
    h.adkim = mw_strdup(a);
    h.aspf = mw_strdup(b);
    h.t = mw_strdup(o->record.t ? "y" : "n");
    char ps[2] = {o->record.psd ? o->record.psd : 'u', 0};
    h.psd = mw_strdup(ps);
    h.discovery = dup_or_empty(o->discovery);
    /* the disposition applied by us, not only what was asked */
    h.disposition = mw_strdup(mw_sess_dmarc_applied(s, v));
    h.dkim_aligned = mw_strdup(o->dkim_aligned ? "pass" : "fail");
    h.spf_aligned = mw_strdup(o->spf_aligned ? "pass" : "fail");
    h.override = r->dmarc_override_text[0] ? mw_strdup(r->dmarc_override_text) : NULL;

    size_t nrua = 0;
    while (o->record.rua && o->record.rua[nrua])
        nrua++;
    h.rua = mw_calloc(nrua + 1, sizeof *h.rua);
    for (size_t i = 0; i < nrua; i++)
        h.rua[i] = mw_strdup(o->record.rua[i]);
    h.reporter_host = dup_or_empty(rt->cfg->hostname);
    bool ok = mw_history_append(rt->history, &h);
    mw_history_record_clear(&h);
    r->history_written = ok;
    mw_sess_trace(s, ok ? "history: record written" : "history: record could NOT be written");
    return ok;
}

