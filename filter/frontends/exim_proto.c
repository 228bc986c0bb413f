/*
 * exim_proto.c - the wire formats of the Exim front end, without sockets:
 * the rspamd request (what Exim 4.96's spam.c sends for variant=rspamd),
 * the mbox-form message Exim spools for scanners, the reply our ACL
 * snippet reads back, and the one-line RCPT-time protocol.
 *
 * Everything here takes untrusted bytes: lengths are explicit, every
 * buffer is bounded, and nothing aborts on malformed input.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "exim.h"

#define MAX_HEADER_BYTES (1024 * 1024)
#define MAX_FIELD 4096

enum { MB_FIRST, MB_ENV_FROM, MB_ENV_TO, MB_ENV_TO_CONT, MB_HEADERS, MB_BODY };

static bool fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return false;
}

/* Copy of s[0..n) with control characters replaced, capped. */
static char *field_dup(const char *s, size_t n)
{
    if (n > MAX_FIELD)
        n = MAX_FIELD;
    char *d = mw_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        d[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    d[n] = '\0';
    return d;
}

/* ---- request ---- */

void mw_exim_request_clear(mw_exim_request *r)
{
    free(r->command);
    free(r->queue_id);
    free(r->from);
    for (size_t i = 0; i < r->nrcpts; i++)
        free(r->rcpts[i]);
    free(r->rcpts);
    free(r->helo);
    free(r->hostname);
    free(r->ip);
    free(r->user);
    memset(r, 0, sizeof *r);
}

bool mw_exim_request_line(mw_exim_request *r, const char *line, size_t len, char *err, size_t errlen)
{
    static const char *const cmds[] = {"CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "PING"};
    const char *sp = memchr(line, ' ', len);
    if (!sp)
        return fail(err, errlen, "request line has no protocol version");
    size_t clen = (size_t)(sp - line);
    const char *ver = sp + 1;
    size_t vlen = len - clen - 1;
    bool known = false;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        known = known || (strlen(cmds[i]) == clen && memcmp(cmds[i], line, clen) == 0);
    if (!known)
        return fail(err, errlen, "unknown request command (expected CHECK RSPAMC/1.3)");
    if (!((vlen > 7 && memcmp(ver, "RSPAMC/", 7) == 0) || (vlen > 6 && memcmp(ver, "SPAMC/", 6) == 0)))
        return fail(err, errlen, "unknown protocol (expected RSPAMC/1.3)");
    free(r->command);
    r->command = field_dup(line, clen);
    return true;
}

static void set_field(char **dst, const char *v, size_t n)
{
    free(*dst);
    *dst = field_dup(v, n);
}

bool mw_exim_request_header(mw_exim_request *r, const char *line, size_t len, char *err, size_t errlen)
{
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return fail(err, errlen, "request header without a name");
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t' || v[vlen - 1] == '\r'))
        vlen--;
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(line, name, nlen) == 0)
    if (IS("Content-length")) {
        if (vlen == 0 || vlen > 19)
            return fail(err, errlen, "bad Content-length");
        size_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return fail(err, errlen, "bad Content-length");
            n = n * 10 + (size_t)(v[i] - '0');
        }
        r->content_length = n;
        r->have_length = true;
    } else if (IS("Queue-Id")) {
        set_field(&r->queue_id, v, vlen);
    } else if (IS("From")) {
        set_field(&r->from, v, vlen);
    } else if (IS("Rcpt")) {
        if (r->nrcpts < MW_EXIM_MAX_RCPTS) {
            if (r->nrcpts % 16 == 0)
                r->rcpts = mw_reallocarray(r->rcpts, r->nrcpts + 16, sizeof *r->rcpts);
            r->rcpts[r->nrcpts++] = field_dup(v, vlen);
        }
    } else if (IS("Helo")) {
        set_field(&r->helo, v, vlen);
    } else if (IS("Hostname")) {
        set_field(&r->hostname, v, vlen);
    } else if (IS("IP")) {
        set_field(&r->ip, v, vlen);
    } else if (IS("User")) {
        set_field(&r->user, v, vlen);
    }
#undef IS
    return true;
}

/* ---- mbox ---- */

void mw_exim_mbox_init(mw_exim_mbox *m, const mw_exim_mbox_cb *cb, void *ctx)
{
    memset(m, 0, sizeof *m);
    m->cb = cb;
    m->ctx = ctx;
    m->state = MB_FIRST;
}

void mw_exim_mbox_free(mw_exim_mbox *m)
{
    mw_buf_free(&m->line);
    mw_buf_free(&m->hdr);
    mw_buf_free(&m->out);
}

static void flush_header(mw_exim_mbox *m)
{
    if (m->hdr.len == 0)
        return;
    char *colon = memchr(m->hdr.data, ':', m->hdr.len);
    /* a name that is empty or holds a NUL is not a header: passing it on as
     * a C string would cut "From\0x:" to a From header */
    if (colon && (colon == m->hdr.data || memchr(m->hdr.data, '\0', (size_t)(colon - m->hdr.data)))) {
        m->nbad_headers++;
        colon = NULL;
    }
    if (colon) {
        *colon = '\0';
        char *v = colon + 1;
        size_t vlen = m->hdr.len - (size_t)(v - m->hdr.data);
        /* Exim stores a NUL in a header as '?' (receive.c), so that is
         * what it delivers and what is judged */
        for (char *z = memchr(v, '\0', vlen); z; z = memchr(z, '\0', vlen - (size_t)(z - v)))
            *z = '?';
        m->nheaders++;
        if (m->cb->header)
            m->cb->header(m->ctx, m->hdr.data, v, vlen);
    }
    mw_buf_reset(&m->hdr);
}

static void to_body(mw_exim_mbox *m)
{
    flush_header(m);
    m->state = MB_BODY;
    if (m->cb->eoh)
        m->cb->eoh(m->ctx);
}

static void body_bytes(mw_exim_mbox *m, const unsigned char *p, size_t n)
{
    if (n == 0 || m->header_over)
        return;
    mw_buf_reset(&m->out);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && !m->prev_cr)
            mw_buf_putc(&m->out, '\r');
        mw_buf_putc(&m->out, (char)p[i]);
        m->prev_cr = p[i] == '\r';
    }
    if (m->cb->body)
        m->cb->body(m->ctx, (const unsigned char *)m->out.data, m->out.len);
}

static bool starts_ci(const char *s, size_t n, const char *prefix)
{
    size_t pl = strlen(prefix);
    return n >= pl && strncasecmp(s, prefix, pl) == 0;
}

/* isspace() in the C locale, which Exim uses between a header's name and
 * its colon (a fold counts: "Name\n : value" is a header to Exim). */
static bool exim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/*
 * Is this (logical, continuation lines joined with LF) header text a
 * header?  Exim's rule (receive.c): not starting with a space, a name of
 * printable ASCII other than ':' (0x21-0x7e), any white space (folds
 * included), then ':'.  1: a header; 0: a name and white space only so far,
 * so a continuation line may still bring the colon; -1: not a header, the
 * body starts here.  Taking exactly Exim's headers keeps the engine's A-R
 * count the same as Exim's (a space, an 8-bit byte or a NUL in the name
 * make the line body text, for Exim as here).
 */
static int classify(const char *t, size_t n)
{
    if (n == 0 || exim_space(t[0]))
        return -1;
    size_t i = 0;
    while (i < n && t[i] > ' ' && t[i] < 0x7f && t[i] != ':')
        i++;
    while (i < n && exim_space(t[i]))
        i++;
    if (i == n)
        return 0;
    return t[i] == ':' ? 1 : -1;
}

/* The header section is over the bound: pass nothing more on, skip the rest. */
static void header_section_over(mw_exim_mbox *m)
{
    m->header_over = true;
    m->candidate = false;
    mw_buf_reset(&m->hdr);
    m->state = MB_BODY;
}

/* The header candidate in m->hdr never got its colon: the body starts
 * with it (as with Exim, for which it is the first data line). */
static void candidate_to_body(mw_exim_mbox *m)
{
    mw_buf t = m->hdr;
    mw_buf_init(&m->hdr);
    m->candidate = false;
    to_body(m);
    body_bytes(m, (const unsigned char *)t.data, t.len);
    body_bytes(m, (const unsigned char *)"\n", 1);
    mw_buf_free(&t);
}

/* One complete line of the header section (without LF / CRLF); total: its
 * length as received, including any part over the line cap. */
static void header_line(mw_exim_mbox *m, const char *l, size_t n, const char *raw, size_t rawlen, size_t total)
{
    bool cont = n > 0 && (l[0] == ' ' || l[0] == '\t');
    if (m->state == MB_FIRST) {
        m->state = MB_ENV_FROM;
        if (n >= 5 && memcmp(l, "From ", 5) == 0)
            return;
    }
    /* Exim writes at most one X-Envelope-From then one X-Envelope-To, right
     * after the From line; the message's own headers come after them. */
    if (m->state == MB_ENV_FROM) {
        m->state = MB_ENV_TO;
        if (starts_ci(l, n, "X-Envelope-From:"))
            return;
    }
    if (m->state == MB_ENV_TO) {
        m->state = MB_HEADERS;
        if (starts_ci(l, n, "X-Envelope-To:")) {
            m->state = MB_ENV_TO_CONT;     /* swallow its continuation lines */
            return;
        }
    }
    if (m->state == MB_ENV_TO_CONT) {
        if (cont)
            return;
        m->state = MB_HEADERS;
    }
    if (n == 0) {
        if (m->candidate) {
            /* the blank line is body text too: the body began above it */
            candidate_to_body(m);
            body_bytes(m, (const unsigned char *)raw, rawlen);
            return;
        }
        to_body(m);
        return;
    }
    bool joins = cont && m->hdr.len;
    if (!joins && m->candidate) {
        /* the candidate never got its colon: it is the first body line */
        candidate_to_body(m);
        body_bytes(m, (const unsigned char *)raw, rawlen);
        return;
    }
    int kind = joins ? 1 : classify(l, n);
    if (kind < 0) {
        /* not a header: the body starts here, as Exim sees it */
        to_body(m);
        body_bytes(m, (const unsigned char *)raw, rawlen);
        return;
    }
    /* bounded as Exim bounds it (header_maxsize) */
    m->header_bytes += total;
    if (m->header_bytes > MW_EXIM_MAX_HEADER_SECTION) {
        header_section_over(m);
        return;
    }
    if (joins) {
        if (m->hdr.len < MAX_HEADER_BYTES) {
            mw_buf_putc(&m->hdr, '\n');
            mw_buf_append(&m->hdr, l, n);
        }
        if (m->candidate) {
            int k = classify(m->hdr.data, m->hdr.len);
            if (k > 0)
                m->candidate = false;      /* the colon came after a fold */
            else if (k < 0)
                candidate_to_body(m);
        }
        return;
    }
    flush_header(m);
    mw_buf_append(&m->hdr, l, n);
    m->candidate = kind == 0;
}

static void end_line(mw_exim_mbox *m)
{
    size_t n = m->line.len;
    const char *l = m->line.data ? m->line.data : "";
    size_t rawlen = n;
    if (n && l[n - 1] == '\n')
        n--;
    if (n && l[n - 1] == '\r')
        n--;
    header_line(m, l, n, l, rawlen, m->line_raw);
    mw_buf_reset(&m->line);
    m->line_over = false;
    m->line_raw = 0;
}

void mw_exim_mbox_feed(mw_exim_mbox *m, const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && m->state != MB_BODY) {
        const unsigned char *nl = memchr(p + i, '\n', n - i);
        size_t take = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
        m->line_raw += take;
        if (!m->line_over) {
            size_t room = MAX_HEADER_BYTES - m->line.len;
            if (take > room) {
                mw_buf_append(&m->line, p + i, room);
                m->line_over = true;
            } else {
                mw_buf_append(&m->line, p + i, take);
            }
        }
        i += take;
        if (nl) {
            if (m->line_over)
                mw_buf_putc(&m->line, '\n');
            end_line(m);
        }
    }
    if (i < n)
        body_bytes(m, p + i, n - i);
}

void mw_exim_mbox_finish(mw_exim_mbox *m)
{
    if (m->state == MB_BODY)
        return;
    if (m->line.len)
        end_line(m);
    if (m->candidate)
        candidate_to_body(m);
    if (m->state != MB_BODY)
        to_body(m);
}

/* ---- reply ---- */

/* "Name: value" unfolded onto one line, control characters dropped.
 * false if the result would be too long for one line. */
static bool one_line(mw_buf *out, const char *prefix, const char *name, const char *value)
{
    size_t start = out->len;
    mw_buf_puts(out, prefix);
    if (name) {
        mw_buf_puts(out, name);
        mw_buf_puts(out, ": ");
    }
    const char *v = value ? value : "";
    while (*v == ' ' || *v == '\t')
        v++;
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '\r')
            continue;
        if (c == '\n') {
            /* a fold: the whitespace that follows stays, the line break goes;
             * collapse to one space (relaxed canonicalization is unaffected) */
            while (v[1] == ' ' || v[1] == '\t')
                v++;
            mw_buf_putc(out, ' ');
            continue;
        }
        if (c == '\t')
            c = ' ';
        if (c < 0x20 || c == 0x7f)
            continue;
        mw_buf_putc(out, (char)c);
    }
    if (out->len - start > MW_EXIM_MAX_LINE) {
        out->len = start;
        out->data[start] = '\0';
        return false;
    }
    mw_buf_puts(out, "\r\n");
    return true;
}

/* Does v hold a control byte other than a fold (CR, LF, TAB), or DEL? */
static bool has_controls(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)(v ? v : ""); *p; p++)
        if ((*p < 0x20 && *p != '\r' && *p != '\n' && *p != '\t') || *p == 0x7f)
            return true;
    return false;
}

static void head(mw_buf *out, bool spam, double score, const char *action)
{
    mw_buf_printf(out, "RSPAMD/1.3 0 EX_OK\r\nMetric: default; %s %.2f / 15.00 / 15.00\r\nAction: %s\r\n",
                  spam ? "True" : "False", score, action);
}

void mw_exim_reply_tempfail(const char *text, mw_buf *out)
{
    head(out, true, 15.0, "soft reject");
    mw_buf t = MW_BUF_INIT;
    mw_buf_printf(&t, "451 4.3.0 %s", text ? text : "temporary failure");
    one_line(out, "MW-Reply: ", NULL, mw_buf_cstr(&t));
    mw_buf_free(&t);
}

static bool in_list(const unsigned *list, size_t n, unsigned index)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == index)
            return true;
    return false;
}

bool mw_exim_reply(const mw_verdict *v, const unsigned *stay, size_t nstay, mw_buf *out, size_t *dropped)
{
    size_t drop = 0;
    if (dropped)
        *dropped = 0;
    if (!v) {
        mw_exim_reply_tempfail("message could not be checked", out);
        return true;
    }
    bool any_removed = false;
    for (size_t i = 0; i < v->nar; i++) {
        if (!v->ar[i].removed)
            continue;
        any_removed = true;
        if (in_list(stay, nstay, v->ar[i].index) && v->action != MW_ACTION_REJECT &&
            v->action != MW_ACTION_TEMPFAIL && v->action != MW_ACTION_DISCARD) {
            /* Exim would deliver it: never let a forged A-R through.
             * Permanent: a retry brings the same header back. */
            head(out, true, 15.0, "reject");
            one_line(out, "MW-Reply: ", NULL,
                     "550 5.7.1 Message has a forged Authentication-Results header that cannot be removed");
            return false;
        }
    }
    switch (v->action) {
    case MW_ACTION_REJECT:
        head(out, true, 15.0, "reject");
        break;
    case MW_ACTION_TEMPFAIL:
        head(out, true, 15.0, "soft reject");
        break;
    case MW_ACTION_QUARANTINE:
        head(out, false, 0.0, "add header");
        break;
    case MW_ACTION_DISCARD:
        head(out, true, 15.0, "discard");
        break;
    default:
        head(out, false, 0.0, "no action");
        break;
    }
    if (v->rule)
        one_line(out, "MW-Rule: ", NULL, v->rule);
    if (v->action == MW_ACTION_REJECT || v->action == MW_ACTION_TEMPFAIL) {
        mw_buf t = MW_BUF_INIT;
        mw_buf_printf(&t, "%s%s%s %s", v->rcode, v->xcode[0] ? " " : "", v->xcode, v->text ? v->text : "");
        one_line(out, "MW-Reply: ", NULL, mw_buf_cstr(&t));
        mw_buf_free(&t);
        return true;   /* headers do not matter for a refused message */
    }
    if (v->action == MW_ACTION_QUARANTINE)
        one_line(out, "MW-Quarantine: ", NULL, v->quarantine_reason ? v->quarantine_reason : "mailwarden");
    if (any_removed)
        mw_buf_puts(out, "MW-Remove: Authentication-Results\r\n");
    /* bottom-most first: the ACL adds each line with :at_start:, so the
     * last one listed ends up on top, as add[0] must.  Before the Keep
     * lines, so that the reply's own headers always fit. */
    for (size_t i = v->nadd; i-- > 0;)
        if (!one_line(out, "MW-Add: ", v->add[i].name, v->add[i].value))
            drop++;
    /* the kept A-R headers go back (Exim removed them all by name), except
     * those Exim cannot match by name, which never left */
    for (size_t i = 0; any_removed && i < v->nar; i++) {
        const mw_ar_header *a = &v->ar[i];
        if (a->removed || in_list(stay, nstay, a->index))
            continue;
        size_t before = out->len;
        if (has_controls(a->value)) {
            /* one_line would delete them and so rewrite the value: "\x01mx.ours"
             * would come back as our own id.  Never re-added, counted. */
            drop++;
        } else if (!one_line(out, "MW-Keep: ", "Authentication-Results", a->value)) {
            drop++;
        } else if (out->len > MW_EXIM_MAX_REPLY) {
            out->len = before;              /* Exim would cut it */
            out->data[before] = '\0';
            drop++;
        }
    }
    if (dropped)
        *dropped = drop;
    return true;
}

/* ---- RCPT line ---- */

void mw_exim_rcpt_clear(mw_exim_rcpt *r)
{
    free(r->ip);
    free(r->helo);
    free(r->from);
    free(r->rcpt);
    free(r->auth);
    free(r->port);
    memset(r, 0, sizeof *r);
}

bool mw_exim_rcpt_parse(mw_exim_rcpt *r, const char *line, size_t len, char *err, size_t errlen)
{
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len < 4 || memcmp(line, "RCPT", 4) != 0 || (len > 4 && line[4] != ' '))
        return fail(err, errlen, "not a RCPT request");
    size_t i = 4;
    while (i < len) {
        while (i < len && line[i] == ' ')
            i++;
        size_t start = i;
        while (i < len && line[i] != ' ')
            i++;
        const char *tok = line + start;
        size_t tlen = i - start;
        const char *eq = memchr(tok, '=', tlen);
        if (!eq)
            continue;
        size_t klen = (size_t)(eq - tok);
        const char *v = eq + 1;
        size_t vlen = tlen - klen - 1;
        char **dst = NULL;
#define K(name) (klen == sizeof(name) - 1 && memcmp(tok, name, klen) == 0)
        if (K("ip"))
            dst = &r->ip;
        else if (K("helo"))
            dst = &r->helo;
        else if (K("from"))
            dst = &r->from;
        else if (K("rcpt"))
            dst = &r->rcpt;
        else if (K("auth"))
            dst = &r->auth;
        else if (K("port"))
            dst = &r->port;
#undef K
        if (dst)
            set_field(dst, v, vlen);
    }
    return true;
}
