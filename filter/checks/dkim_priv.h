/*
 * dkim_priv.h - internals shared by dkim_keys.c (key and signing tables),
 * dkim_sign.c (the signer, on OpenSSL), dkim_canon.c (canonicalization)
 * and dkim_verify.c (verifier on libopendkim, per-message context).
 * Not part of the checks interface: see dkim.h.
 */
#ifndef MW_CHECKS_DKIM_PRIV_H
#define MW_CHECKS_DKIM_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <opendkim/dkim.h>

#include "config.h"
#include "dkim.h"
#include "dkim_canon.h"

/* One signing key, loaded once at create. */
struct mw_dkim_key {
    char         *name, *domain, *selector, *file;
    const char   *algorithm;   /* "rsa-sha256" / "ed25519-sha256" */
    bool          any_domain;  /* KeyTable domain "%": d= is the sender's domain */
    bool          templ;       /* key file path with '%': a template, never signs;
                                  loaded per domain as "NAME/DOMAIN" keys */
    bool          ed25519;
    unsigned      bits;
    EVP_PKEY     *pkey;        /* parsed at create, shared read-only by all threads;
                                  EVP_PKEY_free clears the private parts */
};

/* A rule's key "%" (OpenDKIM SigningTable): the key named after the sender's domain. */
#define MW_DKIM_KEY_BY_DOMAIN ((size_t)-1)

/* One signing-table rule: first match wins, every listed key signs. */
struct mw_dkim_rule {
    char   *pattern;           /* lower case */
    bool    literal;           /* plain OpenDKIM table: exact address or domain */
    size_t *keys;
    size_t  nkeys;
};

/* One header field name our signatures cover (case-insensitively unique). */
struct mw_dkim_hdrname {
    char  *name;               /* as configured; written into h= */
    size_t len;
    bool   oversign;           /* listed once more than it occurs */
};

struct mw_dkim_signer {
    struct mw_dkim_key     *key;
    size_t                  nkeys;
    struct mw_dkim_rule    *rule;
    size_t                  nrules;
    mw_dkim_canon           hcanon, bcanon;
    EVP_MD                 *sha256;  /* fetched once; NULL when there are no keys */
    struct mw_dkim_hdrname *hdr;
    size_t                  nhdr;
    size_t                  from;    /* index of From in hdr */
};

/* dkim_keys.c: fill s->key and s->rule from cfg (inline entries, then the
 * KeyTable/SigningTable files); problems appended to errs. */
bool mw_dkim_tables_load(struct mw_dkim_signer *s, const mw_config *cfg, mw_config_errors *errs);
/* Free every key (private parts cleared) and rule of s. */
void mw_dkim_tables_free(struct mw_dkim_signer *s);

/* dkim_sign.c: the signature (raw bytes, *siglen in: room, out: length) of a
 * SHA-256 digest with key k: rsa-sha256 (PKCS#1 v1.5, md the signer's
 * SHA-256) or ed25519-sha256 (RFC 8463).  false on error.  Also used by the
 * ARC sealer (arc_sign.c). */
bool mw_dkim_key_sign(const struct mw_dkim_key *k, const EVP_MD *md,
                      const unsigned char digest[MW_DKIM_SHA256_LEN], unsigned char *sig,
                      size_t *siglen);

/*
 * dkim_sign.c: signing one message with keys of s, fed by dkim_verify.c's
 * message context.  Headers are held (only those the signatures cover,
 * already canonicalized) until eoh, where they are hashed once for all
 * keys; the body is canonicalized and hashed once for all keys.  id is
 * borrowed and must outlive the context.
 */
typedef struct mw_dkim_signmsg mw_dkim_signmsg;

mw_dkim_signmsg *mw_dkim_signmsg_begin(const mw_dkim_signer *s, const size_t *keys, size_t nkeys,
                                       const char *id);
/* value byte-exact after the colon (leading blank kept, folding kept). */
/* The sender's domain, d= of keys whose KeyTable domain is "%" (copied). */
void mw_dkim_signmsg_domain(mw_dkim_signmsg *sm, const char *domain);
void mw_dkim_signmsg_header(mw_dkim_signmsg *sm, const char *name, const char *value, size_t vlen);
void mw_dkim_signmsg_eoh(mw_dkim_signmsg *sm);
void mw_dkim_signmsg_body(mw_dkim_signmsg *sm, const unsigned char *p, size_t len);
/* Append one DKIM-Signature value per key that signed to *sigs / *nsigs. */
void mw_dkim_signmsg_end(mw_dkim_signmsg *sm, char ***sigs, size_t *nsigs);
void mw_dkim_signmsg_free(mw_dkim_signmsg **sm);

#endif
