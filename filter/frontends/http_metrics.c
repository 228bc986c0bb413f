/*
 * http_metrics.c - `GET /metrics` over libmicrohttpd (http_metrics.h).
 *
 * The socket is ours (bound in open, before the privilege drop) and handed
 * to libmicrohttpd with MHD_OPTION_LISTEN_SOCKET at start.  The server runs
 * one internal thread with poll(2) rather than select(2): a busy milter
 * holds many descriptors and select cannot watch one above FD_SETSIZE.
 * Every request is answered from the handler's first call (GET has no
 * body; a request that has one is refused), so no per-request state exists.
 */
#include "http_metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"

static struct {
    mw_engine         *engine;
    int                fd;          /* listening socket, -1 when none */
    bool               v6;
    unsigned           port;
    unsigned           max_conn, timeout_s;
    struct MHD_Daemon *d;
} hm = {.fd = -1};

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    mw_warn("metrics endpoint: %s", line);
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
    if (strcmp(url, "/metrics") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", head);

    if (hm.engine != NULL) {
        mw_metric_gauge_set(MW_M_MESSAGES_IN_FLIGHT, 0, (int64_t)mw_engine_active_messages(hm.engine));
        mw_metric_gauge_set(MW_M_CONFIG_GENERATION, 0, (int64_t)mw_engine_generation(hm.engine));
    }
    mw_buf b = MW_BUF_INIT;
    mw_metrics_render(&b);
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
    hm.d = MHD_start_daemon(flags, 0, NULL, NULL, handler, NULL,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)hm.fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)hm.max_conn,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)hm.max_conn,
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
}

unsigned mw_http_metrics_port(void)
{
    return hm.port;
}
