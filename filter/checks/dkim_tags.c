/*
 * dkim_tags.c - DKIM building blocks on OpenSSL: tag lists, base64, key
 * records through mw_dns, signature checks.  See dkim_tags.h.
 *
 * Design
 *   The tag-list parser is strict (RFC 6376 §3.2): it is the gate for
 *   hostile ARC and key-record text, so anything off-grammar is refused
 *   with a reason rather than guessed at.  Tag values are spans into the
 *   caller's text; nothing is copied.  Key records are fetched with one
 *   TXT query each; RSA keys go through d2i_PUBKEY_bio, which
 *   dkim_keycache.c interposes, so a sealer's key is parsed once per
 *   process, not once per message.
 *
 * See also: RFC 6376 §3.2 (tag lists), §3.6.1 (key records), §3.7 (hashes),
 * RFC 8463 (Ed25519), RFC 8301 (rsa-sha1 no longer valid).
 */
#include "dkim_tags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "alloc.h"

static bool is_fws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_valchar(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != ';';
}

bool mw_dkim_tags_parse(const char *s, size_t len, mw_dkim_tags *out, char *why, size_t whylen)
{
    size_t i = 0;

    out->n = 0;
    for (;;) {
        while (i < len && is_fws(s[i]))
            i++;
        if (i == len)
            return true;               /* empty list, or a trailing ";" */
        if (!is_alpha(s[i])) {
            snprintf(why, whylen, "%s at offset %zu", s[i] == ';' ? "empty tag" : "bad tag name", i);
            return false;
        }
        size_t ns = i;
        while (i < len && (is_alpha(s[i]) || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            i++;
        size_t nl = i - ns;
        while (i < len && is_fws(s[i]))
            i++;
        if (i == len || s[i] != '=') {
            snprintf(why, whylen, "tag \"%.*s\" without \"=\"", (int)(nl < 16 ? nl : 16), s + ns);
            return false;
        }
        size_t after_eq = ++i;
        while (i < len && is_fws(s[i]))
            i++;
        size_t vs = i, ve = i;
        while (i < len && s[i] != ';') {
            if (is_valchar((unsigned char)s[i]))
                ve = i + 1;
            else if (!is_fws(s[i])) {
                snprintf(why, whylen, "tag \"%.*s\": byte 0x%02x not allowed in a value",
                         (int)(nl < 16 ? nl : 16), s + ns, (unsigned char)s[i]);
                return false;
            }
            i++;
        }
        for (size_t k = 0; k < out->n; k++)
            if (out->t[k].nlen == nl && memcmp(out->t[k].name, s + ns, nl) == 0) {
                snprintf(why, whylen, "duplicate tag \"%.*s\"", (int)(nl < 16 ? nl : 16), s + ns);
                return false;
            }
        if (out->n == MW_DKIM_TAGS_MAX) {
            snprintf(why, whylen, "more than %d tags", MW_DKIM_TAGS_MAX);
            return false;
        }
        out->t[out->n++] = (mw_dkim_tag){.name = s + ns, .nlen = nl, .val = s + vs,
                                         .vlen = ve - vs, .after_eq = after_eq, .spec_end = i};
        if (i == len)
            return true;
        i++;                           /* the ';' */
    }
}

const mw_dkim_tag *mw_dkim_tags_get(const mw_dkim_tags *tl, const char *name)
{
    size_t nl = strlen(name);

    for (size_t i = 0; i < tl->n; i++)
        if (tl->t[i].nlen == nl && memcmp(tl->t[i].name, name, nl) == 0)
            return &tl->t[i];
    return NULL;
}

char *mw_dkim_tag_dup(const mw_dkim_tags *tl, const char *name)
{
    const mw_dkim_tag *t = mw_dkim_tags_get(tl, name);
    char *out;
    size_t n = 0;

    if (t == NULL)
        return NULL;
    out = mw_malloc(t->vlen + 1);
    for (size_t i = 0; i < t->vlen; i++)
        if (!is_fws(t->val[i]))
            out[n++] = t->val[i];
    out[n] = '\0';
    return out;
}

bool mw_dkim_b64_decode(const char *s, size_t len, mw_buf *out)
{
    mw_buf clean = MW_BUF_INIT;
    bool ok = false;
    size_t pad = 0;

    mw_buf_reset(out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_fws((char)c))
            continue;
        if (c == '=') {
            pad++;
        } else if (pad > 0 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '+' || c == '/')) {
            mw_buf_free(&clean);
            return false;              /* not base64, or data after padding */
        }
        mw_buf_putc(&clean, (char)c);
    }
    if (clean.len > 0 && clean.len % 4 == 0 && pad <= 2 && clean.len < (1u << 20)) {
        mw_buf_reserve(out, clean.len);
        int n = EVP_DecodeBlock((unsigned char *)out->data, (const unsigned char *)clean.data,
                                (int)clean.len);
        if (n >= (int)pad) {
            out->len = (size_t)n - pad;   /* EVP_DecodeBlock counts padding as zero bytes */
            out->data[out->len] = '\0';
            ok = true;
        }
    }
    mw_buf_free(&clean);
    return ok;
}

/* ---- key records ---------------------------------------------------------------------- */

void mw_dkim_pubkey_clear(mw_dkim_pubkey *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof *k);
}

/* Does the colon-separated list v (FWS allowed) contain word (case-insensitive)? */
static bool list_has(const mw_dkim_tag *t, const char *word)
{
    size_t wl = strlen(word), i = 0;

    while (i < t->vlen) {
        while (i < t->vlen && (is_fws(t->val[i]) || t->val[i] == ':'))
            i++;
        size_t st = i;
        while (i < t->vlen && !is_fws(t->val[i]) && t->val[i] != ':')
            i++;
        if (i - st == wl && strncasecmp(t->val + st, word, wl) == 0)
            return true;
    }
    return false;
}

static bool tag_is(const mw_dkim_tag *t, const char *v)
{
    return t->vlen == strlen(v) && strncasecmp(t->val, v, t->vlen) == 0;
}

static EVP_PKEY *rsa_key(const unsigned char *der, size_t n)
{
    BIO *bio = BIO_new_mem_buf(der, (int)n);
    EVP_PKEY *pk = bio != NULL ? d2i_PUBKEY_bio(bio, NULL) : NULL;   /* dkim_keycache.c */

    BIO_free(bio);
    if (pk == NULL) {                  /* a bare RSAPublicKey (PKCS#1), as some publish */
        const unsigned char *p = der;
        pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)n);
    }
    ERR_clear_error();
    if (pk != NULL && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    return pk;
}

mw_dkim_keystatus mw_dkim_pubkey_parse(const char *rec, size_t len, bool want_ed25519,
                                       unsigned min_bits, mw_dkim_pubkey *out, char *why,
                                       size_t whylen)
{
    mw_dkim_tags tl;
    const mw_dkim_tag *t;
    char err[128];
    mw_buf raw = MW_BUF_INIT;
    bool ed = false;

    memset(out, 0, sizeof *out);
    if (!mw_dkim_tags_parse(rec, len, &tl, err, sizeof err)) {
        snprintf(why, whylen, "malformed key record: %s", err);
        return MW_DKIM_KEY_PERM;
    }
    if ((t = mw_dkim_tags_get(&tl, "v")) != NULL && (t != &tl.t[0] || !tag_is(t, "DKIM1"))) {
        snprintf(why, whylen, "key record: v= is not DKIM1 or not first");
        return MW_DKIM_KEY_PERM;
    }
    if ((t = mw_dkim_tags_get(&tl, "k")) != NULL) {
        ed = tag_is(t, "ed25519");
        if (!ed && !tag_is(t, "rsa")) {
            snprintf(why, whylen, "key record: unknown key type k=%.*s",
                     (int)(t->vlen < 20 ? t->vlen : 20), t->val);
            return MW_DKIM_KEY_PERM;
        }
    }
    if (ed != want_ed25519) {
        snprintf(why, whylen, "key record: k=%s does not match the signature's a=",
                 ed ? "ed25519" : "rsa");
        return MW_DKIM_KEY_PERM;
    }
    if ((t = mw_dkim_tags_get(&tl, "h")) != NULL && !list_has(t, "sha256")) {
        snprintf(why, whylen, "key record: h= does not allow sha256");
        return MW_DKIM_KEY_PERM;
    }
    if ((t = mw_dkim_tags_get(&tl, "s")) != NULL && !list_has(t, "*") && !list_has(t, "email")) {
        snprintf(why, whylen, "key record: s= does not allow email");
        return MW_DKIM_KEY_PERM;
    }
    if ((t = mw_dkim_tags_get(&tl, "t")) != NULL && list_has(t, "y"))
        out->testing = true;
    if ((t = mw_dkim_tags_get(&tl, "p")) == NULL) {
        snprintf(why, whylen, "key record without p=");
        return MW_DKIM_KEY_PERM;
    }
    if (t->vlen == 0) {
        snprintf(why, whylen, "key revoked (empty p=)");
        return MW_DKIM_KEY_PERM;
    }
    if (!mw_dkim_b64_decode(t->val, t->vlen, &raw)) {
        snprintf(why, whylen, "key record: p= is not base64");
        mw_buf_free(&raw);
        return MW_DKIM_KEY_PERM;
    }
    if (ed) {
        out->pkey = raw.len == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                                                (unsigned char *)raw.data, 32)
                                  : NULL;
        out->bits = 256;
    } else {
        out->pkey = rsa_key((const unsigned char *)raw.data, raw.len);
        out->bits = out->pkey != NULL ? (unsigned)EVP_PKEY_get_bits(out->pkey) : 0;
    }
    mw_buf_free(&raw);
    out->ed25519 = ed;
    if (out->pkey == NULL) {
        snprintf(why, whylen, "key record: p= is not a%s key", ed ? "n Ed25519" : "n RSA");
        return MW_DKIM_KEY_PERM;
    }
    if (!ed && out->bits < min_bits) {
        snprintf(why, whylen, "key too small (%u bits, minimum %u)", out->bits, min_bits);
        mw_dkim_pubkey_clear(out);
        return MW_DKIM_KEY_PERM;
    }
    return MW_DKIM_KEY_OK;
}

mw_dkim_keystatus mw_dkim_pubkey_fetch(mw_dns *dns, const char *selector, const char *domain,
                                       bool want_ed25519, unsigned min_bits, unsigned timeout_ms,
                                       mw_dkim_pubkey *out, char *why, size_t whylen)
{
    mw_buf q = MW_BUF_INIT, txt = MW_BUF_INIT;
    mw_dns_answer *a = NULL;
    mw_dkim_keystatus st = MW_DKIM_KEY_PERM;
    size_t ntxt = 0;

    memset(out, 0, sizeof *out);
    mw_buf_printf(&q, "%s._domainkey.%s", selector, domain);
    (void)mw_dns_query(dns, mw_buf_cstr(&q), MW_DNS_T_TXT, timeout_ms, &a);
    switch (a->status) {
    case MW_DNS_OK:
        for (size_t i = 0; i < a->nrr; i++)
            ntxt += a->rr[i].type == MW_DNS_T_TXT;
        if (ntxt != 1) {
            snprintf(why, whylen, "%s: %zu key records", mw_buf_cstr(&q), ntxt);
            break;
        }
        for (size_t i = 0; i < a->nrr; i++)
            if (a->rr[i].type == MW_DNS_T_TXT && !mw_dns_rr_txt(&a->rr[i], &txt))
                ntxt = 0;
        if (ntxt == 0) {
            snprintf(why, whylen, "%s: malformed TXT record", mw_buf_cstr(&q));
            break;
        }
        st = mw_dkim_pubkey_parse(txt.data, txt.len, want_ed25519, min_bits, out, why, whylen);
        break;
    case MW_DNS_NXDOMAIN:
    case MW_DNS_NODATA:
        snprintf(why, whylen, "no key record at %s (%s)", mw_buf_cstr(&q),
                 mw_dns_status_name(a->status));
        break;
    case MW_DNS_TEMPFAIL:
        st = MW_DKIM_KEY_TEMP;
        /* fall through */
    case MW_DNS_PERMFAIL:
        snprintf(why, whylen, "key lookup %s failed (%s%s%s)", mw_buf_cstr(&q),
                 mw_dns_status_name(a->status), a->why != NULL ? ": " : "",
                 a->why != NULL ? a->why : "");
        break;
    }
    mw_dns_answer_free(&a);
    mw_buf_free(&q);
    mw_buf_free(&txt);
    return st;
}

bool mw_dkim_sig_check(const mw_dkim_pubkey *k, const unsigned char digest[32],
                       const unsigned char *sig, size_t siglen)
{
    bool ok = false;

    if (k->pkey == NULL || siglen == 0)
        return false;
    if (k->ed25519) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        ok = c != NULL && EVP_DigestVerifyInit_ex(c, NULL, NULL, NULL, NULL, k->pkey, NULL) == 1 &&
             EVP_DigestVerify(c, sig, siglen, digest, 32) == 1;
        EVP_MD_CTX_free(c);
    } else {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        ok = c != NULL && EVP_PKEY_verify_init(c) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1 &&
             EVP_PKEY_verify(c, sig, siglen, digest, 32) == 1;
        EVP_PKEY_CTX_free(c);
    }
    ERR_clear_error();
    return ok;
}
