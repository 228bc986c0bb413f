/*
 * report_split.c - a report too large for one mail, split by source range
 * into several complete reports with distinct report ids.
 *
 * Purpose
 *   RFC 9990 drops the "!size" limits of RFC 7489; a receiver still has a
 *   mail size limit (report.max_size).  A report whose gzip XML does not
 *   fit is never dropped: its rows (sorted by source IP) are cut into
 *   contiguous source ranges, each written as a report of its own (same
 *   metadata, policy and period, its own report id and file name), so each
 *   part is valid against the schema on its own.
 *
 * Design notes
 *   - A report that fits is one part with the usual id (mw_report_id), so
 *     journals of earlier runs stay valid.
 *   - Otherwise the range is halved recursively, at the source-IP boundary
 *     nearest the middle row: the rows of one source IP stay in one part
 *     unless that IP alone is too big, when its rows are halved too.  A
 *     single row that is still too big is returned as it is (the caller's
 *     size check refuses it, counted).  The work is O(rows log parts)
 *     renderings of at most the whole report.
 *   - A part's id is a SHA-256 prefix over the receiver, policy domain,
 *     period and the part's first row index, row count and first and last
 *     source IP: the same history and limit give the same parts and ids on
 *     every run, which is what lets the state journal skip the parts a
 *     crashed or earlier run sent (it records each part under its id).
 *
 * See also: report.h, report_xml.c, filter/tools/report.c, docs/reports.md.
 */
#include "report.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

typedef struct splitter {
    const mw_report      *r;
    const mw_report_meta *m;
    size_t                max_gz;
    mw_report_parts      *out;
    char                 *err;
    size_t                errlen;
} splitter;

char *mw_report_part_id(const mw_report *r, const mw_report_meta *m, size_t first, size_t n)
{
    mw_buf in = MW_BUF_INIT, out = MW_BUF_INIT;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    mw_buf_printf(&in, "mailwarden-report-part-v1\n%s\n%s\n%lld\n%lld\n%zu\n%zu\n%s\n%s",
                  m->receiver, r->policy_domain, (long long)r->begin, (long long)r->end, first, n,
                  n > 0 ? r->rows[first].source_ip : "", n > 0 ? r->rows[first + n - 1].source_ip : "");
    if (EVP_Digest(in.data, in.len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
        mw_panic("report: SHA-256 failed");
    for (unsigned i = 0; i < 16; i++)
        mw_buf_printf(&out, "%02x", md[i]);
    mw_buf_free(&in);
    return mw_buf_steal(&out);
}

static mw_report view_of(const mw_report *r, size_t first, size_t n)
{
    mw_report v = *r;
    v.rows = r->rows + first;
    v.nrows = n;
    v.messages = 0;
    for (size_t i = 0; i < n; i++)
        v.messages += v.rows[i].count;
    return v;
}

/* Render rows [first, first + n) with id into part (id owned by part). */
static bool render(splitter *S, size_t first, size_t n, char *id, mw_report_part *part)
{
    memset(part, 0, sizeof *part);
    part->view = view_of(S->r, first, n);
    part->id = id;
    if (!mw_report_xml(&part->view, S->m, id, &part->xml, S->err, S->errlen))
        return false;
    if (!mw_report_gzip(part->xml.data, part->xml.len, &part->gz)) {
        snprintf(S->err, S->errlen, "gzip of the report for %s failed", S->r->policy_domain);
        return false;
    }
    return true;
}

static void part_free(mw_report_part *p)
{
    free(p->id);
    mw_buf_free(&p->xml);
    mw_buf_free(&p->gz);
    memset(p, 0, sizeof *p);
}

static void emit(splitter *S, mw_report_part *p)
{
    S->out->p = mw_reallocarray(S->out->p, S->out->n + 1, sizeof *S->out->p);
    S->out->p[S->out->n++] = *p;
    memset(p, 0, sizeof *p);
}

/* Where to cut [first, first + n): the source-IP boundary nearest the
 * middle, else the middle row. */
static size_t cut_point(const mw_report *r, size_t first, size_t n)
{
    size_t mid = first + n / 2, best = 0, bestd = (size_t)-1;

    for (size_t b = first + 1; b < first + n; b++) {
        if (strcmp(r->rows[b - 1].source_ip, r->rows[b].source_ip) == 0)
            continue;
        size_t d = b > mid ? b - mid : mid - b;
        if (d < bestd) {
            bestd = d;
            best = b;
        }
    }
    return best != 0 ? best : mid;
}

static bool split_range(splitter *S, size_t first, size_t n)
{
    mw_report_part p;

    if (!render(S, first, n, mw_report_part_id(S->r, S->m, first, n), &p)) {
        part_free(&p);
        return false;
    }
    if (p.gz.len <= S->max_gz || n <= 1) {
        emit(S, &p);
        return true;
    }
    part_free(&p);
    size_t c = cut_point(S->r, first, n);
    return split_range(S, first, c - first) && split_range(S, c, first + n - c);
}

bool mw_report_split(const mw_report *r, const mw_report_meta *m, size_t max_gz,
                     mw_report_parts *out, char *err, size_t errlen)
{
    splitter S = {r, m, max_gz, out, err, errlen};
    mw_report_part whole;

    memset(out, 0, sizeof *out);
    if (!render(&S, 0, r->nrows, mw_report_id(r, m), &whole)) {
        part_free(&whole);
        return false;
    }
    if (max_gz == 0 || whole.gz.len <= max_gz || r->nrows <= 1) {
        emit(&S, &whole);
        return true;
    }
    part_free(&whole);
    size_t c = cut_point(r, 0, r->nrows);
    if (split_range(&S, 0, c) && split_range(&S, c, r->nrows - c))
        return true;
    mw_report_parts_free(out);
    return false;
}

void mw_report_parts_free(mw_report_parts *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        part_free(&ps->p[i]);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}
