/*
 * milter_server.c - the milter protocol 6 server (see milter_server.h):
 * listener, accept loop, one thread per connection, buffered reads,
 * batched replies, negotiation, macros.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "log_limit.h"
#include "metrics.h"
#include "milter_server.h"

struct mw_ms_server {
    int              fd;
    char            *unix_path;    /* to remove at free */
    mw_ms_options    o;
    char            *symlists[MW_MP_SYM__N];
    mw_ms_callbacks  cb;
    atomic_bool      stopping;
    atomic_uint      nconn;
    /* Connections between reading a command and sending its reply.  At a
     * stop, mw_ms_run waits for these: the engine counts a message done
     * inside its end-of-message step, before the reply is flushed, so a
     * drained stop could exit with the verdict unsent (Postfix: 451). */
    atomic_uint      busy;
    /* Threads that finished a connection wait here for the next one instead
     * of exiting: a thread per SMTP session cost 8 syscalls (clone3, signal
     * masks, rseq, robust list, the stack's madvise) and the scheduler's
     * start-up.  Bounded: at most IDLE_MAX wait, each for IDLE_SECONDS. */
    pthread_mutex_t  pool_mu;
    pthread_cond_t   pool_cv;      /* a connection queued, or stopping */
    pthread_cond_t   pool_gone;    /* an idle thread left (stop waits) */
    struct mw_ms_conn *queue;      /* handed over, not yet picked up (FIFO) */
    struct mw_ms_conn *queue_tail;
    unsigned         idle;         /* threads waiting, minus connections queued */
    unsigned         waiting;      /* threads inside the wait */
};

#define IDLE_MAX     64u
#define IDLE_SECONDS 30

struct mw_ms_conn {
    mw_ms_server *srv;
    int           fd;
    bool          busy;          /* counted in srv->busy */
    void         *priv;
    /* read buffer: unconsumed bytes are [rd, end) */
    uint8_t      *buf;
    size_t        cap, rd, end;
    mw_buf        out;             /* replies not yet written */
    char         *mac[MW_MP_ST__N];   /* a copy of each stage's name\0value\0 list */
    size_t        maclen[MW_MP_ST__N];
    bool          negotiated;
    uint32_t      actions, protocol;  /* agreed */
    char         *reply;           /* set by mw_ms_setreply: "rcode", "xcode", "text" */
    char          reply_rcode[4], reply_xcode[16];
    bool          in_eom;
    bool          in_message;      /* between MAIL and end of message or abort */
    bool          tcp;             /* TCP: re-arm TCP_QUICKACK after each read */
    uint64_t      step_start_ms;   /* the packet being read started (see fill()) */
    uint64_t      last_read_ms;    /* the last read that brought bytes */
    struct mw_ms_conn *next;       /* in srv->queue */
};

/* The read buffer starts small and grows to the largest packet seen (body
 * chunks are up to 64 KiB); after a message it drops back, so 200 idle or
 * small-message connections do not each hold 64 KiB (peak RSS). */
#define READ_MIN  (8u * 1024u)
#define READ_KEEP (16u * 1024u)

/* Refusals and timeouts can be caused by any peer at will: log them at
 * most a few times per window (the metrics count every one). */
static mw_log_limit refused_log = MW_LOG_LIMIT_INIT(5, 60);
static mw_log_limit timeout_log = MW_LOG_LIMIT_INIT(5, 60);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void log_timeout(const char *what, unsigned seconds)
{
    unsigned long dropped = 0;
    mw_metric_inc(MW_M_LISTENER_TIMEOUTS, MW_ML_LSN_MILTER, 0);
    if (mw_log_limit_take(&timeout_log, &dropped))
        mw_warn("milter: %s within %us; closing the connection (%lu more like this not logged)", what, seconds,
                dropped);
}

mw_ms_server *mw_ms_open(const mw_ms_options *o, const mw_ms_callbacks *cb, char *err, size_t errlen)
{
    mw_ms_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->cb = *cb;
    s->o.socket = NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_cv, &ca);
    pthread_cond_init(&s->pool_gone, NULL);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < MW_MP_SYM__N; i++) {
        s->symlists[i] = o->symlists[i] ? strdup(o->symlists[i]) : NULL;
        s->o.symlists[i] = s->symlists[i];
    }
    if (!s->o.timeout)
        s->o.timeout = 7210;
    if (!s->o.stack_size)
        s->o.stack_size = MW_MS_STACK_SIZE;
    if (!s->o.max_connections)
        s->o.max_connections = MW_MS_MAX_CONNECTIONS;
    if (!s->o.step_timeout)
        s->o.step_timeout = MW_MS_STEP_TIMEOUT;
    char why[300];
    s->fd = mw_listen_open(o->socket, o->socket_mode, 128, &s->unix_path, why, sizeof why);
    if (s->fd < 0)
        snprintf(err, errlen, "milter socket: %s", why);
    if (s->fd < 0) {
        s->fd = -1;
        mw_ms_free(&s);
        return NULL;
    }
    return s;
}

void mw_ms_free(mw_ms_server **sp)
{
    mw_ms_server *s = *sp;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->unix_path) {
        unlink(s->unix_path);
        free(s->unix_path);
    }
    for (int i = 0; i < MW_MP_SYM__N; i++)
        free(s->symlists[i]);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->pool_cv);
    pthread_cond_destroy(&s->pool_gone);
    free(s);
    *sp = NULL;
}

unsigned mw_ms_connections(const mw_ms_server *s)
{
    return atomic_load(&((mw_ms_server *)s)->nconn);
}

unsigned mw_ms_idle_threads(const mw_ms_server *s)
{
    mw_ms_server *m = (mw_ms_server *)s;
    pthread_mutex_lock(&m->pool_mu);
    unsigned n = m->waiting;
    pthread_mutex_unlock(&m->pool_mu);
    return n;
}

void mw_ms_stop(mw_ms_server *s)
{
    atomic_store(&s->stopping, true);
    /* wakes the accept() in mw_ms_run (EINVAL on Linux) */
    shutdown(s->fd, SHUT_RDWR);
}

/* ---------------- per connection: I/O ---------------- */

static bool flush_out(mw_ms_conn *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            mw_buf_reset(&c->out);
            return false;
        }
        off += (size_t)n;
    }
    mw_buf_reset(&c->out);
    return true;
}

/*
 * 1: bytes added; 0: the MTA hung up; -1: error or timeout.  partial: part
 * of a packet is here already (or a body chunk is being streamed): the
 * rest must arrive within step_timeout of its first byte, however it
 * trickles in.  Otherwise the connection is idle between commands and the
 * read waits up to the milter timeout (SO_RCVTIMEO), as before: no poll,
 * so the common case stays one read() per batch of packets.
 */
static int fill(mw_ms_conn *c, size_t need, bool partial)
{
    if (c->rd > 0) {
        /* only a partial packet is left: move it to the front */
        memmove(c->buf, c->buf + c->rd, c->end - c->rd);
        c->end -= c->rd;
        c->rd = 0;
    }
    if (c->end == 0 && c->cap > READ_KEEP && !c->in_message) {
        free(c->buf);            /* between messages: give the big buffer back */
        c->buf = NULL;
        c->cap = 0;
    }
    size_t want = c->end + 4096;   /* room for at least some more */
    if (need > want)
        want = need;
    if (want < READ_MIN)
        want = READ_MIN;
    if (want > c->cap) {
        /* double for a stream of growing reads, but a big packet gets just
         * its size (a 64 KiB body chunk must not cost 128 KiB) */
        if (want < 2 * c->cap)
            want = 2 * c->cap;
        want = (want + 4095) & ~(size_t)4095;
        uint8_t *nb = realloc(c->buf, want);
        if (!nb)
            return -1;
        c->buf = nb;
        c->cap = want;
    }
    for (;;) {
        if (partial) {
            uint64_t until = c->step_start_ms + (uint64_t)c->srv->o.step_timeout * 1000u, now = now_ms();
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int r = now < until ? poll(&p, 1, (int)(until - now)) : 0;
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0) {
                log_timeout("a command from the MTA did not arrive complete", c->srv->o.step_timeout);
                return -1;
            }
        }
        ssize_t n = read(c->fd, c->buf + c->end, c->cap - c->end);
        if (n > 0) {
            c->last_read_ms = now_ms();
            if (!partial)
                c->step_start_ms = c->last_read_ms;   /* a new packet starts with these bytes */
            c->end += (size_t)n;
            if (c->tcp) {
                /* Steps we do not answer (SMFIP_NR_*) send nothing back, so
                 * the kernel would delay its ACK (up to 40 ms) while the MTA's
                 * Nagle algorithm holds its next packet until that ACK comes:
                 * a stall per header.  Quick ACKs end it; Linux clears the
                 * flag again, so it is set after every read. */
                int one = 1;
                setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
            }
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            log_timeout("no data from the MTA", c->srv->o.timeout);
        return -1;
    }
}

/* ---------------- per connection: protocol ---------------- */

static void clear_macros_after(mw_ms_conn *c, int stage)
{
    for (int i = stage + 1; i < MW_MP_ST__N; i++) {
        free(c->mac[i]);
        c->mac[i] = NULL;
        c->maclen[i] = 0;
    }
}

static void clear_reply(mw_ms_conn *c)
{
    free(c->reply);
    c->reply = NULL;
}

static void negotiate(mw_ms_conn *c, const mw_mp_cmd *m)
{
    const mw_ms_options *o = &c->srv->o;
    uint32_t mta_a = m->actions ? m->actions : MW_MP_V1_ACTS;
    uint32_t mta_p = m->protocol ? m->protocol : MW_MP_V1_PROT;
    uint32_t version = m->version < MW_MP_VERSION ? m->version : MW_MP_VERSION;
    c->actions = o->actions & mta_a & ~MW_MP_F_SETSYMLIST;
    bool symlists = false;
    for (int i = 0; i < MW_MP_SYM__N; i++)
        symlists |= o->symlists[i] != NULL;
    if (symlists && (mta_a & MW_MP_F_SETSYMLIST))
        c->actions |= MW_MP_F_SETSYMLIST;
    c->protocol = (o->protocol & mta_p) | (o->no_reply & mta_p);
    c->negotiated = true;
    mw_mp_put_optneg(&c->out, version, c->actions, c->protocol,
                     (c->actions & MW_MP_F_SETSYMLIST) ? o->symlists : NULL);
}

/* The reply for a step's status, unless the step is one without replies. */
static void reply(mw_ms_conn *c, uint32_t nr_bit, mw_ms_status st)
{
    if (nr_bit && (c->protocol & nr_bit)) {
        clear_reply(c);
        return;
    }
    switch (st) {
    case MW_MS_REJECT:
    case MW_MS_TEMPFAIL: {
        char want = st == MW_MS_REJECT ? '5' : '4';
        if (c->reply && c->reply_rcode[0] == want)
            mw_mp_put_replycode(&c->out, c->reply_rcode, c->reply_xcode, c->reply);
        else
            mw_mp_put_simple(&c->out, st == MW_MS_REJECT ? 'r' : 't');
        break;
    }
    case MW_MS_DISCARD:
        mw_mp_put_simple(&c->out, 'd');
        break;
    case MW_MS_ACCEPT:
        mw_mp_put_simple(&c->out, 'a');
        break;
    default:
        mw_mp_put_simple(&c->out, 'c');
        break;
    }
    clear_reply(c);
}

#define CALL(fn, ...) (cb->fn ? cb->fn(__VA_ARGS__) : MW_MS_CONTINUE)

/* One command.  false: end the connection (QUIT, or a protocol error). */
static bool dispatch(mw_ms_conn *c, const mw_mp_cmd *m)
{
    const mw_ms_callbacks *cb = &c->srv->cb;
    if (!c->negotiated && m->cmd != 'O') {
        mw_warn("milter: command '%c' before option negotiation; closing", m->cmd);
        return false;
    }
    switch (m->cmd) {
    case 'O':
        if (m->version < 2) {
            mw_warn("milter: MTA offers protocol version %u (< 2); closing", (unsigned)m->version);
            return false;
        }
        negotiate(c, m);
        return true;
    case 'D': {
        char *copy = NULL;
        if (m->strs_len) {
            copy = malloc(m->strs_len);
            if (!copy)
                return false;
            memcpy(copy, m->strs, m->strs_len);
        }
        free(c->mac[m->stage]);
        c->mac[m->stage] = copy;
        c->maclen[m->stage] = m->strs_len;
        return true;
    }
    case 'C':
        clear_macros_after(c, MW_MP_ST_CONNECT);
        reply(c, MW_MP_P_NR_CONN, CALL(connect, c, m->host, m->family, m->port, m->addr));
        return true;
    case 'H':
        clear_macros_after(c, MW_MP_ST_HELO);
        reply(c, MW_MP_P_NR_HELO, CALL(helo, c, m->str1));
        return true;
    case 'M':
        c->in_message = true;
        clear_macros_after(c, MW_MP_ST_MAIL);
        reply(c, MW_MP_P_NR_MAIL, CALL(mail, c, m->strs));
        return true;
    case 'R':
        clear_macros_after(c, MW_MP_ST_RCPT);
        reply(c, MW_MP_P_NR_RCPT, CALL(rcpt, c, m->strs));
        return true;
    case 'T':
        reply(c, MW_MP_P_NR_DATA, MW_MS_CONTINUE);
        return true;
    case 'U':
        reply(c, MW_MP_P_NR_UNKN, MW_MS_CONTINUE);
        return true;
    case 'L':
        reply(c, MW_MP_P_NR_HDR, CALL(header, c, m->str1, m->str2));
        return true;
    case 'N':
        reply(c, MW_MP_P_NR_EOH, CALL(eoh, c));
        return true;
    case 'B':
        reply(c, MW_MP_P_NR_BODY, CALL(body, c, m->data, m->len));
        return true;
    case 'E': {
        mw_ms_status st = MW_MS_CONTINUE;
        if (m->len)
            st = CALL(body, c, m->data, m->len);
        if (st == MW_MS_CONTINUE) {
            c->in_eom = true;
            st = CALL(eom, c);
            c->in_eom = false;
        }
        c->in_message = false;
        reply(c, 0, st);
        return true;
    }
    case 'A':
        c->in_message = false;
        clear_reply(c);
        if (cb->abort)
            cb->abort(c);
        return true;
    case 'K':
        /* QUIT, new connection follows: a new option negotiation */
        if (cb->close)
            cb->close(c);
        clear_macros_after(c, -1);
        clear_reply(c);
        c->negotiated = false;
        return true;
    case 'Q':
        return false;
    default:
        return false;
    }
}

static void set_busy(mw_ms_conn *c, bool b)
{
    if (c->busy == b)
        return;
    c->busy = b;
    if (b)
        atomic_fetch_add(&c->srv->busy, 1);
    else
        atomic_fetch_sub(&c->srv->busy, 1);
}

static void conn_free(mw_ms_conn *c)
{
    set_busy(c, false);
    if (c->srv->cb.close)
        c->srv->cb.close(c);
    clear_macros_after(c, -1);
    clear_reply(c);
    mw_buf_free(&c->out);
    free(c->buf);
    close(c->fd);
    atomic_fetch_sub(&c->srv->nconn, 1);
    free(c);
}

/*
 * A body chunk larger than STREAM_MIN is not buffered whole: its bytes go
 * to the body callback as they arrive, so a connection carrying a big
 * message holds READ_KEEP, not 64 KiB (or up to 1 MiB), of read buffer.
 * The body callback sees several calls for one packet, which it must
 * accept anyway (MTAs cut bodies at arbitrary points).  Called with the
 * packet's 5-byte header at c->rd and plen payload bytes to come; the
 * reply (or none, with NR_BODY) follows the whole packet.  false: the MTA
 * hung up or timed out.
 */
#define STREAM_MIN (16u * 1024u)

static bool stream_body(mw_ms_conn *c, size_t plen)
{
    const mw_ms_callbacks *cb = &c->srv->cb;
    mw_ms_status st = MW_MS_CONTINUE;
    c->rd += 5;
    while (plen > 0) {
        size_t have = c->end - c->rd;
        if (have == 0) {
            c->rd = c->end = 0;
            if (fill(c, 0, true) <= 0)
                return false;
            continue;
        }
        size_t n = have < plen ? have : plen;
        if (st == MW_MS_CONTINUE)   /* after a refusal the rest is only read */
            st = CALL(body, c, c->buf + c->rd, n);
        c->rd += n;
        plen -= n;
    }
    reply(c, MW_MP_P_NR_BODY, st);
    c->step_start_ms = c->last_read_ms;   /* as in serve_conn, for what follows */
    return true;
}

static void serve_conn(mw_ms_conn *c)
{
    for (;;) {
        char cmd;
        const uint8_t *payload;
        size_t plen, used;
        const char *why = NULL;
        int r = mw_mp_frame(c->buf + c->rd, c->end - c->rd, &cmd, &payload, &plen, &used, &why);
        if (r < 0) {
            mw_warn("milter: bad packet from the MTA (%s); closing the connection", why);
            break;
        }
        if (r == 0) {
            /* nothing complete left: answer what was asked, then wait */
            if (c->out.len && !flush_out(c))
                break;
            set_busy(c, false);
            size_t need = 0;
            if (c->end - c->rd >= 4) {
                const uint8_t *p = c->buf + c->rd;
                need = 4 + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
                if (c->end - c->rd == 4)
                    need = 5;           /* the command decides: a body chunk is streamed */
                else if (p[4] == 'B' && c->negotiated && need - 5 > STREAM_MIN) {
                    if (!stream_body(c, need - 5))
                        break;
                    continue;
                }
            }
            if (fill(c, need, c->end > c->rd) <= 0)
                break;
            continue;
        }
        set_busy(c, true);
        mw_mp_cmd m;
        if (!mw_mp_decode(cmd, payload, plen, &m, &why)) {
            mw_warn("milter: malformed '%c' packet from the MTA (%s); closing the connection",
                    cmd >= 0x21 && cmd < 0x7f ? cmd : '?', why);
            break;
        }
        bool go_on = dispatch(c, &m);
        c->rd += used;
        /* bytes left over began the next packet no later than the last read
         * (a packet of a pipelined batch gets at most one read's delay more) */
        c->step_start_ms = c->last_read_ms;
        if (!go_on) {
            if (c->out.len)
                flush_out(c);
            break;
        }
    }
    conn_free(c);
}

/* Wait (up to IDLE_SECONDS) for a connection handed over by the accept
 * loop; NULL: time to exit (stopping, enough idle threads, or timeout). */
static mw_ms_conn *next_conn(mw_ms_server *s)
{
    mw_ms_conn *c = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (!atomic_load(&s->stopping) && s->idle < IDLE_MAX) {
        s->idle++;
        s->waiting++;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += IDLE_SECONDS;
        while (!s->queue && !atomic_load(&s->stopping))
            if (pthread_cond_timedwait(&s->pool_cv, &s->pool_mu, &until) == ETIMEDOUT)
                break;
        if (s->queue) {              /* the accept loop already took us off idle */
            c = s->queue;
            s->queue = c->next;
            if (!s->queue)
                s->queue_tail = NULL;
        } else {
            s->idle--;
        }
        s->waiting--;
        pthread_cond_broadcast(&s->pool_gone);
    }
    pthread_mutex_unlock(&s->pool_mu);
    return c;
}

static void *conn_thread(void *arg)
{
    mw_ms_conn *c = arg;
    mw_ms_server *s = c->srv;
    while (c) {
        serve_conn(c);
        c = next_conn(s);
    }
    return NULL;
}

/* Give c to an idle thread; false when there is none. */
static bool hand_over(mw_ms_server *s, mw_ms_conn *c)
{
    bool ok = false;
    pthread_mutex_lock(&s->pool_mu);
    if (s->idle > 0) {
        s->idle--;
        c->next = NULL;
        if (s->queue_tail)
            s->queue_tail->next = c;
        else
            s->queue = c;
        s->queue_tail = c;
        ok = true;
    }
    pthread_mutex_unlock(&s->pool_mu);
    /* Signalled after the unlock: a thread woken while we still held
     * pool_mu blocked on it at once (measured behind Postfix: ~5 futex
     * calls and two extra context switches per connection instead of 1).
     * The server outlives its pool (pool_stop waits for every waiter). */
    if (ok)
        pthread_cond_signal(&s->pool_cv);
    return ok;
}

/* At stop: wake the idle threads and wait until none is left in the wait,
 * so none touches the server after mw_ms_run returns.  Connections still
 * queued (accepted just before the stop) are served by their thread. */
static void pool_stop(mw_ms_server *s)
{
    pthread_mutex_lock(&s->pool_mu);
    pthread_cond_broadcast(&s->pool_cv);
    while (s->waiting > 0)
        pthread_cond_wait(&s->pool_gone, &s->pool_mu);
    pthread_mutex_unlock(&s->pool_mu);
}

/* ---------------- accept loop ---------------- */

/* At the cap: close at once, so the MTA applies its default action now
 * (Postfix: milter_default_action) instead of waiting on a backlog. */
static void refuse_at_cap(mw_ms_server *s, int fd)
{
    char peer[80];
    mw_listen_peer(fd, NULL, peer, sizeof peer);
    close(fd);
    mw_metric_inc(MW_M_LISTENER_REFUSED, MW_ML_LSN_MILTER, MW_ML_REFUSE_LIMIT);
    unsigned long dropped = 0;
    if (mw_log_limit_take(&refused_log, &dropped))
        mw_warn("milter: %u connections open (milter_max_connections); refusing a new one from %s "
                "(%lu more refusals not logged)", s->o.max_connections, peer, dropped);
}

int mw_ms_run(mw_ms_server *s)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    size_t stack = s->o.stack_size;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    stack *= 8;   /* sanitizer frames are several times larger */
#endif
    pthread_attr_setstacksize(&attr, stack);
    int rc = 0;
    while (!atomic_load(&s->stopping)) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&s->stopping))
                break;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                mw_warn_errno("milter: accept");
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
                continue;
            }
            mw_error_errno("milter: accept");
            rc = 1;
            break;
        }
        if (atomic_load(&s->nconn) >= s->o.max_connections) {
            refuse_at_cap(s, fd);
            continue;
        }
        int one = 1;
        if (!s->unix_path)   /* replies are small segments: no Nagle delay */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* reads between commands wait up to the milter timeout (a partial
         * packet up to the step timeout, see fill()); our replies must be
         * taken within the step timeout */
        struct timeval tv = {.tv_sec = (time_t)s->o.timeout};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        tv.tv_sec = (time_t)s->o.step_timeout;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        mw_ms_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        c->tcp = !s->unix_path;
        atomic_fetch_add(&s->nconn, 1);
        if (hand_over(s, c))
            continue;
        pthread_t th;
        if (pthread_create(&th, &attr, conn_thread, c) != 0) {
            mw_warn("milter: cannot start a connection thread");
            atomic_fetch_sub(&s->nconn, 1);
            close(fd);
            free(c);
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
    }
    pthread_attr_destroy(&attr);
    pool_stop(s);
    /* Let every command already read get its reply out (bounded by the
     * step timeout): a stop follows the drain, and the last verdicts may
     * still sit in their connection's output buffer. */
    for (unsigned waited = 0; atomic_load(&s->busy) > 0 && waited < s->o.step_timeout * 200u; waited++)
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    return rc;
}

/* ---------------- per connection: API for the callbacks ---------------- */

void *mw_ms_getpriv(mw_ms_conn *c)
{
    return c->priv;
}

void mw_ms_setpriv(mw_ms_conn *c, void *p)
{
    c->priv = p;
}

bool mw_ms_leadspc(const mw_ms_conn *c)
{
    return (c->protocol & MW_MP_P_HDR_LEADSPC) != 0;
}

const char *mw_ms_getsymval(mw_ms_conn *c, const char *name)
{
    if (!name || !*name)
        return NULL;
    size_t nl = strlen(name);
    char alt[4] = "";
    if (nl == 3 && name[0] == '{' && name[2] == '}') {
        alt[0] = name[1];
        alt[1] = '\0';
    } else if (nl == 1) {
        alt[0] = '{';
        alt[1] = name[0];
        alt[2] = '}';
        alt[3] = '\0';
    }
    for (int st = MW_MP_ST__N - 1; st >= 0; st--) {
        if (!c->mac[st])
            continue;
        const char *end = c->mac[st] + c->maclen[st];
        for (const char *k = c->mac[st]; k;) {
            const char *v = mw_mp_next(k, end);
            if (!v)
                break;
            if (strcmp(k, name) == 0 || (alt[0] && strcmp(k, alt) == 0))
                return v;
            k = mw_mp_next(v, end);
        }
    }
    return NULL;
}

void mw_ms_setreply(mw_ms_conn *c, const char *rcode, const char *xcode, const char *text)
{
    clear_reply(c);
    if (!rcode || strlen(rcode) != 3 || (rcode[0] != '4' && rcode[0] != '5'))
        return;
    memcpy(c->reply_rcode, rcode, 4);
    snprintf(c->reply_xcode, sizeof c->reply_xcode, "%s", xcode ? xcode : "");
    c->reply = strdup(text ? text : "");
}

static bool may(mw_ms_conn *c, uint32_t action)
{
    return c->in_eom && (c->actions & action);
}

bool mw_ms_addheader(mw_ms_conn *c, const char *name, const char *value)
{
    if (!may(c, MW_MP_F_ADDHDRS))
        return false;
    mw_mp_put_addheader(&c->out, name, value);
    return true;
}

bool mw_ms_insheader(mw_ms_conn *c, uint32_t index, const char *name, const char *value)
{
    if (!may(c, MW_MP_F_ADDHDRS))
        return false;
    mw_mp_put_insheader(&c->out, index, name, value);
    return true;
}

bool mw_ms_chgheader(mw_ms_conn *c, uint32_t index, const char *name, const char *value)
{
    if (!may(c, MW_MP_F_CHGHDRS))
        return false;
    mw_mp_put_chgheader(&c->out, index, name, value ? value : "");
    return true;
}

bool mw_ms_quarantine(mw_ms_conn *c, const char *reason)
{
    if (!may(c, MW_MP_F_QUARANTINE))
        return false;
    mw_mp_put_quarantine(&c->out, reason);
    return true;
}
