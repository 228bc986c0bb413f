/*
 * store_redis_cluster.c - Redis Cluster routing for the redis store backend
 * (redis.cluster_nodes set).  hiredis 0.14 has no cluster client: this is one.
 *
 * Purpose
 *   Execute a batch of store operations (store.h) against a Redis Cluster:
 *   every operation goes to the master that serves its key's slot, the
 *   masters' pipelines are written together and then read (one round trip
 *   when the slot map is right), and every wait stays bounded by
 *   redis.command_timeout (plus redis.connect_timeout for a refresh).
 *
 * Design notes
 *   - Slot = CRC16-XMODEM(hash tag) mod 16384 on the full key (prefix
 *     included).  The slot map (slot -> node) comes from CLUSTER SLOTS,
 *     asked of any node that answers (the known nodes, replicas included,
 *     then redis.cluster_nodes), at the first use, on MOVED, after a
 *     connection error and every REFRESH_PERIOD_US.  A refresh runs in one
 *     thread at a time and at most every REFRESH_GAP_US; the others go on
 *     with the map they have.
 *   - Redirects: MOVED updates that slot at once (and asks for a refresh)
 *     and resends to the named node; ASK sends ASKING + the command to the
 *     named node once, without changing the map.  TRYAGAIN, CLUSTERDOWN,
 *     LOADING, MASTERDOWN, READONLY: the command did not run, so it is
 *     resent after a short pause while the deadline allows.
 *   - Failover: when a master dies, its pooled connections fail (an I/O
 *     error after the write: the command may have run, so that batch is not
 *     resent: TEMPFAIL, the store's failure action applies) and new
 *     connections are refused (nothing was sent: resent after a refresh if
 *     the map moved).  The node backs off (100 ms doubling to 2 s; requests
 *     for its slots fail at once meanwhile) and the map is refreshed until
 *     the promoted replica serves the slots.
 *   - One slot per script: a script's keys share a hash tag (store.c
 *     checks), except the gcra call of a message's first recipient
 *     (mw_store_batch_script_multi), which spans subjects.  Here it is split
 *     into one gcra call per slot, in the same pipeline; if any part refuses,
 *     the parts that charged are refunded (gcra_refund.lua, one more round
 *     trip, only then) and their results reported as uncharged, so "nothing
 *     is charged unless every rule allows" holds once the refund has run.
 *     Between the charge and the refund a concurrent request on those
 *     buckets may see them lower (it may be refused, never admitted past a
 *     limit); a refund lost to a failure leaves the units charged.
 *   - Sends (mw_store_send) are executed and their answers discarded: a
 *     round trip each, unlike the single-Redis path.
 *   - Connections: per node, at most redis.pool_size, made by
 *     mw_redis_connect_node (AUTH, scripts).
 *
 * Diagnostics
 *   Failures are logged at most once a minute with a count; recovery and
 *   slot-map changes (failovers) once.
 *
 * See also: store_redis_cluster.h, store_redis.c, docs/ratelimit.md.
 */
#include "store_redis_cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cidr.h"
#include "log.h"
#include "metrics.h"

#define REFRESH_PERIOD_US   (10ULL * 1000000ULL)
#define REFRESH_GAP_US      (100ULL * 1000ULL)
#define NODE_BACKOFF_MIN_MS 100
#define NODE_BACKOFF_MAX_MS 2000
#define RETRY_PAUSE_US      (20ULL * 1000ULL)
#define LOG_INTERVAL_US     (60ULL * 1000000ULL)
#define MAX_NODES           1024

struct cnode {
    char          *host;
    int            port;
    redisContext **idle;
    size_t         nidle, total;
    uint64_t       down_until;
    unsigned       backoff_ms;
};

struct mw_redis_cluster {
    mw_store_redis *r;
    char          **seeds;        /* "HOST:PORT" */
    size_t          nseeds;
    unsigned        pool_max, connect_ms, command_ms;
    bool            allow_plaintext;  /* redis.allow_plaintext: nodes off loopback allowed */
    size_t          prefixlen;

    pthread_mutex_t mu;           /* everything below */
    pthread_cond_t  cv;
    struct cnode   *nodes;
    size_t          nnodes;
    uint16_t        slot[MW_REDIS_CLUSTER_SLOTS];   /* node index + 1; 0: unknown */
    uint64_t        refreshed;    /* last refresh attempt (monotonic us) */
    bool            stale, refreshing, have_map;
    size_t          ask_next;     /* where the next refresh starts */
    bool            failing;
    uint64_t        last_log;
    unsigned long long fails_unlogged;

    atomic_ullong   round_trips, reconnects, failovers, sends_lost;
};

/* ---- pure parts ------------------------------------------------------------------- */

static uint16_t crc16_xmodem(const unsigned char *p, size_t n)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned mw_redis_cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return crc16_xmodem((const unsigned char *)open + 1, (size_t)(close - open - 1)) &
                   (MW_REDIS_CLUSTER_SLOTS - 1);
    }
    return crc16_xmodem((const unsigned char *)key, len) & (MW_REDIS_CLUSTER_SLOTS - 1);
}

bool mw_redis_cluster_parse_redirect(const char *err, size_t len, bool *ask, unsigned *slot,
                                     char *host, size_t hostlen, int *port)
{
    const char *p = err, *end = err + len, *sp, *colon;
    unsigned long s = 0;
    long pt = 0;

    if (len > 6 && memcmp(p, "MOVED ", 6) == 0) {
        *ask = false;
        p += 6;
    } else if (len > 4 && memcmp(p, "ASK ", 4) == 0) {
        *ask = true;
        p += 4;
    } else {
        return false;
    }
    if (p >= end || *p < '0' || *p > '9')
        return false;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        s = s * 10 + (unsigned long)(*p - '0');
        if (s >= MW_REDIS_CLUSTER_SLOTS)
            return false;
    }
    if (p >= end || *p != ' ')
        return false;
    p++;
    sp = p;
    colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q;
    if (colon == NULL || colon == sp || colon + 1 >= end)
        return false;
    for (const char *q = colon + 1; q < end; q++) {
        if (*q < '0' || *q > '9')
            return false;
        pt = pt * 10 + (*q - '0');
        if (pt > 65535)
            return false;
    }
    if (pt == 0)
        return false;
    if (*sp == '[') {
        if (colon - sp < 3 || colon[-1] != ']')
            return false;
        sp++;
        colon--;
    }
    if ((size_t)(colon - sp) >= hostlen)
        return false;
    for (const char *q = sp; q < colon; q++)
        if (*q <= ' ' || *q > '~' || *q == '[' || *q == ']')
            return false;
    memcpy(host, sp, (size_t)(colon - sp));
    host[colon - sp] = '\0';
    *slot = (unsigned)s;
    *port = (int)pt;
    return true;
}

/* One node entry of CLUSTER SLOTS: [host, port, id, ...]. */
static bool slot_node(const redisReply *e, const char *asked, const char **host, int *port)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->integer <= 0 || e->element[1]->integer > 65535)
        return false;
    *host = e->element[0]->len == 0 || strcmp(e->element[0]->str, "?") == 0 ? asked
                                                                          : e->element[0]->str;
    if (*host == NULL || strlen(*host) != ((*host == e->element[0]->str) ? e->element[0]->len
                                                                          : strlen(*host)))
        return false;   /* an embedded NUL */
    for (const char *q = *host; *q != '\0'; q++)
        if (*q <= ' ' || *q > '~')
            return false;
    *port = (int)e->element[1]->integer;
    return true;
}

bool mw_redis_cluster_parse_slots(const redisReply *rep, const char *asked_host,
                                  mw_redis_slots_fn fn, void *arg)
{
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        return false;
    /* Validate everything first: a bad reply changes nothing. */
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        const char *h;
        int p;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[0]->integer < 0 ||
            e->element[1]->integer >= MW_REDIS_CLUSTER_SLOTS ||
            e->element[0]->integer > e->element[1]->integer)
            return false;
        for (size_t j = 2; j < e->elements; j++)
            if (!slot_node(e->element[j], asked_host, &h, &p))
                return false;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        for (size_t j = 2; j < e->elements; j++) {
            const char *h;
            int p;
            slot_node(e->element[j], asked_host, &h, &p);
            fn(arg, (unsigned)e->element[0]->integer, (unsigned)e->element[1]->integer, h, p,
               j == 2);
        }
    }
    return true;
}

/* ---- nodes and the slot map (mu held) ------------------------------------------------ */

static void note_failure(mw_redis_cluster *cl, const char *why);

/* A node learnt from the cluster (CLUSTER SLOTS, MOVED, ASK) is held to the
 * rule the configuration was held to: off loopback only with
 * redis.allow_plaintext, or a node (or whoever can forge its replies) could
 * send our rate-limit traffic in plaintext across the network. */
static bool node_allowed(mw_redis_cluster *cl, const char *host, int port)
{
    if (cl->allow_plaintext || mw_host_is_loopback(host))
        return true;
    char why[400];
    snprintf(why, sizeof why, "node %s:%d named by the cluster is not loopback and "
             "redis.allow_plaintext is false: not used (mailwarden speaks plaintext to Redis; "
             "see docs/ratelimit.md)", host, port);
    note_failure(cl, why);
    return false;
}

static size_t node_find(mw_redis_cluster *cl, const char *host, int port, bool add)
{
    for (size_t i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].port == port && strcmp(cl->nodes[i].host, host) == 0)
            return i;
    if (!add || cl->nnodes >= MAX_NODES || !node_allowed(cl, host, port))
        return SIZE_MAX;
    cl->nodes = mw_realloc(cl->nodes, (cl->nnodes + 1) * sizeof *cl->nodes);
    memset(&cl->nodes[cl->nnodes], 0, sizeof cl->nodes[cl->nnodes]);
    cl->nodes[cl->nnodes].host = mw_strdup(host);
    cl->nodes[cl->nnodes].port = port;
    cl->nodes[cl->nnodes].idle = mw_calloc(cl->pool_max, sizeof(redisContext *));
    return cl->nnodes++;
}

static void node_describe(const struct cnode *n, char *out, size_t len)
{
    snprintf(out, len, strchr(n->host, ':') ? "[%s]:%d" : "%s:%d", n->host, n->port);
}

static void note_failure(mw_redis_cluster *cl, const char *why)
{
    uint64_t now = mw_redis_mono_us();
    bool first = !cl->failing;

    cl->failing = true;
    cl->fails_unlogged++;
    mw_metric_inc(MW_M_REDIS_FAILURES, 0, 0);
    if (first || now - cl->last_log >= LOG_INTERVAL_US) {
        if (strncmp(why, "redis cluster: ", 15) == 0)
            why += 15;
        mw_warn("redis cluster: %s (%llu failure%s since the last report)", why,
                cl->fails_unlogged, cl->fails_unlogged == 1 ? "" : "s");
        cl->last_log = now;
        cl->fails_unlogged = 0;
    }
}

static void node_down(mw_redis_cluster *cl, size_t ni)
{
    struct cnode *n = &cl->nodes[ni];

    n->backoff_ms = n->backoff_ms == 0 ? NODE_BACKOFF_MIN_MS
                  : n->backoff_ms * 2 > NODE_BACKOFF_MAX_MS ? NODE_BACKOFF_MAX_MS
                                                            : n->backoff_ms * 2;
    n->down_until = mw_redis_mono_us() + (uint64_t)n->backoff_ms * 1000u;
    /* Its idle connections are as dead as the one that failed. */
    for (size_t i = 0; i < n->nidle; i++) {
        redisFree(n->idle[i]);
        n->total--;
    }
    n->nidle = 0;
    cl->stale = true;
}

struct slots_ctx {
    mw_redis_cluster *cl;
    uint16_t         *map;
};

static void slots_cb(void *arg, unsigned first, unsigned last, const char *host, int port,
                     bool master)
{
    struct slots_ctx *x = arg;
    size_t ni = node_find(x->cl, host, port, true);

    if (ni == SIZE_MAX || !master)
        return;
    for (unsigned s = first; s <= last; s++)
        x->map[s] = (uint16_t)(ni + 1);
}

/* Ask CLUSTER SLOTS of one node after another until one answers; install
 * the map.  Called without mu.  force: ignore the gap (first use). */
static void refresh(mw_redis_cluster *cl, bool force)
{
    uint64_t now = mw_redis_mono_us();
    char **cand;
    int *ports;
    size_t ncand = 0, start;

    pthread_mutex_lock(&cl->mu);
    if (cl->refreshing && force) {
        /* Someone is asking already: wait for that answer (bounded). */
        uint64_t until = now + (uint64_t)cl->connect_ms * 1000u;
        while (cl->refreshing && mw_redis_mono_us() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 10 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
        }
        pthread_mutex_unlock(&cl->mu);
        return;
    }
    if (cl->refreshing || (!force && now - cl->refreshed < REFRESH_GAP_US)) {
        pthread_mutex_unlock(&cl->mu);
        return;
    }
    cl->refreshing = true;
    cl->refreshed = now;
    cand = mw_calloc(cl->nnodes + cl->nseeds + 1, sizeof *cand);
    ports = mw_calloc(cl->nnodes + cl->nseeds + 1, sizeof *ports);
    for (size_t i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i].down_until > now)
            continue;   /* known down: try it last (via the seeds) */
        cand[ncand] = mw_strdup(cl->nodes[i].host);
        ports[ncand++] = cl->nodes[i].port;
    }
    for (size_t i = 0; i < cl->nseeds; i++) {
        const char *s = cl->seeds[i], *colon = strrchr(s, ':');
        cand[ncand] = s[0] == '[' ? mw_strndup(s + 1, (size_t)(colon - s - 2))
                                  : mw_strndup(s, (size_t)(colon - s));
        ports[ncand++] = atoi(colon + 1);
    }
    start = ncand > 0 ? cl->ask_next % ncand : 0;
    pthread_mutex_unlock(&cl->mu);

    uint16_t *map = mw_calloc(MW_REDIS_CLUSTER_SLOTS, sizeof *map);
    bool got = false;
    size_t asked = start;
    char why[300] = "no node to ask";
    uint64_t deadline = mw_redis_mono_us() + (uint64_t)cl->connect_ms * 1000u;

    for (size_t k = 0; k < ncand && !got; k++) {
        size_t i = (start + k) % ncand;
        char sub[250] = "";
        redisContext *c = mw_redis_connect_node(cl->r, cand[i], ports[i], false, deadline, sub,
                                                sizeof sub);
        if (c == NULL) {
            snprintf(why, sizeof why, "CLUSTER SLOTS: %s", sub);
            continue;
        }
        const char *argv[] = {"CLUSTER", "SLOTS"};
        redisReply *rep = NULL;
        if (mw_redis_set_deadline(c, deadline))
            rep = redisCommandArgv(c, 2, argv, NULL);
        if (rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
            struct slots_ctx x = {cl, map};
            memset(map, 0, MW_REDIS_CLUSTER_SLOTS * sizeof *map);
            pthread_mutex_lock(&cl->mu);
            got = mw_redis_cluster_parse_slots(rep, cand[i], slots_cb, &x);
            pthread_mutex_unlock(&cl->mu);
            if (!got)
                snprintf(why, sizeof why, "CLUSTER SLOTS from %s:%d: malformed reply", cand[i],
                         ports[i]);
            else
                asked = i;
        } else {
            snprintf(why, sizeof why, "CLUSTER SLOTS from %s:%d: %s", cand[i], ports[i],
                     rep == NULL ? (c->err ? c->errstr : "timeout")
                     : rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        }
        if (rep != NULL)
            freeReplyObject(rep);
        redisFree(c);
    }

    pthread_mutex_lock(&cl->mu);
    if (got) {
        size_t moved = 0;
        for (size_t s = 0; s < MW_REDIS_CLUSTER_SLOTS; s++)
            if (cl->slot[s] != map[s] && cl->slot[s] != 0 && map[s] != 0)
                moved++;
        if (moved > 0 && cl->have_map) {
            atomic_fetch_add(&cl->failovers, 1);
            mw_info("redis cluster: slot map changed (%zu slot%s moved)", moved,
                    moved == 1 ? "" : "s");
        }
        memcpy(cl->slot, map, sizeof cl->slot);
        cl->ask_next = asked;
        cl->have_map = true;
        cl->stale = false;
    } else {
        note_failure(cl, why);
    }
    cl->refreshing = false;
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    free(map);
    for (size_t i = 0; i < ncand; i++)
        free(cand[i]);
    free(cand);
    free(ports);
}

/* ---- connections ------------------------------------------------------------------- */

enum acq { ACQ_OK, ACQ_DOWN, ACQ_BUSY };

static enum acq acquire(mw_redis_cluster *cl, size_t ni, uint64_t deadline, redisContext **out,
                        char *why, size_t whylen)
{
    pthread_mutex_lock(&cl->mu);
    for (;;) {
        struct cnode *n = &cl->nodes[ni];
        uint64_t now = mw_redis_mono_us();
        char name[300];

        if (n->nidle > 0) {
            *out = n->idle[--n->nidle];
            pthread_mutex_unlock(&cl->mu);
            return ACQ_OK;
        }
        if (now < n->down_until) {
            node_describe(n, name, sizeof name);
            snprintf(why, whylen, "node %s unavailable (backing off after errors)", name);
            pthread_mutex_unlock(&cl->mu);
            return ACQ_DOWN;
        }
        if (n->total < cl->pool_max) {
            char *host = mw_strdup(n->host);
            int port = n->port;
            uint64_t cdl = now + (uint64_t)cl->connect_ms * 1000u;
            n->total++;
            pthread_mutex_unlock(&cl->mu);
            redisContext *c = mw_redis_connect_node(cl->r, host, port, true, cdl, why, whylen);
            free(host);
            pthread_mutex_lock(&cl->mu);
            n = &cl->nodes[ni];
            if (c == NULL) {
                n->total--;
                node_down(cl, ni);
                pthread_cond_broadcast(&cl->cv);
                pthread_mutex_unlock(&cl->mu);
                return ACQ_DOWN;
            }
            n->backoff_ms = 0;
            atomic_fetch_add(&cl->reconnects, 1);
            *out = c;
            pthread_mutex_unlock(&cl->mu);
            return ACQ_OK;
        }
        if (now + 1000 > deadline) {
            snprintf(why, whylen, "redis cluster: all %u connections to a node busy", cl->pool_max);
            pthread_mutex_unlock(&cl->mu);
            return ACQ_BUSY;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t left = deadline - now;
        ts.tv_sec += (time_t)(left / 1000000u);
        ts.tv_nsec += (long)(left % 1000000u) * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
    }
}

/* close: do not pool it (NOSCRIPT: a new one loads the scripts); broken:
 * an I/O error, the node backs off too. */
static void release(mw_redis_cluster *cl, size_t ni, redisContext *c, bool close, bool broken)
{
    pthread_mutex_lock(&cl->mu);
    struct cnode *n = &cl->nodes[ni];
    if (close || broken || c->err || n->nidle >= cl->pool_max) {
        redisFree(c);
        n->total--;
        if (broken)
            node_down(cl, ni);
    } else {
        n->idle[n->nidle++] = c;
    }
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
}

/* ---- executing ---------------------------------------------------------------------- */

enum ustate { U_PENDING, U_DONE };

struct unit {
    mw_store_op *op;          /* what is sent (a part of a split gcra call: owned) */
    size_t       parent;      /* index in the caller's ops */
    size_t      *kidx;        /* split part: its keys' indexes in the parent */
    unsigned     slot;
    size_t       node;        /* SIZE_MAX: from the map */
    bool         asking;
    bool         split;
    enum ustate  st;
};

static unsigned op_slot(const mw_redis_cluster *cl, const mw_store_op *op, size_t k)
{
    const char *prefix = mw_redis_prefix(cl->r);
    char buf[512];
    size_t len = cl->prefixlen + op->keylens[k];

    if (len <= sizeof buf) {
        memcpy(buf, prefix, cl->prefixlen);
        memcpy(buf + cl->prefixlen, op->keys[k], op->keylens[k]);
        return mw_redis_cluster_slot(buf, len);
    }
    char *big = mw_malloc(len);
    memcpy(big, prefix, cl->prefixlen);
    memcpy(big + cl->prefixlen, op->keys[k], op->keylens[k]);
    unsigned s = mw_redis_cluster_slot(big, len);
    free(big);
    return s;
}

/* A script op over the keys kidx[0..nk) of parent with per-key args of
 * width per (after ARGV[1] = now), copied from parent's args (borrowed
 * pointers: freed with free_part). */
static mw_store_op *make_part(const mw_store_op *parent, const struct mw_store_script *sc,
                              const size_t *kidx, size_t nk, size_t per, const size_t *pick,
                              size_t npick)
{
    mw_store_op *op = mw_calloc(1, sizeof *op);

    op->kind = MW_STORE_OP_SCRIPT;
    op->script = sc;
    op->nkeys = nk;
    op->keys = mw_calloc(nk + 1, sizeof *op->keys);
    op->keylens = mw_calloc(nk + 1, sizeof *op->keylens);
    op->nargs = 1 + nk * npick;
    op->args = mw_calloc(op->nargs + 1, sizeof *op->args);
    op->arglens = mw_calloc(op->nargs + 1, sizeof *op->arglens);
    op->args[0] = parent->args[0];
    op->arglens[0] = parent->arglens[0];
    for (size_t i = 0; i < nk; i++) {
        op->keys[i] = parent->keys[kidx[i]];
        op->keylens[i] = parent->keylens[kidx[i]];
        for (size_t j = 0; j < npick; j++) {
            op->args[1 + i * npick + j] = parent->args[1 + kidx[i] * per + pick[j]];
            op->arglens[1 + i * npick + j] = parent->arglens[1 + kidx[i] * per + pick[j]];
        }
    }
    return op;
}

static void free_part(mw_store_op **opp)
{
    mw_store_op *op = *opp;

    if (op == NULL)
        return;
    free(op->keys);
    free(op->keylens);
    free(op->args);
    free(op->arglens);
    mw_store_value_clear(&op->val);
    free(op->err);
    MW_FREE(opp);
}

/* Resolve targets; units with no node fail.  false if some slot has no
 * known master (the caller refreshes). */
static bool route(mw_redis_cluster *cl, struct unit *u, size_t nu, size_t *target)
{
    bool all = true;

    pthread_mutex_lock(&cl->mu);
    for (size_t i = 0; i < nu; i++) {
        if (u[i].st != U_PENDING)
            continue;
        target[i] = u[i].node != SIZE_MAX ? u[i].node
                  : cl->slot[u[i].slot] != 0 ? (size_t)cl->slot[u[i].slot] - 1
                                             : SIZE_MAX;
        all = all && target[i] != SIZE_MAX;
    }
    pthread_mutex_unlock(&cl->mu);
    return all;
}

static void unit_fail(struct unit *u, mw_store_status st, const char *why)
{
    mw_store_op_fail(u->op, st, why);
    u->st = U_DONE;
}

/* One round: send every pending unit to its node, read the answers.
 * Returns whether a pause before the next round makes sense (a transient
 * refusal that did not run the command). */
static bool one_round(mw_redis_cluster *cl, struct unit *u, size_t nu, uint64_t deadline,
                      char *why, size_t whylen)
{
    size_t *target = mw_calloc(nu + 1, sizeof *target);
    size_t *nodes = mw_calloc(nu + 1, sizeof *nodes);
    redisContext **conns = mw_calloc(nu + 1, sizeof *conns);
    size_t nn = 0;
    bool pause = false;

    if (!route(cl, u, nu, target)) {
        refresh(cl, true);
        route(cl, u, nu, target);
    }
    for (size_t i = 0; i < nu; i++) {
        if (u[i].st != U_PENDING)
            continue;
        if (target[i] == SIZE_MAX) {
            snprintf(why, whylen, "redis cluster: no master known for slot %u", u[i].slot);
            unit_fail(&u[i], MW_STORE_TEMPFAIL, why);
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < nn; j++)
            seen = seen || nodes[j] == target[i];
        if (!seen)
            nodes[nn++] = target[i];
    }
    /* Connect and write every node's pipeline, then read them in turn. */
    for (size_t j = 0; j < nn; j++) {
        char sub[300] = "";
        enum acq a = acquire(cl, nodes[j], deadline, &conns[j], sub, sizeof sub);
        if (a != ACQ_OK) {
            conns[j] = NULL;
            snprintf(why, whylen, "%s", sub);
            for (size_t i = 0; i < nu; i++)
                if (u[i].st == U_PENDING && target[i] == nodes[j]) {
                    /* Nothing was sent: safe to resend after a refresh. */
                    if (u[i].node != SIZE_MAX)
                        u[i].node = SIZE_MAX, u[i].asking = false;
                    pause = true;
                }
            continue;
        }
        atomic_fetch_add(&cl->round_trips, 1);
        for (size_t i = 0; i < nu; i++) {
            if (u[i].st != U_PENDING || target[i] != nodes[j])
                continue;
            if (u[i].asking) {
                const char *argv[] = {"ASKING"};
                redisAppendCommandArgv(conns[j], 1, argv, NULL);
            }
            mw_redis_append_op(cl->r, conns[j], u[i].op);
        }
        int done = 0;
        while (!done) {
            if (!mw_redis_set_deadline(conns[j], deadline) ||
                redisBufferWrite(conns[j], &done) != REDIS_OK)
                break;
        }
    }
    for (size_t j = 0; j < nn; j++) {
        bool broken = false, discard = false;
        if (conns[j] == NULL)
            continue;
        for (size_t i = 0; i < nu; i++) {
            void *rep = NULL;
            bool tmo;
            if (u[i].st != U_PENDING || target[i] != nodes[j])
                continue;
            if (broken) {
                unit_fail(&u[i], MW_STORE_TEMPFAIL, why);
                continue;
            }
            if (u[i].asking) {
                if (mw_redis_get_reply(conns[j], deadline, &rep, &tmo) != REDIS_OK)
                    goto io_error;
                freeReplyObject(rep);
                rep = NULL;
                u[i].asking = false;
                u[i].node = SIZE_MAX;
            }
            if (mw_redis_get_reply(conns[j], deadline, &rep, &tmo) != REDIS_OK)
                goto io_error;
            redisReply *rr = rep;
            mw_store_op *op = u[i].op;
            bool ask;
            unsigned slot;
            char host[256];
            int port;
            if (rr->type == REDIS_REPLY_ERROR &&
                mw_redis_cluster_parse_redirect(rr->str, rr->len, &ask, &slot, host, sizeof host,
                                                &port)) {
                pthread_mutex_lock(&cl->mu);
                size_t ni = node_find(cl, host, port, true);
                if (!ask && ni != SIZE_MAX) {
                    cl->slot[slot] = (uint16_t)(ni + 1);
                    cl->stale = true;
                }
                pthread_mutex_unlock(&cl->mu);
                if (ni == SIZE_MAX) {
                    unit_fail(&u[i], MW_STORE_TEMPFAIL, "redis cluster: redirected to a node "
                              "not used (not loopback, or too many nodes)");
                } else if (ask) {
                    u[i].node = ni;
                    u[i].asking = true;
                }
            } else if (mw_redis_error_is(rr, "NOSCRIPT")) {
                /* The node lost its scripts (SCRIPT FLUSH, or a replica
                 * promoted before they were replicated): a new connection
                 * loads them; the command did not run. */
                discard = true;
                snprintf(why, whylen, "redis cluster: NOSCRIPT, reloading the scripts");
            } else if (mw_redis_error_is(rr, "READONLY") || mw_redis_error_is(rr, "TRYAGAIN") ||
                       mw_redis_error_is(rr, "CLUSTERDOWN") || mw_redis_error_is(rr, "LOADING") ||
                       mw_redis_error_is(rr, "MASTERDOWN")) {
                snprintf(why, whylen, "redis cluster: %s", rr->str);
                pthread_mutex_lock(&cl->mu);
                cl->stale = true;
                pthread_mutex_unlock(&cl->mu);
                pause = true;   /* did not run: resent */
            } else if (rr->type == REDIS_REPLY_ERROR) {
                mw_store_op_fail(op, mw_redis_error_transient(rr) ? MW_STORE_TEMPFAIL
                                                                  : MW_STORE_ERROR, rr->str);
                u[i].st = U_DONE;
            } else {
                mw_redis_convert(rr, &op->val);
                op->status = MW_STORE_OK;
                if ((op->kind == MW_STORE_OP_GET && rr->type == REDIS_REPLY_NIL) ||
                    (op->kind == MW_STORE_OP_HGETALL && rr->type == REDIS_REPLY_ARRAY &&
                     rr->elements == 0))
                    op->status = MW_STORE_NOTFOUND;
                u[i].st = U_DONE;
            }
            freeReplyObject(rr);
            continue;
io_error:
            /* The command may have run: not resent. */
            if (tmo)
                snprintf(why, whylen, "redis cluster: command timeout (%u ms)", cl->command_ms);
            else
                snprintf(why, whylen, "redis cluster: %s",
                         conns[j]->err ? conns[j]->errstr : "no reply");
            broken = true;
            unit_fail(&u[i], MW_STORE_TEMPFAIL, why);
        }
        release(cl, nodes[j], conns[j], discard, broken);
    }
    free(target);
    free(nodes);
    free(conns);
    return pause;
}

/* Run the units until done or the deadline. */
static void run_units(mw_redis_cluster *cl, struct unit *u, size_t nu, uint64_t deadline,
                      char *why, size_t whylen)
{
    for (;;) {
        bool pending = false, pause;

        pause = one_round(cl, u, nu, deadline, why, whylen);
        for (size_t i = 0; i < nu; i++)
            pending = pending || u[i].st == U_PENDING;
        if (!pending)
            break;
        bool stale;
        pthread_mutex_lock(&cl->mu);
        stale = cl->stale;
        pthread_mutex_unlock(&cl->mu);
        if (stale)
            refresh(cl, false);
        uint64_t now = mw_redis_mono_us();
        if (now + 1000 >= deadline)
            break;
        if (pause) {
            uint64_t nap = deadline - now < RETRY_PAUSE_US ? deadline - now : RETRY_PAUSE_US;
            struct timespec ts = {(time_t)(nap / 1000000u), (long)(nap % 1000000u) * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (size_t i = 0; i < nu; i++)
        if (u[i].st == U_PENDING)
            unit_fail(&u[i], MW_STORE_TEMPFAIL,
                      why[0] != '\0' ? why : "redis cluster: gave up after retries");
}

/* Is this a gcra reply whose buckets all allowed (charged)? */
static bool gcra_charged(const mw_store_op *op)
{
    if (op->status != MW_STORE_OK || op->val.type != MW_STORE_ARRAY || op->val.nelem % 4 != 0)
        return false;
    for (size_t k = 0; k < op->val.nelem; k += 4)
        if (op->val.elem[k].type != MW_STORE_INT || op->val.elem[k].integer != 1)
            return false;
    return true;
}

/* Put the parts of split gcra calls together (and refund when one refused). */
static void merge_splits(mw_redis_cluster *cl, mw_store_op *ops, struct unit *u, size_t nu,
                         uint64_t deadline)
{
    for (size_t i = 0; i < nu; i++) {
        if (!u[i].split || (i > 0 && u[i - 1].split && u[i - 1].parent == u[i].parent))
            continue;
        mw_store_op *p = &ops[u[i].parent];
        size_t end = i;
        bool ok = true, all = true;
        while (end < nu && u[end].split && u[end].parent == u[i].parent) {
            mw_store_op *part = u[end].op;
            ok = ok && part->status == MW_STORE_OK && part->val.type == MW_STORE_ARRAY &&
                 part->val.nelem == 4 * part->nkeys;
            all = all && gcra_charged(part);
            end++;
        }
        if (!ok) {
            const char *e = "redis cluster: a part of the call failed";
            mw_store_status st = MW_STORE_ERROR;
            for (size_t k = i; k < end; k++)
                if (u[k].op->status == MW_STORE_TEMPFAIL)
                    st = MW_STORE_TEMPFAIL, e = u[k].op->err ? u[k].op->err : e;
            mw_store_op_fail(p, st, e);
            continue;
        }
        /* Refund the parts that charged when another refused. */
        struct unit *ru = mw_calloc(end - i + 1, sizeof *ru);
        size_t nr = 0;
        if (!all) {
            static const size_t pick[] = {0, 2};   /* interval, cost */
            const struct mw_store_script *sc = mw_store_script_find("gcra_refund");
            for (size_t k = i; k < end && sc != NULL; k++) {
                if (!gcra_charged(u[k].op))
                    continue;
                ru[nr] = (struct unit){.parent = u[k].parent, .slot = u[k].slot,
                                       .node = SIZE_MAX, .st = U_PENDING};
                ru[nr].op = make_part(p, sc, u[k].kidx, u[k].op->nkeys, 3, pick, 2);
                nr++;
            }
            if (nr > 0) {
                char why[300] = "";
                run_units(cl, ru, nr, deadline + (uint64_t)cl->command_ms * 1000u, why,
                          sizeof why);
                for (size_t k = 0; k < nr; k++)
                    if (ru[k].op->status != MW_STORE_OK) {
                        atomic_fetch_add(&cl->sends_lost, 1);
                        mw_warn("redis cluster: a rate-limit refund failed (%s): those units "
                                "stay charged", ru[k].op->err ? ru[k].op->err : "?");
                    }
                for (size_t k = 0; k < nr; k++)
                    free_part(&ru[k].op);
            }
        }
        free(ru);
        /* The parent's answer in its KEYS order. */
        mw_store_value_clear(&p->val);
        p->val.type = MW_STORE_ARRAY;
        p->val.nelem = 4 * p->nkeys;
        p->val.elem = mw_calloc(p->val.nelem + 1, sizeof *p->val.elem);
        for (size_t k = i; k < end; k++) {
            mw_store_op *part = u[k].op;
            bool refunded = !all && gcra_charged(part);
            for (size_t q = 0; q < part->nkeys; q++) {
                mw_store_value *dst = &p->val.elem[4 * u[k].kidx[q]];
                for (size_t f = 0; f < 4; f++) {
                    dst[f].type = MW_STORE_INT;
                    dst[f].integer = part->val.elem[4 * q + f].integer;
                }
                if (refunded) {
                    /* As gcra.lua reports an allowing bucket of a refused call. */
                    long long cost = atoll(p->args[3 + 3 * u[k].kidx[q]]);
                    long long iv = atoll(p->args[1 + 3 * u[k].kidx[q]]);
                    dst[1].integer += cost;
                    dst[3].integer -= (cost * iv + 999) / 1000;
                    if (dst[3].integer < 0)
                        dst[3].integer = 0;
                }
            }
        }
        p->status = MW_STORE_OK;
    }
}

mw_store_status mw_redis_cluster_exec(mw_redis_cluster *cl, mw_store_op *ops, size_t n, bool send,
                                      char *why, size_t whylen)
{
    uint64_t now = mw_redis_mono_us();
    uint64_t deadline = now + (uint64_t)cl->command_ms * 1000u;
    struct unit *u;
    size_t nu = 0, cap = n + 1;
    bool periodic, tempfail = false;
    mw_store_status st = MW_STORE_OK;

    (void)send;   /* executed either way; the caller ignores a send's answers */
    why[0] = '\0';
    pthread_mutex_lock(&cl->mu);
    periodic = !cl->have_map || cl->stale || now - cl->refreshed >= REFRESH_PERIOD_US;
    bool first = !cl->have_map;
    pthread_mutex_unlock(&cl->mu);
    if (periodic)
        refresh(cl, first);

    for (size_t i = 0; i < n; i++)
        cap += ops[i].nkeys;
    u = mw_calloc(cap, sizeof *u);
    for (size_t i = 0; i < n; i++) {
        mw_store_op *op = &ops[i];
        if (op->nkeys == 0) {
            mw_store_op_fail(op, MW_STORE_ERROR, "redis cluster: an operation without a key");
            continue;
        }
        unsigned s0 = op_slot(cl, op, 0);
        bool one = true;
        for (size_t k = 1; k < op->nkeys && one; k++)
            one = op_slot(cl, op, k) == s0;
        if (one) {
            u[nu++] = (struct unit){.op = op, .parent = i, .slot = s0, .node = SIZE_MAX};
            continue;
        }
        if (op->kind != MW_STORE_OP_SCRIPT || strcmp(op->script->name, "gcra") != 0 ||
            op->nargs != 1 + 3 * op->nkeys) {
            mw_store_op_fail(op, MW_STORE_ERROR, "redis cluster: a script call spans slots");
            continue;
        }
        /* Split by slot, keys in their order. */
        bool *taken = mw_calloc(op->nkeys + 1, sizeof *taken);
        static const size_t pick[] = {0, 1, 2};
        for (size_t k = 0; k < op->nkeys; k++) {
            if (taken[k])
                continue;
            unsigned s = op_slot(cl, op, k);
            size_t *kidx = mw_calloc(op->nkeys + 1, sizeof *kidx), nk = 0;
            for (size_t q = k; q < op->nkeys; q++)
                if (!taken[q] && op_slot(cl, op, q) == s) {
                    taken[q] = true;
                    kidx[nk++] = q;
                }
            u[nu] = (struct unit){.parent = i, .slot = s, .node = SIZE_MAX, .split = true,
                                  .kidx = kidx};
            u[nu].op = make_part(op, op->script, kidx, nk, 3, pick, 3);
            nu++;
        }
        free(taken);
    }
    run_units(cl, u, nu, deadline, why, whylen);
    merge_splits(cl, ops, u, nu, deadline);
    for (size_t i = 0; i < nu; i++) {
        if (u[i].split) {
            free_part(&u[i].op);
            free(u[i].kidx);
        }
    }
    free(u);
    for (size_t i = 0; i < n; i++)
        tempfail = tempfail || ops[i].status == MW_STORE_TEMPFAIL;
    pthread_mutex_lock(&cl->mu);
    if (tempfail) {
        /* The store's contract: TEMPFAIL means every operation is. */
        for (size_t i = 0; i < n; i++)
            if (ops[i].status != MW_STORE_TEMPFAIL)
                mw_store_op_fail(&ops[i], MW_STORE_TEMPFAIL,
                                 why[0] != '\0' ? why : "redis cluster: a node failed");
        note_failure(cl, why[0] != '\0' ? why : "a node failed");
        st = MW_STORE_TEMPFAIL;
    } else if (cl->failing) {
        mw_info("redis cluster: available again");
        cl->failing = false;
        cl->fails_unlogged = 0;
    }
    pthread_mutex_unlock(&cl->mu);
    return st;
}

/* ---- scan ---------------------------------------------------------------------------- */

mw_store_status mw_redis_cluster_scan(mw_redis_cluster *cl, const char *match, mw_store_scan_fn fn,
                                      void *arg, char *why, size_t whylen)
{
    size_t *masters, nm = 0;
    bool go = true;

    refresh(cl, true);
    pthread_mutex_lock(&cl->mu);
    masters = mw_calloc(cl->nnodes + 1, sizeof *masters);
    for (size_t s = 0; s < MW_REDIS_CLUSTER_SLOTS; s++) {
        bool seen = false;
        if (cl->slot[s] == 0)
            continue;
        for (size_t j = 0; j < nm; j++)
            seen = seen || masters[j] == (size_t)cl->slot[s] - 1;
        if (!seen)
            masters[nm++] = (size_t)cl->slot[s] - 1;
    }
    pthread_mutex_unlock(&cl->mu);
    if (nm == 0) {
        snprintf(why, whylen, "redis cluster: no slot map");
        free(masters);
        return MW_STORE_TEMPFAIL;
    }
    for (size_t j = 0; j < nm && go; j++) {
        redisContext *c;
        char cursor[32] = "0";
        if (acquire(cl, masters[j], mw_redis_mono_us() + (uint64_t)cl->command_ms * 1000u, &c,
                    why, whylen) != ACQ_OK) {
            free(masters);
            return MW_STORE_TEMPFAIL;
        }
        do {
            uint64_t deadline = mw_redis_mono_us() + (uint64_t)cl->command_ms * 1000u;
            const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", "500"};
            redisReply *rep = NULL;
            if (mw_redis_set_deadline(c, deadline))
                rep = redisCommandArgv(c, 6, argv, NULL);
            if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                rep->element[0]->type != REDIS_REPLY_STRING ||
                rep->element[1]->type != REDIS_REPLY_ARRAY) {
                snprintf(why, whylen, "SCAN: %s", rep != NULL && rep->type == REDIS_REPLY_ERROR
                                                      ? rep->str : "failed");
                if (rep != NULL)
                    freeReplyObject(rep);
                release(cl, masters[j], c, true, true);
                free(masters);
                return MW_STORE_TEMPFAIL;
            }
            snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
            redisReply *keys = rep->element[1];
            for (size_t i = 0; i < keys->elements && go; i++) {
                const char *pargv[] = {"PTTL", keys->element[i]->str};
                size_t plens[] = {4, keys->element[i]->len};
                redisReply *tr = NULL;
                long long ttl = -1;
                if (keys->element[i]->type != REDIS_REPLY_STRING)
                    continue;
                if (mw_redis_set_deadline(c, deadline))
                    tr = redisCommandArgv(c, 2, pargv, plens);
                if (tr == NULL) {
                    snprintf(why, whylen, "PTTL: %s", c->err ? c->errstr : "timeout");
                    freeReplyObject(rep);
                    release(cl, masters[j], c, true, true);
                    free(masters);
                    return MW_STORE_TEMPFAIL;
                }
                if (tr->type == REDIS_REPLY_INTEGER)
                    ttl = tr->integer;
                freeReplyObject(tr);
                redisReply *k = keys->element[i];
                if (ttl != -2 && k->len >= cl->prefixlen)
                    go = fn(arg, k->str + cl->prefixlen, k->len - cl->prefixlen, ttl);
            }
            freeReplyObject(rep);
        } while (go && strcmp(cursor, "0") != 0);
        release(cl, masters[j], c, false, false);
    }
    free(masters);
    return MW_STORE_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

mw_redis_cluster *mw_redis_cluster_create(mw_store_redis *r, const mw_config *cfg)
{
    mw_redis_cluster *cl = mw_calloc(1, sizeof *cl);
    pthread_condattr_t ca;

    cl->r = r;
    cl->allow_plaintext = cfg->redis_allow_plaintext;
    cl->seeds = mw_calloc(cfg->nredis_cluster_nodes + 1, sizeof *cl->seeds);
    for (size_t i = 0; i < cfg->nredis_cluster_nodes; i++)
        if (strrchr(cfg->redis_cluster_nodes[i], ':') != NULL)
            cl->seeds[cl->nseeds++] = mw_strdup(cfg->redis_cluster_nodes[i]);
    cl->pool_max = mw_redis_pool_max(r);
    cl->connect_ms = mw_redis_connect_ms(r);
    cl->command_ms = mw_redis_command_ms(r);
    cl->prefixlen = strlen(mw_redis_prefix(r));
    pthread_mutex_init(&cl->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->cv, &ca);
    pthread_condattr_destroy(&ca);
    return cl;
}

void mw_redis_cluster_destroy(mw_redis_cluster **clp)
{
    mw_redis_cluster *cl = *clp;

    if (cl == NULL)
        return;
    for (size_t i = 0; i < cl->nnodes; i++) {
        for (size_t j = 0; j < cl->nodes[i].nidle; j++)
            redisFree(cl->nodes[i].idle[j]);
        free(cl->nodes[i].idle);
        free(cl->nodes[i].host);
    }
    free(cl->nodes);
    for (size_t i = 0; i < cl->nseeds; i++)
        free(cl->seeds[i]);
    free(cl->seeds);
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
    MW_FREE(clp);
}

void mw_redis_cluster_stats(mw_redis_cluster *cl, mw_store_stats *out)
{
    out->reconnects += atomic_load(&cl->reconnects);
    out->failovers += atomic_load(&cl->failovers);
    out->round_trips += atomic_load(&cl->round_trips);
    out->sends_lost += atomic_load(&cl->sends_lost);
}
