/*
 * spf.h - SPF (RFC 7208) for the MAIL FROM and HELO identities.
 *
 * libspf2 is the evaluator; all of its DNS goes through our resolver
 * (mw_dns) via a custom libspf2 DNS layer, which also counts void lookups
 * and enforces the total evaluation deadline.  Result mapping:
 * a record libspf2 cannot compile -> permerror; a DNS failure -> temperror.
 *
 * Thread safety: one mw_spf is shared by all threads; mw_spf_check() may be
 * called concurrently (libspf2 server objects are per call; the result cache
 * has its own lock).
 *
 * Every record is checked by our strict RFC 7208 parser and rewritten into a
 * macro-free form before libspf2 sees it; macros, explanations, the ptr
 * mechanism, /0 prefixes and all processing limits are handled by our code
 * (filter/checks/spf_record.c, spf_dns.c), libspf2 evaluates the rest.
 */
#ifndef MW_CHECKS_SPF_H
#define MW_CHECKS_SPF_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "dns.h"

typedef enum mw_spf_result {
    MW_SPF_NONE = 0,
    MW_SPF_NEUTRAL,
    MW_SPF_PASS,
    MW_SPF_FAIL,
    MW_SPF_SOFTFAIL,
    MW_SPF_TEMPERROR,
    MW_SPF_PERMERROR
} mw_spf_result;

/* RFC 8601/7208 result word ("pass", "softfail", ...). */
const char *mw_spf_result_name(mw_spf_result r);
/* Parse a result word; false if unknown. */
bool mw_spf_result_parse(const char *s, mw_spf_result *out);

typedef enum mw_spf_scope { MW_SPF_SCOPE_MAILFROM, MW_SPF_SCOPE_HELO } mw_spf_scope;

typedef struct mw_spf_options {
    unsigned timeout_ms;       /* total evaluation deadline (0 -> 20000) */
    const char *receiver;      /* our host name, for %{r} and Received-SPF */
    unsigned query_timeout_ms; /* cap per DNS query (0 -> 5000, dns.timeout's default);
                                  the deadline still bounds every query */
    unsigned cache_entries;    /* result cache size (0 -> 4096) */
    bool     no_cache;         /* disable the result cache */
} mw_spf_options;

typedef struct mw_spf mw_spf;

/* dns is borrowed and must outlive the checker. NULL on error (reason in err). */
mw_spf *mw_spf_create(mw_dns *dns, const mw_spf_options *opt, char *err, size_t errlen);
void mw_spf_destroy(mw_spf **spf);

/* Outcome of one evaluation; strings owned by the outcome. */
typedef struct mw_spf_outcome {
    mw_spf_result result;
    mw_spf_scope  scope;
    char *identity;      /* checked identity: "user@dom" or "postmaster@helo" */
    char *domain;        /* domain whose record was evaluated */
    char *client_ip;     /* as given */
    char *helo;          /* as given (may be NULL) */
    char *explanation;   /* expanded exp= text when result is fail, else NULL */
    char *reason;        /* why, for the trace: mechanism matched / error text */
    bool  evaluated;     /* false until filled by mw_spf_check() */
} mw_spf_outcome;

/*
 * Evaluate one identity.
 *   ip:       client address text (IPv4, IPv6, IPv4-mapped IPv6)
 *   helo:     HELO/EHLO argument (may be NULL or "")
 *   mailfrom: envelope sender without <>; "" = null sender
 *   scope:    MW_SPF_SCOPE_MAILFROM checks the MAIL FROM domain (for a null
 *             sender, postmaster@helo per RFC 7208 §2.4); MW_SPF_SCOPE_HELO
 *             checks postmaster@helo.
 * Fills *out (clear it with mw_spf_outcome_clear).  Never fails: errors are
 * results (temperror/permerror) with a reason.  A HELO that is not a domain
 * name (an address literal, a bare word) gives none for the HELO scope.
 */
void mw_spf_check(mw_spf *spf, const char *ip, const char *helo, const char *mailfrom,
                  mw_spf_scope scope, mw_spf_outcome *out);
void mw_spf_outcome_clear(mw_spf_outcome *out);

/*
 * Result cache: outcomes are kept per (scope, client IP, HELO, domain, and
 * the sender's local part only when the record used %{l}/%{s}) for the
 * smallest TTL of the DNS answers the evaluation used (at most an hour).
 * temperror is never cached.  Bounded (least recently used entries go),
 * shared by all threads under one mutex.  Counters for tests and stats.
 */
typedef struct mw_spf_cache_stats {
    unsigned long hits, misses, inserts, evictions;
    size_t entries, capacity;
} mw_spf_cache_stats;
void mw_spf_cache_get_stats(mw_spf *spf, mw_spf_cache_stats *st);
/* Tests only: the cache entries' clock (milliseconds, monotonic; NULL
 * restores the real one; no-op without a cache).  Set it before the checker
 * is shared between threads.  Evaluation deadlines keep real time. */
void mw_spf_cache_set_clock(mw_spf *spf, uint64_t (*fn)(void *arg), void *arg);

/*
 * Render the value of a Received-SPF header (RFC 7208 §9.1) for o into out
 * (appended), e.g.
 *   pass (mx.example.org: domain of a@b.example designates 192.0.2.1 as
 *   permitted sender) receiver=mx.example.org; client-ip=192.0.2.1;
 *   helo=mail.b.example; envelope-from="a@b.example"; identity=mailfrom;
 * Values from outside are quoted/escaped so the header is always valid.
 */
void mw_spf_received_spf(const mw_spf_outcome *o, const char *receiver, mw_buf *out);

#endif
