/*
 * dns.h - the one resolver for everything (SPF, DKIM, DMARC), on libunbound.
 *
 * Forwarders ("ADDR" or "ADDR@PORT") or, with none configured, full
 * recursion from the root (or /etc/resolv.conf's servers when resolv_conf is
 * set).  libunbound caches answers (positive and negative) for their TTLs;
 * in front of it, an answer cache of our own (dns_cache.h, cache_size > 0)
 * answers repeated lookups in the calling thread without libunbound's
 * thread hand-offs.  The cache belongs to the mw_dns: a new resolver (a
 * config reload) starts cold.
 * Every query has its own deadline, enforced here: libunbound alone waits
 * ~17 s on a silent server.  libunbound's built-in local zones (test.,
 * invalid., localhost., onion., RFC 1918 reverse zones, ...) are disabled so
 * whatever the configured forwarder serves is resolved.
 *
 * Thread safety: one mw_dns is shared by all threads; mw_dns_query() may be
 * called concurrently.  Answers are owned by the caller.
 */
#ifndef MW_CORE_DNS_H
#define MW_CORE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* RR types we use. */
enum {
    MW_DNS_T_A = 1, MW_DNS_T_NS = 2, MW_DNS_T_CNAME = 5, MW_DNS_T_PTR = 12,
    MW_DNS_T_MX = 15, MW_DNS_T_TXT = 16, MW_DNS_T_AAAA = 28, MW_DNS_T_SPF = 99
};

/* Classification of a lookup (STYLE §7): temporary distinct from permanent. */
typedef enum mw_dns_status {
    MW_DNS_OK = 0,       /* at least one RR of the asked type */
    MW_DNS_NXDOMAIN,     /* the name does not exist */
    MW_DNS_NODATA,       /* the name exists, no RR of this type */
    MW_DNS_TEMPFAIL,     /* timeout, SERVFAIL, network error: try again later */
    MW_DNS_PERMFAIL      /* bad query name, REFUSED/FORMERR/NOTIMP, DNSSEC bogus */
} mw_dns_status;

const char *mw_dns_status_name(mw_dns_status s);

typedef struct mw_dns_rr {
    uint16_t       type;
    uint32_t       ttl;
    size_t         len;
    unsigned char *data;   /* rdata in wire format, names uncompressed */
} mw_dns_rr;

typedef struct mw_dns_answer {
    mw_dns_status status;
    int           rcode;      /* DNS rcode as received (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN ...) */
    char         *qname;      /* the name asked */
    char         *canonname;  /* after CNAMEs; NULL if none */
    uint16_t      qtype;
    mw_dns_rr    *rr;
    size_t        nrr;
    uint32_t      ttl;        /* min TTL of the answer RRs (negative TTL for NX/NODATA, else 0) */
    bool          secure;     /* DNSSEC validated (only with a trust anchor) */
    bool          bogus;      /* DNSSEC validation failed */
    char         *why;        /* human reason for TEMPFAIL/PERMFAIL/bogus, else NULL */
} mw_dns_answer;

typedef struct mw_dns_options {
    const char *const *forwarders;  /* "127.0.0.1@5353", "::1", ...; NULL/0 -> recursion */
    size_t      nforwarders;
    bool        resolv_conf;        /* use /etc/resolv.conf's nameservers as forwarders */
    unsigned    timeout_ms;         /* default per-query deadline (0 -> 5000) */
    const char *trust_anchor_file;  /* DNSSEC root anchor; NULL -> no validation */
    bool        use_tcp;            /* force TCP upstream (tests, firewalls) */
    size_t      cache_size;         /* answers in our cache (dns_cache.h); 0 -> no cache */
    unsigned    cache_min_ttl;      /* clamp of the cached TTL, seconds */
    unsigned    cache_max_ttl;      /* (0 -> no upper clamp) */
} mw_dns_options;

/* Counters of one resolver (tests, tools). */
typedef struct mw_dns_stats {
    uint64_t upstream;              /* queries handed to libunbound */
    uint64_t cache_hits, cache_misses, cache_inserts, cache_evictions, cache_expired;
    size_t   cache_entries, cache_capacity;   /* capacity 0: no cache */
} mw_dns_stats;

typedef struct mw_dns mw_dns;

/* Create a resolver.  NULL on error with a reason in err. */
mw_dns *mw_dns_create(const mw_dns_options *opt, char *err, size_t errlen);
/* Destroy; outstanding queries must have returned.  NULLs *dns. */
void mw_dns_destroy(mw_dns **dns);

/*
 * Look up name/type, waiting at most timeout_ms (0: the resolver default).
 * An answer in the cache is returned at once (a copy; TTLs reduced by the
 * time it was held).  Always stores a non-NULL answer in *out (free with mw_dns_answer_free) and
 * returns its status.  A name longer than 253 bytes or with an empty or
 * >63-byte label is MW_DNS_PERMFAIL without any network traffic.
 */
mw_dns_status mw_dns_query(mw_dns *dns, const char *name, uint16_t type, unsigned timeout_ms,
                           mw_dns_answer **out);
void mw_dns_answer_free(mw_dns_answer **a);
void mw_dns_get_stats(mw_dns *dns, mw_dns_stats *st);
/* Tests only: the answer cache's clock (mw_dns_cache_set_clock; no-op
 * without a cache).  libunbound's own cache keeps real time. */
void mw_dns_set_cache_clock(mw_dns *dns, uint64_t (*fn)(void *arg), void *arg);

/* --- rdata helpers (return false on malformed rdata) --- */
/* TXT: join the character-strings of one RR (no separator) into out (reset first). */
bool mw_dns_rr_txt(const mw_dns_rr *rr, mw_buf *out);
/* PTR, CNAME, NS: the target name in presentation form without trailing dot. */
bool mw_dns_rr_name(const mw_dns_rr *rr, char *out, size_t outlen);
/* MX: preference and exchange name. */
bool mw_dns_rr_mx(const mw_dns_rr *rr, uint16_t *pref, char *out, size_t outlen);
/* A/AAAA: raw address bytes (4 or 16) into out; returns length or 0. */
size_t mw_dns_rr_addr(const mw_dns_rr *rr, uint8_t out[16]);

#endif
