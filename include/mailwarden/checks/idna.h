/*
 * idna.h - internationalised domain names for the checks: a domain in
 * U-label form (raw UTF-8, as RFC 6532 and SMTPUTF8 mail carry it) becomes
 * its A-label form ("xn--...") before any DNS lookup or comparison, so an
 * IDN domain's SPF, DKIM and DMARC policy apply to it like to any other.
 * IDNA2008 with UTS #46 non-transitional mapping (libidn2), as browsers and
 * the large mailbox providers map them.
 */
#ifndef MW_CHECKS_IDNA_H
#define MW_CHECKS_IDNA_H

#include <stdbool.h>
#include <stddef.h>

/* Does s hold a byte >= 0x80 (a U-label somewhere)? */
bool mw_idna_has_8bit(const char *s);

/*
 * The A-label form of domain (NUL-terminated UTF-8; ASCII passes through
 * lower-cased) into out.  false, with a static reason in *why, when the
 * name is not valid UTF-8 or not a valid IDNA2008 name, or the result does
 * not fit in outlen (a domain is at most 253 bytes).
 */
bool mw_idna_to_ascii(const char *domain, char *out, size_t outlen, const char **why);

#endif
