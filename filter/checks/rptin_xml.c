/*
 * rptin_xml.c - parse one DMARC aggregate report (RFC 7489 appendix C,
 * RFC 9990) as receivers really send it.
 *
 * Design: libxml2 builds a tree (reports are at most MW_RPTIN_MAX_XML bytes),
 * then one walk picks the fields by local name, case-blind, in any
 * namespace or none: Google, Microsoft, Yahoo and the small senders differ
 * in namespaces, whitespace, "Pass" vs "pass", a <version> or none, and
 * which optional elements they leave out.  Fields required to file a
 * report (report_id, org or email, date_range, domain, each row's source_ip
 * and count) must be there; the rest default to "".
 *
 * Threats: the parser never touches the network (XML_PARSE_NONET), never
 * substitutes entities (no XML_PARSE_NOENT), never loads a DTD (no
 * XML_PARSE_DTDLOAD), and refuses any DOCTYPE at all: the SAX
 * internalSubset hook stops the parser the moment a DOCTYPE is seen, so
 * neither an external entity (XXE, file:///etc/passwd) nor a billion-laughs
 * entity tree is ever declared, let alone expanded.  XML_PARSE_HUGE is not
 * set, so libxml2's own depth and text-node limits stay on.
 *
 * Diagnostics: a one-line reason ("XML error at line 5: ...", "record 3:
 * source_ip \"x\" is not an IP address", "DOCTYPE refused").
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "alloc.h"
#include "rptin.h"

#define NS_9990 "urn:ietf:params:xml:ns:dmarc-2.0"

typedef struct xstate {
    bool doctype;
} xstate;

/* SAX hook: a DOCTYPE was seen; stop before its internal subset is read. */
static void on_subset(void *ctx, const xmlChar *name, const xmlChar *eid, const xmlChar *sid)
{
    xmlParserCtxtPtr c = ctx;
    xstate *st = c->_private;
    st->doctype = true;
    xmlStopParser(c);
}

static bool is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, (const xmlChar *)name) == 0;
}

static xmlNode *child(const xmlNode *n, const char *name)
{
    if (n == NULL)
        return NULL;
    for (xmlNode *c = n->children; c; c = c->next)
        if (is(c, name))
            return c;
    return NULL;
}

/* The trimmed text of n (a copy; "" for NULL), lower-cased when lower. */
static char *text(const xmlNode *n, bool lower)
{
    if (n == NULL)
        return mw_strdup("");
    xmlChar *t = xmlNodeGetContent(n);
    if (t == NULL)
        return mw_strdup("");
    const char *s = (const char *)t;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    char *r = mw_strndup(s, len);
    xmlFree(t);
    if (lower)
        for (char *p = r; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return r;
}

static char *path_text(const xmlNode *n, const char *a, const char *b, bool lower)
{
    n = child(n, a);
    if (b)
        n = child(n, b);
    return text(n, lower);
}

/* Decimal digits only (surrounding space trimmed), at most max. */
static bool number(const char *s, unsigned long long max, unsigned long long *v)
{
    if (*s == '\0' || strlen(s) > 20)
        return false;
    unsigned long long x = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (x > (max - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

/* A time: digits, optionally with a fraction (OpenDMARC-era reporters
 * write "1337270400.0"), which is dropped. */
static bool time_value(char *s, unsigned long long *v)
{
    char *dot = strchr(s, '.');
    if (dot) {
        for (const char *q = dot + 1; *q; q++)
            if (!isdigit((unsigned char)*q))
                return false;
        *dot = '\0';
    }
    return number(s, 1ULL << 40, v);
}

/* a and b are the same domain or one is a label-suffix of the other
 * (relaxed alignment without the PSL: used only when a reporter leaves out
 * policy_evaluated, to say whether a pass was aligned at all). */
static bool relaxed_same(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la == 0 || lb == 0)
        return false;
    if (la < lb) {
        const char *t = a;
        a = b;
        b = t;
        size_t tl = la;
        la = lb;
        lb = tl;
    }
    return strcmp(a + (la - lb), b) == 0 && (la == lb || a[la - lb - 1] == '.');
}

static bool parse_row(const xmlNode *rec, size_t idx, mw_rptin_row *r, char *why, size_t whylen)
{
    const xmlNode *row = child(rec, "row");
    const xmlNode *pe = child(row, "policy_evaluated");
    char *ip = path_text(row, "source_ip", NULL, false);
    unsigned char bin[16];
    char norm[INET6_ADDRSTRLEN];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, ip, bin) != 1 || inet_ntop(fam, bin, norm, sizeof norm) == NULL) {
        snprintf(why, whylen, "record %zu: source_ip \"%.60s\" is not an IP address", idx, ip);
        free(ip);
        return false;
    }
    free(ip);
    char *cnt = path_text(row, "count", NULL, false);
    unsigned long long c;
    if (!number(cnt, 1ULL << 53, &c)) {
        snprintf(why, whylen, "record %zu: count \"%.40s\" is not a number", idx, cnt);
        free(cnt);
        return false;
    }
    free(cnt);
    r->source_ip = mw_strdup(norm);
    r->count = c;
    r->disposition = path_text(pe, "disposition", NULL, true);
    r->dkim_aligned = path_text(pe, "dkim", NULL, true);
    r->spf_aligned = path_text(pe, "spf", NULL, true);
    r->reason = path_text(pe, "reason", "type", true);
    const xmlNode *ids = child(rec, "identifiers");
    r->header_from = path_text(ids, "header_from", NULL, true);
    r->envelope_from = path_text(ids, "envelope_from", NULL, true);

    /* auth_results: the best DKIM result (a pass wins), the SPF result */
    const xmlNode *ar = child(rec, "auth_results");
    r->dkim_result = mw_strdup("");
    r->dkim_domain = mw_strdup("");
    r->spf_result = mw_strdup("");
    r->spf_domain = mw_strdup("");
    bool dkim_aligned_pass = false, spf_aligned_pass = false;
    for (const xmlNode *a = ar ? ar->children : NULL; a; a = a->next) {
        bool dk = is(a, "dkim"), sp = is(a, "spf");
        if (!dk && !sp)
            continue;
        char *res = path_text(a, "result", NULL, true);
        char *dom = path_text(a, "domain", NULL, true);
        bool pass = strcmp(res, "pass") == 0;
        if (pass && relaxed_same(dom, r->header_from))
            *(dk ? &dkim_aligned_pass : &spf_aligned_pass) = true;
        char **rs = dk ? &r->dkim_result : &r->spf_result, **ds = dk ? &r->dkim_domain : &r->spf_domain;
        if ((*rs)[0] == '\0' || (pass && strcmp(*rs, "pass") != 0)) {
            free(*rs);
            free(*ds);
            *rs = res;
            *ds = dom;
        } else {
            free(res);
            free(dom);
        }
    }
    /* a reporter that left out policy_evaluated/dkim or /spf: derive it */
    if (r->dkim_aligned[0] == '\0') {
        free(r->dkim_aligned);
        r->dkim_aligned = mw_strdup(dkim_aligned_pass ? "pass" : "fail");
    }
    if (r->spf_aligned[0] == '\0') {
        free(r->spf_aligned);
        r->spf_aligned = mw_strdup(spf_aligned_pass ? "pass" : "fail");
    }
    return true;
}

static void row_clear(mw_rptin_row *r)
{
    free(r->source_ip);
    free(r->disposition);
    free(r->dkim_aligned);
    free(r->spf_aligned);
    free(r->header_from);
    free(r->envelope_from);
    free(r->dkim_result);
    free(r->dkim_domain);
    free(r->spf_result);
    free(r->spf_domain);
    free(r->reason);
}

void mw_rptin_report_clear(mw_rptin_report *r)
{
    free(r->org_name);
    free(r->email);
    free(r->report_id);
    free(r->domain);
    free(r->p);
    free(r->sp);
    for (size_t i = 0; i < r->nrows; i++)
        row_clear(&r->rows[i]);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static bool walk(const xmlNode *root, mw_rptin_report *out, char *why, size_t whylen)
{
    if (!is(root, "feedback")) {
        snprintf(why, whylen, "root element is <%.40s>, not <feedback>: not a DMARC aggregate report",
                 root ? (const char *)root->name : "");
        return false;
    }
    out->format = (root->ns && root->ns->href && xmlStrcmp(root->ns->href, (const xmlChar *)NS_9990) == 0)
                      ? 9990
                      : 7489;
    const xmlNode *md = child(root, "report_metadata");
    const xmlNode *pp = child(root, "policy_published");
    if (md == NULL || pp == NULL) {
        snprintf(why, whylen, "no <%s>", md == NULL ? "report_metadata" : "policy_published");
        return false;
    }
    out->org_name = path_text(md, "org_name", NULL, false);
    out->email = path_text(md, "email", NULL, false);
    out->report_id = path_text(md, "report_id", NULL, false);
    if (out->org_name[0] == '\0') {
        const char *at = strrchr(out->email, '@');
        if (at && at[1]) {
            free(out->org_name);
            out->org_name = mw_strdup(at + 1);
        }
    }
    if (out->org_name[0] == '\0' || out->report_id[0] == '\0') {
        snprintf(why, whylen, "report_metadata: no %s", out->report_id[0] ? "org_name or email" : "report_id");
        return false;
    }
    const xmlNode *dr = child(md, "date_range");
    char *b = path_text(dr, "begin", NULL, false), *e = path_text(dr, "end", NULL, false);
    unsigned long long vb, ve;
    bool ok = time_value(b, &vb) && time_value(e, &ve);
    if (!ok)
        snprintf(why, whylen, "date_range: begin \"%.20s\" / end \"%.20s\" are not times", b, e);
    free(b);
    free(e);
    if (!ok)
        return false;
    out->begin = (long long)vb;
    out->end = (long long)ve;
    out->domain = path_text(pp, "domain", NULL, true);
    if (out->domain[0] == '\0') {
        snprintf(why, whylen, "policy_published: no domain");
        return false;
    }
    out->p = path_text(pp, "p", NULL, true);
    out->sp = path_text(pp, "sp", NULL, true);
    char *pct = path_text(pp, "pct", NULL, false);
    unsigned long long vp;
    out->pct = number(pct, 100, &vp) ? (int)vp : -1;
    free(pct);

    size_t cap = 0;
    for (const xmlNode *rec = root->children; rec; rec = rec->next) {
        if (!is(rec, "record"))
            continue;
        if (out->nrows >= MW_RPTIN_MAX_RECORDS) {
            snprintf(why, whylen, "more than %u records: refused", MW_RPTIN_MAX_RECORDS);
            return false;
        }
        if (out->nrows == cap) {
            cap = cap ? cap * 2 : 16;
            out->rows = mw_reallocarray(out->rows, cap, sizeof *out->rows);
        }
        mw_rptin_row *r = &out->rows[out->nrows];
        memset(r, 0, sizeof *r);
        if (!parse_row(rec, out->nrows + 1, r, why, whylen)) {
            row_clear(r);
            return false;
        }
        out->nrows++;
    }
    return true;
}

/* 1 parsed, 0 not well-formed (why says where), -1 refused otherwise */
static int parse_once(const char *xml, size_t len, const char *enc, int *code, mw_rptin_report *out, char *why,
                      size_t whylen)
{
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        snprintf(why, whylen, "out of memory (libxml2)");
        return -1;
    }
    xstate st = {false};
    ctxt->_private = &st;
    ctxt->sax->internalSubset = on_subset;
    ctxt->sax->externalSubset = on_subset;
    /* no NOENT, no DTDLOAD/DTDATTR/DTDVALID, no HUGE */
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, xml, (int)len, "report.xml", enc, opts);
    int ok = -1;
    if (st.doctype || (doc && (doc->intSubset || doc->extSubset))) {
        snprintf(why, whylen, "DOCTYPE refused (a report has no DTD; entities and external references "
                              "are never read)");
    } else if (doc == NULL || !ctxt->wellFormed) {
        ok = 0;
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        *code = e ? e->code : 0;
        if (e && e->message) {
            size_t ml = strlen(e->message);
            while (ml && e->message[ml - 1] == '\n')
                ml--;
            snprintf(why, whylen, "XML error at line %d: %.*s", e->line, (int)(ml > 200 ? 200 : ml),
                     e->message);
            for (char *q = why; *q; q++)
                if (*q == '\n' || *q == '\r')
                    *q = ' ';
        } else {
            snprintf(why, whylen, "XML error (not well-formed)");
        }
    } else {
        ok = walk(xmlDocGetRootElement(doc), out, why, whylen) ? 1 : -1;
    }
    if (doc)
        xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    if (ok != 1)
        mw_rptin_report_clear(out);
    return ok;
}

bool mw_rptin_parse(const char *xml, size_t len, mw_rptin_report *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > MW_RPTIN_MAX_XML) {
        snprintf(why, whylen, "report of %zu bytes is larger than the limit of %u bytes", len,
                 MW_RPTIN_MAX_XML);
        return false;
    }
    int code = 0, code2 = 0;
    int rc = parse_once(xml, len, NULL, &code, out, why, whylen);
    if (rc != 0)
        return rc == 1;
    char why2[64];
    /* Another: a report that says (or defaults to) UTF-8 but carries
     * windows-1252 bytes (a "smart quote" in a comment).  Read it as
     * windows-1252, which maps every such byte; other errors stay errors. */
    if ((code == XML_ERR_INVALID_ENCODING || code == XML_ERR_INVALID_CHAR) &&
        parse_once(xml, len, "windows-1252", &code2, out, why2, sizeof why2) == 1)
        return true;
    mw_rptin_report_clear(out);
    /* A known quirk: an unclosed wrapper (an <xs:schema ...> start tag) in
     * front of <feedback>.  Retry once from the first "<feedback"; the rest
     * must then be well-formed on its own, so a truncated or broken report
     * is still refused (with the first error). */
    const char *f = memmem(xml, len, "<feedback", 9);
    if (f == NULL || f == xml)
        return false;
    size_t off = (size_t)(f - xml);
    if (parse_once(f, len - off, NULL, &code2, out, why2, sizeof why2) == 1)
        return true;
    mw_rptin_report_clear(out);
    return false;
}
