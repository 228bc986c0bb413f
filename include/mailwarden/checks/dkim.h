/*
 * dkim.h - DKIM (RFC 6376, RFC 8463 Ed25519): verify every signature of an
 * inbound message and sign outbound mail, on libopendkim, with all key
 * lookups through our resolver (libopendkim's dkim_dns_set_query_* hooks).
 *
 * Both directions stream: headers and body chunks are fed as they arrive;
 * nothing here keeps a copy of the whole message.
 *
 * Thread safety: a verifier or signer (long-lived, built from the config at
 * start/reload) is shared by all threads; a per-message context
 * (mw_dkim_msg) belongs to one thread.
 */
#ifndef MW_CHECKS_DKIM_H
#define MW_CHECKS_DKIM_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"
#include "dns.h"

typedef enum mw_dkim_result {
    MW_DKIM_NONE = 0,     /* no signature */
    MW_DKIM_PASS,
    MW_DKIM_FAIL,         /* signature or body hash does not verify */
    MW_DKIM_NEUTRAL,      /* e.g. l= covering part of the body, unsupported tags */
    MW_DKIM_POLICY,       /* valid but refused by local policy (key too small, expired x=) */
    MW_DKIM_TEMPERROR,    /* key lookup failed temporarily */
    MW_DKIM_PERMERROR     /* malformed signature or key record, revoked key, no key */
} mw_dkim_result;

const char *mw_dkim_result_name(mw_dkim_result r);

typedef enum mw_dkim_dnssec {
    MW_DKIM_DNSSEC_UNKNOWN = 0, MW_DKIM_DNSSEC_UNPROTECTED, MW_DKIM_DNSSEC_SECURE, MW_DKIM_DNSSEC_BOGUS
} mw_dkim_dnssec;

/* One verified (or failed) signature; strings owned by the result array. */
typedef struct mw_dkim_sig {
    mw_dkim_result result;
    char          *domain;     /* d= */
    char          *selector;   /* s= */
    char          *identity;   /* i= (or "@" d= when absent) */
    char          *algorithm;  /* "rsa-sha256", "ed25519-sha256", ... */
    char          *b_prefix;   /* header.b: shortest unique prefix, >= 8 chars */
    unsigned       bits;       /* key size, 0 if unknown */
    mw_dkim_dnssec dnssec;
    char          *reason;     /* human: "body hash mismatch", "key revoked", ... */
} mw_dkim_sig;

typedef struct mw_dkim_results {
    mw_dkim_sig *sig;
    size_t       nsig;
    size_t       nskipped;     /* signatures beyond max_signatures, not evaluated */
} mw_dkim_results;

void mw_dkim_results_clear(mw_dkim_results *r);

/* ---- key table and signing table ---- */

typedef struct mw_dkim_key_info {
    const char *name;       /* key table name */
    const char *domain;
    const char *selector;
    const char *algorithm;  /* "rsa-sha256" or "ed25519-sha256", from the key */
    unsigned    bits;
    const char *file;       /* the private key file (dns-check: its mode and owner) */
    bool        per_domain; /* OpenDKIM '%': domain "%" (d= the sender's domain) or a
                               key-file template (loaded per domain, never signs) */
} mw_dkim_key_info;

typedef struct mw_dkim_verifier mw_dkim_verifier;
typedef struct mw_dkim_signer mw_dkim_signer;

typedef struct mw_dkim_verify_options {
    unsigned min_key_bits;     /* default 1024: smaller RSA keys -> policy */
    unsigned max_signatures;   /* default 10: more are counted in nskipped */
    unsigned timeout_ms;       /* per key lookup (0: the resolver default) */
    long     fixed_time;       /* tests: "now" for x= checks (0: real time) */
    unsigned deadline_ms;      /* all key lookups of one message together (0: 15000);
                                  lookups past it are temperror without a query */
    bool     dnssec;           /* the resolver validates (has a trust anchor): report
                                  unprotected answers as such, else DNSSEC unknown */
} mw_dkim_verify_options;

/* dns is borrowed. NULL + reason on error. */
mw_dkim_verifier *mw_dkim_verifier_create(mw_dns *dns, const mw_dkim_verify_options *o, char *err,
                                          size_t errlen);
void mw_dkim_verifier_destroy(mw_dkim_verifier **v);

/*
 * Build the signer from the config's key table and signing table (inline
 * or OpenDKIM-format KeyTable/SigningTable files).  Every key file is read
 * here (never per message) and checked: exists, parses, not group/world
 * readable unless allowed.  On error returns NULL with every problem
 * ("FILE:LINE: message" where there is a line) appended to errs.
 * A config with no keys gives a valid signer that never signs.
 */
mw_dkim_signer *mw_dkim_signer_create(const mw_config *cfg, mw_config_errors *errs);
void mw_dkim_signer_destroy(mw_dkim_signer **s);
size_t mw_dkim_signer_nkeys(const mw_dkim_signer *s);
bool mw_dkim_signer_key(const mw_dkim_signer *s, size_t i, mw_dkim_key_info *out);

/*
 * Which keys sign mail from this identity (an address or a bare domain)?
 * Fills up to max key indices into keys and returns how many matched; when
 * none match, writes why into why ("no signing-table match for
 * user@example.org").
 */
size_t mw_dkim_signer_lookup(const mw_dkim_signer *s, const char *identity, size_t *keys, size_t max,
                             char *why, size_t whylen);

/*
 * The DNS p= value (base64) of signer key i's public half; false if i is out
 * of range.  For dns-check.
 */
bool mw_dkim_signer_pubkey(const mw_dkim_signer *s, size_t i, mw_buf *p_b64);

/*
 * Generate a key: type "rsa" (bits 1024..8192, 0 -> 2048) or "ed25519".
 * PEM (PKCS#8) into pem, the DNS p= value into p_b64 (RSA: SubjectPublicKeyInfo
 * DER; Ed25519: the raw 32-byte key, RFC 8463).  false + reason on error.
 * The caller wipes pem (explicit_bzero) and frees it.
 */
bool mw_dkim_keygen(const char *type, unsigned bits, mw_buf *pem, mw_buf *p_b64, char *err,
                    size_t errlen);

/*
 * Key size of a published key: k= ("rsa" or "ed25519") and the p= base64
 * (blanks allowed).  false when p= does not decode to such a key.
 */
bool mw_dkim_pubkey_bits(const char *k, const char *p_b64, unsigned *bits);

/* ---- per message ---- */

typedef struct mw_dkim_msg mw_dkim_msg;

/*
 * Start a message.  verifier may be NULL (no verification); signer may be
 * NULL or nkeys 0 (no signing); keys are signer key indices.  id is used in
 * log lines (queue id).
 */
mw_dkim_msg *mw_dkim_msg_begin(mw_dkim_verifier *verifier, const mw_dkim_signer *signer,
                               const size_t *keys, size_t nkeys, const char *id);
/* The sender's domain (of the signing identity): d= of the keys whose
 * KeyTable domain is "%" (OpenDKIM's placeholder).  Copied; call before the
 * end of the message.  A "%" key signs nothing without it (logged). */
void mw_dkim_msg_sign_domain(mw_dkim_msg *m, const char *domain);
/* One header as received: name and the value byte-exact after the colon
 * (leading blank and folding kept, no CRLF at the end; LF line ends are made
 * CRLF).  The header is hashed as "Name:" + value for both signing and
 * verification, so front ends must pass exactly what the MTA has (the
 * milter asks for SMFIP_HDR_LEADSPC, or restores the blank itself). */
void mw_dkim_msg_header(mw_dkim_msg *m, const char *name, const char *value, size_t vlen);
void mw_dkim_msg_eoh(mw_dkim_msg *m);
/* Body bytes in SMTP form (CRLF line ends); LF-only input is converted. */
void mw_dkim_msg_body(mw_dkim_msg *m, const unsigned char *chunk, size_t len);
/*
 * End of message: verification results into *res (may be NULL when not
 * verifying) and one DKIM-Signature header value per signing key into
 * sigs (array of malloc'd strings, folded with "\n\t"; caller frees each and
 * the array); *nsigs is set.  Signing failures are logged and skipped.
 */
void mw_dkim_msg_end(mw_dkim_msg *m, mw_dkim_results *res, char ***sigs, size_t *nsigs);
void mw_dkim_msg_free(mw_dkim_msg **m);
/* Free the array mw_dkim_msg_end returned (NULL-safe). */
void mw_dkim_sigs_free(char **sigs, size_t nsigs);

#endif
