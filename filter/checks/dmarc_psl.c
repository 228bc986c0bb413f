/*
 * dmarc_psl.c - the public suffix list for DMARC's RFC 7489 mode.
 *
 * Purpose
 *   RFC 7489 §3.2 finds the Organizational Domain with a public suffix
 *   list: the longest matching suffix rule plus one label.  Debian ships the
 *   list as /usr/share/publicsuffix/effective_tld_names.dat (package
 *   publicsuffix).
 *
 * Design notes
 *   - Algorithm of publicsuffix.org: normal rules ("com"), wildcards
 *     ("*.ck": any label under ck is a suffix) and exceptions ("!www.ck":
 *     not a suffix; its parent is).  An exception wins; otherwise the
 *     matching rule with the most labels; no match is the implicit "*"
 *     rule (the top label is a suffix).
 *   - The whole file (ICANN and private sections) is used, as libopendmarc
 *     does with the same file.  Rules in Unicode (IDN TLDs) are matched as
 *     written: From domains in A-label form (xn--) under an IDN TLD fall
 *     back to the "*" rule (documented limitation).
 *   - Three sorted string arrays searched with bsearch: loaded once per
 *     config generation, read-only afterwards, so lookups need no lock.
 *     We do not use libopendmarc's opendmarc_tld_* because its table is
 *     process-global (a reload would free it under running threads).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "dmarc_priv.h"

typedef struct strset {
    char  **v;
    size_t  n, cap;
} strset;

struct mw_psl {
    strset rules, wild, excl;   /* "com"; "*.ck" stored as "ck"; "!www.ck" stored as "www.ck" */
};

static void set_add(strset *s, const char *str, size_t len)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = mw_reallocarray(s->v, s->cap, sizeof *s->v);
    }
    char *c = mw_strndup(str, len);
    for (char *p = c; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    s->v[s->n++] = c;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool set_has(const strset *s, const char *str)
{
    return s->n > 0 && bsearch(&str, s->v, s->n, sizeof *s->v, cmp_str) != NULL;
}

static void set_free(strset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

mw_psl *mw_psl_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char line[1024];
    mw_psl *psl;

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    psl = mw_calloc(1, sizeof *psl);
    while (fgets(line, sizeof line, f) != NULL) {
        char *p = line;
        size_t len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (p[0] == '/' && p[1] == '/')
            continue;
        len = strcspn(p, " \t\r\n");
        if (len == 0)
            continue;
        if (p[len - 1] == '.')   /* never in the list; be tolerant */
            len--;
        if (len == 0)
            continue;
        if (p[0] == '!' && len > 1)
            set_add(&psl->excl, p + 1, len - 1);
        else if (p[0] == '*' && p[1] == '.' && len > 2)
            set_add(&psl->wild, p + 2, len - 2);
        else
            set_add(&psl->rules, p, len);
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        fclose(f);
        mw_psl_free(&psl);
        return NULL;
    }
    fclose(f);
    if (psl->rules.n == 0) {
        snprintf(err, errlen, "%s: no public suffix rules found", path);
        mw_psl_free(&psl);
        return NULL;
    }
    qsort(psl->rules.v, psl->rules.n, sizeof *psl->rules.v, cmp_str);
    qsort(psl->wild.v, psl->wild.n, sizeof *psl->wild.v, cmp_str);
    qsort(psl->excl.v, psl->excl.n, sizeof *psl->excl.v, cmp_str);
    return psl;
}

void mw_psl_free(mw_psl **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    set_free(&(*pp)->rules);
    set_free(&(*pp)->wild);
    set_free(&(*pp)->excl);
    MW_FREE(pp);
}

size_t mw_psl_nrules(const mw_psl *psl)
{
    return psl->rules.n + psl->wild.n + psl->excl.n;
}

char *mw_psl_org_domain(const mw_psl *psl, const char *name)
{
    const char *starts[128];   /* start of each suffix, longest first */
    size_t n = 0, ps = 0;      /* ps: labels in the public suffix */

    if (name == NULL || *name == '\0')
        return NULL;
    starts[n++] = name;
    for (const char *p = name; *p && n < sizeof starts / sizeof starts[0]; p++)
        if (*p == '.' && p[1] != '\0')
            starts[n++] = p + 1;
    /* starts[i] has n - i labels. */
    for (size_t i = 0; i < n; i++) {
        size_t labels = n - i;
        if (set_has(&psl->excl, starts[i])) {
            ps = labels - 1;   /* an exception: its parent is the suffix */
            break;
        }
        if (ps < labels && set_has(&psl->rules, starts[i]))
            ps = labels;
        if (ps < labels && i + 1 < n && set_has(&psl->wild, starts[i + 1]))
            ps = labels;
    }
    if (ps == 0)
        ps = 1;   /* the implicit "*" rule */
    if (ps >= n)
        return mw_strdup(name);   /* the name is itself a public suffix */
    return mw_strdup(starts[n - ps - 1]);
}
