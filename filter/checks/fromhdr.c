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
    if (b - (at + 1) != 1)
        return "domain is not one token";
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
    }
    if (!mw_domain_valid(dom->data))
        return "invalid domain name";
    return NULL;
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
