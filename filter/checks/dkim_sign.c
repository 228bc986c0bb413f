/*
 * dkim_sign.c - the DKIM signer: one libopendkim library handle set up from
 * the config (signed and oversigned header lists), the keys and signing
 * rules of dkim_keys.c, and the per-message signing handles that
 * dkim_verify.c's message context feeds.
 *
 * Design notes
 *   - One DKIM_LIB for all threads, configured once at create and read-only
 *     afterwards; each message gets its own DKIM signing handle per key
 *     (libopendkim's documented thread model).
 *   - Dual signing (RSA + Ed25519) is one handle per key fed the same
 *     header and body data; each yields one DKIM-Signature.
 *   - Oversigning (DKIM_OPTS_OVERSIGNHDRS) lists From, To and Subject once
 *     more than they occur, so none can be added after signing.
 *   - The private key text is handed to libopendkim per message (it parses
 *     it there); it is never logged.
 *
 * See also: dkim.h, dkim_keys.c, RFC 6376 §5, RFC 8463.
 */
#include "dkim_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

#define SIGHDR_NAME "DKIM-Signature"

static dkim_canon_t canon_word(const char *w, size_t n)
{
    return n == 6 && strncasecmp(w, "simple", 6) == 0 ? DKIM_CANON_SIMPLE : DKIM_CANON_RELAXED;
}

/* "HEADER/BODY"; one word is the header canonicalization, body simple (RFC 6376 §3.5 c=). */
static void canon_parse(const char *c, dkim_canon_t *hc, dkim_canon_t *bc)
{
    const char *slash = c != NULL ? strchr(c, '/') : NULL;

    if (c == NULL || c[0] == '\0') {
        *hc = *bc = DKIM_CANON_RELAXED;
        return;
    }
    *hc = canon_word(c, slash != NULL ? (size_t)(slash - c) : strlen(c));
    *bc = slash != NULL ? canon_word(slash + 1, strlen(slash + 1)) : DKIM_CANON_SIMPLE;
}

static const char **strv_copy(char *const *v, size_t n)
{
    const char **out = mw_calloc(n + 1, sizeof *out);

    for (size_t i = 0; i < n; i++)
        out[i] = mw_strdup(v[i]);
    return out;
}

static void strv_free(const char ***v)
{
    if (*v == NULL)
        return;
    for (const char **p = *v; *p != NULL; p++)
        free((char *)*p);
    MW_FREE(v);
}

static bool lib_setup(mw_dkim_signer *s, const mw_config *cfg, mw_config_errors *errs)
{
    unsigned minbits = 1024;
    bool need_ed = false;

    s->lib = dkim_init(NULL, NULL);
    if (s->lib == NULL) {
        mw_config_errors_addf(errs, "dkim: cannot initialise libopendkim");
        return false;
    }
    s->signhdrs = strv_copy(cfg->dkim_sign_headers, cfg->ndkim_sign_headers);
    s->oversign = strv_copy(cfg->dkim_oversign_headers, cfg->ndkim_oversign_headers);
    if (dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, s->signhdrs,
                     sizeof s->signhdrs) != DKIM_STAT_OK) {
        mw_config_errors_addf(errs, "dkim.sign_headers: libopendkim refused the list");
        return false;
    }
    if (cfg->ndkim_oversign_headers > 0 &&
        dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, s->oversign,
                     sizeof s->oversign) != DKIM_STAT_OK) {
        mw_config_errors_addf(errs, "dkim.oversign_headers: libopendkim refused the list");
        return false;
    }
    (void)dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits, sizeof minbits);
    for (size_t i = 0; i < s->nkeys; i++)
        need_ed = need_ed || s->key[i].signalg == DKIM_SIGN_ED25519SHA256;
    if (need_ed && !dkim_libfeature(s->lib, DKIM_FEATURE_ED25519)) {
        mw_config_errors_addf(errs, "dkim: this libopendkim cannot sign with Ed25519 keys");
        return false;
    }
    return true;
}

mw_dkim_signer *mw_dkim_signer_create(const mw_config *cfg, mw_config_errors *errs)
{
    mw_dkim_signer *s = mw_calloc(1, sizeof *s);
    size_t start = errs->n;

    canon_parse(cfg->dkim_canon, &s->hcanon, &s->bcanon);
    if (mw_dkim_tables_load(s, cfg, errs) && s->nkeys > 0)
        (void)lib_setup(s, cfg, errs);
    if (errs->n > start)
        mw_dkim_signer_destroy(&s);
    return s;
}

void mw_dkim_signer_destroy(mw_dkim_signer **sp)
{
    mw_dkim_signer *s = sp != NULL ? *sp : NULL;

    if (s == NULL)
        return;
    if (s->lib != NULL)
        dkim_close(s->lib);
    mw_dkim_tables_free(s);
    strv_free(&s->signhdrs);
    strv_free(&s->oversign);
    MW_FREE(sp);
}

DKIM *mw_dkim_sign_start(const mw_dkim_signer *s, size_t k, const char *id)
{
    const struct mw_dkim_key *key;
    DKIM_STAT st = DKIM_STAT_OK;
    DKIM *d;

    if (s == NULL || s->lib == NULL || k >= s->nkeys)
        return NULL;
    key = &s->key[k];
    d = dkim_sign(s->lib, (const unsigned char *)(id != NULL ? id : "-"), NULL,
                  (dkim_sigkey_t)key->pem, (const unsigned char *)key->selector,
                  (const unsigned char *)key->domain, s->hcanon, s->bcanon, key->signalg, -1, &st);
    /* libopendkim 2.11 folds an Ed25519 signature header differently when
     * hashing it than when emitting it; with simple header canonicalization
     * that breaks the signature.  Unfolded it is short (b= is 88 bytes). */
    if (d != NULL && key->signalg == DKIM_SIGN_ED25519SHA256 && s->hcanon == DKIM_CANON_SIMPLE)
        (void)dkim_set_margin(d, 0);
    if (d == NULL)
        mw_warn("%s: dkim: cannot sign with key %s: %s", id != NULL ? id : "-", key->name,
                dkim_getresultstr(st));
    return d;
}

char *mw_dkim_sign_header(const mw_dkim_signer *s, size_t k, DKIM *d, const char *id)
{
    unsigned char *hdr = NULL;
    size_t len = 0;
    DKIM_STAT st;
    mw_buf out = MW_BUF_INIT;

    st = dkim_getsighdr_d(d, sizeof SIGHDR_NAME + 1, &hdr, &len);
    if (st != DKIM_STAT_OK || hdr == NULL) {
        mw_warn("%s: dkim: no signature from key %s: %s", id != NULL ? id : "-",
                s->key[k].name, dkim_getresultstr(st));
        return NULL;
    }
    /* libopendkim folds with CRLF (or LF) + tab; the MTA wants "\n\t". */
    for (size_t i = 0; i < len; i++) {
        if (hdr[i] == '\r')
            continue;
        mw_buf_putc(&out, (char)hdr[i]);
    }
    return mw_buf_steal(&out);
}
