/*
 * arc.c - ARC chain verification (RFC 8617 §5.2) and the per-message
 * context shared with the sealer (arc_sign.c).
 *
 * Flow
 *   header: every field is kept (spans into one buffer) until the end of
 *           headers, ARC fields also in a buffer of their own (the sealer's
 *           AS covers them); the sealer keeps the fields its AMS covers.
 *   eoh:    the sets are collected and checked (instances 1..N, one field
 *           of each kind per instance, N <= 50, cv= rules); every hash
 *           over header fields is computed here, once: the newest AMS's
 *           (and, for oldest-pass, the older ones'), and the AS digests
 *           with one running SHA-256 over the sets in order (set k's AS
 *           digest is a copy of it finished with AS k, b= emptied), so all
 *           seals together cost one pass.  h= names are looked up in a
 *           sorted index of the header names, so a long h= costs
 *           O(|h| log n).  Then the header section is freed.
 *   body:   canonicalized and hashed on the fly, once per body
 *           canonicalization in use (at most two: simple, relaxed).
 *   end:    body hashes compared, keys fetched (one lookup per distinct
 *           selector/domain/type in a message, under a per-message
 *           deadline), signatures checked: newest AMS, every AS, then
 *           older AMSs from N-1 down until one fails (oldest-pass).
 *
 * Limits (all fail the chain, with the limit in the reason)
 *   50 instances (RFC 8617), 150 ARC fields, 10000 header fields or 4 MiB
 *   of header section held for verification.  An AMS with l= fails (ARC
 *   signs the whole body).  RSA keys under min_key_bits (1024) fail;
 *   rsa-sha1 fails (RFC 8301).
 *
 * Diagnostics: the status reason names the instance and the field
 *   ("ARC-Seal i=2: signature did not verify"); nothing is logged per
 *   message except at debug level.
 *
 * See also: arc.h, arc_sign.c, dkim_tags.c (tag lists, keys, signature
 * checks), dkim_canon.c (canonicalization), RFC 8617, RFC 6376 §3.7.
 */
#include "arc_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "dkim_tags.h"
#include "log.h"
#include "strutil.h"

#define DEFAULT_DEADLINE_MS 15000
#define HDR_MAX_FIELDS 10000
#define HDR_MAX_BYTES (4u << 20)

struct mw_arc_verifier {
    mw_dns               *dns;
    mw_arc_verify_options o;
};

/* A parsed AMS or AS of one instance (header digest computed at eoh). */
struct sig {
    bool          ok;                 /* parsed, digest computed */
    char         *why;                /* why not ok */
    bool          ed25519;
    mw_dkim_canon bc;                 /* AMS: body canonicalization */
    char         *d, *s;
    mw_buf        b, bh;              /* decoded b= (and bh= for AMS) */
    unsigned char digest[MW_DKIM_SHA256_LEN];
};

struct keyent {
    char             *s, *d;
    bool              ed25519;
    mw_dkim_keystatus st;
    mw_dkim_pubkey    k;
    char             *why;
};

struct arc_verify {
    bool            decided;          /* status known at eoh (none / structural fail) */
    mw_arc_status   st;
    unsigned        n;
    struct sig      ams[MW_ARC_MAX_INSTANCES + 1], as[MW_ARC_MAX_INSTANCES + 1];
    struct keyent  *keys;
    size_t          nkeys;
    struct timespec t0;
    bool            started;
};

static const char *const kind_name[] = {"ARC-Authentication-Results", "ARC-Message-Signature",
                                        "ARC-Seal"};

const char *mw_arc_result_name(mw_arc_result r)
{
    return r == MW_ARC_PASS ? "pass" : r == MW_ARC_FAIL ? "fail" : "none";
}

mw_arc_verifier *mw_arc_verifier_create(mw_dns *dns, const mw_arc_verify_options *o)
{
    mw_arc_verifier *v = mw_calloc(1, sizeof *v);

    v->dns = dns;
    if (o != NULL)
        v->o = *o;
    if (v->o.min_key_bits == 0)
        v->o.min_key_bits = 1024;
    if (v->o.deadline_ms == 0)
        v->o.deadline_ms = DEFAULT_DEADLINE_MS;
    return v;
}

void mw_arc_verifier_destroy(mw_arc_verifier **v)
{
    if (v != NULL)
        MW_FREE(v);
}

void mw_arc_status_clear(mw_arc_status *st)
{
    if (st == NULL)
        return;
    free(st->reason);
    free(st->sealer);
    free(st->selector);
    free(st->aar);
    if (st->aar_parsed != NULL) {
        mw_authres_parsed_clear(st->aar_parsed);
        free(st->aar_parsed);
    }
    memset(st, 0, sizeof *st);
}

void mw_arc_set_clear(mw_arc_set *set)
{
    if (set == NULL)
        return;
    free(set->aar);
    free(set->ams);
    free(set->as);
    memset(set, 0, sizeof *set);
}

static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strf(const char *fmt, ...)
{
    mw_buf b = MW_BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    mw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return mw_buf_steal(&b);
}

/* Decide the outcome (first reason wins). */
static void decide(struct arc_verify *vs, mw_arc_result r, char *reason)
{
    if (vs->decided) {
        free(reason);
        return;
    }
    vs->decided = true;
    vs->st.result = r;
    vs->st.reason = reason;
}

/* ---- the message: headers ------------------------------------------------------------ */

mw_arc_msg *mw_arc_msg_begin(mw_arc_verifier *verifier, const mw_dkim_signer *signer, size_t key,
                             const char *id)
{
    mw_arc_msg *m = mw_calloc(1, sizeof *m);

    m->v = verifier;
    m->id = mw_strdup(id != NULL ? id : "-");
    if (signer != NULL && key < signer->nkeys && signer->sha256 != NULL) {
        m->signer = signer;
        m->key = key;
        m->want[MW_DKIM_CANON_RELAXED] = true;   /* the AMS we make: relaxed/relaxed */
    } else if (signer != NULL) {
        mw_warn("%s: arc: no sealing key #%zu", m->id, key);
    }
    return m;
}

static int arc_kind_of(const char *name, size_t nlen)
{
    for (int k = 0; k < 3; k++)
        if (mw_str_ieq(name, nlen, kind_name[k], strlen(kind_name[k])))
            return k;
    return -1;
}

void mw_arc_msg_header(mw_arc_msg *m, const char *name, const char *value, size_t vlen)
{
    size_t nlen = strlen(name);
    int kind;

    if (m == NULL || m->eoh)
        return;
    while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
        nlen--;
    if (m->v != NULL && !m->hoverflow) {
        if (m->nhdr >= HDR_MAX_FIELDS || m->htext.len + nlen + vlen > HDR_MAX_BYTES) {
            m->hoverflow = true;
        } else {
            m->hdr = mw_reallocarray(m->hdr, m->nhdr + 1, sizeof *m->hdr);
            m->hdr[m->nhdr].noff = m->htext.len;
            m->hdr[m->nhdr].nlen = nlen;
            mw_buf_append(&m->htext, name, nlen);
            m->hdr[m->nhdr].voff = m->htext.len;
            m->hdr[m->nhdr].vlen = vlen;
            mw_buf_append(&m->htext, value, vlen);
            m->nhdr++;
        }
    }
    kind = arc_kind_of(name, nlen);
    if (kind >= 0 && m->narc_seen++ < ARC_MAX_FIELDS) {
        struct arc_field *f = &m->arc[m->narc];
        f->noff = m->atext.len;
        f->nlen = nlen;
        mw_buf_append(&m->atext, name, nlen);
        f->voff = m->atext.len;
        f->vlen = vlen;
        mw_buf_append(&m->atext, value, vlen);
        m->akind[m->narc++] = (enum arc_kind)kind;
    }
    if (m->signer != NULL)
        mw_arc_seal_header(m, name, nlen, value, vlen);
}

/* ---- collection and structure (eoh) ---------------------------------------------------- */

static const char *aval(const mw_arc_msg *m, size_t k)
{
    return m->atext.data + m->arc[k].voff;
}

/* "1".."50" exactly (no sign, no leading zero); 0 otherwise, >50 as 51. */
static unsigned instance_value(const char *v, size_t n)
{
    unsigned i = 0;

    if (n == 0 || n > 6 || v[0] == '0')
        return 0;
    for (size_t k = 0; k < n; k++) {
        if (v[k] < '0' || v[k] > '9')
            return 0;
        i = i * 10 + (unsigned)(v[k] - '0');
    }
    return i > MW_ARC_MAX_INSTANCES ? MW_ARC_MAX_INSTANCES + 1 : i;
}

static bool cfws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* AAR: [FWS] "i" [FWS] "=" [FWS] 1*DIGIT [FWS] ";" ...; *rest: the offset after ';'. */
static unsigned aar_instance(const char *v, size_t n, size_t *rest, char *why, size_t whylen)
{
    size_t i = 0, ds;

    while (i < n && cfws(v[i]))
        i++;
    if (i >= n || v[i] != 'i') {
        snprintf(why, whylen, "does not start with i=");
        return 0;
    }
    for (i++; i < n && cfws(v[i]); i++)
        ;
    if (i >= n || v[i] != '=') {
        snprintf(why, whylen, "does not start with i=");
        return 0;
    }
    for (i++; i < n && cfws(v[i]); i++)
        ;
    for (ds = i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
        ;
    unsigned inst = instance_value(v + ds, i - ds);
    while (i < n && cfws(v[i]))
        i++;
    if (inst == 0 || i >= n || v[i] != ';') {
        snprintf(why, whylen, inst == 0 ? "invalid i= value" : "no \";\" after i=");
        return 0;
    }
    *rest = i + 1;
    return inst;
}

/* The instance of ARC field k (0 with a reason when it has none). */
static unsigned field_instance(const mw_arc_msg *m, size_t k, char *why, size_t whylen)
{
    mw_dkim_tags tl;
    const mw_dkim_tag *t;
    size_t rest;

    if (m->akind[k] == ARC_AAR)
        return aar_instance(aval(m, k), m->arc[k].vlen, &rest, why, whylen);
    if (!mw_dkim_tags_parse(aval(m, k), m->arc[k].vlen, &tl, why, whylen))
        return 0;
    if ((t = mw_dkim_tags_get(&tl, "i")) == NULL) {
        snprintf(why, whylen, "no i= tag");
        return 0;
    }
    unsigned i = instance_value(t->val, t->vlen);
    if (i == 0)
        snprintf(why, whylen, "invalid i= value");
    return i;
}

/* Structure: instances 1..N, one of each kind, N <= 50.  false: decided fail. */
static bool collect(mw_arc_msg *m, struct arc_verify *vs)
{
    char why[160];
    unsigned max = 0;

    if (m->narc_seen > ARC_MAX_FIELDS) {
        decide(vs, MW_ARC_FAIL, strf("%zu ARC header fields (more than %d sets' worth)",
                                     m->narc_seen, ARC_MAX_FIELDS));
    }
    for (size_t k = 0; k < m->narc; k++) {
        enum arc_kind kind = m->akind[k];
        unsigned i = field_instance(m, k, why, sizeof why);
        if (i == 0) {
            decide(vs, MW_ARC_FAIL, strf("%s field %zu: %s", kind_name[kind], k + 1, why));
            continue;
        }
        if (i > MW_ARC_MAX_INSTANCES) {
            decide(vs, MW_ARC_FAIL, strf("%s: instance above the limit of %d sets (RFC 8617)",
                                         kind_name[kind], MW_ARC_MAX_INSTANCES));
            continue;
        }
        if (m->set[i][kind] != 0) {
            decide(vs, MW_ARC_FAIL, strf("two %s fields with i=%u", kind_name[kind], i));
            continue;
        }
        m->set[i][kind] = k + 1;           /* 0: absent */
        max = i > max ? i : max;
    }
    vs->n = vs->st.instances = max;
    for (unsigned i = 1; i <= max; i++)
        for (int kind = 0; kind < 3; kind++)
            if (m->set[i][kind] == 0)
                decide(vs, MW_ARC_FAIL, strf("instance %u has no %s", i, kind_name[kind]));
    if (max == 0)
        decide(vs, MW_ARC_FAIL, strf("no ARC set has a usable instance"));
    if (m->hoverflow)
        decide(vs, MW_ARC_FAIL, strf("header section too large to verify (over %d fields or "
                                     "%u bytes)", HDR_MAX_FIELDS, HDR_MAX_BYTES));
    return !vs->decided;
}

/* cv= of every seal (RFC 8617 §5.2 step 3); false: decided fail. */
static bool check_cv(mw_arc_msg *m, struct arc_verify *vs)
{
    for (unsigned i = vs->n; i >= 1; i--) {
        size_t k = m->set[i][ARC_AS] - 1;
        mw_dkim_tags tl;
        char why[128];
        if (!mw_dkim_tags_parse(aval(m, k), m->arc[k].vlen, &tl, why, sizeof why)) {
            decide(vs, MW_ARC_FAIL, strf("ARC-Seal i=%u: %s", i, why));
            return false;
        }
        const mw_dkim_tag *cv = mw_dkim_tags_get(&tl, "cv");
        bool none = cv && mw_str_ieq(cv->val, cv->vlen, "none", 4);
        bool pass = cv && mw_str_ieq(cv->val, cv->vlen, "pass", 4);
        bool fail = cv && mw_str_ieq(cv->val, cv->vlen, "fail", 4);
        if (fail) {
            vs->st.terminated = i == vs->n;
            decide(vs, MW_ARC_FAIL, strf("ARC-Seal i=%u says cv=fail", i));
        } else if (!none && !pass) {
            decide(vs, MW_ARC_FAIL, strf("ARC-Seal i=%u: %s cv=", i, cv ? "invalid" : "no"));
        } else if (i == 1 && !none) {
            decide(vs, MW_ARC_FAIL, strf("ARC-Seal i=1: cv=pass (must be none)"));
        } else if (i > 1 && !pass) {
            decide(vs, MW_ARC_FAIL, strf("ARC-Seal i=%u: cv=none (must be pass)", i));
        }
        if (vs->decided)
            return false;
    }
    return true;
}

/* ---- signatures: tags, digests ------------------------------------------------------- */

/* a=, b=, d=, s=, t= common to AMS and AS; false with why. */
static bool sig_common(const mw_dkim_tags *tl, struct sig *s, char *why, size_t whylen)
{
    const mw_dkim_tag *a = mw_dkim_tags_get(tl, "a"), *b = mw_dkim_tags_get(tl, "b"),
                      *t = mw_dkim_tags_get(tl, "t");

    if (a == NULL || b == NULL || mw_dkim_tags_get(tl, "d") == NULL ||
        mw_dkim_tags_get(tl, "s") == NULL) {
        snprintf(why, whylen, "missing tag (%s)", a == NULL ? "a=" : b == NULL ? "b="
                                                  : mw_dkim_tags_get(tl, "d") == NULL ? "d=" : "s=");
        return false;
    }
    if (mw_str_ieq(a->val, a->vlen, "ed25519-sha256", 14)) {
        s->ed25519 = true;
    } else if (!mw_str_ieq(a->val, a->vlen, "rsa-sha256", 10)) {
        snprintf(why, whylen, "%s algorithm a=%.*s", mw_str_ieq(a->val, a->vlen, "rsa-sha1", 8)
                 ? "refused (RFC 8301)" : "unknown", (int)(a->vlen < 32 ? a->vlen : 32), a->val);
        return false;
    }
    if (t != NULL) {
        bool digits = t->vlen > 0 && t->vlen <= 12;
        for (size_t i = 0; digits && i < t->vlen; i++)
            digits = t->val[i] >= '0' && t->val[i] <= '9';
        if (!digits) {
            snprintf(why, whylen, "invalid t= value");
            return false;
        }
    }
    s->d = mw_dkim_tag_dup(tl, "d");
    s->s = mw_dkim_tag_dup(tl, "s");
    mw_str_lower(s->d);
    if (!mw_domain_valid(s->d) || s->s[0] == '\0' || strlen(s->s) > 63 * 4) {
        snprintf(why, whylen, "invalid %s", s->s[0] == '\0' || strlen(s->s) > 63 * 4 ? "s=" : "d=");
        return false;
    }
    if (!mw_dkim_b64_decode(b->val, b->vlen, &s->b)) {
        snprintf(why, whylen, "b= is not base64");
        return false;
    }
    return true;
}

/* The value of field k with the b= value removed (RFC 6376 §3.7) into out. */
static void strip_b(const mw_arc_msg *m, size_t k, const mw_dkim_tags *tl, mw_buf *out)
{
    const mw_dkim_tag *b = mw_dkim_tags_get(tl, "b");
    const char *v = aval(m, k);

    mw_buf_reset(out);
    mw_buf_append(out, v, b->after_eq);
    mw_buf_append(out, v + b->spec_end, m->arc[k].vlen - b->spec_end);
}

/* Header names, lower case, sorted: the h= lookup index. */
struct hname {
    char  *lname;
    size_t len, idx;
};

static int hname_cmp(const void *a, const void *b)
{
    const struct hname *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->lname, y->lname, n);

    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

struct hindex {
    struct hname *e;
    size_t        n;
    mw_buf        names;
    size_t       *used;      /* per entry group start: instances used (per AMS) */
};

static void hindex_build(const mw_arc_msg *m, struct hindex *hx)
{
    hx->n = m->nhdr;
    hx->e = mw_calloc(hx->n + 1, sizeof *hx->e);
    hx->used = mw_calloc(hx->n + 1, sizeof *hx->used);
    mw_buf_reserve(&hx->names, m->htext.len - 0 + 1);
    for (size_t i = 0; i < m->nhdr; i++) {
        hx->e[i].idx = i;
        hx->e[i].len = m->hdr[i].nlen;
    }
    /* copy names lower-cased (pointers after all appends: one reservation above
     * holds them, names never exceed the text) */
    for (size_t i = 0; i < m->nhdr; i++) {
        size_t off = hx->names.len;
        mw_buf_append(&hx->names, m->htext.data + m->hdr[i].noff, m->hdr[i].nlen);
        hx->e[i].lname = (char *)(uintptr_t)off;
    }
    mw_str_lower(hx->names.data != NULL ? hx->names.data : (char *)"");
    for (size_t i = 0; i < m->nhdr; i++)
        hx->e[i].lname = hx->names.data + (uintptr_t)hx->e[i].lname;
    qsort(hx->e, hx->n, sizeof *hx->e, hname_cmp);
}

static void hindex_free(struct hindex *hx)
{
    free(hx->e);
    free(hx->used);
    mw_buf_free(&hx->names);
}

/* First entry of the group called name (lower case), or SIZE_MAX. */
static size_t hindex_find(const struct hindex *hx, const char *name, size_t len)
{
    size_t lo = 0, hi = hx->n;
    struct hname key = {.lname = (char *)name, .len = len, .idx = 0};

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hname_cmp(&hx->e[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < hx->n && hx->e[lo].len == len && memcmp(hx->e[lo].lname, name, len) == 0
           ? lo : SIZE_MAX;
}

/* The header digest of AMS field k (tags tl): h= fields bottom-up, then the
 * AMS itself with b= empty.  false with why. */
static bool ams_digest(const mw_arc_msg *m, struct hindex *hx, size_t k, const mw_dkim_tags *tl,
                       mw_dkim_canon hc, unsigned char out[MW_DKIM_SHA256_LEN], char *why,
                       size_t whylen)
{
    const mw_dkim_tag *h = mw_dkim_tags_get(tl, "h");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    mw_buf c = MW_BUF_INIT, name = MW_BUF_INIT;
    size_t *touched = mw_calloc(h->vlen / 2 + 2, sizeof *touched), ntouched = 0;
    unsigned dlen = 0;
    bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

    for (size_t i = 0; ok && i < h->vlen;) {
        while (i < h->vlen && (cfws(h->val[i]) || h->val[i] == ':'))
            i++;
        size_t st = i;
        while (i < h->vlen && !cfws(h->val[i]) && h->val[i] != ':')
            i++;
        if (i == st)
            break;
        mw_buf_reset(&name);
        mw_buf_append(&name, h->val + st, i - st);
        mw_str_lower(name.data);
        if (strcmp(name.data, "arc-seal") == 0) {
            snprintf(why, whylen, "h= includes ARC-Seal");
            ok = false;
            break;
        }
        size_t g = hindex_find(hx, name.data, name.len), cnt = 0;
        if (g == SIZE_MAX)
            continue;                  /* a field that does not exist: nothing hashed */
        while (g + cnt < hx->n && hx->e[g + cnt].len == name.len &&
               memcmp(hx->e[g + cnt].lname, name.data, name.len) == 0)
            cnt++;
        if (hx->used[g] == 0)
            touched[ntouched++] = g;
        if (hx->used[g] >= cnt)
            continue;                  /* all instances used */
        const struct arc_field *f = &m->hdr[hx->e[g + cnt - 1 - hx->used[g]++].idx];
        mw_buf_reset(&c);
        mw_dkim_hcanon(&c, hc, m->htext.data + f->noff, f->nlen, m->htext.data + f->voff, f->vlen,
                       true);
        ok = EVP_DigestUpdate(md, c.data, c.len) == 1;
    }
    for (size_t i = 0; i < ntouched; i++)
        hx->used[touched[i]] = 0;
    if (ok) {
        mw_buf stripped = MW_BUF_INIT;
        strip_b(m, k, tl, &stripped);
        mw_buf_reset(&c);
        mw_dkim_hcanon(&c, hc, m->atext.data + m->arc[k].noff, m->arc[k].nlen, stripped.data,
                       stripped.len, false);
        ok = EVP_DigestUpdate(md, c.data, c.len) == 1 && EVP_DigestFinal_ex(md, out, &dlen) == 1;
        if (!ok)
            snprintf(why, whylen, "cannot hash (OpenSSL)");
        mw_buf_free(&stripped);
    }
    free(touched);
    mw_buf_free(&c);
    mw_buf_free(&name);
    EVP_MD_CTX_free(md);
    return ok;
}

static bool canon_word(const char *w, size_t n, mw_dkim_canon *out)
{
    if (mw_str_ieq(w, n, "simple", 6))
        *out = MW_DKIM_CANON_SIMPLE;
    else if (mw_str_ieq(w, n, "relaxed", 7))
        *out = MW_DKIM_CANON_RELAXED;
    else
        return false;
    return true;
}

/* Parse the AMS of instance i and compute its header digest. */
static void ams_prepare(mw_arc_msg *m, struct arc_verify *vs, struct hindex *hx, unsigned i)
{
    struct sig *s = &vs->ams[i];
    size_t k = m->set[i][ARC_AMS] - 1;
    mw_dkim_tags tl;
    const mw_dkim_tag *c, *bh;
    mw_dkim_canon hc = MW_DKIM_CANON_SIMPLE;
    char why[160];

    s->bc = MW_DKIM_CANON_SIMPLE;
    if (!mw_dkim_tags_parse(aval(m, k), m->arc[k].vlen, &tl, why, sizeof why) ||
        !sig_common(&tl, s, why, sizeof why))
        goto bad;
    if ((bh = mw_dkim_tags_get(&tl, "bh")) == NULL || mw_dkim_tags_get(&tl, "h") == NULL) {
        snprintf(why, sizeof why, "missing tag (%s)", bh == NULL ? "bh=" : "h=");
        goto bad;
    }
    if (!mw_dkim_b64_decode(bh->val, bh->vlen, &s->bh) || s->bh.len != MW_DKIM_SHA256_LEN) {
        snprintf(why, sizeof why, "bh= is not a base64 SHA-256 hash");
        goto bad;
    }
    if (mw_dkim_tags_get(&tl, "l") != NULL) {
        snprintf(why, sizeof why, "l= is not supported (ARC signs the whole body)");
        goto bad;
    }
    if ((c = mw_dkim_tags_get(&tl, "c")) != NULL) {
        const char *slash = memchr(c->val, '/', c->vlen);
        size_t hl = slash != NULL ? (size_t)(slash - c->val) : c->vlen;
        if (!canon_word(c->val, hl, &hc) ||
            (slash != NULL && !canon_word(slash + 1, c->vlen - hl - 1, &s->bc))) {
            snprintf(why, sizeof why, "invalid c= value");
            goto bad;
        }
    }
    if (!ams_digest(m, hx, k, &tl, hc, s->digest, why, sizeof why))
        goto bad;
    s->ok = true;
    m->want[s->bc] = true;
    return;
bad:
    s->why = strf("ARC-Message-Signature i=%u: %s", i, why);
}

/* Parse every AS and compute their digests with one running hash. */
static void as_prepare(mw_arc_msg *m, struct arc_verify *vs)
{
    EVP_MD_CTX *run = EVP_MD_CTX_new(), *one = EVP_MD_CTX_new();
    mw_buf c = MW_BUF_INIT, stripped = MW_BUF_INIT;
    bool ok = run != NULL && one != NULL && EVP_DigestInit_ex(run, EVP_sha256(), NULL) == 1;

    for (unsigned i = 1; ok && i <= vs->n; i++) {
        struct sig *s = &vs->as[i];
        size_t k = m->set[i][ARC_AS] - 1;
        mw_dkim_tags tl;
        char why[160];
        unsigned dlen = 0;

        for (int kind = ARC_AAR; ok && kind <= ARC_AMS; kind++) {
            size_t f = m->set[i][kind] - 1;
            mw_buf_reset(&c);
            mw_dkim_hcanon(&c, MW_DKIM_CANON_RELAXED, m->atext.data + m->arc[f].noff,
                           m->arc[f].nlen, aval(m, f), m->arc[f].vlen, true);
            ok = EVP_DigestUpdate(run, c.data, c.len) == 1;
        }
        if (!mw_dkim_tags_parse(aval(m, k), m->arc[k].vlen, &tl, why, sizeof why) ||
            !sig_common(&tl, s, why, sizeof why)) {
            s->why = strf("ARC-Seal i=%u: %s", i, why);
        } else if (mw_dkim_tags_get(&tl, "h") != NULL) {
            s->why = strf("ARC-Seal i=%u: has an h= tag", i);
        } else {
            strip_b(m, k, &tl, &stripped);
            mw_buf_reset(&c);
            mw_dkim_hcanon(&c, MW_DKIM_CANON_RELAXED, m->atext.data + m->arc[k].noff,
                           m->arc[k].nlen, stripped.data, stripped.len, false);
            s->ok = ok && EVP_MD_CTX_copy_ex(one, run) == 1 &&
                    EVP_DigestUpdate(one, c.data, c.len) == 1 &&
                    EVP_DigestFinal_ex(one, s->digest, &dlen) == 1;
        }
        mw_buf_reset(&c);
        mw_dkim_hcanon(&c, MW_DKIM_CANON_RELAXED, m->atext.data + m->arc[k].noff, m->arc[k].nlen,
                       aval(m, k), m->arc[k].vlen, true);
        ok = ok && EVP_DigestUpdate(run, c.data, c.len) == 1;
    }
    if (!ok)
        decide(vs, MW_ARC_FAIL, strf("cannot hash the ARC sets (OpenSSL)"));
    EVP_MD_CTX_free(run);
    EVP_MD_CTX_free(one);
    mw_buf_free(&c);
    mw_buf_free(&stripped);
}

void mw_arc_msg_eoh(mw_arc_msg *m)
{
    struct arc_verify *vs;

    if (m == NULL || m->eoh)
        return;
    m->eoh = true;
    if (m->v != NULL) {
        vs = m->vs = mw_calloc(1, sizeof *vs);
        if (m->narc_seen == 0)
            decide(vs, MW_ARC_NONE, strf("no ARC sets"));
        else if (collect(m, vs) && check_cv(m, vs)) {
            struct hindex hx = {0};
            hindex_build(m, &hx);
            as_prepare(m, vs);
            for (unsigned i = vs->n; i >= 1; i--) {
                ams_prepare(m, vs, &hx, i);
                if (!vs->ams[i].ok || m->v->o.no_oldest_pass)
                    break;             /* older ones only matter while newer ones are good */
            }
            hindex_free(&hx);
        }
    }
    /* the header section is no longer needed */
    mw_buf_free(&m->htext);
    MW_FREE(&m->hdr);
    m->nhdr = 0;
    for (int c = 0; c < 2; c++)
        if (m->want[c] && !mw_dkim_bodycanon_init(&m->body[c], EVP_sha256(), (mw_dkim_canon)c))
            m->want[c] = false;
}

void mw_arc_msg_body(mw_arc_msg *m, const unsigned char *chunk, size_t len)
{
    if (m == NULL || m->ended)
        return;
    if (!m->eoh)
        mw_arc_msg_eoh(m);
    for (int c = 0; c < 2; c++)
        if (m->want[c])
            mw_dkim_bodycanon_update(&m->body[c], chunk, len);
}

bool mw_arc_body_hash(mw_arc_msg *m, mw_dkim_canon c, unsigned char out[MW_DKIM_SHA256_LEN])
{
    if (!m->want[c])
        return false;
    if (!m->bh_done[c]) {
        m->bh_done[c] = true;
        m->bh_ok[c] = mw_dkim_bodycanon_final(&m->body[c], m->bh[c]);
    }
    if (m->bh_ok[c])
        memcpy(out, m->bh[c], MW_DKIM_SHA256_LEN);
    return m->bh_ok[c];
}

/* ---- end: keys and signatures -------------------------------------------------------- */

static double ms_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1000.0 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The key of signature s (fetched once per message). */
static const struct keyent *key_get(mw_arc_msg *m, const struct sig *s)
{
    struct arc_verify *vs = m->vs;
    const mw_arc_verify_options *o = &m->v->o;
    char why[300];

    for (size_t i = 0; i < vs->nkeys; i++)
        if (vs->keys[i].ed25519 == s->ed25519 && strcasecmp(vs->keys[i].d, s->d) == 0 &&
            strcmp(vs->keys[i].s, s->s) == 0)
            return &vs->keys[i];
    vs->keys = mw_reallocarray(vs->keys, vs->nkeys + 1, sizeof *vs->keys);
    struct keyent *e = &vs->keys[vs->nkeys++];
    *e = (struct keyent){.s = mw_strdup(s->s), .d = mw_strdup(s->d), .ed25519 = s->ed25519};
    if (!vs->started) {
        clock_gettime(CLOCK_MONOTONIC, &vs->t0);
        vs->started = true;
    }
    double spent = ms_since(&vs->t0);
    if (spent >= o->deadline_ms) {
        e->st = MW_DKIM_KEY_TEMP;
        e->why = strf("the message's key-lookup deadline (%u ms) was reached", o->deadline_ms);
        return e;
    }
    unsigned left = o->deadline_ms - (unsigned)spent;
    unsigned timeout = o->timeout_ms == 0 || o->timeout_ms > left ? left : o->timeout_ms;
    why[0] = '\0';
    e->st = mw_dkim_pubkey_fetch(m->v->dns, s->s, s->d, s->ed25519, o->min_key_bits, timeout, &e->k,
                                 why, sizeof why);
    if (e->st != MW_DKIM_KEY_OK) {
        mw_buf p = MW_BUF_INIT;
        mw_str_printable(&p, why, strlen(why), 200);
        e->why = mw_buf_steal(&p);
    }
    return e;
}

/* Check one signature: true if it verifies; else why (and *temp for key TEMP). */
static bool sig_verify(mw_arc_msg *m, const struct sig *s, const char *what, unsigned i,
                       char **why, bool *temp)
{
    const struct keyent *e = key_get(m, s);

    if (e->st != MW_DKIM_KEY_OK) {
        *why = strf("%s i=%u: %s", what, i, e->why);
        *temp = e->st == MW_DKIM_KEY_TEMP;
        return false;
    }
    if (!mw_dkim_sig_check(&e->k, s->digest, (const unsigned char *)s->b.data, s->b.len)) {
        *why = strf("%s i=%u: signature did not verify", what, i);
        return false;
    }
    return true;
}

/* AMS of instance i: body hash and signature. */
static bool ams_verify(mw_arc_msg *m, unsigned i, char **why, bool *temp)
{
    struct sig *s = &m->vs->ams[i];
    unsigned char bh[MW_DKIM_SHA256_LEN];

    if (!s->ok) {
        *why = mw_strdup(s->why != NULL ? s->why : "ARC-Message-Signature not evaluated");
        return false;
    }
    if (!mw_arc_body_hash(m, s->bc, bh)) {
        *why = strf("ARC-Message-Signature i=%u: cannot hash the body", i);
        return false;
    }
    if (memcmp(bh, s->bh.data, sizeof bh) != 0) {
        *why = strf("ARC-Message-Signature i=%u: body hash mismatch", i);
        return false;
    }
    return sig_verify(m, s, "ARC-Message-Signature", i, why, temp);
}

static void pass_details(mw_arc_msg *m, struct arc_verify *vs)
{
    size_t k = m->set[vs->n][ARC_AAR] - 1, rest = 0;
    const char *v = aval(m, k);
    char why[64];
    mw_buf b = MW_BUF_INIT;

    vs->st.sealer = mw_strdup(vs->as[vs->n].d);
    vs->st.selector = mw_strdup(vs->as[vs->n].s);
    (void)aar_instance(v, m->arc[k].vlen, &rest, why, sizeof why);
    /* unfolded, printable: line ends dropped, blanks kept */
    for (size_t i = rest; i < m->arc[k].vlen; i++)
        if (v[i] != '\r' && v[i] != '\n')
            mw_buf_putc(&b, v[i] == '\t' ? ' ' : v[i]);   /* the A-R parser wants SP */
    mw_buf_puts(&b, "");
    vs->st.aar_parsed = mw_calloc(1, sizeof *vs->st.aar_parsed);
    if (!mw_authres_parse(b.data, b.len, vs->st.aar_parsed)) {
        mw_authres_parsed_clear(vs->st.aar_parsed);
        MW_FREE(&vs->st.aar_parsed);
    }
    mw_buf p = MW_BUF_INIT;
    size_t s = 0;
    while (s < b.len && (b.data[s] == ' ' || b.data[s] == '\t'))
        s++;
    mw_str_printable(&p, b.data + s, b.len - s, 4096);
    vs->st.aar = mw_buf_steal(&p);
    mw_buf_free(&b);
}

static void verify_chain(mw_arc_msg *m, struct arc_verify *vs)
{
    char *why = NULL;
    bool temp = false;

    if (!ams_verify(m, vs->n, &why, &temp)) {
        vs->st.temporary = temp;
        decide(vs, MW_ARC_FAIL, why);
        return;
    }
    for (unsigned i = vs->n; i >= 1; i--) {
        if (!vs->as[i].ok) {
            decide(vs, MW_ARC_FAIL, mw_strdup(vs->as[i].why ? vs->as[i].why : "ARC-Seal not evaluated"));
            return;
        }
        if (!sig_verify(m, &vs->as[i], "ARC-Seal", i, &why, &temp)) {
            vs->st.temporary = temp;
            decide(vs, MW_ARC_FAIL, why);
            return;
        }
    }
    vs->st.oldest_pass = vs->n;
    for (unsigned i = vs->n - 1; i >= 1 && !m->v->o.no_oldest_pass; i--) {
        bool t = false;
        if (!ams_verify(m, i, &why, &t)) {
            if (mw_log_debug_enabled())
                mw_debug("%s: arc: oldest-pass stops at %u: %s", m->id, i + 1, why);
            free(why);
            break;
        }
        vs->st.oldest_pass = i;
    }
    pass_details(m, vs);
    decide(vs, MW_ARC_PASS, strf("%u set%s, sealed by %s", vs->n, vs->n == 1 ? "" : "s",
                                 vs->st.sealer));
}

void mw_arc_msg_end(mw_arc_msg *m, mw_arc_status *st)
{
    memset(st, 0, sizeof *st);
    if (m == NULL)
        return;
    if (!m->eoh)
        mw_arc_msg_eoh(m);
    if (m->vs == NULL) {
        st->result = MW_ARC_NONE;
        st->reason = mw_strdup("not verified");
        return;
    }
    if (!m->ended && !m->vs->decided)
        verify_chain(m, m->vs);
    m->ended = true;
    /* hand out a copy: the sealer still reads the message's own */
    struct arc_verify *vs = m->vs;
    *st = vs->st;
    st->reason = mw_strdup(vs->st.reason != NULL ? vs->st.reason : "");
    st->sealer = vs->st.sealer ? mw_strdup(vs->st.sealer) : NULL;
    st->selector = vs->st.selector ? mw_strdup(vs->st.selector) : NULL;
    st->aar = vs->st.aar ? mw_strdup(vs->st.aar) : NULL;
    st->aar_parsed = NULL;
    if (vs->st.aar_parsed != NULL) {
        st->aar_parsed = mw_calloc(1, sizeof *st->aar_parsed);
        if (!mw_authres_parse(vs->st.aar, strlen(vs->st.aar), st->aar_parsed))
            MW_FREE(&st->aar_parsed);
    }
}

static void sig_free(struct sig *s)
{
    free(s->why);
    free(s->d);
    free(s->s);
    mw_buf_free(&s->b);
    mw_buf_free(&s->bh);
}

void mw_arc_msg_free(mw_arc_msg **mp)
{
    mw_arc_msg *m = mp != NULL ? *mp : NULL;

    if (m == NULL)
        return;
    if (m->vs != NULL) {
        struct arc_verify *vs = m->vs;
        for (unsigned i = 0; i <= MW_ARC_MAX_INSTANCES; i++) {
            sig_free(&vs->ams[i]);
            sig_free(&vs->as[i]);
        }
        for (size_t i = 0; i < vs->nkeys; i++) {
            free(vs->keys[i].s);
            free(vs->keys[i].d);
            free(vs->keys[i].why);
            mw_dkim_pubkey_clear(&vs->keys[i].k);
        }
        free(vs->keys);
        mw_arc_status_clear(&vs->st);
        free(vs);
    }
    for (int c = 0; c < 2; c++)
        mw_dkim_bodycanon_clear(&m->body[c]);
    mw_arc_seal_free(m);
    mw_buf_free(&m->htext);
    free(m->hdr);
    mw_buf_free(&m->atext);
    free(m->id);
    MW_FREE(mp);
}
