/*
 * fromhdr.h - parse the header From (RFC 5322 §3.6.2) the way DMARC needs
 * it: exactly one From header with exactly one address that has a domain.
 *
 * Threat notes: the From header is attacker-controlled and the root of
 * DMARC's decision; OpenDMARC's From parsing has had bypasses and crashes.
 * This parser is length-bounded (no NUL termination assumed), never
 * recurses, handles quoted-pairs, quoted-strings, nested comments, angle
 * brackets, groups, encoded words and folding, and refuses anything
 * ambiguous (an '@' in a display name outside quotes beside an angle
 * address, unbalanced brackets or quotes, NUL bytes, 8-bit bytes in the
 * domain) rather than guessing: the caller then applies the configured
 * action for an unparsable From.
 */
#ifndef MW_CHECKS_FROMHDR_H
#define MW_CHECKS_FROMHDR_H

#include <stdbool.h>
#include <stddef.h>

typedef enum mw_from_status {
    MW_FROM_OK = 0,        /* one address with a valid domain, or several all in one
                              domain (one Author Domain, RFC 9989); U-label domains
                              are given as A-labels */
    MW_FROM_EMPTY,         /* no address at all (empty value or empty group) */
    MW_FROM_MULTIPLE,      /* more than one address */
    MW_FROM_NODOMAIN,      /* one address without a domain part */
    MW_FROM_UNPARSABLE     /* syntax error, ambiguity, NUL, bad domain */
} mw_from_status;

const char *mw_from_status_name(mw_from_status s);

#define MW_FROM_MAX_ADDRS 16

typedef struct mw_from {
    mw_from_status status;
    size_t naddr;                       /* addresses found (up to MW_FROM_MAX_ADDRS kept) */
    char  *addr[MW_FROM_MAX_ADDRS];     /* "local@domain" as written (quotes removed) */
    char  *domain[MW_FROM_MAX_ADDRS];   /* lower-case, trailing dot removed; NULL if none */
    const char *why;                    /* static reason for a non-OK status */
} mw_from;

/*
 * For a From the parser gave up on (unparsable, no address, no domain):
 * every domain a reader could see after an '@' in the raw value, in A-label
 * form, one call of found each (duplicates possible).  Quotes, comments,
 * invisible code points (bidi and zero-width characters, blanks, the soft
 * hyphen...) and invalid UTF-8 are dropped, as a display would drop them.
 * *unreadable is set when something after an '@' looks like a domain but
 * cannot be made one: the caller should fail closed (treat the message as
 * from a domain that enforces DMARC).  Linear in len.
 */
void mw_from_recover_domains(const char *value, size_t len, void (*found)(void *, const char *), void *arg,
                             bool *unreadable);

/* Parse one From header value.  Always fills *out; free with mw_from_clear. */
mw_from_status mw_from_parse(const char *value, size_t len, mw_from *out);
void mw_from_clear(mw_from *f);

#endif
