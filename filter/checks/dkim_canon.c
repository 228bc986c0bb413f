/*
 * dkim_canon.c - DKIM canonicalization for the signer (RFC 6376 §3.4).
 *
 * Body (§3.4.3 simple, §3.4.4 relaxed), streaming
 *   Input is taken in whatever chunks the MTA delivers.  Line ends are CRLF
 *   or bare LF (the check tool feeds LF), both mean one line end; a CR at
 *   the end of a chunk waits for the next byte.  Output bytes go into a
 *   4 KiB buffer that is hashed when full, so the cost is one pass over the
 *   body and one digest call per 4 KiB.
 *   - Empty lines are counted, not emitted, and written out only when a
 *     line with content follows: trailing empty lines vanish without
 *     holding the body.
 *   - relaxed: a run of SP/HTAB is remembered as one pending SP, written
 *     only before the next content byte of the same line; at a line end it
 *     is dropped (trailing blanks).  A line of blanks only is thus empty.
 *   - At the end: a last line without line end gets CRLF (both forms; in
 *     relaxed its trailing blanks stay as one SP, as dkimpy has it);
 *     simple turns an empty body into CRLF, relaxed leaves it empty.
 *
 * Headers (§3.4.1 simple, §3.4.2 relaxed): see dkim_canon.h.
 */
#include "dkim_canon.h"

#include <string.h>

static void flush(mw_dkim_bodycanon *c)
{
    if (c->n > 0 && !c->failed && EVP_DigestUpdate(c->md, c->out, c->n) != 1)
        c->failed = true;
    c->n = 0;
}

static inline void put(mw_dkim_bodycanon *c, unsigned char ch)
{
    c->out[c->n++] = ch;
    if (c->n == sizeof c->out)
        flush(c);
}

static inline void put_crlf(mw_dkim_bodycanon *c)
{
    put(c, '\r');
    put(c, '\n');
}

/* A content byte of the current line. */
static inline void content(mw_dkim_bodycanon *c, unsigned char ch)
{
    if (c->bol) {
        for (; c->nempty > 0; c->nempty--)
            put_crlf(c);
        c->bol = false;
        c->any = true;
    }
    if (c->wsp) {
        put(c, ' ');
        c->wsp = false;
    }
    put(c, ch);
}

static inline void line_end(mw_dkim_bodycanon *c)
{
    c->wsp = false;
    if (c->bol) {
        c->nempty++;
        return;
    }
    put_crlf(c);
    c->bol = true;
}

/* n plain bytes of the current line, after content() started it. */
static void put_run(mw_dkim_bodycanon *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t k = sizeof c->out - c->n;
        if (k > n)
            k = n;
        memcpy(c->out + c->n, p, k);
        c->n += k;
        p += k;
        n -= k;
        if (c->n == sizeof c->out)
            flush(c);
    }
}

/* Bytes that end a run of plain content: line ends, and in relaxed the
 * blanks (which are reduced). */
static const bool stop_simple[256] = {['\r'] = true, ['\n'] = true};
static const bool stop_relaxed[256] = {['\r'] = true, ['\n'] = true, [' '] = true, ['\t'] = true};

bool mw_dkim_bodycanon_init(mw_dkim_bodycanon *c, const EVP_MD *md, mw_dkim_canon canon)
{
    c->md = EVP_MD_CTX_new();
    c->canon = canon;
    c->cr = c->wsp = c->any = c->failed = false;
    c->bol = true;
    c->nempty = c->n = 0;
    if (c->md == NULL || EVP_DigestInit_ex(c->md, md, NULL) != 1) {
        mw_dkim_bodycanon_clear(c);
        return false;
    }
    return true;
}

void mw_dkim_bodycanon_update(mw_dkim_bodycanon *c, const unsigned char *p, size_t len)
{
    const bool relaxed = c->canon == MW_DKIM_CANON_RELAXED;
    const bool *stop = relaxed ? stop_relaxed : stop_simple;

    if (c->md == NULL)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = p[i];

        if (c->cr) {
            c->cr = false;
            if (ch == '\n') {
                line_end(c);
                continue;
            }
            content(c, '\r');          /* a lone CR is data */
        }
        switch (ch) {
        case '\r':
            c->cr = true;
            break;
        case '\n':                     /* bare LF: a line end as well */
            line_end(c);
            break;
        case ' ':
        case '\t':
            if (relaxed) {
                c->wsp = true;
                break;
            }
            content(c, ch);
            break;
        default: {
            /* This byte (with what the line owes before it), then the
             * rest of its run of plain bytes in one copy. */
            content(c, ch);
            size_t j = i + 1;
            while (j < len && !stop[p[j]])
                j++;
            put_run(c, p + i + 1, j - i - 1);
            i = j - 1;
            break;
        }
        }
    }
}

bool mw_dkim_bodycanon_final(mw_dkim_bodycanon *c, unsigned char hash[MW_DKIM_SHA256_LEN])
{
    unsigned int hlen = 0;
    bool ok;

    if (c->md == NULL)
        return false;
    if (c->cr) {
        c->cr = false;
        content(c, '\r');
    }
    if (c->wsp) {
        /* Blanks on a last line without line end: not "at the end of a
         * line" when whitespace is reduced, so they stay (as one SP) before
         * the CRLF that is added (dkimpy reads §3.4.4 so; the case needs a
         * body without final CRLF, which SMTP never delivers). */
        c->wsp = false;
        if (c->bol) {
            for (; c->nempty > 0; c->nempty--)
                put_crlf(c);
            c->bol = false;
            c->any = true;
        }
        put(c, ' ');
    }
    if (!c->bol)
        put_crlf(c);                   /* no CRLF after the last line: add one */
    else if (c->canon == MW_DKIM_CANON_SIMPLE && !c->any)
        put_crlf(c);                   /* simple: an empty body is one CRLF */
    flush(c);
    ok = !c->failed && EVP_DigestFinal_ex(c->md, hash, &hlen) == 1 && hlen == MW_DKIM_SHA256_LEN;
    mw_dkim_bodycanon_clear(c);
    return ok;
}

void mw_dkim_bodycanon_clear(mw_dkim_bodycanon *c)
{
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
}

/* ---- headers ---------------------------------------------------------------------------- */

static bool is_wsp(char ch)
{
    return ch == ' ' || ch == '\t';
}

void mw_dkim_hcanon(mw_buf *out, mw_dkim_canon canon, const char *name, size_t nlen,
                    const char *value, size_t vlen, bool crlf)
{
    if (canon == MW_DKIM_CANON_SIMPLE) {
        mw_buf_reserve(out, nlen + vlen + vlen / 32 + 4);
        mw_buf_append(out, name, nlen);
        mw_buf_putc(out, ':');
        for (size_t i = 0; i < vlen; i++) {
            if (value[i] == '\n' && (i == 0 || value[i - 1] != '\r'))
                mw_buf_putc(out, '\r');
            mw_buf_putc(out, value[i]);
        }
    } else {
        bool pending = false, started = false;

        while (nlen > 0 && is_wsp(name[nlen - 1]))
            nlen--;
        mw_buf_reserve(out, nlen + vlen + 4);
        for (size_t i = 0; i < nlen; i++) {
            char ch = name[i];
            mw_buf_putc(out, ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch);
        }
        mw_buf_putc(out, ':');
        for (size_t i = 0; i < vlen; i++) {
            char ch = value[i];
            if (ch == '\n' || (ch == '\r' && i + 1 < vlen && value[i + 1] == '\n'))
                continue;              /* unfold: line ends vanish, the blank after stays */
            if (is_wsp(ch)) {
                pending = started;     /* leading blanks are dropped */
                continue;
            }
            if (pending)
                mw_buf_putc(out, ' ');
            pending = false;
            started = true;
            mw_buf_putc(out, ch);
        }
    }
    if (crlf)
        mw_buf_append(out, "\r\n", 2);
}
