/*
 * dkim_priv.h - internals shared by dkim_keys.c (key and signing tables),
 * dkim_sign.c (the signer) and dkim_verify.c (verifier, per-message
 * context).  Not part of the checks interface: see dkim.h.
 */
#ifndef MW_CHECKS_DKIM_PRIV_H
#define MW_CHECKS_DKIM_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <opendkim/dkim.h>

#include "config.h"
#include "dkim.h"

/* One signing key, loaded once at create. */
struct mw_dkim_key {
    char         *name, *domain, *selector, *file;
    const char   *algorithm;   /* "rsa-sha256" / "ed25519-sha256" */
    dkim_alg_t    signalg;
    unsigned      bits;
    unsigned char *pem;        /* the private key as read; wiped on destroy */
    size_t        pemlen;
};

/* One signing-table rule: first match wins, every listed key signs. */
struct mw_dkim_rule {
    char   *pattern;           /* lower case */
    bool    literal;           /* plain OpenDKIM table: exact address or domain */
    size_t *keys;
    size_t  nkeys;
};

struct mw_dkim_signer {
    DKIM_LIB            *lib;  /* NULL when there are no keys */
    struct mw_dkim_key  *key;
    size_t               nkeys;
    struct mw_dkim_rule *rule;
    size_t               nrules;
    dkim_canon_t         hcanon, bcanon;
    const char         **signhdrs;    /* NULL-terminated copies for libopendkim */
    const char         **oversign;
};

/* dkim_keys.c: fill s->key and s->rule from cfg (inline entries, then the
 * KeyTable/SigningTable files); problems appended to errs. */
bool mw_dkim_tables_load(struct mw_dkim_signer *s, const mw_config *cfg, mw_config_errors *errs);
/* Wipe and free every key and rule of s. */
void mw_dkim_tables_free(struct mw_dkim_signer *s);

/* dkim_sign.c: per-message signing handles. */
/* A signing handle for key k, or NULL (logged). */
DKIM *mw_dkim_sign_start(const mw_dkim_signer *s, size_t k, const char *id);
/* After dkim_eom: the DKIM-Signature value folded with "\n\t", or NULL (logged). */
char *mw_dkim_sign_header(const mw_dkim_signer *s, size_t k, DKIM *d, const char *id);

#endif
