/*
 * strutil.h - small string helpers for untrusted, length-carrying input.
 */
#ifndef MW_UTIL_STRUTIL_H
#define MW_UTIL_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/*
 * Append s[0..len) to out with every byte outside printable ASCII (and the
 * backslash and double quote) written as \xNN, so untrusted strings can be
 * logged or put into a header comment safely.  At most max_out input bytes
 * are rendered ("..." appended when cut); 0 means no limit.
 */
void mw_str_printable(mw_buf *out, const char *s, size_t len, size_t max_out);
/* ASCII case-insensitive equality of two length-carrying strings. */
bool mw_str_ieq(const char *a, size_t alen, const char *b, size_t blen);
/* ASCII lower-case in place. */
void mw_str_lower(char *s);
/* Return the domain part after the last '@' of an address, or the whole
 * string when there is no '@' (e.g. a bare HELO name).  Points into addr. */
const char *mw_addr_domain(const char *addr);
/* Strip one level of <...> and surrounding blanks from an SMTP path into a
 * new string (caller frees).  "<>" gives "". */
char *mw_addr_strip(const char *path);
/* Shell-style glob match, ASCII case-insensitive ('*' and '?'). */
bool mw_glob_match(const char *pattern, const char *s);
/* Levenshtein distance, ASCII case-insensitive; 99 for strings of 64 bytes
 * or more (for "did you mean" suggestions on short names). */
size_t mw_str_edit_distance(const char *a, const char *b);
/* True when s is a syntactically valid dotted domain name (LDH labels,
 * 1..63 per label, <=253 overall; optional trailing dot). */
bool mw_domain_valid(const char *s);

#endif
