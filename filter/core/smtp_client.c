/*
 * smtp_client.c - hand a message to an SMTP relay (see smtp_client.h).
 *
 * Purpose
 *   The report tool's only way out: one connection to the configured relay
 *   (normally the local MTA), any number of transactions on it.
 *
 * Design notes
 *   - The socket is non-blocking from connect on; every read and write
 *     waits in poll() with the per-step deadline, for plain text and TLS
 *     alike (SSL_ERROR_WANT_READ/WRITE map onto the same poll), so a silent
 *     relay can never hang the run.
 *   - Replies: multi-line replies are read to the "NNN " line; lines are
 *     capped (REPLY_LINE_MAX) and the whole reply too (REPLY_MAX_LINES).
 *   - TLS: STARTTLS when offered and allowed.  The certificate is verified
 *     by default (the system CA store or the caller's CA file, the relay's
 *     host name with SSL_set1_host, or its address when the relay is given
 *     as one); tls_no_verify opts out (encryption only).  A failed
 *     handshake or verification is a temporary failure with the reason
 *     ("certificate verify failed: self-signed certificate"): the caller
 *     retries later rather than silently falling back to plain text.
 *   - Addresses reach MAIL FROM and RCPT TO only when they are visible
 *     ASCII without blanks or angle brackets (no command injection, even by
 *     a careless caller); reply text is made printable before it is
 *     returned, since callers log it.
 *   - Dot-stuffing and CRLF normalisation happen while streaming the
 *     message; the message is never copied whole.
 *
 * Diagnostics
 *   Every failure fills mw_smtp_result: the stage, the reply code (0 for
 *   local/connection trouble) and the reply text or the local reason.
 *
 * See also: smtp_client.h, filter/tools/report.c.
 */
#include "smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"

#define REPLY_LINE_MAX  2048
#define REPLY_MAX_LINES 100

struct mw_smtp {
    int       fd;
    SSL_CTX  *ctx;
    SSL      *ssl;
    unsigned  timeout_ms;
    bool      dead;            /* connection-level failure: no more transactions */
    bool      need_rset;       /* a transaction was left half way */
    bool      esmtp;
    bool      has_starttls, has_size, has_8bitmime;
    unsigned long long max_size;
    char      rbuf[4096];      /* read buffer */
    size_t    rlen, rpos;
};

const char *mw_smtp_status_name(mw_smtp_status s)
{
    switch (s) {
    case MW_SMTP_OK:   return "ok";
    case MW_SMTP_TEMP: return "temporary";
    case MW_SMTP_PERM: return "permanent";
    }
    return "?";
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_res(mw_smtp_result *r, mw_smtp_status st, int code, const char *stage,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void set_res(mw_smtp_result *r, mw_smtp_status st, int code, const char *stage,
                    const char *fmt, ...)
{
    va_list ap;

    r->status = st;
    r->code = code;
    r->stage = stage;
    va_start(ap, fmt);
    vsnprintf(r->reply, sizeof r->reply, fmt, ap);
    va_end(ap);
}

/* Wait until fd is readable (want_read) or writable; false on timeout. */
static bool wait_fd(int fd, bool want_read, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = want_read ? POLLIN : POLLOUT};
        int n = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

/* Write all of p by deadline; false on error or timeout (s->dead set). */
static bool io_write_by(mw_smtp *s, const char *p, size_t n, long long deadline)
{
    while (n > 0) {
        ssize_t w;
        if (s->ssl != NULL) {
            int r = SSL_write(s->ssl, p, (int)(n > 65536 ? 65536 : n));
            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);
                if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                    wait_fd(s->fd, e == SSL_ERROR_WANT_READ, deadline))
                    continue;
                s->dead = true;
                return false;
            }
            w = r;
        } else {
            w = send(s->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if ((errno == EAGAIN || errno == EINTR) && wait_fd(s->fd, false, deadline))
                    continue;
                s->dead = true;
                return false;
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Write all of p within one step's deadline. */
static bool io_write(mw_smtp *s, const char *p, size_t n)
{
    return io_write_by(s, p, n, now_ms() + s->timeout_ms);
}

/* Refill the read buffer; false on EOF, error or timeout. */
static bool io_fill(mw_smtp *s, long long deadline)
{
    for (;;) {
        ssize_t r;
        if (s->ssl != NULL) {
            int k = SSL_read(s->ssl, s->rbuf, (int)sizeof s->rbuf);
            if (k <= 0) {
                int e = SSL_get_error(s->ssl, k);
                if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                    wait_fd(s->fd, e == SSL_ERROR_WANT_READ, deadline))
                    continue;
                return false;
            }
            r = k;
        } else {
            r = recv(s->fd, s->rbuf, sizeof s->rbuf, 0);
            if (r < 0) {
                if ((errno == EAGAIN || errno == EINTR) && wait_fd(s->fd, true, deadline))
                    continue;
                return false;
            }
            if (r == 0)
                return false;
        }
        s->rlen = (size_t)r;
        s->rpos = 0;
        return true;
    }
}

/* One reply line without CRLF (capped); false on connection trouble. */
static bool read_line(mw_smtp *s, mw_buf *line, long long deadline)
{
    mw_buf_reset(line);
    for (;;) {
        if (s->rpos >= s->rlen && !io_fill(s, deadline)) {
            s->dead = true;
            return false;
        }
        char c = s->rbuf[s->rpos++];
        if (c == '\n') {
            if (line->len > 0 && line->data[line->len - 1] == '\r')
                line->data[--line->len] = '\0';
            return true;
        }
        if (line->len < REPLY_LINE_MAX)
            mw_buf_putc(line, c);
    }
}

/*
 * Read a whole reply: its code into *code, the lines (after the code) into
 * text (joined by " / "), the lines also into lines (each NUL-separated
 * line, for EHLO keywords) when not NULL.  false on connection trouble or
 * a malformed reply.
 */
static bool read_reply(mw_smtp *s, int *code, mw_buf *text, mw_buf *lines)
{
    long long deadline = now_ms() + s->timeout_ms;
    mw_buf line = MW_BUF_INIT;
    bool ok = false;

    mw_buf_reset(text);
    if (lines != NULL)
        mw_buf_reset(lines);
    *code = 0;
    for (int n = 0; n < REPLY_MAX_LINES; n++) {
        if (!read_line(s, &line, deadline))
            break;
        const char *l = mw_buf_cstr(&line);
        if (line.len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
            l[2] > '9' || (line.len > 3 && l[3] != ' ' && l[3] != '-')) {
            s->dead = true;
            mw_buf_printf(text, "malformed reply line \"%.80s\"", l);
            break;
        }
        int c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        if (n > 0 && c != *code) {
            s->dead = true;
            break;
        }
        *code = c;
        for (size_t i = 0; i < line.len; i++)   /* callers log the text */
            if ((unsigned char)line.data[i] < 0x20 || (unsigned char)line.data[i] >= 0x7f)
                line.data[i] = '?';
        if (text->len < 400)
            mw_buf_printf(text, "%s%s", n > 0 ? " / " : "", line.len > 4 ? l + 4 : "");
        if (lines != NULL) {
            mw_buf_puts(lines, line.len > 4 ? l + 4 : "");
            mw_buf_putc(lines, '\n');
        }
        if (line.len == 3 || l[3] == ' ') {
            ok = true;
            break;
        }
    }
    mw_buf_free(&line);
    return ok;
}

/* Send a command line (CRLF added) and read the reply. */
static bool command(mw_smtp *s, const char *cmd, int *code, mw_buf *text, mw_buf *lines)
{
    mw_buf b = MW_BUF_INIT;
    bool ok;

    mw_buf_printf(&b, "%s\r\n", cmd);
    ok = io_write(s, b.data, b.len) && read_reply(s, code, text, lines);
    mw_buf_free(&b);
    return ok;
}

/* Classify a finished reply; true when it is the expected 2xx/3xx. */
static bool classify(mw_smtp_result *res, int code, int want_class, const char *stage,
                     const mw_buf *text)
{
    if (code / 100 == want_class) {
        set_res(res, MW_SMTP_OK, code, stage, "%s", mw_buf_cstr(text));
        return true;
    }
    set_res(res, code >= 500 ? MW_SMTP_PERM : MW_SMTP_TEMP, code, stage, "%d %s", code,
            mw_buf_cstr(text));
    return false;
}

static void conn_lost(mw_smtp_result *res, const char *stage, const mw_buf *text)
{
    set_res(res, MW_SMTP_TEMP, 0, stage, "connection lost or timed out%s%s",
            text != NULL && text->len ? ": " : "", text != NULL ? mw_buf_cstr(text) : "");
}

static int connect_to(const char *host, unsigned port, unsigned timeout_ms, char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL;
    char ps[16];
    int fd = -1, rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    snprintf(ps, sizeof ps, "%u", port);
    rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    snprintf(why, whylen, "%s port %u: no address", host, port);
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        int err = errno;
        if (err == EINPROGRESS) {
            long long deadline = now_ms() + timeout_ms;
            socklen_t el = sizeof err;
            if (!wait_fd(fd, false, deadline))
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
                err = errno;
            if (err == 0)
                break;
        }
        snprintf(why, whylen, "%s port %u: %s", host, port, strerror(err));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Parse the EHLO keywords. */
static void ehlo_keywords(mw_smtp *s, const mw_buf *lines)
{
    const char *p = mw_buf_cstr(lines);

    s->has_starttls = s->has_size = s->has_8bitmime = false;
    s->max_size = 0;
    /* the first line is the greeting domain, the rest are keywords */
    p = strchr(p, '\n');
    while (p != NULL && *++p != '\0') {
        const char *e = strchr(p, '\n');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        if (n == 8 && strncasecmp(p, "STARTTLS", 8) == 0)
            s->has_starttls = true;
        else if (n >= 4 && strncasecmp(p, "SIZE", 4) == 0 && (n == 4 || p[4] == ' ')) {
            s->has_size = true;
            s->max_size = n > 5 ? strtoull(p + 5, NULL, 10) : 0;
        } else if (n == 8 && strncasecmp(p, "8BITMIME", 8) == 0)
            s->has_8bitmime = true;
        p = e;
    }
}

static bool hello(mw_smtp *s, const mw_smtp_options *o, mw_smtp_result *res)
{
    mw_buf text = MW_BUF_INIT, lines = MW_BUF_INIT, cmd = MW_BUF_INIT;
    int code = 0;
    bool ok = false;

    mw_buf_printf(&cmd, "EHLO %s", o->helo);
    if (!command(s, mw_buf_cstr(&cmd), &code, &text, &lines)) {
        conn_lost(res, "ehlo", &text);
        goto out;
    }
    if (code / 100 == 2) {
        s->esmtp = true;
        ehlo_keywords(s, &lines);
        ok = classify(res, code, 2, "ehlo", &text);
        goto out;
    }
    if (code / 100 == 4) {
        classify(res, code, 2, "ehlo", &text);
        goto out;
    }
    mw_buf_reset(&cmd);
    mw_buf_printf(&cmd, "HELO %s", o->helo);
    if (!command(s, mw_buf_cstr(&cmd), &code, &text, NULL)) {
        conn_lost(res, "ehlo", &text);
        goto out;
    }
    s->esmtp = false;
    ok = classify(res, code, 2, "ehlo", &text);
out:
    mw_buf_free(&text);
    mw_buf_free(&lines);
    mw_buf_free(&cmd);
    return ok;
}

/*
 * The SSL object for s->ctx: SNI, and unless o->tls_no_verify the trust
 * anchors (o->tls_ca_file, else the system store) and the name check (the
 * relay's address when o->host is one, else its host name).  false with
 * res filled (temporary) on failure.
 */
static bool tls_setup(mw_smtp *s, const mw_smtp_options *o, mw_smtp_result *res)
{
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, o->host, addr) == 1 || inet_pton(AF_INET6, o->host, addr) == 1;
    const char *ca = o->tls_ca_file != NULL && o->tls_ca_file[0] != '\0' ? o->tls_ca_file : NULL;

    s->dead = true;   /* until the end */
    if (o->tls_no_verify) {
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        int ok = ca != NULL ? SSL_CTX_load_verify_locations(s->ctx, ca, NULL)
                            : SSL_CTX_set_default_verify_paths(s->ctx);
        if (ok != 1) {
            char eb[200];
            ERR_error_string_n(ERR_get_error(), eb, sizeof eb);
            ERR_clear_error();
            set_res(res, MW_SMTP_TEMP, 0, "starttls", "cannot load the CA certificates%s%s: %s",
                    ca != NULL ? " from " : "", ca != NULL ? ca : "", eb);
            return false;
        }
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
    }
    s->ssl = SSL_new(s->ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
        set_res(res, MW_SMTP_TEMP, 0, "starttls", "SSL_new failed");
        return false;
    }
    if (!is_ip)
        SSL_set_tlsext_host_name(s->ssl, o->host);
    if (!o->tls_no_verify) {
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), o->host)
                       : SSL_set1_host(s->ssl, o->host);
        if (ok != 1) {
            set_res(res, MW_SMTP_TEMP, 0, "starttls", "cannot set the name to verify (%s)",
                    o->host);
            return false;
        }
    }
    s->dead = false;
    return true;
}

static bool starttls(mw_smtp *s, const mw_smtp_options *o, mw_smtp_result *res)
{
    mw_buf text = MW_BUF_INIT;
    int code = 0;
    bool ok = false;
    long long deadline;

    if (!command(s, "STARTTLS", &code, &text, NULL)) {
        conn_lost(res, "starttls", &text);
        goto out;
    }
    if (!classify(res, code, 2, "starttls", &text))
        goto out;
    if (s->rpos < s->rlen) {   /* data after 220: a plaintext injection attempt */
        s->dead = true;
        set_res(res, MW_SMTP_TEMP, 0, "starttls", "data received after the STARTTLS reply");
        goto out;
    }
    s->ctx = SSL_CTX_new(TLS_client_method());
    if (s->ctx == NULL) {
        set_res(res, MW_SMTP_TEMP, 0, "starttls", "SSL_CTX_new failed");
        s->dead = true;
        goto out;
    }
    SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
    if (!tls_setup(s, o, res))
        goto out;
    deadline = now_ms() + s->timeout_ms;
    for (;;) {
        int r = SSL_connect(s->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(s->ssl, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
            wait_fd(s->fd, e == SSL_ERROR_WANT_READ, deadline))
            continue;
        long vr = SSL_get_verify_result(s->ssl);
        if (!o->tls_no_verify && vr != X509_V_OK) {
            set_res(res, MW_SMTP_TEMP, 0, "starttls",
                    "TLS certificate verification failed for %s: %s", o->host,
                    X509_verify_cert_error_string(vr));
        } else {
            char eb[200];
            ERR_error_string_n(ERR_get_error(), eb, sizeof eb);
            set_res(res, MW_SMTP_TEMP, 0, "starttls", "TLS handshake failed: %s", eb);
        }
        ERR_clear_error();
        SSL_free(s->ssl);
        s->ssl = NULL;
        s->dead = true;
        goto out;
    }
    ok = true;
out:
    mw_buf_free(&text);
    return ok;
}

mw_smtp *mw_smtp_open(const mw_smtp_options *o, mw_smtp_result *res)
{
    mw_smtp *s = mw_calloc(1, sizeof *s);
    mw_buf text = MW_BUF_INIT;
    char why[300];
    int code = 0;

    memset(res, 0, sizeof *res);
    s->timeout_ms = o->timeout_ms ? o->timeout_ms : 60000;
    s->fd = connect_to(o->host, o->port ? o->port : 25, s->timeout_ms, why, sizeof why);
    if (s->fd < 0) {
        set_res(res, MW_SMTP_TEMP, 0, "connect", "%s", why);
        goto fail;
    }
    if (!read_reply(s, &code, &text, NULL)) {
        conn_lost(res, "greeting", &text);
        goto fail;
    }
    if (!classify(res, code, 2, "greeting", &text))
        goto fail;
    if (!hello(s, o, res))
        goto fail;
    if (o->starttls && s->has_starttls) {
        if (!starttls(s, o, res) || !hello(s, o, res))
            goto fail;
    }
    mw_buf_free(&text);
    return s;
fail:
    mw_buf_free(&text);
    s->dead = true;
    mw_smtp_close(&s);
    return NULL;
}

bool mw_smtp_tls(const mw_smtp *s)
{
    return s != NULL && s->ssl != NULL;
}

bool mw_smtp_usable(const mw_smtp *s)
{
    return s != NULL && !s->dead;
}

/* Stream msg with CRLF line ends and dot-stuffing, then the final dot,
 * all within one deadline (timeout_ms per started MiB): a relay that
 * reads a byte now and then cannot stretch a transfer without end. */
static bool send_data(mw_smtp *s, const char *msg, size_t len)
{
    mw_buf out = MW_BUF_INIT;
    bool bol = true, ok = true;
    long long deadline = now_ms() + (long long)s->timeout_ms * (long long)(1 + len / (1 << 20));

    for (size_t i = 0; i < len && ok; i++) {
        char c = msg[i];
        if (bol && c == '.')
            mw_buf_putc(&out, '.');
        if (c == '\n') {
            if (i == 0 || msg[i - 1] != '\r')
                mw_buf_putc(&out, '\r');
            mw_buf_putc(&out, '\n');
            bol = true;
        } else {
            mw_buf_putc(&out, c);
            bol = false;
        }
        if (out.len >= 65536) {
            ok = io_write_by(s, out.data, out.len, deadline);
            mw_buf_reset(&out);
        }
    }
    if (ok) {
        if (!bol)
            mw_buf_puts(&out, "\r\n");
        mw_buf_puts(&out, ".\r\n");
        ok = io_write_by(s, out.data, out.len, deadline);
    }
    mw_buf_free(&out);
    return ok;
}

/* An address fit for MAIL FROM:<> / RCPT TO:<>: visible ASCII, no
 * blanks or angle brackets, 254 bytes at most ("" is the null path). */
static bool path_ok(const char *a)
{
    size_t n = 0;

    for (; a[n] != '\0'; n++)
        if ((unsigned char)a[n] <= 0x20 || (unsigned char)a[n] >= 0x7f || a[n] == '<' ||
            a[n] == '>' || n >= 254)
            return false;
    return true;
}

mw_smtp_status mw_smtp_sendmail(mw_smtp *s, const char *from, const char *to, const char *msg,
                                size_t len, mw_smtp_result *res)
{
    mw_buf text = MW_BUF_INIT, cmd = MW_BUF_INIT;
    int code = 0;

    memset(res, 0, sizeof *res);
    if (!path_ok(from) || !path_ok(to) || to[0] == '\0') {
        bool bad_from = !path_ok(from);
        set_res(res, MW_SMTP_PERM, 0, bad_from ? "mail" : "rcpt",
                "%s address refused locally: blanks, control characters, angle brackets or "
                "longer than 254 bytes", bad_from ? "sender" : "recipient");
        return res->status;
    }
    if (s == NULL || s->dead) {
        set_res(res, MW_SMTP_TEMP, 0, "mail", "connection not usable");
        return res->status;
    }
    if (s->has_size && s->max_size > 0 && len > s->max_size) {
        set_res(res, MW_SMTP_PERM, 0, "size", "message of %zu bytes exceeds the relay's SIZE %llu",
                len, s->max_size);
        return res->status;
    }
    if (s->need_rset) {
        if (!command(s, "RSET", &code, &text, NULL)) {
            conn_lost(res, "mail", &text);
            goto out;
        }
        s->need_rset = false;
    }
    s->need_rset = true;
    mw_buf_printf(&cmd, "MAIL FROM:<%s>", from);
    if (s->has_size)
        mw_buf_printf(&cmd, " SIZE=%zu", len);
    if (!command(s, mw_buf_cstr(&cmd), &code, &text, NULL)) {
        conn_lost(res, "mail", &text);
        goto out;
    }
    if (!classify(res, code, 2, "mail", &text))
        goto out;
    mw_buf_reset(&cmd);
    mw_buf_printf(&cmd, "RCPT TO:<%s>", to);
    if (!command(s, mw_buf_cstr(&cmd), &code, &text, NULL)) {
        conn_lost(res, "rcpt", &text);
        goto out;
    }
    if (!classify(res, code, 2, "rcpt", &text))
        goto out;
    if (!command(s, "DATA", &code, &text, NULL)) {
        conn_lost(res, "data", &text);
        goto out;
    }
    if (!classify(res, code, 3, "data", &text))
        goto out;
    if (!send_data(s, msg, len) || !read_reply(s, &code, &text, NULL)) {
        conn_lost(res, "dot", &text);
        goto out;
    }
    if (classify(res, code, 2, "dot", &text))
        s->need_rset = false;
out:
    if (res->code == 0)
        s->dead = true;
    mw_buf_free(&text);
    mw_buf_free(&cmd);
    return res->status;
}

void mw_smtp_close(mw_smtp **sp)
{
    mw_smtp *s = *sp;

    if (s == NULL)
        return;
    if (s->fd >= 0 && !s->dead) {
        mw_buf text = MW_BUF_INIT;
        int code;
        s->timeout_ms = s->timeout_ms > 5000 ? 5000 : s->timeout_ms;
        (void)command(s, "QUIT", &code, &text, NULL);
        mw_buf_free(&text);
    }
    if (s->ssl != NULL) {
        if (!s->dead)
            SSL_shutdown(s->ssl);
        SSL_free(s->ssl);
    }
    if (s->ctx != NULL)
        SSL_CTX_free(s->ctx);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    *sp = NULL;
}
