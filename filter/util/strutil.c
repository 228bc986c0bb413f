/*
 * strutil.c - string helpers for untrusted, length-carrying input.
 */
#include <ctype.h>
#include <string.h>

#include "alloc.h"
#include "strutil.h"

void mw_str_printable(mw_buf *out, const char *s, size_t len, size_t max_out)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = (max_out && len > max_out) ? max_out : len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            mw_buf_putc(out, (char)c);
        } else {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            mw_buf_append(out, e, 4);
        }
    }
    if (n < len)
        mw_buf_puts(out, "...");
}

bool mw_str_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    return true;
}

void mw_str_lower(char *s)
{
    for (; s && *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

const char *mw_addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : addr;
}

char *mw_addr_strip(const char *path)
{
    const char *s = path;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
        s++;
        n -= 2;
    }
    return mw_strndup(s, n);
}

bool mw_glob_match(const char *p, const char *s)
{
    const char *star = NULL, *ss = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            ss = s;
        } else if (*p == '?' || (*p && tolower((unsigned char)*p) == tolower((unsigned char)*s))) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++ss;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

bool mw_domain_valid(const char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    size_t lab = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (lab == 0 || s[i - 1] == '-')
                return false;
            lab = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-' || c == '_'))
            return false;
        if (lab == 0 && c == '-')
            return false;
        if (++lab > 63)
            return false;
    }
    return lab > 0 && s[n - 1] != '-';
}

size_t mw_str_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

    if (lb >= 64 || la >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof *prev);
    }
    return prev[lb];
}
