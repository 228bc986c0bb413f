/*
 * spf_record.c - strict RFC 7208 record parser and macro expander (see
 * spf_record.h).
 *
 * Grammar (RFC 7208 sections 4.6.1, 5, 6, 7.1), implemented literally:
 *   record   = "v=spf1" *( 1*SP ( directive / modifier ) ) *SP
 *   modifier = name "=" ...  where name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
 *              (a term is a modifier exactly when it starts with such a name
 *              immediately followed by "=")
 *   directive = [ "+" / "-" / "?" / "~" ] mechanism
 *   domain-spec = macro-string domain-end
 *   domain-end  = ( "." toplabel [ "." ] ) / macro-expand
 *   cidr lengths: "0" / %x31-39 *DIGIT, at most 32 / 128 (no leading zeros)
 * plus the prose rules: exp= and redirect= at most once, c/r/t macros only
 * in explanation text, a nonzero DIGIT transformer, 7-bit ASCII only.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "alloc.h"
#include "spf_record.h"

/* ---- small helpers ------------------------------------------------------------ */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

static void fail(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || !whylen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* A term for messages: printable, at most 60 bytes. */
static void term_text(const char *s, size_t n, char out[72])
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < 60; i++)
        out[o++] = (s[i] >= 0x21 && s[i] < 0x7f) ? s[i] : '?';
    if (n > 60) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

bool mw_spf_is_record(const char *s, size_t len)
{
    return len >= 6 && strncasecmp(s, "v=spf1", 6) == 0 && (len == 6 || s[6] == ' ');
}

/* ---- macro syntax ------------------------------------------------------------- */

static bool is_delim(char c)
{
    return c && strchr(".-+,/_=", c) != NULL;
}

/*
 * One macro-expand at s[0] == '%': returns its length, 0 if invalid.
 * explain: c, r, t are allowed (explanation text; unknown modifiers too).
 */
static size_t macro_len(const char *s, size_t n, bool explain)
{
    if (n < 2)
        return 0;
    if (s[1] == '%' || s[1] == '_' || s[1] == '-')
        return 2;
    if (s[1] != '{' || n < 4)
        return 0;
    char l = (char)tolower((unsigned char)s[2]);
    if (!strchr("slodiphv", l) && !(explain && strchr("crt", l)))
        return 0;
    if (l == 0)
        return 0;
    size_t i = 3;
    size_t digits = 0;
    unsigned long val = 0;
    while (i < n && is_digit(s[i])) {
        val = val * 10 + (unsigned long)(s[i] - '0');
        if (val > 1000)
            val = 1000;
        digits++;
        i++;
    }
    if (digits && val == 0)
        return 0;                     /* 7.3: the DIGIT transformer must be nonzero */
    if (i < n && (s[i] == 'r' || s[i] == 'R'))
        i++;
    while (i < n && is_delim(s[i]))
        i++;
    if (i >= n || s[i] != '}')
        return 0;
    return i + 1;
}

/*
 * macro-string check over s[0..n): literals %x21-24 / %x26-7E (explain adds
 * SP); on success *last_macro_end tells where the last macro-expand ended
 * (0 if none) and *last_macro_start where it began.
 */
static bool macro_string_ok(const char *s, size_t n, bool explain, size_t *last_start,
                            size_t *last_end)
{
    size_t ls = 0, le = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '%') {
            size_t m = macro_len(s + i, n - i, explain);
            if (!m)
                return false;
            ls = i;
            le = i + m;
            i += m;
            continue;
        }
        if (!((c >= 0x21 && c <= 0x7e) || (explain && c == ' ')))
            return false;
        i++;
    }
    if (last_start)
        *last_start = ls;
    if (last_end)
        *last_end = le;
    return true;
}

static bool toplabel_ok(const char *s, size_t n)
{
    if (n == 0 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
        return false;
    bool alpha = false, dash = false;
    for (size_t i = 0; i < n; i++) {
        if (is_alpha(s[i]))
            alpha = true;
        else if (s[i] == '-')
            dash = true;
        else if (!is_digit(s[i]))
            return false;
    }
    return alpha || dash;
}

bool mw_spf_domain_spec_ok(const char *s, size_t n)
{
    size_t ls, le;
    if (n == 0 || !macro_string_ok(s, n, false, &ls, &le))
        return false;
    if (le == n && le > 0)
        return true;                  /* domain-end = macro-expand */
    size_t end = n;
    if (s[end - 1] == '.' && end - 1 >= le)
        end--;                        /* optional trailing dot */
    size_t dot = end;
    while (dot > le && s[dot - 1] != '.')
        dot--;
    if (dot == le || dot == 0 || s[dot - 1] != '.')
        return false;                 /* no literal "." before the top label */
    return toplabel_ok(s + dot, end - dot);
}

bool mw_spf_explain_ok(const char *s, size_t n)
{
    return macro_string_ok(s, n, true, NULL, NULL);
}

/* ---- record parsing ------------------------------------------------------------ */

/* "/" cidr at the very end of s[0..*n): strip it; -1 if absent, -2 if malformed. */
static int strip_cidr(const char *s, size_t *n, bool dual, int max)
{
    size_t e = *n, d = e;
    while (d > 0 && is_digit(s[d - 1]))
        d--;
    if (d == e || d == 0 || s[d - 1] != '/')
        return -1;
    size_t slash = d - 1;
    if (dual) {
        if (slash == 0 || s[slash - 1] != '/')
            return -1;
        slash--;
    } else if (slash > 0 && s[slash - 1] == '/') {
        return -1;                    /* "//N" is not an ip4 cidr */
    }
    if (e - d > 1 && s[d] == '0')
        return -2;                    /* leading zero */
    if (e - d > 3)
        return -2;
    int v = 0;
    for (size_t i = d; i < e; i++)
        v = v * 10 + (s[i] - '0');
    if (v > max)
        return -2;
    *n = slash;
    return v;
}

/* qnum "." qnum "." qnum "." qnum, qnum without leading zeros, <= 255. */
static bool ip4_ok(const char *s, size_t n, uint8_t out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t st = i;
        unsigned v = 0;
        while (i < n && is_digit(s[i]) && i - st < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == st || v > 255 || (i - st > 1 && s[st] == '0'))
            return false;
        out[part] = (uint8_t)v;
        if (part < 3) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
    }
    return i == n;
}

static bool ip6_ok(const char *s, size_t n, uint8_t out[16])
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isxdigit((unsigned char)s[i]) || s[i] == ':' || s[i] == '.'))
            return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1;
}

static void add_term(mw_spf_record *rec, const mw_spf_term *t)
{
    /* capacity doubles: it is the next power of two >= n, full exactly
     * when n is a power of two (growing by one made a long record
     * quadratic wherever realloc copies) */
    if ((rec->n & (rec->n - 1)) == 0)
        rec->t = mw_reallocarray(rec->t, rec->n ? 2 * rec->n : 1, sizeof *rec->t);
    rec->t[rec->n++] = *t;
}

static bool parse_modifier(mw_spf_record *rec, const char *s, size_t n, size_t eq, char *why,
                           size_t whylen)
{
    char tt[72];
    term_text(s, n, tt);
    const char *val = s + eq + 1;
    size_t vlen = n - eq - 1;
    mw_spf_term t = {.qual = '+', .cidr4 = -1, .cidr6 = -1};
    if (eq == 8 && strncasecmp(s, "redirect", 8) == 0)
        t.kind = MW_SPF_T_REDIRECT;
    else if (eq == 3 && strncasecmp(s, "exp", 3) == 0)
        t.kind = MW_SPF_T_EXP;
    else
        t.kind = MW_SPF_T_UNKNOWN_MOD;

    if (t.kind == MW_SPF_T_UNKNOWN_MOD) {
        if (!macro_string_ok(val, vlen, true, NULL, NULL)) {
            fail(why, whylen, "invalid macro-string in modifier '%s'", tt);
            return false;
        }
        t.spec = mw_strndup(s, eq);
        add_term(rec, &t);
        return true;
    }
    int *slot = t.kind == MW_SPF_T_REDIRECT ? &rec->redirect : &rec->exp;
    if (*slot >= 0) {
        fail(why, whylen, "'%.*s=' appears twice", (int)eq, s);
        return false;
    }
    if (!mw_spf_domain_spec_ok(val, vlen)) {
        fail(why, whylen, "invalid domain-spec in '%s'", tt);
        return false;
    }
    t.spec = mw_strndup(val, vlen);
    *slot = (int)rec->n;
    add_term(rec, &t);
    return true;
}

static bool parse_mechanism(mw_spf_record *rec, const char *s, size_t n, char *why, size_t whylen)
{
    char tt[72];
    term_text(s, n, tt);
    mw_spf_term t = {.qual = '+', .cidr4 = -1, .cidr6 = -1};
    if (n && strchr("+-~?", s[0])) {
        t.qual = s[0];
        s++;
        n--;
    }
    size_t j = 0;
    while (j < n && is_alnum(s[j]))
        j++;
    const char *rest = s + j;
    size_t rn = n - j;
    if (rn && rest[0] != ':' && rest[0] != '/') {
        fail(why, whylen, "unknown mechanism or bad syntax in '%s'", tt);
        return false;
    }
#define NAME_IS(lit) (j == sizeof(lit) - 1 && strncasecmp(s, lit, j) == 0)
    if (NAME_IS("all")) {
        t.kind = MW_SPF_T_ALL;
        if (rn) {
            fail(why, whylen, "'all' takes no argument: '%s'", tt);
            return false;
        }
        rec->has_all = true;
    } else if (NAME_IS("include") || NAME_IS("exists")) {
        t.kind = NAME_IS("include") ? MW_SPF_T_INCLUDE : MW_SPF_T_EXISTS;
        if (rn < 1 || rest[0] != ':' || !mw_spf_domain_spec_ok(rest + 1, rn - 1)) {
            fail(why, whylen, "'%.*s' needs ':' and a valid domain-spec: '%s'", (int)j, s, tt);
            return false;
        }
        t.spec = mw_strndup(rest + 1, rn - 1);
    } else if (NAME_IS("a") || NAME_IS("mx")) {
        t.kind = NAME_IS("a") ? MW_SPF_T_A : MW_SPF_T_MX;
        size_t e = rn;
        int c6 = strip_cidr(rest, &e, true, 128);
        int c4 = c6 == -2 ? -2 : strip_cidr(rest, &e, false, 32);
        if (c6 == -2 || c4 == -2) {
            fail(why, whylen, "invalid CIDR length in '%s'", tt);
            return false;
        }
        t.cidr4 = c4;
        t.cidr6 = c6;
        if (e > 0) {
            if (rest[0] != ':' || !mw_spf_domain_spec_ok(rest + 1, e - 1)) {
                fail(why, whylen, "invalid domain-spec in '%s'", tt);
                return false;
            }
            t.spec = mw_strndup(rest + 1, e - 1);
        }
    } else if (NAME_IS("ptr")) {
        t.kind = MW_SPF_T_PTR;
        if (rn) {
            if (rest[0] != ':' || !mw_spf_domain_spec_ok(rest + 1, rn - 1)) {
                fail(why, whylen, "invalid domain-spec in '%s'", tt);
                return false;
            }
            t.spec = mw_strndup(rest + 1, rn - 1);
        }
    } else if (NAME_IS("ip4") || NAME_IS("ip6")) {
        bool v4 = NAME_IS("ip4");
        t.kind = v4 ? MW_SPF_T_IP4 : MW_SPF_T_IP6;
        if (rn < 2 || rest[0] != ':') {
            fail(why, whylen, "'%.*s' needs ':' and a network: '%s'", (int)j, s, tt);
            return false;
        }
        size_t e = rn;
        int c = strip_cidr(rest, &e, false, v4 ? 32 : 128);
        if (c == -2) {
            fail(why, whylen, "invalid CIDR length in '%s'", tt);
            return false;
        }
        if (v4 ? !ip4_ok(rest + 1, e - 1, t.net) : !ip6_ok(rest + 1, e - 1, t.net)) {
            fail(why, whylen, "invalid %s network in '%s'", v4 ? "IPv4" : "IPv6", tt);
            return false;
        }
        if (v4)
            t.cidr4 = c;
        else
            t.cidr6 = c;
    } else {
        fail(why, whylen, "unknown mechanism in '%s'", tt);
        return false;
    }
#undef NAME_IS
    add_term(rec, &t);
    return true;
}

void mw_spf_record_free(mw_spf_record *rec)
{
    if (!rec)
        return;
    for (size_t i = 0; i < rec->n; i++)
        free(rec->t[i].spec);
    free(rec->t);
    memset(rec, 0, sizeof *rec);
    rec->redirect = rec->exp = -1;
}

bool mw_spf_record_parse(const char *txt, size_t len, mw_spf_record *rec, char *why,
                         size_t whylen)
{
    memset(rec, 0, sizeof *rec);
    rec->redirect = rec->exp = -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)txt[i];
        if (c < 0x20 || c > 0x7e) {
            fail(why, whylen, "%s byte 0x%02x at offset %zu (records are 7-bit ASCII text)",
                 c == 0 ? "NUL" : c < 0x20 || c == 0x7f ? "control" : "non-ASCII", c, i);
            return false;
        }
    }
    if (!mw_spf_is_record(txt, len)) {
        fail(why, whylen, "not an SPF record (no \"v=spf1\")");
        return false;
    }
    size_t i = 6;
    while (i < len) {
        while (i < len && txt[i] == ' ')
            i++;
        if (i >= len)
            break;
        size_t st = i;
        while (i < len && txt[i] != ' ')
            i++;
        const char *s = txt + st;
        size_t n = i - st;
        size_t k = 0;
        bool ok;
        if (is_alpha(s[0])) {
            k = 1;
            while (k < n && (is_alnum(s[k]) || s[k] == '-' || s[k] == '_' || s[k] == '.'))
                k++;
        }
        if (k > 0 && k < n && s[k] == '=')
            ok = parse_modifier(rec, s, n, k, why, whylen);
        else
            ok = parse_mechanism(rec, s, n, why, whylen);
        if (!ok) {
            mw_spf_record_free(rec);
            return false;
        }
    }
    return true;
}

/* ---- macro expansion ------------------------------------------------------------- */

static void put_ip_dotted(mw_buf *out, const mw_addr *a)
{
    static const char hex[] = "0123456789ABCDEF";
    if (a->family == AF_INET) {
        mw_buf_printf(out, "%u.%u.%u.%u", a->bytes[0], a->bytes[1], a->bytes[2], a->bytes[3]);
        return;
    }
    for (int i = 0; i < 16; i++) {
        if (i)
            mw_buf_putc(out, '.');
        mw_buf_putc(out, hex[a->bytes[i] >> 4]);
        mw_buf_putc(out, '.');
        mw_buf_putc(out, hex[a->bytes[i] & 15]);
    }
}

/* The raw value of a macro letter (lower-case letter). */
static void letter_value(mw_spf_macro_ctx *ctx, char l, mw_buf *v)
{
    char buf[64];
    switch (l) {
    case 's':
        ctx->used_local = true;
        mw_buf_printf(v, "%s@%s", ctx->local ? ctx->local : "postmaster",
                      ctx->sender_dom ? ctx->sender_dom : "");
        break;
    case 'l':
        ctx->used_local = true;
        mw_buf_puts(v, ctx->local ? ctx->local : "postmaster");
        break;
    case 'o':
        mw_buf_puts(v, ctx->sender_dom ? ctx->sender_dom : "");
        break;
    case 'd':
        mw_buf_puts(v, ctx->domain ? ctx->domain : "");
        break;
    case 'i':
        put_ip_dotted(v, &ctx->ip);
        break;
    case 'c':
        mw_buf_puts(v, inet_ntop(ctx->ip.family, ctx->ip.bytes, buf, sizeof buf) ? buf : "");
        break;
    case 'v':
        mw_buf_puts(v, ctx->ip.family == AF_INET ? "in-addr" : "ip6");
        break;
    case 'h':
        mw_buf_puts(v, ctx->helo && *ctx->helo ? ctx->helo : "unknown");
        break;
    case 'r':
        mw_buf_puts(v, ctx->receiver && *ctx->receiver ? ctx->receiver : "unknown");
        break;
    case 't':
        mw_buf_printf(v, "%lld", (long long)time(NULL));
        break;
    case 'p': {
        const char *p = ctx->get_p ? ctx->get_p(ctx->arg, ctx->domain) : NULL;
        mw_buf_puts(v, p && *p ? p : "unknown");
        break;
    }
    default:
        break;
    }
}

/* Apply transformers/delimiters to v (RFC 7208 7.3). */
static void transform(const char *v, size_t vlen, unsigned digits, bool reverse,
                      const char *delims, size_t ndelims, mw_buf *out)
{
    /* split into parts */
    size_t cap = 16, np = 0;
    const char **ps = mw_calloc(cap, sizeof *ps);
    size_t *pl = mw_calloc(cap, sizeof *pl);
    size_t st = 0;
    /* a table, not a search of the delimiter list per byte: both the list
     * (the record) and the value (the sender) come from outside */
    bool is_split[256] = {false};
    if (ndelims == 0)
        is_split['.'] = true;
    for (size_t d = 0; d < ndelims; d++)
        is_split[(unsigned char)delims[d]] = true;
    for (size_t i = 0; i <= vlen; i++) {
        bool split = i == vlen || is_split[(unsigned char)v[i]];
        if (!split)
            continue;
        if (np == cap) {
            cap *= 2;
            ps = mw_reallocarray(ps, cap, sizeof *ps);
            pl = mw_reallocarray(pl, cap, sizeof *pl);
        }
        ps[np] = v + st;
        pl[np] = i - st;
        np++;
        st = i + 1;
    }
    if (reverse) {
        for (size_t a = 0, b = np ? np - 1 : 0; a < b; a++, b--) {
            const char *tp = ps[a];
            ps[a] = ps[b];
            ps[b] = tp;
            size_t tl = pl[a];
            pl[a] = pl[b];
            pl[b] = tl;
        }
    }
    size_t first = (digits && digits < np) ? np - digits : 0;
    for (size_t i = first; i < np; i++) {
        if (i > first)
            mw_buf_putc(out, '.');
        mw_buf_append(out, ps[i], pl[i]);
    }
    free(ps);
    free(pl);
}

static void url_escape(const char *s, size_t n, mw_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_alnum((char)c) || c == '-' || c == '.' || c == '_' || c == '~') {
            mw_buf_putc(out, (char)c);
        } else {
            mw_buf_putc(out, '%');
            mw_buf_putc(out, hex[c >> 4]);
            mw_buf_putc(out, hex[c & 15]);
        }
    }
}

/* Expand s[0..n) (syntax already checked) into out. */
static void expand(mw_spf_macro_ctx *ctx, const char *s, size_t n, bool explain, mw_buf *out)
{
    mw_buf v = MW_BUF_INIT, t = MW_BUF_INIT;
    for (size_t i = 0; i < n && out->len < MW_SPF_MAX_EXPANSION;) {
        if (s[i] != '%') {
            mw_buf_putc(out, s[i++]);
            continue;
        }
        size_t m = macro_len(s + i, n - i, explain);
        if (m == 0) {                 /* cannot happen after validation */
            mw_buf_putc(out, s[i++]);
            continue;
        }
        if (m == 2) {
            mw_buf_puts(out, s[i + 1] == '%' ? "%" : s[i + 1] == '_' ? " " : "%20");
            i += 2;
            continue;
        }
        char letter = s[i + 2];
        bool upper = letter >= 'A' && letter <= 'Z';
        size_t k = i + 3;
        unsigned digits = 0;
        while (is_digit(s[k])) {
            digits = digits * 10 + (unsigned)(s[k] - '0');
            if (digits > 1000)
                digits = 1000;
            k++;
        }
        bool reverse = false;
        if (s[k] == 'r' || s[k] == 'R') {
            reverse = true;
            k++;
        }
        const char *delims = s + k;
        size_t nd = (size_t)(s + i + m - 1 - delims);
        mw_buf_reset(&v);
        letter_value(ctx, (char)tolower((unsigned char)letter), &v);
        mw_buf_reset(&t);
        if (digits || reverse || nd)
            transform(v.data ? v.data : "", v.len, digits, reverse, delims, nd, &t);
        else
            mw_buf_append(&t, v.data ? v.data : "", v.len);
        if (upper)
            url_escape(t.data ? t.data : "", t.len, out);
        else
            mw_buf_append(out, t.data ? t.data : "", t.len);
        i += m;
    }
    mw_buf_free(&v);
    mw_buf_free(&t);
}

char *mw_spf_expand_domain(mw_spf_macro_ctx *ctx, const char *spec)
{
    mw_buf out = MW_BUF_INIT;
    expand(ctx, spec, strlen(spec), false, &out);
    char *s = mw_buf_steal(&out);
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        s[--n] = '\0';
    /* RFC 7208 7.3: drop labels from the left until it fits in 253 */
    char *p = s;
    while (n > 253) {
        char *dot = memchr(p, '.', n);
        if (!dot) {
            p += n - 253;     /* one huge label: keep it invalid but bounded */
            n = 253;
            break;
        }
        n -= (size_t)(dot + 1 - p);
        p = dot + 1;
    }
    if (p != s)
        memmove(s, p, n + 1);
    return s;
}

char *mw_spf_expand_explain(mw_spf_macro_ctx *ctx, const char *text, size_t len)
{
    if (!mw_spf_explain_ok(text, len))
        return NULL;
    mw_buf out = MW_BUF_INIT;
    expand(ctx, text, len, true, &out);
    if (out.len > MW_SPF_MAX_EXPANSION) {
        out.len = MW_SPF_MAX_EXPANSION;
        out.data[out.len] = '\0';
    }
    return mw_buf_steal(&out);
}
