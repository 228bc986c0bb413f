/*
 * fuzz_arc.c - ARC on hostile messages (checks/arc.h): the ARC fields
 * handed to us (instance parsing, the strict tag-list parser of
 * dkim_tags.c, the AAR prefix, structure and cv= rules, b= stripping, the
 * h= index), the key record that comes back from DNS (dkim_tags.c's key
 * parser), header/body streaming and the sealer over whatever the
 * verifier concluded.
 *
 * Input: "<key TXT record>\n<message>"; the first line is the answer to
 * every TXT lookup (an empty first line: NXDOMAIN) and is also parsed
 * directly as a tag list and a key record; the message is header lines,
 * a blank line, the body (two chunks split in the middle).
 *
 * Checked: the status is consistent (none <=> no instances and no
 * sealer; pass => a sealer, 1 <= oldest-pass <= instances <= 50; a reason
 * always), a sealed set has instance = instances + 1 <= 50 and no CR, and
 * a terminated chain is never sealed.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arc.h"
#include "config.h"
#include "dkim.h"
#include "dkim_tags.h"
#include "dns.h"
#include "fuzz_common.h"
#include "fuzz_dns.h"
#include "log.h"

static int dns_port;
static mw_dkim_signer *signer;

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
    char err[256], key[128], conf[128], text[512];
    static char dir[] = "/tmp/mw-fuzz-arc-XXXXXX";
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT;

    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "fuzz", "mail", MW_LOG_ERROR);
    dns_port = fz_dns_start();
    if (!mkdtemp(dir) || !mw_dkim_keygen("ed25519", 0, &pem, &p, err, sizeof err))
        abort();
    snprintf(key, sizeof key, "%s/ed.pem", dir);
    snprintf(conf, sizeof conf, "%s/arc.conf", dir);
    write_file(key, pem.data, pem.len);
    snprintf(text, sizeof text,
             "dkim = { keys = ( { name = \"ed\"; domain = \"example.com\"; selector = \"ed\"; "
             "file = \"%s\"; } );\n oversign_headers = [\"From\"]; };\n", key);
    write_file(conf, text, strlen(text));
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(conf, NULL, &errs);
    if (cfg)
        signer = mw_dkim_signer_create(cfg, &errs);
    if (!signer)
        abort();
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    mw_buf_free(&pem);
    mw_buf_free(&p);
    unlink(key);
    unlink(conf);
    rmdir(dir);
    return 0;
}

static void feed_header(mw_arc_msg *m, const uint8_t *name, size_t nlen, const uint8_t *v, size_t vlen)
{
    char *n = fz_strndup(name, nlen);
    char *value = fz_exact(v, vlen);
    mw_arc_msg_header(m, n, value, vlen);
    free(value);
    free(n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *l;
    size_t n = size, ll;
    char err[256], fwd[64];

    if (!fz_next_line(&p, &n, &l, &ll))
        return 0;
    /* the first line straight into the parsers */
    {
        char *rec = fz_exact(l, ll);
        mw_dkim_tags tl;
        mw_dkim_pubkey k;
        (void)mw_dkim_tags_parse(rec, ll, &tl, err, sizeof err);
        for (size_t i = 0; i < tl.n; i++)
            assert(tl.t[i].after_eq <= tl.t[i].spec_end && tl.t[i].spec_end <= ll);
        (void)mw_dkim_pubkey_parse(rec, ll, ll > 0 && (l[0] & 1), 1024, &k, err, sizeof err);
        mw_dkim_pubkey_clear(&k);
        free(rec);
    }
    fz_dns_set_txt(ll ? l : NULL, ll);
    /* a fresh resolver per input (libunbound caches even TTL-0 answers) */
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", dns_port);
    const char *fw[] = {fwd};
    mw_dns_options o = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 300};
    mw_dns *dns = mw_dns_create(&o, err, sizeof err);
    if (!dns)
        abort();
    mw_arc_verify_options vo = {.timeout_ms = 300, .deadline_ms = 1000};
    mw_arc_verifier *ver = mw_arc_verifier_create(dns, &vo);
    mw_arc_msg *m = mw_arc_msg_begin(ver, signer, 0, "fuzz");

    const uint8_t *name = NULL, *value = NULL;
    size_t nlen = 0, vlen = 0;
    unsigned nh = 0;
    while (n > 0) {
        const uint8_t *line;
        size_t len;
        fz_next_line(&p, &n, &line, &len);
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break;
        if ((line[0] == ' ' || line[0] == '\t') && name) {
            vlen = (size_t)(line + len - value);
            continue;
        }
        if (name && nh++ < 1000)
            feed_header(m, name, nlen, value, vlen);
        const uint8_t *colon = memchr(line, ':', len);
        if (!colon || colon == line) {
            name = NULL;
            continue;
        }
        name = line;
        nlen = (size_t)(colon - line);
        value = colon + 1;
        vlen = len - nlen - 1;
    }
    if (name)
        feed_header(m, name, nlen, value, vlen);
    mw_arc_msg_eoh(m);
    size_t half = n / 2;
    unsigned char *b1 = (unsigned char *)fz_exact(p, half);
    unsigned char *b2 = (unsigned char *)fz_exact(p + half, n - half);
    mw_arc_msg_body(m, b1, half);
    mw_arc_msg_body(m, b2, n - half);
    free(b1);
    free(b2);

    mw_arc_status st;
    mw_arc_msg_end(m, &st);
    if (getenv("MW_FUZZ_DEBUG"))
        fprintf(stderr, "arc=%s i=%u: %s\n", mw_arc_result_name(st.result), st.instances, st.reason);
    assert(st.reason != NULL);
    assert(st.instances <= MW_ARC_MAX_INSTANCES);
    if (st.result == MW_ARC_NONE)
        assert(st.instances == 0 && st.sealer == NULL && st.aar == NULL);
    if (st.result == MW_ARC_PASS)
        assert(st.sealer && st.aar && st.oldest_pass >= 1 && st.oldest_pass <= st.instances);
    mw_arc_set set;
    if (mw_arc_msg_seal(m, &st, "fuzz.test; spf=pass smtp.mailfrom=a@b.test", 1700000000, &set,
                        err, sizeof err)) {
        assert(!st.terminated);
        assert(set.instance == st.instances + 1 && set.instance <= MW_ARC_MAX_INSTANCES);
        assert(!strchr(set.aar, '\r') && !strchr(set.ams, '\r') && !strchr(set.as, '\r'));
        mw_arc_set_clear(&set);
    }
    mw_arc_status_clear(&st);
    mw_arc_msg_free(&m);
    mw_arc_verifier_destroy(&ver);
    mw_dns_destroy(&dns);
    return 0;
}
