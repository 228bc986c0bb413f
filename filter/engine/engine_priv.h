/*
 * engine_priv.h (engine-private) - what session.c needs from engine.c.
 */
#ifndef MW_ENGINE_PRIV_H
#define MW_ENGINE_PRIV_H

#include "engine.h"
#include "report_failure.h"
#include "runtime.h"

/* Take a reference to the current runtime; message=true also counts an
 * in-flight message (for graceful shutdown). */
mw_runtime *mw_engine_acquire(mw_engine *e, bool message);
/* Drop it (and the in-flight count when message=true).  NULLs *rt. */
void mw_engine_release(mw_engine *e, mw_runtime **rt, bool message);
/* The message ended (verdict given): drop the in-flight count only. */
void mw_engine_message_done(mw_engine *e);
unsigned long mw_engine_next_session(mw_engine *e);
/* The failure report rate limiter (report_failure.h), shared by all
 * sessions and kept across reloads; owned by the engine. */
mw_failrep_limiter *mw_engine_failrep_limiter(mw_engine *e);

#endif
