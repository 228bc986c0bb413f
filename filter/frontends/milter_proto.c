/*
 * milter_proto.c - milter protocol 6 codec (see milter_proto.h).  The wire
 * format follows libmilter (engine.c, smfi.c) and Postfix (milter8.c);
 * nothing here does I/O or keeps state.
 */
#include <stdio.h>
#include <string.h>

#include "milter_proto.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put32(mw_buf *b, uint32_t v)
{
    char c[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    mw_buf_append(b, c, 4);
}

int mw_mp_frame(const uint8_t *buf, size_t len, char *cmd, const uint8_t **payload, size_t *plen,
                size_t *used, const char **why)
{
    if (len < 4)
        return 0;
    uint32_t n = get32(buf);
    if (n == 0) {
        *why = "zero-length packet";
        return -1;
    }
    if (n > MW_MP_MAX_PACKET) {
        *why = "packet too large";
        return -1;
    }
    if (len - 4 < n)
        return 0;
    *cmd = (char)buf[4];
    *payload = buf + 5;
    *plen = n - 1;
    *used = 4 + (size_t)n;
    return 1;
}

const char *mw_mp_next(const char *p, const char *end)
{
    const char *z = memchr(p, '\0', (size_t)(end - p));
    if (!z || z + 1 >= end)
        return NULL;
    return z + 1;
}

int mw_mp_stage_of(char c)
{
    switch (c) {
    case 'C': return MW_MP_ST_CONNECT;
    case 'H': return MW_MP_ST_HELO;
    case 'M': return MW_MP_ST_MAIL;
    case 'R': return MW_MP_ST_RCPT;
    case 'T': return MW_MP_ST_DATA;
    case 'L': return MW_MP_ST_HEADER;
    case 'N': return MW_MP_ST_EOH;
    case 'B': return MW_MP_ST_BODY;
    case 'E': return MW_MP_ST_EOM;
    case 'U': return MW_MP_ST_UNKNOWN;
    default: return -1;
    }
}

/* Number of NUL-terminated strings filling [p, p+n) exactly; 0 when the
 * last byte is not a NUL (or n is 0). */
static size_t count_strs(const uint8_t *p, size_t n)
{
    if (n == 0 || p[n - 1] != '\0')
        return 0;
    size_t k = 0;
    for (const uint8_t *q = p, *end = p + n; q < end;) {
        const uint8_t *z = memchr(q, '\0', (size_t)(end - q));
        k++;
        q = z + 1;
    }
    return k;
}

/* exactly one string filling the payload */
static bool one_str(const uint8_t *p, size_t n, const char **out)
{
    if (n == 0 || memchr(p, '\0', n) != p + n - 1)
        return false;
    *out = (const char *)p;
    return true;
}

#define FAIL(msg)          \
    do {                   \
        *why = (msg);      \
        return false;      \
    } while (0)

static bool decode_connect(const uint8_t *p, size_t n, mw_mp_cmd *o, const char **why)
{
    const uint8_t *z = n ? memchr(p, '\0', n) : NULL;
    if (!z)
        FAIL("connect: hostname not terminated");
    o->host = (const char *)p;
    size_t i = (size_t)(z - p) + 1;
    if (i >= n)
        FAIL("connect: no address family");
    o->family = (char)p[i++];
    switch (o->family) {
    case 'U':
        if (i != n)
            FAIL("connect: data after family U");
        o->addr = "";
        return true;
    case '4':
    case '6':
    case 'L':
        break;
    default:
        FAIL("connect: unknown address family");
    }
    if (n - i < 3)
        FAIL("connect: truncated port or address");
    o->port = (uint16_t)(p[i] << 8 | p[i + 1]);
    i += 2;
    if (!one_str(p + i, n - i, &o->addr))
        FAIL("connect: address not terminated");
    return true;
}

bool mw_mp_decode(char cmd, const uint8_t *p, size_t n, mw_mp_cmd *o, const char **why)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    switch (cmd) {
    case 'O':
        if (n < 12)
            FAIL("optneg: shorter than 12 bytes");
        o->version = get32(p);
        o->actions = get32(p + 4);
        o->protocol = get32(p + 8);
        return true;
    case 'D': {
        if (n < 1)
            FAIL("macro: no stage");
        int st = mw_mp_stage_of((char)p[0]);
        if (st < 0)
            FAIL("macro: unknown stage");
        o->stage = (mw_mp_stage)st;
        o->stage_cmd = (char)p[0];
        o->strs = (const char *)p + 1;
        o->strs_len = n - 1;
        if (n == 1)
            return true;
        size_t k = count_strs(p + 1, n - 1);
        if (k == 0)
            FAIL("macro: not NUL-terminated");
        if (k % 2)
            FAIL("macro: name without value");
        o->n = k / 2;
        return true;
    }
    case 'C':
        return decode_connect(p, n, o, why);
    case 'H':
    case 'U':
        if (!one_str(p, n, &o->str1))
            FAIL("string not NUL-terminated");
        return true;
    case 'M':
    case 'R':
        o->n = count_strs(p, n);
        if (o->n == 0)
            FAIL("envelope: arguments not NUL-terminated");
        o->strs = (const char *)p;
        o->strs_len = n;
        return true;
    case 'L': {
        if (count_strs(p, n) != 2 || p[0] == '\0')
            FAIL("header: not name\\0value\\0");
        o->str1 = (const char *)p;
        o->str2 = (const char *)p + strlen(o->str1) + 1;
        return true;
    }
    case 'B':
    case 'E':
        o->data = p;
        o->len = n;
        return true;
    case 'T':
    case 'N':
    case 'A':
    case 'Q':
    case 'K':
        if (n != 0)
            FAIL("unexpected payload");
        return true;
    default:
        FAIL("unknown command");
    }
}

/* ---- encoding ---- */

void mw_mp_put(mw_buf *b, char cmd, const void *payload, size_t len)
{
    put32(b, (uint32_t)(len + 1));
    mw_buf_putc(b, cmd);
    if (len)
        mw_buf_append(b, payload, len);
}

void mw_mp_put_simple(mw_buf *b, char cmd)
{
    mw_mp_put(b, cmd, NULL, 0);
}

/* start a packet whose length is patched by end_packet */
static size_t begin_packet(mw_buf *b, char cmd)
{
    size_t at = b->len;
    put32(b, 0);
    mw_buf_putc(b, cmd);
    return at;
}

static void end_packet(mw_buf *b, size_t at)
{
    uint32_t n = (uint32_t)(b->len - at - 4);
    uint8_t *p = (uint8_t *)b->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

static void put_cstr(mw_buf *b, const char *s)
{
    mw_buf_append(b, s ? s : "", strlen(s ? s : "") + 1);
}

void mw_mp_put_replycode(mw_buf *b, const char *rcode, const char *xcode, const char *text)
{
    char rc[4] = "550", xc[16];
    if (rcode && strlen(rcode) == 3)
        memcpy(rc, rcode, 4);
    /* the enhanced code's class must be the reply's (Postfix refuses the
     * reply as malformed otherwise) */
    if (xcode && xcode[0] == rc[0] && xcode[1] == '.' && strlen(xcode) < sizeof xc &&
        !strpbrk(xcode, " \t\r\n"))
        memcpy(xc, xcode, strlen(xcode) + 1);
    else
        snprintf(xc, sizeof xc, "%c.0.0", rc[0]);
    size_t at = begin_packet(b, 'y');
    const char *t = text ? text : "";
    for (;;) {
        const char *nl = strchr(t, '\n');
        size_t l = nl ? (size_t)(nl - t) : strlen(t);
        if (l && t[l - 1] == '\r')
            l--;
        mw_buf_puts(b, rc);
        mw_buf_putc(b, nl ? '-' : ' ');
        mw_buf_puts(b, xc);
        if (l)
            mw_buf_putc(b, ' ');
        for (size_t i = 0; i < l; i++) {
            unsigned char c = (unsigned char)t[i];
            if (c == '%')
                mw_buf_putc(b, '%');
            mw_buf_putc(b, c < 0x20 || c == 0x7f ? ' ' : (char)c);
        }
        if (!nl)
            break;
        mw_buf_puts(b, "\r\n");
        t = nl + 1;
    }
    mw_buf_append(b, "", 1);
    end_packet(b, at);
}

void mw_mp_put_addheader(mw_buf *b, const char *name, const char *value)
{
    size_t at = begin_packet(b, 'h');
    put_cstr(b, name);
    put_cstr(b, value);
    end_packet(b, at);
}

static void put_idx_header(mw_buf *b, char cmd, uint32_t index, const char *name, const char *value)
{
    size_t at = begin_packet(b, cmd);
    put32(b, index);
    put_cstr(b, name);
    put_cstr(b, value);
    end_packet(b, at);
}

void mw_mp_put_insheader(mw_buf *b, uint32_t index, const char *name, const char *value)
{
    put_idx_header(b, 'i', index, name, value);
}

void mw_mp_put_chgheader(mw_buf *b, uint32_t index, const char *name, const char *value)
{
    put_idx_header(b, 'm', index, name, value);
}

void mw_mp_put_quarantine(mw_buf *b, const char *reason)
{
    mw_mp_put_str(b, 'q', reason);
}

void mw_mp_put_optneg(mw_buf *b, uint32_t version, uint32_t actions, uint32_t protocol,
                      const char *const *symlists)
{
    size_t at = begin_packet(b, 'O');
    put32(b, version);
    put32(b, actions);
    put32(b, protocol);
    for (uint32_t i = 0; symlists && i < MW_MP_SYM__N; i++) {
        if (!symlists[i])
            continue;
        put32(b, i);
        put_cstr(b, symlists[i]);
    }
    end_packet(b, at);
}

void mw_mp_put_macros(mw_buf *b, char stage_cmd, const char *const *pairs, size_t npairs)
{
    size_t at = begin_packet(b, 'D');
    mw_buf_putc(b, stage_cmd);
    for (size_t i = 0; i < 2 * npairs; i++)
        put_cstr(b, pairs[i]);
    end_packet(b, at);
}

void mw_mp_put_connect(mw_buf *b, const char *host, char family, uint16_t port, const char *addr)
{
    size_t at = begin_packet(b, 'C');
    put_cstr(b, host);
    mw_buf_putc(b, family);
    if (family != 'U') {
        mw_buf_putc(b, (char)(port >> 8));
        mw_buf_putc(b, (char)port);
        put_cstr(b, addr);
    }
    end_packet(b, at);
}

void mw_mp_put_str(mw_buf *b, char cmd, const char *s)
{
    size_t at = begin_packet(b, cmd);
    put_cstr(b, s);
    end_packet(b, at);
}

void mw_mp_put_args(mw_buf *b, char cmd, const char *const *argv, size_t argc)
{
    size_t at = begin_packet(b, cmd);
    for (size_t i = 0; i < argc; i++)
        put_cstr(b, argv[i]);
    end_packet(b, at);
}

void mw_mp_put_header(mw_buf *b, const char *name, const char *value)
{
    size_t at = begin_packet(b, 'L');
    put_cstr(b, name);
    put_cstr(b, value);
    end_packet(b, at);
}

void mw_mp_put_body(mw_buf *b, char cmd, const void *data, size_t len)
{
    mw_mp_put(b, cmd, data, len);
}

/* ---- decoding replies ---- */

static bool two_strs(const uint8_t *p, size_t n, const char **a, const char **b2)
{
    if (count_strs(p, n) != 2)
        return false;
    *a = (const char *)p;
    *b2 = (const char *)p + strlen(*a) + 1;
    return true;
}

bool mw_mp_decode_reply(char cmd, const uint8_t *p, size_t n, mw_mp_reply *o, const char **why)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    switch (cmd) {
    case 'c':
    case 'r':
    case 't':
    case 'd':
    case 'a':
    case 'p':
        if (n)
            FAIL("unexpected payload");
        return true;
    case 'y':
        if (!one_str(p, n, &o->str1) || n < 5)
            FAIL("replycode: malformed");
        return true;
    case 'q':
        if (!one_str(p, n, &o->str1))
            FAIL("quarantine: malformed");
        return true;
    case 'h':
        if (!two_strs(p, n, &o->str1, &o->str2))
            FAIL("addheader: malformed");
        return true;
    case 'i':
    case 'm':
        if (n < 4 || !two_strs(p + 4, n - 4, &o->str1, &o->str2))
            FAIL("header change: malformed");
        o->index = get32(p);
        return true;
    case 'O': {
        if (n < 12)
            FAIL("optneg: shorter than 12 bytes");
        o->version = get32(p);
        o->actions = get32(p + 4);
        o->protocol = get32(p + 8);
        size_t i = 12;
        while (i < n) {
            if (n - i < 5)
                FAIL("optneg: truncated symbol list");
            uint32_t st = get32(p + i);
            i += 4;
            const uint8_t *z = memchr(p + i, '\0', n - i);
            if (st >= MW_MP_SYM__N || !z)
                FAIL("optneg: bad symbol list");
            o->symlists[st] = (const char *)p + i;
            i = (size_t)(z - p) + 1;
        }
        return true;
    }
    default:
        FAIL("unknown reply");
    }
}
