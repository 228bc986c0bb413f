/*
 * config_dump.c - the effective configuration as mailwarden.conf text
 * (config_dump.h), generated from config.c's key table.
 *
 * Why text that loads back: `config-dump --defaults > x.conf` is the way to
 * start a configuration, and `config-dump -n` shows exactly what a file
 * changes; both are only trustworthy if the loader reads them as written.
 * So strings are quoted the way libconfig's scanner reads them, durations
 * are written with a unit ("5s", "300ms": the loader accepts both forms),
 * and where a value came from is a trailing "# ..." comment.
 *
 * Keys of a group ("dns.timeout") are written inside one "dns = { ... };"
 * block: libconfig names cannot contain dots.
 */
#include "config_dump.h"

#include <stdio.h>
#include <string.h>

#include "cidr.h"

void mw_config_quote(mw_buf *out, const char *s)
{
    mw_buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : ""); *p != '\0'; p++) {
        switch (*p) {
        case '"':  mw_buf_puts(out, "\\\""); break;
        case '\\': mw_buf_puts(out, "\\\\"); break;
        case '\n': mw_buf_puts(out, "\\n"); break;
        case '\t': mw_buf_puts(out, "\\t"); break;
        case '\r': mw_buf_puts(out, "\\r"); break;
        case '\f': mw_buf_puts(out, "\\f"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                mw_buf_printf(out, "\\x%02x", *p);
            else
                mw_buf_putc(out, (char)*p);
        }
    }
    mw_buf_putc(out, '"');
}

void mw_config_format_duration_ms(mw_buf *out, unsigned long long ms)
{
    static const struct { const char *u; unsigned long long ms; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};

    if (ms == 0) {
        mw_buf_puts(out, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ms % units[i].ms == 0) {
            mw_buf_printf(out, "%llu%s", ms / units[i].ms, units[i].u);
            return;
        }
    mw_buf_printf(out, "%llums", ms);
}

/* A comment text: one line, whatever a file name holds. */
static void put_comment(mw_buf *out, const char *s)
{
    mw_buf_puts(out, "  # ");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        mw_buf_putc(out, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
    mw_buf_putc(out, '\n');
}

static void put_strlist(mw_buf *out, char *const *v, size_t n)
{
    mw_buf_puts(out, "[");
    for (size_t i = 0; i < n; i++) {
        mw_buf_puts(out, i == 0 ? " " : ", ");
        mw_config_quote(out, v[i]);
    }
    mw_buf_puts(out, n > 0 ? " ]" : "]");
}

static void put_cidrlist(mw_buf *out, const mw_cidr_set *set)
{
    char net[80];
    size_t n = mw_cidr_set_count(set);

    mw_buf_puts(out, "[");
    for (size_t i = 0; i < n; i++) {
        mw_buf_puts(out, i == 0 ? " " : ", ");
        mw_config_quote(out, mw_cidr_set_entry(set, i, net, sizeof net));
    }
    mw_buf_puts(out, n > 0 ? " ]" : "]");
}

/* Typed read of a field at off (T a single identifier: typedef pointers). */
#define AT(base, off, T) ((const T *)(const void *)((const char *)(base) + (off)))
typedef char *str;
typedef char **strv;
typedef mw_cidr_set *cidrp;

/* One element of a list of groups: { a = "x"; b = [ ... ]; n = 3; } */
static void put_group_elem(mw_buf *out, const mw_config_key_info *k, const char *elem)
{
    mw_buf_puts(out, "{");
    for (size_t m = 0; m < k->nmembers; m++) {
        const mw_config_member *f = &k->members[m];
        switch (f->kind) {
        case MW_CM_STRING:
            if (*AT(elem, f->off, str) == NULL)
                continue;   /* optional, left out */
            mw_buf_printf(out, " %s = ", f->name);
            mw_config_quote(out, *AT(elem, f->off, str));
            break;
        case MW_CM_STRLIST:
            if (*AT(elem, f->off_n, size_t) == 0)
                continue;
            mw_buf_printf(out, " %s = ", f->name);
            put_strlist(out, *AT(elem, f->off, strv), *AT(elem, f->off_n, size_t));
            break;
        case MW_CM_UINT:
            if (*AT(elem, f->off, unsigned) == 0)
                continue;   /* 0: not given (every GF_UINT has min >= 1) */
            mw_buf_printf(out, " %s = %u", f->name, *AT(elem, f->off, unsigned));
            break;
        }
        mw_buf_putc(out, ';');
    }
    mw_buf_puts(out, " }");
}

/* "name = VALUE;  # ORIGIN" at indent. */
static void put_key(mw_buf *out, const mw_config_key_info *k, const char *indent, bool defaults)
{
    const char *leaf = strrchr(k->name, '.');
    const char *origin = k->origin != NULL ? k->origin
                         : k->def_host ? "default (this host's name)" : "default";

    leaf = leaf != NULL ? leaf + 1 : k->name;
    if (defaults)
        origin = k->def_host ? "default: this host's name, found at start" : "default";
    /* a default that depends on the host is shown, not written: a file made
     * from --defaults must not pin another machine's name */
    mw_buf_printf(out, "%s%s%s = ", indent, defaults && k->def_host ? "# " : "", leaf);
    switch (k->kind) {
    case MW_CK_STRING:
        mw_config_quote(out, *AT(k->field, 0, str));
        break;
    case MW_CK_BOOL:
        mw_buf_puts(out, *AT(k->field, 0, bool) ? "true" : "false");
        break;
    case MW_CK_UINT:
        mw_buf_printf(out, "%u", *AT(k->field, 0, unsigned));
        break;
    case MW_CK_MODE:
        mw_buf_printf(out, "\"%04o\"", (unsigned)*AT(k->field, 0, int));
        break;
    case MW_CK_ENUM:
        mw_config_quote(out, k->enum_word != NULL ? k->enum_word : "?");
        break;
    case MW_CK_DURATION:
    case MW_CK_DURATION_MS:
        mw_buf_putc(out, '"');
        mw_config_format_duration_ms(out, (unsigned long long)*AT(k->field, 0, unsigned) *
                                              (k->kind == MW_CK_DURATION ? 1000 : 1));
        mw_buf_putc(out, '"');
        break;
    case MW_CK_STRLIST:
        put_strlist(out, *AT(k->field, 0, strv), k->count);
        break;
    case MW_CK_CIDRLIST:
        put_cidrlist(out, *AT(k->field, 0, cidrp));
        break;
    case MW_CK_GROUPLIST: {
        const char *arr = *AT(k->field, 0, str);
        mw_buf_puts(out, "(");
        if (k->count == 0) {
            mw_buf_puts(out, ");");
            put_comment(out, origin);
            return;
        }
        put_comment(out, origin);
        for (size_t i = 0; i < k->count; i++) {
            const char *elem = arr + i * k->elem_size;
            mw_buf_printf(out, "%s    ", indent);
            put_group_elem(out, k, elem);
            mw_buf_puts(out, i + 1 < k->count ? ",\n" : "\n");
        }
        mw_buf_printf(out, "%s);\n", indent);
        return;
    }
    }
    mw_buf_putc(out, ';');
    put_comment(out, origin);
}

static bool wanted(const mw_config_key_info *k, mw_config_dump_mode mode)
{
    return mode != MW_DUMP_NON_DEFAULT || k->origin != NULL;
}

void mw_config_dump(const mw_config *cfg, mw_config_dump_mode mode, mw_buf *out)
{
    mw_config_key_info k, g;
    bool defaults = mode == MW_DUMP_DEFAULTS;

    mw_buf_printf(out, "# mailwarden config-dump%s: %s\n",
                  mode == MW_DUMP_DEFAULTS ? " --defaults"
                  : mode == MW_DUMP_NON_DEFAULT ? " -n" : "",
                  defaults ? "every key's default"
                  : cfg->path != NULL ? cfg->path : "no configuration file (defaults)");
    for (size_t i = 0; mw_config_key_info_get(cfg, i, &k); i++) {
        const char *dot = strchr(k.name, '.');
        if (dot == NULL) {
            if (wanted(&k, mode))
                put_key(out, &k, "", defaults);
            continue;
        }
        /* A group: written once, at its first key, with all its keys. */
        size_t glen = (size_t)(dot - k.name) + 1;
        bool seen = false, any = false;
        for (size_t j = 0; j < i && !seen && mw_config_key_info_get(cfg, j, &g); j++)
            seen = strncmp(g.name, k.name, glen) == 0;
        if (seen)
            continue;
        for (size_t j = i; mw_config_key_info_get(cfg, j, &g); j++)
            any = any || (strncmp(g.name, k.name, glen) == 0 && wanted(&g, mode));
        if (!any)
            continue;
        mw_buf_printf(out, "%.*s = {\n", (int)(glen - 1), k.name);
        for (size_t j = i; mw_config_key_info_get(cfg, j, &g); j++)
            if (strncmp(g.name, k.name, glen) == 0 && wanted(&g, mode))
                put_key(out, &g, "    ", defaults);
        mw_buf_puts(out, "};\n");
    }
}

/* roff text: a leading '.' or '\'' would be a request, '\\' an escape. */
static void put_roff(mw_buf *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        mw_buf_puts(out, "\\&");
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            mw_buf_puts(out, "\\e");
        else if (*s == '-')
            mw_buf_puts(out, "\\-");
        else
            mw_buf_putc(out, *s);
    }
}

void mw_config_dump_man(mw_buf *out)
{
    mw_config_errors errs = {0};
    mw_config *d = mw_config_load(NULL, NULL, &errs);
    mw_config_key_info k;
    mw_buf v = MW_BUF_INIT;

    mw_config_errors_free(&errs);
    for (size_t i = 0; d != NULL && mw_config_key_info_get(d, i, &k); i++) {
        static const char *const kn[] = {
            [MW_CK_STRING] = "String", [MW_CK_BOOL] = "Boolean", [MW_CK_UINT] = "Integer",
            [MW_CK_MODE] = "Octal mode string", [MW_CK_ENUM] = "Word",
            [MW_CK_DURATION] = "Duration (seconds)",
            [MW_CK_DURATION_MS] = "Duration (milliseconds)", [MW_CK_STRLIST] = "List of strings",
            [MW_CK_CIDRLIST] = "List of networks", [MW_CK_GROUPLIST] = "List of groups"};
        mw_buf_printf(out, ".TP\n.B %s\n%s", k.name, kn[k.kind]);
        if (k.kind == MW_CK_UINT)
            mw_buf_printf(out, ", %lld to %lld", k.min, k.max);
        else if (k.kind == MW_CK_DURATION || k.kind == MW_CK_DURATION_MS) {
            unsigned long long u = k.kind == MW_CK_DURATION ? 1000 : 1;
            mw_buf_puts(out, ", ");
            mw_config_format_duration_ms(out, (unsigned long long)k.min * u);
            mw_buf_puts(out, " to ");
            mw_config_format_duration_ms(out, (unsigned long long)k.max * u);
        }
        mw_buf_puts(out, "; default\n.B ");
        /* the default as config-dump --defaults writes it */
        mw_buf_reset(&v);
        put_key(&v, &k, "", true);
        const char *eq = strstr(mw_buf_cstr(&v), " = ");
        const char *end = strstr(mw_buf_cstr(&v), ";  # ");
        if (k.def_host)
            mw_buf_puts(out, "this host's name");
        else if (eq != NULL && end != NULL && k.kind != MW_CK_GROUPLIST) {
            mw_buf b = MW_BUF_INIT;
            mw_buf_append(&b, eq + 3, (size_t)(end - eq - 3));
            put_roff(out, mw_buf_cstr(&b));
            mw_buf_free(&b);
        } else {
            mw_buf_puts(out, "()");
        }
        mw_buf_puts(out, "\n");
        put_roff(out, k.doc);
        mw_buf_puts(out, ".\n");
    }
    mw_buf_free(&v);
    mw_config_free(&d);
}
