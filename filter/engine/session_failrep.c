/*
 * session_failrep.c - RFC 9991 failure reports for the current message:
 * keep the header as received (report.failure on, inbound mail), and after
 * the verdict decide (DMARC fail, ruf, fo), rate-limit per destination,
 * build the report and queue it in report.failure_dir.
 *
 * Why queue and not send here: a milter thread must never wait on an SMTP
 * relay or on the DNS of an external destination check; the spool file is
 * the crash-safe hand-off, and `mailwarden report --failure` (a timer, like
 * the aggregate reports) verifies, sends and journals with the same code
 * as the aggregate reports (docs/reports.md).
 *
 * Diagnostics: every decision is traced ("failure report: ..."); refusals
 * of a ruf, rate limits and spool errors are counted in
 * mailwarden_failure_reports_total{result} and logged, rate limits once
 * per address and hour, refusals through a log limiter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "log_limit.h"
#include "metrics.h"
#include "report.h"
#include "report_failure.h"
#include "session_priv.h"
#include "strutil.h"

/* a hostile record can name a bad ruf in every message: log a few a minute */
static mw_log_limit refused_log = MW_LOG_LIMIT_INIT(5, 60);

void mw_sess_failrep_header(mw_session *s, const char *name, const char *value, size_t vlen)
{
    if (s->rt->cfg->report_failure == MW_FAILREP_OFF || mw_trust_outbound(s->res.trust) ||
        s->failrep_trunc)
        return;
    size_t nlen = strlen(name);
    /* + ': ', the CRLF, and a blank per line break at most */
    if (s->failrep_hdrs.len + nlen + 2 * vlen + 4 > MW_FAILREP_HEADER_MAX) {
        s->failrep_trunc = true;
        return;
    }
    mw_failrep_header_append(&s->failrep_hdrs, name, value, vlen);
}

static const char *delivery_result(const mw_session *s, const mw_verdict *v)
{
    switch (v->action) {
    case MW_ACTION_REJECT:     return "reject";
    case MW_ACTION_QUARANTINE: return "policy";
    case MW_ACTION_DISCARD:    return "policy";
    default:                   return s->quarantined_by_header ? "spam" : "delivered";
    }
}

static const char *our_authres(const mw_verdict *v)
{
    for (size_t i = 0; i < v->nadd; i++)
        if (strcasecmp(v->add[i].name, "Authentication-Results") == 0)
            return v->add[i].value;
    return NULL;
}

/* The usable, rate-allowed destinations of the record's ruf into dest. */
static size_t destinations(mw_session *s, char **dest)
{
    const mw_config *cfg = s->rt->cfg;
    const mw_dmarc_outcome *o = &s->res.dmarc;
    mw_failrep_limiter *lim = mw_engine_failrep_limiter(s->engine);
    time_t now = time(NULL);
    size_t n = 0;
    mw_buf esc = MW_BUF_INIT;

    for (size_t i = 0; o->record.ruf[i] != NULL; i++) {
        char *addr = NULL, why[200];
        unsigned long long size = 0;
        /* "!size" is obsolete (RFC 9990/9991): ignored, never a refusal */
        if (!mw_report_rua_parse_fmt(o->record.ruf[i], MW_REPORT_FMT_RFC9990, &addr, &size, why,
                                     sizeof why) || n >= MW_FAILREP_MAX_DESTS) {
            mw_metric_inc(MW_M_FAILURE_REPORTS, MW_ML_FAILREP_REFUSED, 0);
            mw_buf_reset(&esc);
            mw_str_printable(&esc, o->record.ruf[i], strlen(o->record.ruf[i]), 120);
            const char *reason = addr == NULL ? why : "more ruf addresses than a report takes";
            mw_sess_trace(s, "failure report: ruf %s of %s refused: %s", mw_buf_cstr(&esc),
                          o->policy_domain, reason);
            unsigned long dropped = 0;
            if (mw_log_limit_take(&refused_log, &dropped))
                mw_warn("failure report: ruf %s of %s refused: %s%s", mw_buf_cstr(&esc),
                        o->policy_domain, reason, dropped ? " (more like this not logged)" : "");
            free(addr);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcasecmp(dest[j], addr) == 0;
        if (dup) {
            free(addr);
            continue;
        }
        bool log_it = false;
        mw_failrep_take t = mw_failrep_limiter_take(lim, addr, cfg->report_failure_rate, now,
                                                    &log_it);
        if (t != MW_FRL_OK) {
            mw_metric_inc(MW_M_FAILURE_REPORTS, MW_ML_FAILREP_RATE_LIMITED, 0);
            mw_sess_trace(s, "failure report: to %s not queued: %s", addr,
                          t == MW_FRL_FULL ? "too many destinations this hour"
                                           : "report.failure_rate reached this hour");
            if (log_it && t == MW_FRL_FULL)
                mw_warn("failure reports: %d destinations this hour already; reports to further "
                        "ones are counted (mailwarden_failure_reports_total{result=\"rate_limited\"}), "
                        "not queued, until the hour ends", MW_FAILREP_LIMIT_DESTS);
            else if (log_it)
                mw_warn("failure reports to %s: report.failure_rate (%u per hour) reached; further "
                        "ones this hour are counted, not queued", addr, cfg->report_failure_rate);
            free(addr);
            continue;
        }
        dest[n++] = addr;
    }
    mw_buf_free(&esc);
    return n;
}

void mw_sess_failure_report(mw_session *s, const mw_verdict *v)
{
    const mw_config *cfg = s->rt->cfg;
    const mw_results *r = &s->res;
    const mw_dmarc_outcome *o = &r->dmarc;
    char why[200];

    if (cfg->report_failure == MW_FAILREP_OFF || !r->dmarc_done ||
        o->result != MW_DMARC_FAIL || o->policy_domain == NULL)
        return;
    if (v->action == MW_ACTION_TEMPFAIL) {
        mw_sess_trace(s, "failure report: not now: deferred (4xx); the final attempt decides");
        return;
    }
    if (o->record.ruf == NULL || o->record.ruf[0] == NULL) {
        mw_sess_trace(s, "failure report: none: %s publishes no ruf", o->policy_domain);
        return;
    }
    mw_failrep_facts f = {.dmarc_fail = true, .spf_aligned = o->spf_aligned,
                          .dkim_aligned = o->dkim_aligned,
                          .spf_failed = r->spf.evaluated && r->spf.result == MW_SPF_FAIL};
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig; i++)
        f.dkim_failed |= r->dkim.sig[i].result == MW_DKIM_FAIL;
    if (!mw_failrep_wanted(o->record.fo, &f, why, sizeof why)) {
        mw_sess_trace(s, "failure report: none: %s", why);
        return;
    }

    mw_failrep_spooled sp = {0};
    sp.ndest = destinations(s, sp.dest);
    if (sp.ndest == 0)
        return;

    mw_failrep_dkim dk[8];
    size_t ndk = 0;
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig && ndk < 8; i++) {
        dk[ndk].domain = r->dkim.sig[i].domain;
        dk[ndk].selector = r->dkim.sig[i].selector;
        ndk++;
    }
    mw_failrep_info in = {
        .mode = cfg->report_failure, .user_agent = "mailwarden/" MW_VERSION,
        .reporting_host = cfg->hostname, .arrival = time(NULL), .source_ip = s->client_ip,
        .envelope_id = s->queue_id, .mail_from = s->mail_from,
        .rcpt_to = s->nrcpts > 0 ? s->rcpts[0] : NULL, .reported_domain = o->from_domain,
        .policy_domain = o->policy_domain, .authres = our_authres(v),
        .spf_aligned = o->spf_aligned, .dkim_aligned = o->dkim_aligned,
        .delivery_result = delivery_result(s, v), .dkim = dk, .ndkim = ndk,
        .headers = s->failrep_hdrs.data, .headers_len = s->failrep_hdrs.len,
        .headers_truncated = s->failrep_trunc};
    mw_buf msg = MW_BUF_INIT, file = MW_BUF_INIT, name = MW_BUF_INIT;
    char err[512];
    mw_failrep_build(&in, &msg, sp.id);
    snprintf(sp.domain, sizeof sp.domain, "%s", o->policy_domain);
    sp.time = in.arrival;
    sp.msg = msg.data;
    sp.msg_len = msg.len;
    mw_failrep_spool_format(&sp, &file);
    mw_buf_printf(&name, "%lld.%s", (long long)sp.time, sp.id);
    if (mw_failrep_spool_write(cfg->report_failure_dir, mw_buf_cstr(&name), &file, err,
                               sizeof err)) {
        mw_metric_add(MW_M_FAILURE_REPORTS, MW_ML_FAILREP_QUEUED, 0, sp.ndest);
        mw_sess_trace(s, "failure report: %s queued for %zu address%s (%s, %s)", sp.id, sp.ndest,
                      sp.ndest == 1 ? "" : "es", why,
                      cfg->report_failure == MW_FAILREP_FULL ? "full" : "redacted");
    } else {
        mw_metric_add(MW_M_FAILURE_REPORTS, MW_ML_FAILREP_ERROR, 0, sp.ndest);
        mw_sess_trace(s, "failure report: could NOT be queued: %s", err);
        mw_warn("failure report for %s could not be queued: %s", o->policy_domain, err);
    }
    mw_buf_free(&msg);
    mw_buf_free(&file);
    mw_buf_free(&name);
    sp.msg = NULL;
    mw_failrep_spooled_clear(&sp);
}
