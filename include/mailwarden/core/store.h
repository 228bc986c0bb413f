/*
 * store.h - the state store behind rate limits and reputation: a narrow
 * key/value interface with two backends.
 *
 *   memory  (state.backend = "memory", the default) state inside the daemon,
 *           for one host: sharded locks, TTL expiry, bounded size.
 *   redis   (state.backend = "redis") state shared by a fleet of MTAs:
 *           hiredis, a small connection pool, connect and command timeouts
 *           always set, argv-form commands only, Lua scripts by EVALSHA,
 *           AUTH (user + password), SELECT, Sentinel discovery and failover,
 *           or Redis Cluster routing (store_redis_cluster.c).
 *
 * What the policy modules see
 *   A batch of operations executed in ONE round trip (pipelined), by
 *   mw_store_exec (waits for the answers) or mw_store_send (writes them and
 *   does not wait: for updates whose answer nobody needs):
 *     get       a string value
 *     incr      counter + TTL set when the counter is created
 *     hgetall   all fields of a hash
 *     hincr     hash field + TTL refreshed on every increment
 *     script    a named atomic check-and-update script ("gcra", "reputation";
 *               scripts/redis/NAME.lua), with keys and string arguments
 *     del       remove a key
 *   plus scan (for `mailwarden limits`), outside the hot path.  Each
 *   operation is atomic on its own; a batch is not a transaction.  The
 *   operations run in order (except after a NOSCRIPT reload, see
 *   store_redis.c: reloaded scripts then run after the others).
 *
 * Keys
 *   Callers write keys without the prefix ("rl:{user=alice}:hourly"); the
 *   store prepends redis.prefix ("mw:") and strips it from scan results.
 *   The part in {braces} is the Redis Cluster hash tag: every key of one
 *   script call must carry the same tag (the store checks), so a script
 *   touches one slot; the memory backend takes the tag as its shard, so a
 *   script is atomic there under one lock.
 *
 * Failure (STYLE §7)
 *   MW_STORE_TEMPFAIL: unreachable, slow (past the timeout), pool exhausted,
 *   failing over, backing off after errors.  MW_STORE_ERROR: a permanent
 *   problem with one operation (wrong type, script error).  Either way the
 *   caller decides: rate limits apply redis.failure_action (fail open by
 *   default).  No call blocks longer than redis.connect_timeout (only when
 *   a connection must be made) plus redis.command_timeout.  After a
 *   connection failure the store backs off (100 ms doubling to 5 s) and
 *   fails fast meanwhile; problems are logged at most once a minute with a
 *   count, and recovery is logged.
 *
 * Time
 *   The store's clock (microseconds since the epoch; CLOCK_REALTIME unless
 *   a test injects one) is what callers pass to scripts as "now" and what
 *   the memory backend expires keys by.  Hosts sharing a Redis must keep
 *   their clocks in sync (NTP).
 *
 * Thread safety: a store is shared by all sessions; every function may be
 * called from any thread.  A batch belongs to one thread.
 */
#ifndef MW_CORE_STORE_H
#define MW_CORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

typedef enum mw_store_status {
    MW_STORE_OK = 0,
    MW_STORE_NOTFOUND,     /* get / hgetall: no such key (value is NIL / empty) */
    MW_STORE_TEMPFAIL,     /* the backend is unavailable or too slow: try later */
    MW_STORE_ERROR         /* this operation failed for good (wrong type, script error) */
} mw_store_status;

const char *mw_store_status_name(mw_store_status st);

typedef struct mw_store mw_store;

/*
 * Create the store described by cfg (state.*, redis.*).  Never connects:
 * the redis backend connects on first use, so creating a store (at start
 * or reload) never blocks.  NULL with a reason in err only for a
 * configuration the loader cannot have passed.
 */
mw_store *mw_store_create(const mw_config *cfg, char *err, size_t errlen);
/* Take another reference (a reload that keeps the store); returns s. */
mw_store *mw_store_ref(mw_store *s);
/* Drop a reference; the last one frees the store.  *s becomes NULL. */
void mw_store_destroy(mw_store **s);
/* Would a and b create the same store?  Then a reload should keep the old
 * one (mw_store_ref): the memory backend's state survives SIGHUP. */
bool mw_store_config_same(const mw_config *a, const mw_config *b);
/* "memory" or "redis HOST:PORT" / "redis sentinel NAME" (owned by the store). */
const char *mw_store_describe(const mw_store *s);
bool mw_store_is_memory(const mw_store *s);

/* Microseconds since the epoch by the store's clock. */
uint64_t mw_store_now_us(const mw_store *s);
/* Tests: replace the clock (call before the store is used). */
typedef uint64_t (*mw_store_clock_fn)(void *arg);
void mw_store_set_clock(mw_store *s, mw_store_clock_fn fn, void *arg);

/* Counters since creation (for metrics and tests). */
typedef struct mw_store_stats {
    unsigned long long batches;      /* executed (mw_store_exec calls) */
    unsigned long long failures;     /* batches (exec or send) that ended TEMPFAIL */
    unsigned long long round_trips;  /* requests whose answer was waited for: redis, one per
                                      * pipeline written and read (a NOSCRIPT reload or a
                                      * READONLY retry adds one; connecting is not counted);
                                      * memory, one per exec with operations (what it would
                                      * cost against Redis) */
    unsigned long long sends;        /* batches written by mw_store_send (no wait) */
    unsigned long long sends_lost;   /* ... operations of them the backend refused (redis:
                                      * an error reply read later, e.g. NOSCRIPT) */
    unsigned long long reconnects;   /* connections made (redis) */
    unsigned long long failovers;    /* master changes seen (READONLY, Sentinel) */
    unsigned long long evictions;    /* entries evicted for space (memory) */
    unsigned long long keys;         /* entries held now (memory) */
} mw_store_stats;
void mw_store_stats_get(mw_store *s, mw_store_stats *out);

/* ---- values ---- */

typedef enum mw_store_vtype {
    MW_STORE_NIL = 0,
    MW_STORE_INT,
    MW_STORE_STR,
    MW_STORE_ARRAY
} mw_store_vtype;

typedef struct mw_store_value {
    mw_store_vtype type;
    long long      integer;          /* MW_STORE_INT */
    char          *str;              /* MW_STORE_STR: NUL-terminated, len authoritative */
    size_t         len;
    struct mw_store_value *elem;     /* MW_STORE_ARRAY */
    size_t         nelem;
} mw_store_value;

/* ---- batches ---- */

typedef struct mw_store_batch mw_store_batch;

mw_store_batch *mw_store_batch_new(void);
void mw_store_batch_free(mw_store_batch **b);
/* Forget operations and results; the batch can be filled again. */
void mw_store_batch_reset(mw_store_batch *b);

/* Add an operation; returns its index for mw_store_batch_result().  Keys,
 * fields and arguments are copied (length-carrying: binary safe). */
size_t mw_store_batch_get(mw_store_batch *b, const char *key, size_t keylen);
size_t mw_store_batch_incr(mw_store_batch *b, const char *key, size_t keylen, long long delta,
                           unsigned long long ttl_ms);
size_t mw_store_batch_hgetall(mw_store_batch *b, const char *key, size_t keylen);
size_t mw_store_batch_hincr(mw_store_batch *b, const char *key, size_t keylen, const char *field,
                            long long delta, unsigned long long ttl_ms);
size_t mw_store_batch_del(mw_store_batch *b, const char *key, size_t keylen);
/* A named script (scripts/redis/NAME.lua): keys (NUL-terminated, all with
 * the same hash tag) and arguments (NUL-terminated strings). */
size_t mw_store_batch_script(mw_store_batch *b, const char *name, const char *const *keys,
                             size_t nkeys, const char *const *args, size_t nargs);
/* The same, but the keys may carry different hash tags: the script is
 * still atomic (Redis runs a script alone; the memory backend locks every
 * shard involved, in shard order), but the call spans slots: against a
 * Redis Cluster (redis.cluster_nodes) the store splits a "gcra" call into
 * one call per slot and refunds the charged parts when one refuses
 * (store_redis_cluster.c, gcra_refund.lua); other scripts are refused
 * there (MW_STORE_ERROR).  Used for the first
 * recipient's rate limits together with the MAIL-stage ones
 * (docs/ratelimit.md). */
size_t mw_store_batch_script_multi(mw_store_batch *b, const char *name, const char *const *keys,
                                   size_t nkeys, const char *const *args, size_t nargs);
size_t mw_store_batch_count(const mw_store_batch *b);

/*
 * Execute every operation of the batch in one round trip.  Returns OK if
 * the backend answered (each operation then has its own status: OK,
 * NOTFOUND or ERROR), TEMPFAIL if it did not (every operation is then
 * TEMPFAIL; a write may or may not have happened).  why (may be NULL)
 * receives a reason for TEMPFAIL and for the first ERROR.
 */
mw_store_status mw_store_exec(mw_store *s, mw_store_batch *b, char *why, size_t whylen);

/*
 * Send every operation of the batch without waiting for the answers: for
 * updates whose result nobody needs (reputation outcomes).  redis: the
 * pipeline is written to a pooled connection within redis.command_timeout
 * (waiting for a free connection included) and the connection goes back
 * to the pool owing the replies; whoever uses it next reads and discards
 * them before its own, within its own timeout (Redis has long answered by
 * then: no extra round trip).  So the operations run before that
 * connection's next command, and a send never blocks past the timeout.
 * memory: executed at once.  Returns OK if the operations were handed
 * over (not whether they succeeded: an error is counted and logged when
 * its reply is read), TEMPFAIL if they could not be (the store is down or
 * backing off; the write did not happen or may be lost).  The batch's
 * results are not available (statuses OK, values NIL) unless the backend
 * is memory.
 */
mw_store_status mw_store_send(mw_store *s, mw_store_batch *b, char *why, size_t whylen);

/* The result of operation i after exec (owned by the batch, valid until
 * the next reset/exec/free).  get: STR or NIL; incr/hincr: INT;
 * hgetall: ARRAY of STR field, value, ...; del: INT (keys removed);
 * script: what the script returned. */
mw_store_status mw_store_batch_status(const mw_store_batch *b, size_t i);
const mw_store_value *mw_store_batch_result(const mw_store_batch *b, size_t i);
/* Why operation i ended TEMPFAIL or ERROR ("" otherwise; owned by the batch). */
const char *mw_store_batch_error(const mw_store_batch *b, size_t i);

/* ---- inspection (mailwarden limits) ---- */

/* Called for each key found: key without the prefix, its remaining TTL in
 * ms (-1: none).  Return false to stop. */
typedef bool (*mw_store_scan_fn)(void *arg, const char *key, size_t keylen, long long ttl_ms);
/* Every key (without prefix) matching the glob pattern ('*', '?'; Redis
 * SCAN MATCH syntax).  Not atomic: keys that come and go during the scan
 * may or may not be reported. */
mw_store_status mw_store_scan(mw_store *s, const char *pattern, mw_store_scan_fn fn, void *arg,
                              char *why, size_t whylen);

/* ---- scripts (generated at build time from scripts/redis/NAME.lua) ---- */

struct mw_store_script {
    const char *name;     /* file name without .lua */
    const char *sha1;     /* hex SHA-1 of the text: the EVALSHA name */
    const char *text;
    size_t      len;
};
extern const struct mw_store_script mw_store_scripts[];   /* ends with name NULL */

/* The hash tag of a key: the part between the first '{' and the next '}'
 * if non-empty (Redis Cluster rule), else the whole key.  *taglen set. */
const char *mw_store_key_tag(const char *key, size_t keylen, size_t *taglen);

/* ---- backends (internal to filter/core/store*.c; not for callers) ---- */

typedef enum mw_store_opkind {
    MW_STORE_OP_GET,
    MW_STORE_OP_INCR,      /* args: delta, ttl_ms */
    MW_STORE_OP_HGETALL,
    MW_STORE_OP_HINCR,     /* args: field, delta, ttl_ms */
    MW_STORE_OP_DEL,
    MW_STORE_OP_SCRIPT     /* args: the script's ARGV */
} mw_store_opkind;

typedef struct mw_store_op {
    mw_store_opkind kind;
    const struct mw_store_script *script;   /* MW_STORE_OP_SCRIPT */
    char          **keys;                   /* without the prefix */
    size_t         *keylens;
    size_t          nkeys;
    char          **args;
    size_t         *arglens;
    size_t          nargs;
    mw_store_status status;                 /* set by exec */
    mw_store_value  val;                    /* set by exec */
    char           *err;                    /* ERROR reason (owned) */
    bool            multi_slot;             /* keys may carry different hash tags */
} mw_store_op;

/* Result helpers for the backends. */
void mw_store_value_clear(mw_store_value *v);
void mw_store_value_set_str(mw_store_value *v, const char *s, size_t len);
void mw_store_op_fail(mw_store_op *op, mw_store_status st, const char *why);
/* Find a script by name (NULL if unknown). */
const struct mw_store_script *mw_store_script_find(const char *name);

/* The memory backend (store_memory.c). */
typedef struct mw_store_mem mw_store_mem;
mw_store_mem *mw_store_mem_create(const mw_config *cfg, const mw_store *owner);
void mw_store_mem_destroy(mw_store_mem **m);
mw_store_status mw_store_mem_exec(mw_store_mem *m, mw_store_op *ops, size_t n);
mw_store_status mw_store_mem_scan(mw_store_mem *m, const char *pattern, mw_store_scan_fn fn,
                                  void *arg);
void mw_store_mem_stats(mw_store_mem *m, mw_store_stats *out);

/* The redis backend (store_redis.c). */
typedef struct mw_store_redis mw_store_redis;
mw_store_redis *mw_store_redis_create(const mw_config *cfg, const mw_store *owner);
void mw_store_redis_destroy(mw_store_redis **r);
mw_store_status mw_store_redis_exec(mw_store_redis *r, mw_store_op *ops, size_t n, char *why,
                                    size_t whylen);
mw_store_status mw_store_redis_send(mw_store_redis *r, mw_store_op *ops, size_t n, char *why,
                                    size_t whylen);
mw_store_status mw_store_redis_scan(mw_store_redis *r, const char *pattern, mw_store_scan_fn fn,
                                    void *arg, char *why, size_t whylen);
void mw_store_redis_stats(mw_store_redis *r, mw_store_stats *out);
const char *mw_store_redis_describe(const mw_store_redis *r);

#endif
