/*
 * log_limit.c - rate-limited log lines (log_limit.h).
 */
#include "log_limit.h"

bool mw_log_limit_take(mw_log_limit *l, unsigned long *dropped)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    bool ok = false;
    pthread_mutex_lock(&l->mu);
    unsigned seconds = l->seconds ? l->seconds : 1;
    if (l->window == 0 || ts.tv_sec - l->window >= (time_t)seconds) {
        l->window = ts.tv_sec ? ts.tv_sec : 1;
        l->used = 0;
    }
    if (l->used < (l->burst ? l->burst : 1)) {
        l->used++;
        ok = true;
        if (dropped)
            *dropped = l->dropped;
        l->dropped = 0;
    } else {
        l->dropped++;
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}
