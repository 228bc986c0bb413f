/*
 * idna.c - U-label to A-label conversion (libidn2) for the checks; see
 * idna.h.  Only names with 8-bit bytes reach libidn2: ASCII names are
 * lower-cased here, so the common case costs a scan.
 */
#include "idna.h"

#include <ctype.h>
#include <idn2.h>
#include <stdlib.h>
#include <string.h>

bool mw_idna_has_8bit(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (*p >= 0x80)
            return true;
    return false;
}

bool mw_idna_to_ascii(const char *domain, char *out, size_t outlen, const char **why)
{
    static const char *bad = "invalid internationalised domain name";
    if (domain == NULL || outlen == 0) {
        *why = bad;
        return false;
    }
    if (!mw_idna_has_8bit(domain)) {
        size_t n = strlen(domain);
        if (n >= outlen) {
            *why = "domain name too long";
            return false;
        }
        for (size_t i = 0; i <= n; i++)
            out[i] = (char)tolower((unsigned char)domain[i]);
        return true;
    }
    char *a = NULL;
    int rc = idn2_to_ascii_8z(domain, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK || a == NULL) {
        *why = rc == IDN2_ENCODING_ERROR ? "internationalised domain is not valid UTF-8" : bad;
        free(a);
        return false;
    }
    size_t n = strlen(a);
    if (n >= outlen) {
        free(a);
        *why = "domain name too long";
        return false;
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)a[i]);
    free(a);
    return true;
}
