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

bool mw_authres_is_ours(const char *value, size_t len, const char *id)
{
    char got[256];
    if (!mw_authres_parse_id(value, len, got, sizeof got))
        return false;
    return mw_str_ieq(got, strlen(got), id, strlen(id));
}
