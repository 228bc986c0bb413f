/*
 * dkim_tags.h - DKIM building blocks on OpenSSL, for the checks that verify
 * DKIM-style signatures themselves (ARC, filter/checks/arc.c): the strict
 * tag-list parser (RFC 6376 §3.2), base64 with folding whitespace, the key
 * record (RFC 6376 §3.6.1, RFC 8463) fetched through mw_dns, and the
 * signature check (rsa-sha256, ed25519-sha256).  Private to filter/checks.
 *
 * (The DKIM-Signature verifier itself is libopendkim, dkim_verify.c; its
 * ad-hoc duplicate_tag()/raw_tag() could move onto mw_dkim_tags_parse().)
 */
#ifndef MW_CHECKS_DKIM_TAGS_H
#define MW_CHECKS_DKIM_TAGS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "buf.h"
#include "dns.h"

#define MW_DKIM_TAGS_MAX 32          /* more tags in one list: refused as malformed */

/* One tag; pointers into the parsed text (not NUL-terminated). */
typedef struct mw_dkim_tag {
    const char *name;
    size_t      nlen;
    const char *val;                 /* value without the surrounding FWS */
    size_t      vlen;
    size_t      after_eq;            /* offset just after '=' in the parsed text */
    size_t      spec_end;            /* offset of the ';' ending the tag-spec (or the length) */
} mw_dkim_tag;

typedef struct mw_dkim_tags {
    mw_dkim_tag t[MW_DKIM_TAGS_MAX];
    size_t      n;
} mw_dkim_tags;

/*
 * Parse a tag-list (RFC 6376 §3.2): tag-spec *(";" tag-spec) [";"], tag
 * names ALPHA *(ALPHA / DIGIT / "_") (case-sensitive), values of VALCHARs
 * with FWS between runs.  Refused (false, reason in why): a syntax error,
 * an empty tag-spec (";;"), a duplicate tag, more than MW_DKIM_TAGS_MAX.
 */
bool mw_dkim_tags_parse(const char *s, size_t len, mw_dkim_tags *out, char *why, size_t whylen);
/* The tag called name, or NULL. */
const mw_dkim_tag *mw_dkim_tags_get(const mw_dkim_tags *tl, const char *name);
/* The value of tag name as a new string with every FWS byte removed
 * (caller frees), or NULL when the tag is absent. */
char *mw_dkim_tag_dup(const mw_dkim_tags *tl, const char *name);

/*
 * Decode base64 with FWS anywhere (DKIM b=, bh=, p=) into out (reset
 * first).  false on any other byte, bad padding or a bad length.
 */
bool mw_dkim_b64_decode(const char *s, size_t len, mw_buf *out);

/* A public key from a key record. */
typedef struct mw_dkim_pubkey {
    EVP_PKEY *pkey;                  /* owned: mw_dkim_pubkey_clear() */
    bool      ed25519;
    unsigned  bits;
    bool      testing;               /* t=y */
} mw_dkim_pubkey;

typedef enum mw_dkim_keystatus {
    MW_DKIM_KEY_OK = 0,
    MW_DKIM_KEY_TEMP,                /* lookup failed temporarily: try again later */
    MW_DKIM_KEY_PERM                 /* no record, several, malformed, revoked, unusable */
} mw_dkim_keystatus;

/*
 * Fetch selector._domainkey.domain TXT through dns (timeout_ms per query,
 * 0: the resolver default) and parse it: v=DKIM1 (when present, first), k=
 * rsa (default) or ed25519 (must match want_ed25519), h= must allow sha256,
 * s= must allow email, p= not empty (revoked) and a key of its type.  RSA
 * keys are parsed with d2i_PUBKEY_bio, so dkim_keycache.c answers repeats.
 * RSA keys under min_bits are refused (PERM).  Reason in why.
 */
mw_dkim_keystatus mw_dkim_pubkey_fetch(mw_dns *dns, const char *selector, const char *domain,
                                       bool want_ed25519, unsigned min_bits, unsigned timeout_ms,
                                       mw_dkim_pubkey *out, char *why, size_t whylen);
/* Parse a key record's text (the TXT strings joined). */
mw_dkim_keystatus mw_dkim_pubkey_parse(const char *rec, size_t len, bool want_ed25519,
                                       unsigned min_bits, mw_dkim_pubkey *out, char *why,
                                       size_t whylen);
void mw_dkim_pubkey_clear(mw_dkim_pubkey *k);

/* Check sig over a SHA-256 digest: rsa-sha256 (PKCS#1 v1.5) or
 * ed25519-sha256 (PureEdDSA over the 32-byte digest, RFC 8463 §3). */
bool mw_dkim_sig_check(const mw_dkim_pubkey *k, const unsigned char digest[32],
                       const unsigned char *sig, size_t siglen);

#endif
