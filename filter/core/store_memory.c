/*
 * store_memory.c - the embedded state store backend (state.backend "memory").
 *
 * Purpose
 *   Rate-limit buckets and reputation counters for a single host, with the
 *   same answers as the redis backend: the named scripts of
 *   scripts/redis/NAME.lua are implemented here in C with the same integer
 *   arithmetic (test_core_store runs one case table against both).
 *
 * Design notes
 *   - 64 shards, each a chained hash table under its own mutex.  The shard
 *     is chosen by the key's hash tag, so all keys of one script call (which
 *     share a tag) sit under one lock and the script is atomic.  A gcra
 *     call across tags (mw_store_batch_script_multi) locks every shard it
 *     touches, in address order.
 *   - Hashing is seeded from getrandom() at creation: keys contain client
 *     addresses and senders, and a fixed hash would let a sender pile keys
 *     into one chain.
 *   - Expiry: lazily on access, plus a sweep of a shard at most once a
 *     second when it is full.  Bounded size: state.max_keys split over the
 *     shards; a full shard evicts, among a sample of entries, the one that
 *     would expire soonest (a rate-limit bucket forgotten early errs on the
 *     side of accepting mail).  Evictions are counted.
 *   - Values are kept like Redis keeps them: strings (decimal integers for
 *     counters and TATs) and hashes of integer fields.
 *
 * See also: store.h, store.c, store_redis.c, scripts/redis/NAME.lua.
 */
#include "store.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "alloc.h"
#include "log.h"

#define NSHARDS       64
#define SAMPLE        8
#define SWEEP_EVERY   1000      /* ms between sweeps of a full shard */

enum { ENT_STR, ENT_HASH };

struct mem_field {
    char     *name;
    size_t    len;
    long long v;
};

struct mem_entry {
    struct mem_entry *next;
    uint64_t          hash;
    uint64_t          expire_ms;     /* 0 = never */
    int               type;
    char             *str;           /* ENT_STR */
    size_t            slen;
    struct mem_field *fields;        /* ENT_HASH */
    size_t            nfields, cap;
    size_t            keylen;
    char              key[];
};

struct mem_shard {
    pthread_mutex_t    mu;
    struct mem_entry **tab;
    size_t             nbuckets;     /* power of two */
    size_t             count, max;
    size_t             cursor;       /* eviction sampling position */
    uint64_t           next_sweep_ms;
};

struct mw_store_mem {
    const mw_store  *owner;          /* for the clock */
    uint64_t         seed;
    struct mem_shard shards[NSHARDS];
    atomic_ullong    evictions;
};

/* ---- hashing ---------------------------------------------------------------- */

static uint64_t hash_bytes(uint64_t seed, const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    /* fmix64: spread the bits so low bits (bucket index) depend on all. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static struct mem_shard *shard_of(mw_store_mem *m, const char *key, size_t len)
{
    size_t tl;
    const char *tag = mw_store_key_tag(key, len, &tl);
    return &m->shards[hash_bytes(m->seed ^ 0x9e3779b97f4a7c15ULL, tag, tl) % NSHARDS];
}

/* ---- entries ---------------------------------------------------------------- */

static void entry_free(struct mem_entry *e)
{
    for (size_t i = 0; i < e->nfields; i++)
        free(e->fields[i].name);
    free(e->fields);
    free(e->str);
    free(e);
}

static void unlink_entry(struct mem_shard *sh, struct mem_entry **pp)
{
    struct mem_entry *e = *pp;
    *pp = e->next;
    sh->count--;
    entry_free(e);
}

static bool expired(const struct mem_entry *e, uint64_t now_ms)
{
    return e->expire_ms != 0 && e->expire_ms <= now_ms;
}

static struct mem_entry **find_slot(struct mem_shard *sh, uint64_t h, const char *key, size_t len)
{
    struct mem_entry **pp = &sh->tab[h & (sh->nbuckets - 1)];

    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->keylen == len && memcmp((*pp)->key, key, len) == 0)
            return pp;
    return pp;
}

/* The live entry for key, or NULL (an expired one is removed). */
static struct mem_entry *lookup(mw_store_mem *m, struct mem_shard *sh, const char *key, size_t len,
                                uint64_t now_ms)
{
    uint64_t h = hash_bytes(m->seed, key, len);
    struct mem_entry **pp = find_slot(sh, h, key, len);

    if (*pp == NULL)
        return NULL;
    if (expired(*pp, now_ms)) {
        unlink_entry(sh, pp);
        return NULL;
    }
    return *pp;
}

static void sweep(struct mem_shard *sh, uint64_t now_ms)
{
    for (size_t b = 0; b < sh->nbuckets; b++) {
        struct mem_entry **pp = &sh->tab[b];
        while (*pp != NULL) {
            if (expired(*pp, now_ms))
                unlink_entry(sh, pp);
            else
                pp = &(*pp)->next;
        }
    }
}

/* Evict the entry expiring soonest among a sample (never-expiring ones last). */
static void evict_one(mw_store_mem *m, struct mem_shard *sh)
{
    struct mem_entry **victim = NULL;
    uint64_t best = UINT64_MAX;
    size_t seen = 0;

    for (size_t i = 0; i < sh->nbuckets && seen < SAMPLE; i++) {
        size_t b = (sh->cursor + i) & (sh->nbuckets - 1);
        for (struct mem_entry **pp = &sh->tab[b]; *pp != NULL && seen < SAMPLE; pp = &(*pp)->next) {
            uint64_t exp = (*pp)->expire_ms != 0 ? (*pp)->expire_ms : UINT64_MAX;
            seen++;
            if (victim == NULL || exp < best) {
                victim = pp;
                best = exp;
            }
        }
        if (seen >= SAMPLE)
            sh->cursor = b + 1;
    }
    if (victim != NULL) {
        unlink_entry(sh, victim);
        atomic_fetch_add(&m->evictions, 1);
    }
}

static void grow(mw_store_mem *m, struct mem_shard *sh)
{
    size_t nb = sh->nbuckets * 2;
    struct mem_entry **tab = mw_calloc(nb, sizeof *tab);

    for (size_t b = 0; b < sh->nbuckets; b++) {
        struct mem_entry *e = sh->tab[b], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->next = tab[e->hash & (nb - 1)];
            tab[e->hash & (nb - 1)] = e;
        }
    }
    free(sh->tab);
    sh->tab = tab;
    sh->nbuckets = nb;
    (void)m;
}

/* The live entry for key, created (empty, of type) if absent.  NULL if it
 * exists with another type. */
static struct mem_entry *lookup_create(mw_store_mem *m, struct mem_shard *sh, const char *key,
                                       size_t len, int type, uint64_t now_ms)
{
    struct mem_entry *e = lookup(m, sh, key, len, now_ms);
    uint64_t h;

    if (e != NULL)
        return e->type == type ? e : NULL;
    if (sh->count >= sh->max) {
        if (now_ms >= sh->next_sweep_ms) {
            sweep(sh, now_ms);
            sh->next_sweep_ms = now_ms + SWEEP_EVERY;
        }
        while (sh->count >= sh->max)
            evict_one(m, sh);
    }
    if (sh->count >= sh->nbuckets && sh->nbuckets < (1u << 24))
        grow(m, sh);
    h = hash_bytes(m->seed, key, len);
    e = mw_calloc(1, sizeof *e + len + 1);
    e->hash = h;
    e->type = type;
    e->keylen = len;
    memcpy(e->key, key, len);
    e->next = sh->tab[h & (sh->nbuckets - 1)];
    sh->tab[h & (sh->nbuckets - 1)] = e;
    sh->count++;
    return e;
}

static void remove_key(mw_store_mem *m, struct mem_shard *sh, const char *key, size_t len)
{
    struct mem_entry **pp = find_slot(sh, hash_bytes(m->seed, key, len), key, len);
    if (*pp != NULL)
        unlink_entry(sh, pp);
}

static void set_str(struct mem_entry *e, const char *s, size_t len)
{
    free(e->str);
    e->str = mw_strndup(s, len);
    e->slen = len;
}

static struct mem_field *field_find(struct mem_entry *e, const char *name, size_t len, bool create)
{
    for (size_t i = 0; i < e->nfields; i++)
        if (e->fields[i].len == len && memcmp(e->fields[i].name, name, len) == 0)
            return &e->fields[i];
    if (!create)
        return NULL;
    if (e->nfields == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 4;
        e->fields = mw_reallocarray(e->fields, e->cap, sizeof *e->fields);
    }
    e->fields[e->nfields] = (struct mem_field){.name = mw_strndup(name, len), .len = len};
    return &e->fields[e->nfields++];
}

/* ---- number helpers ------------------------------------------------------------- */

static bool parse_ll(const char *s, size_t len, long long *out)
{
    char buf[32], *end;

    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return errno == 0 && *end == '\0';
}

static long long arg_ll(const mw_store_op *op, size_t i)
{
    long long v = 0;
    if (i < op->nargs)
        parse_ll(op->args[i], op->arglens[i], &v);
    return v;
}

static long long ceil_div(long long a, long long b)
{
    return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

static long long floor_div(long long a, long long b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static void val_int(mw_store_value *v, long long x)
{
    mw_store_value_clear(v);
    v->type = MW_STORE_INT;
    v->integer = x;
}

static void val_array(mw_store_value *v, size_t n)
{
    mw_store_value_clear(v);
    v->type = MW_STORE_ARRAY;
    v->elem = mw_calloc(n + 1, sizeof *v->elem);
    v->nelem = n;
}

/* ---- operations ----------------------------------------------------------------- */

#define WRONGTYPE "WRONGTYPE Operation against a key holding the wrong kind of value"

static void op_incr(mw_store_mem *m, struct mem_shard *sh, mw_store_op *op, uint64_t now_ms)
{
    struct mem_entry *e = lookup_create(m, sh, op->keys[0], op->keylens[0], ENT_STR, now_ms);
    long long v = 0;
    char num[32];

    if (e == NULL)
        return mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
    if (e->str != NULL && !parse_ll(e->str, e->slen, &v))
        return mw_store_op_fail(op, MW_STORE_ERROR, "ERR value is not an integer");
    v += arg_ll(op, 0);
    set_str(e, num, (size_t)snprintf(num, sizeof num, "%lld", v));
    if (e->expire_ms == 0)
        e->expire_ms = now_ms + (uint64_t)arg_ll(op, 1);
    val_int(&op->val, v);
}

static void op_hincr(mw_store_mem *m, struct mem_shard *sh, mw_store_op *op, uint64_t now_ms)
{
    struct mem_entry *e = lookup_create(m, sh, op->keys[0], op->keylens[0], ENT_HASH, now_ms);
    struct mem_field *f;

    if (e == NULL)
        return mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
    f = field_find(e, op->args[0], op->arglens[0], true);
    f->v += arg_ll(op, 1);
    e->expire_ms = now_ms + (uint64_t)arg_ll(op, 2);
    val_int(&op->val, f->v);
}

/* scripts/redis/gcra.lua, in C: the same integers, the same decisions. */
/* shs[i]: the (locked) shard of KEYS[i]. */
static void script_gcra(mw_store_mem *m, struct mem_shard *const *shs, mw_store_op *op, uint64_t now_ms)
{
    size_t n = op->nkeys;
    long long now = arg_ll(op, 0);
    long long *nt = mw_calloc(n + 1, sizeof *nt), *tats = mw_calloc(n + 1, sizeof *tats);
    bool all = true;

    if (op->nargs != 1 + 3 * n) {
        free(nt);
        free(tats);
        return mw_store_op_fail(op, MW_STORE_ERROR, "ERR gcra: wrong number of arguments");
    }
    val_array(&op->val, 4 * n);
    for (size_t i = 0; i < n; i++) {
        long long iv = arg_ll(op, 1 + 3 * i), burst = arg_ll(op, 2 + 3 * i),
                  cost = arg_ll(op, 3 + 3 * i), tat = 0;
        struct mem_entry *e = lookup(m, shs[i], op->keys[i], op->keylens[i], now_ms);
        mw_store_value *r = &op->val.elem[4 * i];

        if (e != NULL && e->type != ENT_STR) {
            free(nt);
            free(tats);
            return mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
        }
        if (e != NULL && !parse_ll(e->str, e->slen, &tat))
            tat = 0;
        if (tat < now)
            tat = now;
        tats[i] = tat;
        /* tol: the callers' clock skew (see gcra.lua) */
        long long limit = burst * iv, t = tat + cost * iv, tol = iv / 2 < 100000 ? iv / 2 : 100000;
        for (int k = 0; k < 4; k++)
            r[k].type = MW_STORE_INT;
        if (t - now <= limit + tol) {
            nt[i] = t;
            r[0].integer = 1;
            r[1].integer = t - now > limit ? 0 : floor_div(limit - (t - now), iv);
            r[2].integer = 0;
            r[3].integer = ceil_div(t - now, 1000);
        } else {
            all = false;
            r[0].integer = 0;
            r[1].integer = floor_div(limit - (tat - now), iv);
            r[2].integer = cost > burst ? -1 : ceil_div(t - now - limit, 1000);
            r[3].integer = ceil_div(tat - now, 1000);
        }
    }
    for (size_t i = 0; i < n; i++) {
        mw_store_value *r = &op->val.elem[4 * i];
        if (all) {
            char num[32];
            long long ttl = ceil_div(nt[i] - now, 1000);
            struct mem_entry *e = lookup_create(m, shs[i], op->keys[i], op->keylens[i], ENT_STR, now_ms);
            if (e == NULL)
                continue;   /* checked above: cannot happen */
            set_str(e, num, (size_t)snprintf(num, sizeof num, "%lld", nt[i]));
            e->expire_ms = now_ms + (uint64_t)(ttl < 1 ? 1 : ttl);
        } else if (r[0].integer == 1) {
            long long iv = arg_ll(op, 1 + 3 * i), burst = arg_ll(op, 2 + 3 * i);
            r[1].integer = floor_div(burst * iv - (tats[i] - now), iv);
            r[3].integer = ceil_div(tats[i] - now, 1000);
        }
    }
    free(nt);
    free(tats);
}

/* scripts/redis/reputation.lua, in C. */
static void script_reputation(mw_store_mem *m, struct mem_shard *sh, mw_store_op *op,
                              uint64_t now_ms)
{
    struct mem_entry *e;
    struct mem_field *f;
    long long oldest, maxf;

    if (op->nkeys != 1 || op->nargs != 5)
        return mw_store_op_fail(op, MW_STORE_ERROR, "ERR reputation: wrong number of arguments");
    e = lookup_create(m, sh, op->keys[0], op->keylens[0], ENT_HASH, now_ms);
    if (e == NULL)
        return mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
    f = field_find(e, op->args[0], op->arglens[0], true);
    f->v += arg_ll(op, 1);
    val_int(&op->val, f->v);
    e->expire_ms = now_ms + (uint64_t)arg_ll(op, 2);
    oldest = arg_ll(op, 3);
    maxf = arg_ll(op, 4);
    if ((long long)e->nfields <= maxf)
        return;
    for (size_t i = 0; i < e->nfields;) {
        char *colon = memchr(e->fields[i].name, ':', e->fields[i].len);
        long long b = -1;
        if (colon == NULL || !parse_ll(e->fields[i].name, (size_t)(colon - e->fields[i].name), &b) ||
            b < oldest) {
            free(e->fields[i].name);
            e->fields[i] = e->fields[--e->nfields];
        } else {
            i++;
        }
    }
}

static int shard_cmp(const void *a, const void *b)
{
    const struct mem_shard *x = *(struct mem_shard *const *)a, *y = *(struct mem_shard *const *)b;
    return x < y ? -1 : x > y;
}

/* A gcra call whose keys may sit in several shards (mw_store_batch_script_
 * multi): every shard involved is locked, in address order (no other path
 * holds two shard locks), so the call is atomic like a Redis script. */
static void op_gcra_multi(mw_store_mem *m, mw_store_op *op, uint64_t now_ms)
{
    struct mem_shard **shs = mw_calloc(op->nkeys + 1, sizeof *shs);
    struct mem_shard **lk = mw_calloc(op->nkeys + 1, sizeof *lk);
    size_t nlk = 0;

    for (size_t i = 0; i < op->nkeys; i++)
        shs[i] = lk[i] = shard_of(m, op->keys[i], op->keylens[i]);
    qsort(lk, op->nkeys, sizeof *lk, shard_cmp);
    for (size_t i = 0; i < op->nkeys; i++)
        if (nlk == 0 || lk[nlk - 1] != lk[i])
            lk[nlk++] = lk[i];
    for (size_t i = 0; i < nlk; i++)
        pthread_mutex_lock(&lk[i]->mu);
    op->status = MW_STORE_OK;
    script_gcra(m, shs, op, now_ms);
    for (size_t i = nlk; i-- > 0;)
        pthread_mutex_unlock(&lk[i]->mu);
    free(lk);
    free(shs);
}

static void op_exec(mw_store_mem *m, mw_store_op *op, uint64_t now_ms)
{
    struct mem_shard *sh;
    struct mem_entry *e;

    if (op->kind == MW_STORE_OP_SCRIPT && op->multi_slot && op->nkeys > 1 &&
        strcmp(op->script->name, "gcra") == 0)
        return op_gcra_multi(m, op, now_ms);
    sh = shard_of(m, op->keys[0], op->keylens[0]);
    pthread_mutex_lock(&sh->mu);
    op->status = MW_STORE_OK;
    switch (op->kind) {
    case MW_STORE_OP_GET:
        e = lookup(m, sh, op->keys[0], op->keylens[0], now_ms);
        if (e == NULL)
            op->status = MW_STORE_NOTFOUND;
        else if (e->type != ENT_STR)
            mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
        else
            mw_store_value_set_str(&op->val, e->str, e->slen);
        break;
    case MW_STORE_OP_INCR:
        op_incr(m, sh, op, now_ms);
        break;
    case MW_STORE_OP_HGETALL:
        e = lookup(m, sh, op->keys[0], op->keylens[0], now_ms);
        if (e == NULL) {
            val_array(&op->val, 0);
            op->status = MW_STORE_NOTFOUND;
        } else if (e->type != ENT_HASH) {
            mw_store_op_fail(op, MW_STORE_ERROR, WRONGTYPE);
        } else {
            val_array(&op->val, 2 * e->nfields);
            for (size_t i = 0; i < e->nfields; i++) {
                char num[32];
                mw_store_value_set_str(&op->val.elem[2 * i], e->fields[i].name, e->fields[i].len);
                mw_store_value_set_str(&op->val.elem[2 * i + 1], num,
                                       (size_t)snprintf(num, sizeof num, "%lld", e->fields[i].v));
            }
        }
        break;
    case MW_STORE_OP_HINCR:
        op_hincr(m, sh, op, now_ms);
        break;
    case MW_STORE_OP_DEL:
        e = lookup(m, sh, op->keys[0], op->keylens[0], now_ms);
        if (e != NULL)
            remove_key(m, sh, op->keys[0], op->keylens[0]);
        val_int(&op->val, e != NULL);
        break;
    case MW_STORE_OP_SCRIPT:
        if (strcmp(op->script->name, "gcra") == 0) {
            struct mem_shard *one[16], **shs = op->nkeys <= 16 ? one : mw_calloc(op->nkeys, sizeof *shs);
            for (size_t i = 0; i < op->nkeys; i++)
                shs[i] = sh;   /* one hash tag: one shard (store.c checked) */
            script_gcra(m, shs, op, now_ms);
            if (shs != one)
                free(shs);
        }
        else if (strcmp(op->script->name, "reputation") == 0)
            script_reputation(m, sh, op, now_ms);
        else
            mw_store_op_fail(op, MW_STORE_ERROR, "script not available in the memory backend");
        break;
    }
    pthread_mutex_unlock(&sh->mu);
}

/* ---- backend interface ---------------------------------------------------------- */

mw_store_mem *mw_store_mem_create(const mw_config *cfg, const mw_store *owner)
{
    mw_store_mem *m = mw_calloc(1, sizeof *m);
    size_t per = cfg->state_max_keys / NSHARDS;

    m->owner = owner;
    if (getrandom(&m->seed, sizeof m->seed, 0) != (ssize_t)sizeof m->seed)
        m->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m;
    for (size_t i = 0; i < NSHARDS; i++) {
        pthread_mutex_init(&m->shards[i].mu, NULL);
        m->shards[i].nbuckets = 64;
        m->shards[i].tab = mw_calloc(64, sizeof *m->shards[i].tab);
        m->shards[i].max = per < 16 ? 16 : per;
    }
    return m;
}

void mw_store_mem_destroy(mw_store_mem **mp)
{
    mw_store_mem *m = *mp;

    if (m == NULL)
        return;
    for (size_t i = 0; i < NSHARDS; i++) {
        struct mem_shard *sh = &m->shards[i];
        for (size_t b = 0; b < sh->nbuckets; b++)
            while (sh->tab[b] != NULL)
                unlink_entry(sh, &sh->tab[b]);
        free(sh->tab);
        pthread_mutex_destroy(&sh->mu);
    }
    MW_FREE(mp);
}

mw_store_status mw_store_mem_exec(mw_store_mem *m, mw_store_op *ops, size_t n)
{
    uint64_t now_ms = mw_store_now_us(m->owner) / 1000;

    for (size_t i = 0; i < n; i++)
        op_exec(m, &ops[i], now_ms);
    return MW_STORE_OK;
}

struct scan_hit {
    char     *key;
    size_t    len;
    long long ttl;
};

mw_store_status mw_store_mem_scan(mw_store_mem *m, const char *pattern, mw_store_scan_fn fn,
                                  void *arg)
{
    uint64_t now_ms = mw_store_now_us(m->owner) / 1000;

    for (size_t i = 0; i < NSHARDS; i++) {
        struct mem_shard *sh = &m->shards[i];
        struct scan_hit *hits = NULL;
        size_t nhits = 0, cap = 0;

        /* Collect under the lock, report outside it (fn may be slow). */
        pthread_mutex_lock(&sh->mu);
        for (size_t b = 0; b < sh->nbuckets; b++) {
            for (struct mem_entry *e = sh->tab[b]; e != NULL; e = e->next) {
                if (expired(e, now_ms) || memchr(e->key, '\0', e->keylen) != NULL ||
                    fnmatch(pattern, e->key, 0) != 0)
                    continue;
                if (nhits == cap) {
                    cap = cap ? cap * 2 : 16;
                    hits = mw_reallocarray(hits, cap, sizeof *hits);
                }
                hits[nhits++] = (struct scan_hit){
                    mw_strndup(e->key, e->keylen), e->keylen,
                    e->expire_ms ? (long long)(e->expire_ms - now_ms) : -1};
            }
        }
        pthread_mutex_unlock(&sh->mu);
        bool go = true;
        for (size_t j = 0; j < nhits; j++) {
            if (go)
                go = fn(arg, hits[j].key, hits[j].len, hits[j].ttl);
            free(hits[j].key);
        }
        free(hits);
        if (!go)
            break;
    }
    return MW_STORE_OK;
}

void mw_store_mem_stats(mw_store_mem *m, mw_store_stats *out)
{
    unsigned long long keys = 0;

    for (size_t i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&m->shards[i].mu);
        keys += m->shards[i].count;
        pthread_mutex_unlock(&m->shards[i].mu);
    }
    out->keys = keys;
    out->evictions = atomic_load(&m->evictions);
}
