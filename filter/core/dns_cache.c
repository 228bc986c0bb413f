/*
 * dns_cache.c - the answer cache (dns_cache.h).
 *
 * Design
 *      Shards, each a chained hash table plus a doubly linked LRU list under
 *      one mutex.  The shard comes from the top bits of a 64-bit FNV-1a hash
 *      of (key, type, class), the bucket from the low bits, so sessions
 *      asking different names rarely meet on a lock; sessions asking the
 *      same name (the DKIM key of a big sender) meet only for the copy.
 *
 *      Copies, not shared answers: callers own their mw_dns_answer and free
 *      it (the contract of mw_dns_query() since the start), and each caller
 *      gets its own qname spelling and a TTL reduced by the time in the
 *      cache.  A copy is 2 + nrr small allocations, well under a
 *      microsecond; a refcounted shared answer would need const-correct
 *      callers and would bounce one refcount cache line between every
 *      session that reads a hot record.
 *
 *      Entries hold the TTL as received and the time stored; the expiry is
 *      stored + clamp(TTL).  A hit reports max(0, TTL - seconds elapsed), so
 *      an answer kept longer by min_ttl reports 0 rather than a made-up
 *      TTL.
 *
 *      Time: CLOCK_MONOTONIC, read once per get or put outside the shard
 *      lock.  Tests replace it per cache (mw_dns_cache_set_clock) and
 *      advance a fake clock instead of sleeping past TTLs, so no expiry
 *      assertion depends on how fast the test runs.
 *
 * See also: dns.c (where get/put are called), dns_cache.h.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "dns_cache.h"

#define NS_PER_S 1000000000ull

typedef struct entry {
    struct entry  *hnext;          /* bucket chain */
    struct entry  *prev, *next;    /* LRU list: head = most recently used */
    uint64_t       hash;
    uint64_t       stored_ns;
    uint64_t       expires_ns;
    uint16_t       type, qclass;
    mw_dns_answer *ans;            /* deep copy; qname unused (NULL) */
    char           key[];          /* lower-cased name, no trailing dot */
} entry;

typedef struct shard {
    pthread_mutex_t lock;
    entry         **buckets;
    size_t          nbuckets;      /* power of 2 */
    size_t          n, cap;
    entry          *head, *tail;
    uint64_t        hits, misses, inserts, evictions, expired;
    char            pad[64];       /* keep neighbouring shards' locks apart */
} shard;

struct mw_dns_cache {
    unsigned nshards;              /* power of 2 */
    unsigned shard_shift;          /* 64 - log2(nshards) (0 bits when 1 shard) */
    size_t   capacity;
    uint32_t min_ttl, max_ttl;
    mw_dns_cache_clock_fn clock;   /* tests only; NULL: CLOCK_MONOTONIC */
    void    *clock_arg;
    shard    shards[];
};

/* The cache's clock: CLOCK_MONOTONIC (one vDSO call, as before the hook),
 * or the test's clock when one was set. */
static uint64_t now_ns(const mw_dns_cache *c)
{
    struct timespec ts;

    if (c->clock != NULL)
        return c->clock(c->clock_arg);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

void mw_dns_cache_set_clock(mw_dns_cache *c, mw_dns_cache_clock_fn fn, void *arg)
{
    if (c == NULL)
        return;
    c->clock = fn;
    c->clock_arg = arg;
}

/* name -> key: ASCII lower case, one unescaped trailing dot removed. */
static size_t make_key(const char *name, char *key, size_t keylen)
{
    size_t n = strlen(name);

    if (n > 1 && name[n - 1] == '.' && name[n - 2] != '\\')
        n--;
    if (n >= keylen)
        n = keylen - 1;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        key[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + ('a' - 'A')) : ch;
    }
    key[n] = '\0';
    return n;
}

static uint64_t key_hash(const char *key, size_t len, uint16_t type, uint16_t qclass)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= type;
    h *= 0x100000001b3ull;
    h ^= qclass;
    h *= 0x100000001b3ull;
    /* FNV's high bits mix poorly on short keys; fold the low ones in. */
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

mw_dns_cache *mw_dns_cache_create(size_t max_entries, uint32_t min_ttl, uint32_t max_ttl)
{
    unsigned ns = 1, bits = 0;
    mw_dns_cache *c;

    if (max_entries == 0)
        return NULL;
    /* At least 64 entries per shard: LRU stays meaningful per shard. */
    while (ns < MW_DNS_CACHE_MAX_SHARDS && max_entries / (ns * 2) >= 64) {
        ns *= 2;
        bits++;
    }
    c = mw_calloc(1, sizeof *c + ns * sizeof c->shards[0]);
    c->nshards = ns;
    c->shard_shift = bits ? 64 - bits : 0;
    c->capacity = max_entries;
    c->min_ttl = min_ttl;
    c->max_ttl = max_ttl;
    for (unsigned i = 0; i < ns; i++) {
        shard *s = &c->shards[i];
        size_t nb = 16;
        pthread_mutex_init(&s->lock, NULL);
        /* Exactly max_entries in total: the first shards take the rest. */
        s->cap = max_entries / ns + (i < max_entries % ns ? 1 : 0);
        while (nb < s->cap && nb < ((size_t)1 << 24))
            nb *= 2;
        s->nbuckets = nb;
        s->buckets = mw_calloc(nb, sizeof *s->buckets);
    }
    return c;
}

static void entry_free(entry *e)
{
    mw_dns_answer_free(&e->ans);
    free(e);
}

void mw_dns_cache_destroy(mw_dns_cache **pc)
{
    mw_dns_cache *c;

    if (!pc || !(c = *pc))
        return;
    *pc = NULL;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        for (entry *e = s->head, *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(c);
}

static shard *shard_of(mw_dns_cache *c, uint64_t h)
{
    return &c->shards[c->shard_shift ? h >> c->shard_shift : 0];
}

/* --- per-shard primitives; the shard lock is held ------------------------ */

static void lru_unlink(shard *s, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(shard *s, entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

/* Unlink e from its bucket and the LRU list and free it. */
static void shard_remove(shard *s, entry *e)
{
    entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(s, e);
    s->n--;
    entry_free(e);
}

static entry *shard_find(shard *s, uint64_t h, const char *key, uint16_t type, uint16_t qclass)
{
    for (entry *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash == h && e->type == type && e->qclass == qclass && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* --- copies --------------------------------------------------------------- */

/* Deep copy of a with qname (may be NULL) and every TTL replaced by ttl. */
static mw_dns_answer *answer_copy(const mw_dns_answer *a, const char *qname, uint32_t ttl)
{
    mw_dns_answer *b = mw_calloc(1, sizeof *b);

    b->status = a->status;
    b->rcode = a->rcode;
    b->qname = qname ? mw_strdup(qname) : NULL;
    b->canonname = a->canonname ? mw_strdup(a->canonname) : NULL;
    b->qtype = a->qtype;
    b->ttl = ttl;
    b->secure = a->secure;
    b->bogus = a->bogus;
    b->why = a->why ? mw_strdup(a->why) : NULL;
    if (a->nrr) {
        b->rr = mw_calloc(a->nrr, sizeof *b->rr);
        for (size_t i = 0; i < a->nrr; i++) {
            b->rr[i].type = a->rr[i].type;
            b->rr[i].ttl = ttl;
            b->rr[i].len = a->rr[i].len;
            b->rr[i].data = mw_malloc(a->rr[i].len ? a->rr[i].len : 1);
            if (a->rr[i].len)
                memcpy(b->rr[i].data, a->rr[i].data, a->rr[i].len);
        }
        b->nrr = a->nrr;
    }
    return b;
}

/* --- the interface -------------------------------------------------------- */

bool mw_dns_cache_get(mw_dns_cache *c, const char *name, uint16_t type, uint16_t qclass,
                      mw_dns_answer **out)
{
    char key[1024];
    size_t len;
    uint64_t h, now;
    shard *s;
    entry *e;

    if (!c || !name)
        return false;
    len = make_key(name, key, sizeof key);
    h = key_hash(key, len, type, qclass);
    s = shard_of(c, h);
    now = now_ns(c);
    pthread_mutex_lock(&s->lock);
    e = shard_find(s, h, key, type, qclass);
    if (e && now >= e->expires_ns) {
        shard_remove(s, e);
        s->expired++;
        e = NULL;
    }
    if (!e) {
        s->misses++;
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->head != e) {
        lru_unlink(s, e);
        lru_push_front(s, e);
    }
    uint64_t age_s = (now - e->stored_ns) / NS_PER_S;
    uint32_t ttl = e->ans->ttl > age_s ? (uint32_t)(e->ans->ttl - age_s) : 0;
    *out = answer_copy(e->ans, name, ttl);
    s->hits++;
    pthread_mutex_unlock(&s->lock);
    return true;
}

bool mw_dns_cache_put(mw_dns_cache *c, const char *name, uint16_t type, uint16_t qclass,
                      const mw_dns_answer *a)
{
    char key[1024];
    size_t len;
    uint64_t h, now;
    uint32_t keep;
    shard *s;
    entry *e, *old;

    if (!c || !name || !a)
        return false;
    if (a->status != MW_DNS_OK && a->status != MW_DNS_NXDOMAIN && a->status != MW_DNS_NODATA)
        return false;
    if (a->bogus || a->ttl == 0)
        return false;              /* TTL 0: "use once, do not cache" (RFC 1035 3.2.1) */
    keep = a->ttl;
    if (c->max_ttl && keep > c->max_ttl)
        keep = c->max_ttl;
    if (keep < c->min_ttl)
        keep = c->min_ttl;
    if (keep == 0)
        return false;

    len = make_key(name, key, sizeof key);
    h = key_hash(key, len, type, qclass);
    s = shard_of(c, h);
    now = now_ns(c);

    /* Build outside the lock. */
    e = mw_calloc(1, sizeof *e + len + 1);
    memcpy(e->key, key, len + 1);
    e->hash = h;
    e->type = type;
    e->qclass = qclass;
    e->stored_ns = now;
    e->expires_ns = now + (uint64_t)keep * NS_PER_S;
    e->ans = answer_copy(a, NULL, a->ttl);

    pthread_mutex_lock(&s->lock);
    if ((old = shard_find(s, h, key, type, qclass)) != NULL)
        shard_remove(s, old);
    while (s->n >= s->cap && s->tail) {
        if (now >= s->tail->expires_ns)
            s->expired++;
        else
            s->evictions++;
        shard_remove(s, s->tail);
    }
    e->hnext = s->buckets[h & (s->nbuckets - 1)];
    s->buckets[h & (s->nbuckets - 1)] = e;
    lru_push_front(s, e);
    s->n++;
    s->inserts++;
    pthread_mutex_unlock(&s->lock);
    return true;
}

void mw_dns_cache_get_stats(mw_dns_cache *c, mw_dns_cache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    st->capacity = c->capacity;
    st->shards = c->nshards;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        st->hits += s->hits;
        st->misses += s->misses;
        st->inserts += s->inserts;
        st->evictions += s->evictions;
        st->expired += s->expired;
        st->entries += s->n;
        pthread_mutex_unlock(&s->lock);
    }
}
