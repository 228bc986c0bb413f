/*
 * rptin_unpack.c - find the DMARC aggregate reports in one input: plain
 * XML, gzip, zip, or a report mail (MIME) with any of those attached.
 *
 * Design: sniff by content, not by name (receivers label gzip as
 * application/octet-stream, zip as application/gzip, and so on): gzip
 * magic 1f 8b, zip "PK\3\4"/"PK\5\6", XML when the first non-blank byte is
 * '<', otherwise a mail when mail is allowed at that point.  Inside a mail,
 * a leaf part is a report candidate when its type or file name says
 * xml/gzip/zip/octet-stream, or its bytes start with gzip or zip magic;
 * text/plain and text/html bodies ("This is a DMARC report") are skipped.
 * A message/rfc822 part is a mail again.  Nesting is bounded
 * (MW_RPTIN_MAX_DEPTH) and all decompressed output of the input shares one
 * budget (MW_RPTIN_MAX_TOTAL), so a bomb in a zip in a mail is still one
 * bomb.  Every failure goes to the error callback with the place it
 * happened; a mail that holds no report at all is an error too.
 */
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#include "rptin.h"

typedef struct uctx {
    mw_rptin_doc_cb doc;
    mw_rptin_err_cb err;
    void           *arg;
    mw_rptin_budget b;
    size_t          errors;
    size_t          docs;
    unsigned        nparts;
    bool            stop;
} uctx;

typedef struct pctx {
    uctx       *u;
    const char *name;
    int         depth;
    unsigned    index;
} pctx;

static void one(uctx *u, const char *name, const unsigned char *d, size_t n, int depth, bool mail_ok);

static void fail(uctx *u, const char *name, const char *why)
{
    u->errors++;
    u->err(name, why, u->arg);
}

static bool is_gzip(const unsigned char *d, size_t n)
{
    return n >= 2 && d[0] == 0x1f && d[1] == 0x8b;
}

static bool is_zip(const unsigned char *d, size_t n)
{
    return n >= 4 && d[0] == 'P' && d[1] == 'K' && ((d[2] == 3 && d[3] == 4) || (d[2] == 5 && d[3] == 6));
}

static bool is_xml(const unsigned char *d, size_t n)
{
    size_t i = 0;
    if (n >= 3 && d[0] == 0xef && d[1] == 0xbb && d[2] == 0xbf)
        i = 3;
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    return i < n && d[i] == '<';
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static bool zip_entry(const char *entry, const unsigned char *data, size_t len, void *arg)
{
    pctx *pc = arg;
    char nm[1024];
    snprintf(nm, sizeof nm, "%s: %s", pc->name, entry);
    one(pc->u, nm, data, len, pc->depth + 1, false);
    return !pc->u->stop;
}

static bool mime_part(const char *ctype, const char *fn, const unsigned char *body, size_t len, void *arg)
{
    pctx *pc = arg;
    uctx *u = pc->u;
    pc->index++;
    char nm[1024];
    snprintf(nm, sizeof nm, "%s: part %u%s%s", pc->name, pc->index, fn[0] ? " " : "", fn);
    if (strcmp(ctype, "message/rfc822") == 0) {
        one(u, nm, body, len, pc->depth + 1, true);
        return !u->stop;
    }
    bool typed = strstr(ctype, "xml") || strstr(ctype, "gzip") || strstr(ctype, "zip") ||
                 strcmp(ctype, "application/octet-stream") == 0 || ends_with(fn, ".xml") ||
                 ends_with(fn, ".gz") || ends_with(fn, ".zip");
    if (is_gzip(body, len) || is_zip(body, len) || (typed && is_xml(body, len))) {
        one(u, nm, body, len, pc->depth + 1, false);
    } else if (typed) {
        fail(u, nm, "attachment is neither XML, gzip nor zip");
    }
    return !u->stop;
}

static void one(uctx *u, const char *name, const unsigned char *d, size_t n, int depth, bool mail_ok)
{
    char why[512];
    if (u->stop)
        return;
    if (depth > MW_RPTIN_MAX_DEPTH) {
        snprintf(why, sizeof why, "nested deeper than %d levels: refused", MW_RPTIN_MAX_DEPTH);
        fail(u, name, why);
        return;
    }
    if (is_gzip(d, n)) {
        unsigned char *out;
        size_t outlen;
        if (!mw_rptin_gunzip(d, n, MW_RPTIN_MAX_XML, &u->b, &out, &outlen, why, sizeof why)) {
            fail(u, name, why);
            return;
        }
        one(u, name, out, outlen, depth + 1, false);
        free(out);
        return;
    }
    if (is_zip(d, n)) {
        pctx pc = {u, name, depth, 0};
        if (!mw_rptin_unzip(d, n, MW_RPTIN_MAX_XML, &u->b, zip_entry, &pc, why, sizeof why))
            fail(u, name, why);
        return;
    }
    if (is_xml(d, n)) {
        u->docs++;
        if (!u->doc(name, (const char *)d, n, u->arg))
            u->stop = true;
        return;
    }
    if (!mail_ok) {
        fail(u, name, "not XML, gzip or zip");
        return;
    }
    size_t before_docs = u->docs, before_err = u->errors;
    pctx pc = {u, name, depth, 0};
    if (!mw_rptin_mime(d, n, depth, &u->nparts, mime_part, &pc, why, sizeof why)) {
        if (!u->stop)
            fail(u, name, why);
        return;
    }
    if (u->docs == before_docs && u->errors == before_err)
        fail(u, name, "no DMARC report (XML, gzip or zip attachment) in this message");
}

size_t mw_rptin_unpack(const char *name, const unsigned char *data, size_t len, mw_rptin_doc_cb doc,
                       mw_rptin_err_cb err, void *arg)
{
    uctx u = {.doc = doc, .err = err, .arg = arg};
    if (len > MW_RPTIN_MAX_INPUT) {
        char why[160];
        snprintf(why, sizeof why, "input of %zu bytes is larger than the limit of %u bytes", len,
                 MW_RPTIN_MAX_INPUT);
        fail(&u, name, why);
        return u.errors;
    }
    one(&u, name, data, len, 0, true);
    return u.errors;
}
