/*
 * dkim_keycache.c - a content-addressed cache of parsed DKIM public keys,
 * put under libopendkim by symbol interposition.
 *
 * Why interposition
 *   For every RSA signature, libopendkim (2.11, dkim_sig_process) base64-
 *   decodes p= into a buffer and calls
 *       d2i_PUBKEY_bio(BIO_new_mem_buf(der, len), NULL)
 *   then EVP_PKEY_get1_RSA() and RSA_verify(), and frees the key.  On
 *   OpenSSL 3.0 that parse builds a decoder chain on each call: ~0.075 ms,
 *   about half the CPU of an inbound 4 KiB message (callgrind: 47.6 % of
 *   instructions), for a key we parsed a moment ago.  libopendkim has no
 *   API to hand it a parsed key (its key hooks only return the record
 *   text), and we keep it as the verifier.  So the executable defines
 *   d2i_PUBKEY_bio() itself.  The dynamic linker binds libopendkim's PLT
 *   reference (d2i_PUBKEY_bio@OPENSSL_3.0.0) to the first definition in
 *   the global scope, which is the executable's as long as the symbol is in
 *   its dynamic symbol table (CMakeLists.txt exports it with a one-symbol
 *   --dynamic-list).  An unversioned definition satisfies the versioned
 *   reference.  libcrypto itself never calls d2i_PUBKEY_bio through its
 *   PLT, so only libopendkim's call (our own code uses d2i_PUBKEY) comes
 *   here.
 *
 * What it does
 *   Only the exact call libopendkim makes is cached: a == NULL, a plain
 *   memory BIO (BIO_TYPE_MEM), whose readable bytes start with one DER
 *   SEQUENCE (tag 0x30, definite minimal length) that fits in them and is
 *   at most MAX_DER bytes.  Anything else goes to the real function
 *   (dlsym(RTLD_NEXT), resolved once) unchanged.  The key is those DER
 *   bytes, compared in full (the hash only picks the bucket).  A hit
 *   consumes the bytes from the BIO, as the real function would, and
 *   returns the cached EVP_PKEY with one more reference (libopendkim
 *   EVP_PKEY_free()s it).  A miss parses with the real function and keeps
 *   a reference to a successful result; failures are not cached, so a
 *   broken key record gives libopendkim's own error every time.  Results
 *   cannot differ from an uncached run: the same bytes parse to the same
 *   key, and a rotated key has new bytes, so there is no TTL.  Bounded at
 *   MW_DKIM_KEYCACHE_MAX entries, least recently used evicted first; one
 *   mutex (one lookup per signature, a few hundred ns under it).  Bucket
 *   hashes are seeded per process, so colliding keys cannot be crafted.
 *
 * Sharing one EVP_PKEY between threads (OpenSSL 3.0)
 *   d2i_PUBKEY gives a provider key.  EVP_PKEY_get1_RSA() goes through
 *   evp_pkey_get_legacy(): it reads pk->legacy_cache_pkey under pk->lock
 *   (read lock), and if empty makes the legacy RSA copy outside the lock
 *   and installs it under the write lock, re-checking first (a losing
 *   thread frees its copy); the RSA is then up-ref'd (atomic).  RSA_verify
 *   on a shared RSA is a public-key operation: no blinding, and the cached
 *   Montgomery context is set with BN_MONT_CTX_set_locked() under
 *   rsa->lock.  EVP_PKEY_get_id/get_size only read.  So concurrent
 *   verifications with one cached key are safe, and they also stop paying
 *   for the legacy copy and the Montgomery setup after the first use.
 *
 * Limits
 *   It relies on libopendkim calling d2i_PUBKEY_bio through the PLT (true
 *   of the Debian build; a static libopendkim or one linked with
 *   -Bsymbolic would bypass it and verification would just be uncached:
 *   mw_dkim_keycache_get_stats() reports interposed = false).  Ed25519 keys
 *   are made by libopendkim with EVP_PKEY_new_raw_public_key and are not
 *   cached (they are cheap).  A caller that modified a returned key would
 *   modify the shared one; libopendkim and libcrypto do not.
 *
 * Turning it off
 *   MW_DKIM_KEY_CACHE=off (0, no, false) in the environment: read once, at
 *   the first call or verifier creation; every call goes to libcrypto.
 */
#include "dkim_keycache.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"

#define MAX_DER  8192                      /* RSA-16384 SPKI is ~2.1 KB */
#define NBUCKETS (MW_DKIM_KEYCACHE_MAX * 2)

typedef EVP_PKEY *(*d2i_fn)(BIO *, EVP_PKEY **);

struct entry {
    struct entry  *hnext;                  /* bucket chain */
    struct entry  *prev, *next;            /* LRU list, most recent at head */
    uint64_t       hash;
    size_t         len;
    EVP_PKEY      *pkey;                   /* one reference held by the cache */
    unsigned char  der[];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static d2i_fn real_d2i;                    /* written once under `once` */
static bool enabled;                       /* idem */
static bool interposed;                    /* idem */
static uint64_t seed;                      /* idem */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[NBUCKETS];    /* under mu */
static struct entry *lru_head, *lru_tail;  /* under mu */
static size_t nentries;                    /* under mu */
static uint64_t n_hits, n_misses, n_bypassed, n_evictions;   /* under mu */

static void init_once(void)
{
    const char *e = getenv("MW_DKIM_KEY_CACHE");

    real_d2i = (d2i_fn)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio");
    if (real_d2i == NULL)   /* nothing after us (static libcrypto?): the default scope */
        real_d2i = (d2i_fn)dlvsym(RTLD_DEFAULT, "d2i_PUBKEY_bio", "OPENSSL_3.0.0");
    if (real_d2i == (d2i_fn)d2i_PUBKEY_bio)
        real_d2i = NULL;
    enabled = real_d2i != NULL &&
              !(e != NULL && (strcmp(e, "0") == 0 || strcasecmp(e, "off") == 0 ||
                              strcasecmp(e, "no") == 0 || strcasecmp(e, "false") == 0));
    interposed = dlsym(RTLD_DEFAULT, "d2i_PUBKEY_bio") == (void *)d2i_PUBKEY_bio;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint64_t)(uintptr_t)&seed ^ 0x9e3779b97f4a7c15ull;
}

bool mw_dkim_keycache_init(void)
{
    pthread_once(&once, init_once);
    if (real_d2i == NULL)
        mw_warn("dkim: libcrypto's d2i_PUBKEY_bio not found: the key cache is off");
    return enabled && interposed;
}

/* FNV-1a, seeded. */
static uint64_t hash_der(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

/* Length of the DER SEQUENCE at p (header included), or 0 if p[0..avail)
 * does not start with one that fits. */
static size_t der_sequence_len(const unsigned char *p, size_t avail)
{
    size_t hdr, len;

    if (avail < 2 || p[0] != 0x30)
        return 0;
    if (p[1] < 0x80) {
        hdr = 2;
        len = p[1];
    } else {
        size_t nb = p[1] & 0x7f;
        if (nb == 0 || nb > 2 || avail < 2 + nb || p[2] == 0)   /* indefinite, huge, non-minimal */
            return 0;
        len = 0;
        for (size_t i = 0; i < nb; i++)
            len = len << 8 | p[2 + i];
        if (len < 0x80)                                         /* non-minimal */
            return 0;
        hdr = 2 + nb;
    }
    return len <= avail - hdr ? hdr + len : 0;
}

/* ---- the table (all under mu) ------------------------------------------------------- */

static void lru_unlink(struct entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        lru_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct entry *e)
{
    e->prev = NULL;
    e->next = lru_head;
    if (lru_head != NULL)
        lru_head->prev = e;
    lru_head = e;
    if (lru_tail == NULL)
        lru_tail = e;
}

static struct entry *find(uint64_t h, const unsigned char *der, size_t len)
{
    for (struct entry *e = buckets[h % NBUCKETS]; e != NULL; e = e->hnext)
        if (e->hash == h && e->len == len && memcmp(e->der, der, len) == 0)
            return e;
    return NULL;
}

/* Take e out of the table; returns its key for the caller to free outside mu. */
static EVP_PKEY *remove_entry(struct entry *e)
{
    struct entry **pp = &buckets[e->hash % NBUCKETS];
    EVP_PKEY *pk = e->pkey;

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    nentries--;
    free(e);
    return pk;
}

/* ---- the interposed function -------------------------------------------------------- */

/* Consume n bytes from a memory BIO, as the real parse would have. */
static void consume(BIO *bp, size_t n)
{
    unsigned char scratch[1024];

    while (n > 0) {
        int r = BIO_read(bp, scratch, (int)(n < sizeof scratch ? n : sizeof scratch));
        if (r <= 0)
            break;
        n -= (size_t)r;
    }
}

EVP_PKEY *d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a)
{
    char *data = NULL;
    long avail;
    size_t len;
    uint64_t h;
    struct entry *e;
    EVP_PKEY *pk, *evicted = NULL;

    pthread_once(&once, init_once);
    if (real_d2i == NULL)
        return NULL;     /* cannot happen with a dynamic libcrypto: init found it */
    if (!enabled)
        return real_d2i(bp, a);
    if (a != NULL || bp == NULL || BIO_method_type(bp) != BIO_TYPE_MEM ||
        (avail = BIO_get_mem_data(bp, &data)) <= 0 || data == NULL ||
        (len = der_sequence_len((const unsigned char *)data, (size_t)avail)) == 0 ||
        len > MAX_DER) {
        pthread_mutex_lock(&mu);
        n_bypassed++;
        pthread_mutex_unlock(&mu);
        return real_d2i(bp, a);
    }
    h = hash_der((const unsigned char *)data, len);

    pthread_mutex_lock(&mu);
    e = find(h, (const unsigned char *)data, len);
    if (e != NULL) {
        pk = e->pkey;
        EVP_PKEY_up_ref(pk);
        lru_unlink(e);
        lru_push(e);
        n_hits++;
        pthread_mutex_unlock(&mu);
        mw_metric_inc(MW_M_DKIM_KEY_CACHE, MW_ML_KEYCACHE_HIT, 0);
        consume(bp, len);
        return pk;
    }
    n_misses++;
    pthread_mutex_unlock(&mu);
    mw_metric_inc(MW_M_DKIM_KEY_CACHE, MW_ML_KEYCACHE_MISS, 0);

    /* Copy the bytes first: the parse consumes them from the BIO. */
    e = mw_malloc(sizeof *e + len);
    e->len = len;
    e->hash = h;
    e->prev = e->next = e->hnext = NULL;
    memcpy(e->der, data, len);
    pk = real_d2i(bp, NULL);
    if (pk == NULL || EVP_PKEY_up_ref(pk) != 1) {
        free(e);
        return pk;
    }
    e->pkey = pk;

    pthread_mutex_lock(&mu);
    if (find(h, e->der, len) != NULL) {          /* another thread parsed it meanwhile */
        pthread_mutex_unlock(&mu);
        EVP_PKEY_free(pk);                       /* our extra reference */
        free(e);
        return pk;
    }
    if (nentries >= MW_DKIM_KEYCACHE_MAX && lru_tail != NULL) {
        evicted = remove_entry(lru_tail);
        n_evictions++;
    }
    e->hnext = buckets[h % NBUCKETS];
    buckets[h % NBUCKETS] = e;
    lru_push(e);
    nentries++;
    pthread_mutex_unlock(&mu);
    EVP_PKEY_free(evicted);
    return pk;
}

/* ---- stats, flush --------------------------------------------------------------------- */

void mw_dkim_keycache_get_stats(mw_dkim_keycache_stats *out)
{
    pthread_once(&once, init_once);
    pthread_mutex_lock(&mu);
    *out = (mw_dkim_keycache_stats){.hits = n_hits, .misses = n_misses, .bypassed = n_bypassed,
                                    .evictions = n_evictions, .entries = nentries,
                                    .enabled = enabled, .interposed = interposed};
    pthread_mutex_unlock(&mu);
}

void mw_dkim_keycache_flush(void)
{
    struct entry *list;

    pthread_mutex_lock(&mu);
    list = lru_head;
    lru_head = lru_tail = NULL;
    memset(buckets, 0, sizeof buckets);
    nentries = 0;
    pthread_mutex_unlock(&mu);
    while (list != NULL) {
        struct entry *next = list->next;
        EVP_PKEY_free(list->pkey);
        free(list);
        list = next;
    }
}
