/*
 * report_xml.c - an mw_report as aggregate report XML, its id and its
 * file name.
 *
 * Purpose
 *   RFC 9990 (namespace urn:ietf:params:xml:ns:dmarc-2.0, validated against
 *   the draft -32 schema dmarc-xml-0.2.xsd) by default; RFC 7489 Appendix C
 *   (no namespace, validated against rfc7489-fixed.xsd) as an option.
 *
 * Design notes
 *   - Written with libxml2's xmlTextWriter: escaping is the library's.
 *     Strings from the history are byte strings; anything that is not
 *     valid UTF-8 or is a control character becomes '?' first, so the
 *     document is always well-formed UTF-8.
 *   - The faults real reporters have (conformance notes section 5) are
 *     avoided by construction: timestamps are integers, every enumeration
 *     is mapped onto the schema's lower-case words (unknown words fall back
 *     to a defined value, never pass through), auth_results always holds
 *     at least the SPF result ("none" when nothing is known), and a
 *     <reason> always has a <type> and a <comment> only when non-empty.
 *   - Differences between the formats handled here: RFC 7489 has no
 *     generator, np, testing or discovery_method, requires pct (the
 *     history does not record it: 100), has no "pass" disposition, needs
 *     SPF scope (helo or mfrom) and envelope_from, and its source_ip
 *     pattern only accepts dotted IPv4 and the full 8-group IPv6 form.
 *     RFC 9990's SPF scope can only be "mfrom" (a HELO result is written
 *     without scope).
 *   - The RFC 9990 disposition "pass" is written for DMARC-passing rows of
 *     an enforcing policy (no action taken because DMARC passed).
 *   - A failing row whose disposition is below the applicable policy (p, or
 *     sp for a subdomain) always carries a <reason> (RFC 9990 requires
 *     one): the history's override text when there is one, else
 *     policy_test_mode for t=y (RFC 7489 format: sampled_out), else
 *     local_policy with a comment saying that no override was recorded.
 *   - The history's override text ("never_reject example.org, allow_networks")
 *     becomes one reason per comma-separated item: a schema word stays the
 *     type; any other item is type local_policy with the item as comment.
 *
 * See also: report.h, docs/reports.md, tests/unit/test_checks_report.c.
 */
#include "report.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <libxml/xmlwriter.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

#define NS_9990 "urn:ietf:params:xml:ns:dmarc-2.0"

/* ---- id and file name ----------------------------------------------------------- */

char *mw_report_id(const mw_report *r, const mw_report_meta *m)
{
    mw_buf in = MW_BUF_INIT, out = MW_BUF_INIT;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    mw_buf_printf(&in, "mailwarden-report-v1\n%s\n%s\n%lld\n%lld", m->receiver, r->policy_domain,
                  (long long)r->begin, (long long)r->end);
    if (EVP_Digest(in.data, in.len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
        mw_panic("report: SHA-256 failed");
    for (unsigned i = 0; i < 16; i++)
        mw_buf_printf(&out, "%02x", md[i]);
    mw_buf_free(&in);
    return mw_buf_steal(&out);
}

char *mw_report_filename(const mw_report *r, const mw_report_meta *m, const char *id)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%s!%s!%lld!%lld!%s.xml.gz", m->receiver, r->policy_domain,
                  (long long)r->begin, (long long)r->end - 1, id);
    return mw_buf_steal(&b);
}

/* ---- mapping onto the schema's words ------------------------------------------------- */

static const char *word_in(const char *s, const char *const *words, const char *fallback)
{
    for (size_t i = 0; s != NULL && words[i] != NULL; i++)
        if (strcasecmp(s, words[i]) == 0)
            return words[i];
    return fallback;
}

static const char *const w_disp[] = {"none", "quarantine", "reject", NULL};
static const char *const w_align[] = {"r", "s", NULL};
static const char *const w_pf[] = {"pass", "fail", NULL};
static const char *const w_yn[] = {"n", "y", NULL};
static const char *const w_disc[] = {"psl", "treewalk", NULL};
static const char *const w_dkim[] = {"none", "pass", "fail", "policy", "neutral", "temperror",
                                     "permerror", NULL};
static const char *const w_spf9990[] = {"none", "pass", "fail", "softfail", "policy", "neutral",
                                        "temperror", "permerror", NULL};
static const char *const w_spf7489[] = {"none", "neutral", "pass", "fail", "softfail",
                                        "temperror", "permerror", NULL};
static const char *const w_ovr9990[] = {"local_policy", "mailing_list", "other",
                                        "policy_test_mode", "trusted_forwarder", NULL};
static const char *const w_ovr7489[] = {"forwarded", "sampled_out", "trusted_forwarder",
                                        "mailing_list", "local_policy", "other", NULL};

static const char *spf_result(const char *s, mw_report_format f)
{
    if (s != NULL && strcasecmp(s, "error") == 0)
        return "temperror";
    if (s != NULL && strcasecmp(s, "unknown") == 0)
        return "permerror";
    if (f == MW_REPORT_FMT_RFC7489 && s != NULL && strcasecmp(s, "policy") == 0)
        return "fail";
    return word_in(s, f == MW_REPORT_FMT_RFC7489 ? w_spf7489 : w_spf9990, "none");
}

static const char *dkim_result(const char *s)
{
    if (s != NULL && strcasecmp(s, "hardfail") == 0)
        return "fail";
    return word_in(s, w_dkim, "permerror");
}

static int policy_rank(const char *p)
{
    return p == NULL ? 0 : strcmp(p, "reject") == 0 ? 2 : strcmp(p, "quarantine") == 0 ? 1 : 0;
}

/* The policy that applied to mail from header_from: p for the policy
 * domain itself, sp (else p) for a subdomain. */
static const char *applicable_policy(const mw_report *r, const mw_report_row *w)
{
    if (strcmp(w->header_from, r->policy_domain) != 0 && word_in(r->sp, w_disp, NULL) != NULL)
        return word_in(r->sp, w_disp, NULL);
    return word_in(r->p, w_disp, "none");
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct xw {
    xmlTextWriterPtr w;
    bool             ok;
    mw_buf           tmp;
} xw;

/* s as valid UTF-8 without control characters (else '?'). */
static const char *clean(xw *x, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");

    mw_buf_reset(&x->tmp);
    while (*p != '\0') {
        size_t n = 0;
        uint32_t cp = 0;
        if (*p < 0x80) {
            mw_buf_putc(&x->tmp, (*p < 0x20 && *p != '\t') || *p == 0x7f ? '?' : (char)*p);
            p++;
            continue;
        }
        if ((*p & 0xe0) == 0xc0)
            n = 1, cp = *p & 0x1f;
        else if ((*p & 0xf0) == 0xe0)
            n = 2, cp = *p & 0x0f;
        else if ((*p & 0xf8) == 0xf0)
            n = 3, cp = *p & 0x07;
        bool good = n > 0;
        for (size_t i = 1; good && i <= n; i++) {
            good = (p[i] & 0xc0) == 0x80;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (good && ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
                     cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff))
            good = false;
        if (!good) {
            mw_buf_putc(&x->tmp, '?');
            p++;
            continue;
        }
        mw_buf_append(&x->tmp, p, n + 1);
        p += n + 1;
    }
    return mw_buf_cstr(&x->tmp);
}

static void start(xw *x, const char *name)
{
    if (x->ok && xmlTextWriterStartElement(x->w, BAD_CAST name) < 0)
        x->ok = false;
}

static void end(xw *x)
{
    if (x->ok && xmlTextWriterEndElement(x->w) < 0)
        x->ok = false;
}

static void elem(xw *x, const char *name, const char *value)
{
    if (x->ok && xmlTextWriterWriteElement(x->w, BAD_CAST name, BAD_CAST clean(x, value)) < 0)
        x->ok = false;
}

static void elem_ll(xw *x, const char *name, long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    elem(x, name, b);
}

/* RFC 7489's IPAddress pattern: dotted IPv4 or 8 full groups of IPv6. */
static void write_ip(xw *x, const char *ip, mw_report_format f)
{
    unsigned char a[16];
    char out[64];

    if (f == MW_REPORT_FMT_RFC7489 && ip != NULL && strchr(ip, ':') != NULL &&
        inet_pton(AF_INET6, ip, a) == 1) {
        snprintf(out, sizeof out, "%x:%x:%x:%x:%x:%x:%x:%x", a[0] << 8 | a[1], a[2] << 8 | a[3],
                 a[4] << 8 | a[5], a[6] << 8 | a[7], a[8] << 8 | a[9], a[10] << 8 | a[11],
                 a[12] << 8 | a[13], a[14] << 8 | a[15]);
        elem(x, "source_ip", out);
        return;
    }
    elem(x, "source_ip", ip);
}

static void write_metadata(xw *x, const mw_report *r, const mw_report_meta *m, const char *id)
{
    start(x, "report_metadata");
    elem(x, "org_name", m->org_name);
    elem(x, "email", m->email);
    if (m->extra_contact != NULL && m->extra_contact[0] != '\0')
        elem(x, "extra_contact_info", m->extra_contact);
    elem(x, "report_id", id);
    start(x, "date_range");
    elem_ll(x, "begin", (long long)r->begin);
    elem_ll(x, "end", (long long)r->end - 1);
    end(x);
    if (m->format == MW_REPORT_FMT_RFC9990 && m->generator != NULL && m->generator[0] != '\0')
        elem(x, "generator", m->generator);
    end(x);
}

static void write_policy(xw *x, const mw_report *r, mw_report_format f)
{
    const char *v;

    start(x, "policy_published");
    elem(x, "domain", r->policy_domain);
    if ((v = word_in(r->adkim, w_align, NULL)) != NULL)
        elem(x, "adkim", v);
    if ((v = word_in(r->aspf, w_align, NULL)) != NULL)
        elem(x, "aspf", v);
    elem(x, "p", word_in(r->p, w_disp, "none"));
    if ((v = word_in(r->sp, w_disp, NULL)) != NULL)
        elem(x, "sp", v);
    if (f == MW_REPORT_FMT_RFC9990) {
        if ((v = word_in(r->np, w_disp, NULL)) != NULL)
            elem(x, "np", v);
        if ((v = word_in(r->discovery, w_disc, NULL)) != NULL)
            elem(x, "discovery_method", v);
        if ((v = word_in(r->t, w_yn, NULL)) != NULL)
            elem(x, "testing", v);
    } else {
        elem(x, "pct", "100");
    }
    end(x);
}

static void write_reason(xw *x, const char *type, const char *comment)
{
    start(x, "reason");
    elem(x, "type", type);
    if (comment != NULL && comment[0] != '\0')
        elem(x, "comment", comment);
    end(x);
}

/* One <reason> per comma-separated item of the override text. */
static void write_overrides(xw *x, const char *text, mw_report_format f)
{
    const char *const *words = f == MW_REPORT_FMT_RFC7489 ? w_ovr7489 : w_ovr9990;
    char *copy = mw_strdup(text), *save = NULL;

    for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*item))
            item++;
        size_t n = strlen(item);
        while (n > 0 && isspace((unsigned char)item[n - 1]))
            item[--n] = '\0';
        if (n == 0)
            continue;
        size_t wl = strcspn(item, " \t");
        char word[64];
        snprintf(word, sizeof word, "%.*s", (int)(wl < sizeof word ? wl : sizeof word - 1), item);
        const char *type = word_in(word, words, NULL);
        if (type != NULL) {
            const char *rest = item + wl;
            while (isspace((unsigned char)*rest))
                rest++;
            write_reason(x, type, rest);
        } else {
            write_reason(x, "local_policy", item);
        }
    }
    free(copy);
}

/* Could np (a non-existent subdomain, RFC 9989) have been the policy that
 * applied, and disp what it asked for?  The history does not say whether
 * the From domain existed: then no reason is claimed for the row. */
static bool np_may_apply(const mw_report *r, const mw_report_row *w, const char *disp)
{
    const char *np = word_in(r->np, w_disp, NULL);
    return np != NULL && strcmp(w->header_from, r->policy_domain) != 0 &&
           policy_rank(disp) >= policy_rank(np);
}

/*
 * A failing row given less than the applicable policy with no override text
 * in the history (t=y, a DMARC temperror, records written before the engine
 * named the deciding rule): RFC 9990 requires a <reason> whenever the
 * disposition differs from the published policy, so one is always written,
 * of a type the format's schema knows.  t=y is policy_test_mode (RFC 9990)
 * or sampled_out, its RFC 7489 equivalent (pct=0).
 */
static void write_below_policy(xw *x, const mw_report *r, const mw_report_row *w,
                               const char *disp, const char *pol, mw_report_format f)
{
    char c[160];
    bool sub = strcmp(w->header_from, r->policy_domain) != 0 && word_in(r->sp, w_disp, NULL) != NULL;

    if (r->t != NULL && strcmp(r->t, "y") == 0) {
        if (f == MW_REPORT_FMT_RFC9990)
            write_reason(x, "policy_test_mode", NULL);
        else
            write_reason(x, "sampled_out", "t=y: the domain asked for testing");
        return;
    }
    snprintf(c, sizeof c, "local policy: disposition %s below the published %s=%s "
             "(no override recorded; e.g. a DMARC temperror)", disp, sub ? "sp" : "p", pol);
    write_reason(x, "local_policy", c);
}

static void write_row(xw *x, const mw_report *r, const mw_report_row *w, mw_report_format f)
{
    const char *dkim_al = word_in(w->dkim_aligned, w_pf, "fail");
    const char *spf_al = word_in(w->spf_aligned, w_pf, "fail");
    bool pass = strcmp(dkim_al, "pass") == 0 || strcmp(spf_al, "pass") == 0;
    const char *disp = word_in(w->disposition, w_disp, "none");
    const char *pol = applicable_policy(r, w);

    start(x, "record");
    start(x, "row");
    write_ip(x, w->source_ip, f);
    elem_ll(x, "count", (long long)w->count);
    start(x, "policy_evaluated");
    if (f == MW_REPORT_FMT_RFC9990 && pass && strcmp(disp, "none") == 0 && policy_rank(pol) > 0)
        elem(x, "disposition", "pass");
    else
        elem(x, "disposition", disp);
    elem(x, "dkim", dkim_al);
    elem(x, "spf", spf_al);
    if (w->override != NULL)
        write_overrides(x, w->override, f);
    else if (!pass && policy_rank(disp) < policy_rank(pol) && !np_may_apply(r, w, disp))
        write_below_policy(x, r, w, disp, pol, f);
    end(x);
    end(x);   /* row */

    start(x, "identifiers");
    if (w->envelope_to[0] != '\0')
        elem(x, "envelope_to", w->envelope_to);
    if (w->envelope_from[0] != '\0' || f == MW_REPORT_FMT_RFC7489)
        elem(x, "envelope_from", w->envelope_from);
    elem(x, "header_from", w->header_from);
    end(x);

    start(x, "auth_results");
    for (size_t i = 0; i < w->ndkim; i++) {
        start(x, "dkim");
        elem(x, "domain", w->dkim[i].domain);
        elem(x, "selector", w->dkim[i].selector);
        elem(x, "result", dkim_result(w->dkim[i].result));
        end(x);
    }
    /* always an SPF result: never an empty auth_results */
    const char *sd = w->spf_domain[0] != '\0'     ? w->spf_domain
                     : w->envelope_from[0] != '\0' ? w->envelope_from
                                                   : w->header_from;
    bool helo = strcmp(w->spf_scope, "helo") == 0;
    start(x, "spf");
    elem(x, "domain", sd);
    if (f == MW_REPORT_FMT_RFC7489)
        elem(x, "scope", helo ? "helo" : "mfrom");
    else if (!helo)
        elem(x, "scope", "mfrom");
    elem(x, "result", w->spf_domain[0] != '\0' ? spf_result(w->spf_result, f) : "none");
    end(x);
    end(x);   /* auth_results */
    end(x);   /* record */
}

bool mw_report_xml(const mw_report *r, const mw_report_meta *m, const char *id, mw_buf *out,
                   char *err, size_t errlen)
{
    xmlBufferPtr buf = xmlBufferCreate();
    xw x = {NULL, true, MW_BUF_INIT};

    mw_buf_reset(out);
    if (buf == NULL || (x.w = xmlNewTextWriterMemory(buf, 0)) == NULL) {
        snprintf(err, errlen, "libxml2: cannot create the XML writer");
        if (buf != NULL)
            xmlBufferFree(buf);
        return false;
    }
    xmlTextWriterSetIndent(x.w, 1);
    xmlTextWriterSetIndentString(x.w, BAD_CAST "  ");
    if (xmlTextWriterStartDocument(x.w, "1.0", "UTF-8", NULL) < 0)
        x.ok = false;
    start(&x, "feedback");
    if (m->format == MW_REPORT_FMT_RFC9990 && x.ok &&
        xmlTextWriterWriteAttribute(x.w, BAD_CAST "xmlns", BAD_CAST NS_9990) < 0)
        x.ok = false;
    elem(&x, "version", "1.0");
    write_metadata(&x, r, m, id);
    write_policy(&x, r, m->format);
    for (size_t i = 0; i < r->nrows; i++)
        write_row(&x, r, &r->rows[i], m->format);
    end(&x);
    if (x.ok && xmlTextWriterEndDocument(x.w) < 0)
        x.ok = false;
    xmlFreeTextWriter(x.w);   /* flushes into buf */
    if (x.ok)
        mw_buf_append(out, xmlBufferContent(buf), (size_t)xmlBufferLength(buf));
    else
        snprintf(err, errlen, "libxml2: writing the report for %s failed", r->policy_domain);
    xmlBufferFree(buf);
    mw_buf_free(&x.tmp);
    return x.ok;
}
