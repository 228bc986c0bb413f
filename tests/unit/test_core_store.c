/*
 * test_core_store.c - unit tests of the state store (core/store*.c): the
 * memory backend, and the redis backend against real redis-server and
 * redis-sentinel processes this test starts on free loopback ports.
 *
 *   - one GCRA case table, run on both backends with a fake clock: both
 *     must give exactly the expected answers;
 *   - counters, hashes, TTL expiry, delete, scan, bounded size;
 *   - all-or-nothing multi-key scripts; keys in different slots refused;
 *   - NOSCRIPT fallback (SCRIPT FLUSH), AUTH user + password, SELECT;
 *   - N threads racing on a burst-B bucket: exactly B allowed (both);
 *   - Redis killed / stopped mid-run: TEMPFAIL within the timeout, fast
 *     failure while backing off, recovery when Redis returns;
 *   - Sentinel failover: kill the master, the replica is promoted, the
 *     store follows without errors afterwards;
 *   - round trips: one exec with operations costs exactly one (an empty
 *     one none, a NOSCRIPT reload two more); mw_store_send costs none, its
 *     operations run before the next command and their owed replies (an
 *     error among them counted as a lost send) never mix with the next
 *     exec's answers.
 *
 * Environment: MW_REDIS_SERVER / MW_REDIS_SENTINEL (default redis-server,
 * redis-sentinel in PATH).  Without redis-server the redis parts are
 * reported as skipped (and fail, so CI notices).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "mwtest.h"
#include "mwtest_procs.h"
#include "store.h"

/* ------------------------------------------------------------------------ */
/* redis processes                                                          */


/* Redis dead or stopped, with connect and command timeouts of 200 ms: a
 * call must fail within those, not hang.  The bound is generous (a slow
 * sanitizer build on a loaded machine once took more than the 450 ms it
 * used to be); a call that waited for anything but the two timeouts, or
 * retried, would still exceed it. */
#define FAIL_FAST_MS 2000
/* Connect and command limits of the stores expected to work (base_config). */
#define WORKING_TIMEOUT_MS 5000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* A raw command on a fresh connection (test plumbing, not the code under test). */
static redisReply *raw(int port, const char *a0, const char *a1, const char *a2, const char *a3)
{
    const char *argv[4] = {a0, a1, a2, a3};
    int argc = a3 ? 4 : a2 ? 3 : a1 ? 2 : 1;
    mwt_proc p = {.pid = -1, .port = port};

    return mwt_redis_cmd(&p, argc, argv);
}

/* Killed as a crash would (SIGKILL); then its directory goes too. */
static void stop_proc(mwt_proc *p)
{
    mwt_proc_kill(p, SIGKILL);
    mwt_proc_stop(p);
}

/* ------------------------------------------------------------------------ */
/* stores                                                                    */

static _Atomic uint64_t fake_now = 1700000000000000ULL;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return atomic_load(&fake_now);
}

static void advance_ms(uint64_t ms) { atomic_fetch_add(&fake_now, ms * 1000); }

static void set_str(char **field, const char *v)
{
    free(*field);
    *field = mw_strdup(v);
}

static mw_config *base_config(void)
{
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(NULL, NULL, &errs);

    if (!MW_TEST_ASSERT(cfg != NULL)) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  %s\n", errs.msg[i]);
        exit(2);
    }
    mw_config_errors_free(&errs);
    /* Generous Redis limits for every store that must work: on a loaded
     * machine (ThreadSanitizer, other builds) a round trip can exceed the
     * 200/250 ms defaults, and one TEMPFAIL then backs the store off.  The
     * fail-fast tests set 200 ms themselves. */
    cfg->redis_connect_timeout_ms = WORKING_TIMEOUT_MS;
    cfg->redis_command_timeout_ms = WORKING_TIMEOUT_MS;
    return cfg;
}

static mw_store *memory_store(unsigned max_keys)
{
    mw_config *cfg = base_config();
    char err[200];
    mw_store *s;

    cfg->state_max_keys = max_keys;
    s = mw_store_create(cfg, err, sizeof err);
    mw_config_free(&cfg);
    mw_store_set_clock(s, fake_clock, NULL);
    return s;
}

static mw_store *redis_store_cfg(mw_config *cfg)
{
    char err[200];
    mw_store *s;

    cfg->state_backend = MW_STATE_REDIS;
    s = mw_store_create(cfg, err, sizeof err);
    mw_config_free(&cfg);
    mw_store_set_clock(s, fake_clock, NULL);
    return s;
}

static mw_store *redis_store(int port, const char *prefix)
{
    mw_config *cfg = base_config();

    cfg->redis_port = (unsigned)port;
    set_str(&cfg->redis_prefix, prefix);
    return redis_store_cfg(cfg);
}

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

struct gcra_out {
    mw_store_status st;
    long long allowed, remaining, retry_ms, reset_ms;
};

static struct gcra_out gcra1_at(mw_store *s, unsigned long long now_us, const char *key,
                                long long interval_us, long long burst, long long cost)
{
    struct gcra_out o = {0};
    char now[32], iv[32], b[32], c[32];
    const char *keys[] = {key};
    const char *args[] = {now, iv, b, c};
    mw_store_batch *bt = mw_store_batch_new();

    snprintf(now, sizeof now, "%llu", now_us);
    snprintf(iv, sizeof iv, "%lld", interval_us);
    snprintf(b, sizeof b, "%lld", burst);
    snprintf(c, sizeof c, "%lld", cost);
    mw_store_batch_script(bt, "gcra", keys, 1, args, 4);
    o.st = mw_store_exec(s, bt, NULL, 0);
    if (o.st == MW_STORE_OK)
        o.st = mw_store_batch_status(bt, 0);
    const mw_store_value *v = mw_store_batch_result(bt, 0);
    if (o.st == MW_STORE_OK && v->type == MW_STORE_ARRAY && v->nelem == 4) {
        o.allowed = v->elem[0].integer;
        o.remaining = v->elem[1].integer;
        o.retry_ms = v->elem[2].integer;
        o.reset_ms = v->elem[3].integer;
    } else if (o.st == MW_STORE_OK) {
        o.st = MW_STORE_ERROR;
    }
    mw_store_batch_free(&bt);
    return o;
}

static struct gcra_out gcra1(mw_store *s, const char *key, long long interval_us, long long burst,
                             long long cost)
{
    return gcra1_at(s, (unsigned long long)mw_store_now_us(s), key, interval_us, burst, cost);
}

/* Callers' clocks disagree: two threads (or two hosts) read the clock in
 * one order and reach the store in the other.  A burst of B must still admit
 * exactly B when the skew is within the tolerance (min(I/2, 100 ms)); before
 * the tolerance, the late call with the earlier clock lost the last unit. */
static void skew_cases(mw_store *s, const char *name)
{
    unsigned long long t = (unsigned long long)mw_store_now_us(s);
    long long iv = 10000000;   /* 6/1m, burst 3 */
    struct gcra_out o[5];

    o[0] = gcra1_at(s, t + 50000, "rl:{skew}:r", iv, 3, 1);
    o[1] = gcra1_at(s, t + 50000, "rl:{skew}:r", iv, 3, 1);
    o[2] = gcra1_at(s, t, "rl:{skew}:r", iv, 3, 1);            /* 50 ms behind: the last unit */
    o[3] = gcra1_at(s, t + 50000, "rl:{skew}:r", iv, 3, 1);    /* B used: refused */
    o[4] = gcra1_at(s, t, "rl:{skew}:r", iv, 3, 1);
    bool ok = o[0].allowed == 1 && o[1].allowed == 1 && o[2].allowed == 1 && o[2].remaining == 0 &&
              o[3].allowed == 0 && o[4].allowed == 0;
    if (!MW_TEST_ASSERT(ok))
        fprintf(stderr, "  %s skew: allowed %lld %lld %lld %lld %lld (want 1 1 1 0 0)\n", name,
                o[0].allowed, o[1].allowed, o[2].allowed, o[3].allowed, o[4].allowed);
    /* beyond the tolerance (200 ms behind): refused, as before */
    o[0] = gcra1_at(s, t + 200000, "rl:{skew2}:r", iv, 2, 1);
    o[1] = gcra1_at(s, t, "rl:{skew2}:r", iv, 2, 1);
    if (!MW_TEST_ASSERT(o[0].allowed == 1 && o[1].allowed == 0))
        fprintf(stderr, "  %s skew 200 ms: allowed %lld %lld (want 1 0)\n", name, o[0].allowed, o[1].allowed);
}

/* ------------------------------------------------------------------------ */
/* the shared GCRA case table                                                */

struct gcra_case {
    long long   advance_ms;      /* before this step */
    const char *key;
    long long   interval_us, burst, cost;
    long long   allowed, remaining, retry_ms, reset_ms;
};

/* 6/1m (I = 10 s), burst 3; and 2/1h (I = 30 min), burst 1.  Intervals are
 * long so that the Redis TTLs (real time) outlast the test steps. */
static const struct gcra_case cases[] = {
    {0, "rl:{a}:r", 10000000, 3, 1, 1, 2, 0, 10000},
    {0, "rl:{a}:r", 10000000, 3, 1, 1, 1, 0, 20000},
    {0, "rl:{a}:r", 10000000, 3, 1, 1, 0, 0, 30000},
    {0, "rl:{a}:r", 10000000, 3, 1, 0, 0, 10000, 30000},     /* burst spent */
    {5000, "rl:{a}:r", 10000000, 3, 1, 0, 0, 5000, 25000},   /* half an interval later */
    {5000, "rl:{a}:r", 10000000, 3, 1, 1, 0, 0, 30000},      /* one unit refilled */
    {100000, "rl:{a}:r", 10000000, 3, 2, 1, 1, 0, 20000},    /* idle: full again, cost 2 */
    {0, "rl:{a}:r", 10000000, 3, 2, 0, 1, 10000, 20000},     /* 1 left, 2 wanted */
    {0, "rl:{a}:r", 10000000, 3, 4, 0, 1, -1, 20000},        /* more than the burst: never */
    {0, "rl:{a}:r", 10000000, 3, 1, 1, 0, 0, 30000},
    {1, "rl:{a}:r", 10000000, 3, 1, 0, 0, 9999, 29999},      /* millisecond resolution */
    {0, "rl:{b}:slow", 1800000000, 1, 1, 1, 0, 0, 1800000},
    {60000, "rl:{b}:slow", 1800000000, 1, 1, 0, 0, 1740000, 1740000},
    {1740000, "rl:{b}:slow", 1800000000, 1, 1, 1, 0, 0, 1800000},
};

static void run_cases(mw_store *s, const char *name)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct gcra_case *c = &cases[i];
        advance_ms((uint64_t)c->advance_ms);
        struct gcra_out o = gcra1(s, c->key, c->interval_us, c->burst, c->cost);
        bool ok = o.st == MW_STORE_OK && o.allowed == c->allowed && o.remaining == c->remaining &&
                  o.retry_ms == c->retry_ms && o.reset_ms == c->reset_ms;
        if (!MW_TEST_ASSERT(ok))
            fprintf(stderr, "  %s case %zu: st %d allowed %lld remaining %lld retry %lld reset %lld\n",
                    name, i, o.st, o.allowed, o.remaining, o.retry_ms, o.reset_ms);
    }
}

/* ------------------------------------------------------------------------ */
/* generic operations, run on a store of either kind                         */

static void ops_basic(mw_store *s)
{
    mw_store_batch *b = mw_store_batch_new();
    size_t i0, i1, i2, i3, i4, i5, i6;

    i0 = mw_store_batch_get(b, "t:missing", 9);
    i1 = mw_store_batch_incr(b, "t:cnt", 5, 5, 2000);
    i2 = mw_store_batch_incr(b, "t:cnt", 5, -2, 2000);
    i3 = mw_store_batch_hincr(b, "t:h", 3, "1:g", 4, 5000);
    i4 = mw_store_batch_hincr(b, "t:h", 3, "1:b", 1, 5000);
    i5 = mw_store_batch_hgetall(b, "t:h", 3);
    i6 = mw_store_batch_get(b, "t:cnt", 5);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i0), MW_STORE_NOTFOUND);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i1)->integer, 5);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i2)->integer, 3);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i3)->integer, 4);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i4)->integer, 1);
    const mw_store_value *h = mw_store_batch_result(b, i5);
    MW_TEST_EQ_INT(h->type, MW_STORE_ARRAY);
    MW_TEST_EQ_INT(h->nelem, 4);
    long long g = 0, bad = 0;
    for (size_t k = 0; k + 1 < h->nelem; k += 2) {
        if (strcmp(h->elem[k].str, "1:g") == 0)
            g = atoll(h->elem[k + 1].str);
        if (strcmp(h->elem[k].str, "1:b") == 0)
            bad = atoll(h->elem[k + 1].str);
    }
    MW_TEST_EQ_INT(g, 4);
    MW_TEST_EQ_INT(bad, 1);
    MW_TEST_EQ_STR(mw_store_batch_result(b, i6)->str, "3");

    /* Wrong type: one operation fails, the batch answers. */
    mw_store_batch_reset(b);
    i0 = mw_store_batch_hgetall(b, "t:cnt", 5);
    i1 = mw_store_batch_get(b, "t:cnt", 5);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i0), MW_STORE_ERROR);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i1), MW_STORE_OK);

    /* Keys of one script in different slots: refused before sending. */
    mw_store_batch_reset(b);
    const char *keys[] = {"rl:{x}:a", "rl:{y}:a"};
    const char *args[] = {"1", "1", "1", "1", "1", "1", "1"};
    i0 = mw_store_batch_script(b, "gcra", keys, 2, args, 7);
    i1 = mw_store_batch_script(b, "no-such-script", keys, 1, args, 1);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i0), MW_STORE_ERROR);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i1), MW_STORE_ERROR);

    /* ... unless asked for (the first recipient's rate limits): still all
     * or nothing across the slots.  Burst 1 of one per hour each. */
    const char *mkeys[] = {"rl:{mx}:a", "rl:{my}:a"};
    const char *margs_big[] = {"1", "3600000000", "1", "1", "3600000000", "1", "2"};
    const char *margs[] = {"1", "3600000000", "1", "1", "3600000000", "1", "1"};
    mw_store_batch_reset(b);
    i0 = mw_store_batch_script_multi(b, "gcra", mkeys, 2, margs_big, 7);   /* my: 2 > burst */
    i1 = mw_store_batch_script_multi(b, "gcra", mkeys, 2, margs, 7);       /* nothing was charged */
    i2 = mw_store_batch_script_multi(b, "gcra", mkeys, 2, margs, 7);       /* both used up */
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    const long long want[3][2] = {{1, 0}, {1, 1}, {0, 0}};
    const size_t ops[3] = {i0, i1, i2};
    for (int k = 0; k < 3; k++) {
        const mw_store_value *v = mw_store_batch_result(b, ops[k]);
        if (MW_TEST_EQ_INT(mw_store_batch_status(b, ops[k]), MW_STORE_OK) &&
            MW_TEST_EQ_INT(v->nelem, 8)) {
            MW_TEST_EQ_INT(v->elem[0].integer, want[k][0]);   /* mx allowed */
            MW_TEST_EQ_INT(v->elem[4].integer, want[k][1]);   /* my allowed */
        }
    }

    /* Delete. */
    mw_store_batch_reset(b);
    i0 = mw_store_batch_del(b, "t:cnt", 5);
    i1 = mw_store_batch_del(b, "t:cnt", 5);
    i2 = mw_store_batch_get(b, "t:cnt", 5);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i0)->integer, 1);
    MW_TEST_EQ_INT(mw_store_batch_result(b, i1)->integer, 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, i2), MW_STORE_NOTFOUND);
    mw_store_batch_free(&b);
}

/* All or nothing: two buckets of one subject; the second refuses, the
 * first is not charged. */
static void ops_all_or_nothing(mw_store *s)
{
    mw_store_batch *b = mw_store_batch_new();
    char now[32];
    const char *keys[] = {"rl:{u=z}:wide", "rl:{u=z}:narrow"};

    snprintf(now, sizeof now, "%llu", (unsigned long long)mw_store_now_us(s));
    const char *args[] = {now, "1000000", "10", "1", "1000000", "1", "1"};
    for (int round = 0; round < 3; round++) {
        mw_store_batch_reset(b);
        mw_store_batch_script(b, "gcra", keys, 2, args, 7);
        MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
        const mw_store_value *v = mw_store_batch_result(b, 0);
        if (!MW_TEST_EQ_INT(v->nelem, 8))
            break;
        MW_TEST_EQ_INT(v->elem[0].integer, 1);                  /* wide allows */
        MW_TEST_EQ_INT(v->elem[1].integer, round == 0 ? 9 : 9); /* ... charged once only */
        MW_TEST_EQ_INT(v->elem[4].integer, round == 0 ? 1 : 0); /* narrow: 1 then refused */
    }
    mw_store_batch_free(&b);
}

static bool count_key(void *arg, const char *key, size_t keylen, long long ttl)
{
    (void)key;
    (void)keylen;
    (*(int *)arg)++;
    MW_TEST_ASSERT(ttl > 0 || ttl == -1);
    return true;
}

static void ops_scan(mw_store *s)
{
    int n = 0;
    /* Hour-long buckets: on Redis their TTL runs in real time, and the
     * scan (and the EXISTS after it) must find them however slow the run
     * (a 1 s bucket expired first under ThreadSanitizer). */
    struct gcra_out o = gcra1(s, "rl:{scan=1}:r", 3600000000LL, 5, 1);
    MW_TEST_EQ_INT(o.st, MW_STORE_OK);
    o = gcra1(s, "rl:{scan=2}:r", 3600000000LL, 5, 1);
    MW_TEST_EQ_INT(mw_store_scan(s, "rl:{scan=*", count_key, &n, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(n, 2);
}

/* ------------------------------------------------------------------------ */
/* memory backend                                                            */

static unsigned long long trips(mw_store *s)
{
    mw_store_stats st;
    mw_store_stats_get(s, &st);
    return st.round_trips;
}

static void ops_send(mw_store *s, bool redis)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_store_stats st0, st1;
    unsigned long long t0;

    mw_store_stats_get(s, &st0);
    t0 = st0.round_trips;
    /* Three operations, one exec: one round trip; an empty exec: none. */
    mw_store_batch_incr(b, "snd:{a}", 7, 1, 60000);
    mw_store_batch_incr(b, "snd:{s}", 7, 1, 60000);
    mw_store_batch_get(b, "snd:{none}", 10);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(trips(s) - t0, 1);
    mw_store_batch_reset(b);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(trips(s) - t0, 1);
    /* 150 sends (more than one connection may owe): no round trip.  One of
     * them fails (a hash operation on a string): a lost send. */
    for (int i = 0; i < 150; i++) {
        mw_store_batch_reset(b);
        mw_store_batch_incr(b, "snd:{a}", 7, 1, 60000);
        if (i == 70)
            mw_store_batch_hincr(b, "snd:{s}", 7, "f", 1, 60000);
        MW_TEST_EQ_INT(mw_store_send(s, b, NULL, 0), MW_STORE_OK);
    }
    MW_TEST_EQ_INT(trips(s) - t0, 1);
    /* The next exec reads the owed replies first, then its own answers. */
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "snd:{a}", 7);
    mw_store_batch_get(b, "snd:{none}", 10);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(trips(s) - t0, 2);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 0), MW_STORE_OK);
    MW_TEST_ASSERT(mw_store_batch_result(b, 0)->type == MW_STORE_STR &&
                   strcmp(mw_store_batch_result(b, 0)->str, "151") == 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 1), MW_STORE_NOTFOUND);
    MW_TEST_EQ_STR(mw_store_batch_error(b, 1), "");
    mw_store_stats_get(s, &st1);
    MW_TEST_EQ_INT(st1.sends - st0.sends, 150);
    MW_TEST_EQ_INT(st1.batches - st0.batches, 3);
    if (redis)
        MW_TEST_EQ_INT(st1.sends_lost - st0.sends_lost, 1);
    mw_store_batch_free(&b);
}

static void test_memory_send(void)
{
    mw_store *s = memory_store(1000);
    ops_send(s, false);
    mw_store_destroy(&s);
}

static void test_memory_basic(void)
{
    mw_store *s = memory_store(100000);

    MW_TEST_ASSERT(mw_store_is_memory(s));
    MW_TEST_EQ_STR(mw_store_describe(s), "memory");
    ops_basic(s);
    ops_all_or_nothing(s);
    ops_scan(s);
    mw_store_destroy(&s);
    MW_TEST_ASSERT(s == NULL);
}

static void test_memory_ttl(void)
{
    mw_store *s = memory_store(100000);
    mw_store_batch *b = mw_store_batch_new();

    /* incr: TTL from creation, not refreshed. */
    mw_store_batch_incr(b, "c", 1, 1, 1000);
    mw_store_exec(s, b, NULL, 0);
    advance_ms(600);
    mw_store_batch_reset(b);
    mw_store_batch_incr(b, "c", 1, 1, 1000);
    mw_store_exec(s, b, NULL, 0);
    MW_TEST_EQ_INT(mw_store_batch_result(b, 0)->integer, 2);
    advance_ms(500);
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "c", 1);
    mw_store_exec(s, b, NULL, 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 0), MW_STORE_NOTFOUND);

    /* gcra: the bucket vanishes exactly when it is full again. */
    struct gcra_out o = gcra1(s, "rl:{t}:r", 100000, 5, 3);
    MW_TEST_EQ_INT(o.reset_ms, 300);
    advance_ms(299);
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "rl:{t}:r", 8);
    mw_store_exec(s, b, NULL, 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 0), MW_STORE_OK);
    advance_ms(1);
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "rl:{t}:r", 8);
    mw_store_exec(s, b, NULL, 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 0), MW_STORE_NOTFOUND);
    mw_store_batch_free(&b);
    mw_store_destroy(&s);
}

static void test_memory_bounded(void)
{
    mw_store *s = memory_store(1000);   /* 64 shards x 16 */
    mw_store_batch *b = mw_store_batch_new();
    mw_store_stats st;
    char key[32];

    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k{%d}", i);
        mw_store_batch_incr(b, key, strlen(key), 1, 1000000 + (unsigned long long)i);
        if (mw_store_batch_count(b) == 100) {
            mw_store_exec(s, b, NULL, 0);
            mw_store_batch_reset(b);
        }
    }
    mw_store_stats_get(s, &st);
    MW_TEST_ASSERT(st.keys <= 64 * 16);
    MW_TEST_ASSERT(st.evictions >= 5000 - 64 * 16);
    /* The newest keys (latest expiry) survived, the oldest went first. */
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "k{4999}", 7);
    mw_store_batch_get(b, "k{0}", 4);
    mw_store_exec(s, b, NULL, 0);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_store_batch_status(b, 1), MW_STORE_NOTFOUND);
    mw_store_batch_free(&b);
    mw_store_destroy(&s);
}

static void test_cases_memory(void)
{
    mw_store *s = memory_store(100000);
    run_cases(s, "memory");
    skew_cases(s, "memory");
    mw_store_destroy(&s);
}

/* N threads racing on one burst-B bucket: exactly B allowed. */
#define RACE_THREADS 8
#define RACE_TRIES   50
#define RACE_BURST   37

struct race {
    mw_store  *s;
    atomic_int allowed, failed;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < RACE_TRIES; i++) {
        struct gcra_out o = gcra1(r->s, "rl:{race}:r", 3600000000LL, RACE_BURST, 1);
        if (o.st != MW_STORE_OK)
            atomic_fetch_add(&r->failed, 1);
        else if (o.allowed)
            atomic_fetch_add(&r->allowed, 1);
    }
    return NULL;
}

static void race(mw_store *s, const char *name)
{
    struct race r = {.s = s};
    pthread_t t[RACE_THREADS];

    atomic_init(&r.allowed, 0);
    atomic_init(&r.failed, 0);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&t[i], NULL, race_thread, &r);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(t[i], NULL);
    if (!MW_TEST_EQ_INT(atomic_load(&r.allowed), RACE_BURST) | !MW_TEST_EQ_INT(atomic_load(&r.failed), 0))
        fprintf(stderr, "  race on %s\n", name);
}

static void test_race_memory(void)
{
    mw_store *s = memory_store(100000);
    race(s, "memory");
    mw_store_destroy(&s);
}

/* ------------------------------------------------------------------------ */
/* redis backend                                                             */

static mwt_proc redis1 = {.pid = -1};

static void test_redis_basic(void)
{
    mw_store *s = redis_store(redis1.port, "mwtest:");
    redisReply *r;

    MW_TEST_ASSERT(!mw_store_is_memory(s));
    ops_basic(s);
    ops_all_or_nothing(s);
    ops_scan(s);
    /* The prefix is applied: the raw key carries it. */
    r = raw(redis1.port, "EXISTS", "mwtest:rl:{scan=1}:r", NULL, NULL);
    MW_TEST_ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r)
        freeReplyObject(r);
    /* TTL set by incr_ttl: PTTL positive. */
    mw_store_batch *b = mw_store_batch_new();
    mw_store_batch_incr(b, "t:ttl", 5, 1, 60000);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    mw_store_batch_free(&b);
    r = raw(redis1.port, "PTTL", "mwtest:t:ttl", NULL, NULL);
    MW_TEST_ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 50000 &&
                   r->integer <= 60000);
    if (r)
        freeReplyObject(r);
    mw_store_destroy(&s);
}

static void test_redis_send(void)
{
    mw_store *s = redis_store(redis1.port, "mwsend:");
    ops_send(s, true);
    /* A scan reads the owed replies first too. */
    mw_store_batch *b = mw_store_batch_new();
    mw_store_batch_incr(b, "snd:{a}", 7, 1, 60000);
    MW_TEST_EQ_INT(mw_store_send(s, b, NULL, 0), MW_STORE_OK);
    int n = 0;
    MW_TEST_EQ_INT(mw_store_scan(s, "snd:*", count_key, &n, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(n, 2);
    mw_store_batch_reset(b);
    mw_store_batch_get(b, "snd:{a}", 7);
    MW_TEST_EQ_INT(mw_store_exec(s, b, NULL, 0), MW_STORE_OK);
    MW_TEST_ASSERT(mw_store_batch_result(b, 0)->type == MW_STORE_STR &&
                   strcmp(mw_store_batch_result(b, 0)->str, "152") == 0);
    mw_store_batch_free(&b);
    mw_store_destroy(&s);
}

static void test_cases_redis(void)
{
    mw_store *s = redis_store(redis1.port, "mwcases:");
    redisReply *r;

    run_cases(s, "redis");
    skew_cases(s, "redis");
    /* The TTL of a bucket is the time until it is full again. */
    /* 100 s per unit, cost 3: 300 s; the PTTL read a moment later may be
     * anything above 200 s (it was 0.3 s with a 0.1 s margin: TSan lost it) */
    struct gcra_out o = gcra1(s, "rl:{ttl}:r", 100000000, 5, 3);
    MW_TEST_EQ_INT(o.reset_ms, 300000);
    r = raw(redis1.port, "PTTL", "mwcases:rl:{ttl}:r", NULL, NULL);
    MW_TEST_ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 200000 && r->integer <= 300000);
    if (r)
        freeReplyObject(r);
    mw_store_destroy(&s);
}

static void test_noscript(void)
{
    mw_store *s = redis_store(redis1.port, "mwns:");
    redisReply *r;

    MW_TEST_EQ_INT(gcra1(s, "rl:{ns}:r", 1000, 5, 1).st, MW_STORE_OK);
    r = raw(redis1.port, "SCRIPT", "FLUSH", NULL, NULL);
    if (r)
        freeReplyObject(r);
    unsigned long long t0 = trips(s);
    struct gcra_out o = gcra1(s, "rl:{ns}:r", 1000, 5, 1);
    MW_TEST_EQ_INT(o.st, MW_STORE_OK);
    MW_TEST_EQ_INT(o.allowed, 1);
    MW_TEST_EQ_INT(trips(s) - t0, 3);     /* EVALSHA, SCRIPT LOAD, EVALSHA */
    /* The script is cached again under the SHA-1 computed at build time. */
    const struct mw_store_script *sc = mw_store_script_find("gcra");
    r = raw(redis1.port, "SCRIPT", "EXISTS", sc->sha1, NULL);
    MW_TEST_ASSERT(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                   r->element[0]->integer == 1);
    if (r)
        freeReplyObject(r);
    mw_store_destroy(&s);
}

static void test_race_redis(void)
{
    mw_config *cfg = base_config();

    cfg->redis_port = (unsigned)redis1.port;
    set_str(&cfg->redis_prefix, "mwrace:");
    cfg->redis_pool_size = 4;          /* fewer connections than threads: they queue */
    mw_store *s = redis_store_cfg(cfg);
    race(s, "redis");
    mw_store_stats st;
    mw_store_stats_get(s, &st);
    MW_TEST_ASSERT(st.reconnects <= 4);
    mw_store_destroy(&s);
}

static void test_auth_db(void)
{
    mwt_proc p = {.pid = -1};
    const char *extra[] = {"--user", "mw", "on", ">s3cret", "~*", "&*", "+@all",
                           "--requirepass", "defaultpw", NULL};
    redisReply *r;

    if (!MW_TEST_ASSERT(mwt_redis_start_args(&p, "store", 0, extra))) {
        stop_proc(&p);
        return;
    }
    mw_config *cfg = base_config();
    cfg->redis_port = (unsigned)p.port;
    set_str(&cfg->redis_username, "mw");
    set_str(&cfg->redis_password, "wrong");
    mw_store *bad = redis_store_cfg(cfg);
    MW_TEST_EQ_INT(gcra1(bad, "rl:{a}:r", 1000, 5, 1).st, MW_STORE_TEMPFAIL);
    mw_store_destroy(&bad);

    cfg = base_config();
    cfg->redis_port = (unsigned)p.port;
    set_str(&cfg->redis_username, "mw");
    set_str(&cfg->redis_password, "s3cret");
    cfg->redis_db = 3;
    mw_store *good = redis_store_cfg(cfg);
    /* an hour-long bucket: the EXISTS below must not race its TTL (a 1 ms
     * one, as here before, expired first under ThreadSanitizer) */
    MW_TEST_EQ_INT(gcra1(good, "rl:{a}:r", 3600000000LL, 5, 1).st, MW_STORE_OK);
    mw_store_destroy(&good);

    /* Written into database 3. */
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p.port, tv);
    if (MW_TEST_ASSERT(c != NULL && !c->err)) {
        r = redisCommand(c, "AUTH mw s3cret");
        freeReplyObject(r);
        r = redisCommand(c, "SELECT 3");
        freeReplyObject(r);
        r = redisCommand(c, "EXISTS mw:rl:{a}:r");
        MW_TEST_ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
        freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    stop_proc(&p);
}

/* Redis killed mid-run: TEMPFAIL within the timeout; then fast while backing
 * off; and back to OK when Redis returns on the same port. */
static void test_redis_down(void)
{
    mwt_proc p = {.pid = -1};
    double t0, worst = 0;

    if (!MW_TEST_ASSERT(mwt_redis_start(&p, "store"))) {
        stop_proc(&p);
        return;
    }
    mw_config *cfg = base_config();
    cfg->redis_port = (unsigned)p.port;
    cfg->redis_connect_timeout_ms = 200;
    cfg->redis_command_timeout_ms = 200;
    mw_store *s = redis_store_cfg(cfg);
    /* Up first (200 ms limits here, for the fail-fast bounds below: retried
     * until it answers in time, rather than racing them once). */
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        up = gcra1(s, "rl:{d}:r", 1000, 100, 1).st == MW_STORE_OK;
        if (!up)
            mwt_sleep_ms(100);
    }
    MW_TEST_ASSERT(up);

    mwt_proc_kill(&p, SIGKILL);
    for (int i = 0; i < 50; i++) {
        t0 = now_ms();
        struct gcra_out o = gcra1(s, "rl:{d}:r", 1000, 100, 1);
        double dt = now_ms() - t0;
        MW_TEST_EQ_INT(o.st, MW_STORE_TEMPFAIL);
        worst = dt > worst ? dt : worst;
    }
    MW_TEST_ASSERT(worst < FAIL_FAST_MS);
    /* A send fails as fast. */
    t0 = now_ms();
    mw_store_batch *sb = mw_store_batch_new();
    mw_store_batch_incr(sb, "d:{s}", 5, 1, 1000);
    MW_TEST_EQ_INT(mw_store_send(s, sb, NULL, 0), MW_STORE_TEMPFAIL);
    MW_TEST_EQ_INT(mw_store_batch_status(sb, 0), MW_STORE_TEMPFAIL);
    mw_store_batch_free(&sb);
    MW_TEST_ASSERT(now_ms() - t0 < FAIL_FAST_MS);

    /* Stopped (not dead): the connection accepts, nothing answers. */
    int port = p.port;
    if (!MW_TEST_ASSERT(mwt_redis_start_args(&p, "store", port, NULL)))
        goto out;
    up = false;
    for (int i = 0; i < 600 && !up; i++) {     /* backoff runs out, the store reconnects */
        up = gcra1(s, "rl:{d}:r", 1000, 100, 1).st == MW_STORE_OK;
        if (!up)
            mwt_sleep_ms(50);
    }
    MW_TEST_ASSERT(up);
    kill(p.pid, SIGSTOP);
    worst = 0;
    for (int i = 0; i < 10; i++) {
        t0 = now_ms();
        MW_TEST_EQ_INT(gcra1(s, "rl:{d}:r", 1000, 100, 1).st, MW_STORE_TEMPFAIL);
        double dt = now_ms() - t0;
        worst = dt > worst ? dt : worst;
        mwt_sleep_ms(30);
    }
    MW_TEST_ASSERT(worst < FAIL_FAST_MS);
    kill(p.pid, SIGCONT);
    bool back = false;
    for (int i = 0; i < 600 && !back; i++) {      /* 30 s cap: event-driven */
        back = gcra1(s, "rl:{d}:r", 1000, 100, 1).st == MW_STORE_OK;
        if (!back)
            mwt_sleep_ms(50);
    }
    MW_TEST_ASSERT(back);
    mw_store_stats st;
    mw_store_stats_get(s, &st);
    MW_TEST_ASSERT(st.failures >= 60);
out:
    mw_store_destroy(&s);
    stop_proc(&p);
}

/* Sentinel: master + replica + one sentinel; kill the master; the sentinel
 * promotes the replica; the store follows and works without errors. */
static void test_sentinel_failover(void)
{
    mwt_proc master = {.pid = -1}, replica = {.pid = -1}, sentinel = {.pid = -1};
    char mport[16], spec[64];

    if (!MW_TEST_ASSERT(mwt_redis_start(&master, "store"))) {
        stop_proc(&master);
        return;
    }
    snprintf(mport, sizeof mport, "%d", master.port);
    const char *rep_args[] = {"--replicaof", "127.0.0.1", mport, NULL};
    if (!MW_TEST_ASSERT(mwt_redis_start_args(&replica, "store", 0, rep_args)) ||
        !MW_TEST_ASSERT(mwt_sentinel_start(&sentinel, "store", master.port, "mymaster")))
        goto out;
    /* Let the sentinel discover the replica (INFO every 10 s at first; it
     * learns replicas from the master's INFO right away, usually < 2 s). */
    for (int i = 0; i < 150; i++) {
        redisReply *r = raw(sentinel.port, "SENTINEL", "replicas", "mymaster", NULL);
        bool seen = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0;
        if (r)
            freeReplyObject(r);
        if (seen)
            break;
        mwt_sleep_ms(100);
    }

    mw_config *cfg = base_config();
    snprintf(spec, sizeof spec, "127.0.0.1:%d", sentinel.port);
    for (char **p = cfg->redis_sentinels; p && *p; p++)
        free(*p);
    free(cfg->redis_sentinels);
    cfg->redis_sentinels = mw_calloc(2, sizeof *cfg->redis_sentinels);
    cfg->redis_sentinels[0] = mw_strdup(spec);
    cfg->nredis_sentinels = 1;
    /* 2 s, not 300 ms: the 50 calls after recovery must all succeed however
     * loaded the machine; calls to the dead master fail at once (refused) */
    cfg->redis_connect_timeout_ms = 2000;
    cfg->redis_command_timeout_ms = 2000;
    mw_store *s = redis_store_cfg(cfg);
    MW_TEST_ASSERT(strstr(mw_store_describe(s), "sentinel") != NULL);
    for (int i = 0; i < 5; i++)
        MW_TEST_EQ_INT(gcra1(s, "rl:{f}:r", 3600000000LL, 1000, 1).st, MW_STORE_OK);

    mwt_proc_kill(&master, SIGKILL);
    double t0 = now_ms();
    int fails = 0;
    bool recovered = false;
    while (now_ms() - t0 < 30000) {
        struct gcra_out o = gcra1(s, "rl:{f}:r", 3600000000LL, 1000, 1);
        if (o.st == MW_STORE_OK) {
            recovered = true;
            break;
        }
        fails++;
        mwt_sleep_ms(100);
    }
    fprintf(stderr, "  failover: %d failed calls, %.1f s\n", fails, (now_ms() - t0) / 1000);
    MW_TEST_ASSERT(recovered);
    MW_TEST_ASSERT(fails > 0);
    /* No errors after recovery; the writes land on the promoted replica. */
    int errors = 0;
    for (int i = 0; i < 50; i++)
        errors += gcra1(s, "rl:{f}:r", 3600000000LL, 1000, 1).st != MW_STORE_OK;
    MW_TEST_EQ_INT(errors, 0);
    redisReply *r = raw(replica.port, "ROLE", NULL, NULL, NULL);
    MW_TEST_ASSERT(r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                   strcmp(r->element[0]->str, "master") == 0);
    if (r)
        freeReplyObject(r);
    r = raw(replica.port, "EXISTS", "mw:rl:{f}:r", NULL, NULL);
    MW_TEST_ASSERT(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r)
        freeReplyObject(r);
    mw_store_destroy(&s);
out:
    stop_proc(&sentinel);
    stop_proc(&replica);
    stop_proc(&master);
}

static void test_config_same(void)
{
    mw_config *a = base_config(), *b = base_config();

    MW_TEST_ASSERT(mw_store_config_same(a, b));
    b->redis_port = 7000;
    MW_TEST_ASSERT(mw_store_config_same(a, b));      /* memory: redis keys do not matter */
    a->state_backend = b->state_backend = MW_STATE_REDIS;
    MW_TEST_ASSERT(!mw_store_config_same(a, b));
    mw_config_free(&a);
    mw_config_free(&b);
}

static void cleanup(void)
{
    stop_proc(&redis1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test_core_store", "mail", MW_LOG_WARN);
    atexit(cleanup);

    MW_TEST_RUN(test_config_same);
    MW_TEST_RUN(test_memory_basic);
    MW_TEST_RUN(test_memory_send);
    MW_TEST_RUN(test_memory_ttl);
    MW_TEST_RUN(test_memory_bounded);
    MW_TEST_RUN(test_cases_memory);
    MW_TEST_RUN(test_race_memory);

    if (!MW_TEST_ASSERT(mwt_redis_start(&redis1, "store"))) {
        fprintf(stderr, "redis-server did not start: the redis tests cannot run\n");
        return MW_TEST_SUMMARY();
    }
    MW_TEST_RUN(test_redis_basic);
    MW_TEST_RUN(test_redis_send);
    MW_TEST_RUN(test_cases_redis);
    MW_TEST_RUN(test_noscript);
    MW_TEST_RUN(test_race_redis);
    MW_TEST_RUN(test_auth_db);
    MW_TEST_RUN(test_redis_down);
    MW_TEST_RUN(test_sentinel_failover);
    return MW_TEST_SUMMARY();
}
