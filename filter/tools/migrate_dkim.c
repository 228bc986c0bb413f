/*
 * migrate_dkim.c - the OpenDKIM signing setup for `mailwarden migrate`:
 * Domain/Selector/KeyFile/SubDomains, and KeyTable + SigningTable.
 *
 * When the tables only use what mailwarden's own table reader understands
 * (file: or a path; refile: for the signing table; one key name per line;
 * '%' as OpenDKIM has it, except a per-domain key file named by a wildcard
 * pattern), dkim.key_table / dkim.signing_table point at the same files, so
 * the postmaster keeps editing them.  Otherwise the tables are expanded
 * into inline dkim.keys / dkim.signing entries:
 *   - a KeyTable domain "%" (the sender's domain) and a SigningTable key
 *     name "%" (the key named after the sender's domain) are resolved for
 *     every pattern whose domain is literal ("*@example.com",
 *     "example.com"); a pattern whose domain is a wildcard cannot be
 *     resolved and is reported as not carried;
 *   - plain (non-refile) tables are exact: addresses are written before
 *     domains, OpenDKIM's lookup order;
 *   - the optional signer field (i=) is not carried (mailwarden signs
 *     without i=, which means the signing domain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "migrate.h"

struct kt {
    char *name, *domain, *selector, *file;
};

struct rule {
    char       *pattern;
    mw_mig_list keys;
};

struct inl {
    mw_mig_list  names, domains, selectors, files;   /* parallel: the inline keys */
    struct rule *rule;
    size_t       nrules;
};

static bool has_glob(const char *s) { return strpbrk(s, "*?[") != NULL; }

static void inl_key(struct inl *in, const char *name, const char *d, const char *s, const char *f)
{
    for (size_t i = 0; i < in->names.n; i++)
        if (strcmp(in->names.v[i], name) == 0)
            return;
    mw_mig_list_add(&in->names, name);
    mw_mig_list_add(&in->domains, d);
    mw_mig_list_add(&in->selectors, s);
    mw_mig_list_add(&in->files, f);
}

static void inl_rule(struct inl *in, const char *pattern, const char *key)
{
    struct rule *r = NULL;
    for (size_t i = 0; i < in->nrules && r == NULL; i++)
        if (strcmp(in->rule[i].pattern, pattern) == 0)
            r = &in->rule[i];
    if (r == NULL) {
        in->rule = mw_reallocarray(in->rule, in->nrules + 1, sizeof *in->rule);
        r = &in->rule[in->nrules++];
        *r = (struct rule){.pattern = mw_strdup(pattern)};
    }
    for (size_t i = 0; i < r->keys.n; i++)
        if (strcmp(r->keys.v[i], key) == 0)
            return;
    mw_mig_list_add(&r->keys, key);
}

static void inl_write(mw_mig_out *o, struct inl *in, const char *why)
{
    mw_buf k = MW_BUF_INIT, r = MW_BUF_INIT;

    mw_buf_puts(&k, "(");
    for (size_t i = 0; i < in->names.n; i++) {
        char *n = mw_mig_quote(in->names.v[i]), *d = mw_mig_quote(in->domains.v[i]);
        char *s = mw_mig_quote(in->selectors.v[i]), *f = mw_mig_quote(in->files.v[i]);
        mw_buf_printf(&k, "%s\n    { name = %s; domain = %s; selector = %s; file = %s; }",
                      i > 0 ? "," : "", n, d, s, f);
        free(n), free(d), free(s), free(f);
    }
    mw_buf_puts(&k, "\n  )");
    mw_buf_puts(&r, "(");
    for (size_t i = 0; i < in->nrules; i++) {
        char *p = mw_mig_quote(in->rule[i].pattern), *l = mw_mig_quote_list(&in->rule[i].keys);
        mw_buf_printf(&r, "%s\n    { pattern = %s; keys = %s; }", i > 0 ? "," : "", p, l);
        free(p), free(l);
    }
    mw_buf_puts(&r, "\n  )");
    if (in->names.n > 0)
        mw_mig_set(o, "dkim", "keys", mw_buf_cstr(&k), "%s", why);
    if (in->nrules > 0)
        mw_mig_set(o, "dkim", "signing", mw_buf_cstr(&r),
                   "signing rules, tried in this order, first match wins (a pattern with '@' is "
                   "matched against the From address, one without against its domain)");
    mw_buf_free(&k);
    mw_buf_free(&r);
}

static void inl_free(struct inl *in)
{
    mw_mig_list_free(&in->names);
    mw_mig_list_free(&in->domains);
    mw_mig_list_free(&in->selectors);
    mw_mig_list_free(&in->files);
    for (size_t i = 0; i < in->nrules; i++) {
        free(in->rule[i].pattern);
        mw_mig_list_free(&in->rule[i].keys);
    }
    free(in->rule);
}

/* Split "w1 w2 ..." into at most max blank-separated words (in place). */
static size_t words(char *s, char **w, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t", &save); t != NULL && n < max; t = strtok_r(NULL, " \t", &save))
        w[n++] = t;
    return n;
}

/* Parse the KeyTable lines; entries with inline key data or a bad shape are
 * reported and left out.  *pct: some domain is "%". */
static struct kt *kt_parse(mw_mig_out *o, const mw_mig_list *l, size_t *n, bool *pct, const char *src)
{
    struct kt *kt = mw_calloc(l->n + 1, sizeof *kt);
    *n = 0;
    *pct = false;
    for (size_t i = 0; i < l->n; i++) {
        char *line = mw_strdup(l->v[i]), *w[3];
        size_t nw = words(line, w, 3);
        char *c1 = nw == 2 ? strchr(w[1], ':') : NULL;
        char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL) {
            mw_mig_gap(o, "dkim", "KeyTable (%s) line \"%s\": expected \"NAME DOMAIN:SELECTOR:KEY\"",
                       src, l->v[i]);
        } else if (c2[1] != '/') {
            *c1 = '\0';
            mw_mig_gap(o, "dkim", "KeyTable (%s) key \"%s\": the private key is written inline (or as a "
                       "relative path); mailwarden reads keys from files only.\nWrite it to a file "
                       "(mode 0600, owned by the daemon's user) and add it to dkim.keys.", src, w[0]);
        } else {
            *c1 = *c2 = '\0';
            kt[*n] = (struct kt){mw_strdup(w[0]), mw_strdup(w[1]), mw_strdup(c1 + 1), mw_strdup(c2 + 1)};
            *pct = *pct || strcmp(w[1], "%") == 0;
            ++*n;
        }
        free(line);
    }
    return kt;
}

static const struct kt *kt_find(const struct kt *kt, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kt[i].name, name) == 0)
            return &kt[i];
    return NULL;
}

/* One SigningTable line into the inline tables. */
static void st_line(mw_mig_out *o, struct inl *in, const struct kt *kt, size_t nkt, const char *line,
                    bool refile, const char *src)
{
    char *copy = mw_strdup(line), *w[4];
    size_t nw = words(copy, w, 4);
    if (nw < 2) {
        mw_mig_gap(o, "dkim", "SigningTable (%s) line \"%s\": no key name", src, line);
        free(copy);
        return;
    }
    const char *at = strrchr(w[0], '@');
    const char *dom = at != NULL ? at + 1 : w[0];
    bool concrete = !has_glob(dom) && dom[0] != '\0';
    mw_buf pat = MW_BUF_INIT, kname = MW_BUF_INIT;

    if (refile && at == NULL && strcmp(w[0], "*") == 0)
        mw_buf_puts(&pat, "*@*");
    else
        mw_buf_puts(&pat, w[0]);
    if (nw > 2)
        mw_mig_note(o, "dkim", "SigningTable (%s) \"%s\": the signer field \"%s\" (i=) is not carried: "
                    "mailwarden's signatures have no i=, which stands for the signing domain", src, w[0], w[2]);
    mw_buf_puts(&kname, strcmp(w[1], "%") == 0 ? dom : w[1]);
    const struct kt *k = NULL;
    if (strcmp(w[1], "%") == 0 && !concrete)
        mw_mig_gap(o, "dkim", "SigningTable (%s) \"%s %s\": the key is named after the sender's "
                   "domain (%%) for a wildcard pattern; mailwarden's signing table cannot derive a key "
                   "name from the From domain.\nAdd one rule per domain to dkim.signing.", src, w[0], w[1]);
    else if ((k = kt_find(kt, nkt, mw_buf_cstr(&kname))) == NULL)
        mw_mig_gap(o, "dkim", "SigningTable (%s) \"%s\": key \"%s\" is not in the KeyTable (or could "
                   "not be carried)", src, w[0], mw_buf_cstr(&kname));
    else if (strcmp(k->domain, "%") == 0 && !concrete)
        mw_mig_gap(o, "dkim", "SigningTable (%s) \"%s\": key \"%s\" signs as the sender's domain (%%) "
                   "and the pattern's domain is a wildcard; mailwarden's keys have a fixed d= domain.\n"
                   "Add one key and one rule per domain to dkim.keys and dkim.signing.", src, w[0], k->name);
    else {
        mw_buf name = MW_BUF_INIT;
        const char *d = k->domain;
        if (strcmp(d, "%") == 0) {
            mw_buf_printf(&name, "%s/%s", k->name, dom);
            d = dom;
        } else
            mw_buf_puts(&name, k->name);
        inl_key(in, mw_buf_cstr(&name), d, k->selector, k->file);
        inl_rule(in, mw_buf_cstr(&pat), mw_buf_cstr(&name));
        mw_buf_free(&name);
    }
    mw_buf_free(&pat);
    mw_buf_free(&kname);
    free(copy);
}

/* Whether mailwarden's own table reader takes the tables as they are: one
 * key name per line, '%' anywhere OpenDKIM allows it, except a key whose
 * file path has '%' (one file per domain) named by a wildcard-domain
 * pattern, whose files mailwarden cannot know at start. */
static bool tables_native(const mw_mig_kv *kt, const mw_mig_list *ktl, const mw_mig_list *stl,
                          const struct kt *kts, size_t nkt)
{
    if (strncmp(kt->val, "refile:", 7) == 0 || nkt != ktl->n)
        return false;
    if (kt->val[0] != '/' && strncmp(kt->val, "file:/", 6) != 0)
        return false;
    for (size_t i = 0; i < stl->n; i++) {
        char *copy = mw_strdup(stl->v[i]), *w[4];
        size_t nw = words(copy, w, 4);
        bool ok = nw == 2;
        if (ok) {
            const char *at = strrchr(w[0], '@'), *dom = at != NULL ? at + 1 : w[0];
            const struct kt *k = kt_find(kts, nkt, w[1]);
            if ((dom[0] == '\0' || has_glob(dom)) && k != NULL && strchr(k->file, '%') != NULL)
                ok = false;
        }
        free(copy);
        if (!ok)
            return false;
    }
    return true;
}

static void tables(mw_mig_out *o, mw_mig_kv *ktkv, mw_mig_kv *stkv)
{
    mw_mig_list ktl = {0}, stl = {0};
    bool ktre, stre;
    char why[1200];
    const char *stpath;

    if (!mw_mig_dataset(ktkv->val, &ktl, &ktre, NULL, why, sizeof why)) {
        mw_mig_gap(o, "dkim", "KeyTable %s (%s): %s", ktkv->val, ktkv->where, why);
        goto out;
    }
    if (!mw_mig_dataset(stkv->val, &stl, &stre, &stpath, why, sizeof why)) {
        mw_mig_gap(o, "dkim", "SigningTable %s (%s): %s", stkv->val, stkv->where, why);
        goto out;
    }
    if (stpath[0] == '\0' || (stkv->val[0] != '/' && strncmp(stkv->val, "file:/", 6) != 0 &&
                              strncmp(stkv->val, "refile:/", 8) != 0))
        stpath = NULL;   /* a list or a relative path: inline */
    size_t nkt;
    bool pct;
    struct kt *kt = kt_parse(o, &ktl, &nkt, &pct, ktkv->where);
    if (stpath != NULL && tables_native(ktkv, &ktl, &stl, kt, nkt)) {
        char *q = mw_mig_quote(ktkv->val);
        mw_mig_set(o, "dkim", "key_table", q, "KeyTable %s (%s): carried, the same file "
                   "(mailwarden reads OpenDKIM's KeyTable format%s)", ktkv->val, ktkv->where,
                   pct ? ", '%' included: d= is the sender's domain" : "");
        free(q);
        q = mw_mig_quote(stkv->val);
        mw_mig_set(o, "dkim", "signing_table", q, "SigningTable %s (%s): carried, the same file%s",
                   stkv->val, stkv->where, stre ? " (refile: wildcard patterns, in file order, first "
                   "match wins)" : " (exact addresses first, then domains)");
        free(q);
    } else {
        struct inl in = {0};
        for (int pass = 0; pass < (stre ? 1 : 2); pass++)
            for (size_t i = 0; i < stl.n; i++) {
                bool addr = strchr(stl.v[i], '@') != NULL && strcspn(stl.v[i], "@") < strcspn(stl.v[i], " \t");
                if (!stre && addr != (pass == 0))
                    continue;
                st_line(o, &in, kt, nkt, stl.v[i], stre, stkv->where);
            }
        mw_buf w = MW_BUF_INIT;
        mw_buf_printf(&w, "KeyTable %s (%s) and SigningTable %s (%s): expanded into dkim.keys and "
                      "dkim.signing, because they use what mailwarden's table files do not (%s).\n"
                      "Keys named NAME/DOMAIN stand for OpenDKIM's %% (the sender's domain) resolved "
                      "for DOMAIN.  Edit the signing setup here from now on.",
                      ktkv->val, ktkv->where, stkv->val, stkv->where,
                      pct ? "'%' in the KeyTable" : "'%', a signer field, inline keys or a list");
        inl_write(o, &in, mw_buf_cstr(&w));
        mw_buf_free(&w);
        inl_free(&in);
    }
    for (size_t i = 0; i < nkt; i++)
        free(kt[i].name), free(kt[i].domain), free(kt[i].selector), free(kt[i].file);
    free(kt);
out:
    mw_mig_list_free(&ktl);
    mw_mig_list_free(&stl);
}

void mw_mig_dkim_signing(mw_mig_conf *c, mw_mig_out *o)
{
    mw_mig_kv *kt = mw_mig_get(c, "KeyTable"), *st = mw_mig_get(c, "SigningTable");
    mw_mig_kv *dom = mw_mig_get(c, "Domain"), *sel = mw_mig_get(c, "Selector");
    mw_mig_kv *kf = mw_mig_get(c, "KeyFile"), *sub = mw_mig_get(c, "SubDomains");

    if (kt != NULL && st != NULL)
        tables(o, kt, st);
    else if (kt != NULL || st != NULL)
        mw_mig_gap(o, "dkim", "%s %s (%s) without a %s: OpenDKIM signs nothing with it either",
                   kt ? "KeyTable" : "SigningTable", kt ? kt->val : st->val, kt ? kt->where : st->where,
                   kt ? "SigningTable" : "KeyTable");
    if (kt != NULL && (dom != NULL || kf != NULL || sel != NULL)) {
        mw_mig_note(o, "dkim", "Domain/Selector/KeyFile: not carried, OpenDKIM ignores them too when "
                    "a KeyTable is set");
        return;
    }
    if (dom == NULL && kf == NULL && sel == NULL) {
        if (sub != NULL)
            mw_mig_note(o, "dkim", "SubDomains %s (%s): nothing to carry without Domain", sub->val, sub->where);
        return;
    }
    if (dom == NULL || kf == NULL || sel == NULL) {
        mw_mig_gap(o, "dkim", "Domain, Selector and KeyFile must all be set for OpenDKIM to sign; "
                   "only some are (%s), so nothing is signed", (dom ? dom : kf ? kf : sel)->where);
        return;
    }
    mw_mig_list d = {0};
    bool re;
    char why[1200];
    struct inl in = {0};
    bool subs = sub != NULL && mw_mig_bool(sub->val) == 1;
    if (!mw_mig_dataset(dom->val, &d, &re, NULL, why, sizeof why)) {
        mw_mig_gap(o, "dkim", "Domain %s (%s): %s", dom->val, dom->where, why);
    } else {
        for (size_t i = 0; i < d.n; i++) {
            inl_key(&in, d.v[i], d.v[i], sel->val, kf->val);
            inl_rule(&in, d.v[i], d.v[i]);
            if (subs) {
                mw_buf p = MW_BUF_INIT;
                mw_buf_printf(&p, "*.%s", d.v[i]);
                inl_rule(&in, mw_buf_cstr(&p), d.v[i]);
                mw_buf_free(&p);
            }
        }
        mw_buf w = MW_BUF_INIT;
        mw_buf_printf(&w, "Domain %s (%s), Selector %s (%s), KeyFile %s (%s)%s: carried as one key "
                      "per domain, all with the same selector and key file", dom->val, dom->where,
                      sel->val, sel->where, kf->val, kf->where,
                      subs ? ", SubDomains yes (rules \"*.DOMAIN\" sign subdomains with d=DOMAIN)" : "");
        inl_write(o, &in, mw_buf_cstr(&w));
        mw_buf_free(&w);
    }
    inl_free(&in);
    mw_mig_list_free(&d);
}
