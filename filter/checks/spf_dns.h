/*
 * spf_dns.h - private to filter/checks: the libspf2 DNS layer on mw_dns,
 * and the record preprocessing that keeps libspf2's mistakes out.
 *
 * One mw_spf_eval is the state of ONE SPF evaluation: the deadline, the
 * void-lookup and DNS-term counters (RFC 7208 4.6.4), the first DNS error,
 * the macro inputs, the alias table (below) and the exp= libspf2 asked for.
 * mw_spf_check() creates an eval, a DNS layer pointing at it and a fresh
 * SPF_server_t on that layer, evaluates, and frees all three; nothing here
 * is ever shared between threads, so no locks.
 *
 * Record lookup (get_spf hook): TXT only, RFC 7208 4.5 selection, then our
 * strict parser (spf_record.c).  A record that fails it is permerror.  A
 * record that passes is REWRITTEN before libspf2 compiles it:
 *   - every domain-spec with a macro or any character outside LDH/'_' is
 *     replaced by an alias name "mw-alias-N.invalid"; the layer maps the
 *     alias back, expanding the macros with OUR expander (lazily, when
 *     libspf2 first looks the name up, so %{p} costs DNS only when used);
 *   - "ptr" terms, and "a"/"mx" with a /0 prefix, become
 *     "exists:mw-alias-N.invalid"; when libspf2 looks that name up the
 *     layer evaluates the mechanism itself and answers "match" (an A
 *     record) or "no match" (NODATA), or TRY_AGAIN on an error;
 *   - "ip4:x/0" and "ip6:x/0" become the two /1 halves (libspf2 refuses /0);
 *   - unknown modifiers are dropped (libspf2 refuses some legal ones), and
 *     redirect= is dropped when the record has "all" (RFC 7208 6.1);
 *   - exp= points at an alias; get_exp records which one libspf2 chose, the
 *     caller builds the explanation (libspf2 1.2.10 garbles it);
 *   - a long record is split: libspf2 1.2.10 silently drops the mechanisms
 *     after about 511 bytes of compiled data (some 22 ip6 or 64 ip4 terms),
 *     so the mechanisms go in chunks of at most MW_SPF_CHUNK_BUDGET bytes,
 *     each chunk ending in "redirect=" to an alias whose record is the next
 *     chunk (the original exp= in every chunk, the original redirect= in the
 *     last).  Continuations do not count as DNS terms.
 *
 * The layer answers:
 *   - A, AAAA, MX, TXT through mw_dns_query() with the time left until the
 *     deadline (capped per query); NXDOMAIN -> HOST_NOT_FOUND, NODATA ->
 *     NO_DATA, TEMPFAIL -> TRY_AGAIN, PERMFAIL -> NO_RECOVERY;
 *   - type SPF (99) locally with NO_DATA (RFC 7208 dropped type 99).
 *
 * Counting: every lookup libspf2 makes for a term (a, mx, exists, include,
 * redirect) and every proxied term counts against the limit of 10 DNS terms
 * for the whole evaluation, includes and redirects included; NXDOMAIN and
 * NODATA answers to those lookups count as void (limit 2).  The address
 * lookups for the names an MX answer returned are part of that mx term and
 * count neither way; nor do the lookups for the p macro or the exp= text.
 *
 * Aborting: once the deadline passes, a limit is exceeded or a proxied
 * mechanism needs a permerror, every further lookup returns TRY_AGAIN
 * without network traffic, which makes libspf2 stop with a temporary error;
 * the caller then reports the real cause from eval->abort.
 */
#ifndef MW_CHECKS_SPF_DNS_H
#define MW_CHECKS_SPF_DNS_H

#include <stdbool.h>
#include <stdint.h>

#include <arpa/inet.h>    /* libspf2 headers need in_addr/in6_addr first */
#include <netinet/in.h>
#include <spf2/spf.h>

#include "cidr.h"
#include "dns.h"
#include "spf_record.h"

/* RFC 7208 4.6.4 */
#define MW_SPF_VOID_LIMIT  2
#define MW_SPF_TERM_LIMIT  10
#define MW_SPF_MX_LIMIT    10
#define MW_SPF_PTR_LIMIT   10

/* Estimated compiled bytes per chunk of a rewritten record (libspf2: 511). */
#define MW_SPF_CHUNK_BUDGET 384

typedef enum mw_spf_abort {
    MW_SPF_ABORT_NONE = 0,
    MW_SPF_ABORT_DEADLINE,   /* evaluation deadline passed -> temperror */
    MW_SPF_ABORT_VOID,       /* more than MW_SPF_VOID_LIMIT void lookups -> permerror */
    MW_SPF_ABORT_TERMS,      /* more than MW_SPF_TERM_LIMIT DNS terms -> permerror */
    MW_SPF_ABORT_PERM        /* another permerror found by our code (abort_why) */
} mw_spf_abort;

typedef enum mw_spf_alias_kind {
    MW_SPF_ALIAS_NAME = 0,   /* a target name (domain-spec) */
    MW_SPF_ALIAS_EXP,        /* the exp= domain-spec */
    MW_SPF_ALIAS_A,          /* proxied "a" mechanism */
    MW_SPF_ALIAS_MX,         /* proxied "mx" mechanism */
    MW_SPF_ALIAS_PTR,        /* proxied "ptr" mechanism */
    MW_SPF_ALIAS_CONT        /* continuation of a long record (text) */
} mw_spf_alias_kind;

typedef struct mw_spf_alias {
    mw_spf_alias_kind kind;
    char *spec;        /* domain-spec as written, NULL: the current domain */
    char *context;     /* current domain of the record it came from (%{d}) */
    int   cidr4, cidr6;
    char *expanded;    /* spec expanded (lazily) */
    char *text;        /* MW_SPF_ALIAS_CONT: the record text libspf2 compiles */
} mw_spf_alias;

typedef struct mw_spf_eval {
    mw_dns      *dns;          /* borrowed */
    uint64_t     deadline_ms;  /* CLOCK_MONOTONIC, ms */
    unsigned     query_cap_ms; /* per-query timeout cap */
    unsigned     queries;      /* DNS queries sent */
    unsigned     voids;        /* void lookups counted */
    unsigned     terms;        /* DNS-querying terms evaluated */
    unsigned     fetches;      /* get_spf calls (the first is the top-level record) */
    mw_spf_abort abort;
    char        *abort_why;    /* for MW_SPF_ABORT_PERM (owned) */
    bool         dns_error;    /* a lookup failed temporarily */
    char        *dns_why;      /* first temporary failure, for the trace (owned) */
    unsigned     records;      /* SPF records compiled */
    uint32_t     min_ttl;      /* smallest TTL seen (for the result cache) */
    bool         ttl_seen;

    /* macro inputs (the strings are borrowed from the caller) */
    mw_spf_macro_ctx mctx;

    mw_spf_alias *alias;       /* owned */
    size_t        nalias;
    long          exp_alias;   /* alias index of the exp= libspf2 chose last, or -1 */

    char        **aux_names;   /* names from the last MX answer not yet looked up (owned) */
    size_t        naux;

    /* validated names of the client (p macro, ptr), computed once */
    bool          pnames_done;
    char        **pnames;
    size_t        npnames;
    char         *p_value;     /* last %{p} value (owned) */
} mw_spf_eval;

/* Prefix and suffix of alias names. */
#define MW_SPF_ALIAS_PREFIX "mw-alias-"
#define MW_SPF_ALIAS_SUFFIX ".invalid"

/* Monotonic clock in milliseconds. */
uint64_t mw_spf_now_ms(void);

/*
 * Initialise ev.  ip must be the client with IPv4-mapped addresses already
 * unmapped; local/sender_dom/helo/receiver are borrowed for ev's lifetime.
 */
void mw_spf_eval_init(mw_spf_eval *ev, mw_dns *dns, unsigned timeout_ms, unsigned query_cap_ms,
                      const mw_addr *ip, const char *local, const char *sender_dom,
                      const char *helo, const char *receiver);
void mw_spf_eval_fini(mw_spf_eval *ev);

/* Time left before the deadline in ms (0 when passed). */
unsigned mw_spf_eval_remaining(const mw_spf_eval *ev);

/*
 * The explanation for a fail (RFC 7208 6.2), or NULL (no exp=, or the exp=
 * could not be used: DNS error, not exactly one TXT record, bad syntax,
 * not ASCII).  Caller frees.
 */
char *mw_spf_eval_explanation(mw_spf_eval *ev);

/*
 * A new libspf2 DNS layer bound to ev (which must outlive it).  Free it
 * with SPF_dns_free(), or set the server's destroy_resolver so that
 * SPF_server_free() does (libspf2 1.2.10 does not by default).
 */
SPF_dns_server_t *mw_spf_dns_layer_new(mw_spf_eval *ev);

#endif
