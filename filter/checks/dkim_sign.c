/*
 * dkim_sign.c - the DKIM signer (RFC 6376 §5, RFC 8463) on OpenSSL's
 * libcrypto: the signer built from the config (canonicalization, signed and
 * oversigned header lists, the keys and rules of dkim_keys.c) and the
 * per-message signing context that dkim_verify.c's message context feeds.
 *
 * Design
 *   - Keys are parsed once at create (dkim_keys.c) and used read-only by
 *     every thread; a test signature per key at create warms OpenSSL's
 *     per-key caches (Montgomery contexts) and proves the key signs.
 *     Per message the only asymmetric operation is the signature itself.
 *   - Headers: only the fields the signatures cover are kept, already
 *     canonicalized, until end of headers; there they are picked (repeated
 *     fields bottom-up, oversigned names once more, hashing nothing for
 *     the missing instance) and hashed into one SHA-256 context shared by
 *     all keys (every key has the same h= list and header canonicalization).
 *   - Body: canonicalized and hashed on the fly, once for all keys
 *     (dkim_canon.c); nothing of the body is kept.
 *   - End: per key the shared header context is copied, the key's own
 *     DKIM-Signature field (b= empty) is appended and the digest signed:
 *     rsa-sha256 = RSASSA-PKCS1-v1_5 over the SHA-256; ed25519-sha256 =
 *     PureEdDSA over the 32-byte SHA-256 (RFC 8463 §3).
 *   - The signature field is built folded (lines <= 78, "\n\t") first, up to
 *     and including "b="; exactly that text (as the MTA will write it:
 *     "DKIM-Signature: " + value, LF as CRLF) is what gets canonicalized and
 *     hashed, then b= is appended folded.  So simple header
 *     canonicalization signs the very bytes that are emitted.
 *   - Tags: v a c d s t bh h b.  No i= (d= is the identity), no l=, no x=.
 *
 * See also: dkim.h, dkim_keys.c, dkim_canon.c, RFC 6376 §3.5, §3.7, §5.4.
 */
#include "dkim_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/rsa.h>

#include "alloc.h"
#include "buf.h"
#include "strutil.h"
#include "log.h"

/*
 * The MTA writes our header as SIGHDR_NAME ": " value (mailwarden check
 * prints it so; the milter frontend must insert it so).  Simple header
 * canonicalization hashes that text.
 */
#define SIGHDR_NAME "DKIM-Signature"
#define FOLD_WIDTH 78
#define SIG_MAX 1024                /* RSA-8192 */

/* ---- signer ------------------------------------------------------------------------- */

static mw_dkim_canon canon_word(const char *w, size_t n)
{
    return n == 6 && strncasecmp(w, "simple", 6) == 0 ? MW_DKIM_CANON_SIMPLE
                                                      : MW_DKIM_CANON_RELAXED;
}

/* "HEADER/BODY"; one word is the header canonicalization, body simple (RFC 6376 §3.5 c=). */
static void canon_parse(const char *c, mw_dkim_canon *hc, mw_dkim_canon *bc)
{
    const char *slash = c != NULL ? strchr(c, '/') : NULL;

    if (c == NULL || c[0] == '\0') {
        *hc = *bc = MW_DKIM_CANON_RELAXED;
        return;
    }
    *hc = canon_word(c, slash != NULL ? (size_t)(slash - c) : strlen(c));
    *bc = slash != NULL ? canon_word(slash + 1, strlen(slash + 1)) : MW_DKIM_CANON_SIMPLE;
}

static const char *canon_name(mw_dkim_canon c)
{
    return c == MW_DKIM_CANON_SIMPLE ? "simple" : "relaxed";
}

static ssize_t hdr_find(const mw_dkim_signer *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->nhdr; i++)
        if (s->hdr[i].len == len && strncasecmp(s->hdr[i].name, name, len) == 0)
            return (ssize_t)i;
    return -1;
}

static void hdr_add(mw_dkim_signer *s, const char *name, bool oversign)
{
    size_t len = strlen(name);
    ssize_t i = hdr_find(s, name, len);

    if (i >= 0) {
        s->hdr[i].oversign = s->hdr[i].oversign || oversign;
        return;
    }
    s->hdr = mw_reallocarray(s->hdr, s->nhdr + 1, sizeof *s->hdr);
    s->hdr[s->nhdr++] = (struct mw_dkim_hdrname){.name = mw_strdup(name), .len = len,
                                                 .oversign = oversign};
}

/* The signature (raw bytes) of a SHA-256 digest with key k; false on error.
 * Shared with the ARC sealer (dkim_priv.h). */
bool mw_dkim_key_sign(const struct mw_dkim_key *k, const EVP_MD *md,
                      const unsigned char digest[MW_DKIM_SHA256_LEN], unsigned char *sig,
                      size_t *siglen)
{
    bool ok = false;

    if (k->ed25519) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        ok = c != NULL && EVP_DigestSignInit_ex(c, NULL, NULL, NULL, NULL, k->pkey, NULL) == 1 &&
             EVP_DigestSign(c, sig, siglen, digest, MW_DKIM_SHA256_LEN) == 1;
        EVP_MD_CTX_free(c);
    } else {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        ok = c != NULL && EVP_PKEY_sign_init(c) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(c, md) == 1 &&
             EVP_PKEY_sign(c, sig, siglen, digest, MW_DKIM_SHA256_LEN) == 1;
        EVP_PKEY_CTX_free(c);
    }
    if (!ok)
        ERR_clear_error();
    return ok;
}

static bool setup(mw_dkim_signer *s, const mw_config *cfg, mw_config_errors *errs)
{
    s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (s->sha256 == NULL) {
        mw_config_errors_addf(errs, "dkim: OpenSSL offers no SHA-256");
        return false;
    }
    for (size_t i = 0; i < cfg->ndkim_sign_headers; i++)
        hdr_add(s, cfg->dkim_sign_headers[i], false);
    for (size_t i = 0; i < cfg->ndkim_oversign_headers; i++)
        hdr_add(s, cfg->dkim_oversign_headers[i], true);
    ssize_t from = hdr_find(s, "From", 4);
    if (from < 0) {
        mw_config_errors_addf(errs, "dkim.sign_headers: must include From");
        return false;
    }
    s->from = (size_t)from;
    /* One signature per key now: proves the key signs and fills OpenSSL's
     * per-key caches before threads share it. */
    for (size_t i = 0; i < s->nkeys; i++) {
        unsigned char digest[MW_DKIM_SHA256_LEN] = {0}, sig[SIG_MAX];
        size_t siglen = sizeof sig;
        if (s->key[i].templ)
            continue;   /* its per-domain keys are checked here themselves */
        if ((size_t)EVP_PKEY_get_size(s->key[i].pkey) > sizeof sig)
            mw_config_errors_addf(errs, "dkim: key \"%s\" (%s): larger than 8192 bits",
                                  s->key[i].name, s->key[i].file);
        else if (!mw_dkim_key_sign(&s->key[i], s->sha256, digest, sig, &siglen))
            mw_config_errors_addf(errs, "dkim: key \"%s\" (%s): cannot sign with it",
                                  s->key[i].name, s->key[i].file);
    }
    return true;
}

mw_dkim_signer *mw_dkim_signer_create(const mw_config *cfg, mw_config_errors *errs)
{
    mw_dkim_signer *s = mw_calloc(1, sizeof *s);
    size_t start = errs->n;

    canon_parse(cfg->dkim_canon, &s->hcanon, &s->bcanon);
    if (mw_dkim_tables_load(s, cfg, errs) && s->nkeys > 0)
        (void)setup(s, cfg, errs);
    if (errs->n > start)
        mw_dkim_signer_destroy(&s);
    return s;
}

void mw_dkim_signer_destroy(mw_dkim_signer **sp)
{
    mw_dkim_signer *s = sp != NULL ? *sp : NULL;

    if (s == NULL)
        return;
    mw_dkim_tables_free(s);
    EVP_MD_free(s->sha256);
    for (size_t i = 0; i < s->nhdr; i++)
        free(s->hdr[i].name);
    free(s->hdr);
    MW_FREE(sp);
}

/* ---- one message ------------------------------------------------------------------ */

/* A covered header field, canonicalized (CRLF included) in sm->htext. */
struct held {
    size_t hdr;           /* index in signer->hdr */
    size_t off, len;
};

struct mw_dkim_signmsg {
    const mw_dkim_signer *s;
    const char           *id;
    char                 *domain;      /* the sender's domain, for "%" keys */
    size_t               *keys;
    size_t                nkeys;
    bool                  eoh;
    bool                  failed;      /* nothing will be signed (logged) */
    mw_buf                htext;       /* until eoh */
    struct held          *held;
    size_t                nheld;
    size_t               *hlist;       /* h=: indices into signer->hdr, in order */
    size_t                nhlist;
    EVP_MD_CTX           *hmd;         /* the chosen headers, hashed at eoh */
    mw_dkim_bodycanon     body;
};

static void sm_fail(mw_dkim_signmsg *sm, const char *why)
{
    if (!sm->failed)
        mw_warn("%s: dkim: not signing: %s", sm->id, why);
    sm->failed = true;
}

mw_dkim_signmsg *mw_dkim_signmsg_begin(const mw_dkim_signer *s, const size_t *keys, size_t nkeys,
                                       const char *id)
{
    mw_dkim_signmsg *sm;
    size_t n = 0;

    if (s == NULL || s->sha256 == NULL || nkeys == 0)
        return NULL;
    sm = mw_calloc(1, sizeof *sm);
    sm->s = s;
    sm->id = id != NULL ? id : "-";
    sm->keys = mw_calloc(nkeys, sizeof *sm->keys);
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i] >= s->nkeys || s->key[keys[i]].templ) {
            mw_warn("%s: dkim: no signing key #%zu", sm->id, keys[i]);
            continue;
        }
        sm->keys[n++] = keys[i];
    }
    sm->nkeys = n;
    return sm;
}

void mw_dkim_signmsg_domain(mw_dkim_signmsg *sm, const char *domain)
{
    if (sm == NULL || domain == NULL)
        return;
    free(sm->domain);
    sm->domain = mw_strdup(domain);
    mw_str_lower(sm->domain);
}

void mw_dkim_signmsg_header(mw_dkim_signmsg *sm, const char *name, const char *value, size_t vlen)
{
    size_t nlen = strlen(name), cmplen = nlen;
    ssize_t h;

    if (sm == NULL || sm->eoh || sm->failed)
        return;
    while (cmplen > 0 && (name[cmplen - 1] == ' ' || name[cmplen - 1] == '\t'))
        cmplen--;
    h = hdr_find(sm->s, name, cmplen);
    if (h < 0)
        return;
    sm->held = mw_reallocarray(sm->held, sm->nheld + 1, sizeof *sm->held);
    sm->held[sm->nheld].hdr = (size_t)h;
    sm->held[sm->nheld].off = sm->htext.len;
    mw_dkim_hcanon(&sm->htext, sm->s->hcanon, name, nlen, value, vlen, true);
    sm->held[sm->nheld].len = sm->htext.len - sm->held[sm->nheld].off;
    sm->nheld++;
}

void mw_dkim_signmsg_eoh(mw_dkim_signmsg *sm)
{
    const mw_dkim_signer *s;
    size_t nfrom = 0;
    bool ok;

    if (sm == NULL || sm->eoh)
        return;
    sm->eoh = true;
    s = sm->s;
    sm->hmd = EVP_MD_CTX_new();
    ok = sm->hmd != NULL && EVP_DigestInit_ex(sm->hmd, s->sha256, NULL) == 1;
    sm->hlist = mw_calloc(sm->nheld + s->nhdr, sizeof *sm->hlist);
    for (size_t j = 0; ok && j < s->nhdr; j++) {
        /* Repeated fields bottom-up: a verifier takes the last unused one. */
        for (size_t i = sm->nheld; ok && i-- > 0;) {
            if (sm->held[i].hdr != j)
                continue;
            ok = EVP_DigestUpdate(sm->hmd, sm->htext.data + sm->held[i].off,
                                  sm->held[i].len) == 1;
            sm->hlist[sm->nhlist++] = j;
            nfrom += j == s->from;
        }
        if (s->hdr[j].oversign)
            sm->hlist[sm->nhlist++] = j;   /* an instance that does not exist: hashes nothing */
    }
    mw_buf_free(&sm->htext);
    MW_FREE(&sm->held);
    sm->nheld = 0;
    if (!ok)
        sm_fail(sm, "cannot hash the header (OpenSSL)");
    else if (nfrom == 0)
        sm_fail(sm, "the message has no From header field");
    else if (!mw_dkim_bodycanon_init(&sm->body, s->sha256, s->bcanon))
        sm_fail(sm, "cannot hash the body (OpenSSL)");
}

void mw_dkim_signmsg_body(mw_dkim_signmsg *sm, const unsigned char *p, size_t len)
{
    if (sm == NULL)
        return;
    if (!sm->eoh)
        mw_dkim_signmsg_eoh(sm);
    if (!sm->failed)
        mw_dkim_bodycanon_update(&sm->body, p, len);
}

/* ---- the DKIM-Signature field ---------------------------------------------------------- */

/* Folding writer: col counts the characters of the current line. */
struct fold {
    mw_buf *b;
    size_t  col;
};

/* Append text; sep (' ' or 0) before it unless the line is folded there. */
static void fold_put(struct fold *f, const char *text, size_t len, char sep, size_t keep)
{
    if (f->col + (sep != 0) + len + keep > FOLD_WIDTH && f->col > 1) {
        mw_buf_append(f->b, "\n\t", 2);
        f->col = 1;
    } else if (sep != 0) {
        mw_buf_putc(f->b, sep);
        f->col++;
    }
    mw_buf_append(f->b, text, len);
    f->col += len;
}

/* Base64 value text that may be broken anywhere (b=). */
static void fold_b64(struct fold *f, const char *text, size_t len)
{
    while (len > 0) {
        if (f->col >= FOLD_WIDTH) {
            mw_buf_append(f->b, "\n\t", 2);
            f->col = 1;
        }
        size_t n = FOLD_WIDTH - f->col < len ? FOLD_WIDTH - f->col : len;
        mw_buf_append(f->b, text, n);
        f->col += n;
        text += n;
        len -= n;
    }
}

static size_t b64(char *out, const unsigned char *p, size_t n)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

/*
 * Key k's field up to and including "b=" into v (a leading SP, then the
 * value as emitted); returns the column after "b=".
 */
static size_t sig_fields(const mw_dkim_signmsg *sm, const struct mw_dkim_key *k, const char *bh,
                       long long t, mw_buf *v)
{
    const mw_dkim_signer *s = sm->s;
    struct fold f = {.b = v, .col = sizeof SIGHDR_NAME};   /* "DKIM-Signature:" */
    mw_buf tag = MW_BUF_INIT;

#define TAG(...)                                                 \
    do {                                                         \
        mw_buf_reset(&tag);                                      \
        mw_buf_printf(&tag, __VA_ARGS__);                        \
        fold_put(&f, tag.data, tag.len, ' ', 0);                 \
    } while (0)
    TAG("v=1;");
    TAG("a=%s;", k->algorithm);
    TAG("c=%s/%s;", canon_name(s->hcanon), canon_name(s->bcanon));
    TAG("d=%s;", k->any_domain ? sm->domain : k->domain);
    TAG("s=%s;", k->selector);
    TAG("t=%lld;", t);
    TAG("bh=%s;", bh);
#undef TAG
    for (size_t i = 0; i < sm->nhlist; i++) {
        const struct mw_dkim_hdrname *h = &s->hdr[sm->hlist[i]];
        mw_buf_reset(&tag);
        mw_buf_printf(&tag, "%s%s%c", i == 0 ? "h=" : "", h->name, i + 1 < sm->nhlist ? ':' : ';');
        fold_put(&f, tag.data, tag.len, i == 0 ? ' ' : 0, 0);
    }
    /* "b=" with room for some of its value on the same line. */
    fold_put(&f, "b=", 2, ' ', 8);
    mw_buf_free(&tag);
    return f.col;
}

/* One key's DKIM-Signature value, or NULL (logged). */
static char *sign_one(const mw_dkim_signmsg *sm, const struct mw_dkim_key *k, const char *bh,
                      long long t)
{
    const mw_dkim_signer *s = sm->s;
    mw_buf v = MW_BUF_INIT, canon = MW_BUF_INIT;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[MW_DKIM_SHA256_LEN], sig[SIG_MAX];
    char sig64[4 * ((SIG_MAX + 2) / 3) + 1];
    unsigned int dlen = 0;
    size_t siglen = sizeof sig;
    char *out = NULL;
    if (k->any_domain && (sm->domain == NULL || sm->domain[0] == '\0')) {
        mw_warn("%s: dkim: key %s signs as the sender's domain (%%), and there is none", sm->id,
                k->name);
        EVP_MD_CTX_free(md);
        return NULL;
    }
    struct fold f = {.b = &v, .col = sig_fields(sm, k, bh, t, &v)};

    /* The field as it will stand in the message, b= empty, no CRLF. */
    mw_dkim_hcanon(&canon, s->hcanon, SIGHDR_NAME, sizeof SIGHDR_NAME - 1, v.data, v.len, false);
    if (md == NULL || EVP_MD_CTX_copy_ex(md, sm->hmd) != 1 ||
        EVP_DigestUpdate(md, canon.data, canon.len) != 1 ||
        EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != sizeof digest ||
        !mw_dkim_key_sign(k, s->sha256, digest, sig, &siglen)) {
        mw_warn("%s: dkim: signing with key %s failed", sm->id, k->name);
        goto done;
    }
    fold_b64(&f, sig64, b64(sig64, sig, siglen));
    out = mw_strdup(v.data + 1);   /* without the SP after the colon */
done:
    EVP_MD_CTX_free(md);
    mw_buf_free(&v);
    mw_buf_free(&canon);
    return out;
}

void mw_dkim_signmsg_end(mw_dkim_signmsg *sm, char ***sigs, size_t *nsigs)
{
    unsigned char bh[MW_DKIM_SHA256_LEN];
    char bh64[4 * ((MW_DKIM_SHA256_LEN + 2) / 3) + 1];

    if (sm == NULL)
        return;
    if (!sm->eoh)
        mw_dkim_signmsg_eoh(sm);
    if (sm->failed)
        return;
    if (!mw_dkim_bodycanon_final(&sm->body, bh)) {
        sm_fail(sm, "cannot hash the body (OpenSSL)");
        return;
    }
    (void)b64(bh64, bh, sizeof bh);
    long long t = (long long)time(NULL);
    for (size_t i = 0; i < sm->nkeys; i++) {
        char *h = sign_one(sm, &sm->s->key[sm->keys[i]], bh64, t);
        if (h == NULL)
            continue;
        if (sigs == NULL || nsigs == NULL) {
            free(h);
            continue;
        }
        *sigs = mw_reallocarray(*sigs, *nsigs + 1, sizeof **sigs);
        (*sigs)[(*nsigs)++] = h;
    }
    sm->failed = true;   /* once */
}

void mw_dkim_signmsg_free(mw_dkim_signmsg **smp)
{
    mw_dkim_signmsg *sm = smp != NULL ? *smp : NULL;

    if (sm == NULL)
        return;
    mw_dkim_bodycanon_clear(&sm->body);
    EVP_MD_CTX_free(sm->hmd);
    mw_buf_free(&sm->htext);
    free(sm->held);
    free(sm->hlist);
    free(sm->keys);
    free(sm->domain);
    MW_FREE(smp);
}
