/*
 * milterload.c - a milter (protocol 6) load generator that talks to a filter the way
 * an MTA (Postfix) does: option negotiation with actions and protocol flags (and the
 * filter's macro lists), macros for connect/helo/mail/rcpt/eoh/eom (auth, queue id),
 * connect, helo, mail, rcpt, headers, eoh, body chunks of at most 64 KiB, end of
 * message; it reads the filter's replies, including the modification requests at end
 * of message (insheader/addheader/chgheader/quarantine/replbody/...) and replycode.
 *
 * N threads each hold one milter connection and pull messages from a shared counter;
 * a connection carries -k messages, then QUIT and a new connection.  Messages come from
 * a generated corpus (sizes 2k 16k 256k 4m or any byte count; realistic headers;
 * optionally DKIM-signed with an RSA key, relaxed/relaxed rsa-sha256, for verify
 * benchmarks).  Reports messages/s, latency p50/p99/max per stage and end to end,
 * errors, the filter's verdicts and edits, and (--json) one JSON object.
 *
 * Not part of the test suite.  Build: cc -O2 -pthread milterload.c -lcrypto -o milterload
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

/* ---- milter protocol constants (libmilter/mfdef.h, mfapi.h) ---------------------- */
#define MILTER_VERSION 6
#define CHUNK 65535 /* MILTER_CHUNK_SIZE: the MTA's body chunk size */
#define MAXREPLY (16 * 1024 * 1024)

#define F_ALL_ACTIONS 0x1FFu /* ADDHDRS..SETSYMLIST */
#define F_SETSYMLIST 0x100u
#define P_NOCONNECT 0x1u
#define P_NOHELO 0x2u
#define P_NOMAIL 0x4u
#define P_NORCPT 0x8u
#define P_NOBODY 0x10u
#define P_NOHDRS 0x20u
#define P_NOEOH 0x40u
#define P_NR_HDR 0x80u
#define P_NOUNKNOWN 0x100u
#define P_NODATA 0x200u
#define P_SKIP 0x400u
#define P_RCPT_REJ 0x800u
#define P_NR_CONN 0x1000u
#define P_NR_HELO 0x2000u
#define P_NR_MAIL 0x4000u
#define P_NR_RCPT 0x8000u
#define P_NR_DATA 0x10000u
#define P_NR_EOH 0x40000u
#define P_NR_BODY 0x80000u
#define P_HDR_LEADSPC 0x100000u
/* what Postfix 3.7 offers (it does not offer the MDS_* sizes) */
#define P_OFFER 0x1FFFFFu

enum { M_CONNECT, M_HELO, M_MAIL, M_RCPT, M_DATA, M_EOM, M_EOH, M_NSTAGES };
static const char stage_cmd[M_NSTAGES] = {'C', 'H', 'M', 'R', 'T', 'E', 'N'};

/* latency stages we report */
enum { S_NEG, S_CONN, S_HELO, S_MAIL, S_RCPT, S_HDRS, S_BODY, S_EOM, S_TOTAL, S_N };
static const char *const stage_name[S_N] = {"negotiate", "connect", "helo", "mail", "rcpt",
                                            "headers+eoh", "body", "eom", "total"};

/* ---- options ----------------------------------------------------------------------- */
static struct {
    const char *sock;
    int conc;
    long count, warmup;
    int per_conn;
    size_t sizes[8];
    int nsizes;
    int variants;
    const char *auth, *ip, *from, *to, *helo, *daemon_name, *client_name;
    int rcpts;
    const char *dkim_key, *dkim_domain, *dkim_selector;
    const char *from_hdr;
    bool json, barrier, quiet;
    const char *rss_pids;
    const char *dump;
    long rss_every;
    double timeout;
} opt = {.conc = 8,
         .count = 1000,
         .warmup = 0,
         .per_conn = 1,
         .variants = 8,
         .ip = "192.0.2.10",
         .from = "alice@example.com",
         .to = "bob@dest.example",
         .helo = "mail.example.com",
         .daemon_name = "smtpd",
         .client_name = "mail.example.com",
         .rcpts = 1,
         .timeout = 60};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("milterload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* ---- growable byte buffer ---------------------------------------------------------- */
typedef struct {
    char *d;
    size_t len, cap;
} buf;

static void b_need(buf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    size_t c = b->cap ? b->cap : 256;
    while (c < b->len + n)
        c *= 2;
    b->d = realloc(b->d, c);
    if (!b->d)
        die("out of memory");
    b->cap = c;
}
static void b_put(buf *b, const void *p, size_t n)
{
    b_need(b, n);
    memcpy(b->d + b->len, p, n);
    b->len += n;
}
static void b_puts(buf *b, const char *s) { b_put(b, s, strlen(s)); }
static void b_putz(buf *b, const char *s) { b_put(b, s, strlen(s) + 1); }
static void b_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[2048];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    b_put(b, tmp, (size_t)n);
}

/* ---- corpus ---------------------------------------------------------------------------- */
typedef struct {
    char *name, *value; /* value as written, with its leading blank */
} header;
typedef struct {
    header *h;
    int nh;
    char *body; /* CRLF lines */
    size_t blen, total;
} message;

static message *corpus;
static int ncorpus;

static const char *const words[] = {
    "the", "quarterly", "report", "attached", "please", "review", "meeting", "tomorrow", "at",
    "ten", "budget", "numbers", "look", "fine", "but", "marketing", "needs", "another", "pass",
    "on", "slides", "thanks", "regards", "invoice", "shipment", "delayed", "customer", "asked",
    "about", "refund", "policy", "update", "server", "maintenance", "window", "scheduled",
    "for", "saturday", "night", "and", "we", "expect", "short", "outage", "of", "mail",
    "delivery", "during", "upgrade", "project", "timeline", "milestone", "draft", "contract"};
#define NWORDS (sizeof words / sizeof words[0])

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void add_header(message *m, const char *name, const char *fmt, ...)
{
    char v[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    m->h = realloc(m->h, sizeof *m->h * (size_t)(m->nh + 1));
    m->h[m->nh].name = strdup(name);
    m->h[m->nh].value = strdup(v);
    m->nh++;
}

static EVP_PKEY *dkim_pkey;

static char *b64(const unsigned char *p, size_t n)
{
    char *o = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)o, p, (int)n);
    return o;
}

/* relaxed header canonicalization of one of our generated (unfolded, single-spaced) headers */
static void relaxed_hdr(buf *b, const header *h)
{
    for (const char *p = h->name; *p; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        b_put(b, &c, 1);
    }
    b_puts(b, ":");
    const char *v = h->value;
    while (*v == ' ' || *v == '\t')
        v++;
    b_puts(b, v);
}

static void dkim_sign(message *m)
{
    unsigned char bh[32];
    unsigned int bhl = 0;
    EVP_Digest(m->body, m->blen, bh, &bhl, EVP_sha256(), NULL);
    char *bh64 = b64(bh, bhl);
    static const char *const signed_h[] = {"From", "To", "Subject", "Date", "Message-ID",
                                           "MIME-Version", "Content-Type"};
    buf hl = {0};
    for (size_t i = 0; i < sizeof signed_h / sizeof *signed_h; i++)
        b_printf(&hl, "%s%s", i ? ":" : "", signed_h[i]);
    b_put(&hl, "", 1);
    buf sigv = {0};
    b_printf(&sigv, " v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=%s; t=%ld; h=%s; bh=%s; b=",
             opt.dkim_domain, opt.dkim_selector, (long)time(NULL), hl.d, bh64);
    b_put(&sigv, "", 1);
    buf in = {0};
    for (size_t i = 0; i < sizeof signed_h / sizeof *signed_h; i++)
        for (int j = m->nh - 1; j >= 0; j--) /* bottom-most instance */
            if (strcasecmp(m->h[j].name, signed_h[i]) == 0) {
                relaxed_hdr(&in, &m->h[j]);
                b_puts(&in, "\r\n");
                break;
            }
    header self = {"DKIM-Signature", sigv.d};
    relaxed_hdr(&in, &self);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t slen = 0;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, dkim_pkey) != 1 ||
        EVP_DigestSign(md, NULL, &slen, (unsigned char *)in.d, in.len) != 1)
        die("DKIM signing failed");
    unsigned char *sig = xmalloc(slen);
    if (EVP_DigestSign(md, sig, &slen, (unsigned char *)in.d, in.len) != 1)
        die("DKIM signing failed");
    EVP_MD_CTX_free(md);
    char *s64 = b64(sig, slen);
    /* the signature goes on top */
    m->h = realloc(m->h, sizeof *m->h * (size_t)(m->nh + 1));
    memmove(m->h + 1, m->h, sizeof *m->h * (size_t)m->nh);
    size_t vl = strlen(sigv.d) + strlen(s64) + 1;
    m->h[0].name = strdup("DKIM-Signature");
    m->h[0].value = xmalloc(vl);
    snprintf(m->h[0].value, vl, "%s%s", sigv.d, s64);
    m->nh++;
    free(sig);
    free(s64);
    free(bh64);
    free(hl.d);
    free(sigv.d);
    free(in.d);
}

static void gen_message(message *m, size_t size, int variant, int seq)
{
    memset(m, 0, sizeof *m);
    uint32_t s = 2463534242u + (uint32_t)variant * 7919u + (uint32_t)size;
    const char *fromdom = strchr(opt.from, '@') ? strchr(opt.from, '@') + 1 : "example.com";
    const char *hfrom = opt.from_hdr ? opt.from_hdr : opt.from;
    add_header(m, "Received",
               " from %s (%s [%s]) by mx.bench.example (Postfix) with ESMTPS id 4Fh2%06X for <%s>; "
               "Sat, 28 Nov 2026 18:00:%02d +0000 (UTC)",
               opt.helo, opt.client_name, opt.ip, (unsigned)(variant * 977 + seq), opt.to, variant % 60);
    add_header(m, "Received",
               " from [10.1.2.%d] (laptop.%s [10.1.2.%d]) by %s (Postfix) with ESMTPSA id 7Ab3%06X;"
               " Sat, 28 Nov 2026 17:59:%02d +0000 (UTC)",
               variant + 2, fromdom, variant + 2, opt.helo, (unsigned)(variant * 31 + seq), variant % 60);
    add_header(m, "MIME-Version", " 1.0");
    add_header(m, "Date", " Sat, 28 Nov 2026 17:59:%02d +0000", variant % 60);
    add_header(m, "Message-ID", " <%08x.%d.%zu@%s>", rnd(&s), variant, size, fromdom);
    add_header(m, "Subject", " Re: %s %s %s (%zu bytes, #%d)", words[rnd(&s) % NWORDS],
               words[rnd(&s) % NWORDS], words[rnd(&s) % NWORDS], size, variant);
    add_header(m, "From", " \"Alice Example\" <%s>", hfrom);
    add_header(m, "To", " \"Bob Destination\" <%s>", opt.to);
    add_header(m, "Content-Type", " text/plain; charset=\"utf-8\"; format=flowed");
    add_header(m, "Content-Transfer-Encoding", " 8bit");
    add_header(m, "User-Agent", " Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Thunderbird/115.5.0");
    add_header(m, "Content-Language", " en-US");
    size_t hsize = 0;
    for (int i = 0; i < m->nh; i++)
        hsize += strlen(m->h[i].name) + 1 + strlen(m->h[i].value) + 2;
    hsize += 2;
    if (dkim_pkey)
        hsize += 520; /* roughly the signature we add */
    size_t want = size > hsize + 64 ? size - hsize : 64;
    buf b = {0};
    b_need(&b, want + 128);
    while (b.len < want) {
        size_t line = 0;
        size_t start = b.len;
        while (line < 70 && b.len < want) {
            const char *w = words[rnd(&s) % NWORDS];
            if (line)
                b_puts(&b, " ");
            b_puts(&b, w);
            line = b.len - start;
        }
        b_puts(&b, "\r\n");
        if (rnd(&s) % 9 == 0)
            b_puts(&b, "\r\n"); /* paragraph */
    }
    /* relaxed body canonical form == this body: no trailing blank lines */
    while (b.len >= 4 && memcmp(b.d + b.len - 4, "\r\n\r\n", 4) == 0)
        b.len -= 2;
    m->body = b.d;
    m->blen = b.len;
    if (dkim_pkey)
        dkim_sign(m);
    m->total = m->blen + 2;
    for (int i = 0; i < m->nh; i++)
        m->total += strlen(m->h[i].name) + 1 + strlen(m->h[i].value) + 2;
}

/* ---- connection I/O ---------------------------------------------------------------- */
typedef struct {
    int fd;
    buf out;        /* packets not yet written */
    uint32_t act;   /* negotiated actions */
    uint32_t proto; /* negotiated protocol flags */
    char *symlist[M_NSTAGES];
    char *rbuf;
    size_t rcap;
} conn;

static int connect_sock(const char *spec)
{
    int fd = -1;
    if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0 || spec[0] == '/') {
        const char *path = spec[0] == '/' ? spec : strchr(spec, ':') + 1;
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
            close(fd);
            return -1;
        }
    } else {
        /* inet:PORT@HOST, inet6:PORT@HOST */
        const char *p = strchr(spec, ':');
        p = p ? p + 1 : spec;
        char port[16] = "", host[256] = "127.0.0.1";
        const char *at = strchr(p, '@');
        snprintf(port, sizeof port, "%.*s", at ? (int)(at - p) : (int)strlen(p), p);
        if (at)
            snprintf(host, sizeof host, "%s", at + 1);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0)
            return -1;
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
            if (fd < 0)
                continue;
            if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
                break;
            close(fd);
            fd = -1;
        }
        freeaddrinfo(ai);
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
    }
    if (fd >= 0) {
        struct timeval tv = {(time_t)opt.timeout, (suseconds_t)((opt.timeout - (time_t)opt.timeout) * 1e6)};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return fd;
}

/* queue one packet: uint32 length (command + data), command, data */
static void pkt_begin(conn *c, char cmd, size_t *mark)
{
    *mark = c->out.len;
    uint32_t z = 0;
    b_put(&c->out, &z, 4);
    b_put(&c->out, &cmd, 1);
}
static void pkt_end(conn *c, size_t mark)
{
    uint32_t n = htonl((uint32_t)(c->out.len - mark - 4));
    memcpy(c->out.d + mark, &n, 4);
}
static void pkt(conn *c, char cmd, const void *data, size_t len)
{
    size_t m;
    pkt_begin(c, cmd, &m);
    b_put(&c->out, data, len);
    pkt_end(c, m);
}

static bool flush_out(conn *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.d + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        off += (size_t)n;
    }
    c->out.len = 0;
    return true;
}

static bool read_full(int fd, void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = recv(fd, (char *)p + off, n - off, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        off += (size_t)r;
    }
    return true;
}

/* read one reply packet: *cmd, data in c->rbuf (NUL-terminated), *len */
static bool read_reply(conn *c, char *cmd, size_t *len)
{
    if (c->out.len && !flush_out(c))
        return false;
    uint32_t n;
    if (!read_full(c->fd, &n, 4))
        return false;
    n = ntohl(n);
    if (n < 1 || n > MAXREPLY)
        return false;
    if (c->rcap < n + 1) {
        c->rcap = n + 1;
        c->rbuf = realloc(c->rbuf, c->rcap);
        if (!c->rbuf)
            die("out of memory");
    }
    if (!read_full(c->fd, cmd, 1) || !read_full(c->fd, c->rbuf, n - 1))
        return false;
    c->rbuf[n - 1] = 0;
    *len = n - 1;
    return true;
}

/* ---- per-thread statistics ------------------------------------------------------------ */
typedef struct {
    long msgs, accepted, rejected, tempfailed, discarded, other_final, errors, conns, skipped;
    long insheader, addheader, chgheader, quarantine, replycode, replbody, envchg, progress;
    long ar_dkim_pass, ar_spf_pass, ar_dmarc_pass, dkim_sigs, ar_headers, ar_dkim_fail;
    long bytes;
    char first_error[256];
    char last_reply[256];
} counters;

static float *lat[S_N]; /* samples, indexed by measured-message slot */
static atomic_long next_msg, done_msgs, slot_ctr;
static long total_msgs;
static pthread_barrier_t start_barrier;
static double t_start_measure;
static pthread_mutex_t rss_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_error(counters *k, const char *what)
{
    k->errors++;
    if (!k->first_error[0])
        snprintf(k->first_error, sizeof k->first_error, "%s (%s)", what, errno ? strerror(errno) : "protocol");
}

/* ---- macros ------------------------------------------------------------------------------ */
typedef struct {
    char qid[24];
    char client_port[8];
} msgctx;

static char underscore_macro[600];

static const char *macro_value(const char *name, const msgctx *mc)
{
    if (!strcmp(name, "j"))
        return "mx.bench.example";
    if (!strcmp(name, "_")) {
        return underscore_macro; /* built once in main */
    }
    if (!strcmp(name, "{daemon_name}"))
        return opt.daemon_name;
    if (!strcmp(name, "{daemon_addr}"))
        return "192.0.2.1";
    if (!strcmp(name, "{daemon_port}"))
        return "25";
    if (!strcmp(name, "v"))
        return "Postfix 3.7.11";
    if (!strcmp(name, "{client_addr}"))
        return opt.ip;
    if (!strcmp(name, "{client_name}") || !strcmp(name, "{client_ptr}"))
        return opt.client_name;
    if (!strcmp(name, "{client_port}"))
        return mc->client_port;
    if (!strcmp(name, "i"))
        return mc->qid;
    if (!strcmp(name, "{auth_type}"))
        return opt.auth ? "PLAIN" : NULL;
    if (!strcmp(name, "{auth_authen}"))
        return opt.auth;
    if (!strcmp(name, "{mail_addr}"))
        return opt.from;
    if (!strcmp(name, "{mail_host}"))
        return NULL;
    if (!strcmp(name, "{mail_mailer}"))
        return "smtp";
    if (!strcmp(name, "{rcpt_addr}"))
        return opt.to;
    if (!strcmp(name, "{rcpt_mailer}"))
        return "virtual";
    if (!strcmp(name, "{rcpt_host}"))
        return strchr(opt.to, '@') ? strchr(opt.to, '@') + 1 : "";
    if (!strcmp(name, "{tls_version}"))
        return "TLSv1.3";
    if (!strcmp(name, "{cipher}"))
        return "TLS_AES_256_GCM_SHA384";
    if (!strcmp(name, "{cipher_bits}"))
        return "256";
    return NULL;
}

/* Postfix's defaults (milter_*_macros) when the filter does not ask for a list */
static const char *const default_macros[M_NSTAGES] = {
    [M_CONNECT] = "j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} {client_name} "
                  "{client_port} {client_ptr}",
    [M_HELO] = "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    [M_MAIL] = "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    [M_RCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    [M_DATA] = "i",
    [M_EOM] = "i",
    [M_EOH] = "i",
};

static void send_macros(conn *c, int stage, const msgctx *mc)
{
    const char *list = c->symlist[stage] ? c->symlist[stage] : default_macros[stage];
    if (!list)
        return;
    size_t m;
    pkt_begin(c, 'D', &m);
    b_put(&c->out, &stage_cmd[stage], 1);
    char name[128];
    const char *p = list;
    bool any = false;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, " ,");
        if (!n)
            break;
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        p += n;
        const char *v = macro_value(name, mc);
        if (!v) {
            /* a one-letter name may be asked for braced ("{i}") */
            if (name[0] == '{' && strlen(name) == 3) {
                char s[2] = {name[1], 0};
                v = macro_value(s, mc);
            }
            if (!v)
                continue;
        }
        b_putz(&c->out, name);
        b_putz(&c->out, v);
        any = true;
    }
    if (!any) {
        c->out.len = m; /* nothing known: send no D packet */
        return;
    }
    pkt_end(c, m);
}

/* ---- the dialogue ------------------------------------------------------------------------ */
static bool negotiate(conn *c, counters *k)
{
    uint32_t v[3] = {htonl(MILTER_VERSION), htonl(F_ALL_ACTIONS), htonl(P_OFFER)};
    pkt(c, 'O', v, sizeof v);
    char cmd;
    size_t len;
    if (!read_reply(c, &cmd, &len) || cmd != 'O' || len < 12) {
        note_error(k, "option negotiation");
        return false;
    }
    uint32_t r[3];
    memcpy(r, c->rbuf, 12);
    c->act = ntohl(r[1]);
    c->proto = ntohl(r[2]);
    if (c->proto & ~P_OFFER) {
        note_error(k, "filter asked for protocol flags we did not offer");
        return false;
    }
    /* macro lists: (uint32 stage, NUL-terminated list)* */
    size_t off = 12;
    while (off + 4 < len) {
        uint32_t st;
        memcpy(&st, c->rbuf + off, 4);
        st = ntohl(st);
        off += 4;
        size_t n = strnlen(c->rbuf + off, len - off);
        if (st < M_NSTAGES && (c->act & F_SETSYMLIST)) {
            free(c->symlist[st]);
            c->symlist[st] = strndup(c->rbuf + off, n);
        }
        off += n + 1;
    }
    return true;
}

enum { R_CONT, R_STOP, R_ERR };

/* a reply to a non-final step: continue, or a final verdict that ends the message */
static int step_reply(conn *c, counters *k, bool body)
{
    for (;;) {
        char cmd;
        size_t len;
        if (!read_reply(c, &cmd, &len)) {
            note_error(k, "reading reply");
            return R_ERR;
        }
        switch (cmd) {
        case 'c':
            return R_CONT;
        case 's':
            if (body) {
                k->skipped++;
                return R_STOP; /* skip further body chunks */
            }
            note_error(k, "skip outside body");
            return R_ERR;
        case 'p':
            k->progress++;
            continue;
        case 'a':
            k->accepted++;
            return R_STOP;
        case 'r':
            k->rejected++;
            return R_STOP;
        case 't':
            k->tempfailed++;
            return R_STOP;
        case 'd':
            k->discarded++;
            return R_STOP;
        case 'y':
            k->replycode++;
            snprintf(k->last_reply, sizeof k->last_reply, "%s", c->rbuf);
            if (c->rbuf[0] == '5')
                k->rejected++;
            else
                k->tempfailed++;
            return R_STOP;
        default: {
            char w[64];
            snprintf(w, sizeof w, "unexpected reply '%c'", cmd);
            note_error(k, w);
            return R_ERR;
        }
        }
    }
}

static void tally_header(counters *k, const char *name, const char *value)
{
    if (!strcasecmp(name, "Authentication-Results")) {
        k->ar_headers++;
        if (strstr(value, "dkim=pass"))
            k->ar_dkim_pass++;
        if (strstr(value, "dkim=fail") || strstr(value, "dkim=permerror") || strstr(value, "dkim=temperror"))
            k->ar_dkim_fail++;
        if (strstr(value, "spf=pass"))
            k->ar_spf_pass++;
        if (strstr(value, "dmarc=pass"))
            k->ar_dmarc_pass++;
    } else if (!strcasecmp(name, "DKIM-Signature")) {
        k->dkim_sigs++;
    }
}

/* replies to end of message: modifications, then one final */
static int eom_replies(conn *c, counters *k)
{
    for (;;) {
        char cmd;
        size_t len;
        if (!read_reply(c, &cmd, &len)) {
            note_error(k, "reading end-of-message reply");
            return R_ERR;
        }
        const char *d = c->rbuf;
        switch (cmd) {
        case 'i': /* uint32 index, name, value */
        case 'm':
            if (len < 5) {
                note_error(k, "short insheader/chgheader");
                return R_ERR;
            }
            if (cmd == 'i')
                k->insheader++;
            else
                k->chgheader++;
            {
                const char *name = d + 4;
                size_t nl = strnlen(name, len - 4);
                const char *value = nl + 1 < len - 4 ? name + nl + 1 : "";
                if (cmd == 'i')
                    tally_header(k, name, value);
            }
            continue;
        case 'h': {
            k->addheader++;
            size_t nl = strnlen(d, len);
            tally_header(k, d, nl + 1 < len ? d + nl + 1 : "");
            continue;
        }
        case 'q':
            k->quarantine++;
            continue;
        case 'b':
            k->replbody++;
            continue;
        case '+':
        case '-':
        case '2':
        case 'e':
            k->envchg++;
            continue;
        case 'p':
            k->progress++;
            continue;
        case 'c':
        case 'a':
            k->accepted++;
            return R_CONT;
        case 'r':
            k->rejected++;
            return R_CONT;
        case 't':
            k->tempfailed++;
            return R_CONT;
        case 'd':
            k->discarded++;
            return R_CONT;
        case 'y':
            k->replycode++;
            snprintf(k->last_reply, sizeof k->last_reply, "%s", d);
            if (d[0] == '5')
                k->rejected++;
            else
                k->tempfailed++;
            return R_CONT;
        case 'f':
        case '4':
            k->other_final++;
            return R_STOP;
        default: {
            char w[64];
            snprintf(w, sizeof w, "unexpected end-of-message reply '%c'", cmd);
            note_error(k, w);
            return R_ERR;
        }
        }
    }
}

/* Run one step: send (already queued), wait for the reply unless the filter said
 * "no reply" for it.  Records the latency into t[]. */
static int step(conn *c, counters *k, uint32_t nr_flag, double *t, int s)
{
    double t0 = now_us();
    int r = R_CONT;
    if (!(c->proto & nr_flag))
        r = step_reply(c, k, false);
    else if (!flush_out(c)) {
        note_error(k, "write");
        r = R_ERR;
    }
    t[s] += now_us() - t0;
    return r;
}

static int conn_open(conn *c, counters *k, double *t, const msgctx *mc)
{
    double t0 = now_us();
    c->fd = connect_sock(opt.sock);
    if (c->fd < 0) {
        note_error(k, "connect");
        return R_ERR;
    }
    k->conns++;
    if (!negotiate(c, k))
        return R_ERR;
    t[S_NEG] += now_us() - t0;
    if (!(c->proto & P_NOCONNECT)) {
        send_macros(c, M_CONNECT, mc);
        size_t m;
        pkt_begin(c, 'C', &m);
        b_putz(&c->out, opt.client_name);
        bool v6 = strchr(opt.ip, ':') != NULL;
        b_put(&c->out, v6 ? "6" : "4", 1);
        uint16_t port = htons((uint16_t)atoi(mc->client_port));
        b_put(&c->out, &port, 2);
        b_putz(&c->out, opt.ip);
        pkt_end(c, m);
        int r = step(c, k, P_NR_CONN, t, S_CONN);
        if (r != R_CONT)
            return r;
    }
    if (!(c->proto & P_NOHELO)) {
        send_macros(c, M_HELO, mc);
        pkt(c, 'H', opt.helo, strlen(opt.helo) + 1);
        int r = step(c, k, P_NR_HELO, t, S_HELO);
        if (r != R_CONT)
            return r;
    }
    return R_CONT;
}

static void conn_close(conn *c, bool quit)
{
    if (c->fd >= 0) {
        if (quit) {
            pkt(c, 'Q', NULL, 0);
            flush_out(c);
        }
        close(c->fd);
    }
    c->fd = -1;
    c->out.len = 0;
    for (int i = 0; i < M_NSTAGES; i++) {
        free(c->symlist[i]);
        c->symlist[i] = NULL;
    }
}

/* one message through MAIL..EOM; R_CONT: done (whatever the verdict), R_ERR: broken */
static int run_message(conn *c, counters *k, const message *m, double *t, const msgctx *mc)
{
    int r;
    if (!(c->proto & P_NOMAIL)) {
        send_macros(c, M_MAIL, mc);
        size_t mk;
        pkt_begin(c, 'M', &mk);
        b_printf(&c->out, "<%s>", opt.from);
        b_put(&c->out, "", 1);
        b_printf(&c->out, "SIZE=%zu", m->total);
        b_put(&c->out, "", 1);
        b_putz(&c->out, "BODY=8BITMIME");
        pkt_end(c, mk);
        if ((r = step(c, k, P_NR_MAIL, t, S_MAIL)) != R_CONT)
            goto stopped;
    }
    for (int i = 0; i < opt.rcpts; i++) {
        if (c->proto & P_NORCPT)
            break;
        send_macros(c, M_RCPT, mc);
        size_t mk;
        pkt_begin(c, 'R', &mk);
        if (i == 0)
            b_printf(&c->out, "<%s>", opt.to);
        else
            b_printf(&c->out, "<rcpt%d.%s>", i, opt.to);
        b_put(&c->out, "", 1);
        pkt_end(c, mk);
        if ((r = step(c, k, P_NR_RCPT, t, S_RCPT)) != R_CONT)
            goto stopped;
    }
    if (!(c->proto & P_NODATA)) {
        send_macros(c, M_DATA, mc);
        pkt(c, 'T', NULL, 0);
        if ((r = step(c, k, P_NR_DATA, t, S_HDRS)) != R_CONT)
            goto stopped;
    }
    double t0 = now_us();
    if (!(c->proto & P_NOHDRS)) {
        bool lead = (c->proto & P_HDR_LEADSPC) != 0;
        for (int i = 0; i < m->nh; i++) {
            size_t mk;
            pkt_begin(c, 'L', &mk);
            b_putz(&c->out, m->h[i].name);
            const char *v = m->h[i].value;
            if (!lead)
                while (*v == ' ' || *v == '\t')
                    v++;
            b_putz(&c->out, v);
            pkt_end(c, mk);
            if (!(c->proto & P_NR_HDR)) {
                r = step_reply(c, k, false);
                if (r != R_CONT) {
                    t[S_HDRS] += now_us() - t0;
                    goto stopped;
                }
            }
        }
    }
    if (!(c->proto & P_NOEOH)) {
        send_macros(c, M_EOH, mc);
        pkt(c, 'N', NULL, 0);
        if (!(c->proto & P_NR_EOH)) {
            r = step_reply(c, k, false);
            if (r != R_CONT) {
                t[S_HDRS] += now_us() - t0;
                goto stopped;
            }
        } else if (!flush_out(c)) {
            note_error(k, "write");
            return R_ERR;
        }
    }
    t[S_HDRS] += now_us() - t0;
    t0 = now_us();
    if (!(c->proto & P_NOBODY)) {
        for (size_t off = 0; off < m->blen; off += CHUNK) {
            size_t n = m->blen - off < CHUNK ? m->blen - off : CHUNK;
            pkt(c, 'B', m->body + off, n);
            if (!(c->proto & P_NR_BODY)) {
                r = step_reply(c, k, true);
                if (r == R_STOP && k->skipped) /* 's': rest of the body skipped */
                    break;
                if (r != R_CONT) {
                    t[S_BODY] += now_us() - t0;
                    goto stopped;
                }
            } else if (!flush_out(c)) {
                note_error(k, "write");
                return R_ERR;
            }
        }
    }
    t[S_BODY] += now_us() - t0;
    t0 = now_us();
    send_macros(c, M_EOM, mc);
    pkt(c, 'E', NULL, 0);
    r = eom_replies(c, k);
    t[S_EOM] += now_us() - t0;
    if (r == R_ERR)
        return R_ERR;
    if (r == R_STOP)
        return R_ERR; /* connection failure requested */
    k->bytes += (long)m->total;
    return R_CONT;
stopped:
    if (r == R_ERR)
        return R_ERR;
    /* refused before end of message: the MTA aborts the message (RSET) */
    pkt(c, 'A', NULL, 0);
    if (!flush_out(c))
        return R_ERR;
    k->bytes += 0;
    return R_CONT;
}

static long read_rss_kb(const char *pids)
{
    long total = 0;
    char *copy = strdup(pids), *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%s/status", p);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6))
                total += atol(line + 6);
        fclose(f);
    }
    free(copy);
    return total;
}

typedef struct {
    int id;
    counters k;
} worker;

static void *thread_main(void *arg)
{
    worker *w = arg;
    counters *k = &w->k;
    conn c = {.fd = -1};
    int on_conn = 0;
    uint32_t seq = (uint32_t)w->id * 100003u + 1;
    msgctx mc;
    snprintf(mc.client_port, sizeof mc.client_port, "%d", 30000 + w->id % 30000);
    double t[S_N];
    if (opt.barrier) {
        /* open the connection first, so that all are open at once */
        memset(t, 0, sizeof t);
        snprintf(mc.qid, sizeof mc.qid, "B%04X%07X", (unsigned)w->id, 0u);
        if (conn_open(&c, k, t, &mc) != R_CONT)
            conn_close(&c, false);
        pthread_barrier_wait(&start_barrier);
    }
    for (;;) {
        long i = atomic_fetch_add(&next_msg, 1);
        if (i >= total_msgs)
            break;
        const message *m = &corpus[i % ncorpus];
        snprintf(mc.qid, sizeof mc.qid, "4F%04X%07lX", (unsigned)(w->id & 0xffff), (unsigned long)(seq++ & 0xfffffff));
        memset(t, 0, sizeof t);
        double t0 = now_us();
        int r = R_CONT;
        if (c.fd < 0 || on_conn >= opt.per_conn) {
            if (c.fd >= 0)
                conn_close(&c, true);
            on_conn = 0;
            r = conn_open(&c, k, t, &mc);
        }
        if (r == R_CONT)
            r = run_message(&c, k, m, t, &mc);
        else if (r == R_STOP)
            r = R_CONT; /* refused at connect/helo: counted, try a new connection */
        if (r == R_CONT && c.fd >= 0)
            on_conn++;
        if (r != R_CONT || c.fd < 0) {
            conn_close(&c, false);
            on_conn = 0;
        } else if (on_conn >= opt.per_conn) {
            conn_close(&c, true);
            on_conn = 0;
        }
        t[S_TOTAL] = now_us() - t0;
        k->msgs++;
        long d = atomic_fetch_add(&done_msgs, 1) + 1;
        if (i >= opt.warmup) {
            long slot = atomic_fetch_add(&slot_ctr, 1);
            if (slot < opt.count)
                for (int s = 0; s < S_N; s++)
                    lat[s][slot] = (float)t[s];
        }
        if (d == opt.warmup)
            t_start_measure = now_us();
        if (opt.rss_pids && opt.rss_every > 0 && d > opt.warmup && (d - opt.warmup) % opt.rss_every == 0) {
            pthread_mutex_lock(&rss_lock);
            fprintf(stderr, "rss %ld %ld\n", d - opt.warmup, read_rss_kb(opt.rss_pids));
            pthread_mutex_unlock(&rss_lock);
        }
    }
    conn_close(&c, true);
    free(c.out.d);
    free(c.rbuf);
    return NULL;
}

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024;
    else if (*end)
        die("bad size \"%s\"", s);
    if (v < 256)
        die("size \"%s\" too small", s);
    return (size_t)v;
}

static void usage(void)
{
    fputs("usage: milterload -s SOCKET [options]\n"
          "  -s, --socket SPEC        inet:PORT@HOST, inet6:PORT@HOST or unix:PATH\n"
          "  -c, --concurrency N      parallel connections (threads), default 8\n"
          "  -n, --count M            measured messages, default 1000\n"
          "  -w, --warmup W           messages sent first and not measured, default 0\n"
          "  -k, --per-connection K   messages per milter connection (one SMTP session), default 1\n"
          "  -z, --size S[,S...]      message sizes: bytes or 2k, 16k, 256k, 4m...; cycled, default 4k\n"
          "  -V, --variants V         distinct messages per size, default 8\n"
          "  -a, --auth USER          SASL login ({auth_authen}): outbound, triggers signing\n"
          "  -i, --ip ADDR            client address, default 192.0.2.10\n"
          "  -f, --from ADDR          envelope sender (and header From), default alice@example.com\n"
          "  -t, --to ADDR            recipient, default bob@dest.example\n"
          "  -r, --rcpts N            recipients per message, default 1\n"
          "      --helo NAME          default mail.example.com\n"
          "      --client-name NAME   connect host name, default mail.example.com\n"
          "      --daemon-name NAME   {daemon_name}, default smtpd (ORIGINATING: submission)\n"
          "      --header-from ADDR   header From when it differs from the envelope\n"
          "      --dkim-key PEM --dkim-domain D --dkim-selector S\n"
          "                           DKIM-sign the corpus (rsa-sha256, relaxed/relaxed) for verify\n"
          "      --barrier            open all connections before sending (peak concurrency)\n"
          "      --rss-pids P,P --rss-every N   print the summed VmRSS every N messages (stderr)\n"
          "      --timeout SECONDS    per read/write, default 60\n"
          "      --dump FILE          write the corpus' first message (per size: FILE.SIZE) and exit\n"
          "      --json               print one JSON object instead of the table\n"
          "  -q, --quiet\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"socket", 1, 0, 's'},      {"concurrency", 1, 0, 'c'}, {"count", 1, 0, 'n'},
        {"warmup", 1, 0, 'w'},      {"per-connection", 1, 0, 'k'}, {"size", 1, 0, 'z'},
        {"variants", 1, 0, 'V'},    {"auth", 1, 0, 'a'},        {"ip", 1, 0, 'i'},
        {"from", 1, 0, 'f'},        {"to", 1, 0, 't'},          {"rcpts", 1, 0, 'r'},
        {"helo", 1, 0, 1},          {"client-name", 1, 0, 2},   {"daemon-name", 1, 0, 3},
        {"dkim-key", 1, 0, 4},      {"dkim-domain", 1, 0, 5},   {"dkim-selector", 1, 0, 6},
        {"barrier", 0, 0, 7},       {"rss-pids", 1, 0, 8},      {"rss-every", 1, 0, 9},
        {"timeout", 1, 0, 10},      {"json", 0, 0, 11},         {"header-from", 1, 0, 12},
        {"dump", 1, 0, 13},         {"quiet", 0, 0, 'q'},       {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    const char *sizes = "4k";
    int ch;
    while ((ch = getopt_long(argc, argv, "s:c:n:w:k:z:V:a:i:f:t:r:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 's': opt.sock = optarg; break;
        case 'c': opt.conc = atoi(optarg); break;
        case 'n': opt.count = atol(optarg); break;
        case 'w': opt.warmup = atol(optarg); break;
        case 'k': opt.per_conn = atoi(optarg); break;
        case 'z': sizes = optarg; break;
        case 'V': opt.variants = atoi(optarg); break;
        case 'a': opt.auth = optarg; break;
        case 'i': opt.ip = optarg; break;
        case 'f': opt.from = optarg; break;
        case 't': opt.to = optarg; break;
        case 'r': opt.rcpts = atoi(optarg); break;
        case 1: opt.helo = optarg; break;
        case 2: opt.client_name = optarg; break;
        case 3: opt.daemon_name = optarg; break;
        case 4: opt.dkim_key = optarg; break;
        case 5: opt.dkim_domain = optarg; break;
        case 6: opt.dkim_selector = optarg; break;
        case 7: opt.barrier = true; break;
        case 8: opt.rss_pids = optarg; break;
        case 9: opt.rss_every = atol(optarg); break;
        case 10: opt.timeout = atof(optarg); break;
        case 11: opt.json = true; break;
        case 12: opt.from_hdr = optarg; break;
        case 13: opt.dump = optarg; break;
        case 'q': opt.quiet = true; break;
        default: usage();
        }
    }
    if (!opt.sock || opt.conc < 1 || opt.count < 1 || opt.per_conn < 1 || opt.variants < 1 ||
        opt.rcpts < 1 || opt.warmup < 0)
        usage();
    {
        char *s = strdup(sizes), *save = NULL;
        for (char *p = strtok_r(s, ",", &save); p && opt.nsizes < 8; p = strtok_r(NULL, ",", &save))
            opt.sizes[opt.nsizes++] = parse_size(p);
        free(s);
    }
    if (opt.dkim_key) {
        if (!opt.dkim_domain || !opt.dkim_selector)
            die("--dkim-key needs --dkim-domain and --dkim-selector");
        FILE *f = fopen(opt.dkim_key, "r");
        if (!f)
            die("cannot open %s: %s", opt.dkim_key, strerror(errno));
        dkim_pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!dkim_pkey)
            die("cannot read a private key from %s", opt.dkim_key);
    }
    /* the "_" macro, as Postfix sends it */
    snprintf(underscore_macro, sizeof underscore_macro, "%s [%s]", opt.client_name, opt.ip);
    ncorpus = opt.nsizes * opt.variants;
    corpus = calloc((size_t)ncorpus, sizeof *corpus);
    /* interleave sizes: message i has size sizes[i % nsizes] */
    for (int v = 0; v < opt.variants; v++)
        for (int s = 0; s < opt.nsizes; s++)
            gen_message(&corpus[v * opt.nsizes + s], opt.sizes[s], v, s);
    if (opt.dump) {
        /* the first message of each size as a file (LF line ends: smtp-source -F adds CRLF) */
        for (int i = 0; i < opt.nsizes; i++) {
            char path[4096];
            if (opt.nsizes == 1)
                snprintf(path, sizeof path, "%s", opt.dump);
            else
                snprintf(path, sizeof path, "%s.%zu", opt.dump, opt.sizes[i]);
            FILE *f = fopen(path, "w");
            if (!f)
                die("cannot write %s: %s", path, strerror(errno));
            const message *m = &corpus[i];
            for (int j = 0; j < m->nh; j++)
                fprintf(f, "%s:%s\n", m->h[j].name, m->h[j].value);
            fputc('\n', f);
            for (size_t j = 0; j < m->blen; j++)
                if (m->body[j] != '\r')
                    fputc(m->body[j], f);
            fclose(f);
        }
        return 0;
    }
    total_msgs = opt.count + opt.warmup;
    for (int s = 0; s < S_N; s++)
        lat[s] = calloc((size_t)opt.count, sizeof(float));
    pthread_t *th = xmalloc(sizeof *th * (size_t)opt.conc);
    worker *w = calloc((size_t)opt.conc, sizeof *w);
    if (opt.barrier)
        pthread_barrier_init(&start_barrier, NULL, (unsigned)opt.conc + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (opt.warmup == 0)
        t_start_measure = now_us();
    double t_begin = now_us();
    for (int i = 0; i < opt.conc; i++) {
        w[i].id = i;
        if (pthread_create(&th[i], &attr, thread_main, &w[i]) != 0)
            die("pthread_create failed");
    }
    if (opt.barrier) {
        pthread_barrier_wait(&start_barrier);
        if (opt.warmup == 0)
            t_start_measure = now_us();
        if (!opt.quiet)
            fprintf(stderr, "barrier: %d connections open\n", opt.conc);
        if (opt.rss_pids)
            fprintf(stderr, "rss-open %ld\n", read_rss_kb(opt.rss_pids));
    }
    for (int i = 0; i < opt.conc; i++)
        pthread_join(th[i], NULL);
    double t_end = now_us();
    counters k = {0};
    for (int i = 0; i < opt.conc; i++) {
        counters *x = &w[i].k;
#define ADD(f) k.f += x->f
        ADD(msgs); ADD(accepted); ADD(rejected); ADD(tempfailed); ADD(discarded); ADD(other_final);
        ADD(errors); ADD(conns); ADD(skipped); ADD(insheader); ADD(addheader); ADD(chgheader);
        ADD(quarantine); ADD(replycode); ADD(replbody); ADD(envchg); ADD(progress);
        ADD(ar_dkim_pass); ADD(ar_spf_pass); ADD(ar_dmarc_pass); ADD(dkim_sigs); ADD(ar_headers);
        ADD(ar_dkim_fail); ADD(bytes);
#undef ADD
        if (!k.first_error[0] && x->first_error[0])
            memcpy(k.first_error, x->first_error, sizeof k.first_error);
        if (!k.last_reply[0] && x->last_reply[0])
            memcpy(k.last_reply, x->last_reply, sizeof k.last_reply);
    }
    long n = atomic_load(&slot_ctr);
    if (n > opt.count)
        n = opt.count;
    double elapsed = (t_end - t_start_measure) / 1e6;
    double rate = elapsed > 0 ? n / elapsed : 0;
    double p50[S_N], p99[S_N], mx[S_N], mean[S_N];
    for (int s = 0; s < S_N; s++) {
        qsort(lat[s], (size_t)n, sizeof(float), cmpf);
        double sum = 0;
        for (long i = 0; i < n; i++)
            sum += lat[s][i];
        mean[s] = n ? sum / n : 0;
        p50[s] = n ? lat[s][(long)(0.50 * (n - 1))] : 0;
        p99[s] = n ? lat[s][(long)(0.99 * (n - 1))] : 0;
        mx[s] = n ? lat[s][n - 1] : 0;
    }
    size_t avg = 0;
    for (int i = 0; i < ncorpus; i++)
        avg += corpus[i].total;
    avg /= (size_t)ncorpus;
    if (opt.json) {
        printf("{\"socket\":\"%s\",\"concurrency\":%d,\"messages\":%ld,\"warmup\":%ld,\"avg_size\":%zu,"
               "\"elapsed_s\":%.4f,\"wall_s\":%.4f,\"msgs_per_s\":%.2f,\"errors\":%ld,\"connections\":%ld,"
               "\"accepted\":%ld,\"rejected\":%ld,\"tempfailed\":%ld,\"discarded\":%ld,\"replycode\":%ld,"
               "\"insheader\":%ld,\"addheader\":%ld,\"chgheader\":%ld,\"quarantine\":%ld,"
               "\"dkim_signatures\":%ld,\"ar_headers\":%ld,\"ar_dkim_pass\":%ld,\"ar_dkim_fail\":%ld,"
               "\"ar_spf_pass\":%ld,\"ar_dmarc_pass\":%ld,",
               opt.sock, opt.conc, n, opt.warmup, avg, elapsed, (t_end - t_begin) / 1e6, rate, k.errors,
               k.conns, k.accepted, k.rejected, k.tempfailed, k.discarded, k.replycode, k.insheader,
               k.addheader, k.chgheader, k.quarantine, k.dkim_sigs, k.ar_headers, k.ar_dkim_pass,
               k.ar_dkim_fail, k.ar_spf_pass, k.ar_dmarc_pass);
        printf("\"first_error\":\"");
        for (const char *p = k.first_error; *p; p++)
            if (*p != '"' && *p != '\\')
                putchar(*p);
        printf("\",\"latency_us\":{");
        for (int s = 0; s < S_N; s++)
            printf("%s\"%s\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f,\"mean\":%.1f}", s ? "," : "",
                   stage_name[s], p50[s], p99[s], mx[s], mean[s]);
        printf("}}\n");
    } else {
        printf("milterload: %s, %d connections, %ld messages (+%ld warm-up), avg %zu bytes\n", opt.sock,
               opt.conc, n, opt.warmup, avg);
        printf("  %.1f messages/s (%.3f s), %ld errors%s%s\n", rate, elapsed, k.errors,
               k.first_error[0] ? ", first: " : "", k.first_error);
        printf("  verdicts: accept %ld, reject %ld, tempfail %ld, discard %ld, replycode %ld%s%s\n",
               k.accepted, k.rejected, k.tempfailed, k.discarded, k.replycode,
               k.last_reply[0] ? " (last: " : "", k.last_reply[0] ? k.last_reply : "");
        if (k.last_reply[0])
            printf("  )\n");
        printf("  edits: insheader %ld, addheader %ld, chgheader %ld, quarantine %ld; DKIM-Signature %ld; "
               "A-R %ld (dkim=pass %ld, dkim fail/err %ld, spf=pass %ld, dmarc=pass %ld)\n",
               k.insheader, k.addheader, k.chgheader, k.quarantine, k.dkim_sigs, k.ar_headers,
               k.ar_dkim_pass, k.ar_dkim_fail, k.ar_spf_pass, k.ar_dmarc_pass);
        printf("  %-12s %10s %10s %10s %10s  (microseconds)\n", "stage", "p50", "p99", "max", "mean");
        for (int s = 0; s < S_N; s++)
            printf("  %-12s %10.1f %10.1f %10.1f %10.1f\n", stage_name[s], p50[s], p99[s], mx[s], mean[s]);
    }
    return k.errors ? 1 : 0;
}
