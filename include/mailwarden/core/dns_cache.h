/*
 * dns_cache.h - the in-process answer cache in front of libunbound (dns.c).
 *
 * Why: even a libunbound cache hit costs a round trip through its worker
 * thread, our pump thread and a condition variable (about 15 syscalls and
 * 3 futex waits per lookup).  This cache answers repeated lookups in the
 * calling thread with one uncontended mutex.
 *
 * What it holds: classified answers (dns.h) keyed by (qname lower-cased
 * without its trailing dot, qtype, qclass), with the DNSSEC state, until
 * now + TTL (the answer's TTL: min over the RRs, or the negative TTL of an
 * NXDOMAIN/NODATA answer, RFC 2308), the TTL clamped to [min_ttl, max_ttl]
 * first.  Only MW_DNS_OK, MW_DNS_NXDOMAIN and MW_DNS_NODATA answers with a
 * TTL > 0 that are not DNSSEC-bogus are stored: never timeouts, SERVFAIL or
 * other failures.  Expiry runs on CLOCK_MONOTONIC (tests may inject a clock:
 * mw_dns_cache_set_clock).
 *
 * Bound: at most max_entries answers, split over up to 16 shards (each with
 * its own mutex and LRU list; one shard below 128 entries, so small caches
 * evict in exact LRU order).  A full shard evicts its least recently used
 * entry.
 *
 * Ownership: a hit is a fresh deep copy owned by the caller (free with
 * mw_dns_answer_free), with qname as asked and the TTLs reduced by the time
 * spent in the cache.  The cache never hands out its own memory.
 *
 * Thread safety: every function may be called concurrently on one cache,
 * except mw_dns_cache_destroy.
 */
#ifndef MW_CORE_DNS_CACHE_H
#define MW_CORE_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"

#define MW_DNS_CACHE_MAX_SHARDS 16

typedef struct mw_dns_cache mw_dns_cache;

typedef struct mw_dns_cache_stats {
    uint64_t hits, misses;     /* lookups answered / not answered (expired ones count as misses) */
    uint64_t inserts;          /* answers stored (a replacement counts too) */
    uint64_t evictions;        /* live entries dropped to make room */
    uint64_t expired;          /* entries dropped because their TTL ran out */
    size_t   entries;          /* entries held now */
    size_t   capacity;         /* max_entries */
    unsigned shards;
} mw_dns_cache_stats;

/* A cache of at most max_entries answers (NULL when max_entries is 0:
 * caching disabled).  max_ttl 0 means no upper clamp. */
mw_dns_cache *mw_dns_cache_create(size_t max_entries, uint32_t min_ttl, uint32_t max_ttl);
void mw_dns_cache_destroy(mw_dns_cache **c);

/* The answer for (name, type, qclass) if present and not expired: stores a
 * copy in *out and returns true; else false (*out untouched).  name must be a
 * valid query name (dns.c checks it first). */
bool mw_dns_cache_get(mw_dns_cache *c, const char *name, uint16_t type, uint16_t qclass,
                      mw_dns_answer **out);
/* Store a copy of a if it is cacheable (see above); returns whether it was. */
bool mw_dns_cache_put(mw_dns_cache *c, const char *name, uint16_t type, uint16_t qclass,
                      const mw_dns_answer *a);
/* Counters summed over the shards (all zero for NULL). */
void mw_dns_cache_get_stats(mw_dns_cache *c, mw_dns_cache_stats *st);

/*
 * Tests only: replace the cache's clock (nanoseconds, monotonic; NULL
 * restores CLOCK_MONOTONIC).  Call before the cache is used by any other
 * thread: the hook itself is not synchronised.  Expiry tests advance a
 * fake clock rather than sleep past a TTL (a sleep races the scheduler).
 * No-op on a NULL cache.
 */
typedef uint64_t (*mw_dns_cache_clock_fn)(void *arg);
void mw_dns_cache_set_clock(mw_dns_cache *c, mw_dns_cache_clock_fn fn, void *arg);

#endif
