/*
 * fuzz_dkim_verify.c - DKIM on hostile messages (checks/dkim.h): the
 * DKIM-Signature fields handed to us (our duplicate-tag and raw-tag scans,
 * then libopendkim's tag parser), the key record that comes back from DNS
 * (turned by our lookup hook into a wire-format reply for libopendkim), our
 * header/body streaming, and our own signer's canonicalisation (dkim_canon.c)
 * of the same headers and body.
 *
 * duplicate_tag/raw_tag are static, so they are reached through
 * mw_dkim_msg_header/eoh/body/end with a real verifier whose resolver asks
 * an in-process responder (fuzz_dns.h) that answers instantly.
 *
 * Input: "<key TXT record>\n<message>"; the first line is the answer to
 * every TXT lookup (an empty first line: NXDOMAIN); the message is header
 * lines ("Name: value", continuation lines start with SP/HT), a blank
 * line, the body.  Headers are handed over the way the milter does (value
 * byte-exact after the colon, folds as "\r\n" kept).
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dkim.h"
#include "dns.h"
#include "fuzz_common.h"
#include "fuzz_dns.h"
#include "log.h"

static mw_dkim_verifier *ver;
static int dns_port;

/* A fresh resolver and verifier per input: libunbound caches even TTL-0
 * answers, and a cached key from an earlier input would make runs depend
 * on their order (and a crash input not reproduce alone). */
static mw_dns *new_verifier(void)
{
    char err[256], fwd[64];
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", dns_port);
    const char *fw[] = {fwd};
    mw_dns_options o = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 300};
    mw_dns *dns = mw_dns_create(&o, err, sizeof err);
    if (!dns) {
        fprintf(stderr, "dns: %s\n", err);
        abort();
    }
    mw_dkim_verify_options vo = {.min_key_bits = 1024, .max_signatures = 10, .timeout_ms = 300,
                                 .deadline_ms = 1000, .fixed_time = 1700000000};
    ver = mw_dkim_verifier_create(dns, &vo, err, sizeof err);
    if (!ver) {
        fprintf(stderr, "verifier: %s\n", err);
        abort();
    }
    return dns;
}
static mw_dkim_signer *signer;
static size_t nkeys;

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f || fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
    chmod(path, 0600);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "fuzz", "mail", MW_LOG_ERROR);
    dns_port = fz_dns_start();

    /* a signer with one Ed25519 and one RSA key, so our canonicaliser runs */
    static char dir[] = "/tmp/mw-fuzz-dkim-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char ed[128], rsa[128], conf[128];
    snprintf(ed, sizeof ed, "%s/ed.pem", dir);
    snprintf(rsa, sizeof rsa, "%s/rsa.pem", dir);
    snprintf(conf, sizeof conf, "%s/sign.conf", dir);
    const char *types[] = {"ed25519", "rsa"};
    const char *paths[] = {ed, rsa};
    for (int i = 0; i < 2; i++) {
        mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT;
        if (!mw_dkim_keygen(types[i], 1024, &pem, &p, err, sizeof err))
            abort();
        write_file(paths[i], pem.data, pem.len);
        mw_buf_free(&pem);
        mw_buf_free(&p);
    }
    char text[1024];
    snprintf(text, sizeof text,
             "dkim = { keys = (\n"
             " { name = \"ed\"; domain = \"example.com\"; selector = \"ed\"; file = \"%s\"; },\n"
             " { name = \"rsa\"; domain = \"example.com\"; selector = \"rsa\"; file = \"%s\"; } );\n"
             " oversign_headers = [\"From\", \"Subject\"]; };\n",
             ed, rsa);
    write_file(conf, text, strlen(text));
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(conf, NULL, &errs);
    if (cfg)
        signer = mw_dkim_signer_create(cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "signer config: %s\n", errs.msg[i]);
    if (!signer)
        abort();
    nkeys = mw_dkim_signer_nkeys(signer);
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    unlink(ed);
    unlink(rsa);
    unlink(conf);
    rmdir(dir);
    return 0;
}

typedef struct hdr {
    const uint8_t *name;
    size_t namelen;
    const uint8_t *value;   /* after the colon */
    size_t vlen;
} hdr;

static void feed_header(mw_dkim_msg *m, const hdr *h)
{
    char *name = fz_strndup(h->name, h->namelen);
    /* the milter hands values with "\n" (not CRLF) between folded lines */
    char *value = fz_exact(h->value, h->vlen);
    mw_dkim_msg_header(m, name, value, h->vlen);
    free(value);
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *l;
    size_t n = size, ll;
    if (!fz_next_line(&p, &n, &l, &ll))
        return 0;
    fz_dns_set_txt(ll ? l : NULL, ll);
    mw_dns *dns = new_verifier();

    size_t keys[2] = {0, 1};
    mw_dkim_msg *m = mw_dkim_msg_begin(ver, signer, keys, nkeys < 2 ? nkeys : 2, "fuzz");
    hdr cur = {0};
    bool have = false;
    unsigned nh = 0;
    while (n > 0) {
        const uint8_t *line;
        size_t len;
        fz_next_line(&p, &n, &line, &len);
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break;   /* end of headers */
        if ((line[0] == ' ' || line[0] == '\t') && have) {
            cur.vlen = (size_t)(line + len - cur.value);   /* continuation: extend in place */
            continue;
        }
        if (have && nh++ < 1000)
            feed_header(m, &cur);
        const uint8_t *colon = memchr(line, ':', len);
        if (!colon || colon == line) {
            have = false;
            continue;
        }
        cur.name = line;
        cur.namelen = (size_t)(colon - line);
        cur.value = colon + 1;
        cur.vlen = len - cur.namelen - 1;
        have = true;
    }
    if (have)
        feed_header(m, &cur);
    mw_dkim_msg_eoh(m);
    /* body in two chunks split in the middle (a CRLF may be cut) */
    size_t half = n / 2;
    unsigned char *b1 = (unsigned char *)fz_exact(p, half);
    unsigned char *b2 = (unsigned char *)fz_exact(p + half, n - half);
    mw_dkim_msg_body(m, b1, half);
    mw_dkim_msg_body(m, b2, n - half);
    free(b1);
    free(b2);
    mw_dkim_results res = {0};
    char **sigs = NULL;
    size_t nsigs = 0;
    mw_dkim_msg_end(m, &res, &sigs, &nsigs);
    if (getenv("MW_FUZZ_DEBUG"))
        for (size_t i = 0; i < res.nsig; i++)
            fprintf(stderr, "sig %zu: %s d=%s s=%s: %s\n", i, mw_dkim_result_name(res.sig[i].result),
                    res.sig[i].domain ? res.sig[i].domain : "-", res.sig[i].selector ? res.sig[i].selector : "-",
                    res.sig[i].reason ? res.sig[i].reason : "");
    /* documented: only the first max_signatures (10) signatures are evaluated.
     * Known bug (reported; regression input corpus/dkim_verify/crash-sig-name-trailing-space):
     * a "DKIM-Signature :" field (blank before the colon) is not counted by
     * mw_dkim_msg_header's strcasecmp but is a signature to libopendkim. */
    if (!getenv("MW_FUZZ_IGNORE_KNOWN"))
        assert(res.nsig <= 10);
    for (size_t i = 0; i < res.nsig; i++) {
        (void)mw_dkim_result_name(res.sig[i].result);
        if (res.sig[i].b_prefix)
            (void)strlen(res.sig[i].b_prefix);
    }
    for (size_t i = 0; i < nsigs; i++)
        assert(sigs[i] != NULL && strchr(sigs[i], '\r') == NULL);
    mw_dkim_sigs_free(sigs, nsigs);
    mw_dkim_results_clear(&res);
    mw_dkim_msg_free(&m);
    mw_dkim_verifier_destroy(&ver);
    mw_dns_destroy(&dns);
    return 0;
}
