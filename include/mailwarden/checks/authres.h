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
/* Strict: value's authserv-id, parsed as RFC 8601 says, equals id (ASCII
 * case-insensitive).  For trusting an upstream's results
 * (dmarc.trusted_authserv_ids): nothing looser may be trusted. */
bool mw_authres_id_is(const char *value, size_t len, const char *id);
/* Lenient, for removing forgeries: true when value claims id as RFC 8601
 * parses it, or once control bytes, blanks (ASCII or 8-bit), quotes and
 * comments are dropped from the text before the first ';' (a reader that
 * strips them would see id), trailing dots ignored.  So a forged header
 * errs toward removal. */
bool mw_authres_is_ours(const char *value, size_t len, const char *id);

/*
 * Parse the resinfos of an A-R header value (after the authserv-id):
 * "method=result (comment) ptype.prop=value ...; ...".  Bounded: at most
 * MW_AR_MAX_RESINFO entries and MW_AR_MAX_PROPS properties each; comments
 * are skipped; quoted values unquoted; values length-capped.  Used to take
 * SPF/DKIM results from trusted upstream hosts (dmarc.trusted_authserv_ids).
 * Returns false when not even the authserv-id parses.  Free with
 * mw_authres_parsed_clear().
 */
#define MW_AR_MAX_RESINFO 32
#define MW_AR_MAX_PROPS 8

typedef struct mw_ar_resinfo {
    char *method;                      /* lower case: "spf", "dkim", ... */
    char *result;                      /* lower case */
    char *prop_name[MW_AR_MAX_PROPS];  /* lower case: "smtp.mailfrom", "header.d" */
    char *prop_value[MW_AR_MAX_PROPS];
    size_t nprops;
} mw_ar_resinfo;

typedef struct mw_authres_parsed {
    char          id[256];
    mw_ar_resinfo ri[MW_AR_MAX_RESINFO];
    size_t        nri;
} mw_authres_parsed;

bool mw_authres_parse(const char *value, size_t len, mw_authres_parsed *out);
void mw_authres_parsed_clear(mw_authres_parsed *p);
/* The value of property name in ri, or NULL. */
const char *mw_ar_prop(const mw_ar_resinfo *ri, const char *name);

#endif
