/*
 * dmarc_record.c - DMARC policy record parsing (RFC 9989 §4.7, RFC 7489
 * §6.3 in the RFC 7489 mode) and the result/policy names.
 *
 * Purpose
 *   Turn the text of one TXT record at _dmarc.NAME into mw_dmarc_record,
 *   deciding (a) whether it is a DMARC record at all and (b) whether it is
 *   usable.
 *
 * Rules implemented (and why)
 *   - "v=DMARC1" must be the first tag; the value is compared exactly
 *     (case-sensitive, ABNF %x44.4d.41.52.43.31); blanks around '=' are
 *     allowed (ABNF *WSP).  Anything else is not a DMARC record and is
 *     discarded before the "several records" rule (RFC 9989 §4.10).
 *   - Tag names and the keyword values (none, quarantine, reject, r, s,
 *     y, n, u) are case-insensitive (ABNF quoted strings).
 *   - No valid p, or an invalid sp/np: with at least one syntactically
 *     valid rua URI the record acts as "p=none" (p_assumed); without one
 *     the record is unusable and no DMARC processing applies.
 *   - Any other bad value falls back to the tag's default (RFC 7489 §6.3
 *     "syntax errors in the remainder of the record SHOULD be discarded in
 *     favor of default values"; RFC 9989 keeps that).  Malformed tag
 *     fragments and unknown tags are ignored.  A repeated tag keeps its
 *     first value (neither RFC says; first-wins is what libopendmarc does
 *     and avoids a later tag overriding a policy).
 *   - RFC 9989 mode: pct, rf, ri are ignored (removed tags), except that
 *     pct=0 with no t tag, published to mean "testing", reads as t=y.  RFC 7489
 *     mode: np, psd, t are ignored (not defined there) and pct (0..100) is
 *     honoured; an invalid pct is 100.
 *   - rua/ruf: comma-separated URIs; invalid ones are dropped individually.
 *     A URI is "scheme:rest" (RFC 3986 scheme, a non-empty rest of visible
 *     ASCII); RFC 7489's "!size" suffix is kept as written.
 *
 * Why not libopendmarc's parser: opendmarc_policy_parse_dmarc (1.4.2)
 *   knows neither psd nor t, handles a missing/invalid p differently from
 *   RFC 9989, and needs a per-message DMARC_POLICY_T after a process-global
 *   library init.  The grammar is small; parsing it here keeps the exact
 *   RFC 9989 rules in one place and the module free of global state.
 *
 * Threat notes: the text is attacker-controlled DNS data: parsed with a
 *   length (NUL bytes are just bytes), nothing is copied unbounded, and the
 *   raw text kept for the trace is made printable and capped.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "dmarc.h"
#include "strutil.h"

#define RAW_MAX    512   /* printable bytes of the record kept in raw */
#define URIS_MAX   16    /* rua/ruf URIs kept */

/* ---- names --------------------------------------------------------------------- */

static const char *const result_names[] = {
    [MW_DMARC_NONE] = "none",           [MW_DMARC_PASS] = "pass",
    [MW_DMARC_FAIL] = "fail",           [MW_DMARC_TEMPERROR] = "temperror",
    [MW_DMARC_PERMERROR] = "permerror",
};
static const char *const policy_names[] = {
    [MW_DMARC_P_UNSPEC] = "unspecified", [MW_DMARC_P_NONE] = "none",
    [MW_DMARC_P_QUARANTINE] = "quarantine", [MW_DMARC_P_REJECT] = "reject",
};

const char *mw_dmarc_result_name(mw_dmarc_result r)
{
    return (unsigned)r < sizeof result_names / sizeof result_names[0] ? result_names[r] : "unknown";
}

const char *mw_dmarc_policy_name(mw_dmarc_policy p)
{
    return (unsigned)p < sizeof policy_names / sizeof policy_names[0] ? policy_names[p] : "unknown";
}

bool mw_dmarc_result_parse(const char *s, mw_dmarc_result *out)
{
    if (s == NULL)
        return false;
    for (size_t i = 0; i < sizeof result_names / sizeof result_names[0]; i++) {
        if (strcasecmp(s, result_names[i]) == 0) {
            *out = (mw_dmarc_result)i;
            return true;
        }
    }
    return false;
}

bool mw_dmarc_policy_parse(const char *s, mw_dmarc_policy *out)
{
    if (s == NULL)
        return false;
    for (size_t i = MW_DMARC_P_NONE; i < sizeof policy_names / sizeof policy_names[0]; i++) {
        if (strcasecmp(s, policy_names[i]) == 0) {
            *out = (mw_dmarc_policy)i;
            return true;
        }
    }
    return false;
}

/* ---- lexing helpers ------------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t      n;
} span;

static bool is_wsp(char c) { return c == ' ' || c == '\t'; }

static span trim(span s)
{
    while (s.n > 0 && is_wsp(*s.p)) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_wsp(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool span_ieq(span s, const char *lit)
{
    return mw_str_ieq(s.p, s.n, lit, strlen(lit));
}

/* Split "name *WSP = *WSP value" (already trimmed); false if malformed. */
static bool split_tag(span part, span *name, span *value)
{
    const char *eq = memchr(part.p, '=', part.n);

    if (eq == NULL)
        return false;
    *name = trim((span){part.p, (size_t)(eq - part.p)});
    *value = trim((span){eq + 1, part.n - (size_t)(eq - part.p) - 1});
    if (name->n == 0 || !isalpha((unsigned char)name->p[0]))
        return false;
    for (size_t i = 1; i < name->n; i++)
        if (!isalnum((unsigned char)name->p[i]) && name->p[i] != '_')
            return false;
    return true;
}

bool mw_dmarc_record_is_dmarc(const char *text, size_t len)
{
    span all = {text, len}, name, value;
    const char *semi;

    if (text == NULL)
        return false;
    semi = memchr(text, ';', len);
    if (semi != NULL)
        all.n = (size_t)(semi - text);
    /* No leading blanks: the record must *start* with the v tag. */
    if (all.n == 0 || is_wsp(all.p[0]))
        return false;
    all = trim(all);
    if (!split_tag(all, &name, &value))
        return false;
    return name.n == 1 && (name.p[0] == 'v' || name.p[0] == 'V') && value.n == 6 &&
           memcmp(value.p, "DMARC1", 6) == 0;
}

/* ---- values ------------------------------------------------------------------------- */

static bool parse_policy(span v, mw_dmarc_policy *out)
{
    if (span_ieq(v, "none"))
        *out = MW_DMARC_P_NONE;
    else if (span_ieq(v, "quarantine"))
        *out = MW_DMARC_P_QUARANTINE;
    else if (span_ieq(v, "reject"))
        *out = MW_DMARC_P_REJECT;
    else
        return false;
    return true;
}

/* One character out of allowed (case-insensitive), lower-cased; 0 if not. */
/* fo: colon-separated options 0, 1, d, s (RFC 9991 section 3); unknown
 * options are ignored, none usable means the default "0". */
static unsigned parse_fo(span v)
{
    unsigned fo = 0;
    while (v.n > 0) {
        const char *c = memchr(v.p, ':', v.n);
        size_t n = c != NULL ? (size_t)(c - v.p) : v.n;
        span o = trim((span){v.p, n});
        if (o.n == 1) {
            switch (o.p[0]) {
            case '0': fo |= MW_DMARC_FO_0; break;
            case '1': fo |= MW_DMARC_FO_1; break;
            case 'd': case 'D': fo |= MW_DMARC_FO_D; break;
            case 's': case 'S': fo |= MW_DMARC_FO_S; break;
            default: break;
            }
        }
        v.p += n;
        v.n -= n;
        if (v.n > 0) {
            v.p++;
            v.n--;
        }
    }
    return fo != 0 ? fo : MW_DMARC_FO_0;
}

static char parse_letter(span v, const char *allowed)
{
    if (v.n != 1)
        return 0;
    char c = (char)tolower((unsigned char)v.p[0]);
    return strchr(allowed, c) != NULL ? c : 0;
}

/* RFC 3986 scheme ":" then visible ASCII, at least one byte. */
static bool uri_valid(span u)
{
    size_t i;

    if (u.n < 3 || !isalpha((unsigned char)u.p[0]))
        return false;
    for (i = 1; i < u.n && u.p[i] != ':'; i++)
        if (!isalnum((unsigned char)u.p[i]) && strchr("+-.", u.p[i]) == NULL)
            return false;
    if (i >= u.n - 1)
        return false;
    for (i++; i < u.n; i++)
        if ((unsigned char)u.p[i] <= 0x20 || (unsigned char)u.p[i] >= 0x7f)
            return false;
    return true;
}

static char **parse_uris(span v)
{
    char **list = mw_calloc(1, sizeof *list);
    size_t n = 0;

    while (v.n > 0) {
        const char *comma = memchr(v.p, ',', v.n);
        size_t len = comma != NULL ? (size_t)(comma - v.p) : v.n;
        span u = trim((span){v.p, len});
        if (uri_valid(u) && n < URIS_MAX) {
            list = mw_reallocarray(list, n + 2, sizeof *list);
            list[n++] = mw_strndup(u.p, u.n);
            list[n] = NULL;
        }
        if (comma == NULL)
            break;
        v.p += len + 1;
        v.n -= len + 1;
    }
    return list;
}

static void free_list(char **l)
{
    for (size_t i = 0; l != NULL && l[i] != NULL; i++)
        free(l[i]);
    free(l);
}

void mw_dmarc_record_clear(mw_dmarc_record *r)
{
    if (r == NULL)
        return;
    free_list(r->rua);
    free_list(r->ruf);
    free(r->raw);
    memset(r, 0, sizeof *r);
}

static bool fail_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail_why(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whylen > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return false;
}

enum { T_P = 1u << 0, T_SP = 1u << 1, T_NP = 1u << 2, T_ADKIM = 1u << 3, T_ASPF = 1u << 4,
       T_T = 1u << 5, T_PSD = 1u << 6, T_PCT = 1u << 7, T_RUA = 1u << 8, T_RUF = 1u << 9,
       T_FO = 1u << 10 };

bool mw_dmarc_record_parse(const char *text, size_t len, mw_dmarc_mode mode, mw_dmarc_record *out,
                           char *why, size_t whylen)
{
    bool rfc7489 = mode == MW_DMARC_MODE_RFC7489;
    bool p_bad = false, sp_bad = false, np_bad = false;
    unsigned seen = 0;
    mw_buf raw = MW_BUF_INIT;
    span rest;

    memset(out, 0, sizeof *out);
    out->adkim = out->aspf = 'r';
    out->psd = 'u';
    out->pct = 100;
    out->fo = MW_DMARC_FO_0;
    if (text == NULL)
        text = "";
    mw_str_printable(&raw, text, len, RAW_MAX);
    out->raw = mw_buf_steal(&raw);
    if (out->raw == NULL)
        out->raw = mw_strdup("");
    out->rua = mw_calloc(1, sizeof *out->rua);
    out->ruf = mw_calloc(1, sizeof *out->ruf);

    if (!mw_dmarc_record_is_dmarc(text, len))
        return fail_why(why, whylen, "not a DMARC record (does not start with v=DMARC1)");

    /* Skip the version tag: everything up to the first ';'. */
    const char *semi = memchr(text, ';', len);
    rest = semi != NULL ? (span){semi + 1, len - (size_t)(semi + 1 - text)} : (span){text + len, 0};

    while (rest.n > 0) {
        const char *end = memchr(rest.p, ';', rest.n);
        size_t plen = end != NULL ? (size_t)(end - rest.p) : rest.n;
        span part = trim((span){rest.p, plen}), name, v;
        unsigned bit = 0;

        rest.p += plen;
        rest.n -= plen;
        if (rest.n > 0) {   /* the ';' */
            rest.p++;
            rest.n--;
        }
        if (part.n == 0 || !split_tag(part, &name, &v))
            continue;   /* empty or malformed fragment: ignored */

        if (span_ieq(name, "p"))
            bit = T_P;
        else if (span_ieq(name, "sp"))
            bit = T_SP;
        else if (span_ieq(name, "np") && !rfc7489)
            bit = T_NP;
        else if (span_ieq(name, "adkim"))
            bit = T_ADKIM;
        else if (span_ieq(name, "aspf"))
            bit = T_ASPF;
        else if (span_ieq(name, "t") && !rfc7489)
            bit = T_T;
        else if (span_ieq(name, "psd") && !rfc7489)
            bit = T_PSD;
        else if (span_ieq(name, "pct"))
            bit = T_PCT;   /* RFC 9989 mode: read only for pct=0 (below) */
        else if (span_ieq(name, "rua"))
            bit = T_RUA;
        else if (span_ieq(name, "ruf"))
            bit = T_RUF;
        else if (span_ieq(name, "fo"))
            bit = T_FO;
        if (bit == 0 || (seen & bit))
            continue;   /* unknown/ignored tag, or a repeat: first value wins */
        seen |= bit;

        char c;
        switch (bit) {
        case T_P:  p_bad = !parse_policy(v, &out->p); break;
        case T_SP: sp_bad = !parse_policy(v, &out->sp); break;
        case T_NP: np_bad = !parse_policy(v, &out->np); break;
        case T_ADKIM: if ((c = parse_letter(v, "rs")) != 0) out->adkim = c; break;
        case T_ASPF:  if ((c = parse_letter(v, "rs")) != 0) out->aspf = c; break;
        case T_T:     out->t = parse_letter(v, "yn") == 'y'; break;
        case T_PSD:   if ((c = parse_letter(v, "ynu")) != 0) out->psd = c; break;
        case T_PCT: {
            int val = 0;
            size_t i;
            for (i = 0; i < v.n && i < 4 && isdigit((unsigned char)v.p[i]); i++)
                val = val * 10 + (v.p[i] - '0');
            if (v.n > 0 && i == v.n && val <= 100)
                out->pct = val;
            break;
        }
        case T_RUA: free_list(out->rua); out->rua = parse_uris(v); break;
        case T_RUF: free_list(out->ruf); out->ruf = parse_uris(v); break;
        case T_FO:  out->fo = parse_fo(v); break;
        default: break;
        }
    }

    /* RFC 9989 has no pct, but records still saying pct=0 (and no t) were
     * published to mean "testing": read them as t=y (pct_testing says why).
     * Any other pct is ignored. */
    if (!rfc7489) {
        if ((seen & T_PCT) && out->pct == 0 && !(seen & T_T)) {
            out->t = true;
            out->pct_testing = true;
        }
        out->pct = 100;
    }
    if (!(seen & T_P))
        p_bad = true;
    if (p_bad || sp_bad || np_bad) {
        const char *what = p_bad ? ((seen & T_P) ? "invalid p" : "no p tag")
                                 : sp_bad ? "invalid sp" : "invalid np";
        if (out->rua[0] == NULL)
            return fail_why(why, whylen, "unusable DMARC record: %s and no valid rua", what);
        /* RFC 9989 §4.10 / RFC 7489 §6.6.3: act as if "p=none" was published. */
        out->p = MW_DMARC_P_NONE;
        out->sp = out->np = MW_DMARC_P_UNSPEC;
        out->p_assumed = true;
        fail_why(why, whylen, "%s: acting as p=none (valid rua present)", what);
    } else if (why != NULL && whylen > 0) {
        why[0] = '\0';
    }
    return true;
}
