/*
 * spf_record.h - private to filter/checks: a strict RFC 7208 record parser
 * and our own macro expander (RFC 7208 section 7).
 *
 * Why: libspf2 1.2.10 accepts many records RFC 7208 calls syntax errors
 * (bad domain-spec ends, numeric top labels, invalid macros, duplicate
 * exp=/redirect=, NULs, non-ASCII), refuses some legal ones (unknown
 * modifiers with '.', '/0' prefixes) and garbles macro expansion.  Every
 * record is therefore parsed here first; only a record that passes is
 * rewritten (spf_dns.c) into a macro-free form libspf2 evaluates.
 *
 * Everything here is pure: no DNS, no globals, no locks.  The p macro (a
 * validated client name, which needs DNS) is obtained through a callback.
 *
 * Threat notes: the record and all macro inputs are attacker-controlled.
 * Parsing works on (pointer, length) and never reads past len; expansion
 * output is bounded (MW_SPF_MAX_EXPANSION) so a record cannot make us build
 * huge strings.
 */
#ifndef MW_CHECKS_SPF_RECORD_H
#define MW_CHECKS_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cidr.h"

/* Bound on the size of one expansion (domain or explanation text). */
#define MW_SPF_MAX_EXPANSION 4096

typedef enum mw_spf_term_kind {
    MW_SPF_T_ALL = 0,
    MW_SPF_T_INCLUDE,
    MW_SPF_T_A,
    MW_SPF_T_MX,
    MW_SPF_T_PTR,
    MW_SPF_T_IP4,
    MW_SPF_T_IP6,
    MW_SPF_T_EXISTS,
    MW_SPF_T_REDIRECT,   /* modifiers from here on */
    MW_SPF_T_EXP,
    MW_SPF_T_UNKNOWN_MOD
} mw_spf_term_kind;

typedef struct mw_spf_term {
    mw_spf_term_kind kind;
    char     qual;       /* '+', '-', '~', '?' (mechanisms only) */
    char    *spec;       /* domain-spec as written (NULL when none), or the
                            unknown modifier's name */
    int      cidr4;      /* -1: not given */
    int      cidr6;      /* -1: not given */
    uint8_t  net[16];    /* ip4 (first 4 bytes) / ip6 network */
} mw_spf_term;

typedef struct mw_spf_record {
    mw_spf_term *t;
    size_t       n;
    int          redirect;   /* index into t or -1 */
    int          exp;        /* index into t or -1 */
    bool         has_all;    /* an "all" mechanism is present (redirect is then ignored) */
} mw_spf_record;

/* RFC 7208 4.5: the record starts with "v=spf1" (any case) then a space or its end. */
bool mw_spf_is_record(const char *s, size_t len);

/*
 * Parse and validate one record (the whole TXT text, "v=spf1 ..."), len
 * bytes that may contain NULs.  On a syntax error returns false with a
 * printable reason in why; rec is then empty.  Free with mw_spf_record_free.
 */
bool mw_spf_record_parse(const char *txt, size_t len, mw_spf_record *rec, char *why,
                         size_t whylen);
void mw_spf_record_free(mw_spf_record *rec);

/* domain-spec syntax (RFC 7208 7.1 plus 7.2: c, r, t only in explanations). */
bool mw_spf_domain_spec_ok(const char *s, size_t len);
/* explain-string syntax (7.1): printable ASCII and SP, valid macros. */
bool mw_spf_explain_ok(const char *s, size_t len);

/* Inputs of macro expansion. */
typedef struct mw_spf_macro_ctx {
    const char *local;       /* l: local-part of the sender ("postmaster" if none) */
    const char *sender_dom;  /* o */
    const char *domain;      /* d: current domain */
    const char *helo;        /* h */
    const char *receiver;    /* r */
    mw_addr     ip;          /* i, c, v: the client (IPv4-mapped already unmapped) */
    /* p: a validated name of the client for the target domain (or "unknown");
     * the returned string stays valid until the evaluation ends. */
    const char *(*get_p)(void *arg, const char *domain);
    void       *arg;
    bool        used_local;  /* out: an expansion used s or l */
} mw_spf_macro_ctx;

/*
 * Expand a domain-spec (already validated) and apply the 253-byte
 * left-truncation of RFC 7208 7.3.  Returns a new string (caller frees), the
 * trailing dot removed.
 */
char *mw_spf_expand_domain(mw_spf_macro_ctx *ctx, const char *spec);
/* Expand an explanation text; NULL if it is not a valid explain-string. */
char *mw_spf_expand_explain(mw_spf_macro_ctx *ctx, const char *text, size_t len);

#endif
