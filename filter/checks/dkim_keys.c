/*
 * dkim_keys.c - the DKIM key table and signing table.
 *
 * Purpose
 *   Build the signer's keys (name -> domain, selector, private key) and its
 *   ordered signing rules (pattern -> key names) from the config: the inline
 *   dkim.keys / dkim.signing entries (and --sign) first, then OpenDKIM-format
 *   KeyTable and SigningTable files, so OpenDKIM users migrate by pointing at
 *   their files.  Answer "which keys sign mail from this identity?".
 *
 * Key files
 *   Read once here, never per message.  Refused when not a regular file,
 *   group/world accessible (unless dkim.allow_unsafe_keys, OpenDKIM's
 *   RequireSafeKeys false), encrypted, unparsable, or neither RSA (>= 1024
 *   bits) nor Ed25519.  The key is kept parsed (EVP_PKEY) for the signer;
 *   the PEM text is wiped (explicit_bzero) right after parsing, and
 *   EVP_PKEY_free clears the private parts on destroy.  Key material is
 *   never logged; errors name the file only.
 *
 * Table formats (OpenDKIM's, see opendkim.conf(5))
 *   KeyTable:     NAME DOMAIN:SELECTOR:/path/to/key      ("file:" prefix ok)
 *   SigningTable: "refile:PATH": PATTERN KEYNAME [KEYNAME ...], glob patterns
 *                 ("*@example.com", "*@*.example.com") tried in file order,
 *                 first match wins.  Plain "PATH": ADDRESS or DOMAIN keys,
 *                 exact; addresses are tried before domains (OpenDKIM's
 *                 lookup order).  Lines repeating a pattern add keys to it
 *                 (OpenDKIM's MultipleSignatures, e.g. RSA + Ed25519).
 *   The '%' placeholder (OpenDKIM's): a KeyTable domain "%" signs with d= the
 *   sender's domain (one key for every domain; the DNS of each domain
 *   publishes the same public key); a '%' in a KeyTable key path stands for
 *   the sender's domain too (one key file per domain), and a SigningTable
 *   key name "%" names the key after the sender's domain.  Keys are read
 *   at load, never per message, so a key path with '%' is loaded once per
 *   domain that a signing rule names literally ("*@example.com",
 *   "example.com"), as key "NAME/DOMAIN"; a rule whose domain is a wildcard
 *   cannot name such a key (an error: the files to load are not known).
 *   Inline dkim.signing patterns: with '@' a glob against the address,
 *   without one a glob against the domain; ".example.com" means
 *   "*.example.com" (subdomains only).
 *
 * Diagnostics: "FILE:LINE: message" into mw_config_errors.
 */
#include "dkim_priv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "alloc.h"
#include "buf.h"
#include "strutil.h"

#define KEY_FILE_MAX (64 * 1024)
#define TABLE_LINE_MAX 4096

/* ---- keys -------------------------------------------------------------------- */

/* OpenSSL must never prompt for a passphrase on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static EVP_PKEY *pem_parse(const unsigned char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;

    BIO_free(bio);
    return pk;
}

/* Read a whole key file into memory after the safety checks. */
static unsigned char *key_file_read(const char *file, bool allow_unsafe, size_t *len, char *why,
                                    size_t whylen)
{
    struct stat st;
    unsigned char *buf;
    size_t got = 0;
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        snprintf(why, whylen, "cannot open key file %s: %s", file, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "key file %s is not a regular file", file);
        close(fd);
        return NULL;
    }
    if (!allow_unsafe && (st.st_mode & 077) != 0) {
        snprintf(why, whylen, "key file %s is accessible by group or others (mode %04o): "
                 "chmod 600 it, or set dkim.allow_unsafe_keys", file, (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }
    if (st.st_size <= 0 || st.st_size > KEY_FILE_MAX) {
        snprintf(why, whylen, "key file %s is %s", file, st.st_size <= 0 ? "empty" : "too large");
        close(fd);
        return NULL;
    }
    buf = mw_malloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != (size_t)st.st_size) {
        snprintf(why, whylen, "cannot read key file %s", file);
        explicit_bzero(buf, (size_t)st.st_size + 1);
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Load, parse and classify k->file into k->pkey; false with a reason. */
static bool key_load(struct mw_dkim_key *k, bool allow_unsafe, char *why, size_t whylen)
{
    unsigned char *pem;
    size_t pemlen = 0;
    EVP_PKEY *pk;
    int id;

    pem = key_file_read(k->file, allow_unsafe, &pemlen, why, whylen);
    if (pem == NULL)
        return false;
    pk = pem_parse(pem, pemlen);
    explicit_bzero(pem, pemlen);
    free(pem);
    if (pk == NULL) {
        snprintf(why, whylen, "key file %s: not a PEM private key (or encrypted)", k->file);
        return false;
    }
    id = EVP_PKEY_get_base_id(pk);
    if (id == EVP_PKEY_RSA) {
        k->bits = (unsigned)EVP_PKEY_get_bits(pk);
        k->algorithm = "rsa-sha256";
        if (k->bits < 1024)
            snprintf(why, whylen, "key file %s: RSA key of %u bits is too small (verifiers "
                     "reject keys under 1024 bits)", k->file, k->bits);
    } else if (id == EVP_PKEY_ED25519) {
        k->bits = 256;
        k->algorithm = "ed25519-sha256";
        k->ed25519 = true;
    } else {
        snprintf(why, whylen, "key file %s: unsupported key type (RSA or Ed25519 only)", k->file);
    }
    if (k->algorithm == NULL || k->bits < 256 || (id == EVP_PKEY_RSA && k->bits < 1024)) {
        EVP_PKEY_free(pk);
        return false;
    }
    k->pkey = pk;
    return true;
}

static void key_free(struct mw_dkim_key *k)
{
    EVP_PKEY_free(k->pkey);   /* clears the private key material */
    free(k->name);
    free(k->domain);
    free(k->selector);
    free(k->file);
    memset(k, 0, sizeof *k);
}

static ssize_t key_find(const struct mw_dkim_signer *s, const char *name)
{
    for (size_t i = 0; i < s->nkeys; i++)
        if (strcasecmp(s->key[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

/* Add a key; domain "%": the sender's domain; templ: file has '%', not loaded. */
static void key_add(struct mw_dkim_signer *s, const char *name, const char *domain,
                    const char *selector, const char *file, const char *where, bool allow_unsafe,
                    mw_config_errors *errs)
{
    struct mw_dkim_key k = {0};
    char why[512];

    if (key_find(s, name) >= 0) {
        mw_config_errors_addf(errs, "%s: key name \"%s\" is defined twice", where, name);
        return;
    }
    k.name = mw_strdup(name);
    k.domain = mw_strdup(domain);
    mw_str_lower(k.domain);
    k.any_domain = strcmp(domain, "%") == 0;
    k.templ = strchr(file, '%') != NULL;
    k.selector = mw_strdup(selector);
    k.file = mw_strdup(file);
    why[0] = '\0';
    if (!k.templ && !key_load(&k, allow_unsafe, why, sizeof why)) {
        mw_config_errors_addf(errs, "%s: key \"%s\": %s", where, name, why);
        key_free(&k);
        return;
    }
    s->key = mw_reallocarray(s->key, s->nkeys + 1, sizeof *s->key);
    s->key[s->nkeys++] = k;
}

/* ---- rules ------------------------------------------------------------------- */

/* The one domain a (lower-case) pattern names, or NULL for a wildcard domain. */
static const char *pattern_domain(const char *pat)
{
    const char *at = strrchr(pat, '@'), *d = at != NULL ? at + 1 : pat;
    return d[0] != '\0' && strpbrk(d, "*?[") == NULL ? d : NULL;
}

/* The key of template t (a key path with '%') for domain d, "NAME/D",
 * loaded on first use; -1 after reporting. */
static ssize_t key_instance(struct mw_dkim_signer *s, size_t t, const char *d, const char *where,
                            bool allow_unsafe, mw_config_errors *errs)
{
    mw_buf name = MW_BUF_INIT, file = MW_BUF_INIT;
    mw_buf_printf(&name, "%s/%s", s->key[t].name, d);
    ssize_t k = key_find(s, mw_buf_cstr(&name));
    if (k < 0) {
        for (const char *p = s->key[t].file; *p != '\0'; p++)
            if (*p == '%')
                mw_buf_puts(&file, d);
            else
                mw_buf_putc(&file, *p);
        char *dom = mw_strdup(s->key[t].any_domain ? d : s->key[t].domain);
        char *sel = mw_strdup(s->key[t].selector);
        size_t before = errs->n;
        key_add(s, mw_buf_cstr(&name), dom, sel, mw_buf_cstr(&file), where, allow_unsafe, errs);
        if (errs->n == before)
            k = (ssize_t)s->nkeys - 1;
        free(dom);
        free(sel);
    }
    mw_buf_free(&name);
    mw_buf_free(&file);
    return k;
}

#define RULE_KEY_BY_DOMAIN ((ssize_t)-2)

/* The key index a rule's key name stands for: "%" the key named after the
 * pattern's domain (RULE_KEY_BY_DOMAIN when that is a wildcard), a
 * template its instance for the pattern's domain; -1 after reporting. */
static ssize_t rule_key(struct mw_dkim_signer *s, const char *pat, const char *name,
                        const char *where, bool allow_unsafe, mw_config_errors *errs)
{
    const char *d = pattern_domain(pat);
    if (strcmp(name, "%") == 0 && d == NULL)
        return RULE_KEY_BY_DOMAIN;
    const char *kname = strcmp(name, "%") == 0 ? d : name;
    ssize_t k = key_find(s, kname);
    if (k < 0) {
        mw_config_errors_addf(errs, "%s: signing table: unknown key \"%s\"%s", where, kname,
                              kname != name ? " (the key named after the pattern's domain, %)" : "");
        return -1;
    }
    if (!s->key[k].templ)
        return k;
    if (d == NULL) {
        mw_config_errors_addf(errs, "%s: signing table: key \"%s\" has a '%%' in its key file path "
                              "(one file per domain) and pattern \"%s\" does not name one domain; "
                              "keys are loaded at start, so write one line per domain", where,
                              kname, pat);
        return -1;
    }
    return key_instance(s, (size_t)k, d, where, allow_unsafe, errs);
}

/* Append key names to the rule for pattern (created at the end if new). */
static void rule_add(struct mw_dkim_signer *s, const char *pattern, bool literal,
                     char *const *names, size_t nnames, const char *where, bool allow_unsafe,
                     mw_config_errors *errs)
{
    struct mw_dkim_rule *r = NULL;
    char *pat = mw_strdup(pattern);

    mw_str_lower(pat);
    if (pat[0] == '.' && !literal) {      /* ".example.com": subdomains only */
        mw_buf b = MW_BUF_INIT;
        mw_buf_printf(&b, "*%s", pat);
        free(pat);
        pat = mw_buf_steal(&b);
    }
    for (size_t i = 0; i < s->nrules && r == NULL; i++)
        if (s->rule[i].literal == literal && strcmp(s->rule[i].pattern, pat) == 0)
            r = &s->rule[i];
    if (r == NULL) {
        s->rule = mw_reallocarray(s->rule, s->nrules + 1, sizeof *s->rule);
        r = &s->rule[s->nrules++];
        *r = (struct mw_dkim_rule){.pattern = pat, .literal = literal};
        pat = NULL;
    }
    free(pat);
    size_t ri = (size_t)(r - s->rule);
    for (size_t i = 0; i < nnames; i++) {
        ssize_t k = rule_key(s, s->rule[ri].pattern, names[i], where, allow_unsafe, errs);
        r = &s->rule[ri];
        if (k == RULE_KEY_BY_DOMAIN)
            k = (ssize_t)MW_DKIM_KEY_BY_DOMAIN;   /* resolved at lookup */
        else if (k < 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < r->nkeys; j++)
            dup = dup || r->keys[j] == (size_t)k;
        if (dup)
            continue;
        r->keys = mw_reallocarray(r->keys, r->nkeys + 1, sizeof *r->keys);
        r->keys[r->nkeys++] = (size_t)k;
    }
}

/* ---- OpenDKIM table files ------------------------------------------------------------- */

typedef void (*line_fn)(struct mw_dkim_signer *s, char **w, size_t nw, const char *where,
                        void *arg, mw_config_errors *errs);

/* Split each non-comment line into blank-separated words and call fn. */
static void table_read(struct mw_dkim_signer *s, const char *path, line_fn fn, void *arg,
                       mw_config_errors *errs)
{
    FILE *f = fopen(path, "re");
    char line[TABLE_LINE_MAX];
    unsigned lineno = 0;

    if (f == NULL) {
        mw_config_errors_addf(errs, "%s: cannot open: %s", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *w[64], *save = NULL, where[1100];
        size_t nw = 0;

        lineno++;
        snprintf(where, sizeof where, "%s:%u", path, lineno);
        if (strchr(line, '\n') == NULL && !feof(f)) {
            mw_config_errors_addf(errs, "%s: line too long", where);
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL && nw < 64;
             t = strtok_r(NULL, " \t\r\n", &save))
            w[nw++] = t;
        if (nw > 0)
            fn(s, w, nw, where, arg, errs);
    }
    fclose(f);
}

struct kt_arg {
    bool allow_unsafe;
};

static void keytable_line(struct mw_dkim_signer *s, char **w, size_t nw, const char *where,
                          void *arg, mw_config_errors *errs)
{
    struct kt_arg *a = arg;
    char *c1, *c2;

    c1 = nw == 2 ? strchr(w[1], ':') : NULL;
    c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL) {
        mw_config_errors_addf(errs, "%s: expected \"NAME DOMAIN:SELECTOR:/path/to/key\"", where);
        return;
    }
    *c1 = *c2 = '\0';
    if (strcmp(w[1], "%") != 0 && !mw_domain_valid(w[1])) {
        mw_config_errors_addf(errs, "%s: \"%s\" is not a valid domain (nor %%, the sender's "
                              "domain)", where, w[1]);
        return;
    }
    if (c1[1] == '\0' || c2[1] != '/') {
        mw_config_errors_addf(errs, "%s: expected a selector and an absolute key file path "
                              "(inline key data is not supported)", where);
        return;
    }
    key_add(s, w[0], w[1], c1 + 1, c2 + 1, where, a->allow_unsafe, errs);
}

struct st_arg {
    bool   allow_unsafe;
    bool   refile;
    bool   domains_pass;   /* plain form: second pass adds domain entries */
};

static void signtable_line(struct mw_dkim_signer *s, char **w, size_t nw, const char *where,
                           void *arg, mw_config_errors *errs)
{
    struct st_arg *a = arg;

    if (nw < 2) {
        if (!a->domains_pass)
            mw_config_errors_addf(errs, "%s: expected \"PATTERN KEYNAME [KEYNAME ...]\"", where);
        return;
    }
    if (!a->refile && (strchr(w[0], '@') != NULL) == a->domains_pass)
        return;
    rule_add(s, w[0], !a->refile, w + 1, nw - 1, where, a->allow_unsafe, errs);
}

static const char *strip_prefix(const char *s, const char *prefix, bool *had)
{
    size_t n = strlen(prefix);
    bool h = strncmp(s, prefix, n) == 0;

    if (had != NULL)
        *had = h;
    return h ? s + n : s;
}

/* ---- load / free -------------------------------------------------------------------- */

bool mw_dkim_tables_load(struct mw_dkim_signer *s, const mw_config *cfg, mw_config_errors *errs)
{
    size_t start = errs->n;

    for (size_t i = 0; i < cfg->ndkim_keys; i++) {
        const mw_config_dkim_key *k = &cfg->dkim_keys[i];
        key_add(s, k->name, k->domain, k->selector, k->file, k->where ? k->where : "config",
                cfg->dkim_allow_unsafe_keys, errs);
    }
    if (cfg->dkim_key_table != NULL && cfg->dkim_key_table[0] != '\0') {
        struct kt_arg a = {.allow_unsafe = cfg->dkim_allow_unsafe_keys};
        table_read(s, strip_prefix(cfg->dkim_key_table, "file:", NULL), keytable_line, &a, errs);
    }
    /* An unknown key name in a rule is only worth reporting when the keys
     * themselves loaded; else every rule would repeat the key's error. */
    bool keys_ok = errs->n == start;
    mw_config_errors ignore = {0};
    mw_config_errors *rerrs = keys_ok ? errs : &ignore;

    for (size_t i = 0; i < cfg->ndkim_rules; i++) {
        const mw_config_dkim_rule *r = &cfg->dkim_rules[i];
        rule_add(s, r->pattern, false, r->keys, r->nkeys, r->where ? r->where : "config",
                 cfg->dkim_allow_unsafe_keys, rerrs);
    }
    if (cfg->dkim_signing_table != NULL && cfg->dkim_signing_table[0] != '\0') {
        bool refile;
        const char *p = strip_prefix(cfg->dkim_signing_table, "refile:", &refile);
        struct st_arg a = {.refile = refile, .allow_unsafe = cfg->dkim_allow_unsafe_keys};
        if (!refile)
            p = strip_prefix(p, "file:", NULL);
        table_read(s, p, signtable_line, &a, rerrs);
        if (!refile) {
            a.domains_pass = true;
            table_read(s, p, signtable_line, &a, rerrs);
        }
    }
    /* A rule "%" with a wildcard pattern picks the key named after the
     * sender's domain at lookup; a template key named after a domain is
     * loaded for that domain now, so it can be picked. */
    bool by_domain = false;
    for (size_t i = 0; i < s->nrules && !by_domain; i++)
        for (size_t j = 0; j < s->rule[i].nkeys; j++)
            by_domain = by_domain || s->rule[i].keys[j] == MW_DKIM_KEY_BY_DOMAIN;
    for (size_t i = 0, n = s->nkeys; by_domain && i < n; i++)
        if (s->key[i].templ && strchr(s->key[i].name, '.') != NULL && mw_domain_valid(s->key[i].name)) {
            char *d = mw_strdup(s->key[i].name);
            mw_str_lower(d);
            (void)key_instance(s, i, d, cfg->dkim_signing_table ? cfg->dkim_signing_table : "config",
                               cfg->dkim_allow_unsafe_keys, rerrs);
            free(d);
        }
    mw_config_errors_free(&ignore);
    return errs->n == start;
}

void mw_dkim_tables_free(struct mw_dkim_signer *s)
{
    for (size_t i = 0; i < s->nkeys; i++)
        key_free(&s->key[i]);
    MW_FREE(&s->key);
    s->nkeys = 0;
    for (size_t i = 0; i < s->nrules; i++) {
        free(s->rule[i].pattern);
        free(s->rule[i].keys);
    }
    MW_FREE(&s->rule);
    s->nrules = 0;
}

/* ---- lookup ---------------------------------------------------------------------------- */

static bool rule_match(const struct mw_dkim_rule *r, const char *addr, const char *domain)
{
    if (r->literal)
        return strcmp(r->pattern, strchr(r->pattern, '@') != NULL ? addr : domain) == 0;
    if (strchr(r->pattern, '@') != NULL)
        return mw_glob_match(r->pattern, addr);
    return mw_glob_match(r->pattern, domain);
}

size_t mw_dkim_signer_lookup(const mw_dkim_signer *s, const char *identity, size_t *keys, size_t max,
                             char *why, size_t whylen)
{
    mw_buf addr = MW_BUF_INIT;
    const char *at, *domain;
    size_t n = 0;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (identity == NULL || identity[0] == '\0') {
        if (why != NULL)
            snprintf(why, whylen, "no signing identity (empty address)");
        return 0;
    }
    if (s == NULL || s->nkeys == 0) {
        if (why != NULL)
            snprintf(why, whylen, "no signing keys configured");
        return 0;
    }
    at = strrchr(identity, '@');
    if (at == NULL)
        mw_buf_putc(&addr, '@');   /* a bare domain: "*@example.com" still matches */
    mw_buf_puts(&addr, identity);
    mw_str_lower(addr.data);
    at = strrchr(addr.data, '@');
    domain = at + 1;
    bool matched = false;
    for (size_t i = 0; i < s->nrules && !matched; i++) {
        if (!rule_match(&s->rule[i], addr.data, domain))
            continue;
        matched = true;
        for (size_t j = 0; j < s->rule[i].nkeys && n < max; j++) {
            size_t k = s->rule[i].keys[j];
            if (k == MW_DKIM_KEY_BY_DOMAIN) {   /* "%": the key named after the domain */
                mw_buf inst = MW_BUF_INIT;
                ssize_t f = key_find(s, domain);
                if (f >= 0 && s->key[f].templ) {
                    mw_buf_printf(&inst, "%s/%s", s->key[f].name, domain);
                    f = key_find(s, mw_buf_cstr(&inst));
                }
                mw_buf_free(&inst);
                if (f < 0)
                    continue;
                k = (size_t)f;
            }
            keys[n++] = k;
        }
    }
    if (n == 0 && matched && why != NULL) {
        mw_buf esc = MW_BUF_INIT;
        mw_str_printable(&esc, domain, strlen(domain), 200);
        snprintf(why, whylen, "the signing-table rule names the key after the sender's domain "
                 "(%%) and no key is named %s", mw_buf_cstr(&esc));
        mw_buf_free(&esc);
    } else if (n == 0 && why != NULL) {
        mw_buf esc = MW_BUF_INIT;
        mw_str_printable(&esc, identity, strlen(identity), 200);
        snprintf(why, whylen, "no signing-table match for %s", mw_buf_cstr(&esc));
        mw_buf_free(&esc);
    }
    mw_buf_free(&addr);
    return n;
}

size_t mw_dkim_signer_nkeys(const mw_dkim_signer *s)
{
    return s != NULL ? s->nkeys : 0;
}

bool mw_dkim_signer_key(const mw_dkim_signer *s, size_t i, mw_dkim_key_info *out)
{
    if (s == NULL || i >= s->nkeys)
        return false;
    *out = (mw_dkim_key_info){.name = s->key[i].name, .domain = s->key[i].domain,
                              .selector = s->key[i].selector,
                              .algorithm = s->key[i].algorithm, .bits = s->key[i].bits,
                              .file = s->key[i].file,
                              .per_domain = s->key[i].any_domain || s->key[i].templ};
    return true;
}

/* ---- public keys (dns-check, keygen) ----------------------------------------------------- */

static void b64_append(mw_buf *out, const unsigned char *p, size_t n)
{
    size_t need = 4 * ((n + 2) / 3) + 1;

    mw_buf_reserve(out, need);
    int w = EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
    out->len += (size_t)w;
    out->data[out->len] = '\0';
}

/* p= of a key: RSA SubjectPublicKeyInfo DER, Ed25519 raw 32 bytes (RFC 8463). */
static bool pubkey_b64(EVP_PKEY *pk, mw_buf *out)
{
    mw_buf_reset(out);
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
        unsigned char raw[32];
        size_t n = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(pk, raw, &n) != 1 || n != 32)
            return false;
        b64_append(out, raw, n);
        return true;
    }
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pk, &der);
    if (n <= 0)
        return false;
    b64_append(out, der, (size_t)n);
    OPENSSL_free(der);
    return true;
}

bool mw_dkim_signer_pubkey(const mw_dkim_signer *s, size_t i, mw_buf *p_b64)
{
    if (s == NULL || i >= s->nkeys || s->key[i].pkey == NULL)
        return false;
    return pubkey_b64(s->key[i].pkey, p_b64);
}

bool mw_dkim_keygen(const char *type, unsigned bits, mw_buf *pem, mw_buf *p_b64, char *err,
                    size_t errlen)
{
    bool ed = type != NULL && strcasecmp(type, "ed25519") == 0;
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    bool ok = false;

    if (!ed && type != NULL && strcasecmp(type, "rsa") != 0) {
        snprintf(err, errlen, "unknown key type \"%s\" (rsa or ed25519)", type);
        return false;
    }
    if (!ed && bits == 0)
        bits = 2048;
    if (!ed && (bits < 1024 || bits > 8192)) {
        snprintf(err, errlen, "RSA key size %u out of range (1024 .. 8192)", bits);
        return false;
    }
    pk = ed ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
            : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    if (pk == NULL) {
        snprintf(err, errlen, "key generation failed");
        return false;
    }
    bio = BIO_new(BIO_s_secmem());
    if (bio != NULL && PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1) {
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        mw_buf_reset(pem);
        mw_buf_append(pem, data, (size_t)n);
        ok = pubkey_b64(pk, p_b64);
    }
    if (!ok)
        snprintf(err, errlen, "cannot encode the generated key");
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return ok;
}

bool mw_dkim_pubkey_bits(const char *k, const char *p_b64, unsigned *bits)
{
    mw_buf clean = MW_BUF_INIT;
    unsigned char *der;
    int n;
    bool ok = false;

    for (const char *p = p_b64; *p != '\0'; p++)
        if (!isspace((unsigned char)*p))
            mw_buf_putc(&clean, *p);
    if (clean.len == 0 || clean.len % 4 != 0) {
        mw_buf_free(&clean);
        return false;
    }
    der = mw_malloc(clean.len);
    n = EVP_DecodeBlock(der, (const unsigned char *)clean.data, (int)clean.len);
    if (n > 0) {
        /* EVP_DecodeBlock counts the '=' padding as zero bytes. */
        if (clean.data[clean.len - 1] == '=')
            n--;
        if (clean.data[clean.len - 2] == '=')
            n--;
    }
    if (n > 0 && k != NULL && strcasecmp(k, "ed25519") == 0) {
        ok = n == 32;
        *bits = 256;
    } else if (n > 0) {
        const unsigned char *p = der;
        EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, n);
        if (pk == NULL) {
            p = der;
            pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, n);
        }
        if (pk != NULL && EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) {
            *bits = (unsigned)EVP_PKEY_get_bits(pk);
            ok = true;
        }
        EVP_PKEY_free(pk);
    }
    free(der);
    mw_buf_free(&clean);
    return ok;
}
