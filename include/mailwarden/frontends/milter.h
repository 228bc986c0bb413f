/*
 * milter.h - the milter front end: thin callbacks on our milter protocol 6
 * server (milter_server.h) that copy MTA data into an engine session and
 * turn the verdict into header edits and a reply.
 *
 * One milter per process (the glue keeps the engine in a set-once
 * static): mw_milter_open() once, then mw_milter_run() once.
 *
 * Signals: the milter installs no signal handling of its own; `serve`
 * decides what SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 do.
 */
#ifndef MW_FRONTENDS_MILTER_H
#define MW_FRONTENDS_MILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct mw_milter_options {
    const char *socket;       /* inet:PORT@HOST, inet6:PORT@HOST, unix:PATH */
    int         socket_mode;  /* permissions for a unix socket, e.g. 0660 */
    unsigned    timeout;      /* seconds to wait on the MTA between commands; 0: 7210 */
    unsigned    command_timeout;  /* seconds a command may take to arrive whole; 0: 30 */
    unsigned    max_connections;  /* open connections at most; 0: 256 */
} mw_milter_options;

/*
 * Bind the socket (call before dropping privileges).  The engine is borrowed and must outlive mw_milter_run().
 * false with a reason in err on failure.
 */
bool mw_milter_open(mw_engine *e, const mw_milter_options *o, char *err, size_t errlen);
/* Accept connections until mw_milter_stop().  Returns 0 on a clean stop. */
int mw_milter_run(void);
/* Stop accepting connections; connections in progress keep their thread
 * until the MTA ends them or the process exits (async-signal-unsafe; call
 * from a normal thread). */
void mw_milter_stop(void);

#endif
