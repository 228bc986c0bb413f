/*
 * migrate_out.c - build the mailwarden.conf that `mailwarden migrate`
 * writes: settings by group, each with the comment that says where it came
 * from and what changed, comment-only notes, and the settings that could
 * not be carried, which are also summed up at the top of the file.
 *
 * The groups are written in a fixed order (top level, log, dns, trust, spf,
 * dkim, dmarc, history) in libconfig syntax, since libconfig names cannot
 * contain dots: "dkim.sign" is written as dkim = { sign = ...; };
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "migrate.h"

static const char *const group_order[] = {"", "log", "dns", "trust", "spf", "dkim", "dmarc",
                                          "history", NULL};

struct item {
    const char *group;   /* one of group_order */
    char       *key;     /* NULL: a comment-only item */
    char       *value;
    mw_buf      comment;
};

struct mw_mig_out {
    struct item *it;
    size_t       n;
    mw_mig_list  gaps;
};

mw_mig_out *mw_mig_out_new(void)
{
    return mw_calloc(1, sizeof(mw_mig_out));
}

void mw_mig_out_free(mw_mig_out **o)
{
    if (o == NULL || *o == NULL)
        return;
    for (size_t i = 0; i < (*o)->n; i++) {
        free((*o)->it[i].key);
        free((*o)->it[i].value);
        mw_buf_free(&(*o)->it[i].comment);
    }
    free((*o)->it);
    mw_mig_list_free(&(*o)->gaps);
    MW_FREE(o);
}

static const char *group_of(const char *g)
{
    for (size_t i = 0; group_order[i] != NULL; i++)
        if (strcmp(group_order[i], g) == 0)
            return group_order[i];
    return group_order[0];   /* a caller's typo lands at the top, visibly */
}

static struct item *find(const mw_mig_out *o, const char *group, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->it[i].key != NULL && strcmp(o->it[i].group, group) == 0 &&
            strcmp(o->it[i].key, key) == 0)
            return &o->it[i];
    return NULL;
}

static struct item *add(mw_mig_out *o, const char *group)
{
    o->it = mw_reallocarray(o->it, o->n + 1, sizeof *o->it);
    struct item *it = &o->it[o->n++];
    *it = (struct item){.group = group_of(group)};
    mw_buf_init(&it->comment);
    return it;
}

void mw_mig_set(mw_mig_out *o, const char *group, const char *key, const char *value,
                const char *fmt, ...)
{
    struct item *it = find(o, group_of(group), key);
    va_list ap;

    if (it == NULL) {
        it = add(o, group);
        it->key = mw_strdup(key);
    } else {
        free(it->value);
        mw_buf_putc(&it->comment, '\n');
    }
    it->value = mw_strdup(value);
    va_start(ap, fmt);
    mw_buf_vprintf(&it->comment, fmt, ap);
    va_end(ap);
}

void mw_mig_note(mw_mig_out *o, const char *group, const char *fmt, ...)
{
    struct item *it = add(o, group);
    va_list ap;
    va_start(ap, fmt);
    mw_buf_vprintf(&it->comment, fmt, ap);
    va_end(ap);
}

void mw_mig_gap(mw_mig_out *o, const char *group, const char *fmt, ...)
{
    struct item *it = add(o, group);
    va_list ap;
    mw_buf_puts(&it->comment, "NOT CARRIED: ");
    va_start(ap, fmt);
    mw_buf_vprintf(&it->comment, fmt, ap);
    va_end(ap);
    /* the summary gets the first line */
    const char *c = mw_buf_cstr(&it->comment) + strlen("NOT CARRIED: ");
    size_t n = strcspn(c, "\n");
    char *first = mw_strndup(c, n);
    mw_mig_list_add(&o->gaps, first);
    free(first);
}

size_t mw_mig_gaps(const mw_mig_out *o) { return o->gaps.n; }

bool mw_mig_isset(const mw_mig_out *o, const char *group, const char *key)
{
    return find(o, group_of(group), key) != NULL;
}

static void put_comment(FILE *f, const char *indent, const mw_buf *c)
{
    const char *s = mw_buf_cstr(c);
    while (*s != '\0') {
        size_t n = strcspn(s, "\n");
        fprintf(f, "%s#%s%.*s\n", indent, n > 0 ? " " : "", (int)n, s);
        s += n;
        if (*s == '\n')
            s++;
    }
}

void mw_mig_write(const mw_mig_out *o, FILE *f, const char *header)
{
    mw_buf h = MW_BUF_INIT;
    mw_buf_puts(&h, header);
    put_comment(f, "", &h);
    mw_buf_free(&h);
    if (o->gaps.n > 0) {
        fprintf(f, "#\n# %zu setting%s could not be carried over (details at each one below):\n",
                o->gaps.n, o->gaps.n == 1 ? "" : "s");
        for (size_t i = 0; i < o->gaps.n; i++)
            fprintf(f, "#   - %s\n", o->gaps.v[i]);
    }
    fputc('\n', f);
    for (size_t g = 0; group_order[g] != NULL; g++) {
        const char *grp = group_order[g];
        const char *indent = grp[0] == '\0' ? "" : "  ";
        bool any = false;
        for (size_t i = 0; i < o->n; i++)
            any = any || o->it[i].group == grp;
        if (!any)
            continue;
        if (grp[0] != '\0')
            fprintf(f, "%s = {\n", grp);
        bool first = true;
        for (size_t i = 0; i < o->n; i++) {
            const struct item *it = &o->it[i];
            if (it->group != grp)
                continue;
            if (!first)
                fputc('\n', f);
            first = false;
            put_comment(f, indent, &it->comment);
            if (it->key != NULL)
                fprintf(f, "%s%s = %s;\n", indent, it->key, it->value);
        }
        fprintf(f, grp[0] != '\0' ? "};\n\n" : "\n");
    }
}

char *mw_mig_quote(const char *s)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_putc(&b, '"');
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            mw_buf_putc(&b, '\\');
        mw_buf_putc(&b, *s);
    }
    mw_buf_putc(&b, '"');
    return mw_buf_steal(&b);
}

char *mw_mig_quote_list(const mw_mig_list *l)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_puts(&b, "[");
    for (size_t i = 0; i < l->n; i++) {
        char *q = mw_mig_quote(l->v[i]);
        mw_buf_printf(&b, "%s %s", i > 0 ? "," : "", q);
        free(q);
    }
    mw_buf_puts(&b, l->n > 0 ? " ]" : "]");
    return mw_buf_steal(&b);
}
