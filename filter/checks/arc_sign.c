/*
 * arc_sign.c - ARC sealing (RFC 8617 §5.1): the new set for instance N+1
 * of a message we relay, with a key of the DKIM key table.
 *
 * Design
 *   - The key, its algorithm and the signature primitive are the DKIM
 *     signer's (dkim_keys.c, mw_dkim_key_sign); the AMS covers the
 *     signer's header list (dkim.sign_headers; oversigned names listed once
 *     more than they occur), picked bottom-up as DKIM does.
 *   - Header phase: only the covered fields are kept, already relaxed-
 *     canonicalized (arc.c calls mw_arc_seal_header); the body hash is
 *     arc.c's relaxed canonicalizer, shared with the verifier.
 *   - Canonicalization is relaxed/relaxed for the AMS and relaxed for the
 *     AS (RFC 8617 §5.1.1).  Fields are written with tags in alphabetical
 *     order, "; " between them, and folded only at those separators (the
 *     SP becomes "\n\t"), so the relaxed form of what is emitted is exactly
 *     the unfolded text that was signed.  (This is also the form the ARC
 *     test suite's signing scenarios fix, so signatures match its bytes.)
 *   - cv=: none for the first set, pass over a passing chain (the AS covers
 *     every set, in instance order AAR, AMS, AS), fail over a failing one
 *     (the AS covers only the new set, RFC 8617 §5.1.2).  No set is added
 *     to a chain whose newest seal already says cv=fail, or that has 50.
 *
 * See also: arc.h, arc.c, dkim_sign.c, RFC 8617 §4.1, §5.1.
 */
#include "arc_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

#include "alloc.h"
#include "log.h"

#define FOLD_WIDTH 78
#define SIG_MAX 1024                 /* RSA-8192 */

static ssize_t hdr_index(const mw_dkim_signer *s, const char *name, size_t nlen)
{
    for (size_t i = 0; i < s->nhdr; i++)
        if (s->hdr[i].len == nlen && strncasecmp(s->hdr[i].name, name, nlen) == 0)
            return (ssize_t)i;
    return -1;
}

void mw_arc_seal_header(mw_arc_msg *m, const char *name, size_t nlen, const char *value, size_t vlen)
{
    ssize_t h = hdr_index(m->signer, name, nlen);

    if (h < 0)
        return;
    m->held = mw_reallocarray(m->held, m->nheld + 1, sizeof *m->held);
    m->held[m->nheld] = (struct arc_held){.hdr = (size_t)h, .off = m->stext.len};
    mw_dkim_hcanon(&m->stext, MW_DKIM_CANON_RELAXED, name, nlen, value, vlen, true);
    m->held[m->nheld].len = m->stext.len - m->held[m->nheld].off;
    m->nheld++;
}

void mw_arc_seal_free(mw_arc_msg *m)
{
    mw_buf_free(&m->stext);
    MW_FREE(&m->held);
    m->nheld = 0;
}

/* Join tags with "; " into out, unfolded (fold = false) or folded at the
 * separators for a field whose name (and ": ") takes col0 columns. */
static void tags_join(mw_buf *out, char *const *tags, size_t n, size_t col0, bool fold)
{
    size_t col = col0;

    mw_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(tags[i]) + (i + 1 < n);
        if (i > 0) {
            if (fold && col + 1 + len > FOLD_WIDTH) {
                mw_buf_append(out, "\n\t", 2);
                col = 8;
            } else {
                mw_buf_putc(out, ' ');
                col++;
            }
        }
        mw_buf_puts(out, tags[i]);
        if (i + 1 < n)
            mw_buf_putc(out, ';');
        col += len;
    }
}

/* Hash the relaxed form of one field (name, value) into md, CRLF when crlf. */
static bool hash_field(EVP_MD_CTX *md, mw_buf *tmp, const char *name, size_t nlen, const char *value,
                       size_t vlen, bool crlf)
{
    mw_buf_reset(tmp);
    mw_dkim_hcanon(tmp, MW_DKIM_CANON_RELAXED, name, nlen, value, vlen, crlf);
    return EVP_DigestUpdate(md, tmp->data, tmp->len) == 1;
}

/* Sign md's digest with the sealing key; the base64 signature into b64. */
static bool finish_sign(const mw_arc_msg *m, EVP_MD_CTX *md, mw_buf *b64)
{
    const struct mw_dkim_key *k = &m->signer->key[m->key];
    unsigned char digest[MW_DKIM_SHA256_LEN], sig[SIG_MAX];
    unsigned dlen = 0;
    size_t siglen = sizeof sig;

    if (EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != sizeof digest ||
        (size_t)EVP_PKEY_get_size(k->pkey) > sizeof sig ||
        !mw_dkim_key_sign(k, m->signer->sha256, digest, sig, &siglen))
        return false;
    mw_buf_reset(b64);
    mw_buf_reserve(b64, 4 * ((siglen + 2) / 3) + 1);
    b64->len = (size_t)EVP_EncodeBlock((unsigned char *)b64->data, sig, (int)siglen);
    b64->data[b64->len] = '\0';
    return true;
}

/* The AMS header hash input: covered fields, bottom-up per name; h= into hl. */
static bool hash_covered(const mw_arc_msg *m, EVP_MD_CTX *md, mw_buf *hl)
{
    const mw_dkim_signer *s = m->signer;
    bool ok = true;

    mw_buf_reset(hl);
    for (size_t j = 0; ok && j < s->nhdr; j++) {
        for (size_t i = m->nheld; ok && i-- > 0;) {
            if (m->held[i].hdr != j)
                continue;
            ok = EVP_DigestUpdate(md, m->stext.data + m->held[i].off, m->held[i].len) == 1;
            mw_buf_printf(hl, "%s%s", hl->len ? ":" : "", s->hdr[j].name);
        }
        if (s->hdr[j].oversign)
            mw_buf_printf(hl, "%s%s", hl->len ? ":" : "", s->hdr[j].name);
    }
    return ok;
}

/* The AS hash input before the new set: every existing set, in order. */
static bool hash_sets(const mw_arc_msg *m, EVP_MD_CTX *md, unsigned n, mw_buf *tmp)
{
    for (unsigned i = 1; i <= n; i++)
        for (int kind = ARC_AAR; kind <= ARC_AS; kind++) {
            const struct arc_field *f = &m->arc[m->set[i][kind] - 1];
            if (!hash_field(md, tmp, m->atext.data + f->noff, f->nlen, m->atext.data + f->voff,
                            f->vlen, true))
                return false;
        }
    return true;
}

/* Check that chain can be sealed here; the instance, or 0 with why. */
static unsigned seal_instance(const mw_arc_msg *m, const mw_arc_status *chain, char *why,
                              size_t whylen)
{
    if (m->signer == NULL) {
        snprintf(why, whylen, "no sealing key");
        return 0;
    }
    if (!m->eoh) {
        snprintf(why, whylen, "the message has not been read");
        return 0;
    }
    if (chain->terminated) {
        snprintf(why, whylen, "the chain's newest seal (i=%u) already says cv=fail: no set is "
                 "added (RFC 8617 section 5.1.2)", chain->instances);
        return 0;
    }
    if (chain->instances >= MW_ARC_MAX_INSTANCES) {
        snprintf(why, whylen, "the chain already has %d sets", MW_ARC_MAX_INSTANCES);
        return 0;
    }
    if (chain->result == MW_ARC_PASS) {
        for (unsigned i = 1; i <= chain->instances; i++)
            for (int kind = ARC_AAR; kind <= ARC_AS; kind++)
                if (m->set[i][kind] == 0) {
                    snprintf(why, whylen, "the chain status does not match this message");
                    return 0;
                }
    } else if (chain->result == MW_ARC_NONE && chain->instances != 0) {
        snprintf(why, whylen, "the chain status does not match this message");
        return 0;
    }
    return chain->instances + 1;
}

bool mw_arc_msg_seal(mw_arc_msg *m, const mw_arc_status *chain, const char *authres, long long t,
                     mw_arc_set *out, char *why, size_t whylen)
{
    mw_buf tmp = MW_BUF_INIT, hl = MW_BUF_INIT, ams = MW_BUF_INIT, as = MW_BUF_INIT,
           aar = MW_BUF_INIT, sig = MW_BUF_INIT;
    EVP_MD_CTX *md = NULL;
    unsigned char bh[MW_DKIM_SHA256_LEN];
    char bh64[4 * ((MW_DKIM_SHA256_LEN + 2) / 3) + 1];
    char *tag[9];
    unsigned inst;
    bool ok = false;

    memset(out, 0, sizeof *out);
    memset(tag, 0, sizeof tag);
    if (m == NULL || chain == NULL || (inst = seal_instance(m, chain, why, whylen)) == 0)
        return false;
    if (!mw_arc_body_hash(m, MW_DKIM_CANON_RELAXED, bh)) {
        snprintf(why, whylen, "cannot hash the body (OpenSSL)");
        return false;
    }
    const struct mw_dkim_key *k = &m->signer->key[m->key];
    const char *cv = mw_arc_result_name(chain->result);
    if (t <= 0)
        t = (long long)time(NULL);
    (void)EVP_EncodeBlock((unsigned char *)bh64, bh, sizeof bh);
    while (authres != NULL && (*authres == ' ' || *authres == '\t'))
        authres++;
    mw_buf_printf(&aar, "i=%u; %s", inst, authres != NULL ? authres : "");

    /* AMS: covered fields, then the AMS itself with b= empty */
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, m->signer->sha256, NULL) != 1 ||
        !hash_covered(m, md, &hl))
        goto fail;
#define SETTAG(n, ...)                                   \
    do {                                                 \
        mw_buf tb_ = MW_BUF_INIT;                        \
        mw_buf_printf(&tb_, __VA_ARGS__);                \
        free(tag[n]);                                    \
        tag[n] = mw_buf_steal(&tb_);                     \
    } while (0)
    SETTAG(0, "a=%s", k->algorithm);
    SETTAG(1, "b=");
    SETTAG(2, "bh=%s", bh64);
    SETTAG(3, "c=relaxed/relaxed");
    SETTAG(4, "d=%s", k->domain);
    SETTAG(5, "h=%s", hl.data != NULL ? hl.data : "");
    SETTAG(6, "i=%u", inst);
    SETTAG(7, "s=%s", k->selector);
    SETTAG(8, "t=%lld", t);
    tags_join(&tmp, tag, 9, 0, false);
    mw_buf_reset(&ams);
    mw_buf_append(&ams, tmp.data, tmp.len);
    if (!hash_field(md, &tmp, "ARC-Message-Signature", 21, ams.data, ams.len, false) ||
        !finish_sign(m, md, &sig))
        goto fail;
    SETTAG(1, "b=%s", sig.data);
    tags_join(&ams, tag, 9, sizeof "ARC-Message-Signature: " - 1, true);

    /* AS: the sets (all, or only the new one on cv=fail), then itself */
    if (EVP_DigestInit_ex(md, m->signer->sha256, NULL) != 1 ||
        (chain->result == MW_ARC_PASS && !hash_sets(m, md, chain->instances, &tmp)) ||
        !hash_field(md, &tmp, "ARC-Authentication-Results", 26, aar.data, aar.len, true) ||
        !hash_field(md, &tmp, "ARC-Message-Signature", 21, ams.data, ams.len, true))
        goto fail;
    SETTAG(0, "a=%s", k->algorithm);
    SETTAG(1, "b=");
    SETTAG(2, "cv=%s", cv);
    SETTAG(3, "d=%s", k->domain);
    SETTAG(4, "i=%u", inst);
    SETTAG(5, "s=%s", k->selector);
    SETTAG(6, "t=%lld", t);
    tags_join(&as, tag, 7, 0, false);
    if (!hash_field(md, &tmp, "ARC-Seal", 8, as.data, as.len, false) || !finish_sign(m, md, &sig))
        goto fail;
    SETTAG(1, "b=%s", sig.data);
    tags_join(&as, tag, 7, sizeof "ARC-Seal: " - 1, true);
#undef SETTAG
    out->instance = inst;
    out->aar = mw_buf_steal(&aar);
    out->ams = mw_buf_steal(&ams);
    out->as = mw_buf_steal(&as);
    ok = true;
    goto done;
fail:
    snprintf(why, whylen, "signing with key %s failed", k->name);
    mw_warn("%s: arc: %s", m->id, why);
done:
    for (size_t i = 0; i < 9; i++)
        free(tag[i]);
    EVP_MD_CTX_free(md);
    mw_buf_free(&tmp);
    mw_buf_free(&hl);
    mw_buf_free(&ams);
    mw_buf_free(&as);
    mw_buf_free(&aar);
    mw_buf_free(&sig);
    return ok;
}
