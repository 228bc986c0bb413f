/*
 * dmarc.c - DMARC evaluation (RFC 9989; RFC 7489 as a mode) over mw_dns.
 *
 * Purpose
 *   Given the header From domain, the SPF result of the MAIL FROM identity
 *   and every DKIM signature's result: find the policy, the Organizational
 *   Domain, Identifier Alignment, the DMARC result and the disposition the
 *   domain asks for.  Local overrides and enforcement are the engine's.
 *
 * RFC 9989 (DMARCbis) as implemented here
 *   - DNS Tree Walk (§4.10): query _dmarc.<From domain>; then, if the name
 *     has more than 7 labels, jump to its 7-label suffix, else drop the
 *     left-most label; then one label at a time up to the TLD.  At most 8
 *     TXT queries.  TXT records not starting with v=DMARC1 are discarded;
 *     several DMARC records at one name are all discarded (no record
 *     there).  The walk stops at a record with psd=n, or with psd=y at any
 *     name but the first.
 *   - Organizational Domain: the name of the psd=n record that stopped the
 *     walk; or the name one label below the psd=y record that stopped it;
 *     else the name of the record with the fewest labels; else (no record)
 *     the walk's starting name.  Any single DMARC record counts here, usable
 *     or not (its psd tag is read either way).
 *   - Policy record, in order of preference: the From domain's, the
 *     Organizational Domain's, the PSD's (the psd=y record that stopped
 *     the walk).  Records in between are not used (that is why the RFC says
 *     sp on a subdomain's record is never consulted).  A name the 8-query
 *     shortcut skipped has no record for this purpose.
 *   - Which tag: p when the record is the From domain's own; otherwise np
 *     when the From domain does not exist (RFC 8020: an NXDOMAIN answer;
 *     NODATA means the name exists), falling back to sp, then p; otherwise
 *     sp, falling back to p.  The existence check (one A query; AAAA and MX
 *     only when it fails) is made only when it can matter: result fail,
 *     record above the From domain, np published.
 *   - t=y: the disposition is lowered one step (reject -> quarantine,
 *     quarantine -> none) and "testing" is set.  pct/rf/ri are ignored.
 *   - Alignment: strict = the same name; relaxed = the same
 *     Organizational Domain, each found by its own tree walk (only done
 *     when the identifier is the From's Organizational Domain or below it:
 *     otherwise it cannot align).  DKIM: every signature with result pass;
 *     SPF: the MAIL FROM domain when SPF passed.
 *   - Result: pass if any aligned pass; temperror when a DNS failure kept
 *     us from finding the policy or an alignment, or when an identifier
 *     that would be aligned had a temporary error of its own (a DKIM key
 *     lookup or an SPF check that timed out): a retry may pass, so that is
 *     never fail.  Else fail.  No record (or an unusable one: no valid p
 *     and no valid rua) is none.
 *
 * RFC 7489 mode
 *   Query the From domain, then (nothing found) its Organizational Domain
 *   from the public suffix list (dmarc_psl.c); several records at the From
 *   domain end discovery (none).  p for the From domain's record, else sp.
 *   pct honoured with the caller's per-message sample: not sampled lowers
 *   the disposition like t=y does in RFC 9989.
 *
 * DNS results: NXDOMAIN and NODATA -> no record at that name; a name too
 *   long to query (decided here, no traffic) -> no record at that name;
 *   every other failure (timeout, SERVFAIL, REFUSED, FORMERR, NOTIMP,
 *   DNSSEC bogus) -> temperror, as RFC 7208 §5 and common practice group
 *   them: a broken or refusing server is not a domain without a policy.
 *
 * Threat notes: every name and record comes from outside.  Names are
 *   validated and lower-cased before use; record text is parsed with a
 *   length (dmarc_record.c); the reason is built from printable pieces.
 *   The mw_dmarc handle is read-only after create: no locks needed.
 *
 * See also: dmarc.h, dmarc_record.c, dmarc_psl.c, docs/architecture.md.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "dmarc.h"
#include "dmarc_priv.h"
#include "idna.h"
#include "log.h"
#include "strutil.h"

#define WALK_MAX        8
#define WALK_SHORTCUT   7     /* labels kept by the tree walk's shortcut */
#define DEFAULT_PSL     "/usr/share/publicsuffix/effective_tld_names.dat"
#define ORG_CACHE       8

struct mw_dmarc {
    mw_dns        *dns;
    mw_dmarc_mode  mode;
    unsigned       timeout_ms;
    mw_psl        *psl;
};

/* One name looked up. */
typedef struct wstep {
    char            *domain;
    size_t           labels;
    size_t           ndmarc;    /* DMARC records at the name */
    bool             have;      /* exactly one DMARC record */
    bool             usable;
    mw_dmarc_record  rec;
    char             why[200];
} wstep;

typedef struct walk {
    wstep  step[WALK_MAX];
    size_t n;
    int    stop;                /* index of the psd record that stopped the walk, -1 */
    bool   tempfail;
    char   tempwhy[200];
} walk;

/* Per-evaluation state. */
typedef struct ectx {
    mw_dmarc *d;
    unsigned  queries;
    struct { char *name, *org; bool tempfail; } org[ORG_CACHE];
    size_t    norg;
} ectx;

/* ---- create/destroy -------------------------------------------------------------- */

mw_dmarc *mw_dmarc_create(mw_dns *dns, const mw_dmarc_options *o, char *err, size_t errlen)
{
    mw_dmarc *d;

    if (dns == NULL) {
        snprintf(err, errlen, "dmarc: no resolver");
        return NULL;
    }
    d = mw_calloc(1, sizeof *d);
    d->dns = dns;
    d->mode = o != NULL ? o->mode : MW_DMARC_MODE_RFC9989;
    d->timeout_ms = o != NULL ? o->timeout_ms : 0;
    if (d->mode == MW_DMARC_MODE_RFC7489) {
        const char *path = o->psl_file != NULL && *o->psl_file ? o->psl_file : DEFAULT_PSL;
        char why[300];
        d->psl = mw_psl_load(path, why, sizeof why);
        if (d->psl == NULL) {
            snprintf(err, errlen, "dmarc: public suffix list: %s (Debian package publicsuffix)", why);
            free(d);
            return NULL;
        }
    } else if (d->mode != MW_DMARC_MODE_RFC9989) {
        snprintf(err, errlen, "dmarc: unknown mode %d", (int)d->mode);
        free(d);
        return NULL;
    }
    return d;
}

void mw_dmarc_destroy(mw_dmarc **dp)
{
    if (dp == NULL || *dp == NULL)
        return;
    mw_psl_free(&(*dp)->psl);
    MW_FREE(dp);
}

/* ---- names ------------------------------------------------------------------------ */

/* Lower-cased copy without a trailing dot, a U-label name as its A-label;
 * NULL if not a usable domain name. */
static char *norm_domain(const char *s)
{
    char *c;
    size_t n;
    char alabel[256];
    const char *why;

    if (s != NULL && mw_idna_has_8bit(s) && mw_idna_to_ascii(s, alabel, sizeof alabel, &why))
        s = alabel;
    if (s == NULL || *s == '\0' || !mw_domain_valid(s))
        return NULL;
    c = mw_strdup(s);
    n = strlen(c);
    if (n > 0 && c[n - 1] == '.')
        c[n - 1] = '\0';
    mw_str_lower(c);
    return c;
}

static size_t count_labels(const char *s)
{
    size_t n = *s != '\0';
    for (; *s; s++)
        n += *s == '.';
    return n;
}

/* The suffix of name with k labels (k <= labels(name)). */
static const char *suffix_labels(const char *name, size_t k)
{
    size_t n = count_labels(name);
    const char *p = name;

    while (n > k && (p = strchr(p, '.')) != NULL) {
        p++;
        n--;
    }
    return p != NULL ? p : name;
}

/* Is a equal to b or a subdomain of it? */
static bool at_or_below(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la == lb)
        return strcmp(a, b) == 0;
    return la > lb && a[la - lb - 1] == '.' && strcmp(a + la - lb, b) == 0;
}

/* ---- lookups --------------------------------------------------------------------- */

/* Can name be sent as a DNS query (at most 253 bytes, labels of 1..63)? */
static bool qname_fits(const char *name)
{
    size_t total = 0, label = 0;

    for (const char *p = name; *p; p++, total++) {
        if (*p == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (++label > 63) {
            return false;
        }
    }
    return total > 0 && total <= 253;
}

/* Query _dmarc.NAME into st.  false on a DNS failure (why in tempwhy). */
static bool lookup(ectx *c, const char *name, wstep *st, char *tempwhy, size_t twlen)
{
    mw_buf q = MW_BUF_INIT, txt = MW_BUF_INIT, one = MW_BUF_INIT;
    mw_dns_answer *a = NULL;
    mw_dns_status s;
    size_t ndmarc = 0;
    bool ok = true;

    memset(st, 0, sizeof *st);
    st->domain = mw_strdup(name);
    st->labels = count_labels(name);
    mw_buf_printf(&q, "_dmarc.%s", name);
    if (!qname_fits(mw_buf_cstr(&q))) {
        snprintf(st->why, sizeof st->why, "_dmarc.<%zu-byte name> is too long to query (no record)",
                 strlen(name));
        mw_buf_free(&q);
        return true;
    }
    s = mw_dns_query(c->d->dns, mw_buf_cstr(&q), MW_DNS_T_TXT, c->d->timeout_ms, &a);
    c->queries++;
    if (s == MW_DNS_TEMPFAIL || s == MW_DNS_PERMFAIL || (a != NULL && a->bogus)) {
        snprintf(tempwhy, twlen, "%s TXT: %s%s%s", mw_buf_cstr(&q),
                 a != NULL && a->bogus ? "DNSSEC bogus" : mw_dns_status_name(s),
                 a != NULL && a->why ? ": " : "", a != NULL && a->why ? a->why : "");
        ok = false;
    } else if (s == MW_DNS_OK) {
        for (size_t i = 0; i < a->nrr; i++) {
            if (a->rr[i].type != MW_DNS_T_TXT || !mw_dns_rr_txt(&a->rr[i], &txt))
                continue;
            if (!mw_dmarc_record_is_dmarc(txt.data, txt.len))
                continue;
            if (ndmarc++ == 0) {
                mw_buf_reset(&one);
                mw_buf_append(&one, txt.data, txt.len);
            }
        }
        st->ndmarc = ndmarc;
        if (ndmarc == 1) {
            st->have = true;
            st->usable = mw_dmarc_record_parse(one.data, one.len, c->d->mode, &st->rec, st->why,
                                               sizeof st->why);
        } else if (ndmarc > 1) {
            snprintf(st->why, sizeof st->why, "%zu DMARC records at %s: all discarded", ndmarc,
                     mw_buf_cstr(&q));
        }
    }
    mw_dns_answer_free(&a);
    mw_buf_free(&q);
    mw_buf_free(&txt);
    mw_buf_free(&one);
    return ok;
}

static void walk_free(walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->step[i].domain);
        mw_dmarc_record_clear(&w->step[i].rec);
    }
    memset(w, 0, sizeof *w);
}

/* RFC 9989 §4.10 DNS Tree Walk from name (normalized).  w->tempfail on DNS trouble. */
static void tree_walk(ectx *c, const char *name, walk *w)
{
    const char *cur = name;

    memset(w, 0, sizeof *w);
    w->stop = -1;
    while (w->n < WALK_MAX) {
        wstep *st = &w->step[w->n];
        bool ok = lookup(c, cur, st, w->tempwhy, sizeof w->tempwhy);
        w->n++;
        if (!ok) {
            w->tempfail = true;
            return;
        }
        if (st->have && (st->rec.psd == 'n' || (w->n > 1 && st->rec.psd == 'y'))) {
            w->stop = (int)w->n - 1;
            return;
        }
        size_t labels = st->labels;
        if (labels <= 1)
            return;
        /* The shortcut applies once, after the first query: a name of more
         * than 7 labels jumps to its 7-label suffix (at most 8 queries). */
        cur = suffix_labels(name, (w->n == 1 && labels > WALK_SHORTCUT) ? WALK_SHORTCUT
                                                                        : labels - 1);
    }
}

/* Organizational Domain from a finished walk (name = where it started). */
static const char *walk_org(const walk *w, const char *name)
{
    const wstep *best = NULL;

    if (w->stop >= 0) {
        const wstep *st = &w->step[w->stop];
        if (st->rec.psd == 'n')
            return st->domain;
        return suffix_labels(name, st->labels + 1);
    }
    for (size_t i = 0; i < w->n; i++)
        if (w->step[i].have && (best == NULL || w->step[i].labels < best->labels))
            best = &w->step[i];
    return best != NULL ? best->domain : name;
}

/* Organizational Domain of name (normalized), cached per evaluation.  NULL
 * with *tempfail on DNS trouble. */
static const char *org_of(ectx *c, const char *name, bool *tempfail)
{
    walk w;
    char *org;

    *tempfail = false;
    for (size_t i = 0; i < c->norg; i++) {
        if (strcmp(c->org[i].name, name) == 0) {
            *tempfail = c->org[i].tempfail;
            return c->org[i].org;
        }
    }
    if (c->d->mode == MW_DMARC_MODE_RFC7489) {
        org = mw_psl_org_domain(c->d->psl, name);
    } else {
        tree_walk(c, name, &w);
        *tempfail = w.tempfail;
        org = w.tempfail ? NULL : mw_strdup(walk_org(&w, name));
        walk_free(&w);
    }
    if (c->norg < ORG_CACHE) {
        c->org[c->norg].name = mw_strdup(name);
        c->org[c->norg].org = org;
        c->org[c->norg].tempfail = *tempfail;
        c->norg++;
        return org;
    }
    /* Cache full (more than 8 distinct names in one message): leak-free
     * fallback, the caller copies before the next call. */
    free(c->org[ORG_CACHE - 1].name);
    free(c->org[ORG_CACHE - 1].org);
    c->org[ORG_CACHE - 1].name = mw_strdup(name);
    c->org[ORG_CACHE - 1].org = org;
    c->org[ORG_CACHE - 1].tempfail = *tempfail;
    return org;
}

static void ectx_free(ectx *c)
{
    for (size_t i = 0; i < c->norg; i++) {
        free(c->org[i].name);
        free(c->org[i].org);
    }
    c->norg = 0;
}

char *mw_dmarc_org_domain(mw_dmarc *d, const char *name)
{
    ectx c = {.d = d};
    char *n = norm_domain(name), *out = NULL;
    bool tf;

    if (n == NULL)
        return NULL;
    const char *org = org_of(&c, n, &tf);
    out = org != NULL ? mw_strdup(org) : NULL;
    ectx_free(&c);
    free(n);
    return out;
}

/* Does the From domain exist?  RFC 9989 defines non-existence by reference to
 * RFC 8020: only an NXDOMAIN answer says a name does not exist.  NODATA (a name
 * with other records only, an empty non-terminal) means it exists.  One A query
 * answers that; AAAA and MX are asked only when it failed.  *unknown on DNS
 * trouble for all three (then we say it exists). */
static bool domain_exists(ectx *c, const char *name, bool *unknown)
{
    static const uint16_t types[] = {MW_DNS_T_A, MW_DNS_T_AAAA, MW_DNS_T_MX};

    *unknown = false;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        mw_dns_answer *a = NULL;
        mw_dns_status s = mw_dns_query(c->d->dns, name, types[i], c->d->timeout_ms, &a);
        c->queries++;
        mw_dns_answer_free(&a);
        if (s == MW_DNS_OK || s == MW_DNS_NODATA)
            return true;
        if (s == MW_DNS_NXDOMAIN)
            return false;
    }
    *unknown = true;
    return true;
}

/* ---- alignment ------------------------------------------------------------------------ */

typedef enum { AL_NO = 0, AL_YES, AL_UNKNOWN } align_t;

static align_t aligned(ectx *c, const char *ident, const char *from, const char *from_org,
                       char mode)
{
    char *n = norm_domain(ident);
    align_t r = AL_NO;
    bool tf;

    if (n == NULL)
        return AL_NO;
    if (strcmp(n, from) == 0) {
        r = AL_YES;
    } else if (mode == 'r' && from_org == NULL) {
        r = AL_UNKNOWN;   /* the From's org domain could not be found */
    } else if (mode == 'r' && at_or_below(n, from_org)) {
        /* Only a name at or below the From's Organizational Domain can have
         * the same one; anything else needs no lookups. */
        const char *org = org_of(c, n, &tf);
        if (tf)
            r = AL_UNKNOWN;
        else if (org != NULL && strcmp(org, from_org) == 0)
            r = AL_YES;
    }
    free(n);
    return r;
}

/* ---- evaluation ------------------------------------------------------------------------- */

static mw_dmarc_policy lower(mw_dmarc_policy p)
{
    return p == MW_DMARC_P_REJECT ? MW_DMARC_P_QUARANTINE
         : p == MW_DMARC_P_QUARANTINE ? MW_DMARC_P_NONE : p;
}

void mw_dmarc_outcome_clear(mw_dmarc_outcome *o)
{
    if (o == NULL)
        return;
    mw_dmarc_record_clear(&o->record);
    free(o->from_domain);
    free(o->policy_domain);
    free(o->org_domain);
    free(o->dkim_aligned_domain);
    free(o->reason);
    memset(o, 0, sizeof *o);
}

/* Discovery in RFC 7489 mode: fills w with the steps (0: From, 1: org). */
static void discover_7489(ectx *c, const char *from, walk *w, const char **policy_step_org)
{
    char *org = mw_psl_org_domain(c->d->psl, from);

    memset(w, 0, sizeof *w);
    w->stop = -1;
    *policy_step_org = NULL;
    w->n = 1;
    if (!lookup(c, from, &w->step[0], w->tempwhy, sizeof w->tempwhy)) {
        w->tempfail = true;
    } else if (w->step[0].ndmarc == 0 && strcmp(org, from) != 0) {
        /* Empty set (not "several records", which ends discovery): the org domain. */
        w->n = 2;
        if (!lookup(c, org, &w->step[1], w->tempwhy, sizeof w->tempwhy))
            w->tempfail = true;
    }
    /* The org domain goes into the (empty) cache, which owns it. */
    c->org[0].name = mw_strdup(from);
    c->org[0].org = org;
    c->org[0].tempfail = false;
    c->norg = 1;
    *policy_step_org = org;
}

void mw_dmarc_evaluate(mw_dmarc *d, const mw_dmarc_input *in, mw_dmarc_outcome *out)
{
    ectx c = {.d = d};
    mw_buf why = MW_BUF_INIT;
    walk w;
    wstep *pol = NULL;
    const char *org = NULL;
    char *from;

    memset(out, 0, sizeof *out);
    memset(&w, 0, sizeof w);
    out->from_exists = true;
    out->discovery = d->mode == MW_DMARC_MODE_RFC7489 ? "psl" : "treewalk";

    from = norm_domain(in->from_domain);
    if (from == NULL) {
        out->result = MW_DMARC_PERMERROR;
        mw_buf_puts(&why, "no usable header From domain");
        if (in->from_domain != NULL) {
            mw_buf_puts(&why, ": ");
            mw_str_printable(&why, in->from_domain, strlen(in->from_domain), 80);
        }
        goto done;
    }
    out->from_domain = mw_strdup(from);

    /* 1. Policy discovery and the Organizational Domain. */
    if (d->mode == MW_DMARC_MODE_RFC7489) {
        discover_7489(&c, from, &w, &org);
        if (!w.tempfail) {
            if (w.step[0].have)
                pol = &w.step[0];
            else if (w.n > 1 && w.step[1].have)
                pol = &w.step[1];
        }
    } else {
        tree_walk(&c, from, &w);
        /* A DNS failure above a From domain that has its own record leaves
         * the policy known and only the org domain unknown: relaxed
         * alignment of other names is then undecided (see aligned()). */
        if (w.step[0].have)
            pol = &w.step[0];
        if (!w.tempfail) {
            org = walk_org(&w, from);
            if (pol == NULL) {
                for (size_t i = 1; i < w.n && pol == NULL; i++)
                    if (w.step[i].have && strcmp(w.step[i].domain, org) == 0)
                        pol = &w.step[i];
                if (pol == NULL && w.stop >= 0 && w.step[w.stop].rec.psd == 'y')
                    pol = &w.step[w.stop];
            }
        }
    }
    if (w.tempfail && pol == NULL) {
        out->result = MW_DMARC_TEMPERROR;
        mw_buf_printf(&why, "policy discovery for %s failed: %s", from, w.tempwhy);
        goto done;
    }
    out->org_domain = org != NULL ? mw_strdup(org) : NULL;
    if (pol == NULL) {
        out->result = MW_DMARC_NONE;
        mw_buf_printf(&why, "no DMARC record for %s (%s, %u queries", from, out->discovery,
                      c.queries);
        for (size_t i = 0; i < w.n; i++)
            if (w.step[i].why[0] != '\0')
                mw_buf_printf(&why, "; %s", w.step[i].why);
        mw_buf_puts(&why, ")");
        goto done;
    }
    out->policy_domain = mw_strdup(pol->domain);
    if (!pol->usable) {
        out->result = MW_DMARC_NONE;
        mw_buf_printf(&why, "record at _dmarc.%s not applied: %s", pol->domain, pol->why);
        goto done;
    }
    out->record = pol->rec;                      /* move: the walk no longer owns it */
    memset(&pol->rec, 0, sizeof pol->rec);
    const mw_dmarc_record *r = &out->record;
    mw_buf_printf(&why, "policy _dmarc.%s (%s, %u queries", out->policy_domain, out->discovery,
                  c.queries);
    if (pol->why[0] != '\0')
        mw_buf_printf(&why, "; %s", pol->why);
    if (w.tempfail)
        mw_buf_printf(&why, "), org domain unknown: %s; ", w.tempwhy);
    else
        mw_buf_printf(&why, "), org domain %s; ", out->org_domain);

    /* 2. Alignment. */
    bool unknown = false;
    for (size_t i = 0; i < in->ndkim; i++) {
        const mw_dkim_sig *s = &in->dkim[i];
        if (s->domain == NULL || (s->result != MW_DKIM_PASS && s->result != MW_DKIM_TEMPERROR))
            continue;
        align_t a = aligned(&c, s->domain, from, org, r->adkim);
        if (s->result == MW_DKIM_TEMPERROR) {
            if (a != AL_NO)
                out->auth_temperror = true;
            continue;
        }
        mw_buf_printf(&why, "dkim d=");
        mw_str_printable(&why, s->domain, strlen(s->domain), 80);
        mw_buf_printf(&why, " pass %s; ", a == AL_YES ? "aligned" : a == AL_UNKNOWN
                                          ? "alignment unknown (DNS)" : "not aligned");
        if (a == AL_UNKNOWN)
            unknown = true;
        if (a == AL_YES && !out->dkim_aligned) {
            out->dkim_aligned = true;
            out->dkim_aligned_domain = norm_domain(s->domain);
        }
    }
    if (in->spf_done && in->spf_domain != NULL && *in->spf_domain &&
        (in->spf_result == MW_SPF_PASS || in->spf_result == MW_SPF_TEMPERROR)) {
        align_t a = aligned(&c, in->spf_domain, from, org, r->aspf);
        if (in->spf_result == MW_SPF_TEMPERROR) {
            out->auth_temperror = a != AL_NO;
        } else {
            mw_buf_puts(&why, "spf ");
            mw_str_printable(&why, in->spf_domain, strlen(in->spf_domain), 80);
            mw_buf_printf(&why, " pass %s; ", a == AL_YES ? "aligned" : a == AL_UNKNOWN
                                              ? "alignment unknown (DNS)" : "not aligned");
            out->spf_aligned = a == AL_YES;
            if (a == AL_UNKNOWN)
                unknown = true;
        }
    }
    if (out->dkim_aligned || out->spf_aligned)
        out->result = MW_DMARC_PASS;
    else if (unknown || out->auth_temperror)
        out->result = MW_DMARC_TEMPERROR;
    else
        out->result = MW_DMARC_FAIL;

    /* 3. The applicable policy. */
    bool own = strcmp(out->policy_domain, from) == 0;
    if (own) {
        out->policy = r->p;
        out->policy_source = "p";
    } else {
        bool nx = false, unk = false;
        if ((out->result == MW_DMARC_FAIL || out->result == MW_DMARC_TEMPERROR) && r->np != MW_DMARC_P_UNSPEC) {
            nx = !domain_exists(&c, from, &unk);
            out->from_exists = !nx;
            if (unk)
                mw_buf_printf(&why, "existence of %s unknown (DNS): treated as existing; ", from);
        }
        if (nx && r->np != MW_DMARC_P_UNSPEC) {
            out->policy = r->np;
            out->policy_source = "np";
        } else if (r->sp != MW_DMARC_P_UNSPEC) {
            out->policy = r->sp;
            out->policy_source = "sp";
        } else {
            out->policy = r->p;
            out->policy_source = "p";
        }
    }

    /* 4. Disposition. */
    if (out->result == MW_DMARC_PASS) {
        out->disposition = MW_DMARC_P_NONE;
    } else if (out->result == MW_DMARC_FAIL) {
        out->disposition = out->policy;
        if (d->mode == MW_DMARC_MODE_RFC9989 && r->t) {
            out->disposition = lower(out->policy);
            out->testing = out->disposition != out->policy;
        }
        if (d->mode == MW_DMARC_MODE_RFC7489 && r->pct < 100 &&
            (int)(in->pct_sample % 100u) >= r->pct) {
            out->disposition = lower(out->policy);
            out->sampled_out = true;
        }
    }
    mw_buf_printf(&why, "dmarc=%s; %s=%s", mw_dmarc_result_name(out->result), out->policy_source,
                  mw_dmarc_policy_name(out->policy));
    if (out->result == MW_DMARC_FAIL) {
        mw_buf_printf(&why, ", disposition %s", mw_dmarc_policy_name(out->disposition));
        if (r->t)
            mw_buf_puts(&why, r->pct_testing ? " (pct=0 without t: read as t=y, testing)" : " (t=y: testing)");
        if (out->sampled_out)
            mw_buf_printf(&why, " (pct=%d: not sampled)", r->pct);
        if (!out->from_exists)
            mw_buf_printf(&why, " (%s does not exist)", from);
    }
    if (out->result == MW_DMARC_TEMPERROR && out->auth_temperror)
        mw_buf_puts(&why, " (an aligned identifier had a temporary error and nothing else passed: "
                          "a retry may pass)");

done:
    out->queries = c.queries;
    out->reason = mw_buf_steal(&why);
    if (out->reason == NULL)
        out->reason = mw_strdup("");
    walk_free(&w);
    ectx_free(&c);
    free(from);
}

bool mw_dmarc_domain_enforcing(mw_dmarc *d, const char *domain, bool *temperror)
{
    mw_dmarc_input in;
    mw_dmarc_outcome o;
    bool enforcing;

    memset(&in, 0, sizeof in);
    in.from_domain = domain;
    mw_dmarc_evaluate(d, &in, &o);   /* no identifiers: fail whenever a record applies */
    if (temperror != NULL)
        *temperror = o.result == MW_DMARC_TEMPERROR;
    enforcing = o.result == MW_DMARC_FAIL &&
                (o.policy == MW_DMARC_P_QUARANTINE || o.policy == MW_DMARC_P_REJECT);
    mw_dmarc_outcome_clear(&o);
    return enforcing;
}
