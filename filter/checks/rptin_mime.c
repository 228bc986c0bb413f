/*
 * rptin_mime.c - the MIME structure of a DMARC report mail (RFC 2045/2046):
 * headers, multipart bodies, base64 and quoted-printable, enough to reach
 * the application/gzip, application/zip or text/xml part a receiver
 * attaches (RFC 7489 section 7.2.1.1, RFC 9990 section 4).
 *
 * Design: one pass over the bytes, never a copy of the whole message;
 * nested multiparts recurse with a depth bound (MW_RPTIN_MAX_DEPTH) and all
 * parts together are counted against MW_RPTIN_MAX_PARTS.  Decoding only
 * shrinks data, so no bomb can come from here; decompression happens in
 * the caller (rptin_unpack.c) under its own caps.
 *
 * Sloppiness tolerated (mail as sent): LF or CRLF line ends, folded
 * headers, case-blind header and parameter names, quoted or bare
 * parameter values, whitespace after a boundary, a missing closing
 * boundary, base64 with line breaks or stray characters (ignored, as RFC
 * 2045 section 6.8 says).  Refused: a multipart without a boundary
 * parameter or without any boundary line.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "rptin.h"

#define MAX_HEADER_VALUE 8192

typedef struct hdrs {
    char ctype[MAX_HEADER_VALUE];   /* full Content-Type value, unfolded */
    char cte[64];
    char cdisp[MAX_HEADER_VALUE];
} hdrs;

/* End of the line starting at p (index of '\n' or len). */
static size_t line_end(const unsigned char *m, size_t p, size_t len)
{
    const unsigned char *nl = memchr(m + p, '\n', len - p);
    return nl ? (size_t)(nl - m) : len;
}

/* Append v to dst (capacity cap, *have used): folded lines are appended
 * with a known length, so a header of many short folds stays linear. */
static void put_value(char *dst, size_t cap, size_t *have_r, const unsigned char *v, size_t n)
{
    size_t have = *have_r;
    for (size_t i = 0; i < n && have + 1 < cap; i++) {
        unsigned char ch = v[i];
        dst[have++] = (ch == '\r' || ch == '\n' || ch == '\t' || ch == 0) ? ' ' : (char)ch;
    }
    dst[have] = 0;
    *have_r = have;
}

/* Read the header block at m[0..len); return the offset of the body. */
static size_t read_headers(const unsigned char *m, size_t len, hdrs *h)
{
    memset(h, 0, sizeof *h);
    size_t p = 0;
    char *cur = NULL;
    size_t curcap = 0, curlen = 0;
    while (p < len) {
        size_t e = line_end(m, p, len);
        size_t n = e - p;
        if (n > 0 && m[p + n - 1] == '\r')
            n--;
        size_t next = e < len ? e + 1 : len;
        if (n == 0)
            return next;   /* the empty line */
        if (m[p] == ' ' || m[p] == '\t') {
            if (cur)
                put_value(cur, curcap, &curlen, m + p, n);
        } else {
            const unsigned char *colon = memchr(m + p, ':', n);
            cur = NULL;
            if (colon) {
                size_t nl = (size_t)(colon - (m + p));
                const unsigned char *v = colon + 1;
                size_t vn = n - nl - 1;
                if (nl == 12 && strncasecmp((const char *)m + p, "Content-Type", 12) == 0)
                    cur = h->ctype, curcap = sizeof h->ctype;
                else if (nl == 25 && strncasecmp((const char *)m + p, "Content-Transfer-Encoding", 25) == 0)
                    cur = h->cte, curcap = sizeof h->cte;
                else if (nl == 19 && strncasecmp((const char *)m + p, "Content-Disposition", 19) == 0)
                    cur = h->cdisp, curcap = sizeof h->cdisp;
                curlen = 0;
                if (cur)
                    put_value(cur, curcap, &curlen, v, vn);
            }
        }
        p = next;
    }
    return len;   /* headers only, no body */
}

/* The media type of a Content-Type value, lower case, into out. */
static void media_type(const char *ct, char *out, size_t cap)
{
    while (*ct == ' ')
        ct++;
    size_t n = 0;
    while (ct[n] && ct[n] != ';' && ct[n] != ' ' && n + 1 < cap) {
        out[n] = (char)tolower((unsigned char)ct[n]);
        n++;
    }
    out[n] = 0;
}

/* Parameter name= of a header value (quoted or not) into out; false when absent. */
static bool param(const char *v, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strchr(v, ';');
    while (p) {
        p++;
        while (*p == ' ')
            p++;
        if (strncasecmp(p, name, nl) == 0) {
            const char *q = p + nl;
            while (*q == ' ')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ')
                    q++;
                size_t n = 0;
                if (*q == '"') {
                    q++;
                    while (*q && *q != '"' && n + 1 < cap) {
                        if (*q == '\\' && q[1])
                            q++;
                        out[n++] = *q++;
                    }
                } else {
                    while (*q && *q != ';' && *q != ' ' && n + 1 < cap)
                        out[n++] = *q++;
                }
                out[n] = 0;
                return n > 0;
            }
        }
        p = strchr(p, ';');
    }
    return false;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static void decode_b64(const unsigned char *s, size_t n, mw_buf *out)
{
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=')
            break;
        int v = b64val(s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            mw_buf_putc(out, (char)((acc >> bits) & 0xff));
        }
    }
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void decode_qp(const unsigned char *s, size_t n, mw_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            mw_buf_putc(out, (char)s[i]);
            continue;
        }
        if (i + 1 < n && s[i + 1] == '\n') {   /* soft break */
            i += 1;
        } else if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            mw_buf_putc(out, (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2])));
            i += 2;
        } else {
            mw_buf_putc(out, '=');
        }
    }
}

/* Is the line m[p..e) (no '\n') the boundary "--b" or "--b--"?  1 open, 2 close. */
static int is_boundary(const unsigned char *m, size_t p, size_t e, const char *b, size_t bl)
{
    if (e - p < bl + 2 || m[p] != '-' || m[p + 1] != '-' || memcmp(m + p + 2, b, bl) != 0)
        return 0;
    size_t q = p + 2 + bl;
    int kind = 1;
    if (e - q >= 2 && m[q] == '-' && m[q + 1] == '-') {
        kind = 2;
        q += 2;
    }
    for (; q < e; q++)
        if (m[q] != ' ' && m[q] != '\t' && m[q] != '\r')
            return 0;
    return kind;
}

static bool walk(const unsigned char *m, size_t len, int depth, unsigned *nparts, mw_rptin_part_cb cb,
                 void *arg, char *why, size_t whylen);

static bool multipart(const unsigned char *m, size_t len, const char *b, int depth, unsigned *nparts,
                      mw_rptin_part_cb cb, void *arg, char *why, size_t whylen)
{
    size_t bl = strlen(b), p = 0, start = SIZE_MAX;
    bool any = false;
    while (p < len) {
        size_t e = line_end(m, p, len);
        int k = is_boundary(m, p, e, b, bl);
        if (k) {
            any = true;
            if (start != SIZE_MAX) {
                /* the part ends before the line break preceding the boundary */
                size_t end = p;
                if (end > start && m[end - 1] == '\n')
                    end--;
                if (end > start && m[end - 1] == '\r')
                    end--;
                if (!walk(m + start, end - start, depth + 1, nparts, cb, arg, why, whylen))
                    return false;
            }
            if (k == 2)
                return true;
            start = e < len ? e + 1 : len;
        }
        p = e < len ? e + 1 : len;
    }
    if (!any) {
        snprintf(why, whylen, "multipart without any boundary line");
        return false;
    }
    if (start != SIZE_MAX && start < len)   /* no closing boundary: take the rest */
        return walk(m + start, len - start, depth + 1, nparts, cb, arg, why, whylen);
    return true;
}

static bool walk(const unsigned char *m, size_t len, int depth, unsigned *nparts, mw_rptin_part_cb cb,
                 void *arg, char *why, size_t whylen)
{
    if (depth > MW_RPTIN_MAX_DEPTH) {
        snprintf(why, whylen, "MIME nested deeper than %d levels: refused", MW_RPTIN_MAX_DEPTH);
        return false;
    }
    if (++*nparts > MW_RPTIN_MAX_PARTS) {
        snprintf(why, whylen, "more than %d MIME parts: refused", MW_RPTIN_MAX_PARTS);
        return false;
    }
    hdrs *h = mw_malloc(sizeof *h);
    size_t body = read_headers(m, len, h);
    char mt[128];
    media_type(h->ctype, mt, sizeof mt);
    bool ok = true;
    if (strncmp(mt, "multipart/", 10) == 0) {
        char b[256];
        if (!param(h->ctype, "boundary", b, sizeof b)) {
            snprintf(why, whylen, "%s without a boundary parameter", mt);
            ok = false;
        } else {
            ok = multipart(m + body, len - body, b, depth, nparts, cb, arg, why, whylen);
        }
        free(h);
        return ok;
    }
    char fn[256] = "";
    if (!param(h->cdisp, "filename", fn, sizeof fn))
        param(h->ctype, "name", fn, sizeof fn);
    for (char *q = fn; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q == 0x7f)
            *q = '?';
    char cte[64];
    media_type(h->cte, cte, sizeof cte);
    mw_buf dec = MW_BUF_INIT;
    if (strcmp(cte, "base64") == 0) {
        decode_b64(m + body, len - body, &dec);
        ok = cb(mt, fn, (const unsigned char *)(dec.data ? dec.data : ""), dec.len, arg);
    } else if (strcmp(cte, "quoted-printable") == 0) {
        decode_qp(m + body, len - body, &dec);
        ok = cb(mt, fn, (const unsigned char *)(dec.data ? dec.data : ""), dec.len, arg);
    } else {
        ok = cb(mt, fn, m + body, len - body, arg);
    }
    mw_buf_free(&dec);
    free(h);
    if (!ok)
        snprintf(why, whylen, "stopped");
    return ok;
}

bool mw_rptin_mime(const unsigned char *msg, size_t len, int depth, unsigned *nparts, mw_rptin_part_cb cb,
                   void *arg, char *why, size_t whylen)
{
    return walk(msg, len, depth, nparts, cb, arg, why, whylen);
}
