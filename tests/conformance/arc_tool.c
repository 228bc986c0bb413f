/*
 * arc_tool.c - a small driver of the ARC module (filter/checks/arc.c) for
 * the conformance and interop tests (test_arc_suite.py, test_checks_arc's
 * dkimpy cases).  Not installed; built under tests/.
 *
 *   arc_tool verify DNS MSGFILE
 *   arc_tool seal   DNS MSGFILE CONFFILE KEYNAME AUTHRESFILE T
 *
 * DNS is "ADDR@PORT" of the test DNS server (key records).  MSGFILE is a
 * message with LF or CRLF line ends.  CONFFILE is a mailwarden.conf whose
 * dkim section holds the key table (KEYNAME) and dkim.sign_headers; the
 * AUTHRESFILE holds our A-R value (it becomes the AAR); T is t= (0: now).
 *
 * Output (stdout), one "key=value" per line: result, reason, instances,
 * oldest-pass, sealer, terminated; for seal also either "sealed=0" and
 * "why=...", or "sealed=1" and AAR=, AMS=, AS= with folding undone (the
 * "\n" of each fold removed) and, with the folding kept, the whole new
 * header block after a line "--- headers" (for dkimpy to verify).
 * Exit: 0 done, 2 usage or setup error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arc.h"
#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dns.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    mw_buf b = MW_BUF_INIT;
    char tmp[8192];
    size_t n;

    if (f == NULL) {
        perror(path);
        exit(2);
    }
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        mw_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

/* Feed a whole message: header fields (folding kept, line ends as LF), then the body. */
static void feed(mw_arc_msg *m, const char *msg, size_t len)
{
    size_t i = 0;
    mw_buf name = MW_BUF_INIT, value = MW_BUF_INIT;
    bool have = false;

    while (i < len) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t e = nl != NULL ? (size_t)(nl - msg) : len, le = e;
        if (le > i && msg[le - 1] == '\r')
            le--;
        if (le == i) {                 /* the empty line */
            i = e + 1;
            break;
        }
        if (msg[i] == ' ' || msg[i] == '\t') {
            mw_buf_putc(&value, '\n');
            mw_buf_append(&value, msg + i, le - i);
        } else {
            if (have)
                mw_arc_msg_header(m, name.data, value.data != NULL ? value.data : "", value.len);
            const char *colon = memchr(msg + i, ':', le - i);
            size_t nlen = colon != NULL ? (size_t)(colon - (msg + i)) : le - i;
            mw_buf_reset(&name);
            mw_buf_append(&name, msg + i, nlen);
            mw_buf_reset(&value);
            if (colon != NULL)
                mw_buf_append(&value, colon + 1, le - i - nlen - 1);
            mw_buf_puts(&value, "");
            have = true;
        }
        i = e + 1;
    }
    if (have)
        mw_arc_msg_header(m, name.data, value.data != NULL ? value.data : "", value.len);
    mw_arc_msg_eoh(m);
    if (i < len)
        mw_arc_msg_body(m, (const unsigned char *)msg + i, len - i);
    mw_buf_free(&name);
    mw_buf_free(&value);
}

static void print_kv(const char *k, const char *v)
{
    printf("%s=", k);
    for (const char *p = v != NULL ? v : ""; *p != '\0'; p++)
        if (*p != '\n')
            putchar(*p);
    putchar('\n');
}

static void print_status(const mw_arc_status *st)
{
    print_kv("result", mw_arc_result_name(st->result));
    print_kv("reason", st->reason);
    printf("instances=%u\noldest-pass=%u\nterminated=%d\n", st->instances, st->oldest_pass,
           st->terminated);
    print_kv("sealer", st->sealer);
    print_kv("aar", st->aar);
    if (st->aar_parsed != NULL)
        print_kv("aar-id", st->aar_parsed->id);
}

int main(int argc, char **argv)
{
    char err[256];
    size_t len = 0;
    mw_dkim_signer *signer = NULL;
    mw_config *cfg = NULL;
    size_t key = 0;
    bool seal = argc == 8 && strcmp(argv[1], "seal") == 0;

    if (!seal && !(argc == 4 && strcmp(argv[1], "verify") == 0)) {
        fprintf(stderr, "usage: arc_tool verify DNS MSGFILE\n"
                        "       arc_tool seal DNS MSGFILE CONFFILE KEYNAME AUTHRESFILE T\n");
        return 2;
    }
    const char *fw[] = {argv[2]};
    mw_dns_options dopt = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 3000};
    mw_dns *dns = mw_dns_create(&dopt, err, sizeof err);
    if (dns == NULL) {
        fprintf(stderr, "dns: %s\n", err);
        return 2;
    }
    if (seal) {
        mw_config_errors errs = {0};
        cfg = mw_config_load(argv[4], NULL, &errs);
        if (cfg != NULL)
            signer = mw_dkim_signer_create(cfg, &errs);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "config: %s\n", errs.msg[i]);
        mw_config_errors_free(&errs);
        mw_dkim_key_info ki;
        for (key = 0; signer != NULL && mw_dkim_signer_key(signer, key, &ki); key++)
            if (strcmp(ki.name, argv[5]) == 0)
                break;
        if (signer == NULL || key >= mw_dkim_signer_nkeys(signer)) {
            fprintf(stderr, "no signer or no key %s\n", argv[5]);
            return 2;
        }
    }
    mw_arc_verifier *v = mw_arc_verifier_create(dns, NULL);
    char *msg = slurp(argv[3], &len);
    mw_arc_msg *m = mw_arc_msg_begin(v, signer, key, "arc_tool");
    mw_arc_status st;

    feed(m, msg, len);
    mw_arc_msg_end(m, &st);
    print_status(&st);
    if (seal) {
        size_t alen;
        char *ar = slurp(argv[6], &alen);
        mw_arc_set set;
        while (alen > 0 && (ar[alen - 1] == '\n' || ar[alen - 1] == '\r'))
            ar[--alen] = '\0';
        if (mw_arc_msg_seal(m, &st, ar, atoll(argv[7]), &set, err, sizeof err)) {
            printf("sealed=1\n");
            print_kv("AAR", set.aar);
            print_kv("AMS", set.ams);
            print_kv("AS", set.as);
            printf("--- headers\nARC-Seal: %s\nARC-Message-Signature: %s\n"
                   "ARC-Authentication-Results: %s\n", set.as, set.ams, set.aar);
            mw_arc_set_clear(&set);
        } else {
            printf("sealed=0\n");
            print_kv("why", err);
        }
        free(ar);
    }
    mw_arc_status_clear(&st);
    mw_arc_msg_free(&m);
    free(msg);
    mw_arc_verifier_destroy(&v);
    mw_dkim_signer_destroy(&signer);
    mw_config_free(&cfg);
    mw_dns_destroy(&dns);
    return 0;
}
