/*
 * migrate_src.c - read OpenDKIM / OpenDMARC configuration files and
 * OpenDKIM data sets for `mailwarden migrate`.
 *
 * Format (opendkim.conf(5), opendmarc.conf(5)): one "Key value" per line,
 * key and value separated by blanks, '#' to the end of the line is a
 * comment, keys are case-insensitive.  Data sets are "file:", "refile:",
 * an absolute path, or a comma-separated list; the database forms (db:,
 * dsn:, ldap:, lua:, memcache:, redis:, mdb:, erlang:, socket:) are refused
 * with a reason, which the caller writes into the migrated file.
 *
 * Limits: lines of at most 4096 bytes, 100000 entries per file; past them
 * the read fails with a reason (never a silent truncation).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "migrate.h"

#define MIG_LINE_MAX 4096
#define MIG_ENTRIES_MAX 100000

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Call fn for each non-empty, comment-stripped line of path. */
static bool read_lines(const char *path, bool (*fn)(void *arg, char *line, unsigned lineno),
                       void *arg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char line[MIG_LINE_MAX + 2];
    unsigned lineno = 0;
    bool ok = true;

    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    while (ok && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, errlen, "%s:%u: line longer than %d bytes", path, lineno, MIG_LINE_MAX);
            ok = false;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *t = trim(line);
        if (*t != '\0' && !fn(arg, t, lineno)) {
            snprintf(err, errlen, "%s:%u: more than %d entries", path, lineno, MIG_ENTRIES_MAX);
            ok = false;
        }
    }
    fclose(f);
    return ok;
}

struct conf_arg {
    mw_mig_conf *c;
    const char  *path;
};

static bool conf_line(void *arg, char *line, unsigned lineno)
{
    struct conf_arg *a = arg;
    mw_mig_conf *c = a->c;
    size_t klen = strcspn(line, " \t");
    mw_buf where = MW_BUF_INIT;

    if (c->n >= MIG_ENTRIES_MAX)
        return false;
    c->kv = mw_reallocarray(c->kv, c->n + 1, sizeof *c->kv);
    mw_mig_kv *kv = &c->kv[c->n++];
    kv->key = mw_strndup(line, klen);
    kv->val = mw_strdup(trim(line + klen));
    mw_buf_printf(&where, "%s:%u", a->path, lineno);
    kv->where = mw_buf_steal(&where);
    kv->used = false;
    return true;
}

bool mw_mig_conf_read(mw_mig_conf *c, const char *path, char *err, size_t errlen)
{
    struct conf_arg a = {.c = c, .path = path};
    return read_lines(path, conf_line, &a, err, errlen);
}

void mw_mig_conf_free(mw_mig_conf *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->kv[i].key);
        free(c->kv[i].val);
        free(c->kv[i].where);
    }
    MW_FREE(&c->kv);
    c->n = 0;
}

mw_mig_kv *mw_mig_get(mw_mig_conf *c, const char *key)
{
    mw_mig_kv *last = NULL;
    for (size_t i = 0; c != NULL && i < c->n; i++)
        if (strcasecmp(c->kv[i].key, key) == 0) {
            c->kv[i].used = true;
            last = &c->kv[i];
        }
    return last;
}

int mw_mig_bool(const char *v)
{
    static const char *const yes[] = {"yes", "true", "1", "on", "y", "t", NULL};
    static const char *const no[] = {"no", "false", "0", "off", "n", "f", NULL};
    for (size_t i = 0; yes[i] != NULL; i++)
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
    for (size_t i = 0; no[i] != NULL; i++)
        if (strcasecmp(v, no[i]) == 0)
            return 0;
    return -1;
}

void mw_mig_list_add(mw_mig_list *l, const char *s)
{
    l->v = mw_reallocarray(l->v, l->n + 1, sizeof *l->v);
    l->v[l->n++] = mw_strdup(s);
}

void mw_mig_list_free(mw_mig_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    MW_FREE(&l->v);
    l->n = 0;
}

static bool list_line(void *arg, char *line, unsigned lineno)
{
    mw_mig_list *l = arg;
    (void)lineno;
    if (l->n >= MIG_ENTRIES_MAX)
        return false;
    mw_mig_list_add(l, line);
    return true;
}

bool mw_mig_dataset(const char *spec, mw_mig_list *out, bool *refile, const char **path,
                    char *why, size_t whylen)
{
    static const char *const dbs[] = {"db:", "dsn:", "ldap:", "ldaps:", "ldapi:", "lua:",
                                      "memcache:", "redis:", "mdb:", "erlang:", "socket:", NULL};
    *refile = false;
    if (path != NULL)
        *path = "";
    for (size_t i = 0; dbs[i] != NULL; i++)
        if (strncasecmp(spec, dbs[i], strlen(dbs[i])) == 0) {
            snprintf(why, whylen, "data set \"%s\" is a %.*s database, which mailwarden does not "
                     "read (export it to a file)", spec, (int)strlen(dbs[i]) - 1, dbs[i]);
            return false;
        }
    const char *file = NULL;
    if (strncmp(spec, "file:", 5) == 0)
        file = spec + 5;
    else if (strncmp(spec, "refile:", 7) == 0) {
        file = spec + 7;
        *refile = true;
    } else if (spec[0] == '/' || strncmp(spec, "./", 2) == 0 || strncmp(spec, "../", 3) == 0)
        file = spec;
    if (file != NULL) {
        if (path != NULL)
            *path = file;
        return read_lines(file, list_line, out, why, whylen);
    }
    if (strncmp(spec, "csl:", 4) == 0)
        spec += 4;
    char *copy = mw_strdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        char *w = trim(t);
        if (*w != '\0')
            mw_mig_list_add(out, w);
    }
    free(copy);
    return true;
}
