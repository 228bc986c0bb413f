/*
 * report_dest.c - external destination verification of a rua address
 * (RFC 9990 "Verifying External Destinations", RFC 7489 section 7.1),
 * including the destination's own rua that replaces the address.
 *
 * Purpose
 *   A rua whose host is outside the organizational domain of the policy
 *   domain is used only when <policy-domain>._report._dmarc.<host> holds a
 *   TXT record that starts with v=DMARC1.  When such a record carries its
 *   own rua tag, those URIs replace the published address ("the Report
 *   Consumer overrides the report destination").
 *
 * Design and threat notes
 *   - The overriding URIs must use the same destination host; if any
 *     mailto: URI of the override names another host, neither the
 *     original nor any override address gets a report (the RFC's "MUST
 *     NOT generate a report to either"): a third party cannot redirect
 *     reports to a victim through its verification record.
 *   - The override URIs go through the same parser as the published rua
 *     (mw_report_rua_parse_fmt): only safe dot-atom addresses, "!size"
 *     kept only in the RFC 7489 format.  Non-mailto or malformed override
 *     URIs are skipped; an override with no usable address refuses.
 *   - Several authorising records: the union of their rua URIs (all held
 *     to the same host), at most MAX_OVERRIDE addresses.
 *   - A constructed name longer than a DNS name can be is refused (the
 *     RFC's step 4) without a query.
 *
 * See also: report.h, filter/tools/report.c, docs/reports.md.
 */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"

#define MAX_OVERRIDE 16
#define DNS_NAME_MAX 253

void mw_report_dest_clear(mw_report_dest *d)
{
    for (size_t i = 0; i < d->noverride; i++)
        free(d->override[i].addr);
    free(d->override);
    d->override = NULL;
    d->noverride = 0;
}

static const char *host_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at != NULL ? at + 1 : addr;
}

void mw_report_dest_from_txt(const char *name, const char *const *txt, const size_t *len,
                             size_t n, const char *host, mw_report_format f, mw_report_dest *out)
{
    size_t nrec = 0, skipped = 0;
    bool had_rua = false;

    mw_report_dest_clear(out);
    out->result = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mw_dmarc_record_is_dmarc(txt[i], len[i]))
            continue;
        nrec++;
        mw_dmarc_record rec;
        char why[200];
        /* a verification record needs no p: parse it for its rua only */
        (void)mw_dmarc_record_parse(txt[i], len[i], MW_DMARC_MODE_RFC9989, &rec, why, sizeof why);
        for (size_t k = 0; rec.rua != NULL && rec.rua[k] != NULL; k++) {
            char *addr = NULL, pwhy[200];
            unsigned long long lim = 0;
            had_rua = true;
            if (!mw_report_rua_parse_fmt(rec.rua[k], f, &addr, &lim, pwhy, sizeof pwhy)) {
                skipped++;
                continue;
            }
            if (strcasecmp(host_of(addr), host) != 0) {
                snprintf(out->why, sizeof out->why,
                         "%s: its rua names another host (%s): no report to either address",
                         name, host_of(addr));
                free(addr);
                mw_dmarc_record_clear(&rec);
                mw_report_dest_clear(out);
                out->result = 0;
                return;
            }
            bool dup = false;
            for (size_t j = 0; j < out->noverride && !dup; j++)
                dup = strcasecmp(out->override[j].addr, addr) == 0;
            if (dup || out->noverride >= MAX_OVERRIDE) {
                free(addr);
                continue;
            }
            out->override = mw_reallocarray(out->override, out->noverride + 1,
                                            sizeof *out->override);
            out->override[out->noverride].addr = addr;
            out->override[out->noverride].limit = lim;
            out->noverride++;
        }
        mw_dmarc_record_clear(&rec);
    }
    if (nrec == 0) {
        snprintf(out->why, sizeof out->why, "%s: no v=DMARC1 record", name);
        return;
    }
    if (had_rua && out->noverride == 0) {
        snprintf(out->why, sizeof out->why,
                 "%s: v=DMARC1 published, but its rua holds no usable mailto: address", name);
        return;
    }
    out->result = 1;
    if (out->noverride == 0) {
        snprintf(out->why, sizeof out->why, "%s: v=DMARC1 published", name);
        return;
    }
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%s: v=DMARC1 published, its rua replaces the address:", name);
    for (size_t j = 0; j < out->noverride; j++)
        mw_buf_printf(&b, "%s %s", j ? "," : "", out->override[j].addr);
    if (skipped > 0)
        mw_buf_printf(&b, " (%zu unusable URI%s skipped)", skipped, skipped == 1 ? "" : "s");
    snprintf(out->why, sizeof out->why, "%s", mw_buf_cstr(&b));
    mw_buf_free(&b);
}

void mw_report_dest_verify(mw_dns *dns, mw_dmarc *dmarc, const char *policy_domain,
                           const char *host, mw_report_format f, mw_report_dest *out)
{
    char *po = NULL, *ro = NULL;

    mw_report_dest_clear(out);
    out->result = -1;
    out->why[0] = '\0';
    if (strcasecmp(policy_domain, host) == 0) {
        out->result = 1;
        snprintf(out->why, sizeof out->why, "same domain");
        return;
    }
    po = mw_dmarc_org_domain(dmarc, policy_domain);
    ro = mw_dmarc_org_domain(dmarc, host);
    if (po == NULL || ro == NULL) {
        snprintf(out->why, sizeof out->why, "organizational domain lookup failed (DNS)");
        goto out;
    }
    if (strcasecmp(po, ro) == 0) {
        out->result = 1;
        snprintf(out->why, sizeof out->why, "same organizational domain %s", po);
        goto out;
    }
    mw_buf q = MW_BUF_INIT;
    mw_buf_printf(&q, "%s._report._dmarc.%s", policy_domain, host);
    if (q.len > DNS_NAME_MAX) {
        out->result = 0;
        snprintf(out->why, sizeof out->why, "%s._report._dmarc.%s is longer than a DNS name",
                 policy_domain, host);
        mw_buf_free(&q);
        goto out;
    }
    mw_dns_answer *a = NULL;
    mw_dns_status st = mw_dns_query(dns, mw_buf_cstr(&q), MW_DNS_T_TXT, 0, &a);
    if (st == MW_DNS_TEMPFAIL) {
        snprintf(out->why, sizeof out->why, "%s: %s", mw_buf_cstr(&q), mw_dns_status_name(st));
    } else if (st != MW_DNS_OK) {
        out->result = 0;
        snprintf(out->why, sizeof out->why, "%s: %s", mw_buf_cstr(&q), mw_dns_status_name(st));
    } else {
        size_t n = 0;
        mw_buf *t = mw_calloc(a->nrr + 1, sizeof *t);
        const char **txt = mw_calloc(a->nrr + 1, sizeof *txt);
        size_t *len = mw_calloc(a->nrr + 1, sizeof *len);
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_TXT && mw_dns_rr_txt(&a->rr[i], &t[n])) {
                txt[n] = t[n].data != NULL ? t[n].data : "";
                len[n] = t[n].len;
                n++;
            }
        mw_report_dest_from_txt(mw_buf_cstr(&q), txt, len, n, host, f, out);
        for (size_t i = 0; i < a->nrr + 1; i++)   /* a failed conversion may hold bytes too */
            mw_buf_free(&t[i]);
        free(t);
        free(txt);
        free(len);
    }
    mw_dns_answer_free(&a);
    mw_buf_free(&q);
out:
    free(po);
    free(ro);
}
