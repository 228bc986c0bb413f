/*
 * dns_check.c - `mailwarden dns-check`: are the configured DKIM keys and the
 * signing domains' SPF and DMARC records published correctly?
 *
 *   mailwarden dns-check [-c FILE] [--dns ADDR[@PORT]]... [--sign D:S:KEYFILE]...
 *
 * For every signing key: the TXT record at S._domainkey.D exists (one
 * record), parses (v=DKIM1, k= matching the key), is not revoked, its p=
 * matches the private key, and its size.  For every signing domain: exactly
 * one "v=spf1" TXT record, and exactly one "v=DMARC1" record at _dmarc.D
 * with a valid p=.  For every key file: its mode and owner (the daemon
 * refuses a key group or others can access, and reads keys as its
 * configured `user` after dropping root: a key that user cannot read stops
 * the start or a reload).  Prints one table row per check; exits 1 when any
 * check fails (2 for usage or config errors), 0 when all pass (WARN rows
 * do not fail: a key the daemon accepts but should not be so).
 */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dns.h"
#include "privs.h"
#include "tools.h"

#define MAX_REPEAT 16

typedef struct report {
    unsigned problems;
    unsigned warnings;
} report;

enum { ROW_OK, ROW_WARN, ROW_FAIL };

static void vrow(report *r, const char *what, const char *name, int state, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static void vrow(report *r, const char *what, const char *name, int state, const char *fmt, va_list ap)
{
    mw_buf b = MW_BUF_INIT;

    mw_buf_vprintf(&b, fmt, ap);
    printf("%-6s %-44s %-5s %s\n", what, name, state == ROW_OK ? "ok" : state == ROW_WARN ? "WARN" : "FAIL",
           mw_buf_cstr(&b));
    if (state == ROW_FAIL)
        r->problems++;
    else if (state == ROW_WARN)
        r->warnings++;
    mw_buf_free(&b);
}

static void row(report *r, const char *what, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void row(report *r, const char *what, const char *name, bool ok, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vrow(r, what, name, ok ? ROW_OK : ROW_FAIL, fmt, ap);
    va_end(ap);
}

static void krow(report *r, const char *file, int state, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void krow(report *r, const char *file, int state, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vrow(r, "key", file, state, fmt, ap);
    va_end(ap);
}

/* The daemon's user, for the key file checks. */
typedef struct key_reader {
    mw_privs pv;
    bool     exact;     /* pv usable for a real read as that user (root, or already that user) */
    bool     unknown;   /* the configured user or group does not exist */
    char     why[256];
} key_reader;

static void key_reader_init(key_reader *kr, const mw_config *cfg)
{
    memset(kr, 0, sizeof *kr);
    kr->exact = mw_privs_resolve(cfg->user, cfg->group, &kr->pv, kr->why, sizeof kr->why) == 0;
    /* resolve fills the ids before refusing "not root": those still allow a
     * check by the file's owner and mode */
    kr->unknown = !kr->exact && strncmp(kr->why, "unknown", 7) == 0;
}

static const char *uid_name(uid_t uid, char *buf, size_t len)
{
    struct passwd pw, *res = NULL;
    char tmp[4096];

    if (getpwuid_r(uid, &pw, tmp, sizeof tmp, &res) == 0 && res != NULL)
        snprintf(buf, len, "%s", pw.pw_name);
    else
        snprintf(buf, len, "uid %u", (unsigned)uid);
    return buf;
}

/* A key file's mode and owner, as the daemon will see them. */
static void check_key_file(report *r, const char *file, const key_reader *kr, bool allow_unsafe)
{
    struct stat st;
    char owner[96], why[512];
    bool bad = false;

    if (stat(file, &st) != 0) {
        krow(r, file, ROW_FAIL, "cannot stat: %s", strerror(errno));
        return;
    }
    unsigned mode = (unsigned)(st.st_mode & 07777);
    uid_name(st.st_uid, owner, sizeof owner);
    if ((mode & 077) != 0) {
        krow(r, file, allow_unsafe ? ROW_WARN : ROW_FAIL,
             "mode %04o: group or others can read the private key%s: chmod 600 %s", mode,
             allow_unsafe ? " (accepted only because of dkim.allow_unsafe_keys)" : "; the daemon refuses it",
             file);
        bad = true;
    }
    if (kr->unknown) {
        krow(r, file, ROW_FAIL, "cannot tell who reads it: %s", kr->why);
        return;
    }
    bool readable;
    if (kr->exact) {
        readable = mw_privs_can_read(&kr->pv, file, why, sizeof why);
    } else {
        /* not root: judge by owner and mode */
        readable = (st.st_uid == kr->pv.uid && (mode & 0400)) || (st.st_gid == kr->pv.gid && (mode & 0040)) ||
                   (mode & 0004);
        snprintf(why, sizeof why, "%s cannot read it (owner %s, mode %04o)", kr->pv.user, owner, mode);
    }
    if (!readable) {
        krow(r, file, ROW_FAIL, "%s: the daemon, running as %s, cannot load it: chown %s %s (keygen --user %s "
             "writes keys so)", why, kr->pv.user, kr->pv.user, file, kr->pv.user);
        return;
    }
    if (kr->pv.have_user && st.st_uid != kr->pv.uid) {
        krow(r, file, ROW_WARN, "owned by %s, not by %s (the daemon's user): chown %s %s", owner, kr->pv.user,
             kr->pv.user, file);
        return;
    }
    if (!kr->pv.have_user && st.st_uid == 0 && geteuid() == 0) {
        krow(r, file, ROW_WARN, "owned by root and no `user` configured: a daemon started as another user "
             "(the systemd unit runs as mailwarden) cannot read it: chown mailwarden %s", file);
        return;
    }
    if (!bad)
        krow(r, file, ROW_OK, "owner %s, mode %04o, readable by %s", owner, mode, kr->pv.user);
}

/* TXT records at name (joined strings) into recs; returns the lookup status. */
static mw_dns_status txt_lookup(mw_dns *dns, const char *name, char ***recs, size_t *n,
                                char *why, size_t whylen)
{
    mw_dns_answer *a = NULL;
    mw_dns_status st = mw_dns_query(dns, name, MW_DNS_T_TXT, 0, &a);
    mw_buf t = MW_BUF_INIT;

    *recs = NULL;
    *n = 0;
    snprintf(why, whylen, "%s%s%s", mw_dns_status_name(st), a->why ? ": " : "", a->why ? a->why : "");
    for (size_t i = 0; st == MW_DNS_OK && i < a->nrr; i++) {
        if (a->rr[i].type != MW_DNS_T_TXT || !mw_dns_rr_txt(&a->rr[i], &t))
            continue;
        *recs = realloc(*recs, (*n + 1) * sizeof **recs);
        (*recs)[(*n)++] = strdup(mw_buf_cstr(&t));
    }
    mw_buf_free(&t);
    mw_dns_answer_free(&a);
    return st;
}

static void recs_free(char **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(recs[i]);
    free(recs);
}

/* Value of tag in a "t=v; t=v" record (blanks stripped), or NULL. */
static char *tag_value(const char *rec, const char *tag)
{
    size_t tl = strlen(tag);
    const char *p = rec;

    while (*p != '\0') {
        while (*p == ';' || isspace((unsigned char)*p))
            p++;
        const char *eq = strchr(p, '='), *semi = strchr(p, ';');
        if (eq == NULL)
            break;
        if (semi == NULL)
            semi = p + strlen(p);
        if (eq < semi) {
            const char *ke = eq;
            while (ke > p && isspace((unsigned char)ke[-1]))
                ke--;
            if ((size_t)(ke - p) == tl && strncasecmp(p, tag, tl) == 0) {
                mw_buf v = MW_BUF_INIT;
                for (const char *q = eq + 1; q < semi; q++)
                    if (!isspace((unsigned char)*q))
                        mw_buf_putc(&v, *q);
                mw_buf_puts(&v, "");
                return mw_buf_steal(&v);
            }
        }
        p = *semi != '\0' ? semi + 1 : semi;
    }
    return NULL;
}

static void check_key(report *r, mw_dns *dns, const mw_dkim_signer *s, size_t i)
{
    mw_dkim_key_info ki;
    mw_buf name = MW_BUF_INIT, mine = MW_BUF_INIT;
    char **recs, why[300];
    size_t n;
    bool ed;

    mw_dkim_signer_key(s, i, &ki);
    ed = strcmp(ki.algorithm, "ed25519-sha256") == 0;
    mw_buf_printf(&name, "%s._domainkey.%s", ki.selector, ki.domain);
    mw_dns_status st = txt_lookup(dns, name.data, &recs, &n, why, sizeof why);
    if (st != MW_DNS_OK || n == 0) {
        row(r, "dkim", name.data, false, "key %s not published (%s)", ki.name, why);
    } else if (n > 1) {
        row(r, "dkim", name.data, false, "%zu TXT records; verifiers need exactly one", n);
    } else {
        char *v = tag_value(recs[0], "v"), *k = tag_value(recs[0], "k"), *p = tag_value(recs[0], "p");
        unsigned bits = 0;
        mw_dkim_signer_pubkey(s, i, &mine);
        if (v != NULL && strcmp(v, "DKIM1") != 0)
            row(r, "dkim", name.data, false, "v=%s, expected DKIM1 first", v);
        else if (p == NULL)
            row(r, "dkim", name.data, false, "no p= tag: not a DKIM key record");
        else if (p[0] == '\0')
            row(r, "dkim", name.data, false, "key revoked (empty p=)");
        else if ((k == NULL ? !ed : strcasecmp(k, ed ? "ed25519" : "rsa") == 0) == false)
            row(r, "dkim", name.data, false, "k=%s but the private key is %s", k ? k : "rsa (default)",
                ed ? "ed25519" : "rsa");
        else if (!mw_dkim_pubkey_bits(ed ? "ed25519" : "rsa", p, &bits))
            row(r, "dkim", name.data, false, "p= does not decode to a public key");
        else if (strcmp(p, mine.data != NULL ? mine.data : "") != 0)
            row(r, "dkim", name.data, false, "public key does not match the private key of %s",
                ki.name);
        else if (!ed && bits < 1024)
            row(r, "dkim", name.data, false, "RSA key of %u bits: verifiers reject it", bits);
        else
            row(r, "dkim", name.data, true, "key %s, %s, %u bits%s", ki.name, ki.algorithm, bits,
                !ed && bits < 2048 ? " (2048 recommended)" : "");
        free(v);
        free(k);
        free(p);
    }
    recs_free(recs, n);
    mw_buf_free(&name);
    mw_buf_free(&mine);
}

static bool starts_word(const char *rec, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(rec, word, n) == 0 && (rec[n] == '\0' || rec[n] == ' ' || rec[n] == ';');
}

static void check_spf(report *r, mw_dns *dns, const char *domain)
{
    char **recs, why[300];
    size_t n, nspf = 0;

    mw_dns_status st = txt_lookup(dns, domain, &recs, &n, why, sizeof why);
    for (size_t i = 0; i < n; i++)
        nspf += starts_word(recs[i], "v=spf1");
    if (st == MW_DNS_TEMPFAIL || st == MW_DNS_PERMFAIL)
        row(r, "spf", domain, false, "lookup failed (%s)", why);
    else if (nspf == 0)
        row(r, "spf", domain, false, "no v=spf1 TXT record");
    else if (nspf > 1)
        row(r, "spf", domain, false, "%zu v=spf1 records: SPF permerror (RFC 7208 4.5)", nspf);
    else
        row(r, "spf", domain, true, "one v=spf1 record");
    recs_free(recs, n);
}

static void check_dmarc(report *r, mw_dns *dns, const char *domain)
{
    mw_buf name = MW_BUF_INIT;
    char **recs, why[300];
    size_t n, nd = 0, at = 0;

    mw_buf_printf(&name, "_dmarc.%s", domain);
    mw_dns_status st = txt_lookup(dns, name.data, &recs, &n, why, sizeof why);
    for (size_t i = 0; i < n; i++)
        if (starts_word(recs[i], "v=DMARC1")) {
            nd++;
            at = i;
        }
    if (st == MW_DNS_TEMPFAIL || st == MW_DNS_PERMFAIL) {
        row(r, "dmarc", name.data, false, "lookup failed (%s)", why);
    } else if (nd == 0) {
        row(r, "dmarc", name.data, false, "no v=DMARC1 record");
    } else if (nd > 1) {
        row(r, "dmarc", name.data, false, "%zu v=DMARC1 records: receivers ignore them all", nd);
    } else {
        char *p = tag_value(recs[at], "p");
        bool ok = p != NULL && (strcasecmp(p, "none") == 0 || strcasecmp(p, "quarantine") == 0 ||
                                strcasecmp(p, "reject") == 0);
        bool syntax = true;
        for (const char *c = recs[at]; *c != '\0'; c++)
            syntax = syntax && (unsigned char)*c >= 32 && (unsigned char)*c < 127;
        if (!ok)
            row(r, "dmarc", name.data, false, "p= missing or not none/quarantine/reject");
        else if (!syntax)
            row(r, "dmarc", name.data, false, "control or non-ASCII characters in the record");
        else
            row(r, "dmarc", name.data, true, "p=%s", p);
        free(p);
    }
    recs_free(recs, n);
    mw_buf_free(&name);
}

static int usage(void)
{
    fprintf(stderr, "usage: mailwarden dns-check [-c FILE] [--dns ADDR[@PORT]]... "
                    "[--sign DOMAIN:SELECTOR:KEYFILE]...\n");
    return 2;
}

int mw_cmd_dns_check(int argc, char **argv)
{
    const char *file = NULL, *dnsv[MAX_REPEAT], *signv[MAX_REPEAT];
    size_t ndns = 0, nsign = 0;
    mw_config_errors errs = {0};
    report r = {0};
    char err[256];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (val == NULL)
            return usage();
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            file = val;
        else if (strcmp(a, "--dns") == 0 && ndns < MAX_REPEAT)
            dnsv[ndns++] = val;
        else if (strcmp(a, "--sign") == 0 && nsign < MAX_REPEAT)
            signv[nsign++] = val;
        else
            return usage();
        i++;
    }
    mw_config_overrides ov = {.dns = dnsv, .ndns = ndns, .sign = signv, .nsign = nsign};
    mw_config *cfg = mw_config_load(file, &ov, &errs);
    /* load keys whatever their mode, so that the DNS checks run and the mode
     * is reported as a row of its own (check_key_file) */
    bool allow_unsafe = cfg != NULL && cfg->dkim_allow_unsafe_keys;
    if (cfg != NULL)
        cfg->dkim_allow_unsafe_keys = true;
    mw_dkim_signer *s = cfg != NULL ? mw_dkim_signer_create(cfg, &errs) : NULL;
    if (cfg == NULL || s == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        mw_config_errors_free(&errs);
        mw_dkim_signer_destroy(&s);
        mw_config_free(&cfg);
        return 2;
    }
    mw_dns_options dopt = {
        .forwarders = (const char *const *)cfg->dns_forwarders, .nforwarders = cfg->ndns_forwarders,
        .resolv_conf = cfg->dns_resolv_conf, .timeout_ms = cfg->dns_timeout_ms,
        .trust_anchor_file = cfg->dns_trust_anchor[0] != '\0' ? cfg->dns_trust_anchor : NULL,
        .use_tcp = cfg->dns_tcp};
    mw_dns *dns = mw_dns_create(&dopt, err, sizeof err);
    if (dns == NULL) {
        fprintf(stderr, "mailwarden dns-check: resolver: %s\n", err);
        mw_dkim_signer_destroy(&s);
        mw_config_free(&cfg);
        return 2;
    }
    size_t nk = mw_dkim_signer_nkeys(s);
    if (nk == 0) {
        fprintf(stderr, "mailwarden dns-check: no signing keys configured (dkim.keys, "
                        "dkim.key_table or --sign)\n");
        r.problems++;
    } else {
        printf("%-6s %-44s %-5s %s\n", "CHECK", "NAME", "STATE", "DETAIL");
    }
    key_reader kr;
    key_reader_init(&kr, cfg);
    for (size_t i = 0; i < nk; i++) {
        mw_dkim_key_info ki;
        bool seen = false;
        if (!mw_dkim_signer_key(s, i, &ki))
            continue;
        for (size_t j = 0; j < i && !seen; j++) {
            mw_dkim_key_info kj;
            seen = mw_dkim_signer_key(s, j, &kj) && kj.file && ki.file && strcmp(kj.file, ki.file) == 0;
        }
        /* a key-file template (OpenDKIM '%' in the path) is no file: its
         * per-domain keys are rows of their own (NAME/DOMAIN) */
        if (!seen && ki.file && strchr(ki.file, '%') == NULL)
            check_key_file(&r, ki.file, &kr, allow_unsafe);
        if (ki.per_domain)   /* no one domain to look at */
            printf("%-6s %-44s %-5s %s\n", "dkim", ki.name, "skip", "OpenDKIM %: the sender's domain "
                   "(its per-domain keys are checked as NAME/DOMAIN)");
        else
            check_key(&r, dns, s, i);
    }
    for (size_t i = 0; i < nk; i++) {
        mw_dkim_key_info ki, kj;
        bool seen = false;
        mw_dkim_signer_key(s, i, &ki);
        if (ki.per_domain)
            continue;
        for (size_t j = 0; j < i && !seen; j++)
            seen = mw_dkim_signer_key(s, j, &kj) && strcasecmp(ki.domain, kj.domain) == 0;
        if (seen)
            continue;
        check_spf(&r, dns, ki.domain);
        check_dmarc(&r, dns, ki.domain);
    }
    if (nk > 0)
        printf("%u problem%s%s", r.problems, r.problems == 1 ? "" : "s", r.warnings > 0 ? ", " : "\n");
    if (nk > 0 && r.warnings > 0)
        printf("%u warning%s\n", r.warnings, r.warnings == 1 ? "" : "s");
    mw_dns_destroy(&dns);
    mw_dkim_signer_destroy(&s);
    mw_config_free(&cfg);
    mw_config_errors_free(&errs);
    return r.problems > 0 ? 1 : 0;
}
