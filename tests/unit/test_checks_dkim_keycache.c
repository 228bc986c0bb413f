/*
 * test_checks_dkim_keycache.c - the parsed-key cache under libopendkim
 * (checks/dkim_keycache.c), called directly: d2i_PUBKEY_bio() as this
 * program calls it is the interposed one, as libopendkim's call is.
 * What goes through and what is cached, BIO consumption, the LRU bound,
 * and that a key is shared, not copied.  Verification through libopendkim
 * (hits per message, threads, broken keys) is in test_checks_dkim.c.
 */
#define OPENSSL_SUPPRESS_DEPRECATED   /* EVP_PKEY_get1_RSA: what libopendkim calls */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "buf.h"
#include "dkim.h"
#include "dkim_keycache.h"
#include "mwtest.h"

static unsigned char der[4096];
static int derlen;

static mw_dkim_keycache_stats st0;

static mw_dkim_keycache_stats delta(void)
{
    mw_dkim_keycache_stats s;
    mw_dkim_keycache_get_stats(&s);
    s.hits -= st0.hits;
    s.misses -= st0.misses;
    s.bypassed -= st0.bypassed;
    s.evictions -= st0.evictions;
    return s;
}

static void mark(void)
{
    mw_dkim_keycache_get_stats(&st0);
}

/* Parse buf[0..n) the way libopendkim does; *left: bytes left in the BIO. */
static EVP_PKEY *parse(const unsigned char *buf, int n, int *left)
{
    BIO *b = BIO_new_mem_buf(buf, n);
    EVP_PKEY *pk = d2i_PUBKEY_bio(b, NULL);
    if (left != NULL)
        *left = (int)BIO_pending(b);
    BIO_free(b);
    return pk;
}

static void test_init(void)
{
    mw_dkim_keycache_stats s;

    MW_TEST_ASSERT(mw_dkim_keycache_init());
    mw_dkim_keycache_get_stats(&s);
    MW_TEST_ASSERT(s.enabled);
    MW_TEST_ASSERT(s.interposed);
}

static void test_hit_shares_key(void)
{
    int left = -1;
    unsigned char buf[4200];

    mw_dkim_keycache_flush();
    mark();
    EVP_PKEY *a = parse(der, derlen, &left);
    MW_TEST_ASSERT(a != NULL);
    MW_TEST_EQ_INT(left, 0);
    EVP_PKEY *b = parse(der, derlen, &left);
    MW_TEST_ASSERT(b == a);          /* the same object, one more reference */
    MW_TEST_EQ_INT(left, 0);
    mw_dkim_keycache_stats s = delta();
    MW_TEST_EQ_INT(s.misses, 1);
    MW_TEST_EQ_INT(s.hits, 1);
    MW_TEST_EQ_INT(s.entries, 1);

    /* what libopendkim does with it, then frees its reference */
    RSA *r = EVP_PKEY_get1_RSA(b);
    MW_TEST_ASSERT(r != NULL && RSA_size(r) * 8 == 2048);
    RSA_free(r);
    EVP_PKEY_free(b);
    EVP_PKEY_free(a);
    /* still alive in the cache */
    EVP_PKEY *c = parse(der, derlen, NULL);
    MW_TEST_ASSERT(c != NULL && EVP_PKEY_get_bits(c) == 2048);
    EVP_PKEY_free(c);

    /* trailing bytes: only the SEQUENCE is consumed, as libcrypto does */
    memcpy(buf, der, (size_t)derlen);
    memcpy(buf + derlen, "tail", 4);
    c = parse(buf, derlen + 4, &left);
    MW_TEST_ASSERT(c != NULL);
    MW_TEST_EQ_INT(left, 4);
    EVP_PKEY_free(c);
    MW_TEST_EQ_INT(delta().hits, 3);
}

static void test_bypass(void)
{
    unsigned char bad[4096];
    EVP_PKEY *pk, *into = NULL;

    mw_dkim_keycache_flush();
    mark();
    /* a != NULL: the real function, which fills *a */
    BIO *b = BIO_new_mem_buf(der, derlen);
    pk = d2i_PUBKEY_bio(b, &into);
    BIO_free(b);
    MW_TEST_ASSERT(pk != NULL && pk == into);
    EVP_PKEY_free(pk);
    /* not a memory BIO: a file BIO on a temp file */
    FILE *f = tmpfile();
    fwrite(der, 1, (size_t)derlen, f);
    rewind(f);
    b = BIO_new_fp(f, BIO_CLOSE);
    pk = d2i_PUBKEY_bio(b, NULL);
    BIO_free(b);
    MW_TEST_ASSERT(pk != NULL);
    EVP_PKEY_free(pk);
    /* truncated: the SEQUENCE's length runs past the data */
    MW_TEST_ASSERT(parse(der, derlen - 10, NULL) == NULL);
    /* not a SEQUENCE */
    memcpy(bad, der, (size_t)derlen);
    bad[0] = 0x31;
    MW_TEST_ASSERT(parse(bad, derlen, NULL) == NULL);
    /* empty */
    MW_TEST_ASSERT(parse(der, 0, NULL) == NULL);
    mw_dkim_keycache_stats s = delta();
    MW_TEST_EQ_INT(s.bypassed, 5);
    MW_TEST_EQ_INT(s.hits, 0);
    MW_TEST_EQ_INT(s.misses, 0);
    MW_TEST_EQ_INT(s.entries, 0);

    /* a well-formed SEQUENCE that is no key: a miss each time, never cached */
    memcpy(bad, der, (size_t)derlen);
    bad[16] = 0x7f;                  /* last byte of the rsaEncryption OID */
    MW_TEST_ASSERT(parse(bad, derlen, NULL) == NULL);
    MW_TEST_ASSERT(parse(bad, derlen, NULL) == NULL);
    s = delta();
    MW_TEST_EQ_INT(s.misses, 2);
    MW_TEST_EQ_INT(s.hits, 0);
    MW_TEST_EQ_INT(s.entries, 0);
}

/* A different, still parseable key: the modulus's low bytes carry i. */
static void variant(unsigned char *out, unsigned i)
{
    memcpy(out, der, (size_t)derlen);
    out[derlen - 8] = (unsigned char)(i >> 8);
    out[derlen - 7] = (unsigned char)i;
}

static void test_lru_bound(void)
{
    unsigned char k[4096];
    const unsigned n = MW_DKIM_KEYCACHE_MAX + 50;

    mw_dkim_keycache_flush();
    mark();
    for (unsigned i = 0; i < n; i++) {
        variant(k, i);
        EVP_PKEY *pk = parse(k, derlen, NULL);
        MW_TEST_ASSERT(pk != NULL);
        EVP_PKEY_free(pk);
        if (i == 10) {               /* keep key 0 recently used */
            variant(k, 0);
            EVP_PKEY_free(parse(k, derlen, NULL));
        }
        if (i > 10 && i % 100 == 0) {
            variant(k, 0);
            EVP_PKEY_free(parse(k, derlen, NULL));
        }
    }
    mw_dkim_keycache_stats s = delta();
    MW_TEST_EQ_INT(s.entries, MW_DKIM_KEYCACHE_MAX);
    MW_TEST_EQ_INT(s.misses, n);
    MW_TEST_EQ_INT(s.evictions, n - MW_DKIM_KEYCACHE_MAX);
    /* 0 was used recently: still there; 1 was the least recently used: gone */
    mark();
    variant(k, 0);
    EVP_PKEY_free(parse(k, derlen, NULL));
    MW_TEST_EQ_INT(delta().hits, 1);
    variant(k, 1);
    EVP_PKEY_free(parse(k, derlen, NULL));
    MW_TEST_EQ_INT(delta().misses, 1);
    /* similar keys are told apart by their bytes */
    variant(k, n - 1);
    EVP_PKEY *last = parse(k, derlen, NULL);
    variant(k, n - 2);
    EVP_PKEY *prev = parse(k, derlen, NULL);
    MW_TEST_ASSERT(last != NULL && prev != NULL && last != prev &&
                   EVP_PKEY_eq(last, prev) == 0);
    EVP_PKEY_free(last);
    EVP_PKEY_free(prev);
    mw_dkim_keycache_flush();
    mw_dkim_keycache_get_stats(&s);
    MW_TEST_EQ_INT(s.entries, 0);
}

int main(void)
{
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT;
    char err[256];

    if (!mw_dkim_keygen("rsa", 2048, &pem, &p, err, sizeof err)) {
        fprintf(stderr, "keygen: %s\n", err);
        return 1;
    }
    derlen = EVP_DecodeBlock(der, (const unsigned char *)p.data, (int)p.len);
    while (derlen > 0 && p.len > 0 && p.data[p.len - 1] == '=' && p.len--)
        derlen--;            /* EVP_DecodeBlock counts the padding */
    mw_buf_free(&pem);
    mw_buf_free(&p);
    if (!MW_TEST_ASSERT(derlen > 200))
        return MW_TEST_SUMMARY();
    MW_TEST_RUN(test_init);
    MW_TEST_RUN(test_hit_shares_key);
    MW_TEST_RUN(test_bypass);
    MW_TEST_RUN(test_lru_bound);
    return MW_TEST_SUMMARY();
}
