/*
 * test_checks_dkim.c - unit tests for DKIM signing and verification
 * (checks/dkim_verify.c, dkim_sign.c, dkim_keys.c) with every key lookup
 * through mw_dns and the scriptable test DNS server (tests/lib/testdns.py).
 *
 * Keys are generated at start (mw_dkim_keygen) into a private temp dir and
 * published in the test zone; the conformance vectors of
 * MW_SOURCE_DIR/../shared/conformance (notes §2) are verified when present
 * and skipped with a message when not.
 *
 * Environment: MW_SOURCE_DIR (source root), MW_TEST_PYTHON (default
 * /usr/bin/python3).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dkim_keycache.h"
#include "dns.h"
#include "mwtest.h"
#include "mwtest_procs.h"

/* The signer's canonicalization, tested directly (private to filter/checks). */
#include "../../filter/checks/dkim_canon.h"

/*
 * No leak suppressions: signing no longer goes through libopendkim (whose
 * 2.11 dkim_privkey_load leaked an EVP_PKEY per Ed25519 signature).
 */

static mwt_proc server;            /* testdns.py; its dir holds the keys and configs */
static char shared[1024];          /* .../shared/conformance, "" when absent */
static mw_dns *dns;
static mw_buf zone = MW_BUF_INIT;  /* JSON body, entries separated by ",\n" */

/* ---- helpers: files, zone, server ------------------------------------------------ */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    mw_buf b = MW_BUF_INIT;
    char tmp[8192];
    size_t n;

    if (f == NULL)
        return NULL;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        mw_buf_append(&b, tmp, n);
    fclose(f);
    if (len != NULL)
        *len = b.len;
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, len, f);
    fclose(f);
    chmod(path, mode);
}

static const char *tpath(const char *name)
{
    static _Thread_local char buf[4][256];
    static _Thread_local int i;
    i = (i + 1) % 4;
    mwt_path(&server, name, buf[i], sizeof buf[i]);
    return buf[i];
}

static void json_str(mw_buf *b, const char *s)
{
    mw_buf_putc(b, '"');
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            mw_buf_putc(b, '\\');
        if ((unsigned char)*s < 0x20)
            continue;
        mw_buf_putc(b, *s);
    }
    mw_buf_putc(b, '"');
}

static void zone_txt(const char *name, const char *txt)
{
    if (zone.len > 0)
        mw_buf_puts(&zone, ",\n");
    json_str(&zone, name);
    mw_buf_puts(&zone, ": [{\"TXT\": ");
    json_str(&zone, txt);
    mw_buf_puts(&zone, "}]");
}

static void zone_special(const char *name, const char *what)
{
    if (zone.len > 0)
        mw_buf_puts(&zone, ",\n");
    json_str(&zone, name);
    mw_buf_printf(&zone, ": [\"%s\"]", what);
}

static bool start_server(void)
{
    mw_buf z = MW_BUF_INIT;
    bool ok;

    mw_buf_printf(&z, "{\n%s\n}\n", mw_buf_cstr(&zone));
    ok = mwt_testdns_start(&server, "dkim", mw_buf_cstr(&z));
    mw_buf_free(&z);
    return ok;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Generate a key into server.dir/NAME.pem (0600) and publish it at SEL._domainkey.DOM. */
static void make_key(const char *name, const char *type, unsigned bits, const char *sel,
                     const char *dom)
{
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT, rec = MW_BUF_INIT, fn = MW_BUF_INIT;
    char err[256];

    if (!mw_dkim_keygen(type, bits, &pem, &p, err, sizeof err)) {
        fprintf(stderr, "keygen %s: %s\n", name, err);
        exit(2);
    }
    mw_buf_printf(&fn, "%s.pem", name);
    write_file(tpath(fn.data), pem.data, pem.len, 0600);
    if (sel != NULL) {
        mw_buf_printf(&rec, "%s._domainkey.%s", sel, dom);
        mw_buf p2 = MW_BUF_INIT;
        mw_buf_printf(&p2, "v=DKIM1; k=%s; p=%s", strcmp(type, "ed25519") == 0 ? "ed25519" : "rsa",
                      p.data);
        zone_txt(rec.data, p2.data);
        mw_buf_free(&p2);
    }
    explicit_bzero(pem.data, pem.len);
    mw_buf_free(&pem);
    mw_buf_free(&p);
    mw_buf_free(&rec);
    mw_buf_free(&fn);
}

/* A raw Ed25519 seed (base64, as dkimpy stores it) as a PEM file in server.dir. */
static bool seed_to_pem(const char *seedfile, const char *name)
{
    char *b64 = slurp(seedfile, NULL);
    unsigned char raw[64];
    int n;
    EVP_PKEY *pk;
    BIO *bio;
    char *data;
    long len;

    if (b64 == NULL)
        return false;
    b64[strcspn(b64, "\r\n")] = '\0';
    n = EVP_DecodeBlock(raw, (unsigned char *)b64, (int)strlen(b64));
    free(b64);
    if (n < 32)
        return false;
    pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, 32);
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    len = BIO_get_mem_data(bio, &data);
    write_file(tpath(name), data, (size_t)len, 0600);
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return true;
}

static bool copy_private(const char *from, const char *name)
{
    size_t len;
    char *d = slurp(from, &len);
    if (d == NULL)
        return false;
    write_file(tpath(name), d, len, 0600);
    free(d);
    return true;
}

/* ---- helpers: config, signer, verifier ------------------------------------------------ */

static mw_config *load_conf(const char *text, mw_config_errors *errs)
{
    static int n;
    char name[64];
    snprintf(name, sizeof name, "conf%d.conf", n++);
    write_file(tpath(name), text, strlen(text), 0600);
    return mw_config_load(tpath(name), NULL, errs);
}

static bool errs_have(const mw_config_errors *e, const char *s)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msg[i], s) != NULL)
            return true;
    return false;
}

static void errs_print(const mw_config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "  error: %s\n", e->msg[i]);
}

/* Signer from a dkim { ... } body. */
static mw_dkim_signer *signer_from(const char *dkim_body, mw_config_errors *errs)
{
    mw_buf t = MW_BUF_INIT;
    mw_config *cfg;
    mw_dkim_signer *s = NULL;

    mw_buf_printf(&t, "dkim = {\n%s\n};\n", dkim_body);
    cfg = load_conf(t.data, errs);
    if (cfg != NULL)
        s = mw_dkim_signer_create(cfg, errs);
    mw_config_free(&cfg);
    mw_buf_free(&t);
    return s;
}

static mw_dkim_verifier *verifier(unsigned min_bits, unsigned timeout_ms, long fixed_time)
{
    char err[256];
    mw_dkim_verify_options o = {.min_key_bits = min_bits, .max_signatures = 10,
                                .timeout_ms = timeout_ms, .fixed_time = fixed_time};
    mw_dkim_verifier *v = mw_dkim_verifier_create(dns, &o, err, sizeof err);
    if (v == NULL)
        fprintf(stderr, "verifier: %s\n", err);
    return v;
}

typedef struct outcome {
    mw_dkim_results res;
    char          **sigs;
    size_t          nsigs;
} outcome;

static void outcome_clear(outcome *o)
{
    mw_dkim_results_clear(&o->res);
    mw_dkim_sigs_free(o->sigs, o->nsigs);
    memset(o, 0, sizeof *o);
}

/* The sender's domain run() gives the signer (d= of "%" keys); NULL: none. */
static const char *run_sign_domain;

/* Feed a message (LF or CRLF) header by header and the body in chunks. */
static void run(mw_dkim_verifier *v, const mw_dkim_signer *s, const size_t *keys, size_t nkeys,
                const char *msg, size_t chunk, outcome *o)
{
    mw_dkim_msg *m = mw_dkim_msg_begin(v, s, keys, nkeys, "TEST");
    mw_dkim_msg_sign_domain(m, run_sign_domain);
    const char *p = msg;
    mw_buf name = MW_BUF_INIT, val = MW_BUF_INIT;
    bool have = false;

    memset(o, 0, sizeof *o);
    for (;;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (len > 0 && p[len - 1] == '\r')
            len--;
        bool cont = len > 0 && (p[0] == ' ' || p[0] == '\t');
        if (have && !cont) {
            mw_dkim_msg_header(m, name.data, val.data != NULL ? val.data : "", val.len);
            have = false;
        }
        if (len == 0 || eol == NULL) {
            p = eol != NULL ? eol + 1 : p + len;
            break;
        }
        if (cont) {
            mw_buf_putc(&val, '\n');
            mw_buf_append(&val, p, len);
        } else {
            const char *colon = memchr(p, ':', len);
            if (colon != NULL) {
                mw_buf_reset(&name);
                mw_buf_reset(&val);
                mw_buf_append(&name, p, (size_t)(colon - p));
                mw_buf_append(&val, colon + 1, len - (size_t)(colon - p) - 1);
                mw_buf_puts(&val, "");
                have = true;
            }
        }
        p = eol + 1;
    }
    mw_dkim_msg_eoh(m);
    size_t blen = strlen(p);
    if (chunk == 0)
        chunk = blen > 0 ? blen : 1;
    for (size_t off = 0; off < blen; off += chunk)
        mw_dkim_msg_body(m, (const unsigned char *)p + off, blen - off < chunk ? blen - off : chunk);
    mw_dkim_msg_end(m, &o->res, &o->sigs, &o->nsigs);
    mw_dkim_msg_free(&m);
    mw_buf_free(&name);
    mw_buf_free(&val);
}

/* The message with our signatures prepended (as the MTA would insert them). */
static char *with_sigs(char **sigs, size_t n, const char *msg)
{
    mw_buf b = MW_BUF_INIT;
    for (size_t i = 0; i < n; i++)
        mw_buf_printf(&b, "DKIM-Signature: %s\n", sigs[i]);
    mw_buf_puts(&b, msg);
    return mw_buf_steal(&b);
}

static size_t key_index(const mw_dkim_signer *s, const char *name)
{
    mw_dkim_key_info ki;
    for (size_t i = 0; mw_dkim_signer_key(s, i, &ki); i++)
        if (strcmp(ki.name, name) == 0)
            return i;
    fprintf(stderr, "no key %s\n", name);
    return (size_t)-1;
}

static const char MSG[] =
    "From: Alice <alice@sign.test>\n"
    "To: Bob <bob@example.net>\n"
    "Subject: lunch?\n"
    "Date: Mon, 3 Jun 2024 10:00:00 +0000\n"
    "Message-ID: <1@sign.test>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "Hi Bob,\n"
    "\n"
    "lunch at  noon?   \n"
    "\n"
    "-- Alice\n"
    "\n\n";

static mw_dkim_signer *main_signer;

static const char *main_keys_conf(void)
{
    static char buf[4096];
    char rsa[256], ed[256], small[256], kc1[256], kc2[256];   /* tpath() rotates 4 buffers */
    snprintf(rsa, sizeof rsa, "%s", tpath("rsa.pem"));
    snprintf(ed, sizeof ed, "%s", tpath("ed.pem"));
    snprintf(small, sizeof small, "%s", tpath("small.pem"));
    snprintf(kc1, sizeof kc1, "%s", tpath("kc1.pem"));
    snprintf(kc2, sizeof kc2, "%s", tpath("kc2.pem"));
    snprintf(buf, sizeof buf,
             "keys = (\n"
             " { name = \"rsa\"; domain = \"sign.test\"; selector = \"rsa\"; file = \"%s\"; },\n"
             " { name = \"ed\"; domain = \"sign.test\"; selector = \"ed\"; file = \"%s\"; },\n"
             " { name = \"small\"; domain = \"sign.test\"; selector = \"small\"; file = \"%s\"; },\n"
             " { name = \"revoked\"; domain = \"sign.test\"; selector = \"revoked\"; file = \"%s\"; },\n"
             " { name = \"timeout\"; domain = \"sign.test\"; selector = \"timeout\"; file = \"%s\"; },\n"
             " { name = \"servfail\"; domain = \"sign.test\"; selector = \"servfail\"; file = \"%s\"; },\n"
             " { name = \"badkey\"; domain = \"sign.test\"; selector = \"badkey\"; file = \"%s\"; },\n"
             " { name = \"nokey\"; domain = \"sign.test\"; selector = \"nokey\"; file = \"%s\"; },\n"
             " { name = \"kc1\"; domain = \"sign.test\"; selector = \"kc1\"; file = \"%s\"; },\n"
             " { name = \"kc2\"; domain = \"sign.test\"; selector = \"kc2\"; file = \"%s\"; },\n"
             " { name = \"kcoid\"; domain = \"sign.test\"; selector = \"kcoid\"; file = \"%s\"; },\n"
             " { name = \"kcshort\"; domain = \"sign.test\"; selector = \"kcshort\"; file = \"%s\"; }\n"
             ");\n",
             rsa, ed, small, rsa, rsa, rsa, rsa, rsa, kc1, kc2, kc1, kc1);
    return buf;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_sign_verify_dual(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    size_t keys[2] = {key_index(main_signer, "rsa"), key_index(main_signer, "ed")};
    outcome o, o2;

    if (!MW_TEST_ASSERT(v != NULL))
        return;
    run(NULL, main_signer, keys, 2, MSG, 7, &o);
    if (!MW_TEST_EQ_INT(o.nsigs, 2))
        goto out;
    MW_TEST_ASSERT(strstr(o.sigs[0], "a=rsa-sha256") != NULL);
    MW_TEST_ASSERT(strstr(o.sigs[1], "a=ed25519-sha256") != NULL);
    MW_TEST_ASSERT(strstr(o.sigs[0], "c=relaxed/relaxed") != NULL);
    MW_TEST_ASSERT(strstr(o.sigs[0], "d=sign.test") != NULL);
    MW_TEST_ASSERT(strstr(o.sigs[0], "\r") == NULL);
    MW_TEST_ASSERT(strstr(o.sigs[0], "\n\t") != NULL);
    /* From, To and Subject oversigned: each appears once more in h=. */
    const char *h = strstr(o.sigs[0], "h=");
    MW_TEST_ASSERT(h != NULL && strcasestr(h, "from") != NULL &&
                   strcasestr(strcasestr(h, "from") + 4, "from") != NULL);

    char *signed_msg = with_sigs(o.sigs, o.nsigs, MSG);
    run(v, NULL, NULL, 0, signed_msg, 0, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2)) {
        for (size_t i = 0; i < 2; i++) {
            mw_dkim_sig *s = &o2.res.sig[i];
            if (!MW_TEST_EQ_INT(s->result, MW_DKIM_PASS))
                fprintf(stderr, "  sig %zu: %s\n", i, s->reason ? s->reason : "");
            MW_TEST_EQ_STR(s->domain, "sign.test");
            MW_TEST_EQ_STR(s->identity, "@sign.test");
            MW_TEST_ASSERT(strlen(s->b_prefix) >= 8);
            MW_TEST_EQ_INT(s->dnssec, MW_DKIM_DNSSEC_UNKNOWN);
        }
        MW_TEST_EQ_STR(o2.res.sig[0].selector, "rsa");
        MW_TEST_EQ_STR(o2.res.sig[0].algorithm, "rsa-sha256");
        MW_TEST_EQ_INT(o2.res.sig[0].bits, 2048);
        MW_TEST_EQ_STR(o2.res.sig[1].algorithm, "ed25519-sha256");
        MW_TEST_EQ_INT(o2.res.sig[1].bits, 256);
        MW_TEST_EQ_STR(mw_dkim_result_name(o2.res.sig[0].result), "pass");
    }
    outcome_clear(&o2);

    /* Body changed after signing: fail with the reason. */
    char *tampered = mw_strdup(signed_msg);
    char *lunch = strstr(tampered, "lunch at");
    lunch[0] = 'L';
    run(v, NULL, NULL, 0, tampered, 0, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2)) {
        MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_FAIL);
        MW_TEST_EQ_STR(o2.res.sig[0].reason, "body hash mismatch");
        MW_TEST_EQ_INT(o2.res.sig[1].result, MW_DKIM_FAIL);
    }
    outcome_clear(&o2);
    free(tampered);

    /* A signed header changed: signature fails. */
    tampered = mw_strdup(signed_msg);
    lunch = strstr(tampered, "Subject: lunch?");
    lunch[9] = 'L';
    run(v, NULL, NULL, 0, tampered, 0, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2)) {
        MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_FAIL);
        MW_TEST_EQ_STR(o2.res.sig[0].reason, "signature did not verify");
    }
    outcome_clear(&o2);
    free(tampered);

    /* An added From (oversigning) fails too. */
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%s", signed_msg);
    char *from = strstr(b.data, "From: Alice");
    mw_buf c = MW_BUF_INIT;
    mw_buf_append(&c, b.data, (size_t)(from - b.data));
    mw_buf_puts(&c, "From: Mallory <m@evil.test>\n");
    mw_buf_puts(&c, from);
    run(v, NULL, NULL, 0, c.data, 0, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2))
        MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_FAIL);
    outcome_clear(&o2);
    mw_buf_free(&b);
    mw_buf_free(&c);

    /* CRLF input, body one byte at a time: still passes. */
    mw_buf crlf = MW_BUF_INIT;
    for (const char *p = signed_msg; *p != '\0'; p++) {
        if (*p == '\n')
            mw_buf_putc(&crlf, '\r');
        mw_buf_putc(&crlf, *p);
    }
    run(v, NULL, NULL, 0, crlf.data, 1, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2)) {
        MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_PASS);
        MW_TEST_EQ_INT(o2.res.sig[1].result, MW_DKIM_PASS);
    }
    outcome_clear(&o2);
    mw_buf_free(&crlf);
    free(signed_msg);
out:
    outcome_clear(&o);
    mw_dkim_verifier_destroy(&v);
}

static void test_simple_canon(void)
{
    mw_config_errors errs = {0};
    mw_buf body = MW_BUF_INIT;
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    outcome o, o2;

    mw_buf_printf(&body, "%s canonicalization = \"simple/simple\";\n", main_keys_conf());
    mw_dkim_signer *s = signer_from(body.data, &errs);
    errs_print(&errs);
    if (!MW_TEST_ASSERT(s != NULL && v != NULL))
        goto out;
    size_t keys[2] = {key_index(s, "rsa"), key_index(s, "ed")};
    run(NULL, s, keys, 2, MSG, 3, &o);
    if (MW_TEST_EQ_INT(o.nsigs, 2)) {
        MW_TEST_ASSERT(strstr(o.sigs[0], "c=simple/simple") != NULL);
        char *sm = with_sigs(o.sigs, o.nsigs, MSG);
        run(v, NULL, NULL, 0, sm, 0, &o2);
        if (MW_TEST_EQ_INT(o2.res.nsig, 2)) {
            MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_PASS);
            MW_TEST_EQ_INT(o2.res.sig[1].result, MW_DKIM_PASS);
        }
        outcome_clear(&o2);
        /* simple body: one added trailing space breaks it */
        char *sp = strstr(sm, "-- Alice");
        mw_buf t = MW_BUF_INIT;
        mw_buf_append(&t, sm, (size_t)(sp - sm) + 8);
        mw_buf_puts(&t, " ");
        mw_buf_puts(&t, sp + 8);
        run(v, NULL, NULL, 0, t.data, 0, &o2);
        if (MW_TEST_EQ_INT(o2.res.nsig, 2))
            MW_TEST_EQ_INT(o2.res.sig[0].result, MW_DKIM_FAIL);
        outcome_clear(&o2);
        mw_buf_free(&t);
        free(sm);
    }
    outcome_clear(&o);
out:
    mw_dkim_signer_destroy(&s);
    mw_dkim_verifier_destroy(&v);
    mw_config_errors_free(&errs);
    mw_buf_free(&body);
}

/* Sign with key NAME, verify with v; returns the outcome's first result. */
static mw_dkim_result sign_then_verify(mw_dkim_verifier *v, const char *keyname, outcome *o2,
                                       double *secs)
{
    size_t k = key_index(main_signer, keyname);
    outcome o;
    mw_dkim_result r = MW_DKIM_NONE;

    run(NULL, main_signer, &k, 1, MSG, 0, &o);
    if (MW_TEST_EQ_INT(o.nsigs, 1)) {
        char *sm = with_sigs(o.sigs, o.nsigs, MSG);
        double t0 = now_s();
        run(v, NULL, NULL, 0, sm, 0, o2);
        if (secs != NULL)
            *secs = now_s() - t0;
        if (MW_TEST_EQ_INT(o2->res.nsig, 1))
            r = o2->res.sig[0].result;
        free(sm);
    }
    outcome_clear(&o);
    return r;
}

static void test_key_problems(void)
{
    /* Real key lookups get the resolver's generous default; only the silent
     * key goes through a 500 ms limit (one for every lookup, as before, let
     * a slow answer turn permerror/pass into temperror on a loaded machine). */
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    mw_dkim_verifier *v_fast = verifier(1024, 500, 0);
    mw_dkim_verifier *v2048 = verifier(2048, 0, 0);
    outcome o;
    double secs = 0;

    if (!MW_TEST_ASSERT(v != NULL && v_fast != NULL && v2048 != NULL))
        return;
    MW_TEST_EQ_INT(sign_then_verify(v, "revoked", &o, NULL), MW_DKIM_PERMERROR);
    if (o.res.nsig == 1)
        MW_TEST_EQ_STR(o.res.sig[0].reason, "key revoked (empty p=)");
    outcome_clear(&o);

    MW_TEST_EQ_INT(sign_then_verify(v_fast, "timeout", &o, &secs), MW_DKIM_TEMPERROR);
    if (o.res.nsig == 1) {
        MW_TEST_EQ_STR(mw_dkim_result_name(o.res.sig[0].result), "temperror");
        MW_TEST_ASSERT(strstr(o.res.sig[0].reason, "key lookup failed") != NULL);
        MW_TEST_ASSERT(strstr(o.res.sig[0].reason, "timeout after 500 ms") != NULL);
        fprintf(stderr, "  timeout reason: %s (%.2f s)\n", o.res.sig[0].reason, secs);
    }
    MW_TEST_ASSERT(secs < 5.0);     /* 10x the 500 ms limit: a hang, not a slow run */
    outcome_clear(&o);

    MW_TEST_EQ_INT(sign_then_verify(v, "servfail", &o, NULL), MW_DKIM_TEMPERROR);
    outcome_clear(&o);

    /* A selector that is no DNS name ("a..b", ".a", a 64-byte label) is the
     * signer's doing: permerror, never temperror (which a spoofer of a
     * p=reject domain would use to turn 550 into 451). */
    static const char *const bad_sel[] = {"a..b", ".a",
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad_sel / sizeof bad_sel[0]; i++) {
        size_t k = key_index(main_signer, "revoked");
        outcome so;
        run(NULL, main_signer, &k, 1, MSG, 0, &so);
        if (MW_TEST_EQ_INT(so.nsigs, 1)) {
            mw_buf sig = MW_BUF_INIT;
            const char *p = strstr(so.sigs[0], " s=");
            const char *e = p ? strchr(p, ';') : NULL;
            if (MW_TEST_ASSERT(p && e)) {
                mw_buf_append(&sig, so.sigs[0], (size_t)(p - so.sigs[0]));
                mw_buf_printf(&sig, " s=%s", bad_sel[i]);
                mw_buf_puts(&sig, e);
                char *one[1] = {sig.data};
                char *sm = with_sigs(one, 1, MSG);
                run(v, NULL, NULL, 0, sm, 0, &o);
                if (MW_TEST_EQ_INT(o.res.nsig, 1) &&
                    !MW_TEST_EQ_STR(mw_dkim_result_name(o.res.sig[0].result), "permerror"))
                    fprintf(stderr, "  s=%s: %s\n", bad_sel[i], o.res.sig[0].reason);
                outcome_clear(&o);
                free(sm);
            }
            mw_buf_free(&sig);
        }
        outcome_clear(&so);
    }

    MW_TEST_EQ_INT(sign_then_verify(v, "badkey", &o, NULL), MW_DKIM_PERMERROR);
    if (o.res.nsig == 1)
        fprintf(stderr, "  bad key reason: %s\n", o.res.sig[0].reason);
    outcome_clear(&o);

    MW_TEST_EQ_INT(sign_then_verify(v, "nokey", &o, NULL), MW_DKIM_PERMERROR);
    if (o.res.nsig == 1)
        MW_TEST_ASSERT(strstr(o.res.sig[0].reason, "no key record") != NULL &&
                       strstr(o.res.sig[0].reason, "nxdomain") != NULL);
    outcome_clear(&o);

    /* 1024-bit key: fine at the default minimum, policy at 2048. */
    MW_TEST_EQ_INT(sign_then_verify(v, "small", &o, NULL), MW_DKIM_PASS);
    outcome_clear(&o);
    MW_TEST_EQ_INT(sign_then_verify(v2048, "small", &o, NULL), MW_DKIM_POLICY);
    if (o.res.nsig == 1) {
        MW_TEST_ASSERT(strstr(o.res.sig[0].reason, "too small") != NULL);
        MW_TEST_EQ_INT(o.res.sig[0].bits, 1024);
    }
    outcome_clear(&o);
    /* Ed25519 is never "too small". */
    MW_TEST_EQ_INT(sign_then_verify(v2048, "ed", &o, NULL), MW_DKIM_PASS);
    outcome_clear(&o);

    mw_dkim_verifier_destroy(&v);
    mw_dkim_verifier_destroy(&v_fast);
    mw_dkim_verifier_destroy(&v2048);
}

/* x= in the past: policy (expired); with a fixed "now" before it: pass. */
static void test_expiry_and_unsigned(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    outcome o;

    if (!MW_TEST_ASSERT(v != NULL))
        return;
    run(v, NULL, NULL, 0, MSG, 0, &o);
    MW_TEST_EQ_INT(o.res.nsig, 0);
    MW_TEST_EQ_INT(o.res.nskipped, 0);
    outcome_clear(&o);
    mw_dkim_verifier_destroy(&v);
}

/* Hostile DKIM-Signature fields: never crash, finish, sane results.  The
 * counts (evaluated, skipped) are what shows the caps work; the time bounds
 * only catch a hang (each lookup is a quick NXDOMAIN or key from the local
 * server, with the resolver's default limit: a 300 ms one raced). */
static void test_hostile(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    mw_buf m = MW_BUF_INIT, huge = MW_BUF_INIT;
    outcome o;
    double t0;

    if (!MW_TEST_ASSERT(v != NULL))
        return;
    for (int i = 0; i < 100000; i++)
        mw_buf_putc(&huge, (char)('A' + i % 26));
    const char *bad[] = {
        "v=1",                                                      /* missing tags */
        "v=1; a=rsa-sha256; d=sign.test; s=rsa; h=from; bh=AAAA; b=%%%%notbase64%%%%",
        "v=1; a=rsa-sha256; a=rsa-sha256; d=sign.test; s=rsa; h=from; bh=AAAA; b=AAAA",
        "v=1; a=rsa-sha256; d=sign.test; d=other.test; s=rsa; h=from; bh=AAAA; b=AAAA",
        "v=1; a=foo-bar; d=sign.test; s=rsa; h=from; bh=AAAA; b=AAAA",
        "v=1; a=rsa-sha256; d=; s=; h=; bh=; b=",
        "v=1; a=rsa-sha256; d=sign.test; s=rsa; h=from; l=99999999999999999999; bh=AAAA; b=AAAA",
        "v=1; a=rsa-sha256; d=sign.test; s=rsa; h=from; x=1; t=2; bh=AAAA; b=AAAA",
        "v=1; a=rsa-sha256; d=sign.test; s=rsa; h=from; q=dns/txt; i=@evil.test; bh=AAAA; b=AAAA",
        ";;;;====;;;;",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        mw_buf_printf(&m, "DKIM-Signature: %s\n", bad[i]);
    mw_buf_printf(&m, "DKIM-Signature: v=1; a=rsa-sha256; d=%s; s=rsa; h=from; bh=AAAA; b=AAAA\n",
                  huge.data);
    mw_buf_printf(&m, "DKIM-Signature: v=1; a=rsa-sha256; d=sign.test; s=%s; h=from; bh=AAAA; b=AAAA\n",
                  huge.data);
    mw_buf_printf(&m, "DKIM-Signature: v=1; a=rsa-sha256; d=sign.test; s=rsa; h=from; bh=AAAA; b=%s\n",
                  huge.data);
    mw_buf_puts(&m, MSG);
    t0 = now_s();
    run(v, NULL, NULL, 0, m.data, 0, &o);
    fprintf(stderr, "  %zu hostile signatures: %zu evaluated, %zu skipped, %.3f s\n",
            sizeof bad / sizeof bad[0] + 3, o.res.nsig, o.res.nskipped, now_s() - t0);
    MW_TEST_ASSERT(o.res.nsig <= 10);
    MW_TEST_EQ_INT(o.res.nsig + o.res.nskipped, sizeof bad / sizeof bad[0] + 3);
    for (size_t i = 0; i < o.res.nsig; i++) {
        MW_TEST_ASSERT(o.res.sig[i].result != MW_DKIM_PASS);
        MW_TEST_ASSERT(o.res.sig[i].domain != NULL && o.res.sig[i].b_prefix != NULL);
        MW_TEST_ASSERT(o.res.sig[i].reason != NULL);
    }
    MW_TEST_ASSERT(now_s() - t0 < 20.0);
    outcome_clear(&o);

    /* 5000 signatures: only max_signatures are looked at. */
    mw_buf_reset(&m);
    for (int i = 0; i < 5000; i++)
        mw_buf_printf(&m, "DKIM-Signature: v=1; a=rsa-sha256; d=n%d.sign.test; s=s%d; h=from; "
                      "bh=AAAA; b=QUJDREVGR0hJSktMTU5PUFFSU1RVVldY%d\n", i, i, i);
    mw_buf_puts(&m, MSG);
    t0 = now_s();
    run(v, NULL, NULL, 0, m.data, 0, &o);
    double secs = now_s() - t0;
    fprintf(stderr, "  5000 signatures: %zu evaluated, %zu skipped, %.3f s\n", o.res.nsig,
            o.res.nskipped, secs);
    MW_TEST_EQ_INT(o.res.nsig, 10);
    MW_TEST_EQ_INT(o.res.nskipped, 4990);
    MW_TEST_ASSERT(secs < 20.0);
    /* header.b: b= values share 32 characters, so the prefixes are longer. */
    if (o.res.nsig == 10) {
        MW_TEST_ASSERT(strlen(o.res.sig[0].b_prefix) > 32);
        MW_TEST_ASSERT(strcmp(o.res.sig[0].b_prefix, o.res.sig[1].b_prefix) != 0);
        MW_TEST_EQ_INT(o.res.sig[0].result, MW_DKIM_PERMERROR);
    }
    outcome_clear(&o);
    mw_buf_free(&m);
    mw_buf_free(&huge);
    mw_dkim_verifier_destroy(&v);
}

/* Keys in a config: every problem named with the entry's FILE:LINE. */
static void test_key_loading(void)
{
    mw_config_errors errs = {0};
    mw_buf t = MW_BUF_INIT;
    mw_dkim_signer *s;
    size_t len;
    char *pem = slurp(tpath("rsa.pem"), &len);

    write_file(tpath("open.pem"), pem, len, 0644);
    write_file(tpath("junk.pem"), "not a key\n", 10, 0600);
    free(pem);
    mw_buf_printf(&t, "keys = (\n"
                  " { name = \"a\"; domain = \"sign.test\"; selector = \"a\"; file = \"%s\"; },\n"
                  " { name = \"b\"; domain = \"sign.test\"; selector = \"b\"; file = \"%s\"; },\n"
                  " { name = \"c\"; domain = \"sign.test\"; selector = \"c\"; file = \"%s\"; }\n"
                  ");\n", tpath("open.pem"), tpath("missing.pem"), tpath("junk.pem"));
    s = signer_from(t.data, &errs);
    MW_TEST_ASSERT(s == NULL);
    MW_TEST_EQ_INT(errs.n, 3);
    MW_TEST_ASSERT(errs_have(&errs, ".conf:3: key \"a\": key file"));
    MW_TEST_ASSERT(errs_have(&errs, "accessible by group or others (mode 0644)"));
    MW_TEST_ASSERT(errs_have(&errs, ".conf:4: key \"b\": cannot open key file"));
    MW_TEST_ASSERT(errs_have(&errs, ".conf:5: key \"c\": key file"));
    MW_TEST_ASSERT(errs_have(&errs, "not a PEM private key"));
    errs_print(&errs);
    mw_config_errors_free(&errs);

    /* allow_unsafe_keys accepts the 0644 file. */
    mw_buf_reset(&t);
    mw_buf_printf(&t, "allow_unsafe_keys = true;\nkeys = ( { name = \"a\"; domain = \"sign.test\"; "
                  "selector = \"a\"; file = \"%s\"; } );\n", tpath("open.pem"));
    s = signer_from(t.data, &errs);
    errs_print(&errs);
    MW_TEST_ASSERT(s != NULL);
    MW_TEST_EQ_INT(mw_dkim_signer_nkeys(s), 1);
    mw_dkim_key_info ki;
    if (MW_TEST_ASSERT(mw_dkim_signer_key(s, 0, &ki))) {
        MW_TEST_EQ_STR(ki.algorithm, "rsa-sha256");
        MW_TEST_EQ_INT(ki.bits, 2048);
    }
    mw_dkim_signer_destroy(&s);
    MW_TEST_ASSERT(s == NULL);
    mw_config_errors_free(&errs);

    /* A rule naming an unknown key is a config error. */
    mw_buf_reset(&t);
    mw_buf_printf(&t, "signing = ( { pattern = \"x.test\"; keys = [\"nope\"]; } );\n");
    s = signer_from(t.data, &errs);
    MW_TEST_ASSERT(s == NULL);
    MW_TEST_ASSERT(errs_have(&errs, ".conf:2: dkim.signing: unknown key \"nope\""));
    mw_config_errors_free(&errs);

    /* No keys at all: a valid signer that never signs. */
    s = signer_from("", &errs);
    MW_TEST_ASSERT(s != NULL);
    size_t k[4];
    char why[200];
    MW_TEST_EQ_INT(mw_dkim_signer_lookup(s, "a@b.test", k, 4, why, sizeof why), 0);
    MW_TEST_EQ_STR(why, "no signing keys configured");
    mw_dkim_signer_destroy(&s);
    mw_buf_free(&t);
}

static const char *lookup1(const mw_dkim_signer *s, const char *id, char *out, size_t outlen)
{
    size_t k[4];
    char why[200];
    size_t n = mw_dkim_signer_lookup(s, id, k, 4, why, sizeof why);
    mw_dkim_key_info ki;

    out[0] = '\0';
    if (n == 0) {
        snprintf(out, outlen, "-");
        return out;
    }
    for (size_t i = 0; i < n; i++) {
        mw_dkim_signer_key(s, k[i], &ki);
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", i ? "+" : "", ki.name);
    }
    return out;
}

static void test_signing_table(void)
{
    mw_config_errors errs = {0};
    mw_buf t = MW_BUF_INIT;
    char buf[200], why[200];
    size_t k[4];
    char key[256], edk[256];

    snprintf(key, sizeof key, "%s", tpath("rsa.pem"));
    snprintf(edk, sizeof edk, "%s", tpath("ed.pem"));

    mw_buf_printf(&t,
        "keys = (\n"
        " { name = \"k1\"; domain = \"a.test\"; selector = \"s1\"; file = \"%s\"; },\n"
        " { name = \"k2\"; domain = \"a.test\"; selector = \"s2\"; file = \"%s\"; },\n"
        " { name = \"k3\"; domain = \"b.test\"; selector = \"s3\"; file = \"%s\"; }\n"
        ");\n"
        "signing = (\n"
        " { pattern = \"ceo@a.test\"; keys = [\"k3\"]; },\n"
        " { pattern = \"a.test\"; keys = [\"k1\", \"k2\"]; },\n"
        " { pattern = \".a.test\"; keys = [\"k2\"]; },\n"
        " { pattern = \"*@*.b.test\"; keys = [\"k3\"]; },\n"
        " { pattern = \"list-*@c.test\"; keys = \"k1\"; }\n"
        ");\n", key, edk, key);
    mw_dkim_signer *s = signer_from(t.data, &errs);
    errs_print(&errs);
    if (!MW_TEST_ASSERT(s != NULL))
        goto out;
    MW_TEST_EQ_STR(lookup1(s, "ceo@a.test", buf, sizeof buf), "k3");       /* first match */
    MW_TEST_EQ_STR(lookup1(s, "CEO@A.TEST", buf, sizeof buf), "k3");       /* case */
    MW_TEST_EQ_STR(lookup1(s, "bob@a.test", buf, sizeof buf), "k1+k2");    /* dual */
    MW_TEST_EQ_STR(lookup1(s, "a.test", buf, sizeof buf), "k1+k2");        /* bare domain */
    MW_TEST_EQ_STR(lookup1(s, "bob@x.a.test", buf, sizeof buf), "k2");     /* subdomain */
    MW_TEST_EQ_STR(lookup1(s, "bob@x.y.a.test", buf, sizeof buf), "k2");
    MW_TEST_EQ_STR(lookup1(s, "bob@xa.test", buf, sizeof buf), "-");
    MW_TEST_EQ_STR(lookup1(s, "bob@b.test", buf, sizeof buf), "-");        /* not itself */
    MW_TEST_EQ_STR(lookup1(s, "bob@m.b.test", buf, sizeof buf), "k3");
    MW_TEST_EQ_STR(lookup1(s, "list-dev@c.test", buf, sizeof buf), "k1");
    MW_TEST_EQ_STR(lookup1(s, "dev@c.test", buf, sizeof buf), "-");
    MW_TEST_EQ_INT(mw_dkim_signer_lookup(s, "user@example.org", k, 4, why, sizeof why), 0);
    MW_TEST_EQ_STR(why, "no signing-table match for user@example.org");
    MW_TEST_EQ_INT(mw_dkim_signer_lookup(s, "bob@a.test", k, 1, why, sizeof why), 1);
    mw_dkim_signer_destroy(&s);

    /* OpenDKIM files: KeyTable + refile SigningTable. */
    mw_buf kt = MW_BUF_INIT, st = MW_BUF_INIT;
    mw_buf_printf(&kt, "# OpenDKIM key table\n"
                  "rsa  a.test:s1:%s\n"
                  "ed   a.test:s2:%s   # dual\n"
                  "\n"
                  "sub  sub.a.test:s3:%s\n", key, edk, key);
    write_file(tpath("KeyTable"), kt.data, kt.len, 0644);
    mw_buf_printf(&st, "*@sub.a.test sub\n"
                  "*@a.test rsa\n"
                  "*@a.test ed\n"
                  "*@*.a.test rsa\n");
    write_file(tpath("SigningTable"), st.data, st.len, 0644);
    mw_buf_reset(&t);
    mw_buf_printf(&t, "key_table = \"file:%s\";\nsigning_table = \"refile:%s\";\n",
                  tpath("KeyTable"), tpath("SigningTable"));
    s = signer_from(t.data, &errs);
    errs_print(&errs);
    if (MW_TEST_ASSERT(s != NULL)) {
        MW_TEST_EQ_INT(mw_dkim_signer_nkeys(s), 3);
        MW_TEST_EQ_STR(lookup1(s, "u@a.test", buf, sizeof buf), "rsa+ed");
        MW_TEST_EQ_STR(lookup1(s, "u@sub.a.test", buf, sizeof buf), "sub");
        MW_TEST_EQ_STR(lookup1(s, "u@x.a.test", buf, sizeof buf), "rsa");
        MW_TEST_EQ_STR(lookup1(s, "u@b.test", buf, sizeof buf), "-");
        mw_dkim_key_info ki;
        if (MW_TEST_ASSERT(mw_dkim_signer_key(s, 1, &ki))) {
            MW_TEST_EQ_STR(ki.name, "ed");
            MW_TEST_EQ_STR(ki.algorithm, "ed25519-sha256");
            MW_TEST_EQ_STR(ki.selector, "s2");
        }
    }
    mw_dkim_signer_destroy(&s);

    /* Plain SigningTable: addresses before domains whatever the order. */
    mw_buf_reset(&st);
    mw_buf_printf(&st, "a.test rsa\nboss@a.test ed\n");
    write_file(tpath("SigningTable2"), st.data, st.len, 0644);
    mw_buf_reset(&t);
    mw_buf_printf(&t, "key_table = \"%s\";\nsigning_table = \"%s\";\n", tpath("KeyTable"),
                  tpath("SigningTable2"));
    s = signer_from(t.data, &errs);
    errs_print(&errs);
    if (MW_TEST_ASSERT(s != NULL)) {
        MW_TEST_EQ_STR(lookup1(s, "boss@a.test", buf, sizeof buf), "ed");
        MW_TEST_EQ_STR(lookup1(s, "u@a.test", buf, sizeof buf), "rsa");
        MW_TEST_EQ_STR(lookup1(s, "u@x.a.test", buf, sizeof buf), "-");
    }
    mw_dkim_signer_destroy(&s);

    /* Table errors carry FILE:LINE. */
    mw_buf_reset(&kt);
    mw_buf_printf(&kt, "good a.test:s1:%s\nbad a.test-s1\nrel a.test:s1:relative.pem\n", key);
    write_file(tpath("KeyTable3"), kt.data, kt.len, 0644);
    mw_buf_reset(&st);
    mw_buf_printf(&st, "*@a.test good\n*@b.test unknown\n");
    write_file(tpath("SigningTable3"), st.data, st.len, 0644);
    mw_buf_reset(&t);
    mw_buf_printf(&t, "key_table = \"%s\";\nsigning_table = \"refile:%s\";\n",
                  tpath("KeyTable3"), tpath("SigningTable3"));
    s = signer_from(t.data, &errs);
    MW_TEST_ASSERT(s == NULL);
    MW_TEST_ASSERT(errs_have(&errs, "KeyTable3:2: expected \"NAME DOMAIN:SELECTOR:/path/to/key\""));
    MW_TEST_ASSERT(errs_have(&errs, "KeyTable3:3: expected a selector and an absolute key file"));
    errs_print(&errs);
    mw_config_errors_free(&errs);
    mw_buf_reset(&kt);
    mw_buf_printf(&kt, "good a.test:s1:%s\n", key);
    write_file(tpath("KeyTable3"), kt.data, kt.len, 0644);
    s = signer_from(t.data, &errs);
    MW_TEST_ASSERT(s == NULL);
    MW_TEST_ASSERT(errs_have(&errs, "SigningTable3:2: signing table: unknown key \"unknown\""));
    mw_config_errors_free(&errs);
    mw_buf_free(&kt);
    mw_buf_free(&st);
out:
    mw_dkim_signer_destroy(&s);
    mw_config_errors_free(&errs);
    mw_buf_free(&t);
}

/* OpenDKIM's '%' (the sender's domain) in KeyTable and SigningTable files. */
static void test_signing_table_percent(void)
{
    mw_config_errors errs = {0};
    mw_buf t = MW_BUF_INIT, kt = MW_BUF_INIT, st = MW_BUF_INIT;
    char buf[200], why[200], dir[256], link[300];
    size_t k[4];

    snprintf(dir, sizeof dir, "%s", tpath("pctkeys"));
    mkdir(dir, 0700);
    snprintf(link, sizeof link, "%s/a.test.pem", dir);
    unlink(link);
    MW_TEST_ASSERT(symlink(tpath("rsa.pem"), link) == 0);
    snprintf(link, sizeof link, "%s/b.test.pem", dir);
    unlink(link);
    MW_TEST_ASSERT(symlink(tpath("ed.pem"), link) == 0);
    snprintf(link, sizeof link, "%s/r.test.pem", dir);
    unlink(link);
    MW_TEST_ASSERT(symlink(tpath("rsa.pem"), link) == 0);
    mw_buf_printf(&kt, "any     %%:s1:%s\n"             /* d= the sender's domain, one key */
                  "perdom  %%:s2:%s/%%.pem\n"           /* d= and key file per domain */
                  "fixed   b.test:s3:%s/%%.pem\n"       /* fixed d=, key file per domain */
                  "q.test  q.test:s4:%s\n"              /* named after its domain */
                  "r.test  %%:s5:%s/%%.pem\n",          /* ... with a key file per domain */
                  tpath("rsa.pem"), dir, dir, tpath("rsa.pem"), dir);
    write_file(tpath("KeyTableP"), kt.data, kt.len, 0644);
    mw_buf_printf(&st, "*@a.test perdom\n"
                  "*@b.test perdom\n"
                  "boss@b.test fixed\n"
                  "*@x.test any\n"
                  "*@*.y.test any\n"
                  "*@q.test %%\n"
                  "* %%\n");
    write_file(tpath("SigningTableP"), st.data, st.len, 0644);
    mw_buf_printf(&t, "key_table = \"%s\";\nsigning_table = \"refile:%s\";\n",
                  tpath("KeyTableP"), tpath("SigningTableP"));
    mw_dkim_signer *s = signer_from(t.data, &errs);
    errs_print(&errs);
    if (!MW_TEST_ASSERT(s != NULL))
        goto out;
    MW_TEST_EQ_STR(lookup1(s, "u@a.test", buf, sizeof buf), "perdom/a.test");
    MW_TEST_EQ_STR(lookup1(s, "u@B.test", buf, sizeof buf), "perdom/b.test");
    MW_TEST_EQ_STR(lookup1(s, "u@x.test", buf, sizeof buf), "any");
    MW_TEST_EQ_STR(lookup1(s, "u@m.y.test", buf, sizeof buf), "any");
    MW_TEST_EQ_STR(lookup1(s, "u@q.test", buf, sizeof buf), "q.test");
    MW_TEST_EQ_STR(lookup1(s, "u@r.test", buf, sizeof buf), "r.test/r.test");   /* by "* %" */
    /* "* %" resolves the key name at lookup: q.test's key, no key for z.test */
    MW_TEST_EQ_INT(mw_dkim_signer_lookup(s, "u@z.test", k, 4, why, sizeof why), 0);
    MW_TEST_ASSERT(strstr(why, "no key is named z.test") != NULL);
    mw_dkim_key_info ki;
    size_t n = mw_dkim_signer_lookup(s, "u@b.test", k, 4, why, sizeof why);
    if (MW_TEST_EQ_INT(n, 1) && MW_TEST_ASSERT(mw_dkim_signer_key(s, k[0], &ki))) {
        MW_TEST_EQ_STR(ki.domain, "b.test");             /* % resolved */
        MW_TEST_EQ_STR(ki.algorithm, "ed25519-sha256");  /* b.test.pem is the Ed25519 key */
        MW_TEST_EQ_STR(ki.selector, "s2");
    }
    /* a "%" domain signs with d= the sender's domain, per message */
    static const char msg[] = "From: u@x.test\nSubject: hi\n\nbody\n";
    outcome o;
    n = mw_dkim_signer_lookup(s, "u@x.test", k, 4, why, sizeof why);
    const char *doms[] = {"x.test", "other.test"};
    for (size_t i = 0; i < 2; i++) {
        run_sign_domain = doms[i];
        run(NULL, s, k, n, msg, 0, &o);
        char want[64];
        snprintf(want, sizeof want, "d=%s;", doms[i]);
        if (MW_TEST_EQ_INT(o.nsigs, 1))
            MW_TEST_ASSERT(strstr(o.sigs[0], want) != NULL && strstr(o.sigs[0], "s=s1;") != NULL);
        outcome_clear(&o);
    }
    run_sign_domain = NULL;   /* no sender domain: a "%" key does not sign */
    run(NULL, s, k, n, msg, 0, &o);
    MW_TEST_EQ_INT(o.nsigs, 0);
    outcome_clear(&o);
    mw_dkim_signer_destroy(&s);

    /* '%' in a key path with a wildcard pattern, a missing per-domain file,
     * and "%" naming a key that does not exist are FILE:LINE errors. */
    mw_buf_reset(&st);
    mw_buf_printf(&st, "*@*.w.test perdom\n*@nofile.test perdom\n*@c.test %%\n");
    write_file(tpath("SigningTableP"), st.data, st.len, 0644);
    s = signer_from(t.data, &errs);
    MW_TEST_ASSERT(s == NULL);
    MW_TEST_ASSERT(errs_have(&errs, "SigningTableP:1: signing table: key \"perdom\" has a '%' in its key file path"));
    MW_TEST_ASSERT(errs_have(&errs, "SigningTableP:2: key \"perdom/nofile.test\": cannot open key file"));
    MW_TEST_ASSERT(errs_have(&errs, "SigningTableP:3: signing table: unknown key \"c.test\""));
    errs_print(&errs);
out:
    mw_dkim_signer_destroy(&s);
    mw_config_errors_free(&errs);
    mw_buf_free(&t);
    mw_buf_free(&kt);
    mw_buf_free(&st);
}

/* --sign DOMAIN:SELECTOR:KEYFILE through the config overrides. */
static void test_sign_override(void)
{
    mw_config_errors errs = {0};
    char spec[600], bad1[] = "example.com:sel", bad2[] = "exa mple.com:sel:/k", bad3[] = "ex.com:s$l:/k";
    snprintf(spec, sizeof spec, "Sign.Test:rsa:%s", tpath("rsa.pem"));
    const char *specs[] = {spec};
    mw_config_overrides ov = {.sign = specs, .nsign = 1};
    mw_config *cfg = mw_config_load(NULL, &ov, &errs);
    char buf[200];

    errs_print(&errs);
    if (MW_TEST_ASSERT(cfg != NULL)) {
        MW_TEST_EQ_INT(cfg->ndkim_keys, 1);
        MW_TEST_EQ_INT(cfg->ndkim_rules, 2);
        mw_dkim_signer *s = mw_dkim_signer_create(cfg, &errs);
        errs_print(&errs);
        if (MW_TEST_ASSERT(s != NULL)) {
            MW_TEST_EQ_STR(lookup1(s, "u@sign.test", buf, sizeof buf), "rsa._domainkey.sign.test");
            MW_TEST_EQ_STR(lookup1(s, "u@a.sign.test", buf, sizeof buf), "rsa._domainkey.sign.test");
            MW_TEST_EQ_STR(lookup1(s, "u@xsign.test", buf, sizeof buf), "-");
        }
        mw_dkim_signer_destroy(&s);
    }
    mw_config_free(&cfg);
    const char *bads[] = {bad1, bad2, bad3};
    ov = (mw_config_overrides){.sign = bads, .nsign = 3};
    cfg = mw_config_load(NULL, &ov, &errs);
    MW_TEST_ASSERT(cfg == NULL);
    MW_TEST_ASSERT(errs_have(&errs, "command line: --sign \"example.com:sel\": expected DOMAIN:SELECTOR:KEYFILE"));
    MW_TEST_ASSERT(errs_have(&errs, "domain \"exa mple.com\""));
    MW_TEST_ASSERT(errs_have(&errs, "selector \"s$l\""));
    errs_print(&errs);
    mw_config_errors_free(&errs);
}

/* Shared verifier and signer used from several threads at once (TSan). */
struct thr_arg {
    mw_dkim_verifier *v;
    int               ok;
};

static void *thr_main(void *p)
{
    struct thr_arg *a = p;
    size_t keys[2] = {key_index(main_signer, "rsa"), key_index(main_signer, "ed")};

    for (int i = 0; i < 10; i++) {
        outcome o, o2;
        run(NULL, main_signer, keys, 2, MSG, 64, &o);
        if (o.nsigs == 2) {
            char *sm = with_sigs(o.sigs, o.nsigs, MSG);
            run(a->v, NULL, NULL, 0, sm, 64, &o2);
            a->ok += o2.res.nsig == 2 && o2.res.sig[0].result == MW_DKIM_PASS &&
                     o2.res.sig[1].result == MW_DKIM_PASS;
            outcome_clear(&o2);
            free(sm);
        }
        outcome_clear(&o);
    }
    return NULL;
}

static void test_threads(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    pthread_t t[4];
    struct thr_arg a[4];

    if (!MW_TEST_ASSERT(v != NULL))
        return;
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr_arg){.v = v};
        pthread_create(&t[i], NULL, thr_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        MW_TEST_EQ_INT(a[i].ok, 10);
    }
    mw_dkim_verifier_destroy(&v);
}

/* ---- conformance vectors ------------------------------------------------------------- */

/* stalwart format: "name record" lines, blank line, message (LF). */
static char *stalwart_load(const char *file, bool publish)
{
    char *d = slurp(file, NULL);
    char *p = d, *msg;

    if (d == NULL)
        return NULL;
    while (*p != '\0' && *p != '\n') {
        char *eol = strchr(p, '\n');
        *eol = '\0';
        char *sp = strchr(p, ' ');
        if (sp != NULL && publish) {
            *sp = '\0';
            zone_txt(p, sp + 1);
        }
        p = eol + 1;
    }
    msg = mw_strdup(*p == '\n' ? p + 1 : p);
    free(d);
    return msg;
}

static void test_vectors(void)
{
    char path[1200];
    outcome o;

    if (shared[0] == '\0') {
        fprintf(stderr, "  SKIP: conformance vectors not found (MW_SOURCE_DIR/../shared/conformance)\n");
        return;
    }
    /* 005 has x=1667930064: "now" fixed at 1667843664 (notes §2). */
    mw_dkim_verifier *v = verifier(1024, 0, 1667843664);
    if (!MW_TEST_ASSERT(v != NULL))
        return;
    for (int i = 1; i <= 6; i++) {
        snprintf(path, sizeof path, "%s/stalwart-mail-auth/dkim/%03d.txt", shared, i);
        char *msg = stalwart_load(path, false);
        if (!MW_TEST_ASSERT(msg != NULL))
            continue;
        run(v, NULL, NULL, 0, msg, 0, &o);
        /* 002 publishes a bare PKCS#1 RSAPublicKey in p= (not the usual
         * SubjectPublicKeyInfo); dkimpy accepts it, libopendkim does not. */
        if (i == 2) {
            if (MW_TEST_EQ_INT(o.res.nsig, 1))
                MW_TEST_EQ_INT(o.res.sig[0].result, MW_DKIM_PERMERROR);
            fprintf(stderr, "  stalwart 002: known libopendkim limitation (PKCS#1 p=): %s\n",
                    o.res.nsig > 0 ? o.res.sig[0].reason : "-");
        } else if (MW_TEST_ASSERT(o.res.nsig >= 1)) {
            for (size_t j = 0; j < o.res.nsig; j++) {
                if (!MW_TEST_EQ_INT(o.res.sig[j].result, MW_DKIM_PASS))
                    fprintf(stderr, "  stalwart %03d sig %zu (%s/%s): %s: %s\n", i, j,
                            o.res.sig[j].domain, o.res.sig[j].selector,
                            mw_dkim_result_name(o.res.sig[j].result), o.res.sig[j].reason);
            }
        }
        outcome_clear(&o);
        free(msg);
    }
    mw_dkim_verifier_destroy(&v);

    /* Without the fixed time, 005 is expired: policy. */
    v = verifier(1024, 0, 0);
    snprintf(path, sizeof path, "%s/stalwart-mail-auth/dkim/005.txt", shared);
    char *msg = stalwart_load(path, false);
    if (msg != NULL) {
        run(v, NULL, NULL, 0, msg, 0, &o);
        if (MW_TEST_EQ_INT(o.res.nsig, 1)) {
            MW_TEST_EQ_INT(o.res.sig[0].result, MW_DKIM_POLICY);
            MW_TEST_EQ_STR(o.res.sig[0].reason, "signature expired (x=)");
        }
        outcome_clear(&o);
        free(msg);
    }

    /* dkimpy: RFC 8463 draft example (both algorithms) and Exim's Ed25519. */
    const char *dk[] = {"rfc6376.signed.msg", "ed25519test2.msg"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/dkimpy/%s", shared, dk[i]);
        msg = slurp(path, NULL);
        if (!MW_TEST_ASSERT(msg != NULL))
            continue;
        run(v, NULL, NULL, 0, msg, 0, &o);
        if (MW_TEST_ASSERT(o.res.nsig >= 1))
            for (size_t j = 0; j < o.res.nsig; j++)
                if (!MW_TEST_EQ_INT(o.res.sig[j].result, MW_DKIM_PASS))
                    fprintf(stderr, "  %s sig %zu: %s\n", dk[i], j, o.res.sig[j].reason);
        outcome_clear(&o);
        free(msg);
    }

    /* Sign dkimpy's messages with the vector keys, verify with the vector records. */
    mw_buf t = MW_BUF_INIT;
    mw_config_errors errs = {0};
    mw_buf_printf(&t, "keys = (\n"
                  " { name = \"ed\"; domain = \"example.com\"; selector = \"ed25519test\"; file = \"%s\"; },\n"
                  " { name = \"brisbane\"; domain = \"football.example.com\"; selector = \"brisbane\"; file = \"%s\"; },\n"
                  " { name = \"test\"; domain = \"football.example.com\"; selector = \"test\"; file = \"%s\"; }\n"
                  ");\n", tpath("edtest.pem"), tpath("rfc8032.pem"), tpath("test.private"));
    mw_dkim_signer *s = signer_from(t.data, &errs);
    errs_print(&errs);
    if (MW_TEST_ASSERT(s != NULL)) {
        const char *msgs[] = {"ed25519test.msg", "test.message", "rfc6376.msg"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/dkimpy/%s", shared, msgs[i]);
            msg = slurp(path, NULL);
            if (!MW_TEST_ASSERT(msg != NULL))
                continue;
            size_t keys[3] = {0, 1, 2};
            run(NULL, s, keys, 3, msg, 5, &o);
            if (MW_TEST_EQ_INT(o.nsigs, 3)) {
                char *sm = with_sigs(o.sigs, o.nsigs, msg);
                outcome o2;
                run(v, NULL, NULL, 0, sm, 0, &o2);
                if (MW_TEST_EQ_INT(o2.res.nsig, 3))
                    for (size_t j = 0; j < 3; j++)
                        if (!MW_TEST_EQ_INT(o2.res.sig[j].result, MW_DKIM_PASS))
                            fprintf(stderr, "  signed %s sig %zu: %s\n", msgs[i], j,
                                    o2.res.sig[j].reason);
                outcome_clear(&o2);
                free(sm);
            }
            outcome_clear(&o);
            free(msg);
        }
    }
    mw_dkim_signer_destroy(&s);
    mw_config_errors_free(&errs);
    mw_buf_free(&t);
    mw_dkim_verifier_destroy(&v);
}

/* Publish the vectors' records (before the server starts). */
static void vectors_publish(void)
{
    char path[1200];
    const char *src = getenv("MW_SOURCE_DIR");
    struct stat st;

    snprintf(shared, sizeof shared, "%s/../shared/conformance", src != NULL ? src : ".");
    if (stat(shared, &st) != 0 || !S_ISDIR(st.st_mode)) {
        shared[0] = '\0';
        return;
    }
    for (int i = 1; i <= 6; i++) {
        snprintf(path, sizeof path, "%s/stalwart-mail-auth/dkim/%03d.txt", shared, i);
        free(stalwart_load(path, true));
    }
    snprintf(path, sizeof path, "%s/dkimpy/eximtest.dns", shared);
    char *rec = slurp(path, NULL);
    if (rec != NULL) {
        rec[strcspn(rec, "\r\n")] = '\0';
        zone_txt("sed._domainkey.test.ex", rec);
        free(rec);
    }
    snprintf(path, sizeof path, "%s/dkimpy/ed25519test.dns", shared);
    rec = slurp(path, NULL);
    if (rec != NULL) {
        rec[strcspn(rec, "\r\n")] = '\0';
        zone_txt("ed25519test._domainkey.example.com", rec);
        free(rec);
    }
    snprintf(path, sizeof path, "%s/dkimpy/ed25519test.key", shared);
    seed_to_pem(path, "edtest.pem");
    snprintf(path, sizeof path, "%s/dkimpy/rfc8032_7_1.key", shared);
    seed_to_pem(path, "rfc8032.pem");
    snprintf(path, sizeof path, "%s/dkimpy/test.private", shared);
    copy_private(path, "test.private");
}

/* ---- our signer: canonicalization vectors and signing cases ------------------------------ */

/* Body canonicalization of in (fed in chunks of chunk bytes) hashes exactly want. */
static bool body_is(mw_dkim_canon canon, const char *in, size_t chunk, const char *want)
{
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    mw_dkim_bodycanon c;
    unsigned char got[MW_DKIM_SHA256_LEN], exp[MW_DKIM_SHA256_LEN];
    unsigned int n = 0;
    size_t len = strlen(in);
    bool ok = md != NULL && mw_dkim_bodycanon_init(&c, md, canon);

    for (size_t off = 0; ok && off < len; off += chunk)
        mw_dkim_bodycanon_update(&c, (const unsigned char *)in + off, len - off < chunk ? len - off : chunk);
    ok = ok && mw_dkim_bodycanon_final(&c, got);
    ok = ok && EVP_Digest(want, strlen(want), exp, &n, md, NULL) == 1 && memcmp(got, exp, sizeof got) == 0;
    EVP_MD_free(md);
    if (!ok)
        fprintf(stderr, "  body %s canon of \"%s\" (chunk %zu) is not \"%s\"\n",
                canon == MW_DKIM_CANON_SIMPLE ? "simple" : "relaxed", in, chunk, want);
    return ok;
}

static void test_canon_vectors(void)
{
    static const struct {
        mw_dkim_canon canon;
        const char   *in, *want;
    } v[] = {
        /* RFC 6376 §3.4.5 */
        {MW_DKIM_CANON_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n"},
        {MW_DKIM_CANON_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"},
        /* empty bodies: simple is one CRLF, relaxed nothing (§3.4.3, §3.4.4) */
        {MW_DKIM_CANON_SIMPLE, "", "\r\n"},
        {MW_DKIM_CANON_SIMPLE, "\r\n\r\n\r\n", "\r\n"},
        {MW_DKIM_CANON_RELAXED, "", ""},
        {MW_DKIM_CANON_RELAXED, "\r\n \t\r\n\t\r\n", ""},
        /* no CRLF at the end: one is added */
        {MW_DKIM_CANON_SIMPLE, "a\r\nb", "a\r\nb\r\n"},
        {MW_DKIM_CANON_RELAXED, "a\r\nb", "a\r\nb\r\n"},
        {MW_DKIM_CANON_RELAXED, "a  b \t", "a b \r\n"},
        /* LF line ends (the check tool), mixed with CRLF */
        {MW_DKIM_CANON_SIMPLE, "a\n\nb \n\r\n\n", "a\r\n\r\nb \r\n"},
        {MW_DKIM_CANON_RELAXED, "a\n \n\nb \r\n \n", "a\r\n\r\n\r\nb\r\n"},
        /* empty lines inside the body are kept; leading blanks become one SP */
        {MW_DKIM_CANON_RELAXED, "\r\n\r\n  x\r\n", "\r\n\r\n x\r\n"},
        {MW_DKIM_CANON_SIMPLE, "\r\n\r\n  x\r\n", "\r\n\r\n  x\r\n"},
        /* a CR not before LF is data */
        {MW_DKIM_CANON_SIMPLE, "a\rb\r\n", "a\rb\r\n"},
        {MW_DKIM_CANON_RELAXED, "a \rb\r\n", "a \rb\r\n"},
    };
    const size_t chunks[] = {1, 2, 3, 5, 4096};

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        for (size_t j = 0; j < sizeof chunks / sizeof chunks[0]; j++)
            MW_TEST_ASSERT(body_is(v[i].canon, v[i].in, chunks[j], v[i].want));

    /* Longer than the 4 KiB output buffer, blank runs across chunk ends. */
    mw_buf in = MW_BUF_INIT, want = MW_BUF_INIT;
    for (int i = 0; i < 3000; i++) {
        mw_buf_printf(&in, "line %d  \t with   blanks \t\n\n", i);
        mw_buf_printf(&want, "line %d with blanks\r\n\r\n", i);
    }
    mw_buf_puts(&in, "\n\n");
    want.len -= 2;                 /* the last empty line is trailing */
    want.data[want.len] = '\0';
    MW_TEST_ASSERT(body_is(MW_DKIM_CANON_RELAXED, in.data, 7, want.data));
    MW_TEST_ASSERT(body_is(MW_DKIM_CANON_RELAXED, in.data, 4096, want.data));
    mw_buf_free(&in);
    mw_buf_free(&want);

    /* Runs of plain bytes longer than the output buffer (copied in bulk and
     * hashed in pieces), in both canonicalizations and several chunkings. */
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 9000 + i * 1000; k++)
            mw_buf_putc(&in, (char)('a' + (k * 7 + i) % 26));
        mw_buf_puts(&in, i == 1 ? " \t\r\n" : "\r\n");
    }
    mw_buf_puts(&want, in.data);
    for (size_t j = 0; j < want.len; j++)      /* relaxed drops the blanks before the line end */
        if (want.data[j] == ' ') {
            memmove(want.data + j, want.data + j + 2, want.len - j - 1);
            want.len -= 2;
            break;
        }
    const size_t big_chunks[] = {1, 7, 4095, 4096, 4097, 65535};
    for (size_t j = 0; j < sizeof big_chunks / sizeof big_chunks[0]; j++) {
        MW_TEST_ASSERT(body_is(MW_DKIM_CANON_SIMPLE, in.data, big_chunks[j], in.data));
        MW_TEST_ASSERT(body_is(MW_DKIM_CANON_RELAXED, in.data, big_chunks[j], want.data));
    }
    mw_buf_free(&in);
    mw_buf_free(&want);

    /* Headers (RFC 6376 §3.4.5; values as the milter gives them). */
    mw_buf h = MW_BUF_INIT;
#define HC(canon, n, val, crlf) mw_dkim_hcanon(&h, canon, n, strlen(n), val, strlen(val), crlf)
    HC(MW_DKIM_CANON_RELAXED, "A", " X", true);
    HC(MW_DKIM_CANON_RELAXED, "B ", " Y\t\r\n\tZ  ", true);
    MW_TEST_EQ_STR(mw_buf_cstr(&h), "a:X\r\nb:Y Z\r\n");
    mw_buf_reset(&h);
    HC(MW_DKIM_CANON_RELAXED, "SUBJECT", "\t a \n\t  b\t", false);
    MW_TEST_EQ_STR(mw_buf_cstr(&h), "subject:a b");
    mw_buf_reset(&h);
    HC(MW_DKIM_CANON_SIMPLE, "B ", " Y\t\n\tZ  ", true);
    HC(MW_DKIM_CANON_SIMPLE, "From", "joe@x.test", true);
#undef HC
    MW_TEST_EQ_STR(mw_buf_cstr(&h), "B : Y\t\r\n\tZ  \r\nFrom:joe@x.test\r\n");
    mw_buf_free(&h);
}

/* The value of tag t= in a DKIM-Signature value, blanks removed ("" if absent). */
static void sig_tag(const char *sig, const char *t, mw_buf *out)
{
    size_t tl = strlen(t);
    const char *p = sig;

    mw_buf_reset(out);
    mw_buf_puts(out, "");
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ';')
            p++;
        if (strncmp(p, t, tl) == 0 && p[tl] == '=') {
            for (p += tl + 1; *p != '\0' && *p != ';'; p++)
                if (*p != ' ' && *p != '\t' && *p != '\n')
                    mw_buf_putc(out, *p);
            return;
        }
        p = strchr(p, ';');
    }
}

/* Emitted form: "DKIM-Signature: " + value, every line <= 78, folded "\n\t" only. */
static bool sig_well_formed(const char *sig)
{
    size_t col = strlen("DKIM-Signature: ");
    for (const char *p = sig; *p != '\0'; p++) {
        if (*p == '\r')
            return false;
        if (*p == '\n') {
            if (p[1] != '\t' || col > 78)
                return false;
            col = 0;
            continue;
        }
        col++;
    }
    return col <= 78;
}

/* Sign msg with keys of s, verify with v; both results must be pass. */
static void sign_verify(mw_dkim_verifier *v, const mw_dkim_signer *s, const char *what,
                        const char *msg, size_t chunk, outcome *o)
{
    size_t keys[2] = {key_index(s, "rsa"), key_index(s, "ed")};
    outcome o2;

    run(NULL, s, keys, 2, msg, chunk, o);
    if (!MW_TEST_EQ_INT(o->nsigs, 2)) {
        fprintf(stderr, "  %s: not signed\n", what);
        return;
    }
    for (size_t i = 0; i < 2; i++) {
        if (!MW_TEST_ASSERT(sig_well_formed(o->sigs[i])))
            fprintf(stderr, "  %s: badly folded:\n%s\n", what, o->sigs[i]);
        MW_TEST_ASSERT(strstr(o->sigs[i], "i=") == NULL);
        MW_TEST_ASSERT(strncmp(o->sigs[i], "v=1; a=", 7) == 0);
    }
    char *sm = with_sigs(o->sigs, o->nsigs, msg);
    run(v, NULL, NULL, 0, sm, 0, &o2);
    if (MW_TEST_EQ_INT(o2.res.nsig, 2))
        for (size_t i = 0; i < 2; i++)
            if (!MW_TEST_EQ_INT(o2.res.sig[i].result, MW_DKIM_PASS))
                fprintf(stderr, "  %s: sig %zu: %s\n%s\n", what, i,
                        o2.res.sig[i].reason ? o2.res.sig[i].reason : "", o->sigs[i]);
    outcome_clear(&o2);
    free(sm);
}

static char *crlf_copy(const char *lf)
{
    mw_buf b = MW_BUF_INIT;
    for (const char *p = lf; *p != '\0'; p++) {
        if (*p == '\n')
            mw_buf_putc(&b, '\r');
        mw_buf_putc(&b, *p);
    }
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

static void test_sign_cases(void)
{
    static const char *const canons[] = {"relaxed/relaxed", "simple/simple", "simple/relaxed",
                                         "relaxed/simple"};
    static const char REPEATED[] =
        "Received: from a\n"
        "To: first@example.net\n"
        "From: Alice <alice@sign.test>\n"
        "Subject: one\n"
        "To: second@example.net,\n"
        "\tthird@example.net\n"
        "Cc:  spaced   out  \n"
        "Subject: two\n"
        "  folded\n"
        "\n"
        "body\n";
    static const char EMPTY[] = "From: alice@sign.test\nSubject: empty\n\n";
    static const char NOBODY[] = "From: alice@sign.test\nSubject: no separator\n";
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    mw_buf conf = MW_BUF_INIT, bh = MW_BUF_INIT, bh2 = MW_BUF_INIT, big = MW_BUF_INIT;
    mw_config_errors errs = {0};
    outcome o;

    if (!MW_TEST_ASSERT(v != NULL))
        return;
    /* 1 MiB body */
    mw_buf_puts(&big, "From: alice@sign.test\nSubject: big\n\n");
    while (big.len < (1u << 20))
        mw_buf_puts(&big, "0123456789 abcdefghijklmnopqrstuvwxyz  \tABCDEFGHIJKLMNOPQRSTUVWXYZ\n");
    mw_buf_puts(&big, "\n\n");

    for (size_t c = 0; c < sizeof canons / sizeof canons[0]; c++) {
        mw_buf_reset(&conf);
        mw_buf_printf(&conf, "%s canonicalization = \"%s\";\n", main_keys_conf(), canons[c]);
        mw_dkim_signer *s = signer_from(conf.data, &errs);
        errs_print(&errs);
        mw_config_errors_free(&errs);
        if (!MW_TEST_ASSERT(s != NULL))
            continue;
        char what[128];

        /* LF input and CRLF input sign alike; any chunking gives one body hash. */
        char *crlf = crlf_copy(REPEATED);
        snprintf(what, sizeof what, "%s repeated/folded LF", canons[c]);
        sign_verify(v, s, what, REPEATED, 3, &o);
        if (o.nsigs == 2) {
            sig_tag(o.sigs[0], "bh", &bh2);
            sig_tag(o.sigs[1], "bh", &bh);
            MW_TEST_EQ_STR(bh.data, bh2.data);   /* one body hash for both keys */
            /* h=: From, Subject, To oversigned: once more than present */
            sig_tag(o.sigs[0], "h", &bh);
            MW_TEST_EQ_STR(bh.data, "From:From:Subject:Subject:Subject:To:To:To:Cc");
        }
        outcome_clear(&o);
        for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
            snprintf(what, sizeof what, "%s repeated/folded CRLF chunk %zu", canons[c], chunk);
            sign_verify(v, s, what, crlf, chunk, &o);
            if (o.nsigs == 2) {
                sig_tag(o.sigs[0], "bh", &bh);
                MW_TEST_EQ_STR(bh.data, bh2.data);
            }
            outcome_clear(&o);
        }
        free(crlf);

        snprintf(what, sizeof what, "%s empty body", canons[c]);
        sign_verify(v, s, what, EMPTY, 0, &o);
        if (o.nsigs == 2) {
            sig_tag(o.sigs[0], "bh", &bh);
            /* SHA-256 of "\r\n" (simple) and of "" (relaxed) */
            MW_TEST_EQ_STR(bh.data, strstr(canons[c], "/simple") != NULL
                                        ? "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
                                        : "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        }
        outcome_clear(&o);
        snprintf(what, sizeof what, "%s headers only", canons[c]);
        sign_verify(v, s, what, NOBODY, 0, &o);
        outcome_clear(&o);

        snprintf(what, sizeof what, "%s 1 MiB", canons[c]);
        sign_verify(v, s, what, big.data, 65536, &o);
        outcome_clear(&o);

        /* Body without final line end: hashed as with one (libopendkim
         * verifies simple bodies only without its FixCRLF). */
        size_t keys[2] = {key_index(s, "rsa"), key_index(s, "ed")};
        run(NULL, s, keys, 2, "From: alice@sign.test\n\nlast line", 0, &o);
        if (MW_TEST_EQ_INT(o.nsigs, 2))
            sig_tag(o.sigs[0], "bh", &bh);
        outcome_clear(&o);
        run(NULL, s, keys, 2, "From: alice@sign.test\n\nlast line\n", 0, &o);
        if (MW_TEST_EQ_INT(o.nsigs, 2)) {
            sig_tag(o.sigs[0], "bh", &bh2);
            MW_TEST_EQ_STR(bh.data, bh2.data);
        }
        outcome_clear(&o);
        if (strstr(canons[c], "/simple") != NULL) {
            snprintf(what, sizeof what, "%s no final CRLF", canons[c]);
            sign_verify(v, s, what, "From: alice@sign.test\nSubject: x\n\nlast line", 0, &o);
            outcome_clear(&o);
        }

        /* No From: nothing signed. */
        run(NULL, s, keys, 2, "Subject: no from\n\nbody\n", 0, &o);
        MW_TEST_EQ_INT(o.nsigs, 0);
        outcome_clear(&o);
        mw_dkim_signer_destroy(&s);
    }
    mw_buf_free(&conf);
    mw_buf_free(&bh);
    mw_buf_free(&bh2);
    mw_buf_free(&big);
    mw_dkim_verifier_destroy(&v);
}

/* ---- the parsed-key cache (dkim_keycache.c) under libopendkim ------------------------- */

/* kc1, kc2: keys used by no other test.  kcoid: kc1's key with an unknown
 * algorithm OID (a well-formed DER SEQUENCE libcrypto refuses); kcshort:
 * kc1's key cut short (its SEQUENCE length runs past the data). */
static void keycache_keys(void)
{
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT, rec = MW_BUF_INIT;
    unsigned char der[4096], b64[6000];
    char err[256];
    int n;

    make_key("kc2", "rsa", 2048, "kc2", "sign.test");
    if (!mw_dkim_keygen("rsa", 2048, &pem, &p, err, sizeof err)) {
        fprintf(stderr, "keygen kc1: %s\n", err);
        exit(2);
    }
    write_file(tpath("kc1.pem"), pem.data, pem.len, 0600);
    mw_buf_printf(&rec, "v=DKIM1; k=rsa; p=%s", p.data);
    zone_txt("kc1._domainkey.sign.test", rec.data);
    n = EVP_DecodeBlock(der, (const unsigned char *)p.data, (int)p.len);
    for (size_t i = p.len; i > 0 && p.data[i - 1] == '='; i--)
        n--;
    der[16] ^= 0x7e;                         /* rsaEncryption 1.2.840.113549.1.1.1 -> .1.1.127 */
    EVP_EncodeBlock(b64, der, n);
    mw_buf_reset(&rec);
    mw_buf_printf(&rec, "v=DKIM1; k=rsa; p=%s", b64);
    zone_txt("kcoid._domainkey.sign.test", rec.data);
    der[16] ^= 0x7e;
    EVP_EncodeBlock(b64, der, n - 12);
    mw_buf_reset(&rec);
    mw_buf_printf(&rec, "v=DKIM1; k=rsa; p=%s", b64);
    zone_txt("kcshort._domainkey.sign.test", rec.data);
    mw_buf_free(&pem);
    mw_buf_free(&p);
    mw_buf_free(&rec);
}

/* MSG (or body-tampered) signed with KEYNAME, as the verifier receives it. */
static char *signed_with(const char *keyname, const char *msg)
{
    size_t k = key_index(main_signer, keyname);
    outcome o;
    char *sm = NULL;

    run(NULL, main_signer, &k, 1, msg, 0, &o);
    if (MW_TEST_EQ_INT(o.nsigs, 1))
        sm = with_sigs(o.sigs, o.nsigs, msg);
    outcome_clear(&o);
    return sm;
}

static mw_dkim_result verify1(mw_dkim_verifier *v, const char *sm, char **reason)
{
    outcome o;
    mw_dkim_result r = MW_DKIM_NONE;

    run(v, NULL, NULL, 0, sm, 0, &o);
    if (o.res.nsig == 1) {
        r = o.res.sig[0].result;
        if (reason != NULL)
            *reason = o.res.sig[0].reason != NULL ? mw_strdup(o.res.sig[0].reason) : NULL;
    }
    outcome_clear(&o);
    return r;
}

static mw_dkim_keycache_stats kc_now(void)
{
    mw_dkim_keycache_stats s;
    mw_dkim_keycache_get_stats(&s);
    return s;
}

static void test_keycache(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    char *m1 = signed_with("kc1", MSG), *m2 = signed_with("kc2", MSG);
    char *med = signed_with("ed", MSG);
    const int N = 20;
    int pass = 0;

    if (!MW_TEST_ASSERT(v != NULL && m1 != NULL && m2 != NULL && med != NULL))
        goto out;
    mw_dkim_keycache_stats s0 = kc_now(), s;
    MW_TEST_ASSERT(s0.enabled && s0.interposed);
    /* the same key N times: parsed once */
    for (int i = 0; i < N; i++)
        pass += verify1(v, m1, NULL) == MW_DKIM_PASS;
    MW_TEST_EQ_INT(pass, N);
    s = kc_now();
    MW_TEST_EQ_INT(s.misses - s0.misses, 1);
    MW_TEST_EQ_INT(s.hits - s0.hits, N - 1);
    /* another key: a second miss, then hits */
    MW_TEST_EQ_INT(verify1(v, m2, NULL), MW_DKIM_PASS);
    MW_TEST_EQ_INT(verify1(v, m2, NULL), MW_DKIM_PASS);
    s = kc_now();
    MW_TEST_EQ_INT(s.misses - s0.misses, 2);
    MW_TEST_EQ_INT(s.hits - s0.hits, N);
    /* Ed25519 keys do not go through d2i_PUBKEY_bio */
    MW_TEST_EQ_INT(verify1(v, med, NULL), MW_DKIM_PASS);
    s = kc_now();
    MW_TEST_EQ_INT(s.misses + s.hits - s0.misses - s0.hits, N + 2);

    /* a cached key does not make a tampered message pass */
    char *t = mw_strdup(m1);
    char *lunch = strstr(t, "lunch at");
    if (MW_TEST_ASSERT(lunch != NULL))
        lunch[0] = 'L';
    char *why = NULL;
    MW_TEST_EQ_INT(verify1(v, t, &why), MW_DKIM_FAIL);
    MW_TEST_EQ_STR(why, "body hash mismatch");
    free(why);
    char *subj = strstr(t, "Subject: lunch?");
    if (MW_TEST_ASSERT(subj != NULL)) {
        lunch[0] = 'l';
        subj[9] = 'L';
    }
    why = NULL;
    MW_TEST_EQ_INT(verify1(v, t, &why), MW_DKIM_FAIL);
    MW_TEST_EQ_STR(why, "signature did not verify");
    free(why);
    free(t);
    s = kc_now();
    MW_TEST_EQ_INT(s.misses - s0.misses, 2);
    /* and the untampered one still passes after that */
    MW_TEST_EQ_INT(verify1(v, m1, NULL), MW_DKIM_PASS);
out:
    free(m1);
    free(m2);
    free(med);
    mw_dkim_verifier_destroy(&v);
}

/* Broken key records give what they gave before the cache, every time. */
static void test_keycache_broken_keys(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    char *moid = signed_with("kcoid", MSG), *mshort = signed_with("kcshort", MSG);
    char *mbad = signed_with("badkey", MSG);
    char *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL;

    if (!MW_TEST_ASSERT(v != NULL && moid != NULL && mshort != NULL && mbad != NULL))
        goto out;
    mw_dkim_keycache_stats s0 = kc_now(), s;
    /* a SEQUENCE that is no key: a miss each time, never cached */
    MW_TEST_EQ_INT(verify1(v, moid, &r1), MW_DKIM_PERMERROR);
    MW_TEST_EQ_INT(verify1(v, moid, &r2), MW_DKIM_PERMERROR);
    s = kc_now();
    MW_TEST_EQ_INT(s.misses - s0.misses, 2);
    MW_TEST_EQ_INT(s.hits - s0.hits, 0);
    MW_TEST_EQ_INT(s.entries, s0.entries);
    /* a cut-short key: straight to libcrypto */
    MW_TEST_EQ_INT(verify1(v, mshort, &r3), MW_DKIM_PERMERROR);
    s = kc_now();
    MW_TEST_EQ_INT(s.bypassed - s0.bypassed, 1);
    MW_TEST_EQ_INT(s.misses - s0.misses, 2);
    /* p= that is not base64 never reaches the parse */
    MW_TEST_EQ_INT(verify1(v, mbad, &r4), MW_DKIM_PERMERROR);
    s = kc_now();
    MW_TEST_EQ_INT(s.bypassed - s0.bypassed + s.misses - s0.misses + s.hits - s0.hits, 3);
    /* libopendkim's own reason for a key it could not decode, as without the cache */
    MW_TEST_EQ_STR(r1, r2);
    MW_TEST_EQ_STR(r1, r3);
    MW_TEST_ASSERT(r1 != NULL && strstr(r1, "key") != NULL);
    fprintf(stderr, "  undecodable key: %s; not base64: %s\n", r1 ? r1 : "-", r4 ? r4 : "-");
out:
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    free(moid);
    free(mshort);
    free(mbad);
    mw_dkim_verifier_destroy(&v);
}

/* Header values reach the verifier with bare LF, CRLF or mixed folding, a
 * fold right after the colon, and the body split between CR and LF; all
 * verify (dkim_verify.c crlf_append makes every line end CRLF). */
static void feed_split(mw_dkim_verifier *v, const char *const *hdr, size_t nh, const char *body,
                       const char *eol, bool mixed, mw_dkim_result *r)
{
    mw_dkim_msg *m = mw_dkim_msg_begin(v, NULL, NULL, 0, "LE");
    mw_dkim_results res;

    for (size_t i = 0; i < nh; i++) {
        const char *colon = strchr(hdr[i], ':');
        char name[64];
        mw_buf val = MW_BUF_INIT;
        snprintf(name, sizeof name, "%.*s", (int)(colon - hdr[i]), hdr[i]);
        int k = 0;
        for (const char *p = colon + 1; *p != '\0'; p++) {
            if (*p == '\n')
                mw_buf_puts(&val, mixed ? (k++ % 2 ? "\r\n" : "\n") : eol);
            else
                mw_buf_putc(&val, *p);
        }
        mw_buf_puts(&val, "");
        mw_dkim_msg_header(m, name, val.data, val.len);
        mw_buf_free(&val);
    }
    mw_dkim_msg_eoh(m);
    for (const char *p = body; *p != '\0';) {   /* chunks end right after a CR */
        const char *cr = strchr(p, '\r');
        size_t n = cr != NULL ? (size_t)(cr - p) + 1 : strlen(p);
        mw_dkim_msg_body(m, (const unsigned char *)p, n);
        p += n;
    }
    mw_dkim_msg_end(m, &res, NULL, NULL);
    *r = res.nsig == 1 ? res.sig[0].result : MW_DKIM_NONE;
    mw_dkim_results_clear(&res);
    mw_dkim_msg_free(&m);
}

static void test_verify_line_ends(void)
{
    static const char FOLDED[] =
        "From: Alice <alice@sign.test>\n"
        "To: Bob <bob@example.net>,\n carol@example.net\n"
        "Subject:\n\tfolded at once\n\tand again\n"
        "Message-ID: <le@sign.test>\n"
        "\n"
        "line one\r\nline two\nline three\r\n";
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    char *sm = signed_with("kc1", FOLDED);
    const char *hdr[16];
    size_t nh = 0;
    char *copy, *body;
    mw_dkim_result r;

    if (!MW_TEST_ASSERT(v != NULL && sm != NULL))
        goto out;
    /* split the signed message into whole (unfolded-by-LF) header fields */
    copy = mw_strdup(sm);
    body = strstr(copy, "\n\n");
    *body = '\0';
    body += 2;
    for (char *p = copy; *p != '\0' && nh < 16;) {
        hdr[nh++] = p;
        char *e = p;
        while ((e = strchr(e, '\n')) != NULL && (e[1] == ' ' || e[1] == '\t'))
            e++;
        if (e == NULL)
            break;
        *e = '\0';
        p = e + 1;
    }
    MW_TEST_EQ_INT(verify1(v, sm, NULL), MW_DKIM_PASS);
    feed_split(v, hdr, nh, body, "\n", false, &r);
    MW_TEST_EQ_INT(r, MW_DKIM_PASS);
    feed_split(v, hdr, nh, body, "\r\n", false, &r);
    MW_TEST_EQ_INT(r, MW_DKIM_PASS);
    feed_split(v, hdr, nh, body, NULL, true, &r);
    MW_TEST_EQ_INT(r, MW_DKIM_PASS);
    /* a fold that changes the text still fails */
    char *bad = mw_strdup(sm);
    char *f = strstr(bad, "\tand again");
    if (MW_TEST_ASSERT(f != NULL))
        f[1] = 'A';
    MW_TEST_EQ_INT(verify1(v, bad, NULL), MW_DKIM_FAIL);
    free(bad);
    free(copy);
out:
    free(sm);
    mw_dkim_verifier_destroy(&v);
}

struct kc_thr {
    mw_dkim_verifier *v;
    const char       *m[2];
    int               ok;
};

static void *kc_thr_main(void *p)
{
    struct kc_thr *a = p;
    for (int i = 0; i < 25; i++)
        a->ok += verify1(a->v, a->m[i % 2], NULL) == MW_DKIM_PASS;
    return NULL;
}

/* Several threads verify with the same two keys from an empty cache: the
 * first parses may race (each thread may miss once per key), the cache
 * ends up with one entry per key, and every verification passes. */
static void test_keycache_threads(void)
{
    mw_dkim_verifier *v = verifier(1024, 0, 0);
    char *m1 = signed_with("kc1", MSG), *m2 = signed_with("kc2", MSG);
    pthread_t t[4];
    struct kc_thr a[4];

    if (!MW_TEST_ASSERT(v != NULL && m1 != NULL && m2 != NULL))
        goto out;
    mw_dkim_keycache_flush();
    mw_dkim_keycache_stats s0 = kc_now();
    MW_TEST_EQ_INT(s0.entries, 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (struct kc_thr){.v = v, .m = {m1, m2}};
        pthread_create(&t[i], NULL, kc_thr_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        MW_TEST_EQ_INT(a[i].ok, 25);
    }
    mw_dkim_keycache_stats s = kc_now();
    MW_TEST_EQ_INT(s.entries, 2);
    MW_TEST_EQ_INT(s.hits - s0.hits + s.misses - s0.misses, 100);
    MW_TEST_ASSERT(s.misses - s0.misses >= 2 && s.misses - s0.misses <= 8);
out:
    free(m1);
    free(m2);
    mw_dkim_verifier_destroy(&v);
}

int main(void)
{
    mw_config_errors errs = {0};
    char err[256], fwd[64];

    if (!mwt_proc_dir(&server, "dkim"))
        return 1;
    make_key("rsa", "rsa", 2048, "rsa", "sign.test");
    make_key("ed", "ed25519", 0, "ed", "sign.test");
    make_key("small", "rsa", 1024, "small", "sign.test");
    zone_txt("revoked._domainkey.sign.test", "v=DKIM1; k=rsa; p=");
    zone_special("timeout._domainkey.sign.test", "TIMEOUT");
    zone_special("servfail._domainkey.sign.test", "SERVFAIL");
    zone_txt("badkey._domainkey.sign.test", "v=DKIM1; k=rsa; p=!!!not base64!!!");
    zone_txt("other.sign.test", "x");
    keycache_keys();
    vectors_publish();
    if (!start_server()) {
        fprintf(stderr, "cannot start the test DNS server\n");
        mwt_proc_stop(&server);
        return 1;
    }
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", server.port);
    const char *fw[] = {fwd};
    /* generous: real answers must not race it (the silent key's test sets its own) */
    mw_dns_options dopt = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 10000};
    dns = mw_dns_create(&dopt, err, sizeof err);
    if (dns == NULL) {
        fprintf(stderr, "dns: %s\n", err);
        mwt_proc_stop(&server);
        return 1;
    }
    main_signer = signer_from(main_keys_conf(), &errs);
    errs_print(&errs);
    mw_config_errors_free(&errs);
    if (main_signer != NULL) {
        MW_TEST_RUN(test_sign_verify_dual);
        MW_TEST_RUN(test_simple_canon);
        MW_TEST_RUN(test_key_problems);
        MW_TEST_RUN(test_threads);
        MW_TEST_RUN(test_sign_cases);
        MW_TEST_RUN(test_keycache);
        MW_TEST_RUN(test_keycache_broken_keys);
        MW_TEST_RUN(test_keycache_threads);
        MW_TEST_RUN(test_verify_line_ends);
    } else {
        MW_TEST_ASSERT(main_signer != NULL);
    }
    MW_TEST_RUN(test_canon_vectors);
    MW_TEST_RUN(test_expiry_and_unsigned);
    MW_TEST_RUN(test_hostile);
    MW_TEST_RUN(test_key_loading);
    MW_TEST_RUN(test_signing_table);
    MW_TEST_RUN(test_signing_table_percent);
    MW_TEST_RUN(test_sign_override);
    MW_TEST_RUN(test_vectors);
    mw_dkim_signer_destroy(&main_signer);
    mw_dns_destroy(&dns);
    mwt_proc_stop(&server);
    mw_buf_free(&zone);
    return MW_TEST_SUMMARY();
}
