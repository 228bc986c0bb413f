/*
 * http_metrics.c - `GET /metrics` (and a `/` page linking it) over libmicrohttpd
 * (http_metrics.h).
 *
 * The socket is ours (bound in open, before the privilege drop) and handed
 * to libmicrohttpd with MHD_OPTION_LISTEN_SOCKET at start.  The server runs
 * one internal thread with poll(2) rather than select(2): a busy milter
 * holds many descriptors and select cannot watch one above FD_SETSIZE.
 * Every request is answered from the handler's first call (GET has no
 * body; a request that has one is refused), so no per-request state exists.
 *
 * Limits.  libmicrohttpd's own connection limit stops polling the listening
 * socket (new connections then hang in the backlog), and its idle timeout
 * is reset by every byte, so a client trickling a request holds its slot
 * for ever.  So the cap is ours, in the accept-policy callback: connections
 * are tracked from the connection-notify callback; when one more arrives,
 * connections older than timeout_s are shut down (their slot is free again;
 * libmicrohttpd closes them on its next poll), and if max_connections
 * (ceil(max/2) from one address) are still live, the new one is closed at
 * once, logged (rate-limited) and counted.  libmicrohttpd's own limits are
 * set to twice ours, so they never refuse first.
 */
#include "http_metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cidr.h"
#include "log.h"
#include "log_limit.h"
#include "metrics.h"
#include "metrics_process.h"

/* A connection being served (see Limits above). */
typedef struct tracked {
    struct MHD_Connection *conn;    /* NULL: free entry */
    int                    fd;
    mw_addr                peer;
    struct timespec        since;
    bool                   reaped;  /* shut down, waiting for libmicrohttpd to close it */
} tracked;

static struct {
    mw_engine         *engine;
    int                fd;          /* listening socket, -1 when none */
    bool               v6;
    unsigned           port;
    unsigned           max_conn, timeout_s;
    struct MHD_Daemon *d;
    pthread_mutex_t    mu;          /* conns (the callbacks run on the server thread; stop does not) */
    tracked           *conns;       /* 2 * max_conn entries */
} hm = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static mw_log_limit refused_log = MW_LOG_LIMIT_INIT(5, 60);
static mw_log_limit mhd_log_limit = MW_LOG_LIMIT_INIT(10, 60);

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    unsigned long dropped = 0;
    if (mw_log_limit_take(&mhd_log_limit, &dropped))
        mw_warn("metrics endpoint: %s (%lu more libmicrohttpd lines not logged)", line, dropped);
}

static bool sockaddr_to_addr(const struct sockaddr *sa, socklen_t len, mw_addr *a)
{
    memset(a, 0, sizeof *a);
    if (sa != NULL && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        a->family = AF_INET;
        memcpy(a->bytes, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa != NULL && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        a->family = AF_INET6;
        memcpy(a->bytes, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        mw_addr_unmap(a);
        return true;
    }
    return false;
}

static bool older_than(const struct timespec *since, const struct timespec *now, unsigned s)
{
    return now->tv_sec - since->tv_sec > (time_t)s ||
           (now->tv_sec - since->tv_sec == (time_t)s && now->tv_nsec >= since->tv_nsec);
}

/* A new connection: make room by shutting down connections past the
 * deadline, then accept it if the cap (and the per-address cap) allow. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *sa, socklen_t len)
{
    (void)cls;
    mw_addr peer;
    bool ip = sockaddr_to_addr(sa, len, &peer);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned live = 0, same = 0, per_ip = (hm.max_conn + 1) / 2;
    pthread_mutex_lock(&hm.mu);
    for (unsigned i = 0; hm.conns && i < 2 * hm.max_conn; i++) {
        tracked *t = &hm.conns[i];
        if (!t->conn || t->reaped)
            continue;
        if (older_than(&t->since, &now, hm.timeout_s)) {
            shutdown(t->fd, SHUT_RDWR);   /* libmicrohttpd sees the end and closes it */
            t->reaped = true;
            mw_metric_inc(MW_M_LISTENER_TIMEOUTS, MW_ML_LSN_METRICS, 0);
            continue;
        }
        live++;
        same += ip && t->peer.family == peer.family && memcmp(t->peer.bytes, peer.bytes, 16) == 0;
    }
    pthread_mutex_unlock(&hm.mu);
    if (live < hm.max_conn && same < per_ip)
        return MHD_YES;
    mw_metric_inc(MW_M_LISTENER_REFUSED, MW_ML_LSN_METRICS, MW_ML_REFUSE_LIMIT);
    unsigned long dropped = 0;
    if (mw_log_limit_take(&refused_log, &dropped)) {
        char buf[64];
        mw_warn("metrics endpoint: %u connections open (%u from %s; metrics.max_connections %u); "
                "closing a new one (%lu more refusals not logged)", live, same,
                ip ? mw_addr_format(&peer, buf, sizeof buf) : "?", hm.max_conn, dropped);
    }
    return MHD_NO;
}

static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)socket_context;
    pthread_mutex_lock(&hm.mu);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        for (unsigned i = 0; fi && i < 2 * hm.max_conn; i++)
            if (!hm.conns[i].conn) {
                tracked *t = &hm.conns[i];
                t->conn = c;
                t->fd = fi->connect_fd;
                t->reaped = false;
                if (!ai || !sockaddr_to_addr(ai->client_addr, sizeof(struct sockaddr_in6), &t->peer))
                    memset(&t->peer, 0, sizeof t->peer);
                clock_gettime(CLOCK_MONOTONIC, &t->since);
                break;
            }
    } else {
        /* called before libmicrohttpd closes the socket: no shutdown() can
         * reach a reused descriptor */
        for (unsigned i = 0; i < 2 * hm.max_conn; i++)
            if (hm.conns[i].conn == c)
                hm.conns[i].conn = NULL;
    }
    pthread_mutex_unlock(&hm.mu);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text, bool head)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(head ? 0 : strlen(text), (void *)text,
                                                             MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* GET /: what this port is, and the link a browser follows (the convention
 * of Prometheus exporters; scrapers never ask for it). */
static enum MHD_Result index_page(struct MHD_Connection *c, bool head)
{
    static const char page[] =
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mailwarden metrics</title></head>\n"
        "<body><h1>mailwarden</h1>\n<p>Prometheus metrics: <a href=\"/metrics\">/metrics</a></p>\n"
        "</body></html>\n";
    struct MHD_Response *r = MHD_create_response_from_buffer(head ? 0 : sizeof page - 1, (void *)page,
                                                             MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)con_cls;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!head && strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        *upload_data_size = 0;
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics is served\n", false);
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return reply(c, MHD_HTTP_BAD_REQUEST, "no request body expected\n", head);
    }
    if (strcmp(url, "/") == 0)
        return index_page(c, head);
    if (strcmp(url, "/metrics") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", head);

    if (hm.engine != NULL) {
        mw_metric_gauge_set(MW_M_MESSAGES_IN_FLIGHT, 0, (int64_t)mw_engine_active_messages(hm.engine));
        mw_metric_gauge_set(MW_M_CONFIG_GENERATION, 0, (int64_t)mw_engine_generation(hm.engine));
    }
    mw_buf b = MW_BUF_INIT;
    mw_metrics_render(&b);
    mw_metrics_render_process(&b);
    size_t len = b.len;
    char *data = mw_buf_steal(&b);
    struct MHD_Response *r;
    if (head) {
        free(data);
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
        if (r == NULL)
            free(data);
    }
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, MW_METRICS_CONTENT_TYPE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

bool mw_http_metrics_open(mw_engine *e, const mw_http_metrics_options *o, char *err, size_t errlen)
{
    if (o == NULL || o->listen == NULL || *o->listen == '\0')
        return true;
    if (hm.fd >= 0) {
        snprintf(err, errlen, "metrics endpoint already open");
        return false;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    char why[200];
    if (!mw_metrics_parse_listen(o->listen, &ss, &sl, why, sizeof why)) {
        snprintf(err, errlen, "metrics.listen \"%s\": %s", o->listen, why);
        return false;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "metrics.listen %s: socket: %s", o->listen, strerror(errno));
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 16) != 0) {
        snprintf(err, errlen, "metrics.listen %s: %s", o->listen, strerror(errno));
        close(fd);
        return false;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&bound, &bl) == 0)
        port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    hm.engine = e;
    hm.fd = fd;
    hm.v6 = ss.ss_family == AF_INET6;
    hm.port = port;
    hm.max_conn = o->max_connections ? o->max_connections : 8;
    hm.timeout_s = o->timeout_s ? o->timeout_s : 10;
    hm.conns = calloc(2 * (size_t)hm.max_conn, sizeof *hm.conns);
    if (hm.conns == NULL) {
        snprintf(err, errlen, "metrics endpoint: out of memory");
        close(fd);
        hm.fd = -1;
        return false;
    }
    mw_metric_gauge_set(MW_M_START_TIME, 0, (int64_t)time(NULL));
    return true;
}

bool mw_http_metrics_start(char *err, size_t errlen)
{
    if (hm.fd < 0 || hm.d != NULL)
        return true;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (hm.v6)
        flags |= MHD_USE_IPv6;
    /* the logger first: options before it would log through MHD's own (stderr) */
    hm.d = MHD_start_daemon(flags, 0, accept_policy, NULL, handler, NULL,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)hm.fd,
                            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(2 * hm.max_conn),
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)(2 * hm.max_conn),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)hm.timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
                            MHD_OPTION_END);
    if (hm.d == NULL) {
        snprintf(err, errlen, "metrics endpoint: cannot start the HTTP server (port %u)", hm.port);
        return false;
    }
    mw_info("metrics endpoint listening on port %u (GET /metrics)", hm.port);
    return true;
}

void mw_http_metrics_stop(void)
{
    if (hm.d != NULL) {
        MHD_stop_daemon(hm.d);   /* closes the listening socket it was given */
        hm.d = NULL;
        hm.fd = -1;
    }
    if (hm.fd >= 0) {
        close(hm.fd);
        hm.fd = -1;
    }
    hm.port = 0;
    hm.engine = NULL;
    pthread_mutex_lock(&hm.mu);
    free(hm.conns);
    hm.conns = NULL;
    pthread_mutex_unlock(&hm.mu);
}

unsigned mw_http_metrics_port(void)
{
    return hm.port;
}
