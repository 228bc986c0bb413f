/*
 * authres.c - Authentication-Results (RFC 8601) builder and authserv-id parser.
 *
 * Threat notes: property values and comments carry outside data (addresses,
 * HELO names).  Values that are not a plain RFC 8601 pvalue are emitted as
 * quoted-strings with '"' and '\' escaped; comments have parentheses,
 * backslashes and control bytes replaced so a hostile value can never close
 * the comment or inject a second resinfo.  Both are length-capped.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "authres.h"
#include "strutil.h"

#define MAX_VALUE 256
#define MAX_COMMENT 200

struct resinfo {
    char *text;   /* rendered "method=result (comment) p=v ..." */
};

struct mw_authres {
    char *id;
    struct resinfo *ri;
    size_t n, cap;
};

mw_authres *mw_authres_new(const char *authserv_id)
{
    mw_authres *ar = mw_calloc(1, sizeof *ar);
    ar->id = mw_strdup(authserv_id ? authserv_id : "localhost");
    return ar;
}

void mw_authres_free(mw_authres **pa)
{
    if (!pa || !*pa)
        return;
    mw_authres *ar = *pa;
    for (size_t i = 0; i < ar->n; i++)
        free(ar->ri[i].text);
    free(ar->ri);
    free(ar->id);
    free(ar);
    *pa = NULL;
}

/* RFC 2045 token characters (value = token / quoted-string). */
static bool is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* A pvalue we can emit bare: token, or [local-part@]domain with dot-atoms. */
static bool bare_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > MAX_VALUE)
        return false;
    const char *at = strrchr(v, '@');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if ((const char *)p == at)
            continue;
        if (!is_tchar(*p))
            return false;
    }
    if (at) {
        /* [local-part] "@" domain: the local part may be empty ("@example.com",
         * the usual header.i when i= is absent); otherwise both sides are
         * dot-atoms without empty labels */
        if (!at[1] || v[0] == '.' || (at > v && at[-1] == '.') || at[1] == '.' || v[n - 1] == '.')
            return false;
        if (strstr(v, ".."))
            return false;
    }
    return true;
}

static void put_value(mw_buf *b, const char *v)
{
    if (bare_ok(v)) {
        mw_buf_puts(b, v);
        return;
    }
    mw_buf_putc(b, '"');
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p && n < MAX_VALUE; p++, n++) {
        if (*p == '"' || *p == '\\') {
            mw_buf_putc(b, '\\');
            mw_buf_putc(b, (char)*p);
        } else if (*p < 0x20 || *p == 0x7f || *p >= 0x80) {
            mw_buf_putc(b, '?');
        } else {
            mw_buf_putc(b, (char)*p);
        }
    }
    mw_buf_putc(b, '"');
}

static void put_comment(mw_buf *b, const char *c)
{
    mw_buf_putc(b, '(');
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)c; *p && n < MAX_COMMENT; p++, n++) {
        if (*p == '(' || *p == ')' || *p == '\\')
            mw_buf_putc(b, *p == '(' ? '[' : *p == ')' ? ']' : '/');
        else if (*p < 0x20 || *p == 0x7f || *p >= 0x80)
            mw_buf_putc(b, '?');
        else
            mw_buf_putc(b, (char)*p);
    }
    mw_buf_putc(b, ')');
}

void mw_authres_add(mw_authres *ar, const char *method, const char *result,
                    const char *comment, const char *const *props)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%s=%s", method, result);
    if (comment && *comment) {
        mw_buf_putc(&b, ' ');
        put_comment(&b, comment);
    }
    for (size_t i = 0; props && props[i]; i += 2) {
        const char *name = props[i], *val = props[i + 1];
        if (!val)
            break;
        if (!*val)
            continue;
        mw_buf_printf(&b, " %s=", name);
        put_value(&b, val);
    }
    if (ar->n == ar->cap) {
        ar->cap = ar->cap ? ar->cap * 2 : 4;
        ar->ri = mw_reallocarray(ar->ri, ar->cap, sizeof *ar->ri);
    }
    ar->ri[ar->n++].text = mw_buf_steal(&b);
}

size_t mw_authres_count(const mw_authres *ar)
{
    return ar->n;
}

void mw_authres_render(const mw_authres *ar, mw_buf *out)
{
    mw_buf_puts(out, ar->id);
    if (ar->n == 0) {
        mw_buf_puts(out, "; none");
        return;
    }
    for (size_t i = 0; i < ar->n; i++) {
        mw_buf_puts(out, ";\n\t");
        mw_buf_puts(out, ar->ri[i].text);
    }
}

/* Skip folding whitespace and (nested) comments. */
static size_t skip_cfws(const char *s, size_t len, size_t i)
{
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
            i++;
        if (i < len && s[i] == '(') {
            int depth = 0;
            for (; i < len; i++) {
                if (s[i] == '\\' && i + 1 < len) {
                    i++;
                    continue;
                }
                if (s[i] == '(')
                    depth++;
                else if (s[i] == ')' && --depth == 0) {
                    i++;
                    break;
                }
            }
            continue;
        }
        return i;
    }
}

bool mw_authres_parse_id(const char *s, size_t len, char *out, size_t outlen)
{
    if (!outlen)
        return false;
    size_t i = skip_cfws(s, len, 0), o = 0;
    if (i >= len)
        return false;
    if (s[i] == '"') {
        for (i++; i < len && s[i] != '"'; i++) {
            if (s[i] == '\\' && i + 1 < len)
                i++;
            if (o + 1 >= outlen)
                return false;
            out[o++] = s[i];
        }
        if (i >= len)
            return false;
    } else {
        /* value = token; in practice a dotted host name (token chars allow '.') */
        while (i < len && is_tchar((unsigned char)s[i])) {
            if (o + 1 >= outlen)
                return false;
            out[o++] = s[i++];
        }
    }
    out[o] = '\0';
    return o > 0;
}

/* Equal ASCII case-insensitively, ignoring trailing dots on either side? */
static bool id_eq(const char *a, size_t na, const char *b, size_t nb)
{
    if (na > 0 && mw_str_ieq(a, na, b, nb))
        return true;
    while (na && a[na - 1] == '.')
        na--;
    while (nb && b[nb - 1] == '.')
        nb--;
    return na > 0 && mw_str_ieq(a, na, b, nb);
}

bool mw_authres_id_is(const char *value, size_t len, const char *id)
{
    char got[256];
    return mw_authres_parse_id(value, len, got, sizeof got) && mw_str_ieq(got, strlen(got), id, strlen(id));
}

/*
 * Does this A-R claim authserv-id id?  Read two ways, and either says yes:
 *   1. as RFC 8601 parses it (CFWS, then a token or quoted string);
 *   2. as a careless reader might: the text before the first ';' outside
 *      quotes and comments, with comments dropped and then every byte that
 *      is not a letter, digit, '.', '-' or '_' deleted.  So control bytes,
 *      DEL, 8-bit blanks or quotes around or inside our id ("\x01mx.ours",
 *      "mx.ours.exam\x7fple", "\xc2\xa0mx.ours", "mx.ours.") never hide it:
 *      a front end that must rewrite the value, or a downstream reader that
 *      strips such bytes, would see our id, so we remove the header.
 * Linear in the value; no allocation.
 */
bool mw_authres_is_ours(const char *value, size_t len, const char *id)
{
    char got[256];
    size_t idlen = strlen(id);
    if (mw_authres_parse_id(value, len, got, sizeof got) && id_eq(got, strlen(got), id, idlen))
        return true;
    char norm[256];
    size_t n = 0;
    int depth = 0;
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '\\' && i + 1 < len && (quoted || depth > 0)) {
            i++;
            c = (unsigned char)value[i];
            if (depth > 0)
                continue;
        } else if (!quoted && c == '(') {
            depth++;
            continue;
        } else if (!quoted && c == ')' && depth > 0) {
            depth--;
            continue;
        } else if (depth > 0) {
            continue;
        } else if (c == '"') {
            quoted = !quoted;
            continue;
        } else if (c == ';' && !quoted) {
            break;
        }
        if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
            continue;
        if (n + 1 >= sizeof norm)
            return false;   /* longer than any id: not ours */
        norm[n++] = (char)c;
    }
    return id_eq(norm, n, id, idlen);
}

/* ---- parsing resinfos (trusted upstream A-R) ---- */

/* Read a token or quoted-string at s[i] into out (lower-cased when asked). */
static size_t read_value(const char *s, size_t len, size_t i, mw_buf *out, bool lower)
{
    mw_buf_reset(out);
    if (i < len && s[i] == '"') {
        for (i++; i < len && s[i] != '"'; i++) {
            if (s[i] == '\\' && i + 1 < len)
                i++;
            if (out->len < MAX_VALUE)
                mw_buf_putc(out, s[i]);
        }
        if (i < len)
            i++;
        if (i >= len || s[i] != '@')
            return i;
        /* a quoted local-part: "a b"@example.com; the domain follows */
    }
    while (i < len && s[i] != ';' && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' &&
           s[i] != '(' && s[i] != '=') {
        if (out->len < MAX_VALUE)
            mw_buf_putc(out, lower ? (char)tolower((unsigned char)s[i]) : s[i]);
        i++;
    }
    return i;
}

static size_t skip_to_semicolon(const char *s, size_t len, size_t i)
{
    bool q = false;
    int depth = 0;
    for (; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len) {
            i++;
            continue;
        }
        if (!depth && s[i] == '"')
            q = !q;
        else if (!q && s[i] == '(')
            depth++;
        else if (!q && s[i] == ')' && depth)
            depth--;
        else if (!q && !depth && s[i] == ';')
            return i;
    }
    return i;
}

bool mw_authres_parse(const char *s, size_t len, mw_authres_parsed *out)
{
    memset(out, 0, sizeof *out);
    if (!mw_authres_parse_id(s, len, out->id, sizeof out->id))
        return false;
    size_t i = skip_to_semicolon(s, len, 0);
    mw_buf name = MW_BUF_INIT, val = MW_BUF_INIT;
    while (i < len && out->nri < MW_AR_MAX_RESINFO) {
        i++;   /* past ';' */
        i = skip_cfws(s, len, i);
        size_t end = skip_to_semicolon(s, len, i);
        /* method[/version]=result */
        i = read_value(s, end, i, &name, true);
        if (i >= end || s[i] != '=' || name.len == 0 || strcmp(name.data, "none") == 0) {
            i = end;
            continue;
        }
        char *slash = strchr(name.data, '/');
        if (slash)
            *slash = '\0';
        i = read_value(s, end, i + 1, &val, true);
        mw_ar_resinfo *ri = &out->ri[out->nri++];
        ri->method = mw_strdup(name.data);
        ri->result = mw_strdup(mw_buf_cstr(&val));
        /* properties: ptype.property=value, separated by CFWS */
        for (;;) {
            i = skip_cfws(s, end, i);
            if (i >= end)
                break;
            size_t before = i;
            i = read_value(s, end, i, &name, true);
            if (i < end && s[i] == '=' && name.len && strchr(name.data, '.')) {
                i = read_value(s, end, i + 1, &val, false);
                if (ri->nprops < MW_AR_MAX_PROPS) {
                    ri->prop_name[ri->nprops] = mw_strdup(name.data);
                    ri->prop_value[ri->nprops] = mw_strdup(mw_buf_cstr(&val));
                    ri->nprops++;
                }
            } else if (i == before) {
                i++;   /* skip a stray character */
            }
        }
        i = end;
    }
    mw_buf_free(&name);
    mw_buf_free(&val);
    return true;
}

void mw_authres_parsed_clear(mw_authres_parsed *p)
{
    for (size_t i = 0; i < p->nri; i++) {
        free(p->ri[i].method);
        free(p->ri[i].result);
        for (size_t k = 0; k < p->ri[i].nprops; k++) {
            free(p->ri[i].prop_name[k]);
            free(p->ri[i].prop_value[k]);
        }
    }
    memset(p, 0, sizeof *p);
}

const char *mw_ar_prop(const mw_ar_resinfo *ri, const char *name)
{
    for (size_t k = 0; k < ri->nprops; k++)
        if (strcmp(ri->prop_name[k], name) == 0)
            return ri->prop_value[k];
    return NULL;
}
