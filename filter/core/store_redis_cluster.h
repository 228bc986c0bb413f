/*
 * store_redis_cluster.h - Redis Cluster routing for the redis store backend
 * (internal to filter/core/store_redis*.c; not for callers of store.h).
 *
 * store_redis.c keeps the single-Redis and Sentinel paths and hands every
 * batch to the cluster module when redis.cluster_nodes is set.  The module
 * uses store_redis.c's connection set-up (AUTH, scripts) and command
 * encoding through the mw_redis_* helpers below.
 */
#ifndef MW_CORE_STORE_REDIS_CLUSTER_H
#define MW_CORE_STORE_REDIS_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* ---- from store_redis.c ---- */
uint64_t mw_redis_mono_us(void);
bool mw_redis_set_deadline(redisContext *c, uint64_t deadline);
int mw_redis_get_reply(redisContext *c, uint64_t deadline, void **rep, bool *timed_out);
/* scripts: also load the scripts (false: AUTH only, for CLUSTER SLOTS). */
redisContext *mw_redis_connect_node(mw_store_redis *r, const char *host, int port, bool scripts,
                                    uint64_t deadline, char *why, size_t whylen);
void mw_redis_append_op(mw_store_redis *r, redisContext *c, const mw_store_op *op);
void mw_redis_convert(const redisReply *rep, mw_store_value *v);
bool mw_redis_error_is(const redisReply *rep, const char *code);
bool mw_redis_error_transient(const redisReply *rep);
unsigned mw_redis_connect_ms(const mw_store_redis *r);
unsigned mw_redis_command_ms(const mw_store_redis *r);
unsigned mw_redis_pool_max(const mw_store_redis *r);
const char *mw_redis_prefix(const mw_store_redis *r);

/* ---- the cluster (store_redis_cluster.c) ---- */
#define MW_REDIS_CLUSTER_SLOTS 16384

typedef struct mw_redis_cluster mw_redis_cluster;

mw_redis_cluster *mw_redis_cluster_create(mw_store_redis *r, const mw_config *cfg);
void mw_redis_cluster_destroy(mw_redis_cluster **cl);
/* Execute (send: the same, answers discarded) ops, routed by slot. */
mw_store_status mw_redis_cluster_exec(mw_redis_cluster *cl, mw_store_op *ops, size_t n, bool send,
                                      char *why, size_t whylen);
/* SCAN every master; match is the full pattern (prefix included, escaped). */
mw_store_status mw_redis_cluster_scan(mw_redis_cluster *cl, const char *match, mw_store_scan_fn fn,
                                      void *arg, char *why, size_t whylen);
void mw_redis_cluster_stats(mw_redis_cluster *cl, mw_store_stats *out);

/* ---- pure parts (unit tests, tests/fuzz/fuzz_redis_cluster.c) ---- */

/* CRC16-XMODEM of the key's hash tag (Redis Cluster's rule: the part
 * between the first '{' and the next '}' if non-empty, else the key) mod 16384. */
unsigned mw_redis_cluster_slot(const char *key, size_t len);

/* A "MOVED 3999 127.0.0.1:6381" / "ASK 3999 [::1]:6381" error text: true
 * with *ask, *slot, host (NUL-terminated, brackets removed) and *port set. */
bool mw_redis_cluster_parse_redirect(const char *err, size_t len, bool *ask, unsigned *slot,
                                     char *host, size_t hostlen, int *port);

/* A CLUSTER SLOTS reply: for each range with a usable master, fn(arg,
 * first, last, host, port, master) (then once per replica); asked_host replaces an empty host.  false (and
 * no call at all) when the reply is not a well-formed CLUSTER SLOTS answer. */
typedef void (*mw_redis_slots_fn)(void *arg, unsigned first, unsigned last, const char *host,
                                  int port, bool master);   /* replicas too, master false */
bool mw_redis_cluster_parse_slots(const redisReply *rep, const char *asked_host,
                                  mw_redis_slots_fn fn, void *arg);

#endif
