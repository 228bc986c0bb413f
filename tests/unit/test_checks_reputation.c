/*
 * test_checks_reputation.c - unit tests of sender reputation (checks/
 * reputation.c) on the memory store with a fake clock and on a real
 * redis-server started by this test:
 *
 *   - good runs raise a subject's score, bad runs lower it, the network
 *     subject mixes its addresses, domains are scored together;
 *   - below the minimum sample size a score is unknown;
 *   - old outcomes decay (half-life) and leave the window;
 *   - memory and Redis give the same scores for the same history;
 *   - Redis keeps a subject's hash bounded (old buckets pruned) and has a
 *     TTL; Redis down gives TEMPFAIL and unknown scores;
 *   - prepare/finish on a shared batch: one exec (one round trip by the
 *     store's counter) for a record and a score together; a record sent
 *     without waiting costs none and counts for the next score.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "mwtest.h"
#include "mwtest_procs.h"
#include "reputation.h"
#include "store.h"

static double fabs_(double x) { return x < 0 ? -x : x; }
#define fabs fabs_

static mwt_proc redis_srv;

static redisReply *raw2(const char *a0, const char *a1)
{
    const char *argv[] = {a0, a1};
    return mwt_redis_cmd(&redis_srv, a1 ? 2 : 1, argv);
}

static _Atomic uint64_t fake_now = 1700000000000000ULL;
static uint64_t fake_clock(void *arg) { (void)arg; return atomic_load(&fake_now); }
static void advance_h(uint64_t h) { atomic_fetch_add(&fake_now, h * 3600u * 1000000u); }

struct env {
    mw_config     *cfg;
    mw_store      *store;
    mw_reputation *rep;
};

static bool env_open(struct env *e, bool redis, const char *prefix)
{
    mw_config_errors errs = {0};
    char err[200];

    memset(e, 0, sizeof *e);
    e->cfg = mw_config_load(NULL, NULL, &errs);
    if (!MW_TEST_ASSERT(e->cfg != NULL))
        return false;
    MW_TEST_ASSERT(mw_reputation_create(e->cfg, NULL) == NULL);   /* disabled by default */
    e->cfg->reputation_enabled = true;
    e->cfg->reputation_window_s = 7 * 86400;
    e->cfg->reputation_bucket_s = 6 * 3600;
    e->cfg->reputation_half_life_s = 86400;
    e->cfg->reputation_min_samples = 5;
    if (redis) {
        e->cfg->state_backend = MW_STATE_REDIS;
        e->cfg->redis_port = (unsigned)redis_srv.port;
        free(e->cfg->redis_prefix);
        e->cfg->redis_prefix = mw_strdup(prefix);
        /* generous: every call here must succeed on a loaded machine (the
         * Redis-down part fails at once: the server is gone, refused) */
        e->cfg->redis_connect_timeout_ms = 5000;
        e->cfg->redis_command_timeout_ms = 5000;
    }
    e->store = mw_store_create(e->cfg, err, sizeof err);
    mw_store_set_clock(e->store, fake_clock, NULL);
    e->rep = mw_reputation_create(e->cfg, e->store);
    return MW_TEST_ASSERT(e->rep != NULL);
}

static void env_close(struct env *e)
{
    mw_reputation_destroy(&e->rep);
    mw_store_destroy(&e->store);
    mw_config_free(&e->cfg);
}

static void record_n(struct env *e, int n, mw_rep_outcome o, const char *ip, const char *dom)
{
    mw_addr a;
    const char *doms[] = {dom, dom};      /* a duplicate is counted once */
    mw_rep_subjects s = {.client = &a, .domains = doms, .ndomains = dom ? 2 : 0};

    if (!mw_addr_parse(ip, &a))
        abort();
    for (int i = 0; i < n; i++)
        MW_TEST_EQ_INT(mw_reputation_record(e->rep, o, &s), MW_STORE_OK);
}

static mw_rep_result score(struct env *e, const char *ip, const char *dom)
{
    mw_addr a;
    const char *doms[] = {dom};
    mw_rep_subjects s = {.client = ip ? &a : NULL, .domains = doms, .ndomains = dom ? 1 : 0};
    mw_rep_result r;

    if (ip != NULL && !mw_addr_parse(ip, &a))
        abort();
    MW_TEST_EQ_INT(mw_reputation_score(e->rep, &s, &r), MW_STORE_OK);
    return r;
}

/* One history, scored along the way; the scores go into out[] so two
 * backends can be compared. */
static size_t history(struct env *e, double *out)
{
    size_t n = 0;
    mw_rep_result r;
    mw_buf line = MW_BUF_INIT;

    atomic_store(&fake_now, 1700000000000000ULL);
    /* A good run from .10 with DKIM domain good.example. */
    record_n(e, 3, MW_REP_GOOD, "192.0.2.10", "good.example");
    r = score(e, "192.0.2.10", "good.example");
    MW_TEST_ASSERT(!r.ip.known);                   /* 3 < 5 samples */
    MW_TEST_EQ_INT(r.ip.samples, 3);
    MW_TEST_ASSERT(!mw_rep_above(&r.ip, 0.5));
    record_n(e, 7, MW_REP_GOOD, "192.0.2.10", "Good.Example.");
    r = score(e, "192.0.2.10", "good.example");
    MW_TEST_ASSERT(r.ip.known && r.ip.score > 0.99);
    MW_TEST_ASSERT(r.domain.known && r.domain.score > 0.99 && r.domain.samples == 10);
    MW_TEST_ASSERT(mw_rep_above(&r.domain, 0.5));
    out[n++] = r.ip.score;

    /* A bad run from .20, same /24. */
    advance_h(1);
    record_n(e, 10, MW_REP_BAD, "192.0.2.20", NULL);
    r = score(e, "192.0.2.20", NULL);
    MW_TEST_ASSERT(r.ip.known && r.ip.score < -0.99);
    MW_TEST_ASSERT(mw_rep_below(&r.ip, -0.5));
    MW_TEST_ASSERT(r.net.known && fabs(r.net.score) < 0.1);   /* 10 good, 10 bad */
    MW_TEST_EQ_INT(r.net.samples, 20);
    MW_TEST_ASSERT(!r.domain.known && r.domain.samples == 0);
    out[n++] = r.net.score;
    mw_reputation_format(&r, &line);
    MW_TEST_ASSERT(strstr(mw_buf_cstr(&line), "ip -1.00 (10 samples)") != NULL);
    MW_TEST_ASSERT(strstr(mw_buf_cstr(&line), "domain unknown (0 samples)") != NULL);
    mw_buf_free(&line);

    /* Two days later the good run has decayed more: the network leans bad. */
    advance_h(47);
    record_n(e, 10, MW_REP_BAD, "192.0.2.20", NULL);
    r = score(e, "192.0.2.30", NULL);
    MW_TEST_ASSERT(!r.ip.known && r.ip.samples == 0);        /* never seen */
    MW_TEST_ASSERT(r.net.known && r.net.score < -0.6);
    out[n++] = r.net.score;
    /* ... and the domain is still good (its counts only decayed). */
    r = score(e, NULL, "good.example");
    MW_TEST_ASSERT(r.domain.known && r.domain.score > 0.99);

    /* Recovery: a longer good run from .20 lifts it above zero. */
    record_n(e, 40, MW_REP_GOOD, "192.0.2.20", NULL);
    r = score(e, "192.0.2.20", NULL);
    MW_TEST_ASSERT(r.ip.score > 0.2);
    out[n++] = r.ip.score;

    /* After the window everything is forgotten. */
    advance_h(8 * 24);
    r = score(e, "192.0.2.20", "good.example");
    MW_TEST_EQ_INT(r.ip.samples, 0);
    MW_TEST_EQ_INT(r.domain.samples, 0);
    MW_TEST_ASSERT(!r.ip.known && !r.net.known && !r.domain.known);

    /* IPv6: the /48 is the network subject. */
    record_n(e, 6, MW_REP_BAD, "2001:db8:aa:1::1", NULL);
    r = score(e, "2001:db8:aa:2::1", NULL);
    MW_TEST_ASSERT(!r.ip.known && r.net.known && r.net.score < -0.99);
    return n;
}

static unsigned long long trips(mw_store *s)
{
    mw_store_stats st;
    mw_store_stats_get(s, &st);
    return st.round_trips;
}

static void check_shared(struct env *e)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_addr a;
    const char *doms[] = {"Shared.Example", "shared.example."};     /* one subject */
    mw_rep_subjects s = {.client = &a, .domains = doms, .ndomains = 2}, none = {0};
    mw_rep_ticket t1, t2;
    mw_rep_result r;
    unsigned long long t0 = trips(e->store);

    if (!mw_addr_parse("198.18.7.99", &a))
        abort();
    /* A record and a score in one batch: one round trip; the operations
     * run in order, so the score sees the record. */
    mw_reputation_prepare_record(e->rep, MW_REP_GOOD, &s, b, &t1);
    mw_reputation_prepare_score(e->rep, &s, b, &t2);
    MW_TEST_EQ_INT(t1.n, 3);
    MW_TEST_EQ_INT(t2.first, 3);
    MW_TEST_EQ_INT(mw_store_batch_count(b), 6);
    MW_TEST_EQ_INT(mw_store_exec(e->store, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_reputation_finish_record(e->rep, &t1, b), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_reputation_finish_score(e->rep, &t2, b, &r), MW_STORE_OK);
    MW_TEST_EQ_INT(r.ip.samples, 1);
    MW_TEST_EQ_INT(r.net.samples, 1);
    MW_TEST_EQ_INT(r.domain.samples, 1);
    MW_TEST_EQ_INT(trips(e->store) - t0, 1);
    /* Four records sent without waiting: no round trip. */
    for (int i = 0; i < 4; i++) {
        mw_store_batch_reset(b);
        mw_reputation_prepare_record(e->rep, MW_REP_GOOD, &s, b, &t1);
        MW_TEST_EQ_INT(mw_store_send(e->store, b, NULL, 0), MW_STORE_OK);
        MW_TEST_EQ_INT(mw_reputation_finish_record(e->rep, &t1, b), MW_STORE_OK);
    }
    MW_TEST_EQ_INT(trips(e->store) - t0, 1);
    /* The next score (one round trip) counts them. */
    MW_TEST_EQ_INT(mw_reputation_score(e->rep, &s, &r), MW_STORE_OK);
    MW_TEST_ASSERT(r.ip.known && r.ip.samples == 5 && r.domain.known && r.domain.score > 0.99);
    MW_TEST_EQ_INT(trips(e->store) - t0, 2);
    /* No subjects: nothing added, no round trip, unknown scores. */
    mw_store_batch_reset(b);
    mw_reputation_prepare_score(e->rep, &none, b, &t2);
    MW_TEST_EQ_INT(mw_store_batch_count(b), 0);
    MW_TEST_EQ_INT(mw_reputation_finish_score(e->rep, &t2, b, &r), MW_STORE_OK);
    MW_TEST_ASSERT(!r.ip.known && !r.domain.known);
    MW_TEST_EQ_INT(mw_reputation_record(e->rep, MW_REP_BAD, &none), MW_STORE_OK);
    MW_TEST_EQ_INT(trips(e->store) - t0, 2);
    mw_store_batch_free(&b);
}

static double mem_scores[8], redis_scores[8];
static size_t nmem;

static void test_memory(void)
{
    struct env e;
    if (env_open(&e, false, NULL))
        nmem = history(&e, mem_scores);
    MW_TEST_EQ_INT(mw_reputation_min_samples(e.rep), 5);
    if (e.rep != NULL)
        check_shared(&e);
    env_close(&e);
}

static void test_redis(void)
{
    struct env e;
    if (!env_open(&e, true, "mwrep:"))
        return;
    size_t n = history(&e, redis_scores);
    check_shared(&e);
    /* The same answers as the memory backend. */
    MW_TEST_EQ_INT(n, nmem);
    for (size_t i = 0; i < n && i < nmem; i++)
        if (!MW_TEST_ASSERT(fabs(mem_scores[i] - redis_scores[i]) < 1e-9))
            fprintf(stderr, "  score %zu: memory %.6f redis %.6f\n", i, mem_scores[i], redis_scores[i]);

    /* Bounded: a subject seen in 100 buckets keeps at most 2 * 29 + 2 fields. */
    for (int i = 0; i < 100; i++) {
        advance_h(6);
        record_n(&e, 1, i % 3 ? MW_REP_GOOD : MW_REP_BAD, "198.51.100.1", NULL);
    }
    redisReply *r = raw2("HLEN", "mwrep:rep:{ip=198.51.100.1}");
    MW_TEST_ASSERT(r && r->type == REDIS_REPLY_INTEGER && r->integer <= 60);
    if (r)
        freeReplyObject(r);
    r = raw2("PTTL", "mwrep:rep:{ip=198.51.100.1}");
    MW_TEST_ASSERT(r && r->type == REDIS_REPLY_INTEGER && r->integer > 6 * 86400 * 1000LL);
    if (r)
        freeReplyObject(r);
    mw_rep_result res = score(&e, "198.51.100.1", NULL);
    MW_TEST_ASSERT(res.ip.samples <= 29 && res.ip.samples >= 28);

    /* Redis down: TEMPFAIL, unknown scores. */
    mwt_proc_stop(&redis_srv);
    mw_addr a;
    mw_addr_parse("198.51.100.1", &a);
    mw_rep_subjects s = {.client = &a};
    MW_TEST_EQ_INT(mw_reputation_score(e.rep, &s, &res), MW_STORE_TEMPFAIL);
    MW_TEST_ASSERT(!res.ip.known && res.ip.samples == 0);
    MW_TEST_EQ_INT(mw_reputation_record(e.rep, MW_REP_BAD, &s), MW_STORE_TEMPFAIL);
    env_close(&e);
}

static void cleanup(void) { mwt_proc_stop(&redis_srv); }

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test_checks_reputation", "mail",
                     MW_LOG_WARN);
    atexit(cleanup);
    MW_TEST_RUN(test_memory);
    if (!MW_TEST_ASSERT(mwt_redis_start(&redis_srv, "rep"))) {
        fprintf(stderr, "redis-server did not start: the redis tests cannot run\n");
        return MW_TEST_SUMMARY();
    }
    MW_TEST_RUN(test_redis);
    return MW_TEST_SUMMARY();
}
