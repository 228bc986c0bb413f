/*
 * store.c - the state store: batches, reference counting, the clock, and
 * dispatch to the memory (store_memory.c) or redis (store_redis.c) backend.
 *
 * Purpose
 *   Rate limits and reputation talk to this interface only (store.h): they
 *   fill a batch with get / incr / hgetall / hincr / del / named-script
 *   operations and execute it in one round trip (mw_store_exec), or send it
 *   without waiting for the answers (mw_store_send).  Several modules may
 *   fill one batch (the engine's stages: rate limits and reputation in one
 *   round trip).
 *
 * Design notes
 *   - Keys are copied into the batch without the prefix; the redis backend
 *     adds redis.prefix when it writes the command (argv form, explicit
 *     lengths), the memory backend needs none.
 *   - A script's keys must share a hash tag (one Redis Cluster slot, one
 *     memory shard); a violation is our own bug, reported as MW_STORE_ERROR
 *     for that operation rather than a crash.
 *   - A store is reference counted so a reload can keep the old one (and
 *     the memory backend's state) when the state settings did not change.
 *
 * See also: store.h, store_memory.c, store_redis.c, scripts/redis/NAME.lua.
 */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"

struct mw_store {
    atomic_uint        refs;
    bool               memory;
    mw_store_mem      *mem;
    mw_store_redis    *redis;
    mw_store_clock_fn  clock;
    void              *clock_arg;
    atomic_ullong      batches, failures, mem_trips, sends;
};

struct mw_store_batch {
    mw_store_op *ops;
    size_t       n, cap;
};

const char *mw_store_status_name(mw_store_status st)
{
    switch (st) {
    case MW_STORE_OK:       return "ok";
    case MW_STORE_NOTFOUND: return "not found";
    case MW_STORE_TEMPFAIL: return "temporary failure";
    case MW_STORE_ERROR:    return "error";
    }
    return "?";
}

/* ---- lifecycle ---------------------------------------------------------------- */

mw_store *mw_store_create(const mw_config *cfg, char *err, size_t errlen)
{
    mw_store *s = mw_calloc(1, sizeof *s);

    atomic_init(&s->refs, 1);
    s->memory = cfg->state_backend == MW_STATE_MEMORY;
    if (s->memory)
        s->mem = mw_store_mem_create(cfg, s);
    else
        s->redis = mw_store_redis_create(cfg, s);
    if (s->mem == NULL && s->redis == NULL) {
        snprintf(err, errlen, "state store: cannot create the %s backend",
                 s->memory ? "memory" : "redis");
        free(s);
        return NULL;
    }
    return s;
}

mw_store *mw_store_ref(mw_store *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void mw_store_destroy(mw_store **sp)
{
    mw_store *s = sp != NULL ? *sp : NULL;

    if (s == NULL)
        return;
    *sp = NULL;
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    if (s->mem != NULL)
        mw_store_mem_destroy(&s->mem);
    if (s->redis != NULL)
        mw_store_redis_destroy(&s->redis);
    free(s);
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool mw_store_config_same(const mw_config *a, const mw_config *b)
{
    if (a->state_backend != b->state_backend)
        return false;
    if (a->state_backend == MW_STATE_MEMORY)
        return a->state_max_keys == b->state_max_keys;
    if (a->nredis_sentinels != b->nredis_sentinels ||
        a->nredis_cluster_nodes != b->nredis_cluster_nodes)
        return false;
    for (size_t i = 0; i < a->nredis_cluster_nodes; i++)
        if (!str_eq(a->redis_cluster_nodes[i], b->redis_cluster_nodes[i]))
            return false;
    for (size_t i = 0; i < a->nredis_sentinels; i++)
        if (!str_eq(a->redis_sentinels[i], b->redis_sentinels[i]))
            return false;
    return str_eq(a->redis_host, b->redis_host) && a->redis_port == b->redis_port &&
           str_eq(a->redis_master_name, b->redis_master_name) &&
           str_eq(a->redis_username, b->redis_username) &&
           str_eq(a->redis_password, b->redis_password) && a->redis_db == b->redis_db &&
           str_eq(a->redis_prefix, b->redis_prefix) &&
           a->redis_connect_timeout_ms == b->redis_connect_timeout_ms &&
           a->redis_command_timeout_ms == b->redis_command_timeout_ms &&
           a->redis_pool_size == b->redis_pool_size;
}

const char *mw_store_describe(const mw_store *s)
{
    return s->memory ? "memory" : mw_store_redis_describe(s->redis);
}

bool mw_store_is_memory(const mw_store *s) { return s->memory; }

uint64_t mw_store_now_us(const mw_store *s)
{
    struct timespec ts;

    if (s->clock != NULL)
        return s->clock(s->clock_arg);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void mw_store_set_clock(mw_store *s, mw_store_clock_fn fn, void *arg)
{
    s->clock = fn;
    s->clock_arg = arg;
}

void mw_store_stats_get(mw_store *s, mw_store_stats *out)
{
    memset(out, 0, sizeof *out);
    if (s->memory)
        mw_store_mem_stats(s->mem, out);
    else
        mw_store_redis_stats(s->redis, out);
    out->batches = atomic_load(&s->batches);
    out->failures = atomic_load(&s->failures);
    out->sends = atomic_load(&s->sends);
    if (s->memory)
        out->round_trips = atomic_load(&s->mem_trips);
}

/* ---- values ------------------------------------------------------------------ */

void mw_store_value_clear(mw_store_value *v)
{
    for (size_t i = 0; i < v->nelem; i++)
        mw_store_value_clear(&v->elem[i]);
    free(v->elem);
    free(v->str);
    memset(v, 0, sizeof *v);
}

void mw_store_value_set_str(mw_store_value *v, const char *s, size_t len)
{
    mw_store_value_clear(v);
    v->type = MW_STORE_STR;
    v->str = mw_malloc(len + 1);
    memcpy(v->str, s, len);
    v->str[len] = '\0';
    v->len = len;
}

void mw_store_op_fail(mw_store_op *op, mw_store_status st, const char *why)
{
    mw_store_value_clear(&op->val);
    op->status = st;
    free(op->err);
    op->err = mw_strdup(why != NULL ? why : mw_store_status_name(st));
}

const struct mw_store_script *mw_store_script_find(const char *name)
{
    for (const struct mw_store_script *sc = mw_store_scripts; sc->name != NULL; sc++)
        if (strcmp(sc->name, name) == 0)
            return sc;
    return NULL;
}

const char *mw_store_key_tag(const char *key, size_t keylen, size_t *taglen)
{
    const char *open = memchr(key, '{', keylen);

    if (open != NULL) {
        const char *close = memchr(open + 1, '}', keylen - (size_t)(open + 1 - key));
        if (close != NULL && close > open + 1) {
            *taglen = (size_t)(close - open - 1);
            return open + 1;
        }
    }
    *taglen = keylen;
    return key;
}

/* ---- batches ------------------------------------------------------------------ */

mw_store_batch *mw_store_batch_new(void)
{
    return mw_calloc(1, sizeof(mw_store_batch));
}

static void op_clear(mw_store_op *op)
{
    for (size_t i = 0; i < op->nkeys; i++)
        free(op->keys[i]);
    for (size_t i = 0; i < op->nargs; i++)
        free(op->args[i]);
    free(op->keys);
    free(op->keylens);
    free(op->args);
    free(op->arglens);
    free(op->err);
    mw_store_value_clear(&op->val);
    memset(op, 0, sizeof *op);
}

void mw_store_batch_reset(mw_store_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        op_clear(&b->ops[i]);
    b->n = 0;
}

void mw_store_batch_free(mw_store_batch **bp)
{
    if (bp == NULL || *bp == NULL)
        return;
    mw_store_batch_reset(*bp);
    free((*bp)->ops);
    MW_FREE(bp);
}

size_t mw_store_batch_count(const mw_store_batch *b) { return b->n; }

static mw_store_op *op_new(mw_store_batch *b, mw_store_opkind kind, size_t nkeys, size_t nargs)
{
    mw_store_op *op;

    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        b->ops = mw_reallocarray(b->ops, b->cap, sizeof *b->ops);
    }
    op = &b->ops[b->n++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->keys = mw_calloc(nkeys + 1, sizeof *op->keys);
    op->keylens = mw_calloc(nkeys + 1, sizeof *op->keylens);
    op->args = mw_calloc(nargs + 1, sizeof *op->args);
    op->arglens = mw_calloc(nargs + 1, sizeof *op->arglens);
    return op;
}

static void op_key(mw_store_op *op, const char *key, size_t len)
{
    op->keys[op->nkeys] = mw_strndup(key, len);
    op->keylens[op->nkeys++] = len;
}

static void op_arg(mw_store_op *op, const char *arg, size_t len)
{
    op->args[op->nargs] = mw_strndup(arg, len);
    op->arglens[op->nargs++] = len;
}

static void op_arg_ll(mw_store_op *op, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%lld", v);
    op_arg(op, num, (size_t)n);
}

size_t mw_store_batch_get(mw_store_batch *b, const char *key, size_t keylen)
{
    op_key(op_new(b, MW_STORE_OP_GET, 1, 0), key, keylen);
    return b->n - 1;
}

size_t mw_store_batch_incr(mw_store_batch *b, const char *key, size_t keylen, long long delta,
                           unsigned long long ttl_ms)
{
    mw_store_op *op = op_new(b, MW_STORE_OP_INCR, 1, 2);

    op_key(op, key, keylen);
    op_arg_ll(op, delta);
    op_arg_ll(op, (long long)(ttl_ms > 0 ? ttl_ms : 1));
    return b->n - 1;
}

size_t mw_store_batch_hgetall(mw_store_batch *b, const char *key, size_t keylen)
{
    op_key(op_new(b, MW_STORE_OP_HGETALL, 1, 0), key, keylen);
    return b->n - 1;
}

size_t mw_store_batch_hincr(mw_store_batch *b, const char *key, size_t keylen, const char *field,
                            long long delta, unsigned long long ttl_ms)
{
    mw_store_op *op = op_new(b, MW_STORE_OP_HINCR, 1, 3);

    op_key(op, key, keylen);
    op_arg(op, field, strlen(field));
    op_arg_ll(op, delta);
    op_arg_ll(op, (long long)(ttl_ms > 0 ? ttl_ms : 1));
    return b->n - 1;
}

size_t mw_store_batch_del(mw_store_batch *b, const char *key, size_t keylen)
{
    op_key(op_new(b, MW_STORE_OP_DEL, 1, 0), key, keylen);
    return b->n - 1;
}

size_t mw_store_batch_script(mw_store_batch *b, const char *name, const char *const *keys,
                             size_t nkeys, const char *const *args, size_t nargs)
{
    mw_store_op *op = op_new(b, MW_STORE_OP_SCRIPT, nkeys, nargs);

    op->script = mw_store_script_find(name);
    for (size_t i = 0; i < nkeys; i++)
        op_key(op, keys[i], strlen(keys[i]));
    for (size_t i = 0; i < nargs; i++)
        op_arg(op, args[i], strlen(args[i]));
    return b->n - 1;
}

size_t mw_store_batch_script_multi(mw_store_batch *b, const char *name, const char *const *keys,
                                   size_t nkeys, const char *const *args, size_t nargs)
{
    size_t i = mw_store_batch_script(b, name, keys, nkeys, args, nargs);

    b->ops[i].multi_slot = true;
    return i;
}

mw_store_status mw_store_batch_status(const mw_store_batch *b, size_t i)
{
    return i < b->n ? b->ops[i].status : MW_STORE_ERROR;
}

const mw_store_value *mw_store_batch_result(const mw_store_batch *b, size_t i)
{
    static const mw_store_value nil;
    return i < b->n ? &b->ops[i].val : &nil;
}

const char *mw_store_batch_error(const mw_store_batch *b, size_t i)
{
    if (i >= b->n)
        return "no such operation";
    return b->ops[i].err != NULL ? b->ops[i].err : "";
}

/* Our own mistakes, caught before anything is sent: unknown script, keys
 * of one script in different slots.  true if op can be sent. */
static bool op_valid(mw_store_op *op)
{
    size_t tl0, tl;
    const char *t0;

    if (op->kind != MW_STORE_OP_SCRIPT)
        return true;
    if (op->script == NULL) {
        mw_store_op_fail(op, MW_STORE_ERROR, "unknown script");
        return false;
    }
    if (op->nkeys == 0 || op->multi_slot)
        return true;
    t0 = mw_store_key_tag(op->keys[0], op->keylens[0], &tl0);
    for (size_t i = 1; i < op->nkeys; i++) {
        const char *t = mw_store_key_tag(op->keys[i], op->keylens[i], &tl);
        if (tl != tl0 || memcmp(t, t0, tl) != 0) {
            mw_store_op_fail(op, MW_STORE_ERROR, "script keys in different slots");
            return false;
        }
    }
    return true;
}

_Static_assert(MW_ML_STORE_OK == (int)MW_STORE_OK && MW_ML_STORE_NOTFOUND == (int)MW_STORE_NOTFOUND &&
               MW_ML_STORE_TEMPFAIL == (int)MW_STORE_TEMPFAIL && MW_ML_STORE_ERROR == (int)MW_STORE_ERROR,
               "metrics labels follow mw_store_status");

/* exec (wait for the answers) or send (do not wait). */
static mw_store_status store_run(mw_store *s, mw_store_batch *b, bool wait, char *why, size_t whylen)
{
    mw_store_op *run = mw_calloc(b->n + 1, sizeof *run);
    size_t *idx = mw_calloc(b->n + 1, sizeof *idx), nrun = 0;
    mw_store_status st = MW_STORE_OK;
    char reason[256] = "";

    /* Only the valid operations go to the backend (moved, then moved back). */
    for (size_t i = 0; i < b->n; i++) {
        mw_store_value_clear(&b->ops[i].val);
        MW_FREE(&b->ops[i].err);
        b->ops[i].status = MW_STORE_OK;
        if (op_valid(&b->ops[i])) {
            idx[nrun] = i;
            run[nrun++] = b->ops[i];
        }
    }
    if (nrun > 0 && s->memory) {
        st = mw_store_mem_exec(s->mem, run, nrun);
        if (wait)
            atomic_fetch_add(&s->mem_trips, 1);
    } else if (nrun > 0 && !wait) {
        st = mw_store_redis_send(s->redis, run, nrun, reason, sizeof reason);
    } else if (nrun > 0) {
        uint64_t t0 = mw_metrics_now_ns();
        st = mw_store_redis_exec(s->redis, run, nrun, reason, sizeof reason);
        mw_metric_observe(MW_M_REDIS_SECONDS, MW_ML_REDIS_EXEC, mw_metrics_now_ns() - t0);
        mw_metric_inc(MW_M_REDIS_REQUESTS, MW_ML_REDIS_EXEC, (unsigned)st);
    }
    if (nrun > 0) {
        for (size_t j = 0; j < nrun; j++)
            b->ops[idx[j]] = run[j];
    }
    free(run);
    free(idx);
    atomic_fetch_add(wait ? &s->batches : &s->sends, 1);
    if (st == MW_STORE_TEMPFAIL) {
        atomic_fetch_add(&s->failures, 1);
        for (size_t i = 0; i < b->n; i++)
            if (b->ops[i].status != MW_STORE_ERROR || b->ops[i].err == NULL)
                mw_store_op_fail(&b->ops[i], MW_STORE_TEMPFAIL, reason);
    }
    if (why != NULL && whylen > 0) {
        why[0] = '\0';
        if (st == MW_STORE_TEMPFAIL)
            snprintf(why, whylen, "%s", reason[0] ? reason : "state store unavailable");
        else
            for (size_t i = 0; i < b->n; i++)
                if (b->ops[i].status == MW_STORE_ERROR) {
                    snprintf(why, whylen, "%s", b->ops[i].err ? b->ops[i].err : "error");
                    break;
                }
    }
    return st;
}

mw_store_status mw_store_exec(mw_store *s, mw_store_batch *b, char *why, size_t whylen)
{
    return store_run(s, b, true, why, whylen);
}

mw_store_status mw_store_send(mw_store *s, mw_store_batch *b, char *why, size_t whylen)
{
    return store_run(s, b, false, why, whylen);
}

mw_store_status mw_store_scan(mw_store *s, const char *pattern, mw_store_scan_fn fn, void *arg,
                              char *why, size_t whylen)
{
    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (s->memory)
        return mw_store_mem_scan(s->mem, pattern, fn, arg);
    uint64_t t0 = mw_metrics_now_ns();
    mw_store_status st = mw_store_redis_scan(s->redis, pattern, fn, arg, why, whylen);
    mw_metric_observe(MW_M_REDIS_SECONDS, MW_ML_REDIS_SCAN, mw_metrics_now_ns() - t0);
    mw_metric_inc(MW_M_REDIS_REQUESTS, MW_ML_REDIS_SCAN, (unsigned)st);
    return st;
}
