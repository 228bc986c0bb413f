/*
 * engine.c - the engine object: current runtime, reload, in-flight count.
 *
 * The current runtime pointer is swapped under a mutex; a message takes a
 * reference when it starts (mw_engine_acquire) and drops it when it ends,
 * so the old runtime lives exactly as long as the last message using it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "engine_priv.h"
#include "log.h"

struct mw_engine {
    pthread_mutex_t lock;
    pthread_cond_t  idle;
    mw_runtime     *current;
    unsigned        generation;
    unsigned        active;       /* messages in flight */
    unsigned long   next_session;
    bool            draining;
    mw_failrep_limiter *failrep;  /* failure reports per destination (survives reloads) */
};

mw_engine *mw_engine_new(void)
{
    mw_engine *e = mw_calloc(1, sizeof *e);
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->idle, &ca);
    pthread_condattr_destroy(&ca);
    e->failrep = mw_failrep_limiter_create();
    return e;
}

mw_engine *mw_engine_create(mw_config *cfg, char *err, size_t errlen)
{
    mw_engine *e = mw_engine_new();
    if (!mw_engine_reload(e, cfg, err, errlen)) {
        mw_engine_destroy(&e);
        return NULL;
    }
    return e;
}

bool mw_engine_reload(mw_engine *e, mw_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&e->lock);
    unsigned gen = e->generation + 1;
    mw_runtime *prev = e->current;   /* NULL for the first config (mw_engine_new) */
    if (prev)
        mw_runtime_ref(prev);
    pthread_mutex_unlock(&e->lock);
    /* Build outside the lock: it may take a while (resolver set-up). */
    mw_runtime *rt = mw_runtime_build(cfg, gen, prev, err, errlen);
    mw_runtime_unref(&prev);
    if (!rt)
        return false;
    pthread_mutex_lock(&e->lock);
    mw_runtime *old = e->current;
    e->current = rt;
    e->generation = gen;
    pthread_mutex_unlock(&e->lock);
    mw_runtime_unref(&old);
    return true;
}

void mw_engine_destroy(mw_engine **pe)
{
    mw_engine *e = *pe;
    if (!e)
        return;
    mw_runtime_unref(&e->current);
    mw_failrep_limiter_destroy(&e->failrep);
    pthread_cond_destroy(&e->idle);
    pthread_mutex_destroy(&e->lock);
    free(e);
    *pe = NULL;
}

void mw_engine_set_draining(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    e->draining = true;
    pthread_mutex_unlock(&e->lock);
}

bool mw_engine_draining(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    bool d = e->draining;
    pthread_mutex_unlock(&e->lock);
    return d;
}

unsigned mw_engine_generation(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    unsigned g = e->generation;
    pthread_mutex_unlock(&e->lock);
    return g;
}

unsigned mw_engine_active_messages(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    unsigned n = e->active;
    pthread_mutex_unlock(&e->lock);
    return n;
}

bool mw_engine_wait_idle(mw_engine *e, unsigned timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    while (e->active > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&e->idle, &e->lock, &dl);
    bool idle = e->active == 0;
    pthread_mutex_unlock(&e->lock);
    return idle;
}

mw_runtime *mw_engine_acquire(mw_engine *e, bool message)
{
    pthread_mutex_lock(&e->lock);
    mw_runtime *rt = e->current;
    mw_runtime_ref(rt);
    if (message)
        e->active++;
    pthread_mutex_unlock(&e->lock);
    return rt;
}

void mw_engine_message_done(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    if (e->active > 0 && --e->active == 0)
        pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->lock);
}

void mw_engine_release(mw_engine *e, mw_runtime **rt, bool message)
{
    mw_runtime_unref(rt);
    if (!message)
        return;
    pthread_mutex_lock(&e->lock);
    if (e->active > 0 && --e->active == 0)
        pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->lock);
}

mw_failrep_limiter *mw_engine_failrep_limiter(mw_engine *e)
{
    return e->failrep;   /* set once at creation; the limiter locks itself */
}

unsigned long mw_engine_next_session(mw_engine *e)
{
    pthread_mutex_lock(&e->lock);
    unsigned long n = ++e->next_session;
    pthread_mutex_unlock(&e->lock);
    return n;
}
