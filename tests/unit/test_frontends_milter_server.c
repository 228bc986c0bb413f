/*
 * test_frontends_milter_server.c - the milter server over a real unix
 * socket, driven by a scripted MTA: negotiation with and without the
 * SMFIP_NR_* steps and with an old protocol version, a full message (no
 * replies where NR was agreed, header edits at end of message), several
 * messages per connection, abort mid-message, pipelined packets answered
 * in one write, a reject with reply text, QUIT_NC, the MTA hanging up mid
 * body, and garbage (connection closed, server still serving); a finished
 * connection's thread serving the next one, and none left waiting at stop;
 * limits (a second server, cap 3, step timeout 1 s): at the cap a new
 * connection is closed at once and counted, threads stay bounded however
 * many come, a command trickled byte by byte is cut off at the step
 * deadline (counted), an idle connection between commands is not, and a
 * new session is served once a slot is free.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"
#include "milter_server.h"
#include "mwtest.h"

/* ---- the filter side: callbacks that log what they see ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static mw_buf evlog = MW_BUF_INIT;
static int closes;

static void ev(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ev(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log_mu);
    mw_buf_vprintf(&evlog, fmt, ap);
    va_end(ap);
    mw_buf_putc(&evlog, ';');
    pthread_mutex_unlock(&log_mu);
}

static char *take_log(void)
{
    pthread_mutex_lock(&log_mu);
    char *s = strdup(mw_buf_cstr(&evlog));
    mw_buf_reset(&evlog);
    pthread_mutex_unlock(&log_mu);
    return s;
}

/* "(null)" for a missing macro */
static const char *nz(const char *s)
{
    return s ? s : "(null)";
}

static unsigned nconn_threads;   /* connects seen (test_thread_reuse) */

static mw_ms_status t_connect(mw_ms_conn *c, const char *host, char family, uint16_t port, const char *addr)
{
    (void)port;
    pthread_mutex_lock(&log_mu);
    nconn_threads++;
    pthread_mutex_unlock(&log_mu);
    char f[2] = {family, 0};
    ev("C %s %s", host, f);
    ev("addr=%s j=%s", addr, nz(mw_ms_getsymval(c, "j")));
    mw_ms_setpriv(c, strdup("priv"));
    if (strcmp(host, "refuse") == 0) {
        mw_ms_setreply(c, "421", "4.3.2", "busy");
        return MW_MS_TEMPFAIL;
    }
    return MW_MS_CONTINUE;
}

static mw_ms_status t_helo(mw_ms_conn *c, const char *helo)
{
    (void)c;
    ev("H %s", helo);
    return MW_MS_CONTINUE;
}

static mw_ms_status t_mail(mw_ms_conn *c, const char *arg0)
{
    /* "{i}" finds "i" and the reverse, like smfi_getsymval */
    ev("M %s i=%s", arg0, nz(mw_ms_getsymval(c, "{i}")));
    ev("auth=%s j=%s", nz(mw_ms_getsymval(c, "{auth_authen}")), nz(mw_ms_getsymval(c, "{j}")));
    return MW_MS_CONTINUE;
}

static mw_ms_status t_rcpt(mw_ms_conn *c, const char *arg0)
{
    ev("R %s", arg0);
    if (strstr(arg0, "reject")) {
        mw_ms_setreply(c, "550", "5.7.1", "no 100% sure");
        return MW_MS_REJECT;
    }
    return MW_MS_CONTINUE;
}

static mw_ms_status t_header(mw_ms_conn *c, const char *name, const char *value)
{
    (void)c;
    ev("L %s:%s", name, value);
    return MW_MS_CONTINUE;
}

static mw_ms_status t_eoh(mw_ms_conn *c)
{
    (void)c;
    ev("N");
    return MW_MS_CONTINUE;
}

static mw_ms_status t_body(mw_ms_conn *c, const uint8_t *data, size_t len)
{
    (void)c;
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    ev("B %s %s", n, len && data[0] == 'x' ? "x" : "-");
    return MW_MS_CONTINUE;
}

static mw_ms_status t_eom(mw_ms_conn *c)
{
    ev("E i=%s", nz(mw_ms_getsymval(c, "i")));
    MW_TEST_ASSERT(mw_ms_insheader(c, 0, "X-Test", mw_ms_leadspc(c) ? " yes" : "yes"));
    MW_TEST_ASSERT(mw_ms_chgheader(c, 1, "X-Old", ""));
    return MW_MS_CONTINUE;
}

static void t_abort(mw_ms_conn *c)
{
    (void)c;
    ev("A");
}

static void t_close(mw_ms_conn *c)
{
    free(mw_ms_getpriv(c));
    mw_ms_setpriv(c, NULL);
    pthread_mutex_lock(&log_mu);
    closes++;
    pthread_mutex_unlock(&log_mu);
}

static const mw_ms_callbacks cbs = {t_connect, t_helo, t_mail, t_rcpt, t_header, t_eoh, t_body, t_eom, t_abort, t_close};

/* ---- the MTA side ---- */

static char sock_path[108];

static int mta_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void mta_send(int fd, mw_buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(fd, b->data + off, b->len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    mw_buf_reset(b);
}

static bool read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* One reply packet; cmd 0 on EOF/timeout.  The payload stays in *raw. */
static mw_mp_reply mta_reply(int fd, uint8_t **raw)
{
    mw_mp_reply r = {0};
    uint8_t h[5];
    free(*raw);
    *raw = NULL;
    if (!read_full(fd, h, 5))
        return r;
    size_t n = ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]) - 1;
    *raw = malloc(n + 1);
    if (!read_full(fd, *raw, n))
        return r;
    const char *why;
    if (!mw_mp_decode_reply((char)h[4], *raw, n, &r, &why))
        r.cmd = '?';
    return r;
}

/* nothing more to read within 150 ms */
static bool quiet(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 150) == 0;
}

static char expect_cmd(int fd, uint8_t **raw)
{
    return mta_reply(fd, raw).cmd;
}

/* Wait for the close callback to have run want times.  An event, not a
 * time: the 30 s cap only catches a server that never closes (a hang). */
static void wait_closed(int want)
{
    int n = 0;
    for (int i = 0; i < 3000; i++) {
        pthread_mutex_lock(&log_mu);
        n = closes;
        pthread_mutex_unlock(&log_mu);
        if (n >= want)
            return;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    MW_TEST_ASSERT(n >= want);
}

/* The close callback runs before the server drops the connection from its
 * count: wait for the count (again an event, capped at 30 s). */
static void wait_no_connections(mw_ms_server *m)
{
    for (int i = 0; i < 3000 && mw_ms_connections(m) != 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
}

#define ALL_ACTIONS 0x1FFu
#define ALL_PROTO   0x1FFFFFu
#define NO_NR_PROTO (ALL_PROTO & ~(0x80u | 0x1000u | 0x2000u | 0x4000u | 0x8000u | 0x10000u | 0x20000u | 0x40000u | 0x80000u))

static void put_message(mw_buf *b, const char *qid, const char *rcpt)
{
    const char *mm[] = {"i", qid, "{auth_authen}", "alice"};
    mw_mp_put_macros(b, 'M', mm, 2);
    const char *from[] = {"<a@example.com>", "SIZE=10"};
    mw_mp_put_args(b, 'M', from, 2);
    mw_mp_put_args(b, 'R', &rcpt, 1);
}

static void put_content(mw_buf *b, bool leadspc)
{
    mw_mp_put_header(b, "Subject", leadspc ? " hi" : "hi");
    mw_mp_put_header(b, "X-Old", leadspc ? " z" : "z");
    mw_mp_put_simple(b, 'N');
    mw_mp_put_body(b, 'B', "xyz\r\n", 5);
    mw_mp_put_body(b, 'E', NULL, 0);
}

static mw_ms_server *srv;

static void test_nr_full_message(void)
{
    uint8_t *raw = NULL;
    mw_buf b = MW_BUF_INIT;
    int fd = mta_connect();
    if (!MW_TEST_ASSERT(fd >= 0))
        return;
    mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
    mta_send(fd, &b);
    mw_mp_reply r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'O');
    MW_TEST_EQ_INT(r.version, 6);
    MW_TEST_EQ_INT(r.actions, MW_MP_F_ADDHDRS | MW_MP_F_CHGHDRS | MW_MP_F_QUARANTINE | MW_MP_F_SETSYMLIST);
    MW_TEST_EQ_INT(r.protocol, MW_MP_P_NOUNKNOWN | MW_MP_P_NODATA | MW_MP_P_HDR_LEADSPC | MW_MP_P_NR_HELO |
                                   MW_MP_P_NR_HDR | MW_MP_P_NR_EOH | MW_MP_P_NR_BODY);
    MW_TEST_EQ_STR(r.symlists[MW_MP_SYM_CONNECT], "j {client_addr}");
    MW_TEST_EQ_STR(r.symlists[MW_MP_SYM_EOM], "i");

    const char *cm[] = {"j", "mx.test", "{client_addr}", "192.0.2.9"};
    mw_mp_put_macros(&b, 'C', cm, 2);
    mw_mp_put_connect(&b, "client.test", '4', 4321, "192.0.2.9");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    mw_mp_put_str(&b, 'H', "helo.test");   /* NR_HELO: no reply */
    put_message(&b, "Q1", "<b@example.net>");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');   /* MAIL */
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');   /* RCPT */
    MW_TEST_ASSERT(quiet(fd));
    put_content(&b, true);
    mta_send(fd, &b);
    r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'i');
    MW_TEST_EQ_INT(r.index, 0);
    MW_TEST_EQ_STR(r.str1, "X-Test");
    MW_TEST_EQ_STR(r.str2, " yes");
    r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'm');
    MW_TEST_EQ_INT(r.index, 1);
    MW_TEST_EQ_STR(r.str2, "");
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    MW_TEST_ASSERT(quiet(fd));   /* no replies for headers, EOH, body */

    /* a second message on the same connection, after an abort */
    mw_mp_put_simple(&b, 'A');
    put_message(&b, "Q2", "<c@example.net>");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    const char *em[] = {"i", "Q2-eom"};
    put_content(&b, true);
    /* end-of-message macros replace nothing earlier but are found first */
    b.len -= 5;   /* drop the E just added, send its macros first */
    mw_mp_put_macros(&b, 'E', em, 1);
    mw_mp_put_body(&b, 'E', NULL, 0);
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'i');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'm');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    mw_mp_put_simple(&b, 'Q');
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 0);   /* closed after QUIT */
    close(fd);
    wait_closed(1);
    char *log = take_log();
    MW_TEST_EQ_STR(log, "C client.test 4;addr=192.0.2.9 j=mx.test;H helo.test;"
                        "M <a@example.com> i=Q1;auth=alice j=mx.test;R <b@example.net>;"
                        "L Subject: hi;L X-Old: z;N;B 5 x;E i=Q1;A;"
                        "M <a@example.com> i=Q2;auth=alice j=mx.test;R <c@example.net>;"
                        "L Subject: hi;L X-Old: z;N;B 5 x;E i=Q2-eom;");
    free(log);
    free(raw);
    mw_buf_free(&b);
}

static void test_no_nr_old_mta(void)
{
    uint8_t *raw = NULL;
    mw_buf b = MW_BUF_INIT;
    int fd = mta_connect();
    if (!MW_TEST_ASSERT(fd >= 0))
        return;
    /* protocol 6 without any NR step and without SETSYMLIST */
    mw_mp_put_optneg(&b, 6, 0x3F, NO_NR_PROTO, NULL);
    mta_send(fd, &b);
    mw_mp_reply r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'O');
    MW_TEST_EQ_INT(r.actions, MW_MP_F_ADDHDRS | MW_MP_F_CHGHDRS | MW_MP_F_QUARANTINE);
    MW_TEST_EQ_INT(r.protocol, MW_MP_P_NOUNKNOWN | MW_MP_P_NODATA | MW_MP_P_HDR_LEADSPC);
    MW_TEST_ASSERT(r.symlists[MW_MP_SYM_CONNECT] == NULL);
    mw_mp_put_connect(&b, "client.test", '6', 25, "IPv6:2001:db8::1");
    mw_mp_put_str(&b, 'H', "helo.test");
    put_message(&b, "Q3", "<b@example.net>");
    mw_mp_put_simple(&b, 'T');   /* NODATA agreed, but an MTA may send it anyway */
    put_content(&b, true);
    /* everything pipelined: one reply per step, in order */
    mta_send(fd, &b);
    /* C H M R T L L N B, then the end-of-message edits and its reply */
    const char *want = "cccccccccimc";
    for (size_t i = 0; want[i]; i++)
        MW_TEST_EQ_INT(expect_cmd(fd, &raw), want[i]);
    MW_TEST_ASSERT(quiet(fd));
    /* QUIT_NC: the session closes, a new negotiation follows on the socket */
    mw_mp_put_simple(&b, 'K');
    mw_mp_put_optneg(&b, 2, 0x3F, 0x7F, NULL);   /* an old MTA: version 2, fewer steps */
    mta_send(fd, &b);
    r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'O');
    MW_TEST_EQ_INT(r.version, 2);
    MW_TEST_EQ_INT(r.protocol, 0);   /* none of NOUNKNOWN/NODATA/LEADSPC offered */
    wait_closed(2);
    /* a refused connect gets the reply text */
    mw_mp_put_connect(&b, "refuse", 'U', 0, NULL);
    mta_send(fd, &b);
    r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'y');
    MW_TEST_EQ_STR(r.str1, "421 4.3.2 busy");
    close(fd);
    wait_closed(3);
    char *log = take_log();
    const char *start = "C client.test 6;addr=IPv6:2001:db8::1 j=(null);H helo.test;M <a@example.com> i=Q3;";
    MW_TEST_ASSERT(strncmp(log, start, strlen(start)) == 0);
    MW_TEST_ASSERT(strstr(log, "L Subject: hi;") != NULL);
    MW_TEST_ASSERT(strstr(log, "C refuse U;addr= j=(null);") != NULL);
    free(log);
    free(raw);
    mw_buf_free(&b);
}

static void test_reject_abort_hangup_garbage(void)
{
    uint8_t *raw = NULL;
    mw_buf b = MW_BUF_INIT;
    int fd = mta_connect();
    if (!MW_TEST_ASSERT(fd >= 0))
        return;
    mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
    mw_mp_put_connect(&b, "client.test", '4', 1, "192.0.2.1");
    put_message(&b, "Q4", "<reject@example.net>");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'O');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    mw_mp_reply r = mta_reply(fd, &raw);
    MW_TEST_EQ_INT(r.cmd, 'y');
    MW_TEST_EQ_STR(r.str1, "550 5.7.1 no 100%% sure");
    /* abort mid-message, then hang up in the middle of a body packet */
    put_message(&b, "Q5", "<b@example.net>");
    mw_mp_put_header(&b, "Subject", " x");
    mw_mp_put_simple(&b, 'A');
    put_message(&b, "Q6", "<b@example.net>");
    mta_send(fd, &b);
    for (int i = 0; i < 4; i++)
        MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    char big[3000];
    memset(big, 'x', sizeof big);
    mw_mp_put_body(&b, 'B', big, sizeof big);
    b.len = 1000;
    mta_send(fd, &b);
    close(fd);
    wait_closed(4);
    char *log = take_log();
    MW_TEST_ASSERT(strstr(log, "L Subject: x;A;M <a@example.com> i=Q6;") != NULL);
    MW_TEST_ASSERT(strstr(log, "B ") == NULL);   /* the partial body packet was never delivered */
    free(log);

    /* garbage: a huge length, then a zero length, then a bad command */
    static const uint8_t junk[][6] = {{0xff, 0xff, 0xff, 0xff, 'B', 0}, {0, 0, 0, 0, 'Q', 0}, {0, 0, 0, 1, 'z', 0}};
    for (int i = 0; i < 3; i++) {
        fd = mta_connect();
        if (!MW_TEST_ASSERT(fd >= 0))
            return;
        if (i == 2) {
            mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
            mta_send(fd, &b);
            MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'O');
        }
        MW_TEST_EQ_INT(write(fd, junk[i], 5), 5);
        MW_TEST_EQ_INT(expect_cmd(fd, &raw), 0);   /* the server closed it */
        close(fd);
        wait_closed(5 + i);
    }
    /* a command before negotiation is refused too */
    fd = mta_connect();
    mw_mp_put_str(&b, 'H', "x");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 0);
    close(fd);
    wait_closed(8);
    /* and the server still serves */
    fd = mta_connect();
    mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'O');
    close(fd);
    wait_closed(9);
    wait_no_connections(srv);
    MW_TEST_EQ_INT(mw_ms_connections(srv), 0);
    free(take_log());
    free(raw);
    mw_buf_free(&b);
}

/* A finished connection's thread serves the next one: ten connections one
 * after the other, each opened while a thread waits idle, start no new
 * thread (the process's thread count is the same before and after; idle
 * threads live 30 s, so a thread started for one of them would still be
 * there).  Which idle thread takes a connection is not fixed. */
static int thread_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void test_thread_reuse(void)
{
    uint8_t *raw = NULL;
    mw_buf b = MW_BUF_INIT;
    pthread_mutex_lock(&log_mu);
    nconn_threads = 0;
    int closed0 = closes;
    pthread_mutex_unlock(&log_mu);
    int threads0 = -1;
    for (int i = 0; i < 10; i++) {
        for (int t = 0; t < 3000 && mw_ms_idle_threads(srv) == 0; t++)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        MW_TEST_ASSERT(mw_ms_idle_threads(srv) >= 1);
        if (threads0 < 0)
            threads0 = thread_count();
        int fd = mta_connect();
        if (!MW_TEST_ASSERT(fd >= 0))
            break;
        mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
        mw_mp_put_connect(&b, "reuse.test", '4', 25, "192.0.2.9");
        mta_send(fd, &b);
        MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'O');
        MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
        close(fd);
        wait_closed(closed0 + i + 1);
    }
    pthread_mutex_lock(&log_mu);
    MW_TEST_EQ_INT(nconn_threads, 10);
    pthread_mutex_unlock(&log_mu);
    MW_TEST_EQ_INT(thread_count(), threads0);
    free(take_log());
    free(raw);
    mw_buf_free(&b);
}

/* Packets of every size on one connection, pipelined: body chunks above
 * 16 KiB are handed on as they are read (the read buffer stays small),
 * smaller packets whole; every body byte arrives, per message (the order
 * is checked end to end by DKIM: bench and test_postfix_dkim). */
static void test_buffer_sizes(void)
{
    static const size_t sizes[] = {65535, 10, 300000, 1, 65535, 65535, 7000};
    uint8_t *raw = NULL;
    mw_buf b = MW_BUF_INIT;
    int fd = mta_connect();
    if (!MW_TEST_ASSERT(fd >= 0))
        return;
    mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
    mw_mp_put_connect(&b, "sizes.test", '4', 25, "192.0.2.9");
    mta_send(fd, &b);
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'O');
    MW_TEST_EQ_INT(expect_cmd(fd, &raw), 'c');
    free(take_log());
    char *chunk = malloc(300000);
    memset(chunk, 'x', 300000);
    size_t n = sizeof sizes / sizeof sizes[0];
    for (size_t i = 0; i < n; i++) {
        char qid[16];
        snprintf(qid, sizeof qid, "QS%zu", i);
        put_message(&b, qid, "<s@example.net>");
        mw_mp_put_header(&b, "X-Old", " z");
        mw_mp_put_simple(&b, 'N');
        mw_mp_put_body(&b, 'B', chunk, sizes[i]);
        mw_mp_put_body(&b, 'B', chunk, 3);
        mw_mp_put_body(&b, 'E', NULL, 0);
    }
    mta_send(fd, &b);
    for (size_t i = 0; i < n; i++) {
        const char *want = "ccimc";   /* MAIL, RCPT, then the end-of-message edits */
        for (size_t k = 0; want[k]; k++)
            MW_TEST_EQ_INT(expect_cmd(fd, &raw), want[k]);
    }
    close(fd);
    /* per message, the body bytes the callback got (a chunk above 16 KiB
     * arrives in several calls as it is read), all of them 'x' */
    char *log = take_log();
    size_t got[8] = {0}, msg = 0, calls = 0, bad = 0;
    for (char *save = NULL, *e = strtok_r(log, ";", &save); e; e = strtok_r(NULL, ";", &save)) {
        size_t len;
        char x;
        if (sscanf(e, "B %zu %c", &len, &x) == 2) {
            got[msg < 8 ? msg : 7] += len;
            calls++;
            bad += x != 'x';
        } else if (strncmp(e, "E i=QS", 6) == 0) {
            msg++;
        }
    }
    MW_TEST_EQ_INT(msg, n);
    for (size_t i = 0; i < n; i++)
        MW_TEST_EQ_INT(got[i], sizes[i] + 3);
    MW_TEST_EQ_INT(bad, 0);
    MW_TEST_ASSERT(calls > 2 * n);   /* the big chunks were streamed in pieces */
    free(log);
    free(chunk);
    free(raw);
    mw_buf_free(&b);
}

static void *run_thread(void *arg)
{
    return (void *)(intptr_t)mw_ms_run(arg);
}

/* ---- limits: a second server with a cap of 3 and a 1 s step timeout ---- */

static char lim_path[108];

static int lim_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", lim_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};   /* generous: outcomes, not timings, are checked */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* A negotiated connection: O and C answered. */
static int lim_session(uint8_t **raw)
{
    mw_buf b = MW_BUF_INIT;
    int fd = lim_connect();
    if (fd < 0)
        return -1;
    mw_mp_put_optneg(&b, 6, ALL_ACTIONS, ALL_PROTO, NULL);
    mw_mp_put_connect(&b, "limits.test", '4', 25, "192.0.2.7");
    mta_send(fd, &b);
    mw_buf_free(&b);
    char o = expect_cmd(fd, raw), c = o == 'O' ? expect_cmd(fd, raw) : 0;
    if (o != 'O' || c != 'c') {
        close(fd);
        return -1;
    }
    return fd;
}

/* The server closed fd: read gives EOF (or a reset), not a timeout. */
static bool closed_by_server(int fd)
{
    char x;
    ssize_t n = read(fd, &x, 1);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static uint64_t refused(void)
{
    return mw_metric_value(MW_M_LISTENER_REFUSED, MW_ML_LSN_MILTER, MW_ML_REFUSE_LIMIT);
}

static void test_limits(void)
{
    mw_ms_options o = {.socket = NULL, .socket_mode = 0600, .timeout = 60, .step_timeout = 1,
                       .max_connections = 3};
    char spec[160], err[256];
    snprintf(spec, sizeof spec, "unix:%s", lim_path);
    o.socket = spec;
    mw_ms_server *ls = mw_ms_open(&o, &cbs, err, sizeof err);
    if (!MW_TEST_ASSERT(ls)) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    pthread_t th;
    pthread_create(&th, NULL, run_thread, ls);
    uint8_t *raw = NULL;
    int held[3];
    for (int i = 0; i < 3; i++)
        held[i] = lim_session(&raw);
    for (int i = 0; i < 3; i++)
        MW_TEST_ASSERT(held[i] >= 0);
    MW_TEST_EQ_INT(mw_ms_connections(ls), 3);

    /* at the cap: every new connection is closed at once (the MTA applies
     * its default action), each one counted; no thread is started for them */
    int threads0 = thread_count();
    uint64_t r0 = refused();
    for (int i = 0; i < 50; i++) {
        int fd = lim_connect();
        if (!MW_TEST_ASSERT(fd >= 0))
            break;
        MW_TEST_ASSERT(closed_by_server(fd));
        close(fd);
    }
    MW_TEST_EQ_INT(refused() - r0, 50);
    MW_TEST_ASSERT(thread_count() <= threads0);
    MW_TEST_EQ_INT(mw_ms_connections(ls), 3);

    /* a held connection idle between commands is not cut by the step
     * deadline: it still answers after more than one step timeout */
    nanosleep(&(struct timespec){1, 500 * 1000 * 1000}, NULL);
    mw_buf b = MW_BUF_INIT;
    const char *from = "<a@example.com>";
    mw_mp_put_args(&b, 'M', &from, 1);
    mta_send(held[0], &b);
    MW_TEST_EQ_INT(expect_cmd(held[0], &raw), 'c');

    /* a command trickled byte by byte: cut off at the step deadline, long
     * before its 1000 bytes could arrive (one per 100 ms: 100 s) */
    uint64_t t0 = mw_metric_value(MW_M_LISTENER_TIMEOUTS, MW_ML_LSN_MILTER, 0);
    uint8_t hdr[5] = {0, 0, 0x03, 0xE9, 'H'};   /* length 1001: 'H' + 1000 bytes */
    MW_TEST_ASSERT(write(held[1], hdr, 5) == 5);
    bool cut = false;
    for (int i = 0; i < 1000 && !cut; i++) {
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        cut = send(held[1], "x", 1, MSG_NOSIGNAL) != 1;
        struct pollfd p = {.fd = held[1], .events = POLLIN};
        cut = cut || (poll(&p, 1, 0) == 1 && closed_by_server(held[1]));
    }
    MW_TEST_ASSERT(cut);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_LISTENER_TIMEOUTS, MW_ML_LSN_MILTER, 0) - t0, 1);

    /* its slot is free again: a new session is served */
    for (int i = 0; i < 500 && mw_ms_connections(ls) > 2; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    int fresh = lim_session(&raw);
    MW_TEST_ASSERT(fresh >= 0);
    if (fresh >= 0)
        close(fresh);
    for (int i = 0; i < 3; i++)
        if (held[i] >= 0)
            close(held[i]);
    for (int i = 0; i < 500 && mw_ms_connections(ls) > 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    mw_ms_stop(ls);
    pthread_join(th, NULL);
    mw_ms_free(&ls);
    free(raw);
    mw_buf_free(&b);
    free(take_log());
}

int main(void)
{
    char dir[] = "/tmp/mw-mstest-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    snprintf(sock_path, sizeof sock_path, "%s/milter", dir);
    snprintf(lim_path, sizeof lim_path, "%s/limits", dir);
    char spec[160], err[256];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    mw_ms_options o = {
        .socket = spec,
        .socket_mode = 0600,
        .timeout = 10,
        .actions = MW_MP_F_ADDHDRS | MW_MP_F_CHGHDRS | MW_MP_F_QUARANTINE,
        .protocol = MW_MP_P_NOUNKNOWN | MW_MP_P_NODATA | MW_MP_P_HDR_LEADSPC,
        .no_reply = MW_MP_P_NR_HELO | MW_MP_P_NR_HDR | MW_MP_P_NR_EOH | MW_MP_P_NR_BODY,
        .symlists = {[MW_MP_SYM_CONNECT] = "j {client_addr}", [MW_MP_SYM_EOM] = "i"},
    };
    srv = mw_ms_open(&o, &cbs, err, sizeof err);
    if (!MW_TEST_ASSERT(srv)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* a bad spec is refused with a reason */
    mw_ms_options bad = o;
    bad.socket = "tcp:1@x";
    MW_TEST_ASSERT(mw_ms_open(&bad, &cbs, err, sizeof err) == NULL && strstr(err, "tcp:1@x"));
    pthread_t th;
    pthread_create(&th, NULL, run_thread, srv);
    MW_TEST_RUN(test_nr_full_message);
    MW_TEST_RUN(test_no_nr_old_mta);
    MW_TEST_RUN(test_reject_abort_hangup_garbage);
    MW_TEST_RUN(test_thread_reuse);
    MW_TEST_RUN(test_buffer_sizes);
    MW_TEST_RUN(test_limits);
    mw_ms_stop(srv);
    void *rc;
    pthread_join(th, &rc);
    MW_TEST_EQ_INT((intptr_t)rc, 0);
    MW_TEST_EQ_INT(mw_ms_idle_threads(srv), 0);   /* stop woke and waited for them */
    mw_ms_free(&srv);
    MW_TEST_ASSERT(access(sock_path, F_OK) != 0);   /* socket file removed */
    rmdir(dir);
    mw_buf_free(&evlog);
    return MW_TEST_SUMMARY();
}
