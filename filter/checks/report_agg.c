/*
 * report_agg.c - aggregate history records into DMARC aggregate reports.
 *
 * Purpose
 *   One mw_report per (policy domain, period); inside it one row per
 *   distinct (source IP, disposition, DKIM/SPF alignment, override,
 *   identifiers, authentication results) with a count: never one row per
 *   message (OpenDMARC's old fault).  Several history directories (one per
 *   MTA host) feed the same set, so a fleet's records merge.
 *
 * Design notes
 *   - Two hash tables (open addressing, string keys): reports by
 *     "domain US begin", rows by their grouping key within a report.
 *     Memory is proportional to distinct rows, not to messages.
 *   - The policy as published is the one of the period's latest record (a
 *     domain that changed its record mid-period is reported with the newer
 *     one); the rua list likewise.
 *   - Domains are folded to lower case before grouping; result words are
 *     normalised later, in the XML writer.
 *   - Periods are interval-aligned on the epoch; intervals that divide a
 *     day therefore start at UTC midnight.
 *
 * See also: report.h, history.h, report_xml.c.
 */
#include "report.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "report_priv.h"
#include "strutil.h"

/* ---- the set ------------------------------------------------------------------ */

/* Per-report and per-set lookup tables live beside the public arrays. */
typedef struct agg_index {
    strmap  reports;
    char  **report_keys;   /* owned, parallel to set->r */
    strmap *rows;          /* one per report */
    size_t  cap_reports;
    size_t *cap_rows;
} agg_index;

/* The index of s, built (again, after mw_report_finish) when missing. */
static agg_index *index_of(mw_report_set *s, bool create)
{
    agg_index *ix = s->priv;

    if (ix != NULL || !create)
        return ix;
    s->priv = ix = mw_calloc(1, sizeof *ix);
    if (s->n == 0)
        return ix;
    ix->cap_reports = s->n;
    ix->report_keys = mw_calloc(s->n, sizeof *ix->report_keys);
    ix->rows = mw_calloc(s->n, sizeof *ix->rows);
    ix->cap_rows = mw_calloc(s->n, sizeof *ix->cap_rows);
    for (size_t i = 0; i < s->n; i++) {
        mw_buf k = MW_BUF_INIT;
        mw_buf_printf(&k, "%s\x1f%lld", s->r[i].policy_domain, (long long)s->r[i].begin);
        ix->report_keys[i] = mw_buf_steal(&k);
        strmap_put(&ix->reports, ix->report_keys[i], i);
        ix->cap_rows[i] = s->r[i].nrows;
        for (size_t j = 0; j < s->r[i].nrows; j++)
            strmap_put(&ix->rows[i], s->r[i].rows[j].key, j);
    }
    return ix;
}

static void index_free(mw_report_set *s)
{
    agg_index *ix = s->priv;

    if (ix == NULL)
        return;
    strmap_free(&ix->reports);
    for (size_t i = 0; i < s->n; i++) {
        free(ix->report_keys[i]);
        strmap_free(&ix->rows[i]);
    }
    free(ix->report_keys);
    free(ix->rows);
    free(ix->cap_rows);
    free(ix);
    s->priv = NULL;
}

static char *dup_lower(const char *s)
{
    char *d = mw_strdup(s != NULL ? s : "");
    for (char *p = d; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static char *dup_s(const char *s)
{
    return mw_strdup(s != NULL ? s : "");
}

static void set_policy(mw_report *rep, const mw_history_record *r)
{
    char **f[] = {&rep->p, &rep->sp, &rep->np, &rep->adkim, &rep->aspf, &rep->t, &rep->psd,
                  &rep->discovery};
    char *v[] = {r->p, r->sp, r->np, r->adkim, r->aspf, r->t, r->psd, r->discovery};

    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        free(*f[i]);
        *f[i] = dup_lower(v[i]);
    }
    for (size_t i = 0; i < rep->nrua; i++)
        free(rep->rua[i]);
    free(rep->rua);
    rep->nrua = 0;
    while (r->rua != NULL && r->rua[rep->nrua] != NULL)
        rep->nrua++;
    rep->rua = mw_calloc(rep->nrua + 1, sizeof *rep->rua);
    for (size_t i = 0; i < rep->nrua; i++)
        rep->rua[i] = mw_strdup(r->rua[i]);
    rep->policy_time = r->time;
}

/* The grouping key of a record (every field a row reports). */
static void row_key(const mw_history_record *r, mw_buf *k)
{
    const char *f[] = {r->source_ip, r->disposition, r->dkim_aligned, r->spf_aligned,
                       r->override, r->header_from, r->envelope_from, r->envelope_to,
                       r->spf_domain, r->spf_scope, r->spf_result};

    mw_buf_reset(k);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        for (const char *p = f[i] != NULL ? f[i] : ""; *p != '\0'; p++)
            mw_buf_putc(k, i >= 5 && i <= 8 ? (char)tolower((unsigned char)*p) : *p);
        mw_buf_putc(k, '\x1f');
    }
    for (size_t i = 0; i < r->ndkim; i++) {
        const mw_history_dkim *d = &r->dkim[i];
        for (const char *p = d->domain != NULL ? d->domain : ""; *p != '\0'; p++)
            mw_buf_putc(k, (char)tolower((unsigned char)*p));
        mw_buf_printf(k, "\x1e%s\x1e%s\x1d", d->selector != NULL ? d->selector : "",
                      d->result != NULL ? d->result : "");
    }
}

static void row_fill(mw_report_row *row, const mw_history_record *r, char *key)
{
    row->key = key;
    row->source_ip = dup_s(r->source_ip);
    row->disposition = dup_lower(r->disposition);
    row->dkim_aligned = dup_lower(r->dkim_aligned);
    row->spf_aligned = dup_lower(r->spf_aligned);
    row->override = r->override != NULL && r->override[0] != '\0' ? mw_strdup(r->override) : NULL;
    row->header_from = dup_lower(r->header_from);
    row->envelope_from = dup_lower(r->envelope_from);
    row->envelope_to = dup_lower(r->envelope_to);
    row->spf_domain = dup_lower(r->spf_domain);
    row->spf_scope = dup_lower(r->spf_scope);
    row->spf_result = dup_lower(r->spf_result);
    row->ndkim = r->ndkim;
    row->dkim = r->ndkim ? mw_calloc(r->ndkim, sizeof *row->dkim) : NULL;
    for (size_t i = 0; i < r->ndkim; i++) {
        row->dkim[i].domain = dup_lower(r->dkim[i].domain);
        row->dkim[i].selector = dup_s(r->dkim[i].selector);
        row->dkim[i].result = dup_lower(r->dkim[i].result);
    }
}

/*
 * A history line is only as trustworthy as the host that wrote it: its
 * policy domain becomes a file name, a Subject, a journal field and a DNS
 * query, its source IP an element the schema types as an address.  A
 * record whose policy domain is not a host name or whose source IP is not
 * an address is refused alone and counted; the report of its domain (and
 * every other) is built from the rest.
 */
static bool record_ok(mw_report_set *s, const mw_history_record *r)
{
    const char *what = NULL, *val = NULL;
    unsigned char a[16];

    if (!mw_domain_valid(r->policy_domain)) {
        what = "policy domain";
        val = r->policy_domain;
    } else if (r->source_ip == NULL || (inet_pton(AF_INET, r->source_ip, a) != 1 &&
                                        inet_pton(AF_INET6, r->source_ip, a) != 1)) {
        what = "source IP";
        val = r->source_ip != NULL ? r->source_ip : "";
    }
    if (what == NULL)
        return true;
    if (s->bad_records++ == 0) {
        mw_buf b = MW_BUF_INIT;
        mw_str_printable(&b, val, strlen(val), 80);
        snprintf(s->bad_why, sizeof s->bad_why, "bad %s \"%s\"", what, mw_buf_cstr(&b));
        mw_buf_free(&b);
    }
    return false;
}

bool mw_report_add(mw_report_set *s, const mw_history_record *r, unsigned interval)
{
    agg_index *ix = index_of(s, true);
    mw_buf k = MW_BUF_INIT;
    size_t ri, wi;

    if (r->policy_domain == NULL || r->policy_domain[0] == '\0' || interval == 0)
        return false;
    if (!record_ok(s, r))
        return false;
    time_t begin = r->time - (time_t)((unsigned long long)r->time % interval);
    char *dom = dup_lower(r->policy_domain);
    size_t dl = strlen(dom);
    if (dl > 0 && dom[dl - 1] == '.')
        dom[dl - 1] = '\0';
    mw_buf_printf(&k, "%s\x1f%lld", dom, (long long)begin);
    if (!strmap_get(&ix->reports, mw_buf_cstr(&k), &ri)) {
        if (s->n == ix->cap_reports) {
            ix->cap_reports = ix->cap_reports ? ix->cap_reports * 2 : 16;
            s->r = mw_reallocarray(s->r, ix->cap_reports, sizeof *s->r);
            ix->report_keys = mw_reallocarray(ix->report_keys, ix->cap_reports,
                                              sizeof *ix->report_keys);
            ix->rows = mw_reallocarray(ix->rows, ix->cap_reports, sizeof *ix->rows);
            ix->cap_rows = mw_reallocarray(ix->cap_rows, ix->cap_reports, sizeof *ix->cap_rows);
        }
        ri = s->n++;
        memset(&s->r[ri], 0, sizeof s->r[ri]);
        memset(&ix->rows[ri], 0, sizeof ix->rows[ri]);
        ix->cap_rows[ri] = 0;
        s->r[ri].policy_domain = dom;
        dom = NULL;
        s->r[ri].begin = begin;
        s->r[ri].end = begin + (time_t)interval;
        s->r[ri].policy_time = (time_t)-1;
        ix->report_keys[ri] = mw_buf_steal(&k);
        strmap_put(&ix->reports, ix->report_keys[ri], ri);
    }
    free(dom);
    mw_report *rep = &s->r[ri];
    if (rep->policy_time == (time_t)-1 || r->time >= rep->policy_time)
        set_policy(rep, r);
    row_key(r, &k);
    if (!strmap_get(&ix->rows[ri], mw_buf_cstr(&k), &wi)) {
        if (rep->nrows == ix->cap_rows[ri]) {
            ix->cap_rows[ri] = ix->cap_rows[ri] ? ix->cap_rows[ri] * 2 : 16;
            rep->rows = mw_reallocarray(rep->rows, ix->cap_rows[ri], sizeof *rep->rows);
        }
        wi = rep->nrows++;
        memset(&rep->rows[wi], 0, sizeof rep->rows[wi]);
        row_fill(&rep->rows[wi], r, mw_buf_steal(&k));
        strmap_put(&ix->rows[ri], rep->rows[wi].key, wi);
    }
    rep->rows[wi].count++;
    rep->messages++;
    mw_buf_free(&k);
    return true;
}

static int cmp_row(const void *a, const void *b)
{
    const mw_report_row *x = a, *y = b;
    int c = strcmp(x->source_ip, y->source_ip);
    return c != 0 ? c : strcmp(x->key, y->key);
}

static int cmp_report(const void *a, const void *b)
{
    const mw_report *x = a, *y = b;
    int c = strcmp(x->policy_domain, y->policy_domain);
    if (c != 0)
        return c;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

void mw_report_finish(mw_report_set *s)
{
    /* the index refers to positions: drop it before sorting */
    index_free(s);
    /* qsort(NULL, 0, ...) is undefined: no history, no reports */
    for (size_t i = 0; i < s->n; i++)
        if (s->r[i].nrows > 1)
            qsort(s->r[i].rows, s->r[i].nrows, sizeof *s->r[i].rows, cmp_row);
    if (s->n > 1)
        qsort(s->r, s->n, sizeof *s->r, cmp_report);
}

typedef struct agg_arg {
    mw_report_set *set;
    unsigned       interval;
} agg_arg;

static bool agg_cb(const mw_history_record *r, void *arg)
{
    agg_arg *a = arg;
    mw_report_add(a->set, r, a->interval);
    return true;
}

bool mw_report_aggregate(const char *const *dirs, size_t ndirs, time_t from, time_t to,
                         unsigned interval, mw_report_set *out, char *err, size_t errlen)
{
    agg_arg a = {out, interval};
    bool ok = true;
    char e[512];

    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    for (size_t i = 0; i < ndirs; i++) {
        mw_history_stats st;
        if (!mw_history_read(dirs[i], from, to, agg_cb, &a, &st, e, sizeof e)) {
            if (ok && err != NULL)
                snprintf(err, errlen, "%s", e);
            ok = false;
        }
        out->stats.records += st.records;
        out->stats.torn += st.torn;
        out->stats.bad_checksum += st.bad_checksum;
        out->stats.bad_version += st.bad_version;
        out->stats.files += st.files;
    }
    mw_report_finish(out);
    return ok;
}

static void row_free(mw_report_row *w)
{
    char *f[] = {w->key, w->source_ip, w->disposition, w->dkim_aligned, w->spf_aligned,
                 w->override, w->header_from, w->envelope_from, w->envelope_to, w->spf_domain,
                 w->spf_scope, w->spf_result};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        free(f[i]);
    for (size_t i = 0; i < w->ndkim; i++) {
        free(w->dkim[i].domain);
        free(w->dkim[i].selector);
        free(w->dkim[i].result);
    }
    free(w->dkim);
}

void mw_report_set_free(mw_report_set *s)
{
    if (s == NULL)
        return;
    index_free(s);
    for (size_t i = 0; i < s->n; i++) {
        mw_report *r = &s->r[i];
        char *f[] = {r->policy_domain, r->p, r->sp, r->np, r->adkim, r->aspf, r->t, r->psd,
                     r->discovery};
        for (size_t j = 0; j < sizeof f / sizeof f[0]; j++)
            free(f[j]);
        for (size_t j = 0; j < r->nrua; j++)
            free(r->rua[j]);
        free(r->rua);
        for (size_t j = 0; j < r->nrows; j++)
            row_free(&r->rows[j]);
        free(r->rows);
    }
    free(s->r);
    memset(s, 0, sizeof *s);
}
