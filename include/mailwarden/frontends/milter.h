/*
 * milter.h - the libmilter front end: thin callbacks that copy MTA data
 * into an engine session and turn the verdict into smfi_* calls.
 *
 * libmilter keeps process-global state, so there is one milter per
 * process: mw_milter_open() once, then mw_milter_run() once.
 *
 * Signals: libmilter's own signal thread treats SIGHUP like SIGTERM (it
 * stops the milter).  That is why `serve` runs the milter in a worker
 * process under a small supervisor that turns SIGHUP into SIGUSR1 for the
 * worker; SIGUSR1 is untouched by libmilter.
 */
#ifndef MW_FRONTENDS_MILTER_H
#define MW_FRONTENDS_MILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct mw_milter_options {
    const char *socket;       /* inet:PORT@HOST, inet6:PORT@HOST, unix:PATH */
    int         socket_mode;  /* permissions for a unix socket, e.g. 0660 */
    unsigned    timeout;      /* seconds libmilter waits on the MTA */
} mw_milter_options;

/*
 * Register the callbacks and bind the socket (call before dropping
 * privileges).  The engine is borrowed and must outlive mw_milter_run().
 * false with a reason in err on failure.
 */
bool mw_milter_open(mw_engine *e, const mw_milter_options *o, char *err, size_t errlen);
/* Run until libmilter is stopped (SIGTERM/SIGINT or mw_milter_stop()).
 * Returns 0 on a clean stop. */
int mw_milter_run(void);
/* Ask libmilter to stop accepting connections (async-signal-unsafe; call
 * from a normal thread). */
void mw_milter_stop(void);

#endif
