/*
 * exim.c - the Exim front end's listeners and connection threads.  Glue
 * only: the wire formats are in exim_proto.c, the decisions in the engine.
 *
 * Scan connection (end of DATA): request line and headers -> session
 * (macros {auth_authen}=User, i=Queue-Id; helo; mail; rcpts) -> the mbox
 * body streamed through the normaliser into header/eoh/body -> eom ->
 * reply -> close.  The message is never held in memory whole.
 *
 * RCPT connection: one line -> decision -> one line -> close.  The engine
 * has no RCPT-time policy yet, so the only decision is "DEFER" while the
 * daemon drains for a graceful stop; rcpt_decide() is where one plugs in.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "exim.h"
#include "listen.h"
#include "log.h"
#include "log_limit.h"
#include "metrics.h"
#include "strutil.h"

#define MAX_REQ_LINE 8192
#define MAX_REQ_HEADERS 2100     /* Exim sends ~8 + one per recipient */
#define DISCARD_LIMIT ((size_t)1024 * 1024 * 1024)

enum conn_kind { KIND_SCAN, KIND_RCPT };

typedef struct listener {
    int             fd;
    enum conn_kind  kind;
    char           *spec;
    char           *unix_path;   /* to unlink at stop */
    pthread_t       thread;
    bool            started;
} listener;

/* The connections of one kind (scan or RCPT): each kind has its own cap,
 * so a flood of one cannot starve the other. */
typedef struct pool {
    unsigned max;                 /* connections at most */
    unsigned active;
    int     *fds;                 /* active connection fds, -1 = free slot */
} pool;

/* Module state: set up in mw_exim_open() before any thread exists; the
 * mutable parts (pools, stopping) are guarded by lock. */
static struct {
    mw_engine      *engine;
    mw_exim_options o;
    mw_cidr_set    *allow;        /* TCP peers served (our copy) */
    listener        l[2];
    size_t          nl;
    int             stop_pipe[2];
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    pool            pool[2];      /* by enum conn_kind */
    bool            stopping;
} X = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .stop_pipe = {-1, -1}};

/* A peer can cause these at will: log a few per minute, count them all. */
static mw_log_limit peer_log = MW_LOG_LIMIT_INIT(5, 60);
static mw_log_limit cap_log = MW_LOG_LIMIT_INIT(5, 60);

static const unsigned lsn_label[2] = {MW_ML_LSN_EXIM_SCAN, MW_ML_LSN_EXIM_RCPT};
static const char *const kind_name[2] = {"scan", "RCPT"};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------- buffered, timed reads ---------------- */

typedef struct conn {
    int            fd;
    int            slot;
    enum conn_kind kind;
    uint64_t       deadline_ms;    /* the whole request must have arrived by then */
    unsigned char  buf[65536];
    size_t         pos, len;
    char           peer[64];
} conn;

/* Milliseconds a poll may wait: the per-read timeout, cut to what is left
 * of until_ms; 0 when it has passed. */
static int wait_ms(uint64_t until_ms)
{
    uint64_t now = now_ms(), per = (uint64_t)X.o.timeout * 1000u;
    if (now >= until_ms)
        return 0;
    return (int)(until_ms - now < per ? until_ms - now : per);
}

/* Fill the buffer; 1 ok, 0 EOF, -1 error/timeout (errno ETIMEDOUT when
 * the per-read timeout or the request's deadline passed). */
static int fill(conn *c)
{
    c->pos = c->len = 0;
    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int ms = wait_ms(c->deadline_ms);
        int r = ms > 0 ? poll(&p, 1, ms) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            mw_metric_inc(MW_M_LISTENER_TIMEOUTS, lsn_label[c->kind], 0);
            errno = ETIMEDOUT;
        }
        if (r <= 0)
            return -1;
        ssize_t n = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        c->len = (size_t)n;
        if (n == 0)
            errno = 0;                 /* EOF: see io_error() */
        return n > 0 ? 1 : 0;
    }
}

/* Why the last read failed, for log lines. */
static const char *io_error(void)
{
    return errno == 0 ? "connection closed by the peer" : strerror(errno);
}

/* Read one line (LF-terminated, CR/LF stripped; a last line cut by EOF
 * counts) of at most max bytes into out.  1 line, 0 EOF before any byte,
 * -1 error/timeout/too long. */
static int read_line(conn *c, mw_buf *out, size_t max)
{
    mw_buf_reset(out);
    for (;;) {
        if (c->pos == c->len) {
            int r = fill(c);
            if (r == 0)
                return out->len == 0 ? 0 : 1;
            if (r < 0)
                return -1;
        }
        unsigned char *start = c->buf + c->pos;
        unsigned char *nl = memchr(start, '\n', c->len - c->pos);
        size_t take = nl ? (size_t)(nl - start) : c->len - c->pos;
        if (out->len + take > max) {
            errno = EMSGSIZE;
            return -1;
        }
        mw_buf_append(out, start, take);
        c->pos += take + (nl ? 1 : 0);
        if (nl) {
            if (out->len && out->data[out->len - 1] == '\r')
                out->data[--out->len] = '\0';
            return 1;
        }
    }
}

/* Pass exactly n bytes to fn (or drop them when fn is NULL).  true if all arrived. */
static bool read_body(conn *c, size_t n, void (*fn)(void *, const unsigned char *, size_t), void *ctx)
{
    while (n) {
        if (c->pos == c->len && fill(c) <= 0)
            return false;
        size_t take = c->len - c->pos < n ? c->len - c->pos : n;
        if (fn)
            fn(ctx, c->buf + c->pos, take);
        c->pos += take;
        n -= take;
    }
    return true;
}

/* Send all of p within the per-I/O timeout (in total, however slowly the
 * peer reads). */
static bool write_all(conn *c, const char *p, size_t n)
{
    uint64_t until = now_ms() + (uint64_t)X.o.timeout * 1000u;
    while (n) {
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
        int ms = wait_ms(until);
        int r = ms > 0 ? poll(&pf, 1, ms) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* ---------------- scan (end of DATA) ---------------- */

typedef struct scan_ctx {
    mw_session *s;
    mw_exim_mbox mbox;
    unsigned   *stay;      /* A-R indexes Exim cannot remove by name */
    size_t      nstay;
} scan_ctx;

/* Every header goes to the engine, which alone decides whether it is an
 * Authentication-Results header and its index.  What Exim knows and the
 * engine does not: remove_header (header_testname) matches a name followed
 * by blanks only, so a header the engine took for an A-R whose name is
 * followed by a fold or CR stays whatever we ask; remember its index. */
static void on_header(void *p, const char *name, const char *value, size_t vlen)
{
    scan_ctx *x = p;
    size_t before = mw_session_ar_count(x->s);
    mw_session_header(x->s, name, value, vlen);
    size_t after = mw_session_ar_count(x->s);
    if (after != before && strpbrk(name, "\r\n\v\f")) {
        if (x->nstay % 16 == 0)
            x->stay = mw_reallocarray(x->stay, x->nstay + 16, sizeof *x->stay);
        x->stay[x->nstay++] = (unsigned)after;
    }
}

static void on_eoh(void *p)
{
    mw_session_eoh(((scan_ctx *)p)->s);
}

static void on_body(void *p, const unsigned char *b, size_t n)
{
    mw_session_body(((scan_ctx *)p)->s, b, n);
}

static void feed(void *p, const unsigned char *b, size_t n)
{
    mw_exim_mbox_feed(&((scan_ctx *)p)->mbox, b, n);
}

static const mw_exim_mbox_cb mbox_cb = {on_header, on_eoh, on_body};

static void send_tempfail(conn *c, const char *text)
{
    mw_buf r = MW_BUF_INIT;
    mw_exim_reply_tempfail(text, &r);
    (void)write_all(c, r.data, r.len);
    mw_buf_free(&r);
}

/* Read (and drop) the message so Exim gets to read our reply, then send it. */
static void refuse_after_body(conn *c, const mw_exim_request *r, const char *text)
{
    if (r->have_length && r->content_length <= DISCARD_LIMIT && read_body(c, r->content_length, NULL, NULL))
        send_tempfail(c, text);
}

static void scan_message(conn *c, mw_exim_request *r)
{
    scan_ctx x = {0};
    x.s = mw_session_new(X.engine, r->ip, r->hostname);
    if (r->user)
        mw_session_macro(x.s, "{auth_authen}", r->user);
    if (r->queue_id)
        mw_session_macro(x.s, "i", r->queue_id);
    if (r->helo)
        mw_session_helo(x.s, r->helo);
    mw_session_mail(x.s, r->from ? r->from : "<>");
    for (size_t i = 0; i < r->nrcpts; i++)
        mw_session_rcpt_checked(x.s, r->rcpts[i]);   /* charged at RCPT time via readsocket */
    mw_exim_mbox_init(&x.mbox, &mbox_cb, &x);
    if (!read_body(c, r->content_length, feed, &x)) {
        mw_warn("exim %s: %s: message incomplete (%s; read timeout %us); not checked",
                c->peer, mw_session_id(x.s), io_error(), X.o.timeout);
        mw_session_abort(x.s);
    } else if (x.mbox.header_over) {
        /* Exim refuses such a header section itself (header_maxsize): only
         * a peer that is not Exim, or an Exim with a raised limit, sends it */
        mw_warn("exim %s: %s: header section over %zu bytes; not checked, deferred",
                c->peer, mw_session_id(x.s), (size_t)MW_EXIM_MAX_HEADER_SECTION);
        mw_session_abort(x.s);
        send_tempfail(c, "message header section too large to be checked");
    } else {
        mw_exim_mbox_finish(&x.mbox);
        const mw_verdict *v = mw_session_eom(x.s);
        mw_buf out = MW_BUF_INIT;
        size_t dropped = 0;
        if (!mw_exim_reply(v, x.stay, x.nstay, &out, &dropped))
            mw_warn("%s: a forged Authentication-Results header has a fold or CR before its colon, which "
                    "Exim's remove_header cannot match: message rejected", mw_session_id(x.s));
        if (dropped)
            mw_warn("%s: %zu header(s) left out of the reply to Exim: longer than %d characters (a DKIM key "
                    "too large for one line?), past the %d bytes Exim reads, or a foreign "
                    "Authentication-Results with control bytes (removed, not re-added); see docs/exim.md",
                    mw_session_id(x.s), dropped, MW_EXIM_MAX_LINE, MW_EXIM_MAX_REPLY);
        if (!write_all(c, out.data, out.len))
            mw_warn("exim %s: %s: cannot send the verdict: %s", c->peer, mw_session_id(x.s), strerror(errno));
        mw_buf_free(&out);
    }
    mw_exim_mbox_free(&x.mbox);
    free(x.stay);
    mw_session_free(&x.s);
}

static void serve_scan(conn *c)
{
    mw_exim_request r = {0};
    mw_buf line = MW_BUF_INIT;
    char err[160];
    int rc = read_line(c, &line, MAX_REQ_LINE);
    if (rc == 0)
        goto out;                       /* a port probe */
    if (rc < 0 || !mw_exim_request_line(&r, line.data, line.len, err, sizeof err)) {
        mw_buf pb = MW_BUF_INIT;
        mw_str_printable(&pb, line.data ? line.data : "", line.len, 80);
        mw_warn("exim %s: bad request \"%s\": %s", c->peer, mw_buf_cstr(&pb),
                rc < 0 ? io_error() : err);
        mw_buf_free(&pb);
        send_tempfail(c, "malformed scan request");
        goto out;
    }
    for (unsigned n = 0;; n++) {
        rc = read_line(c, &line, MAX_REQ_LINE);
        if (rc <= 0 || n >= MAX_REQ_HEADERS) {
            mw_warn("exim %s: request headers %s", c->peer,
                    rc < 0 ? io_error() : rc == 0 ? "ended early" : "too many");
            send_tempfail(c, "malformed scan request");
            goto out;
        }
        if (line.len == 0)
            break;
        if (!mw_exim_request_header(&r, line.data, line.len, err, sizeof err)) {
            mw_warn("exim %s: bad request header: %s", c->peer, err);
            send_tempfail(c, "malformed scan request");
            goto out;
        }
    }
    if (strcmp(r.command, "PING") == 0) {
        static const char pong[] = "RSPAMD/1.3 0 PONG\r\n\r\n";
        (void)write_all(c, pong, sizeof pong - 1);
        goto out;
    }
    if (!r.have_length) {
        mw_warn("exim %s: request without Content-length", c->peer);
        send_tempfail(c, "malformed scan request");
    } else if (r.content_length > X.o.max_message) {
        mw_warn("exim %s: queue id %s: message of %zu bytes is over the limit of %zu; not checked",
                c->peer, r.queue_id ? r.queue_id : "?", r.content_length, X.o.max_message);
        refuse_after_body(c, &r, "message too large to be checked");
    } else if (mw_engine_draining(X.engine)) {
        refuse_after_body(c, &r, "mail filter is restarting, try again later");
    } else {
        scan_message(c, &r);
    }
out:
    mw_buf_free(&line);
    mw_exim_request_clear(&r);
}

/* ---------------- RCPT time ---------------- */

/*
 * The RCPT-time decision.  Today: defer while draining, otherwise accept.
 * This is where an engine RCPT-time check (rate limits, reputation, early
 * SPF) plugs in once the engine offers one.
 */
static const char *rcpt_decide(const mw_exim_rcpt *q, mw_buf *reply)
{
    if (mw_engine_draining(X.engine)) {
        mw_buf_puts(reply, "DEFER 451 4.3.2 mail filter is restarting, try again later\n");
        return "defer (draining)";
    }
    mw_reply r;
    mw_engine_rcpt_check(X.engine, q->ip, q->helo, q->from, q->rcpt, q->auth, &r);
    if (r.action == MW_ACTION_REJECT || r.action == MW_ACTION_TEMPFAIL) {
        bool rej = r.action == MW_ACTION_REJECT;
        mw_buf_printf(reply, "%s %s%s%s %s\n", rej ? "REJECT" : "DEFER", r.rcode, r.xcode[0] ? " " : "",
                      r.xcode, r.text);
        return rej ? "reject (rate limit)" : "defer (rate limit)";
    }
    mw_buf_puts(reply, "OK\n");
    return "ok";
}

static void serve_rcpt(conn *c)
{
    mw_buf line = MW_BUF_INIT, reply = MW_BUF_INIT, pb = MW_BUF_INIT;
    mw_exim_rcpt q = {0};
    char err[120];
    int rc = read_line(c, &line, MAX_REQ_LINE);
    if (rc == 0)
        goto out;                      /* a port probe */
    if (rc < 0) {
        mw_warn("exim %s: RCPT request unreadable: %s", c->peer, io_error());
        mw_buf_puts(&reply, "DEFER 451 4.3.0 malformed policy request\n");
    } else if (!mw_exim_rcpt_parse(&q, line.data, line.len, err, sizeof err)) {
        mw_str_printable(&pb, line.data, line.len, 80);
        mw_warn("exim %s: bad RCPT request \"%s\": %s", c->peer, mw_buf_cstr(&pb), err);
        mw_buf_puts(&reply, "DEFER 451 4.3.0 malformed policy request\n");
    } else {
        const char *what = rcpt_decide(&q, &reply);
        if (mw_log_debug_enabled())
            mw_debug("exim rcpt: ip=%s from=%s rcpt=%s auth=%s -> %s", q.ip ? q.ip : "-",
                     q.from ? q.from : "-", q.rcpt ? q.rcpt : "-", q.auth ? q.auth : "-", what);
    }
    (void)write_all(c, reply.data, reply.len);
out:
    mw_exim_rcpt_clear(&q);
    mw_buf_free(&line);
    mw_buf_free(&reply);
    mw_buf_free(&pb);
}

/* ---------------- threads ---------------- */

static void release_slot(enum conn_kind k, int slot)
{
    pthread_mutex_lock(&X.lock);
    X.pool[k].fds[slot] = -1;
    X.pool[k].active--;
    pthread_cond_broadcast(&X.cond);
    pthread_mutex_unlock(&X.lock);
}

static void *conn_thread(void *arg)
{
    conn *c = arg;
    mw_metric_inc(MW_M_CONNECTIONS, MW_ML_FE_EXIM, 0);
    mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_EXIM, 1);
    if (c->kind == KIND_SCAN)
        serve_scan(c);
    else
        serve_rcpt(c);
    mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_EXIM, -1);
    int fd = c->fd, slot = c->slot;
    enum conn_kind k = c->kind;
    release_slot(k, slot);
    close(fd);
    free(c);
    return NULL;
}

/* Seconds an accepted connection waits for a free slot of its pool before
 * it is closed: a burst of real traffic gets served a moment later, a
 * flood is refused within this bound (never held). */
#define SLOT_WAIT_MS 1000u

/* A free slot of pool k for fd, waiting up to SLOT_WAIT_MS; -1 when
 * stopping, -2 when the pool stayed full. */
static int take_slot(enum conn_kind k, int fd)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SLOT_WAIT_MS / 1000u;
    until.tv_nsec += (long)(SLOT_WAIT_MS % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pool *p = &X.pool[k];
    pthread_mutex_lock(&X.lock);
    while (!X.stopping && p->active >= p->max)
        if (pthread_cond_timedwait(&X.cond, &X.lock, &until) == ETIMEDOUT)
            break;
    int slot = X.stopping ? -1 : -2;
    if (!X.stopping && p->active < p->max) {
        for (unsigned i = 0; i < p->max; i++)
            if (p->fds[i] == -1) {
                slot = (int)i;
                break;
            }
        if (slot >= 0) {
            p->fds[slot] = fd;
            p->active++;
        }
    }
    pthread_mutex_unlock(&X.lock);
    return slot;
}

/* Close a connection at accept: the peer is not allowed, or its pool is full. */
static void refuse(const listener *l, int fd, const char *peer, unsigned reason)
{
    close(fd);
    mw_metric_inc(MW_M_LISTENER_REFUSED, lsn_label[l->kind], reason);
    unsigned long dropped = 0;
    if (reason == MW_ML_REFUSE_PEER) {
        if (mw_log_limit_take(&peer_log, &dropped))
            mw_warn("exim: %s connection from %s refused: not in exim.allow_peers "
                    "(%lu more refusals not logged)", kind_name[l->kind], peer, dropped);
    } else if (mw_log_limit_take(&cap_log, &dropped)) {
        mw_warn("exim: %u %s connections busy (exim.%smax_connections); closing a new one from %s "
                "(%lu more not logged)", X.pool[l->kind].max, kind_name[l->kind],
                l->kind == KIND_SCAN ? "" : "rcpt_", peer, dropped);
    }
}

static void *accept_thread(void *arg)
{
    listener *l = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = X.stop_pipe[0], .events = POLLIN}};
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (p[1].revents & (POLLIN | POLLHUP)))
            return NULL;
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                mw_warn_errno("exim: accept on %s", l->spec);
                usleep(100 * 1000);    /* EMFILE and friends: do not spin */
            }
            continue;
        }
        char peer[64];
        mw_addr a;
        if (mw_listen_peer(fd, &a, peer, sizeof peer) && !mw_cidr_set_contains(X.allow, &a)) {
            refuse(l, fd, peer, MW_ML_REFUSE_PEER);
            continue;
        }
        int slot = take_slot(l->kind, fd);
        if (slot == -1) {
            close(fd);
            return NULL;
        }
        if (slot == -2) {
            refuse(l, fd, peer, MW_ML_REFUSE_LIMIT);
            continue;
        }
        conn *c = mw_calloc(1, sizeof *c);
        c->fd = fd;
        c->slot = slot;
        c->kind = l->kind;
        c->deadline_ms = now_ms() + 1000u * (uint64_t)(l->kind == KIND_SCAN ? X.o.request_timeout
                                                                              : X.o.rcpt_timeout);
        snprintf(c->peer, sizeof c->peer, "%s", peer);
        pthread_attr_t at;
        pthread_t th;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 512 * 1024);
        if (pthread_create(&th, &at, conn_thread, c) != 0) {
            mw_warn("exim: cannot start a connection thread; closing %s", c->peer);
            release_slot(l->kind, slot);
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&at);
    }
}

/* ---------------- listening sockets ---------------- */

static int listen_on(const char *spec, listener *l, char *err, size_t errlen)
{
    char why[300];
    if (!mw_config_socket_valid(spec, why, sizeof why)) {
        snprintf(err, errlen, "bad Exim socket \"%s\": %s", spec, why);
        return -1;
    }
    int fd = mw_listen_open(spec, X.o.socket_mode ? X.o.socket_mode : 0660, 128, &l->unix_path, why,
                            sizeof why);
    if (fd < 0) {
        snprintf(err, errlen, "Exim socket: %s", why);
        return -1;
    }
    l->fd = fd;
    l->spec = mw_strdup(spec);
    return 0;
}

static void close_listeners(void)
{
    for (size_t i = 0; i < X.nl; i++) {
        if (X.l[i].fd >= 0)
            close(X.l[i].fd);
        X.l[i].fd = -1;
        if (X.l[i].unix_path)
            unlink(X.l[i].unix_path);
        MW_FREE(&X.l[i].unix_path);
        MW_FREE(&X.l[i].spec);
    }
}

bool mw_exim_open(mw_engine *e, const mw_exim_options *o, char *err, size_t errlen)
{
    X.engine = e;
    X.o = *o;
    if (!X.o.timeout)
        X.o.timeout = 30;
    if (!X.o.max_message || X.o.max_message > MW_EXIM_MAX_MESSAGE_CAP)
        X.o.max_message = MW_EXIM_MAX_MESSAGE_CAP;
    if (!X.o.max_connections)
        X.o.max_connections = 64;
    if (!X.o.rcpt_max_connections)
        X.o.rcpt_max_connections = 64;
    if (!X.o.request_timeout)
        X.o.request_timeout = 60;
    if (!X.o.rcpt_timeout)
        X.o.rcpt_timeout = 10;
    mw_cidr_set_free(&X.allow);
    if (o->allow_peers) {
        X.allow = mw_cidr_set_copy(o->allow_peers);
    } else {
        X.allow = mw_cidr_set_new();
        (void)mw_cidr_set_add(X.allow, "127.0.0.0/8", NULL, 0);
        (void)mw_cidr_set_add(X.allow, "::1", NULL, 0);
    }
    X.o.allow_peers = NULL;
    X.nl = 0;
    const char *specs[2] = {o->scan_socket, o->rcpt_socket};
    for (int k = 0; k < 2; k++) {
        if (!specs[k] || !*specs[k])
            continue;
        listener *l = &X.l[X.nl];
        memset(l, 0, sizeof *l);
        l->fd = -1;
        l->kind = k == 0 ? KIND_SCAN : KIND_RCPT;
        if (listen_on(specs[k], l, err, errlen) != 0) {
            close_listeners();
            X.nl = 0;
            return false;
        }
        X.nl++;
    }
    /* the spec strings belong to the caller's config, which a reload frees */
    X.o.scan_socket = X.o.rcpt_socket = NULL;
    if (X.nl == 0)
        return true;
    if (pipe2(X.stop_pipe, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close_listeners();
        X.nl = 0;
        return false;
    }
    X.pool[KIND_SCAN].max = X.o.max_connections;
    X.pool[KIND_RCPT].max = X.o.rcpt_max_connections;
    for (int k = 0; k < 2; k++) {
        pool *p = &X.pool[k];
        p->active = 0;
        p->fds = mw_reallocarray(NULL, p->max, sizeof *p->fds);
        for (unsigned i = 0; i < p->max; i++)
            p->fds[i] = -1;
    }
    return true;
}

bool mw_exim_start(char *err, size_t errlen)
{
    for (size_t i = 0; i < X.nl; i++) {
        if (pthread_create(&X.l[i].thread, NULL, accept_thread, &X.l[i]) != 0) {
            snprintf(err, errlen, "cannot start the Exim listener thread for %s", X.l[i].spec);
            return false;
        }
        X.l[i].started = true;
        mw_info("Exim %s listener on %s", X.l[i].kind == KIND_SCAN ? "scan (rspamd protocol)" : "RCPT policy",
                X.l[i].spec);
    }
    return true;
}

/* Wait until no connection is active or the deadline passes. */
static bool wait_active(const struct timespec *deadline)
{
    pthread_mutex_lock(&X.lock);
    while (X.pool[0].active + X.pool[1].active > 0)
        if (pthread_cond_timedwait(&X.cond, &X.lock, deadline) == ETIMEDOUT)
            break;
    bool idle = X.pool[0].active + X.pool[1].active == 0;
    pthread_mutex_unlock(&X.lock);
    return idle;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void mw_exim_stop(unsigned wait_ms)
{
    if (X.nl == 0)
        return;
    pthread_mutex_lock(&X.lock);
    bool was = X.stopping;
    X.stopping = true;
    pthread_cond_broadcast(&X.cond);
    pthread_mutex_unlock(&X.lock);
    if (was)
        return;
    if (X.stop_pipe[1] >= 0 && write(X.stop_pipe[1], "x", 1) < 0)
        mw_warn_errno("exim: stop pipe");
    for (size_t i = 0; i < X.nl; i++)
        if (X.l[i].started)
            pthread_join(X.l[i].thread, NULL);
    close_listeners();
    struct timespec dl;
    deadline_in(&dl, wait_ms);
    if (!wait_active(&dl)) {
        pthread_mutex_lock(&X.lock);
        mw_warn("exim: %u connection(s) still open after %ums; closing them",
                X.pool[0].active + X.pool[1].active, wait_ms);
        for (int k = 0; k < 2; k++)
            for (unsigned i = 0; i < X.pool[k].max; i++)
                if (X.pool[k].fds[i] >= 0)
                    shutdown(X.pool[k].fds[i], SHUT_RDWR);
        pthread_mutex_unlock(&X.lock);
        deadline_in(&dl, 2000);
        (void)wait_active(&dl);
    }
}
