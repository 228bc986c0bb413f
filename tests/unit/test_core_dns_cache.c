/*
 * test_core_dns_cache.c - the in-process DNS answer cache (core/dns_cache.c)
 * on its own and in front of libunbound (core/dns.c), against
 * tests/lib/testdns.py started here with --negttl 60 (negative answers carry
 * a 60 s TTL) and a zone with 60 s records.
 *
 * "Answered by the cache" is checked with mw_dns_get_stats()'s upstream
 * counter (queries handed to libunbound): the server's query log cannot
 * tell, since libunbound's own cache also answers repeats without a packet.
 *
 * Time: every test that asserts a hit or an expiry runs the cache on a fake
 * clock (mw_dns_cache_set_clock, mw_dns_set_cache_clock) and advances it,
 * never sleeps: "still cached after sleeping 1.3 s of a 2 s TTL" raced the
 * scheduler (ThreadSanitizer on a loaded machine).  libunbound's own cache
 * keeps real time, which the upstream counter does not see; but the TTL it
 * hands over may already be a second short (its clock ticks in seconds,
 * and a slow run crosses a tick), so expiry is checked against the TTL of
 * the answer actually received, and records live 60 s (a 1 s one can
 * arrive with TTL 0, never cached).
 *
 * Environment: MW_SOURCE_DIR (set by ctest; else derived from __FILE__),
 * MW_TEST_PYTHON (default /usr/bin/python3: Debian's, which has dnslib).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "dns.h"
#include "dns_cache.h"
#include "metrics.h"
#include "mwtest.h"
#include "mwtest_procs.h"

static mwt_proc server;        /* testdns.py; its dir holds zone.json and log */
static char     fwd[64];

#define NNAMES 300

/* ------------------------------------------------------------------------ */
/* the test server (as in test_core_dns.c)                                  */

static void write_zone(void)
{
    mw_buf z = MW_BUF_INIT;
    char zonefile[128];

    mw_buf_puts(&z, "{\n"
                " \"c.example.com\": [{\"A\": \"192.0.2.1\"}, {\"TXT\": \"v=spf1 -all\"}],\n"
                " \"ttl60.example.com\": [{\"A\": \"192.0.2.2\", \"ttl\": 60}],\n"
                " \"ttl0.example.com\": [{\"A\": \"192.0.2.3\", \"ttl\": 0}],\n"
                " \"www.example.com\": [{\"CNAME\": \"c.example.com\"}],\n"
                " \"cn60.example.com\": [{\"CNAME\": \"c.example.com\", \"ttl\": 60}],\n"
                " \"servfail.example.com\": [\"SERVFAIL\"],\n"
                " \"silent.example.com\": [\"TIMEOUT\", {\"A\": \"192.0.2.4\"}],\n");
    for (int i = 0; i < NNAMES; i++)
        mw_buf_printf(&z, " \"n%d.load.test\": [{\"A\": \"10.0.%d.%d\"}, {\"TXT\": \"load %d\"}],\n",
                      i, i / 256, i % 256, i);
    mw_buf_puts(&z, " \"last.example.com\": [{\"A\": \"192.0.2.255\"}]\n}\n");
    if (!mwt_write_file(mwt_path(&server, "zone.json", zonefile, sizeof zonefile),
                        mw_buf_cstr(&z)))
        exit(2);
    mw_buf_free(&z);
}

static void cleanup(void)
{
    mwt_proc_stop(&server);
}

/* Lines of the server's query log containing s (case-insensitive). */
static int server_count(const char *s)
{
    return mwt_testdns_lines(&server, s);
}

/* The fake clock (nanoseconds); only the main thread reads or moves it. */
#define MS_NS 1000000ull
#define S_NS  1000000000ull

static uint64_t fake_ns = 1000 * S_NS;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_ns;
}

static void advance_ms(uint64_t ms)
{
    fake_ns += ms * MS_NS;
}

/* A generous default deadline: answers from the local server must not race
 * it however loaded the machine (the timeout tests pass their own). */
static mw_dns *resolver(size_t cache_size, unsigned min_ttl, unsigned max_ttl)
{
    char err[256];
    const char *fwds[1] = { fwd };
    mw_dns_options o = { .forwarders = fwds, .nforwarders = 1, .timeout_ms = 10000,
                         .cache_size = cache_size, .cache_min_ttl = min_ttl,
                         .cache_max_ttl = max_ttl };
    mw_dns *d = mw_dns_create(&o, err, sizeof err);

    if (!d)
        fprintf(stderr, "mw_dns_create: %s\n", err);
    return d;
}

static uint64_t upstream(mw_dns *d)
{
    mw_dns_stats st;
    mw_dns_get_stats(d, &st);
    return st.upstream;
}

/* Query and return the status; frees the answer. */
static mw_dns_status ask(mw_dns *d, const char *name, uint16_t type, unsigned timeout_ms)
{
    mw_dns_answer *a = NULL;
    mw_dns_status st = mw_dns_query(d, name, type, timeout_ms, &a);
    mw_dns_answer_free(&a);
    return st;
}

/* ------------------------------------------------------------------------ */
/* the cache alone                                                          */

static mw_dns_answer *fake(mw_dns_status st, uint32_t ttl, size_t nrr)
{
    mw_dns_answer *a = mw_calloc(1, sizeof *a);
    a->status = st;
    a->rcode = st == MW_DNS_NXDOMAIN ? 3 : 0;
    a->qname = mw_strdup("ignored.example");
    a->qtype = MW_DNS_T_TXT;
    a->ttl = ttl;
    a->rr = mw_calloc(nrr ? nrr : 1, sizeof *a->rr);
    for (size_t i = 0; i < nrr; i++) {
        a->rr[i].type = MW_DNS_T_TXT;
        a->rr[i].ttl = ttl;
        a->rr[i].len = 4;
        a->rr[i].data = mw_malloc(4);
        memcpy(a->rr[i].data, "\003abc", 4);
    }
    a->nrr = nrr;
    return a;
}

static void test_cache_unit(void)
{
    mw_dns_cache *c = mw_dns_cache_create(0, 0, 3600);
    mw_dns_answer *a, *b = NULL;
    mw_dns_cache_stats st;

    MW_TEST_ASSERT(c == NULL);           /* size 0: no cache */
    a = fake(MW_DNS_OK, 300, 2);
    MW_TEST_ASSERT(!mw_dns_cache_put(NULL, "x.example", MW_DNS_T_TXT, 1, a));
    MW_TEST_ASSERT(!mw_dns_cache_get(NULL, "x.example", MW_DNS_T_TXT, 1, &b));

    c = mw_dns_cache_create(100, 0, 3600);
    mw_dns_cache_set_clock(c, fake_clock, NULL);         /* TTL 300 below, exactly */
    MW_TEST_ASSERT(mw_dns_cache_put(c, "X.Example.", MW_DNS_T_TXT, 1, a));
    a->secure = true;                    /* a is the caller's: the cache holds a copy */
    a->rr[0].data[1] = 'Z';
    MW_TEST_ASSERT(mw_dns_cache_get(c, "x.EXAMPLE", MW_DNS_T_TXT, 1, &b));
    if (MW_TEST_ASSERT(b != NULL) && MW_TEST_EQ_INT(b->nrr, 2)) {
        MW_TEST_EQ_STR(b->qname, "x.EXAMPLE");           /* as asked */
        MW_TEST_EQ_MEM(b->rr[0].data, b->rr[0].len, "\003abc", (size_t)4);
        MW_TEST_EQ_INT(b->ttl, 300);
        MW_TEST_EQ_INT(b->rr[1].ttl, 300);
        MW_TEST_ASSERT(!b->secure);
        MW_TEST_EQ_INT(b->status, MW_DNS_OK);
        b->rr[0].data[1] = 'Q';          /* and the copy is the caller's */
    }
    mw_dns_answer_free(&b);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "x.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_EQ_MEM(b->rr[0].data, b->rr[0].len, "\003abc", (size_t)4);
    mw_dns_answer_free(&b);
    /* Type and class are part of the key. */
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "x.example", MW_DNS_T_A, 1, &b));
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "x.example", MW_DNS_T_TXT, 3, &b));
    MW_TEST_ASSERT(b == NULL);

    /* The DNSSEC state is kept. */
    MW_TEST_ASSERT(mw_dns_cache_put(c, "sec.example", MW_DNS_T_TXT, 1, a));
    MW_TEST_ASSERT(mw_dns_cache_get(c, "sec.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_ASSERT(b && b->secure);
    mw_dns_answer_free(&b);

    /* Never stored: failures, bogus, TTL 0. */
    mw_dns_answer *t = fake(MW_DNS_TEMPFAIL, 300, 0), *p = fake(MW_DNS_PERMFAIL, 300, 0);
    MW_TEST_ASSERT(!mw_dns_cache_put(c, "t.example", MW_DNS_T_TXT, 1, t));
    MW_TEST_ASSERT(!mw_dns_cache_put(c, "p.example", MW_DNS_T_TXT, 1, p));
    p->status = MW_DNS_OK;
    p->bogus = true;
    MW_TEST_ASSERT(!mw_dns_cache_put(c, "p.example", MW_DNS_T_TXT, 1, p));
    a->ttl = 0;
    MW_TEST_ASSERT(!mw_dns_cache_put(c, "zero.example", MW_DNS_T_TXT, 1, a));
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "zero.example", MW_DNS_T_TXT, 1, &b));
    /* Negative answers are stored. */
    mw_dns_answer *nx = fake(MW_DNS_NXDOMAIN, 60, 0), *nd = fake(MW_DNS_NODATA, 60, 0);
    MW_TEST_ASSERT(mw_dns_cache_put(c, "nx.example", MW_DNS_T_TXT, 1, nx));
    MW_TEST_ASSERT(mw_dns_cache_put(c, "nd.example", MW_DNS_T_TXT, 1, nd));
    MW_TEST_ASSERT(mw_dns_cache_get(c, "nx.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_ASSERT(b && b->status == MW_DNS_NXDOMAIN && b->rcode == 3 && b->nrr == 0);
    mw_dns_answer_free(&b);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "nd.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_ASSERT(b && b->status == MW_DNS_NODATA);
    mw_dns_answer_free(&b);

    mw_dns_cache_get_stats(c, &st);
    MW_TEST_EQ_INT(st.entries, 4);
    MW_TEST_EQ_INT(st.inserts, 4);
    MW_TEST_EQ_INT(st.hits, 5);
    MW_TEST_EQ_INT(st.misses, 3);
    MW_TEST_EQ_INT(st.capacity, 100);
    MW_TEST_EQ_INT(st.shards, 1);
    mw_dns_cache_destroy(&c);
    MW_TEST_ASSERT(c == NULL);

    /* Large caches are sharded and hold exactly max_entries. */
    c = mw_dns_cache_create(10000, 0, 3600);
    a->ttl = 300;
    for (int i = 0; i < 12000; i++) {
        char name[64];
        snprintf(name, sizeof name, "h%d.example", i);
        mw_dns_cache_put(c, name, MW_DNS_T_TXT, 1, a);
    }
    mw_dns_cache_get_stats(c, &st);
    MW_TEST_EQ_INT(st.shards, MW_DNS_CACHE_MAX_SHARDS);
    MW_TEST_ASSERT(st.entries <= 10000 && st.entries > 9000);
    MW_TEST_EQ_INT(st.evictions, 12000 - st.entries);
    mw_dns_cache_destroy(&c);

    mw_dns_answer_free(&a);
    mw_dns_answer_free(&t);
    mw_dns_answer_free(&p);
    mw_dns_answer_free(&nx);
    mw_dns_answer_free(&nd);
}

/* Exact LRU in a small (one-shard) cache. */
static void test_cache_lru(void)
{
    mw_dns_cache *c = mw_dns_cache_create(3, 0, 3600);
    mw_dns_answer *a = fake(MW_DNS_OK, 300, 1), *b = NULL;
    mw_dns_cache_stats st;

    mw_dns_cache_put(c, "a.example", MW_DNS_T_TXT, 1, a);
    mw_dns_cache_put(c, "b.example", MW_DNS_T_TXT, 1, a);
    mw_dns_cache_put(c, "c.example", MW_DNS_T_TXT, 1, a);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "a.example", MW_DNS_T_TXT, 1, &b));   /* a used */
    mw_dns_answer_free(&b);
    mw_dns_cache_put(c, "d.example", MW_DNS_T_TXT, 1, a);                   /* b goes */
    mw_dns_cache_put(c, "c.example", MW_DNS_T_TXT, 1, a);                   /* replaced */
    mw_dns_cache_get_stats(c, &st);
    MW_TEST_EQ_INT(st.entries, 3);
    MW_TEST_EQ_INT(st.evictions, 1);
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "b.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_ASSERT(mw_dns_cache_get(c, "a.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_answer_free(&b);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "c.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_answer_free(&b);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "d.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_answer_free(&b);
    mw_dns_cache_destroy(&c);

    /* Clamps: max_ttl shortens, min_ttl lengthens (reported TTL stays honest). */
    c = mw_dns_cache_create(10, 2, 1);   /* min above max: min wins */
    mw_dns_cache_set_clock(c, fake_clock, NULL);
    a->ttl = 1;
    mw_dns_cache_put(c, "min.example", MW_DNS_T_TXT, 1, a);
    advance_ms(1999);                    /* past its own TTL, within min_ttl */
    MW_TEST_ASSERT(mw_dns_cache_get(c, "min.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_EQ_INT(b ? b->ttl : 99, 0);
    mw_dns_answer_free(&b);
    advance_ms(1);                       /* min_ttl reached: gone */
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "min.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_cache_destroy(&c);
    c = mw_dns_cache_create(10, 0, 1);
    mw_dns_cache_set_clock(c, fake_clock, NULL);
    a->ttl = 300;
    mw_dns_cache_put(c, "max.example", MW_DNS_T_TXT, 1, a);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "max.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_answer_free(&b);
    advance_ms(999);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "max.example", MW_DNS_T_TXT, 1, &b));
    MW_TEST_EQ_INT(b ? b->ttl : 0, 300);   /* under a second held: nothing taken off */
    mw_dns_answer_free(&b);
    advance_ms(1);
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "max.example", MW_DNS_T_TXT, 1, &b));
    mw_dns_cache_get_stats(c, &st);
    MW_TEST_EQ_INT(st.expired, 1);
    MW_TEST_EQ_INT(st.entries, 0);
    mw_dns_cache_destroy(&c);

    /* A hit reports the TTL less the whole seconds held. */
    c = mw_dns_cache_create(10, 0, 3600);
    mw_dns_cache_set_clock(c, fake_clock, NULL);
    mw_dns_cache_put(c, "age.example", MW_DNS_T_TXT, 1, a);
    advance_ms(10500);
    MW_TEST_ASSERT(mw_dns_cache_get(c, "age.example", MW_DNS_T_TXT, 1, &b));
    if (MW_TEST_ASSERT(b != NULL) && MW_TEST_EQ_INT(b->nrr, 1)) {
        MW_TEST_EQ_INT(b->ttl, 290);
        MW_TEST_EQ_INT(b->rr[0].ttl, 290);
    }
    mw_dns_answer_free(&b);
    advance_ms(289500);                  /* 300 s: expired */
    MW_TEST_ASSERT(!mw_dns_cache_get(c, "age.example", MW_DNS_T_TXT, 1, &b));
    /* ... and an expired entry is what a full shard drops first, as expired. */
    for (int i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d.example", i);
        mw_dns_cache_put(c, name, MW_DNS_T_TXT, 1, a);
    }
    advance_ms(300000);
    mw_dns_cache_put(c, "new.example", MW_DNS_T_TXT, 1, a);
    mw_dns_cache_get_stats(c, &st);
    MW_TEST_EQ_INT(st.expired, 2);
    MW_TEST_EQ_INT(st.evictions, 0);
    MW_TEST_EQ_INT(st.entries, 10);
    mw_dns_cache_destroy(&c);
    mw_dns_answer_free(&a);
}

/* ------------------------------------------------------------------------ */
/* in front of libunbound                                                   */

static void test_hit_without_libunbound(void)
{
    mw_dns *d = resolver(100, 0, 3600);
    mw_dns_answer *a = NULL;
    mw_dns_stats st;
    uint64_t hits0 = mw_metric_value(MW_M_DNS_CACHE_HITS, 0, 0);
    uint64_t miss0 = mw_metric_value(MW_M_DNS_CACHE_MISSES, 0, 0);

    if (!MW_TEST_ASSERT(d != NULL))
        return;
    mw_dns_set_cache_clock(d, fake_clock, NULL);
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 1);
    MW_TEST_EQ_INT(server_count("c.example.com. A"), 1);
    /* Same name, other spellings: from the cache, libunbound not asked. */
    MW_TEST_EQ_INT(mw_dns_query(d, "C.Example.COM.", MW_DNS_T_A, 0, &a), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 1);
    if (MW_TEST_EQ_INT(a->nrr, 1)) {
        uint8_t ip[16];
        MW_TEST_EQ_INT(mw_dns_rr_addr(&a->rr[0], ip), 4);
        MW_TEST_EQ_MEM(ip, (size_t)4, "\xc0\x00\x02\x01", (size_t)4);
        MW_TEST_ASSERT(a->ttl > 290 && a->ttl <= 300);
    }
    MW_TEST_EQ_STR(a->qname, "C.Example.COM.");
    MW_TEST_EQ_INT(a->rcode, 0);
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_A, 1), MW_DNS_OK);   /* 1 ms: still fine */
    MW_TEST_EQ_INT(upstream(d), 1);
    /* Another type is another key. */
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_TXT, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 2);
    /* CNAME chains keep canonname. */
    MW_TEST_EQ_INT(ask(d, "www.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(mw_dns_query(d, "www.example.com", MW_DNS_T_A, 0, &a), MW_DNS_OK);
    MW_TEST_EQ_STR(a->canonname, "c.example.com");
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(upstream(d), 3);
    /* Invalid names never reach the cache. */
    MW_TEST_EQ_INT(ask(d, "a..example.com", MW_DNS_T_A, 0), MW_DNS_PERMFAIL);

    mw_dns_get_stats(d, &st);
    MW_TEST_EQ_INT(st.cache_hits, 3);
    MW_TEST_EQ_INT(st.cache_misses, 3);
    MW_TEST_EQ_INT(st.cache_entries, 3);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_DNS_CACHE_HITS, 0, 0) - hits0, 3);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_DNS_CACHE_MISSES, 0, 0) - miss0, 3);
    mw_dns_destroy(&d);
}

/* Ask name/type (expected status st) and return the TTL of the answer: the
 * cache keeps it for exactly that long (unclamped here). */
static uint32_t ttl_of(mw_dns *d, const char *name, uint16_t type, mw_dns_status st)
{
    mw_dns_answer *a = NULL;
    uint32_t ttl = 0;

    if (MW_TEST_EQ_INT(mw_dns_query(d, name, type, 0, &a), st))
        ttl = a->ttl;
    mw_dns_answer_free(&a);
    return ttl;
}

/* Expiry in front of libunbound, on the fake clock: an answer is a hit until
 * the last millisecond of the TTL it arrived with and a miss (upstream
 * again) at it.  libunbound may hand a 60 s record over with 59 s left. */
static void test_ttl_expiry(void)
{
    mw_dns *d = resolver(100, 0, 3600);
    mw_dns_stats st;
    uint32_t t;

    if (!MW_TEST_ASSERT(d != NULL))
        return;
    mw_dns_set_cache_clock(d, fake_clock, NULL);
    t = ttl_of(d, "ttl60.example.com", MW_DNS_T_A, MW_DNS_OK);
    MW_TEST_ASSERT(t >= 50 && t <= 60);
    MW_TEST_EQ_INT(ask(d, "ttl60.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 1);
    advance_ms(t * 1000ull - 1);
    MW_TEST_EQ_INT(ask(d, "ttl60.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 1);
    advance_ms(1);
    MW_TEST_EQ_INT(ask(d, "ttl60.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 2);
    mw_dns_get_stats(d, &st);
    MW_TEST_EQ_INT(st.cache_expired, 1);

    /* A CNAME chain lives as long as its shortest link (60 s CNAME to a 300 s
     * A): libunbound's ub_result.ttl is the minimum over the whole chain. */
    mw_dns_answer *cn = NULL;
    MW_TEST_EQ_INT(mw_dns_query(d, "cn60.example.com", MW_DNS_T_A, 0, &cn), MW_DNS_OK);
    t = cn->ttl;
    MW_TEST_ASSERT(t >= 50 && t <= 60);
    MW_TEST_EQ_STR(cn->canonname, "c.example.com");
    mw_dns_answer_free(&cn);
    MW_TEST_EQ_INT(upstream(d), 3);
    advance_ms(t * 1000ull - 1);
    MW_TEST_EQ_INT(ask(d, "cn60.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 3);
    advance_ms(1);
    MW_TEST_EQ_INT(ask(d, "cn60.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 4);

    /* TTL 0 is never cached. */
    MW_TEST_EQ_INT(ask(d, "ttl0.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(ask(d, "ttl0.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 6);

    /* NXDOMAIN and NODATA: kept for the negative TTL (--negttl 60). */
    mw_dns_answer *a = NULL;
    t = ttl_of(d, "nx.example.com", MW_DNS_T_TXT, MW_DNS_NXDOMAIN);
    MW_TEST_ASSERT(t >= 50 && t <= 60);
    MW_TEST_EQ_INT(upstream(d), 7);
    advance_ms(t * 1000ull - 1);
    MW_TEST_EQ_INT(mw_dns_query(d, "NX.example.com", MW_DNS_T_TXT, 0, &a), MW_DNS_NXDOMAIN);
    MW_TEST_EQ_INT(a->rcode, 3);
    MW_TEST_EQ_INT(a->ttl, 1);           /* t - (t - 1) whole seconds held */
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(upstream(d), 7);
    advance_ms(1);
    MW_TEST_EQ_INT(ask(d, "nx.example.com", MW_DNS_T_TXT, 0), MW_DNS_NXDOMAIN);
    MW_TEST_EQ_INT(upstream(d), 8);
    t = ttl_of(d, "c.example.com", MW_DNS_T_MX, MW_DNS_NODATA);
    MW_TEST_ASSERT(t >= 50 && t <= 60);
    MW_TEST_EQ_INT(upstream(d), 9);
    advance_ms(t * 1000ull - 1);
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_MX, 0), MW_DNS_NODATA);
    MW_TEST_EQ_INT(upstream(d), 9);
    advance_ms(1);
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_MX, 0), MW_DNS_NODATA);
    MW_TEST_EQ_INT(upstream(d), 10);
    mw_dns_destroy(&d);

    /* cache_max_ttl shortens a 300 s answer to 1 s. */
    d = resolver(100, 0, 1);
    if (!MW_TEST_ASSERT(d != NULL))
        return;
    mw_dns_set_cache_clock(d, fake_clock, NULL);
    MW_TEST_EQ_INT(ask(d, "last.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    advance_ms(999);
    MW_TEST_EQ_INT(ask(d, "last.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 1);
    advance_ms(1);
    MW_TEST_EQ_INT(ask(d, "last.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 2);
    mw_dns_destroy(&d);
}

static void test_failures_not_cached(void)
{
    mw_dns *d = resolver(100, 0, 3600);
    mw_dns_stats st;

    if (!MW_TEST_ASSERT(d != NULL))
        return;
    MW_TEST_EQ_INT(ask(d, "servfail.example.com", MW_DNS_T_TXT, 0), MW_DNS_TEMPFAIL);
    MW_TEST_EQ_INT(ask(d, "servfail.example.com", MW_DNS_T_TXT, 0), MW_DNS_TEMPFAIL);
    MW_TEST_EQ_INT(upstream(d), 2);
    MW_TEST_EQ_INT(ask(d, "silent.example.com", MW_DNS_T_TXT, 300), MW_DNS_TEMPFAIL);
    MW_TEST_EQ_INT(ask(d, "silent.example.com", MW_DNS_T_TXT, 300), MW_DNS_TEMPFAIL);
    MW_TEST_EQ_INT(upstream(d), 4);
    mw_dns_get_stats(d, &st);
    MW_TEST_EQ_INT(st.cache_entries, 0);
    MW_TEST_EQ_INT(st.cache_hits, 0);
    mw_dns_destroy(&d);
}

static void test_disabled_and_bound(void)
{
    mw_dns *d = resolver(0, 0, 3600);
    mw_dns_stats st;

    if (!MW_TEST_ASSERT(d != NULL))
        return;
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(ask(d, "c.example.com", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(upstream(d), 2);
    mw_dns_get_stats(d, &st);
    MW_TEST_EQ_INT(st.cache_capacity, 0);
    MW_TEST_EQ_INT(st.cache_hits + st.cache_misses, 0);
    mw_dns_destroy(&d);

    /* Two entries: the least recently used goes. */
    d = resolver(2, 0, 3600);
    if (!MW_TEST_ASSERT(d != NULL))
        return;
    MW_TEST_EQ_INT(ask(d, "n1.load.test", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(ask(d, "n2.load.test", MW_DNS_T_A, 0), MW_DNS_OK);
    MW_TEST_EQ_INT(ask(d, "n1.load.test", MW_DNS_T_A, 0), MW_DNS_OK);       /* hit */
    MW_TEST_EQ_INT(ask(d, "n3.load.test", MW_DNS_T_A, 0), MW_DNS_OK);       /* n2 goes */
    MW_TEST_EQ_INT(upstream(d), 3);
    MW_TEST_EQ_INT(ask(d, "n1.load.test", MW_DNS_T_A, 0), MW_DNS_OK);       /* hit */
    MW_TEST_EQ_INT(upstream(d), 3);
    MW_TEST_EQ_INT(ask(d, "n2.load.test", MW_DNS_T_A, 0), MW_DNS_OK);       /* miss */
    MW_TEST_EQ_INT(upstream(d), 4);
    mw_dns_get_stats(d, &st);
    MW_TEST_EQ_INT(st.cache_entries, 2);
    MW_TEST_EQ_INT(st.cache_evictions, 2);
    mw_dns_destroy(&d);
}

/* 8 threads hammering overlapping names through a cache smaller than the
 * working set (evictions race with hits), every answer checked. */
#define NTHREADS 8
#define NQUERIES 600

static mw_dns *shared;

static void *hammer(void *arg)
{
    long t = (long)arg, bad = 0;
    mw_buf b = MW_BUF_INIT;

    for (int j = 0; j < NQUERIES; j++) {
        /* half the lookups on 8 hot names, half spread over all */
        int idx = (j & 1) ? (int)((t * 37 + j * 11) % NNAMES) : j % 8;
        uint16_t type = (j & 2) ? MW_DNS_T_TXT : MW_DNS_T_A;
        char name[64], want[32];
        mw_dns_answer *a = NULL;

        snprintf(name, sizeof name, (j & 4) ? "N%d.LOAD.test" : "n%d.load.test", idx);
        if (mw_dns_query(shared, name, type, 5000, &a) != MW_DNS_OK || a->nrr != 1 ||
            strcmp(a->qname, name) != 0) {
            bad++;
        } else if (type == MW_DNS_T_A) {
            uint8_t ip[16];
            if (mw_dns_rr_addr(&a->rr[0], ip) != 4 || ip[2] != idx / 256 || ip[3] != idx % 256)
                bad++;
        } else {
            snprintf(want, sizeof want, "load %d", idx);
            if (!mw_dns_rr_txt(&a->rr[0], &b) || strcmp(mw_buf_cstr(&b), want) != 0)
                bad++;
        }
        mw_dns_answer_free(&a);
    }
    mw_buf_free(&b);
    return (void *)bad;
}

static void test_threads(void)
{
    pthread_t th[NTHREADS];
    long bad = 0;
    mw_dns_stats st;

    shared = resolver(256, 0, 3600);     /* 4 shards of 64; ~600 keys in use */
    if (!MW_TEST_ASSERT(shared != NULL))
        return;
    for (long t = 0; t < NTHREADS; t++)
        MW_TEST_ASSERT(pthread_create(&th[t], NULL, hammer, (void *)t) == 0);
    for (int t = 0; t < NTHREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad += (long)r;
    }
    mw_dns_get_stats(shared, &st);
    fprintf(stderr, "   %d lookups: %llu hits, %llu misses, %llu upstream, %llu evictions\n",
            NTHREADS * NQUERIES, (unsigned long long)st.cache_hits,
            (unsigned long long)st.cache_misses, (unsigned long long)st.upstream,
            (unsigned long long)st.cache_evictions);
    MW_TEST_EQ_INT(bad, 0);
    MW_TEST_EQ_INT(st.cache_hits + st.cache_misses, NTHREADS * NQUERIES);
    MW_TEST_EQ_INT(st.upstream, st.cache_misses);
    MW_TEST_ASSERT(st.cache_hits > NTHREADS * NQUERIES / 3);
    MW_TEST_ASSERT(st.cache_evictions > 0);
    MW_TEST_ASSERT(st.cache_entries <= 256);
    mw_dns_destroy(&shared);
}

int main(void)
{
    static const char *const negttl[] = {"--negttl", "60", NULL};

    if (!mwt_proc_dir(&server, "dnscache"))
        return 2;
    atexit(cleanup);

    MW_TEST_RUN(test_cache_unit);
    MW_TEST_RUN(test_cache_lru);

    write_zone();
    if (!mwt_testdns_start_args(&server, "dnscache", NULL, negttl)) {
        fprintf(stderr, "cannot start the test DNS server (see %s/log)\n", server.dir);
        return 1;
    }
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", server.port);
    MW_TEST_RUN(test_hit_without_libunbound);
    MW_TEST_RUN(test_ttl_expiry);
    MW_TEST_RUN(test_failures_not_cached);
    MW_TEST_RUN(test_disabled_and_bound);
    MW_TEST_RUN(test_threads);
    return MW_TEST_SUMMARY();
}
