/*
 * log_limit.h - rate-limited log lines, for events an outside peer can
 * cause at will (a refused connection, a connection cap reached): a flood
 * must not fill the disk, yet the operator must see that it happens and
 * how often.
 *
 * One mw_log_limit per kind of event (a static is fine: it carries its own
 * lock).  mw_log_limit_take() says whether this occurrence may be logged:
 * at most `burst` lines per window of `seconds`; the first line after a
 * window with dropped lines gets their number, to be appended to the line
 * ("; 1234 more like this not logged").  Thread-safe.
 */
#ifndef MW_UTIL_LOG_LIMIT_H
#define MW_UTIL_LOG_LIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

typedef struct mw_log_limit {
    pthread_mutex_t mu;
    unsigned        burst;        /* lines per window */
    unsigned        seconds;      /* window length */
    time_t          window;       /* start of the current window (monotonic s) */
    unsigned        used;         /* lines logged in it */
    unsigned long   dropped;      /* occurrences not logged since the last line */
} mw_log_limit;

#define MW_LOG_LIMIT_INIT(burst_, seconds_) \
    {.mu = PTHREAD_MUTEX_INITIALIZER, .burst = (burst_), .seconds = (seconds_)}

/* true: log this occurrence, and *dropped (may be NULL) is the number of
 * occurrences left unlogged since the last logged one (0 usually).
 * false: do not log it (it is counted). */
bool mw_log_limit_take(mw_log_limit *l, unsigned long *dropped);

#endif
