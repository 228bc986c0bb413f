/*
 * session_arc.c - ARC (RFC 8617) for the current message: verify the chain
 * of inbound mail as it streams, say so in Authentication-Results, decide
 * whether a trusted sealer's chain overrides a DMARC failure, and seal the
 * inbound mail we relay (arc.seal).  The chain itself is checked by
 * checks/arc.c; this file only feeds it and reads its status.
 *
 * Trusted sealers (dmarc.trusted_arc_sealers): a DMARC failure is
 * overridden when the chain passes, the newest seal's d= is a trusted
 * sealer, and that set's ARC-Authentication-Results show, for the From
 * domain, dmarc=pass or an aligned dkim=pass / spf=pass (alignment by the
 * From domain's record: strict = the same name, relaxed = the same
 * Organizational Domain).  A chain we could not verify, a sealer we do not
 * trust, or an AAR without an aligned pass never overrides anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "session_priv.h"
#include "strutil.h"

void mw_sess_arc_begin(mw_session *s)
{
    mw_runtime *rt = s->rt;
    if (mw_trust_outbound(s->res.trust) || rt->arc_verifier == NULL)
        return;
    bool seal = rt->arc_seal_key != SIZE_MAX;
    if (s->held_overflow) {
        s->res.arc_done = true;
        s->res.arc.result = MW_ARC_FAIL;
        s->res.arc.reason = mw_strdup("not verified: too many or too large headers");
        mw_sess_trace(s, "arc: not verified%s: too many or too large headers", seal ? " or sealed" : "");
        return;
    }
    s->arc = mw_arc_msg_begin(rt->arc_verifier, seal ? rt->dkim_signer : NULL, seal ? rt->arc_seal_key : 0,
                              mw_session_id(s));
    for (size_t i = 0; s->arc && i < s->nheld; i++)
        mw_arc_msg_header(s->arc, s->held[i].name, s->held[i].value, s->held[i].vlen);
    if (s->arc)
        mw_arc_msg_eoh(s->arc);
}

void mw_sess_arc_body(mw_session *s, const unsigned char *chunk, size_t len)
{
    if (s->arc)
        mw_arc_msg_body(s->arc, chunk, len);
}

void mw_sess_arc_finish(mw_session *s)
{
    if (s->arc == NULL)
        return;
    mw_arc_msg_end(s->arc, &s->res.arc);
    s->res.arc_done = true;
    mw_buf b = MW_BUF_INIT;
    mw_sess_trace(s, "arc: %s%s (%s)%s%s", mw_arc_result_name(s->res.arc.result),
                  s->res.arc.temporary ? " (temporary)" : "", mw_sess_safe(&b, s->res.arc.reason),
                  s->res.arc.sealer ? "; newest seal by " : "", s->res.arc.sealer ? s->res.arc.sealer : "");
    mw_buf_free(&b);
}

void mw_sess_arc_clear(mw_session *s)
{
    mw_arc_msg_free(&s->arc);
    mw_arc_status_clear(&s->res.arc);
    s->res.arc_done = false;
}

void mw_sess_arc_authres(mw_session *s, mw_authres *ar)
{
    const mw_results *r = &s->res;
    if (!r->arc_done || !s->rt->cfg->arc_verify)
        return;
    char oldest[16];
    snprintf(oldest, sizeof oldest, "%u", r->arc.oldest_pass);
    const char *props[] = {"smtp.remote-ip", s->client_ip,
                           r->arc.result == MW_ARC_PASS && r->arc.oldest_pass ? "header.oldest-pass" : NULL,
                           oldest, NULL};
    if (s->client_ip == NULL) {
        props[0] = props[2];
        props[1] = props[3];
        props[2] = NULL;
    }
    mw_buf c = MW_BUF_INIT;
    if (r->arc.result == MW_ARC_PASS && r->arc.sealer)
        mw_buf_printf(&c, "i=%u sealed by %s", r->arc.instances, r->arc.sealer);
    else if (r->arc.result == MW_ARC_FAIL && r->arc.reason)
        mw_str_printable(&c, r->arc.reason, strlen(r->arc.reason), 160);
    mw_authres_add(ar, "arc", mw_arc_result_name(r->arc.result), c.len ? mw_buf_cstr(&c) : NULL, props);
    mw_buf_free(&c);
}

/* Is identifier domain d aligned with the From domain by mode ('s' or 'r')? */
static bool aligned(mw_session *s, const char *d, char mode)
{
    const mw_dmarc_outcome *o = &s->res.dmarc;
    if (d == NULL || o->from_domain == NULL)
        return false;
    if (strcasecmp(d, o->from_domain) == 0)
        return true;
    if (mode == 's' || o->org_domain == NULL || s->rt->dmarc == NULL)
        return false;
    char *org = mw_dmarc_org_domain(s->rt->dmarc, d);
    bool yes = org != NULL && strcasecmp(org, o->org_domain) == 0;
    free(org);
    return yes;
}

bool mw_sess_arc_trusted(mw_session *s, char *what, size_t wlen)
{
    const mw_config *cfg = s->rt->cfg;
    const mw_results *r = &s->res;
    if (!r->arc_done || cfg->ndmarc_trusted_arc_sealers == 0)
        return false;
    if (r->arc.result != MW_ARC_PASS || r->arc.sealer == NULL) {
        if (r->arc.result == MW_ARC_FAIL)
            mw_sess_trace(s, "dmarc: ARC chain failed: no trusted-sealer override");
        return false;
    }
    bool trusted = false;
    for (size_t i = 0; i < cfg->ndmarc_trusted_arc_sealers && !trusted; i++)
        trusted = mw_glob_match(cfg->dmarc_trusted_arc_sealers[i], r->arc.sealer);
    if (!trusted) {
        mw_sess_trace(s, "dmarc: ARC sealer %s is not in dmarc.trusted_arc_sealers", r->arc.sealer);
        return false;
    }
    const mw_authres_parsed *p = r->arc.aar_parsed;
    if (p == NULL) {
        mw_sess_trace(s, "dmarc: trusted ARC sealer %s: its ARC-Authentication-Results do not parse", r->arc.sealer);
        return false;
    }
    char adkim = r->dmarc.record.adkim ? r->dmarc.record.adkim : 'r';
    char aspf = r->dmarc.record.aspf ? r->dmarc.record.aspf : 'r';
    for (size_t i = 0; i < p->nri; i++) {
        const mw_ar_resinfo *ri = &p->ri[i];
        if (strcmp(ri->result, "pass") != 0)
            continue;
        const char *why = NULL, *id = NULL;
        if (strcmp(ri->method, "dmarc") == 0) {
            id = mw_ar_prop(ri, "header.from");
            if (id && r->dmarc.from_domain && strcasecmp(id, r->dmarc.from_domain) == 0)
                why = "dmarc=pass";
        } else if (strcmp(ri->method, "dkim") == 0) {
            id = mw_ar_prop(ri, "header.d");
            if (aligned(s, id, adkim))
                why = "aligned dkim=pass";
        } else if (strcmp(ri->method, "spf") == 0) {
            id = mw_ar_prop(ri, "smtp.mailfrom");
            if (id && strchr(id, '@'))
                id = mw_addr_domain(id);
            if (aligned(s, id, aspf))
                why = "aligned spf=pass";
        }
        if (why != NULL) {
            snprintf(what, wlen, "arc %s", r->arc.sealer);
            mw_buf b = MW_BUF_INIT;
            mw_sess_trace(s, "dmarc: trusted ARC sealer %s (i=%u) saw %s for %s (%s): DMARC failure overridden",
                          r->arc.sealer, r->arc.instances, why, r->dmarc.from_domain, mw_sess_safe(&b, id));
            mw_buf_free(&b);
            return true;
        }
    }
    mw_sess_trace(s, "dmarc: trusted ARC sealer %s shows no aligned pass for %s: no override", r->arc.sealer,
                  r->dmarc.from_domain ? r->dmarc.from_domain : "?");
    return false;
}

bool mw_sess_arc_seal(mw_session *s, const mw_verdict *v, const char *authres, mw_arc_set *set)
{
    if (s->arc == NULL || s->rt->arc_seal_key == SIZE_MAX)
        return false;
    if (v->action == MW_ACTION_REJECT || v->action == MW_ACTION_TEMPFAIL)
        return false;   /* not relayed */
    char why[200] = "";
    if (!mw_arc_msg_seal(s->arc, &s->res.arc, authres, 0, set, why, sizeof why)) {
        mw_sess_trace(s, "arc: not sealed: %s", why);
        if (strstr(why, "terminated") == NULL && strstr(why, "50") == NULL)
            mw_warn("%s: ARC seal not added: %s", mw_session_id(s), why);
        return false;
    }
    mw_sess_trace(s, "arc: sealed as instance %u (cv=%s)", set->instance,
                  s->res.arc.result == MW_ARC_NONE ? "none" : mw_arc_result_name(s->res.arc.result));
    return true;
}
