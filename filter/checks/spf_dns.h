/*
 * spf_dns.h - private to filter/checks: the libspf2 DNS layer on mw_dns.
 *
 * One mw_spf_eval is the state of ONE SPF evaluation: the deadline, the
 * void-lookup counter (RFC 7208 4.6.4), the first DNS error, and the exp=
 * domains libspf2 asked for.  mw_spf_check() creates an eval, a DNS layer
 * pointing at it and a fresh SPF_server_t on that layer, evaluates, and
 * frees all three; nothing here is ever shared between threads, so no locks.
 *
 * The layer answers:
 *   - A, AAAA, MX, PTR, TXT through mw_dns_query() with the time left until
 *     the deadline; NXDOMAIN -> HOST_NOT_FOUND, NODATA -> NO_DATA,
 *     TEMPFAIL -> TRY_AGAIN, PERMFAIL -> NO_RECOVERY;
 *   - type SPF (99) locally with NO_DATA (RFC 7208 dropped type 99; NO_DATA,
 *     not HOST_NOT_FOUND, so a caller that falls back to TXT still does);
 *   - get_spf: the record lookup itself (TXT only, RFC 7208 4.5 selection,
 *     multiple records -> permerror, none -> none, compile error -> permerror);
 *   - get_exp: no DNS at all; the exp= domain is remembered in the eval and a
 *     marker is handed back, so the caller can build the explanation itself
 *     (libspf2 1.2.10 garbles it) and only when the result is fail.
 *
 * Aborting: once the deadline passes or a third void lookup happens, every
 * further lookup returns TRY_AGAIN without network traffic, which makes
 * libspf2 stop with a temporary error; the caller then reports the real
 * cause from eval->abort (temperror / permerror).
 *
 * TXT data: rr[i]->txt holds the joined character-strings *including* any
 * embedded NUL bytes, NUL-terminated, and rr_buf_len[i] is exactly the data
 * length + 1, so a strict validator can spot a record that libspf2 (which
 * uses strlen) would see truncated: strlen(txt) + 1 != rr_buf_len[i].  The
 * eval also flags it (txt_nul) for the record that get_spf selected.
 */
#ifndef MW_CHECKS_SPF_DNS_H
#define MW_CHECKS_SPF_DNS_H

#include <stdbool.h>
#include <stdint.h>

#include <arpa/inet.h>    /* libspf2 headers need in_addr/in6_addr first */
#include <netinet/in.h>
#include <spf2/spf.h>

#include "dns.h"

/* RFC 7208 4.6.4 */
#define MW_SPF_VOID_LIMIT 2

typedef enum mw_spf_abort {
    MW_SPF_ABORT_NONE = 0,
    MW_SPF_ABORT_DEADLINE,   /* evaluation deadline passed -> temperror */
    MW_SPF_ABORT_VOID        /* more than MW_SPF_VOID_LIMIT void lookups -> permerror */
} mw_spf_abort;

typedef struct mw_spf_eval {
    mw_dns      *dns;          /* borrowed */
    uint64_t     deadline_ms;  /* CLOCK_MONOTONIC, ms */
    unsigned     queries;      /* DNS queries sent */
    unsigned     voids;        /* void lookups counted */
    mw_spf_abort abort;
    bool         dns_error;    /* a lookup failed temporarily */
    char        *dns_why;      /* first temporary failure, for the trace (owned) */
    bool         txt_nul;      /* the selected SPF record had an embedded NUL */
    unsigned     records;      /* SPF records fetched (top level + include/redirect) */
    char       **exp_domains;  /* exp= targets libspf2 asked for (owned) */
    size_t       nexp;
    char       **aux_names;    /* names from the last MX/PTR answer (owned) */
    size_t       naux;
} mw_spf_eval;

/* Prefix of the marker get_exp returns; followed by the decimal index into exp_domains. */
#define MW_SPF_EXP_MARKER "mailwarden-exp#"

/* Monotonic clock in milliseconds. */
uint64_t mw_spf_now_ms(void);

void mw_spf_eval_init(mw_spf_eval *ev, mw_dns *dns, unsigned timeout_ms);
void mw_spf_eval_fini(mw_spf_eval *ev);

/* Time left before the deadline in ms (0 when passed). */
unsigned mw_spf_eval_remaining(const mw_spf_eval *ev);

/*
 * A new libspf2 DNS layer bound to ev (which must outlive it).  Free it
 * with SPF_dns_free(), or set the server's destroy_resolver so that
 * SPF_server_free() does (libspf2 1.2.10 does not by default).
 */
SPF_dns_server_t *mw_spf_dns_layer_new(mw_spf_eval *ev);

#endif
