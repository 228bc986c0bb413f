/*
 * oversleep.c - LD_PRELOAD shim: every sleep of at least MW_OVERSLEEP_MIN_MS
 * (default 100) ms takes MW_OVERSLEEP_MS (default 1000) ms longer than asked.
 *
 * Purpose: a deterministic way to find test assertions that depend on how
 * long a sleep really lasts ("still cached after sleeping 1.3 s of a 2 s
 * TTL").  On a loaded CI machine or under ThreadSanitizer a sleep returns
 * late; this makes every long one return late.  Short polling sleeps (a loop
 * waiting for an event) are left alone.
 *
 * Interposed: nanosleep, clock_nanosleep (relative only), usleep, sleep.
 * The variable LD_PRELOAD is removed from the environment at load, so the
 * helpers a test starts (testdns.py, redis-server) run unaffected.
 *
 * Build and use (tests/sanitizers/stall.py --oversleep MS does both):
 *   cc -shared -fPIC -O2 -o /tmp/oversleep.so tests/sanitizers/oversleep.c -ldl
 *   LD_PRELOAD=/tmp/oversleep.so build/tests/test_core_dns_cache
 * Not for sanitizer builds (their runtimes interpose the same calls).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long extra_ms = 1000, min_ms = 100;

__attribute__((constructor)) static void init(void)
{
    const char *e = getenv("MW_OVERSLEEP_MS"), *m = getenv("MW_OVERSLEEP_MIN_MS");

    if (e != NULL)
        extra_ms = atol(e);
    if (m != NULL)
        min_ms = atol(m);
    unsetenv("LD_PRELOAD");
}

static struct timespec longer(const struct timespec *req)
{
    struct timespec t = *req;

    if (t.tv_sec * 1000 + t.tv_nsec / 1000000 >= min_ms) {
        t.tv_sec += extra_ms / 1000;
        t.tv_nsec += (extra_ms % 1000) * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
    }
    return t;
}

int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem)
{
    static int (*real)(clockid_t, int, const struct timespec *, struct timespec *);
    struct timespec t;

    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "clock_nanosleep");
    if (flags & TIMER_ABSTIME)
        return real(clk, flags, req, rem);
    t = longer(req);
    return real(clk, flags, &t, rem);
}

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem);

    if (r != 0) {
        errno = r;
        return -1;
    }
    return 0;
}

int usleep(useconds_t us)
{
    struct timespec t = {us / 1000000, (long)(us % 1000000) * 1000};
    return nanosleep(&t, NULL);
}

unsigned int sleep(unsigned int s)
{
    struct timespec t = {s, 0};
    nanosleep(&t, NULL);
    return 0;
}
