/*
 * store_redis.c - the Redis state store backend (state.backend "redis").
 *
 * Purpose
 *   Execute a batch of store operations (store.h) against Redis in one
 *   round trip, with every wait bounded, so a dead or slow Redis costs a
 *   message at most redis.connect_timeout + redis.command_timeout and then,
 *   while it stays down, nothing (fail fast during backoff).
 *
 * Design notes
 *   - hiredis in blocking mode, argv form only (redisAppendCommandArgv:
 *     explicit lengths, no command string is ever built from mail data).
 *   - A pool of at most redis.pool_size connections shared by all threads
 *     (the milter serves each SMTP connection on its own thread, so per-thread
 *     connections would mean a TCP connect + AUTH per SMTP session).  A
 *     thread that finds none idle waits on a condition variable until its
 *     deadline.
 *   - Deadlines are absolute (CLOCK_MONOTONIC); before every blocking read
 *     or write the socket timeout is set to what is left (redisSetTimeout),
 *     so a pipeline of n replies cannot take n timeouts.
 *   - Connecting (Sentinel query, TCP connect, AUTH, SELECT, ROLE) has its
 *     own budget, redis.connect_timeout.  Host names are resolved by
 *     getaddrinfo() inside hiredis, which that budget cannot bound: give
 *     addresses (or a local resolver) where that matters.
 *   - After a failed connect or an I/O error/timeout the backend backs off
 *     (100 ms doubling to 5 s): meanwhile requests fail at once with
 *     TEMPFAIL, and when the backoff ends a single thread probes.  An I/O
 *     error also retires every pooled connection (generation counter), so
 *     after a failover no thread keeps talking to the old master.
 *   - Scripts: loaded on every new connection (SCRIPT LOAD, pipelined,
 *     checked against the SHA-1 computed at build time), then run by
 *     EVALSHA.  On NOSCRIPT (SCRIPT FLUSH under a live connection) SCRIPT
 *     LOAD and EVALSHA again, in the same call: NOSCRIPT means the script
 *     did not run, so the retry cannot charge twice (those operations then
 *     run after the rest of the batch).
 *   - Sends without waiting (mw_store_send): the pipeline is written (the
 *     socket's send timeout bounds it) and the connection goes back to the
 *     pool owing that many replies (rconn.owed).  The next user of the
 *     connection writes its own commands first, then reads and discards the
 *     owed replies before its own (same deadline): no extra round trip,
 *     since Redis answered them long before.  An owed error reply (a lost
 *     write) is counted and logged like other failures; a connection that
 *     owes more than MAX_OWED replies is drained before it is written to.
 *   - Sentinel: every new connection asks the sentinels in turn (starting
 *     with the last one that answered) for the master's address, then
 *     checks ROLE on it.  READONLY (we reached a demoted master) retires
 *     the pool and the batch is retried once on a fresh connection: a
 *     refused write did not happen, so the retry is safe.  An I/O error is
 *     not retried (the write may have happened).
 *
 * Diagnostics
 *   Failures are logged at most once a minute with the count since the
 *   last line; recovery and master changes are logged once.  The password
 *   is never logged.
 *
 * See also: store.h, store.c, scripts/redis/NAME.lua, docs/ratelimit.md.
 */
#include "store.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "cidr.h"
#include "log.h"
#include "metrics.h"
#include "store_redis_cluster.h"

#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
#define LOG_INTERVAL_US  (60ULL * 1000000ULL)
#define MAX_ROUNDS       3          /* send, NOSCRIPT reload, READONLY retry */
#define MAX_OWED         64         /* unread replies a pooled connection may owe */

struct hostport {
    char *host;
    int   port;
};

struct rconn {
    redisContext *c;
    unsigned      gen;
    size_t        owed;         /* replies to commands sent by mw_store_send, not read yet */
};

struct mw_store_redis {
    const mw_store  *owner;
    struct hostport  direct;
    struct hostport *sentinels;
    size_t           nsentinels;
    char            *master_name;
    bool             allow_plaintext;  /* redis.allow_plaintext (a master off loopback) */
    char            *user, *pass;
    unsigned         db;
    char            *prefix;
    size_t           prefixlen;
    unsigned         connect_ms, command_ms, pool_max;
    char             describe[300];

    pthread_mutex_t  mu;             /* everything below */
    pthread_cond_t   cv;
    struct rconn    *idle;
    size_t           nidle, total;
    unsigned         gen;
    uint64_t         down_until;     /* monotonic us */
    unsigned         backoff_ms;
    bool             probing;
    atomic_bool      failing;        /* read without mu on the fast path */
    size_t           sentinel_next;
    char             master[300];    /* last master address seen */
    uint64_t         last_log;
    unsigned long long fails_unlogged;
    uint64_t         lost_log;       /* sends refused (read later): logged once a minute */
    unsigned long long lost_unlogged;

    atomic_ullong    reconnects, failovers, round_trips, sends_lost;
    mw_redis_cluster *cluster;       /* redis.cluster_nodes set: everything goes there */
};

/* ---- time -------------------------------------------------------------------- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Socket timeouts to what is left until deadline; false if nothing is. */
static bool set_deadline(redisContext *c, uint64_t deadline)
{
    uint64_t now = mono_us();
    struct timeval tv;

    if (now + 1000 > deadline)
        return false;
    tv.tv_sec = (time_t)((deadline - now) / 1000000u);
    tv.tv_usec = (suseconds_t)((deadline - now) % 1000000u);
    return redisSetTimeout(c, tv) == REDIS_OK;
}

/* The next reply: from what hiredis has already read if it is there (a
 * pipeline's replies mostly arrive in one read), else a blocking read
 * bounded by deadline.  Only the blocking read needs the socket timeouts
 * set: two setsockopt calls saved per buffered reply.  REDIS_ERR with
 * *rep NULL on timeout or I/O error (c->err). */
static int get_reply(redisContext *c, uint64_t deadline, void **rep, bool *timed_out)
{
    *rep = NULL;
    *timed_out = false;
    if (redisGetReplyFromReader(c, rep) != REDIS_OK)
        return REDIS_ERR;
    if (*rep != NULL)
        return REDIS_OK;
    if (!set_deadline(c, deadline)) {
        *timed_out = true;
        return REDIS_ERR;
    }
    if (redisGetReply(c, rep) != REDIS_OK || *rep == NULL) {
        *timed_out = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        return REDIS_ERR;
    }
    return REDIS_OK;
}

/* ---- logging and backoff (called with mu held) ----------------------------------- */

static void note_failure(mw_store_redis *r, const char *why, bool retire)
{
    uint64_t now = mono_us();
    bool first = !atomic_load(&r->failing);

    atomic_store(&r->failing, true);
    mw_metric_inc(MW_M_REDIS_FAILURES, 0, 0);
    r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_MIN_MS
                  : r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    r->down_until = now + (uint64_t)r->backoff_ms * 1000u;
    if (retire)
        r->gen++;
    r->fails_unlogged++;
    if (first || now - r->last_log >= LOG_INTERVAL_US) {
        mw_warn("redis %s: %s (%llu failure%s since the last report; retrying in %u ms)",
                r->describe, why, r->fails_unlogged, r->fails_unlogged == 1 ? "" : "s",
                r->backoff_ms);
        r->last_log = now;
        r->fails_unlogged = 0;
    }
}

/* A new connection: note a changed master.  (Not yet a recovery: a
 * stopped server accepts connections and never answers.) */
static void note_connected(mw_store_redis *r, const char *master)
{
    if (r->master[0] != '\0' && strcmp(r->master, master) != 0) {
        mw_info("redis %s: the master is now %s (was %s)", r->describe, master, r->master);
        atomic_fetch_add(&r->failovers, 1);
    }
    snprintf(r->master, sizeof r->master, "%s", master);
}

/* A batch got its answers: the backend works (again). */
static void note_success(mw_store_redis *r)
{
    if (!atomic_load(&r->failing))
        return;
    pthread_mutex_lock(&r->mu);
    if (atomic_load(&r->failing))
        mw_info("redis %s: available again (master %s)", r->describe, r->master);
    atomic_store(&r->failing, false);
    r->backoff_ms = 0;
    r->down_until = 0;
    r->fails_unlogged = 0;
    pthread_mutex_unlock(&r->mu);
}

/* ---- connecting ------------------------------------------------------------------- */

static redisContext *tcp_connect(const char *host, int port, uint64_t deadline, char *why,
                                 size_t whylen)
{
    uint64_t now = mono_us();
    struct timeval tv;
    redisContext *c;

    if (now + 1000 > deadline) {
        snprintf(why, whylen, "connect timeout");
        return NULL;
    }
    tv.tv_sec = (time_t)((deadline - now) / 1000000u);
    tv.tv_usec = (suseconds_t)((deadline - now) % 1000000u);
    c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL) {
        snprintf(why, whylen, "%s:%d: cannot allocate a connection", host, port);
        return NULL;
    }
    if (c->err) {
        snprintf(why, whylen, "connect %s:%d: %s", host, port, c->errstr);
        redisFree(c);
        return NULL;
    }
    return c;
}

/* One command, argv form, within deadline.  NULL (reason in why) on I/O
 * errors and timeouts; an error reply is returned to the caller. */
static redisReply *command(redisContext *c, uint64_t deadline, int argc, const char **argv,
                           char *why, size_t whylen)
{
    redisReply *rep;

    if (!set_deadline(c, deadline)) {
        snprintf(why, whylen, "timeout");
        return NULL;
    }
    rep = redisCommandArgv(c, argc, argv, NULL);
    if (rep == NULL)
        snprintf(why, whylen, "%s", c->err ? c->errstr : "no reply");
    return rep;
}

/* Ask the sentinels for the master's address. */
static bool sentinel_master(mw_store_redis *r, uint64_t deadline, char **host, int *port, char *why,
                            size_t whylen)
{
    size_t start;

    pthread_mutex_lock(&r->mu);
    start = r->sentinel_next;
    pthread_mutex_unlock(&r->mu);
    snprintf(why, whylen, "no sentinel answered");
    for (size_t k = 0; k < r->nsentinels; k++) {
        size_t i = (start + k) % r->nsentinels;
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->master_name};
        char sub[200];
        redisContext *sc = tcp_connect(r->sentinels[i].host, r->sentinels[i].port, deadline, sub,
                                       sizeof sub);
        redisReply *rep;

        if (sc == NULL) {
            snprintf(why, whylen, "sentinel %s", sub);
            continue;
        }
        rep = command(sc, deadline, 3, argv, sub, sizeof sub);
        if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[1]->type == REDIS_REPLY_STRING) {
            /* The master a sentinel names is held to the configuration's rule:
             * off loopback only with redis.allow_plaintext (we speak plaintext). */
            if (!r->allow_plaintext && !mw_host_is_loopback(rep->element[0]->str)) {
                snprintf(why, whylen, "sentinel %s:%d names master %s:%s, not loopback, and "
                         "redis.allow_plaintext is false: not used", r->sentinels[i].host,
                         r->sentinels[i].port, rep->element[0]->str, rep->element[1]->str);
                freeReplyObject(rep);
                redisFree(sc);
                continue;
            }
            *host = mw_strdup(rep->element[0]->str);
            *port = atoi(rep->element[1]->str);
            freeReplyObject(rep);
            redisFree(sc);
            pthread_mutex_lock(&r->mu);
            r->sentinel_next = i;
            pthread_mutex_unlock(&r->mu);
            return true;
        }
        if (rep != NULL)
            snprintf(why, whylen, "sentinel %s:%d does not know master \"%s\"",
                     r->sentinels[i].host, r->sentinels[i].port, r->master_name);
        else
            snprintf(why, whylen, "sentinel %s:%d: %s", r->sentinels[i].host,
                     r->sentinels[i].port, sub);
        if (rep != NULL)
            freeReplyObject(rep);
        redisFree(sc);
    }
    return false;
}

/* A reply that must be +OK (or an array whose first element is wanted). */
static bool reply_ok(redisReply *rep, const char *what, char *why, size_t whylen)
{
    if (rep == NULL)
        return false;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "%s: %s", what, rep->str);
        freeReplyObject(rep);
        return false;
    }
    freeReplyObject(rep);
    return true;
}

/* A new, authenticated connection to the current master. */
static redisContext *connect_master(mw_store_redis *r, char *master, size_t masterlen, char *why,
                                    size_t whylen)
{
    uint64_t deadline = mono_us() + (uint64_t)r->connect_ms * 1000u;
    char *host = NULL;
    int port = r->direct.port;
    redisContext *c;

    if (r->nsentinels > 0) {
        if (!sentinel_master(r, deadline, &host, &port, why, whylen))
            return NULL;
    } else {
        host = mw_strdup(r->direct.host);
    }
    snprintf(master, masterlen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    c = mw_redis_connect_node(r, host, port, true, deadline, why, whylen);
    free(host);
    return c;
}

/* Connect to host:port within deadline: AUTH, SELECT, ROLE (Sentinel: it
 * must be a master), load the scripts.  Also the cluster's way to reach a
 * node (store_redis_cluster.c; no SELECT there: redis.db must be 0). */
redisContext *mw_redis_connect_node(mw_store_redis *r, const char *host, int port, bool scripts,
                                    uint64_t deadline, char *why, size_t whylen)
{
    char master[300], sub[200];
    redisContext *c;
    redisReply *rep;

    snprintf(master, sizeof master, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    c = tcp_connect(host, port, deadline, why, whylen);
    if (c == NULL)
        return NULL;
    if (r->pass[0] != '\0') {
        const char *a2[] = {"AUTH", r->pass}, *a3[] = {"AUTH", r->user, r->pass};
        rep = r->user[0] != '\0' ? command(c, deadline, 3, a3, sub, sizeof sub)
                                 : command(c, deadline, 2, a2, sub, sizeof sub);
        if (!reply_ok(rep, "AUTH", why, whylen))
            goto fail;
    }
    if (r->db != 0) {
        char num[16];
        snprintf(num, sizeof num, "%u", r->db);
        const char *argv[] = {"SELECT", num};
        if (!reply_ok(command(c, deadline, 2, argv, sub, sizeof sub), "SELECT", why, whylen))
            goto fail;
    }
    if (r->nsentinels > 0) {
        /* A sentinel can name a master that has just been demoted. */
        const char *argv[] = {"ROLE"};
        rep = command(c, deadline, 1, argv, sub, sizeof sub);
        if (rep == NULL)
            goto fail;
        bool is_master = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                         rep->element[0]->type == REDIS_REPLY_STRING &&
                         strcmp(rep->element[0]->str, "master") == 0;
        freeReplyObject(rep);
        if (!is_master) {
            snprintf(why, whylen, "%s is not a master (failover in progress)", master);
            redisFree(c);
            return NULL;
        }
    }
    /* Load every script now (one pipelined round trip per connection), so
     * EVALSHA finds them and a batch's operations run in order.  NOSCRIPT
     * later (SCRIPT FLUSH on a live connection) is still handled. */
    size_t nscripts = 0;
    for (const struct mw_store_script *sc = mw_store_scripts; scripts && sc->name != NULL;
         sc++, nscripts++) {
        const char *argv[] = {"SCRIPT", "LOAD", sc->text};
        size_t lens[] = {6, 4, sc->len};
        redisAppendCommandArgv(c, 3, argv, lens);
    }
    for (size_t i = 0; i < nscripts; i++) {
        void *lr = NULL;
        if (!set_deadline(c, deadline) || redisGetReply(c, &lr) != REDIS_OK) {
            snprintf(sub, sizeof sub, "SCRIPT LOAD: %s", c->err ? c->errstr : "timeout");
            goto fail;
        }
        redisReply *rr = lr;
        bool same = rr->type == REDIS_REPLY_STRING && strcmp(rr->str, mw_store_scripts[i].sha1) == 0;
        if (!same)
            snprintf(why, whylen, "SCRIPT LOAD %s: %s", mw_store_scripts[i].name,
                     rr->type == REDIS_REPLY_ERROR ? rr->str : "unexpected SHA-1");
        freeReplyObject(rr);
        if (!same) {
            redisFree(c);   /* unread replies go with the connection */
            return NULL;
        }
    }
    return c;
fail:
    if (why[0] == '\0')
        snprintf(why, whylen, "%s: %s", master, sub);
    redisFree(c);
    return NULL;
}

/* ---- the pool ---------------------------------------------------------------------- */

static bool acquire(mw_store_redis *r, uint64_t deadline, struct rconn *out, char *why, size_t whylen)
{
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->nidle > 0 && r->idle[r->nidle - 1].gen != r->gen) {
            redisFree(r->idle[--r->nidle].c);
            r->total--;
        }
        if (r->nidle > 0) {
            *out = r->idle[--r->nidle];
            pthread_mutex_unlock(&r->mu);
            return true;
        }
        uint64_t now = mono_us();
        if (now < r->down_until || (atomic_load(&r->failing) && r->probing)) {
            snprintf(why, whylen, "redis unavailable (backing off after errors)");
            pthread_mutex_unlock(&r->mu);
            return false;
        }
        if (r->total < r->pool_max) {
            char master[300] = "";
            r->total++;
            r->probing = r->probing || atomic_load(&r->failing);
            pthread_mutex_unlock(&r->mu);
            why[0] = '\0';
            redisContext *c = connect_master(r, master, sizeof master, why, whylen);
            pthread_mutex_lock(&r->mu);
            r->probing = false;
            if (c == NULL) {
                r->total--;
                note_failure(r, why, true);
                pthread_cond_broadcast(&r->cv);
                pthread_mutex_unlock(&r->mu);
                return false;
            }
            atomic_fetch_add(&r->reconnects, 1);
            note_connected(r, master);
            out->c = c;
            out->gen = r->gen;
            out->owed = 0;
            pthread_mutex_unlock(&r->mu);
            return true;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t left = deadline > now ? deadline - now : 0;
        if (left < 1000) {
            snprintf(why, whylen, "redis: all %u connections busy", r->pool_max);
            pthread_mutex_unlock(&r->mu);
            return false;
        }
        ts.tv_sec += (time_t)(left / 1000000u);
        ts.tv_nsec += (long)(left % 1000000u) * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
}

/* Give a connection back; a broken one (or one from an older generation)
 * is closed. */
static void release(mw_store_redis *r, struct rconn *conn, bool broken)
{
    pthread_mutex_lock(&r->mu);
    if (broken || conn->c->err || conn->gen != r->gen) {
        redisFree(conn->c);
        r->total--;
    } else {
        r->idle[r->nidle++] = *conn;
    }
    conn->c = NULL;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- replies ------------------------------------------------------------------------ */

static void convert(const redisReply *rep, mw_store_value *v)
{
    mw_store_value_clear(v);
    switch (rep->type) {
    case REDIS_REPLY_INTEGER:
        v->type = MW_STORE_INT;
        v->integer = rep->integer;
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        mw_store_value_set_str(v, rep->str, rep->len);
        break;
    case REDIS_REPLY_ARRAY:
        v->type = MW_STORE_ARRAY;
        v->elem = mw_calloc(rep->elements + 1, sizeof *v->elem);
        v->nelem = rep->elements;
        for (size_t i = 0; i < rep->elements; i++)
            convert(rep->element[i], &v->elem[i]);
        break;
    default:
        v->type = MW_STORE_NIL;
        break;
    }
}

static bool error_is(const redisReply *rep, const char *code)
{
    size_t n = strlen(code);
    return rep->type == REDIS_REPLY_ERROR && rep->len >= n && strncmp(rep->str, code, n) == 0 &&
           (rep->len == n || rep->str[n] == ' ');
}

/* Server states that pass: loading, a script running, no master, ... */
static bool error_transient(const redisReply *rep)
{
    static const char *const codes[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
                                        "CLUSTERDOWN", "OOM", NULL};
    for (const char *const *c = codes; *c != NULL; c++)
        if (error_is(rep, *c))
            return true;
    return false;
}

/* ---- replies owed to earlier sends ------------------------------------------------------ */

/* Read and discard the replies conn owes to mw_store_send; an error reply
 * means a lost write (counted, logged at most once a minute).  false on an
 * I/O error or timeout (why set; the connection is then unusable). */
static bool drain_owed(mw_store_redis *r, struct rconn *conn, uint64_t deadline, char *why,
                       size_t whylen)
{
    unsigned long long lost = 0;
    char first[200] = "";
    bool ok = true;

    while (conn->owed > 0) {
        void *rep = NULL;
        bool tmo;
        if (get_reply(conn->c, deadline, &rep, &tmo) != REDIS_OK) {
            if (tmo)
                snprintf(why, whylen, "command timeout (%u ms)", r->command_ms);
            else
                snprintf(why, whylen, "%s", conn->c->err ? conn->c->errstr : "no reply");
            ok = false;
            break;
        }
        conn->owed--;
        redisReply *rr = rep;
        if (rr->type == REDIS_REPLY_ERROR && lost++ == 0)
            snprintf(first, sizeof first, "%s", rr->str);
        freeReplyObject(rr);
    }
    if (lost > 0) {
        uint64_t now = mono_us();
        atomic_fetch_add(&r->sends_lost, lost);
        pthread_mutex_lock(&r->mu);
        r->lost_unlogged += lost;
        if (r->lost_log == 0 || now - r->lost_log >= LOG_INTERVAL_US) {
            mw_warn("redis %s: %llu update%s sent without waiting failed (%s)", r->describe,
                    r->lost_unlogged, r->lost_unlogged == 1 ? "" : "s", first);
            r->lost_log = now;
            r->lost_unlogged = 0;
        }
        pthread_mutex_unlock(&r->mu);
    }
    return ok;
}

/* ---- executing a batch ---------------------------------------------------------------- */

enum op_state { ST_PENDING, ST_DONE, ST_NOSCRIPT, ST_READONLY };

/* Append op's command: prefixed keys, argv form. */
static void append_op(mw_store_redis *r, redisContext *c, const mw_store_op *op)
{
    const struct mw_store_script *sc = op->script;
    size_t argc = 0, cap = op->nkeys + op->nargs + 6, klen = 0;
    /* the usual command fits on the stack; prefixed keys in one block */
    const char *argv_s[64];
    size_t lens_s[64];
    const char **argv = cap <= 64 ? argv_s : mw_calloc(cap, sizeof *argv);
    size_t *lens = cap <= 64 ? lens_s : mw_calloc(cap, sizeof *lens);
    char nk[24], *kp, *kblock;

    for (size_t i = 0; i < op->nkeys; i++)
        klen += r->prefixlen + op->keylens[i];
    kp = kblock = mw_malloc(klen + 1);

#define ARG(p, l) do { argv[argc] = (p); lens[argc++] = (l); } while (0)
    switch (op->kind) {
    case MW_STORE_OP_GET:     ARG("GET", 3); break;
    case MW_STORE_OP_HGETALL: ARG("HGETALL", 7); break;
    case MW_STORE_OP_DEL:     ARG("DEL", 3); break;
    case MW_STORE_OP_INCR:    sc = mw_store_script_find("incr_ttl"); break;
    case MW_STORE_OP_HINCR:   sc = mw_store_script_find("hincr_ttl"); break;
    case MW_STORE_OP_SCRIPT:  break;
    }
    if (op->kind == MW_STORE_OP_INCR || op->kind == MW_STORE_OP_HINCR ||
        op->kind == MW_STORE_OP_SCRIPT) {
        ARG("EVALSHA", 7);
        ARG(sc->sha1, strlen(sc->sha1));
        ARG(nk, (size_t)snprintf(nk, sizeof nk, "%zu", op->nkeys));
    }
    for (size_t i = 0; i < op->nkeys; i++) {
        memcpy(kp, r->prefix, r->prefixlen);
        memcpy(kp + r->prefixlen, op->keys[i], op->keylens[i]);
        ARG(kp, r->prefixlen + op->keylens[i]);
        kp += r->prefixlen + op->keylens[i];
    }
    for (size_t i = 0; i < op->nargs; i++)
        ARG(op->args[i], op->arglens[i]);
#undef ARG
    redisAppendCommandArgv(c, (int)argc, argv, lens);
    free(kblock);
    if (argv != argv_s)
        free(argv);
    if (lens != lens_s)
        free(lens);
}

static const struct mw_store_script *op_script(const mw_store_op *op)
{
    return op->kind == MW_STORE_OP_INCR    ? mw_store_script_find("incr_ttl")
         : op->kind == MW_STORE_OP_HINCR   ? mw_store_script_find("hincr_ttl")
         : op->kind == MW_STORE_OP_SCRIPT  ? op->script
                                           : NULL;
}

/* Load the scripts of the NOSCRIPT operations (pipelined).  false on I/O error. */
static bool load_scripts(mw_store_redis *r, redisContext *c, mw_store_op *ops,
                         enum op_state *state, size_t n, uint64_t deadline, char *why,
                         size_t whylen)
{
    const struct mw_store_script **need = mw_calloc(n + 1, sizeof *need);
    size_t nneed = 0;
    bool ok = true;

    for (size_t i = 0; i < n; i++) {
        const struct mw_store_script *sc;
        if (state[i] != ST_NOSCRIPT || (sc = op_script(&ops[i])) == NULL)
            continue;
        bool dup = false;
        for (size_t j = 0; j < nneed; j++)
            dup = dup || need[j] == sc;
        if (!dup)
            need[nneed++] = sc;
    }
    for (size_t j = 0; j < nneed; j++) {
        const char *argv[] = {"SCRIPT", "LOAD", need[j]->text};
        size_t lens[] = {6, 4, need[j]->len};
        redisAppendCommandArgv(c, 3, argv, lens);
    }
    if (nneed > 0)
        atomic_fetch_add(&r->round_trips, 1);
    for (size_t j = 0; j < nneed && ok; j++) {
        void *rep = NULL;
        if (!set_deadline(c, deadline) || redisGetReply(c, &rep) != REDIS_OK) {
            snprintf(why, whylen, "%s", c->err ? c->errstr : "timeout");
            ok = false;
            break;
        }
        redisReply *rr = rep;
        if (rr->type != REDIS_REPLY_STRING || strcmp(rr->str, need[j]->sha1) != 0)
            mw_error("redis: SCRIPT LOAD %s: unexpected reply %s (build and server disagree "
                     "on the script's SHA-1)", need[j]->name,
                     rr->type == REDIS_REPLY_ERROR || rr->type == REDIS_REPLY_STRING ? rr->str : "?");
        freeReplyObject(rr);
    }
    free(need);
    return ok;
}

/* Send every op in state ST_PENDING, read the replies owed to earlier
 * sends and then ours, classify.  false on an I/O error or timeout (the
 * connection is then unusable). */
static bool run_round(mw_store_redis *r, struct rconn *conn, mw_store_op *ops, enum op_state *state,
                      size_t n, uint64_t deadline, char *why, size_t whylen)
{
    redisContext *c = conn->c;
    size_t sent = 0;

    for (size_t i = 0; i < n; i++)
        if (state[i] == ST_PENDING) {
            append_op(r, c, &ops[i]);
            sent++;
        }
    if (sent > 0)
        atomic_fetch_add(&r->round_trips, 1);
    /* The first read writes our pipeline; the owed replies come first. */
    if (sent > 0 && !drain_owed(r, conn, deadline, why, whylen))
        return false;
    for (size_t i = 0; i < n && sent > 0; i++) {
        void *rep = NULL;
        bool tmo;
        if (state[i] != ST_PENDING)
            continue;
        if (get_reply(c, deadline, &rep, &tmo) != REDIS_OK) {
            if (tmo)
                snprintf(why, whylen, "command timeout (%u ms)", r->command_ms);
            else
                snprintf(why, whylen, "%s", c->err ? c->errstr : "no reply");
            return false;
        }
        redisReply *rr = rep;
        mw_store_op *op = &ops[i];
        if (error_is(rr, "NOSCRIPT")) {
            state[i] = ST_NOSCRIPT;
        } else if (error_is(rr, "READONLY")) {
            state[i] = ST_READONLY;
        } else if (rr->type == REDIS_REPLY_ERROR) {
            mw_store_op_fail(op, error_transient(rr) ? MW_STORE_TEMPFAIL : MW_STORE_ERROR, rr->str);
            state[i] = ST_DONE;
        } else {
            convert(rr, &op->val);
            op->status = MW_STORE_OK;
            if ((op->kind == MW_STORE_OP_GET && rr->type == REDIS_REPLY_NIL) ||
                (op->kind == MW_STORE_OP_HGETALL && rr->type == REDIS_REPLY_ARRAY &&
                 rr->elements == 0))
                op->status = MW_STORE_NOTFOUND;
            state[i] = ST_DONE;
        }
        freeReplyObject(rr);
    }
    return true;
}

mw_store_status mw_store_redis_exec(mw_store_redis *r, mw_store_op *ops, size_t n, char *why,
                                    size_t whylen)
{
    if (r->cluster != NULL)
        return mw_redis_cluster_exec(r->cluster, ops, n, false, why, whylen);
    uint64_t deadline = mono_us() + (uint64_t)r->command_ms * 1000u;
    enum op_state *state = mw_calloc(n + 1, sizeof *state);
    struct rconn conn = {0};
    mw_store_status st = MW_STORE_OK;
    bool retried_readonly = false;

    if (!acquire(r, deadline, &conn, why, whylen)) {
        free(state);
        return MW_STORE_TEMPFAIL;
    }
    for (int round = 0; round < MAX_ROUNDS; round++) {
        bool noscript = false, readonly = false;

        if (!run_round(r, &conn, ops, state, n, deadline, why, whylen)) {
            release(r, &conn, true);
            pthread_mutex_lock(&r->mu);
            note_failure(r, why, true);
            pthread_mutex_unlock(&r->mu);
            free(state);
            return MW_STORE_TEMPFAIL;
        }
        for (size_t i = 0; i < n; i++) {
            noscript = noscript || state[i] == ST_NOSCRIPT;
            readonly = readonly || state[i] == ST_READONLY;
        }
        if (readonly) {
            /* We are talking to a replica: the master moved.  Retire the
             * pool, reconnect (Sentinel names the new master), retry once. */
            release(r, &conn, true);
            pthread_mutex_lock(&r->mu);
            r->gen++;
            pthread_mutex_unlock(&r->mu);
            atomic_fetch_add(&r->failovers, 1);
            if (retried_readonly || !acquire(r, deadline, &conn, why, whylen)) {
                if (why[0] == '\0' || retried_readonly)
                    snprintf(why, whylen, "READONLY: the master is failing over");
                free(state);
                return MW_STORE_TEMPFAIL;
            }
            retried_readonly = true;
            for (size_t i = 0; i < n; i++)
                if (state[i] == ST_READONLY || state[i] == ST_NOSCRIPT)
                    state[i] = ST_PENDING;
            continue;
        }
        if (noscript) {
            if (!load_scripts(r, conn.c, ops, state, n, deadline, why, whylen)) {
                release(r, &conn, true);
                pthread_mutex_lock(&r->mu);
                note_failure(r, why, true);
                pthread_mutex_unlock(&r->mu);
                free(state);
                return MW_STORE_TEMPFAIL;
            }
            for (size_t i = 0; i < n; i++)
                if (state[i] == ST_NOSCRIPT)
                    state[i] = ST_PENDING;
            continue;
        }
        break;
    }
    for (size_t i = 0; i < n; i++)
        if (state[i] != ST_DONE)
            mw_store_op_fail(&ops[i], MW_STORE_TEMPFAIL, "redis: gave up after retries");
    release(r, &conn, false);
    note_success(r);
    free(state);
    return st;
}

mw_store_status mw_store_redis_send(mw_store_redis *r, mw_store_op *ops, size_t n, char *why,
                                    size_t whylen)
{
    if (r->cluster != NULL)
        return mw_redis_cluster_exec(r->cluster, ops, n, true, why, whylen);
    uint64_t deadline = mono_us() + (uint64_t)r->command_ms * 1000u;
    struct rconn conn = {0};
    int done = 0;

    if (!acquire(r, deadline, &conn, why, whylen))
        return MW_STORE_TEMPFAIL;
    if (conn.owed >= MAX_OWED && !drain_owed(r, &conn, deadline, why, whylen))
        goto fail;
    for (size_t i = 0; i < n; i++)
        append_op(r, conn.c, &ops[i]);
    while (!done) {
        if (!set_deadline(conn.c, deadline)) {
            snprintf(why, whylen, "command timeout (%u ms)", r->command_ms);
            goto fail;
        }
        if (redisBufferWrite(conn.c, &done) != REDIS_OK) {
            snprintf(why, whylen, "%s", conn.c->err ? conn.c->errstr : "write failed");
            goto fail;
        }
    }
    conn.owed += n;
    release(r, &conn, false);
    return MW_STORE_OK;
fail:
    release(r, &conn, true);
    pthread_mutex_lock(&r->mu);
    note_failure(r, why, true);
    pthread_mutex_unlock(&r->mu);
    return MW_STORE_TEMPFAIL;
}

/* ---- scan ---------------------------------------------------------------------------- */

mw_store_status mw_store_redis_scan(mw_store_redis *r, const char *pattern, mw_store_scan_fn fn,
                                    void *arg, char *why, size_t whylen)
{
    struct rconn conn = {0};
    mw_buf match = MW_BUF_INIT;
    char cursor[32] = "0";
    bool go = true;

    /* The prefix is literal: escape SCAN MATCH's glob characters in it. */
    for (const char *p = r->prefix; *p != '\0'; p++) {
        if (strchr("*?[]\\", *p) != NULL)
            mw_buf_putc(&match, '\\');
        mw_buf_putc(&match, *p);
    }
    mw_buf_puts(&match, pattern);
    if (r->cluster != NULL) {
        mw_store_status st = mw_redis_cluster_scan(r->cluster, mw_buf_cstr(&match), fn, arg, why,
                                                   whylen);
        mw_buf_free(&match);
        return st;
    }
    if (!acquire(r, mono_us() + (uint64_t)r->command_ms * 1000u, &conn, why, whylen)) {
        mw_buf_free(&match);
        return MW_STORE_TEMPFAIL;
    }
    if (!drain_owed(r, &conn, mono_us() + (uint64_t)r->command_ms * 1000u, why, whylen)) {
        release(r, &conn, true);
        mw_buf_free(&match);
        return MW_STORE_TEMPFAIL;
    }
    do {
        uint64_t deadline = mono_us() + (uint64_t)r->command_ms * 1000u;
        const char *argv[] = {"SCAN", cursor, "MATCH", mw_buf_cstr(&match), "COUNT", "500"};
        redisReply *rep = command(conn.c, deadline, 6, argv, why, whylen);

        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
                snprintf(why, whylen, "SCAN: %s", rep->str);
            if (rep != NULL)
                freeReplyObject(rep);
            release(r, &conn, true);
            mw_buf_free(&match);
            return MW_STORE_TEMPFAIL;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *pargv[] = {"PTTL", keys->element[i]->str};
            size_t plens[] = {4, keys->element[i]->len};
            redisAppendCommandArgv(conn.c, 2, pargv, plens);
        }
        for (size_t i = 0; i < keys->elements; i++) {
            void *tr = NULL;
            long long ttl = -1;
            if (!set_deadline(conn.c, deadline) || redisGetReply(conn.c, &tr) != REDIS_OK) {
                snprintf(why, whylen, "PTTL: %s", conn.c->err ? conn.c->errstr : "timeout");
                freeReplyObject(rep);
                release(r, &conn, true);
                mw_buf_free(&match);
                return MW_STORE_TEMPFAIL;
            }
            if (((redisReply *)tr)->type == REDIS_REPLY_INTEGER)
                ttl = ((redisReply *)tr)->integer;
            freeReplyObject(tr);
            redisReply *k = keys->element[i];
            if (go && ttl != -2 && k->len >= r->prefixlen)
                go = fn(arg, k->str + r->prefixlen, k->len - r->prefixlen, ttl);
        }
        freeReplyObject(rep);
    } while (go && strcmp(cursor, "0") != 0);
    release(r, &conn, false);
    mw_buf_free(&match);
    return MW_STORE_OK;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static bool split_host_port(const char *s, struct hostport *out)
{
    const char *colon = strrchr(s, ':');

    if (colon == NULL)
        return false;
    out->host = s[0] == '[' ? mw_strndup(s + 1, (size_t)(colon - s - 2))
                            : mw_strndup(s, (size_t)(colon - s));
    out->port = atoi(colon + 1);
    return out->port > 0;
}

mw_store_redis *mw_store_redis_create(const mw_config *cfg, const mw_store *owner)
{
    mw_store_redis *r = mw_calloc(1, sizeof *r);
    pthread_condattr_t ca;

    r->owner = owner;
    r->direct.host = mw_strdup(cfg->redis_host);
    r->direct.port = (int)cfg->redis_port;
    r->sentinels = mw_calloc(cfg->nredis_sentinels + 1, sizeof *r->sentinels);
    for (size_t i = 0; i < cfg->nredis_sentinels; i++)
        if (split_host_port(cfg->redis_sentinels[i], &r->sentinels[r->nsentinels]))
            r->nsentinels++;
    r->master_name = mw_strdup(cfg->redis_master_name);
    r->allow_plaintext = cfg->redis_allow_plaintext;
    r->user = mw_strdup(cfg->redis_username);
    r->pass = mw_strdup(cfg->redis_password);
    r->db = cfg->redis_db;
    r->prefix = mw_strdup(cfg->redis_prefix);
    r->prefixlen = strlen(r->prefix);
    r->connect_ms = cfg->redis_connect_timeout_ms;
    r->command_ms = cfg->redis_command_timeout_ms;
    r->pool_max = cfg->redis_pool_size > 0 ? cfg->redis_pool_size : 1;
    r->idle = mw_calloc(r->pool_max, sizeof *r->idle);
    if (cfg->nredis_cluster_nodes > 0) {
        r->cluster = mw_redis_cluster_create(r, cfg);
        snprintf(r->describe, sizeof r->describe, "cluster %s", cfg->redis_cluster_nodes[0]);
    } else if (r->nsentinels > 0)
        snprintf(r->describe, sizeof r->describe, "sentinel master \"%s\"", r->master_name);
    else
        snprintf(r->describe, sizeof r->describe, strchr(r->direct.host, ':') ? "[%s]:%d" : "%s:%d",
                 r->direct.host, r->direct.port);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    return r;
}

void mw_store_redis_destroy(mw_store_redis **rp)
{
    mw_store_redis *r = *rp;

    if (r == NULL)
        return;
    mw_redis_cluster_destroy(&r->cluster);
    for (size_t i = 0; i < r->nidle; i++)
        redisFree(r->idle[i].c);
    free(r->idle);
    for (size_t i = 0; i < r->nsentinels; i++)
        free(r->sentinels[i].host);
    free(r->sentinels);
    free(r->direct.host);
    free(r->master_name);
    free(r->user);
    if (r->pass != NULL)
        explicit_bzero(r->pass, strlen(r->pass));
    free(r->pass);
    free(r->prefix);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    MW_FREE(rp);
}

const char *mw_store_redis_describe(const mw_store_redis *r) { return r->describe; }

void mw_store_redis_stats(mw_store_redis *r, mw_store_stats *out)
{
    out->reconnects = atomic_load(&r->reconnects);
    out->failovers = atomic_load(&r->failovers);
    out->round_trips = atomic_load(&r->round_trips);
    out->sends_lost = atomic_load(&r->sends_lost);
    if (r->cluster != NULL)
        mw_redis_cluster_stats(r->cluster, out);
}

/* ---- for the cluster module (store_redis_cluster.h) ------------------------------------ */

uint64_t mw_redis_mono_us(void) { return mono_us(); }
bool mw_redis_set_deadline(redisContext *c, uint64_t deadline) { return set_deadline(c, deadline); }
int mw_redis_get_reply(redisContext *c, uint64_t deadline, void **rep, bool *timed_out)
{
    return get_reply(c, deadline, rep, timed_out);
}
void mw_redis_append_op(mw_store_redis *r, redisContext *c, const mw_store_op *op)
{
    append_op(r, c, op);
}
void mw_redis_convert(const redisReply *rep, mw_store_value *v) { convert(rep, v); }
bool mw_redis_error_is(const redisReply *rep, const char *code) { return error_is(rep, code); }
bool mw_redis_error_transient(const redisReply *rep) { return error_transient(rep); }
unsigned mw_redis_connect_ms(const mw_store_redis *r) { return r->connect_ms; }
unsigned mw_redis_command_ms(const mw_store_redis *r) { return r->command_ms; }
unsigned mw_redis_pool_max(const mw_store_redis *r) { return r->pool_max; }
const char *mw_redis_prefix(const mw_store_redis *r) { return r->prefix; }
