/*
 * authres.h - Authentication-Results (RFC 8601): build ours, and recognise
 * existing ones by authserv-id so forged copies can be removed.
 */
#ifndef MW_CHECKS_AUTHRES_H
#define MW_CHECKS_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

typedef struct mw_authres mw_authres;

/* Start a header for authserv_id (copied).  Free with mw_authres_free(). */
mw_authres *mw_authres_new(const char *authserv_id);
void mw_authres_free(mw_authres **ar);

/*
 * Add one resinfo: method=result (comment) prop=value ...
 *   comment: free text, may be NULL; it is sanitised into a valid comment.
 *   props:   NULL-terminated list of name, value pairs, e.g.
 *            {"smtp.mailfrom", "a@b.example", NULL}; values that are not a
 *            valid RFC 8601 pvalue are quoted.  Pairs with a NULL/"" value
 *            are skipped.
 */
void mw_authres_add(mw_authres *ar, const char *method, const char *result,
                    const char *comment, const char *const *props);
/* Number of resinfo entries added. */
size_t mw_authres_count(const mw_authres *ar);
/*
 * Render the header value (without "Authentication-Results:") into out
 * (appended), folded with "\n\t" before each resinfo (the milter form of a
 * folded header; the MTA writes its own line ends).  With no entries the
 * value is "authserv-id; none" (RFC 8601 §2.2).
 */
void mw_authres_render(const mw_authres *ar, mw_buf *out);

/*
 * Extract the authserv-id of an existing A-R header value (CFWS skipped,
 * quoted-string accepted, optional version number ignored) into out.
 * Returns false if none can be parsed.
 */
bool mw_authres_parse_id(const char *value, size_t len, char *out, size_t outlen);
/* True when value's authserv-id equals id (ASCII case-insensitive). */
bool mw_authres_is_ours(const char *value, size_t len, const char *id);

#endif
