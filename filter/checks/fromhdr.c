/*
 * fromhdr.c - header From parser for DMARC and the signing identity.
 *
 * Two passes over a bounded buffer, no recursion:
 *   1. lexer: the value becomes tokens (atom/dot-atom text, quoted-string,
 *      specials < > , : ; @ and domain-literals); comments and folding
 *      whitespace are dropped (comments may nest; depth is counted).
 *   2. a small state machine groups tokens into mailboxes separated by
 *      top-level commas (group syntax "name: a, b;" is flattened).  A
 *      mailbox with an angle address uses what is inside the brackets;
 *      otherwise the tokens are an addr-spec.
 * Any doubt is MW_FROM_UNPARSABLE with a reason.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "cidr.h"
#include "fromhdr.h"
#include "idna.h"
#include "strutil.h"

#define MAX_TOKENS 4096

typedef enum { T_ATOM, T_QUOTED, T_SPECIAL, T_LITERAL } tok_kind;

typedef struct {
    tok_kind kind;
    char     c;        /* for T_SPECIAL */
    size_t   start;    /* into the decoded text buffer */
    size_t   len;
    bool     space_before;
} tok;

typedef struct {
    tok    *t;
    size_t  n, cap;
    mw_buf  text;      /* decoded token text (quotes/escapes removed) */
} lexed;

const char *mw_from_status_name(mw_from_status s)
{
    switch (s) {
    case MW_FROM_OK: return "ok";
    case MW_FROM_EMPTY: return "empty";
    case MW_FROM_MULTIPLE: return "multiple";
    case MW_FROM_NODOMAIN: return "nodomain";
    default: return "unparsable";
    }
}

static bool is_special(unsigned char c)
{
    return c == '<' || c == '>' || c == ',' || c == ':' || c == ';' || c == '@' || c == '[' ||
           c == ']' || c == '"' || c == '(' || c == ')' || c == '\\';
}

static bool push(lexed *lx, tok_kind k, char c, size_t start, size_t len, bool sp)
{
    if (lx->n >= MAX_TOKENS)
        return false;
    if (lx->n == lx->cap) {   /* grow on demand: most From headers have < 16 tokens */
        lx->cap = lx->cap ? lx->cap * 2 : 16;
        lx->t = mw_reallocarray(lx->t, lx->cap, sizeof *lx->t);
    }
    lx->t[lx->n++] = (tok){k, c, start, len, sp};
    return true;
}

static const char *lex(const char *s, size_t len, lexed *lx)
{
    size_t i = 0;
    bool sp = false;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\0')
            return "NUL byte in From";
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            sp = true;
            i++;
            continue;
        }
        if (c == '(') {
            int depth = 0;
            for (; i < len; i++) {
                if (s[i] == '\0')
                    return "NUL byte in From";
                if (s[i] == '\\') {
                    i++;
                    continue;
                }
                if (s[i] == '(')
                    depth++;
                else if (s[i] == ')' && --depth == 0)
                    break;
            }
            if (i >= len)
                return "unterminated comment";
            i++;
            sp = true;
            continue;
        }
        if (c == ')')
            return "unbalanced ')'";
        if (c == '"') {
            size_t start = lx->text.len;
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\0')
                    return "NUL byte in From";
                if (s[i] == '\\') {
                    if (++i >= len)
                        break;
                }
                if (s[i] == '\r' || s[i] == '\n')
                    continue;   /* folding inside a quoted-string */
                mw_buf_putc(&lx->text, s[i]);
            }
            if (i >= len)
                return "unterminated quoted-string";
            i++;
            if (!push(lx, T_QUOTED, 0, start, lx->text.len - start, sp))
                return "too many tokens";
            sp = false;
            continue;
        }
        if (c == '[') {
            size_t start = lx->text.len;
            for (i++; i < len && s[i] != ']'; i++) {
                if (s[i] == '\0' || s[i] == '[' || s[i] == '\\')
                    return "bad domain-literal";
                mw_buf_putc(&lx->text, s[i]);
            }
            if (i >= len)
                return "unterminated domain-literal";
            i++;
            if (!push(lx, T_LITERAL, 0, start, lx->text.len - start, sp))
                return "too many tokens";
            sp = false;
            continue;
        }
        if (c == ']' || c == '\\')
            return "stray special character";
        if (is_special(c)) {
            if (!push(lx, T_SPECIAL, (char)c, 0, 0, sp))
                return "too many tokens";
            i++;
            sp = false;
            continue;
        }
        /* atom text (dots allowed; 8-bit allowed here, judged later) */
        size_t start = lx->text.len;
        while (i < len) {
            unsigned char d = (unsigned char)s[i];
            if (d == ' ' || d == '\t' || d == '\r' || d == '\n' || d == '\0' || is_special(d))
                break;
            mw_buf_putc(&lx->text, (char)d);
            i++;
        }
        if (!push(lx, T_ATOM, 0, start, lx->text.len - start, sp))
            return "too many tokens";
        sp = false;
    }
    return NULL;
}

/* Lower-case, A-label form, no trailing dot; NULL or the reason it is no domain. */
static const char *finish_domain(mw_buf *dom)
{
    if (dom->len && dom->data[dom->len - 1] == '.')
        dom->data[--dom->len] = '\0';
    mw_str_lower(dom->data);
    if (mw_idna_has_8bit(dom->data)) {
        /* a U-label domain (RFC 6532): its A-label is the Author Domain, so
         * an IDN domain's DMARC policy applies (never "unparsable") */
        char alabel[256];
        const char *why = NULL;
        if (!mw_idna_to_ascii(dom->data, alabel, sizeof alabel, &why))
            return why;
        mw_buf_reset(dom);
        mw_buf_puts(dom, alabel);
        /* UTS #46 maps U+3002 and the like to '.', so strip again */
        if (dom->len && dom->data[dom->len - 1] == '.')
            dom->data[--dom->len] = '\0';
    }
    if (!mw_domain_valid(dom->data))
        return "invalid domain name";
    return NULL;
}

/* Turn tokens [a, b) of an addr-spec into "local@domain". */
static const char *addr_spec(const lexed *lx, size_t a, size_t b, mw_buf *addr, mw_buf *dom, bool *has_dom)
{
    size_t at = b;
    for (size_t i = a; i < b; i++) {
        const tok *t = &lx->t[i];
        if (t->kind == T_SPECIAL && t->c == '@') {
            if (at != b)
                return "more than one '@' in address";
            at = i;
        } else if (t->kind == T_SPECIAL) {
            return "unexpected special character in address";
        }
    }
    const char *txt = lx->text.data ? lx->text.data : "";
    for (size_t i = a; i < at; i++) {
        const tok *t = &lx->t[i];
        if (i > a && t->space_before)
            return "space inside the local part";
        mw_buf_append(addr, txt + t->start, t->len);
    }
    *has_dom = at != b;
    if (!*has_dom)
        return NULL;
    if (at == a)
        return "empty local part";
    mw_buf_putc(addr, '@');
    if (at + 1 >= b)
        return "empty domain";
    if (b - (at + 1) != 1) {
        /* RFC 5322 obs-domain: atoms and dots with CFWS between them
         * ("victim ().test", "victim\r\n .test"), which MUAs show as one
         * name: joined.  Atoms side by side without a dot are not a name. */
        for (size_t i = at + 1; i < b; i++) {
            const tok *t = &lx->t[i];
            if (t->kind != T_ATOM)
                return "domain is not an atom";
            if (i > at + 1 && txt[t->start] != '.' && txt[lx->t[i - 1].start + lx->t[i - 1].len - 1] != '.')
                return "domain is not one name";
        }
        for (size_t i = at + 1; i < b; i++) {
            mw_buf_append(addr, txt + lx->t[i].start, lx->t[i].len);
            mw_buf_append(dom, txt + lx->t[i].start, lx->t[i].len);
        }
        return finish_domain(dom);
    }
    const tok *d = &lx->t[at + 1];
    if (d->kind == T_LITERAL) {
        *has_dom = false;   /* address literal: no domain for DMARC */
        mw_buf_putc(addr, '[');
        mw_buf_append(addr, txt + d->start, d->len);
        mw_buf_putc(addr, ']');
        return NULL;
    }
    if (d->kind != T_ATOM)
        return "domain is not an atom";
    mw_buf_append(addr, txt + d->start, d->len);
    mw_buf_append(dom, txt + d->start, d->len);
    return finish_domain(dom);
}

static void add_addr(mw_from *out, mw_buf *addr, mw_buf *dom, bool has_dom)
{
    if (out->naddr < MW_FROM_MAX_ADDRS) {
        out->addr[out->naddr] = mw_buf_steal(addr);
        out->domain[out->naddr] = has_dom ? mw_buf_steal(dom) : NULL;
    }
    mw_buf_free(addr);
    mw_buf_free(dom);
    out->naddr++;
}

/* One mailbox: tokens [a, b). */
static const char *mailbox(const lexed *lx, size_t a, size_t b, mw_from *out, bool *any_nodomain)
{
    size_t lt = b, gt = b;
    for (size_t i = a; i < b; i++) {
        const tok *t = &lx->t[i];
        if (t->kind != T_SPECIAL)
            continue;
        if (t->c == '<') {
            if (lt != b)
                return "more than one '<'";
            lt = i;
        } else if (t->c == '>') {
            if (lt == b || gt != b)
                return "unbalanced '>'";
            gt = i;
        }
    }
    if (lt != b && gt == b)
        return "unbalanced '<'";
    mw_buf addr = MW_BUF_INIT, dom = MW_BUF_INIT;
    bool has_dom = false;
    const char *err;
    if (lt != b) {
        if (gt + 1 != b)
            return "text after the angle address";
        /* display name: words only; an unquoted '@' there is ambiguous */
        for (size_t i = a; i < lt; i++)
            if (lx->t[i].kind == T_SPECIAL)
                return "special character in the display name";
        /* obs-route "<@a,@b:user@dom>": take what follows the last ':' */
        size_t s0 = lt + 1;
        for (size_t i = lt + 1; i < gt; i++)
            if (lx->t[i].kind == T_SPECIAL && lx->t[i].c == ':')
                s0 = i + 1;
        if (s0 == gt) {
            return "empty angle address";
        }
        err = addr_spec(lx, s0, gt, &addr, &dom, &has_dom);
    } else {
        err = addr_spec(lx, a, b, &addr, &dom, &has_dom);
    }
    if (err) {
        mw_buf_free(&addr);
        mw_buf_free(&dom);
        return err;
    }
    if (!has_dom)
        *any_nodomain = true;
    add_addr(out, &addr, &dom, has_dom);
    return NULL;
}

mw_from_status mw_from_parse(const char *value, size_t len, mw_from *out)
{
    memset(out, 0, sizeof *out);
    lexed lx = {0};
    const char *err = lex(value, len, &lx);
    bool nodomain = false;
    if (!err) {
        size_t start = 0;
        bool in_group = false;
        /* '<' and '>' tokens in [start, i): kept as we go, so deciding
         * whether a ':' or ',' sits inside an angle address costs O(1), not
         * a rescan of the mailbox so far (which made "<:::...:>" quadratic) */
        size_t nlt = 0, ngt = 0;
        for (size_t i = 0; i <= lx.n && !err; i++) {
            bool end = i == lx.n;
            const tok *t = end ? NULL : &lx.t[i];
            if (!end && t->kind == T_SPECIAL && t->c == ':') {
                /* group start, unless inside an angle address (obs-route) */
                if (nlt > 0 && ngt == 0)
                    continue;
                if (in_group) {
                    err = "nested group";
                    break;
                }
                in_group = true;
                start = i + 1;
                nlt = ngt = 0;
                continue;
            }
            bool sep = end || (t->kind == T_SPECIAL && (t->c == ',' || t->c == ';'));
            /* a comma inside an angle address belongs to an obs-route */
            if (!sep || (!end && t->c == ',' && nlt > ngt)) {
                if (t->kind == T_SPECIAL && t->c == '<')
                    nlt++;
                else if (t->kind == T_SPECIAL && t->c == '>')
                    ngt++;
                continue;
            }
            if (!end && t->c == ';') {
                if (!in_group) {
                    err = "';' outside a group";
                    break;
                }
                in_group = false;
            }
            if (i > start)
                err = mailbox(&lx, start, i, out, &nodomain);
            start = i + 1;
            nlt = ngt = 0;
        }
        if (!err && in_group)
            err = "unterminated group";
    }
    free(lx.t);
    mw_buf_free(&lx.text);
    if (err) {
        out->why = err;
        return out->status = MW_FROM_UNPARSABLE;
    }
    if (out->naddr == 0) {
        out->why = "no address";
        return out->status = MW_FROM_EMPTY;
    }
    if (out->naddr > 1) {
        /* RFC 9989: several addresses all in one domain are one Author
         * Domain.  Any address without a domain, a different domain, or
         * more addresses than were kept is "multiple". */
        bool one = !nodomain && out->naddr <= MW_FROM_MAX_ADDRS;
        for (size_t i = 1; one && i < out->naddr; i++)
            one = out->domain[i] != NULL && out->domain[0] != NULL && strcmp(out->domain[i], out->domain[0]) == 0;
        if (!one) {
            out->why = "more than one address";
            return out->status = MW_FROM_MULTIPLE;
        }
        out->why = "several addresses in one domain";
        return out->status = MW_FROM_OK;
    }
    if (nodomain) {
        out->why = "address without a domain";
        return out->status = MW_FROM_NODOMAIN;
    }
    return out->status = MW_FROM_OK;
}

void mw_from_clear(mw_from *f)
{
    for (size_t i = 0; i < f->naddr && i < MW_FROM_MAX_ADDRS; i++) {
        free(f->addr[i]);
        free(f->domain[i]);
    }
    memset(f, 0, sizeof *f);
}

/* ---- recovering domains from a From the parser gave up on ---- */

/* The code point of the UTF-8 sequence at p (n bytes left) and its length;
 * 0 with *len 1 for a byte that starts no valid sequence. */
static unsigned utf8_at(const unsigned char *p, size_t n, size_t *len)
{
    unsigned c = p[0];
    size_t need = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    *len = 1;
    if (c < 0x80)
        return c;
    if (need == 0 || need > n)
        return 0;
    unsigned cp = c & (need == 2 ? 0x1f : need == 3 ? 0x0f : 0x07);
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *len = need;
    return cp;
}

/* Code points a reader does not see: format characters (bidi controls,
 * zero-width ones, the soft hyphen, variation selectors, tags) and blanks. */
static bool invisible(unsigned cp)
{
    return cp == 0xad || cp == 0xa0 || cp == 0x34f || cp == 0x61c || cp == 0x115f || cp == 0x1160 ||
           cp == 0x1680 || (cp >= 0x17b4 && cp <= 0x17b5) || (cp >= 0x180b && cp <= 0x180f) ||
           (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
           (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0x3164 ||
           (cp >= 0xfe00 && cp <= 0xfe0f) || cp == 0xfeff || cp == 0xffa0 ||
           (cp >= 0x1bca0 && cp <= 0x1bca3) || (cp >= 0xe0000 && cp <= 0xe0fff);
}

static bool blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skip blanks and (nested) comments from i; returns the new index. */
static size_t skip_cfws_raw(const unsigned char *v, size_t n, size_t i)
{
    for (;;) {
        while (i < n && blank(v[i]))
            i++;
        if (i < n && v[i] == '(') {
            int depth = 0;
            for (; i < n; i++) {
                if (v[i] == '\\' && i + 1 < n) {
                    i++;
                    continue;
                }
                if (v[i] == '(')
                    depth++;
                else if (v[i] == ')' && --depth == 0) {
                    i++;
                    break;
                }
            }
            continue;
        }
        return i;
    }
}

/*
 * The domain a reader would see after the '@' at v[i]: letters, digits,
 * '-', '_', '.' and 8-bit text, with quotes, invisible code points and
 * invalid bytes dropped, ideographic full stops read as '.', and blanks or
 * comments crossed only where a dot is next to them (obs-domain).  Written
 * to out (NUL-terminated); returns the index where it stopped.
 */
static size_t domain_after(const unsigned char *v, size_t n, size_t i, char *out, size_t outlen)
{
    size_t o = 0;
    bool over = false;
    i = skip_cfws_raw(v, n, i + 1);
    while (i < n && (v[i] == '"' || v[i] == '['))
        i++;
    while (i < n) {
        unsigned char c = v[i];
        char put = 0;
        size_t len = 1;
        if (isalnum(c) || c == '-' || c == '_' || c == '.') {
            put = (char)tolower(c);
        } else if (c == '"') {
            i++;
            continue;
        } else if (blank(c) || c == '(') {
            size_t j = skip_cfws_raw(v, n, i);
            bool dot_before = o > 0 && out[o - 1] == '.', dot_after = j < n && v[j] == '.';
            if (!dot_before && !dot_after)
                break;
            i = j;
            continue;
        } else if (c >= 0x80) {
            unsigned cp = utf8_at(v + i, n - i, &len);
            if (cp == 0 || invisible(cp)) {
                i += len;
                continue;
            }
            if (cp == 0x3002 || cp == 0xff0e || cp == 0xff61) {
                put = '.';
            } else {
                if (o + len < outlen)
                    memcpy(out + o, v + i, len);
                else
                    over = true;
                o += o + len < outlen ? len : 0;
                i += len;
                continue;
            }
        } else {
            break;   /* '>' ',' ';' ':' ']' '@' '<' and every other special end it */
        }
        if (o + 1 < outlen)
            out[o++] = put;
        else
            over = true;
        i += len;
    }
    while (o > 0 && out[o - 1] == '.')
        o--;
    out[over ? 0 : o] = '\0';
    return i;
}

void mw_from_recover_domains(const char *value, size_t len, void (*found)(void *, const char *), void *arg,
                             bool *unreadable)
{
    const unsigned char *v = (const unsigned char *)value;
    *unreadable = false;
    for (size_t i = 0; i < len; i++) {
        if (v[i] != '@')
            continue;
        char raw[256], a[256];
        const char *why = NULL;
        size_t end = domain_after(v, len, i, raw, sizeof raw);
        if (strchr(raw, '.') == NULL) {   /* no dotted name: no DMARC policy to find */
            i = end > i ? end - 1 : i;
            continue;
        }
        mw_addr ip;
        if (mw_addr_parse(raw, &ip)) {
            i = end > i ? end - 1 : i;
            continue;   /* an address literal names no domain */
        }
        if (mw_idna_to_ascii(raw, a, sizeof a, &why) && mw_domain_valid(a) && strchr(a, '.') != NULL) {
            size_t al = strlen(a);
            while (al > 0 && a[al - 1] == '.')
                a[--al] = '\0';
            found(arg, a);
        } else {
            *unreadable = true;   /* it looks like a domain, but not one we can look up */
        }
        i = end > i ? end - 1 : i;
    }
}
