/*
 * http_metrics.h - the Prometheus endpoint: `GET /metrics` (and HEAD) over
 * plain HTTP, served by libmicrohttpd from one internal polling thread.
 *
 * What it serves: mw_metrics_render() (core/metrics.h), after refreshing
 * the gauges that are read from the engine at scrape time (messages in
 * flight, config generation).  Any other path is 404, any other method
 * 405; request bodies are refused.  No TLS and no authentication: bind it
 * to loopback or a management network (metrics.listen).
 *
 * Limits: at most max_connections concurrent connections, ceil(max/2) from
 * one address; when one more arrives, connections older than timeout_s are
 * closed to make room, and if none is, the new one is closed at once
 * (logged, rate-limited; counted in mailwarden_listener_refused_total).
 * Idle connections are closed after timeout_s, and each connection gets a
 * fixed 32 KiB memory pool (request line and headers included).
 *
 * Lifecycle (process-global, like the milter and Exim front ends):
 *   mw_http_metrics_open()   binds and listens (before dropping privileges,
 *                            so a port below 1024 works too)
 *   mw_http_metrics_start()  starts the server thread (after the privilege
 *                            drop, with the worker's signals blocked:
 *                            the thread inherits the mask)
 *   mw_http_metrics_stop()   stops the thread and closes the socket
 * The engine is borrowed and must outlive mw_http_metrics_stop().
 * A changed metrics.listen takes effect at the next restart, not on reload.
 */
#ifndef MW_FRONTENDS_HTTP_METRICS_H
#define MW_FRONTENDS_HTTP_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct mw_http_metrics_options {
    const char *listen;            /* "ADDR:PORT", "[ADDR6]:PORT", "PORT" (loopback); NULL/"" = off */
    unsigned    max_connections;   /* 0 = 8 */
    unsigned    timeout_s;         /* idle connection timeout; 0 = 10 */
} mw_http_metrics_options;

/* Bind and listen.  listen empty: nothing to do, true (start and stop are
 * then no-ops).  false with a reason in err (nothing is left open). */
bool mw_http_metrics_open(mw_engine *e, const mw_http_metrics_options *o, char *err, size_t errlen);
/* Start serving.  true when off.  false with a reason in err. */
bool mw_http_metrics_start(char *err, size_t errlen);
/* Stop serving and close the socket.  Safe when never opened or started. */
void mw_http_metrics_stop(void);
/* The bound port (useful with port 0 in tests), 0 when not open. */
unsigned mw_http_metrics_port(void);

#endif
