/*
 * test_checks_ratelimit.c - unit tests of the rate limiter (checks/
 * ratelimit.c) on the memory store with a fake clock, and on a real
 * redis-server this test starts on a free loopback port:
 *
 *   - rules from a config file; config errors with FILE:LINE;
 *   - refill with the fake clock, replies (451 4.7.1 default, reject 550
 *     5.7.1, placeholders), retry-after;
 *   - trust classes, allow lists, keys without a value, IPv6 /64 masking,
 *     combined keys, cost per recipient at end of message;
 *   - rules on one subject are one atomic script call (all or nothing);
 *   - N threads racing through the limiter on a burst-B rule: exactly B;
 *   - Redis killed: store_failed within the timeout, accepted with
 *     failure_action "accept", 451 4.7.1 with "tempfail";
 *   - inspect and reset of a bucket (what `mailwarden limits` uses);
 *   - round trips (the store's counter): a check costs one when a rule
 *     applies and none otherwise; the engine's stages on a shared batch
 *     (limits + reputation score: one exec; the outcome: a send, none);
 *     skip_reputation_above rules wait for the domain score in a second
 *     part, which costs nothing when every rule of it is exempt.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "mwtest.h"
#include "mwtest_procs.h"
#include "ratelimit.h"
#include "reputation.h"
#include "store.h"

static mwt_proc redis_srv;          /* its directory also holds the config files */

/* ---- plumbing ------------------------------------------------------------------ */

/* Redis dead or stopped, with connect and command timeouts of 200 ms: a
 * call must fail within those, not hang.  The bound is generous (a slow
 * sanitizer build on a loaded machine once took more than the 450 ms it
 * used to be); a call that waited for anything but the two timeouts, or
 * retried, would still exceed it. */
#define FAIL_FAST_MS 2000

/* Redis connect/command limits of the next env_open: generous for stores
 * that must work (a loaded machine can exceed 200 ms, and one TEMPFAIL
 * backs the store off); test_redis_down sets 200 ms for its bounds. */
static unsigned redis_timeout_ms = 5000;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static _Atomic uint64_t fake_now = 1700000000000000ULL;
static uint64_t fake_clock(void *arg) { (void)arg; return atomic_load(&fake_now); }
static void advance_s(uint64_t s) { atomic_fetch_add(&fake_now, s * 1000000u); }

static mw_config *load(const char *text, mw_config_errors *errs)
{
    char path[600];
    FILE *f;

    snprintf(path, sizeof path, "%s/mailwarden.conf", redis_srv.dir);
    f = fopen(path, "w");
    if (f == NULL)
        exit(2);
    fputs(text, f);
    fclose(f);
    return mw_config_load(path, NULL, errs);
}

static bool has_error(const mw_config_errors *e, const char *part)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msg[i], part) != NULL)
            return true;
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "  error: %s\n", e->msg[i]);
    return false;
}

struct env {
    mw_config    *cfg;
    mw_store     *store;
    mw_ratelimit *rl;
};

static bool env_open(struct env *e, const char *conf, bool redis, bool fail_closed)
{
    mw_config_errors errs = {0};
    char err[200];

    memset(e, 0, sizeof *e);
    e->cfg = load(conf, &errs);
    if (!MW_TEST_ASSERT(e->cfg != NULL)) {
        has_error(&errs, "\001");
        mw_config_errors_free(&errs);
        return false;
    }
    if (redis) {
        e->cfg->state_backend = MW_STATE_REDIS;
        e->cfg->redis_port = (unsigned)redis_srv.port;
        e->cfg->redis_connect_timeout_ms = redis_timeout_ms;
        if (e->cfg->redis_command_timeout_ms == 250)     /* the default */
            e->cfg->redis_command_timeout_ms = redis_timeout_ms;
    }
    if (fail_closed)
        e->cfg->redis_failure_action = MW_STATE_FAIL_TEMPFAIL;
    e->store = mw_store_create(e->cfg, err, sizeof err);
    mw_store_set_clock(e->store, fake_clock, NULL);
    e->rl = mw_ratelimit_create(e->cfg, e->store, err, sizeof err);
    if (!MW_TEST_ASSERT(e->rl != NULL))
        fprintf(stderr, "  %s\n", err);
    return e->rl != NULL;
}

static void env_close(struct env *e)
{
    mw_ratelimit_destroy(&e->rl);
    mw_store_destroy(&e->store);
    mw_config_free(&e->cfg);
}

static mw_addr addr(const char *s)
{
    mw_addr a;
    if (!mw_addr_parse(s, &a))
        abort();
    return a;
}

static void trace_print(void *arg, const char *line)
{
    (void)arg;
    if (getenv("MW_TEST_VERBOSE"))
        fprintf(stderr, "    %s\n", line);
}

/* ---- tests --------------------------------------------------------------------- */

static const char *conf_basic =
    "ratelimit = { rules = (\n"
    "  { name = \"user-rcpt\"; key = [ \"sasl_user\" ]; rate = \"3/1m\"; cost = \"recipient\";\n"
    "    trust = [ \"authenticated\" ]; },\n"
    "  { name = \"ip-msg\"; key = \"ip\"; rate = \"2/1h\"; trust = [ \"inbound\" ];\n"
    "    allow_networks = [ \"192.0.2.0/24\" ]; allow_senders = [ \"*@trusted.example\", \"partner.example\" ]; },\n"
    "  { name = \"rcpt-combo\"; key = [ \"sender_domain\", \"recipient\" ]; rate = \"1/1d\";\n"
    "    trust = \"inbound\"; action = \"reject\";\n"
    "    reply = \"550 5.7.1 %{rule}: at most %{limit} from your domain, retry in %{retry_after}s\"; }\n"
    "); };\n";

static void test_config_errors(void)
{
    mw_config_errors errs = {0};
    mw_config *c;

    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"ip\"; rate = \"10/1x\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "mailwarden.conf:1: ratelimit.rules entry 1: rate"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"recipient\"; rate = \"10/h\"; stage = \"mail\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "the key recipient needs stage rcpt"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"sasl_user\"; rate = \"10/h\"; stage = \"connect\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "only the key ip"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"ip\"; rate = \"10/h\"; },\n"
             "{ name = \"a\"; key = \"ip\"; rate = \"1/s\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "already used"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"ip\"; rate = \"10/h\"; action = \"reject\";\n"
             "reply = \"451 4.7.1 slow down\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "needs a 5xx reply"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"ip\"; rate = \"10/h\"; reply = \"451 4.7.1 %{nope}\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "unknown placeholder"));
    mw_config_errors_free(&errs);
    c = load("ratelimit = { rules = ( { name = \"a\"; key = \"ip\"; } ); };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "missing \"rate\""));
    mw_config_errors_free(&errs);
    c = load("state = { backend = \"redis\"; };\nredis = { sentinels = [ \"127.0.0.1\" ]; };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "HOST:PORT"));
    mw_config_errors_free(&errs);
    c = load("reputation = { window = \"7x\"; };\n", &errs);
    MW_TEST_ASSERT(c == NULL && has_error(&errs, "not a duration"));
    mw_config_errors_free(&errs);

    /* Defaults filled in by the loader. */
    c = load(conf_basic, &errs);
    if (MW_TEST_ASSERT(c != NULL && c->nratelimit_rules == 3)) {
        MW_TEST_EQ_STR(c->ratelimit_rules[0].stage, "rcpt");
        MW_TEST_EQ_INT(c->ratelimit_rules[0].burst, 3);
        MW_TEST_EQ_STR(c->ratelimit_rules[1].stage, "mail");
        MW_TEST_EQ_STR(c->ratelimit_rules[1].cost, "message");
        MW_TEST_EQ_STR(c->ratelimit_rules[1].action, "tempfail");
        MW_TEST_EQ_INT(c->ratelimit_rules[1].ipv6_mask, 64);
        MW_TEST_EQ_STR(c->ratelimit_rules[2].stage, "rcpt");
    }
    mw_config_free(&c);
    mw_config_errors_free(&errs);

    unsigned long long n, p;
    MW_TEST_ASSERT(mw_config_parse_rate("200/1h", &n, &p, NULL, 0) && n == 200 && p == 3600);
    MW_TEST_ASSERT(mw_config_parse_rate("5/10m", &n, &p, NULL, 0) && n == 5 && p == 600);
    MW_TEST_ASSERT(mw_config_parse_rate("30/m", &n, &p, NULL, 0) && n == 30 && p == 60);
    MW_TEST_ASSERT(!mw_config_parse_rate("0/m", &n, &p, NULL, 0));
    MW_TEST_ASSERT(!mw_config_parse_rate("5/", &n, &p, NULL, 0));
    MW_TEST_ASSERT(!mw_config_parse_rate("5/3", &n, &p, NULL, 0));
}

static void check_user_rcpt(struct env *e, const char *label)
{
    mw_rl_decision d;
    mw_addr cl = addr("198.51.100.7");
    mw_rl_facts f = {.trust = MW_RL_TRUST_AUTHENTICATED, .client = &cl, .sasl_user = "Alice",
                     .sender = "alice@example.org", .recipient = "x@example.net"};

    for (int i = 0; i < 3; i++) {
        mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, trace_print, NULL);
        if (!MW_TEST_ASSERT(d.allowed && !d.store_failed))
            fprintf(stderr, "  %s: recipient %d refused\n", label, i);
    }
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, trace_print, NULL);
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "user-rcpt");
    MW_TEST_EQ_STR(d.rcode, "451");
    MW_TEST_EQ_STR(d.xcode, "4.7.1");
    MW_TEST_ASSERT(strstr(d.text, "user-rcpt") != NULL && strstr(d.text, "3/1m") != NULL);
    MW_TEST_EQ_INT(d.retry_after, 20);
    /* The user is the same in any case. */
    f.sasl_user = "ALICE";
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    advance_s(20);
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    /* An inbound session is not limited by the authenticated rule. */
    f.trust = MW_RL_TRUST_INBOUND;
    f.sender = "someone@partner.example";    /* rcpt-combo does not apply: allow? no, not on this rule */
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    MW_TEST_EQ_INT(d.rules_checked, 1);          /* only rcpt-combo */
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "rcpt-combo");
    MW_TEST_EQ_STR(d.rcode, "550");
    MW_TEST_EQ_STR(d.xcode, "5.7.1");
    MW_TEST_EQ_STR(d.text, "rcpt-combo: at most 1/1d from your domain, retry in 86400s");
    /* Another recipient is another bucket. */
    f.recipient = "y@example.net";
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
}

static void check_ip_msg(struct env *e)
{
    mw_rl_decision d;
    mw_addr v6a = addr("2001:db8:1:2::1"), v6b = addr("2001:db8:1:2:ffff::9"),
            v6c = addr("2001:db8:1:3::1"), ok = addr("192.0.2.55"), mapped = addr("::ffff:203.0.113.9"),
            v4 = addr("203.0.113.9");
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &v6a, .sender = "x@example.com"};

    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    f.client = &v6b;                      /* same /64 */
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, trace_print, NULL);
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "ip-msg");
    f.client = &v6c;                      /* another /64 */
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    /* Allow lists. */
    f.client = &ok;
    for (int i = 0; i < 5; i++) {
        mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
        MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);
    }
    f.client = &v6a;
    f.sender = "Bob@Trusted.Example";
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);
    f.sender = "bob@partner.example";
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);
    /* IPv4-mapped IPv6 is IPv4. */
    f.sender = "x@example.com";
    f.client = &mapped;
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    f.client = &v4;
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    /* Unknown client: the ip rule does not apply. */
    f.client = NULL;
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);
}

/* skip_reputation_above: a known good authenticated-domain reputation
 * exempts the message; unknown or lower scores are charged as usual. */
static void test_skip_reputation(void)
{
    struct env e;
    const char *conf = "ratelimit = { rules = (\n"
                       "  { name = \"rep\"; key = \"ip\"; rate = \"1/1h\"; stage = \"mail\";\n"
                       "    skip_reputation_above = \"0.5\"; } ); };\n";
    if (!env_open(&e, conf, false, false))
        return;
    mw_addr a = addr("198.51.100.20");
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &a, .sender = "x@good.example"};
    mw_rl_decision d;
    f.rep_domain_known = true;
    f.rep_domain_score = 0.9;
    for (int i = 0; i < 3; i++) {
        mw_ratelimit_check(e.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
        MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);   /* exempt, nothing charged */
    }
    f.rep_domain_score = 0.2;                                 /* known but not good enough */
    mw_ratelimit_check(e.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 1);
    mw_ratelimit_check(e.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    f.rep_domain_known = false;                               /* unknown: charged (and refused) */
    f.rep_domain_score = 0.9;
    mw_ratelimit_check(e.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    env_close(&e);
    mw_config_errors errs = {0};
    mw_config *bad = load("ratelimit = { rules = ( { name = \"x\"; key = \"ip\"; rate = \"1/1h\";\n"
                          "  skip_reputation_above = \"high\"; } ); };\n", &errs);
    MW_TEST_ASSERT(bad == NULL && has_error(&errs, ":2:"));
    mw_config_free(&bad);
    mw_config_errors_free(&errs);
}

static void test_basic_memory(void)
{
    struct env e;
    if (!env_open(&e, conf_basic, false, false))
        return;
    MW_TEST_ASSERT(mw_ratelimit_has_stage(e.rl, MW_RL_RCPT));
    MW_TEST_ASSERT(mw_ratelimit_has_stage(e.rl, MW_RL_MAIL));
    MW_TEST_ASSERT(!mw_ratelimit_has_stage(e.rl, MW_RL_EOM));
    check_user_rcpt(&e, "memory");
    check_ip_msg(&e);
    env_close(&e);
}

static void test_basic_redis(void)
{
    struct env e;
    if (!env_open(&e, conf_basic, true, false))
        return;
    check_user_rcpt(&e, "redis");
    check_ip_msg(&e);
    env_close(&e);
}

/* Two rules on one subject: one script call, nothing charged unless both
 * allow; cost per recipient at end of message. */
static const char *conf_eom =
    "ratelimit = { rules = (\n"
    "  { name = \"hour\"; key = \"sasl_user\"; rate = \"10/1h\"; cost = \"recipient\"; stage = \"eom\"; },\n"
    "  { name = \"minute\"; key = \"sasl_user\"; rate = \"2/1m\"; stage = \"eom\"; }\n"
    "); };\n";

static void check_eom(struct env *e)
{
    mw_rl_decision d;
    mw_rl_facts f = {.trust = MW_RL_TRUST_AUTHENTICATED, .sasl_user = "carol", .nrcpt = 3};
    mw_rl_bucket bk;
    char why[200];

    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);       /* hour 3/10, minute 1/2 */
    MW_TEST_ASSERT(d.allowed);
    MW_TEST_EQ_INT(d.rules_checked, 2);
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);       /* hour 6/10, minute 2/2 */
    MW_TEST_ASSERT(d.allowed);
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);       /* hour would allow, minute refuses */
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "minute");
    /* "hour" was not charged by the refused message: 4 left. */
    MW_TEST_EQ_INT(mw_ratelimit_inspect(e->rl, "rl:{user=carol}:hour", &bk, why, sizeof why),
                   MW_STORE_OK);
    MW_TEST_EQ_INT(bk.remaining, 4);
    MW_TEST_ASSERT(bk.configured);
    MW_TEST_EQ_STR(bk.subject, "user=carol");
    MW_TEST_EQ_STR(bk.rule, "hour");
    MW_TEST_EQ_INT(bk.reset_ms, 6 * 360000);
    advance_s(60);
    f.nrcpt = 5;                                                      /* hour: 5 > 4 left */
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "hour");
    f.nrcpt = 0;
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);       /* nothing to charge */
    MW_TEST_ASSERT(d.allowed);
    /* Reset: the bucket is full again. */
    MW_TEST_EQ_INT(mw_ratelimit_reset(e->rl, "rl:{user=carol}:hour", why, sizeof why), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_ratelimit_reset(e->rl, "rl:{user=carol}:hour", why, sizeof why),
                   MW_STORE_NOTFOUND);
    MW_TEST_EQ_INT(mw_ratelimit_inspect(e->rl, "rl:{user=carol}:hour", &bk, why, sizeof why),
                   MW_STORE_NOTFOUND);
    MW_TEST_EQ_INT(bk.remaining, 10);
    MW_TEST_EQ_INT(mw_ratelimit_inspect(e->rl, "user=carol:hour", &bk, why, sizeof why),
                   MW_STORE_ERROR);
    f.nrcpt = 3;
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
}

static void test_eom_memory(void)
{
    struct env e;
    if (env_open(&e, conf_eom, false, false))
        check_eom(&e);
    env_close(&e);
}

static void test_eom_redis(void)
{
    struct env e;
    if (env_open(&e, conf_eom, true, false))
        check_eom(&e);
    env_close(&e);
}

/* N threads through the limiter on a burst-B rule: exactly B allowed. */
#define NTHREADS 8
#define NTRIES   40
#define BURST    25

struct race {
    mw_ratelimit *rl;
    atomic_int    allowed, failed;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    mw_addr cl = addr("198.51.100.200");
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &cl, .sender = "a@b.example"};

    for (int i = 0; i < NTRIES; i++) {
        mw_rl_decision d;
        mw_ratelimit_check(r->rl, MW_RL_CONNECT, &f, &d, NULL, NULL);
        if (d.store_failed)
            atomic_fetch_add(&r->failed, 1);
        else if (d.allowed)
            atomic_fetch_add(&r->allowed, 1);
    }
    return NULL;
}

static void race(bool redis)
{
    struct env e;
    struct race r;
    pthread_t t[NTHREADS];
    char conf[300];

    snprintf(conf, sizeof conf, "ratelimit = { rules = ( { name = \"conn\"; key = \"ip\"; "
             "rate = \"%d/1h\"; stage = \"connect\"; } ); };\nredis = { pool_size = 3; "
             "command_timeout = 3000; };\n", BURST);
    if (!env_open(&e, conf, redis, false))
        return;
    r.rl = e.rl;
    atomic_init(&r.allowed, 0);
    atomic_init(&r.failed, 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, race_thread, &r);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    MW_TEST_EQ_INT(atomic_load(&r.allowed), BURST);
    MW_TEST_EQ_INT(atomic_load(&r.failed), 0);
    mw_rl_stats st;
    mw_ratelimit_stats(e.rl, &st);
    MW_TEST_EQ_INT(st.checks, NTHREADS * NTRIES);
    MW_TEST_EQ_INT(st.refused, NTHREADS * NTRIES - BURST);
    env_close(&e);
}

static void test_race_memory(void) { race(false); }
static void test_race_redis(void) { race(true); }

/* Redis killed: within the timeout, fail open or fail closed as configured. */
static void test_redis_down(void)
{
    struct env open_, closed;
    mw_rl_decision d;
    mw_addr cl = addr("198.51.100.9");
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &cl, .sender = "a@b.example"};
    const char *conf = "ratelimit = { rules = ( { name = \"m\"; key = \"ip\"; rate = \"100/1h\"; } ); };\n";

    redis_timeout_ms = 200;
    bool opened = env_open(&open_, conf, true, false) && env_open(&closed, conf, true, true);
    redis_timeout_ms = 5000;
    if (!opened)
        return;
    /* Both up first: retried until Redis answers within the 200 ms limits
     * (one try raced them on a loaded machine). */
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        mw_ratelimit_check(open_.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
        up = d.allowed && !d.store_failed;
        if (up) {
            mw_ratelimit_check(closed.rl, MW_RL_MAIL, &f, &d, NULL, NULL);
            up = d.allowed && !d.store_failed;
        }
        if (!up)
            mwt_sleep_ms(100);
    }
    MW_TEST_ASSERT(up);
    mwt_proc_kill(&redis_srv, SIGKILL);
    for (int i = 0; i < 20; i++) {
        double t0 = now_ms();
        mw_ratelimit_check(open_.rl, MW_RL_MAIL, &f, &d, trace_print, NULL);
        MW_TEST_ASSERT(now_ms() - t0 < FAIL_FAST_MS);
        MW_TEST_ASSERT(d.store_failed && d.allowed && d.rule == NULL);
        t0 = now_ms();
        mw_ratelimit_check(closed.rl, MW_RL_MAIL, &f, &d, trace_print, NULL);
        MW_TEST_ASSERT(now_ms() - t0 < FAIL_FAST_MS);
        MW_TEST_ASSERT(d.store_failed && !d.allowed);
        MW_TEST_EQ_STR(d.rcode, "451");
        MW_TEST_EQ_STR(d.xcode, "4.7.1");
    }
    mw_rl_stats st;
    mw_ratelimit_stats(open_.rl, &st);
    MW_TEST_EQ_INT(st.store_failures, 20);
    MW_TEST_EQ_INT(st.failed_open, 20);
    mw_ratelimit_stats(closed.rl, &st);
    MW_TEST_EQ_INT(st.store_failures, 20);
    MW_TEST_EQ_INT(st.failed_open, 0);
    env_close(&open_);
    env_close(&closed);
}

/* ---- round trips -------------------------------------------------------------------- */

static const char *conf_trips =
    "reputation = { enabled = true; min_samples = 1; };\n"
    "ratelimit = { rules = (\n"
    "  { name = \"mail-ip\"; key = \"ip\"; rate = \"100/1h\"; stage = \"mail\"; },\n"
    "  { name = \"eom-user\"; key = \"sasl_user\"; rate = \"100/1h\"; stage = \"eom\"; },\n"
    "  { name = \"eom-ip\"; key = \"ip\"; rate = \"2/1h\"; stage = \"eom\";\n"
    "    skip_reputation_above = \"0.5\"; },\n"
    "  { name = \"eom-ip-day\"; key = \"ip\"; rate = \"100/1d\"; stage = \"eom\"; },\n"
    "  { name = \"eom-from\"; key = \"sender\"; rate = \"100/1h\"; stage = \"eom\";\n"
    "    skip_reputation_above = \"0.5\"; }\n"
    "); };\n";

static unsigned long long trips(mw_store *s)
{
    mw_store_stats st;
    mw_store_stats_get(s, &st);
    return st.round_trips;
}

/* End of message as the engine does it: limits (independent part) and the
 * domain score in one exec; then, if rules waited, the dependent part. */
static void eom_stage(struct env *e, mw_reputation *rep, mw_rl_facts *f,
                      const mw_rep_subjects *subj, mw_rl_decision *d, mw_rep_result *res,
                      size_t want_ops2)
{
    mw_store_batch *b = mw_store_batch_new();
    mw_rep_ticket rt;
    mw_rl_ticket *t;

    f->part = MW_RL_PART_INDEPENDENT;
    t = mw_ratelimit_prepare(e->rl, MW_RL_EOM, f, b, trace_print, NULL);
    mw_reputation_prepare_score(rep, subj, b, &rt);
    MW_TEST_EQ_INT(mw_store_batch_count(b), 1 + 3);      /* eom-user; ip, net, dom */
    MW_TEST_EQ_INT(mw_store_exec(e->store, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_reputation_finish_score(rep, &rt, b, res), MW_STORE_OK);
    mw_ratelimit_finish(e->rl, &t, b, d, trace_print, NULL);
    MW_TEST_ASSERT(t == NULL && d->allowed && !d->store_failed);
    MW_TEST_EQ_INT(d->rules_checked, 1);
    MW_TEST_EQ_INT(d->rules_deferred, 3);                 /* eom-ip + eom-ip-day, eom-from */
    mw_store_batch_reset(b);
    f->part = MW_RL_PART_DEPENDENT;
    f->rep_domain_known = res->domain.known;
    f->rep_domain_score = res->domain.score;
    t = mw_ratelimit_prepare(e->rl, MW_RL_EOM, f, b, trace_print, NULL);
    MW_TEST_EQ_INT(mw_store_batch_count(b), want_ops2);
    if (mw_store_batch_count(b) > 0)
        MW_TEST_EQ_INT(mw_store_exec(e->store, b, NULL, 0), MW_STORE_OK);
    mw_ratelimit_finish(e->rl, &t, b, d, trace_print, NULL);
    mw_store_batch_free(&b);
}

static void check_trips(struct env *e)
{
    mw_reputation *rep = mw_reputation_create(e->cfg, e->store);
    mw_store_batch *b = mw_store_batch_new();
    mw_addr cl = addr("203.0.113.50");
    const char *doms[] = {"good.example"};
    mw_rep_subjects ipsubj = {.client = &cl};
    mw_rep_subjects domsubj = {.client = &cl, .domains = doms, .ndomains = 1};
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &cl, .sasl_user = "dave",
                     .sender = "d@good.example", .nrcpt = 1};
    mw_rl_decision d;
    mw_rep_result res;
    mw_rep_ticket rt;
    mw_rl_ticket *t;
    unsigned long long t0;

    if (!MW_TEST_ASSERT(rep != NULL))
        return;
    /* A check: one round trip when rules apply, none when none does. */
    t0 = trips(e->store);
    mw_ratelimit_check(e->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 0);
    MW_TEST_EQ_INT(trips(e->store) - t0, 0);
    mw_ratelimit_check(e->rl, MW_RL_MAIL, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 1);
    MW_TEST_EQ_INT(trips(e->store) - t0, 1);

    /* MAIL: the limits and the client's score in one exec. */
    t0 = trips(e->store);
    t = mw_ratelimit_prepare(e->rl, MW_RL_MAIL, &f, b, trace_print, NULL);
    mw_reputation_prepare_score(rep, &ipsubj, b, &rt);
    MW_TEST_EQ_INT(mw_store_batch_count(b), 1 + 2);       /* gcra; ip, net */
    MW_TEST_EQ_INT(mw_store_exec(e->store, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_reputation_finish_score(rep, &rt, b, &res), MW_STORE_OK);
    mw_ratelimit_finish(e->rl, &t, b, &d, trace_print, NULL);
    MW_TEST_ASSERT(t == NULL && d.allowed && d.rules_checked == 1);
    MW_TEST_ASSERT(!res.ip.known && res.ip.samples == 0);
    MW_TEST_EQ_INT(trips(e->store) - t0, 1);

    /* End of message, domain unknown: the rules that wait for the score go
     * in a second part (eom-ip charged: 1 of 2 left). */
    t0 = trips(e->store);
    eom_stage(e, rep, &f, &domsubj, &d, &res, 2);
    MW_TEST_ASSERT(!res.domain.known);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 3);
    MW_TEST_EQ_INT(trips(e->store) - t0, 2);

    /* The outcome: sent without waiting, no round trip. */
    for (int i = 0; i < 3; i++) {
        mw_store_batch_reset(b);
        mw_reputation_prepare_record(rep, MW_REP_GOOD, &domsubj, b, &rt);
        MW_TEST_EQ_INT(mw_store_batch_count(b), 3);
        MW_TEST_EQ_INT(mw_store_send(e->store, b, NULL, 0), MW_STORE_OK);
        MW_TEST_EQ_INT(mw_reputation_finish_record(rep, &rt, b), MW_STORE_OK);
    }
    MW_TEST_EQ_INT(trips(e->store) - t0, 2);

    /* Next messages: the domain is known good (the sent outcomes count):
     * eom-ip and eom-from are exempt, only eom-ip-day (same subject as
     * eom-ip) is left for the second part. */
    for (int i = 0; i < 2; i++) {
        t0 = trips(e->store);
        f.rep_domain_known = false;
        eom_stage(e, rep, &f, &domsubj, &d, &res, 1);
        MW_TEST_ASSERT(res.domain.known && res.domain.score > 0.99 && res.domain.samples == 3);
        MW_TEST_ASSERT(d.allowed && d.rules_checked == 1);
        MW_TEST_EQ_INT(trips(e->store) - t0, 2);
    }
    /* eom-ip was not charged by them: one unit left, then refused. */
    f.part = MW_RL_PART_ALL;
    f.rep_domain_known = false;
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed);
    mw_ratelimit_check(e->rl, MW_RL_EOM, &f, &d, NULL, NULL);
    MW_TEST_ASSERT(!d.allowed);
    MW_TEST_EQ_STR(d.rule, "eom-ip");

    /* No rule of the stage has skip_reputation_above (MAIL here): the
     * limits and the domain score are one round trip, nothing waits. */
    mw_store_batch_reset(b);
    mw_addr cl2 = addr("203.0.113.51");
    mw_rep_subjects s2 = {.client = &cl2, .domains = doms, .ndomains = 1};
    mw_rl_facts f2 = {.part = MW_RL_PART_INDEPENDENT, .trust = MW_RL_TRUST_INBOUND, .client = &cl2,
                      .sasl_user = "erin", .nrcpt = 1};
    t0 = trips(e->store);
    t = mw_ratelimit_prepare(e->rl, MW_RL_MAIL, &f2, b, NULL, NULL);
    mw_reputation_prepare_score(rep, &s2, b, &rt);
    MW_TEST_EQ_INT(mw_store_exec(e->store, b, NULL, 0), MW_STORE_OK);
    MW_TEST_EQ_INT(mw_reputation_finish_score(rep, &rt, b, &res), MW_STORE_OK);
    mw_ratelimit_finish(e->rl, &t, b, &d, NULL, NULL);
    MW_TEST_ASSERT(d.allowed && d.rules_checked == 1 && d.rules_deferred == 0);
    MW_TEST_ASSERT(res.domain.known);
    MW_TEST_EQ_INT(trips(e->store) - t0, 1);
    mw_store_batch_free(&b);
    mw_reputation_destroy(&rep);
}

static void test_trips_memory(void)
{
    struct env e;
    if (env_open(&e, conf_trips, false, false))
        check_trips(&e);
    env_close(&e);
}

static void test_trips_redis(void)
{
    struct env e;
    if (env_open(&e, conf_trips, true, false))
        check_trips(&e);
    env_close(&e);
}

/* A shared batch whose exec failed: finish reports the store failure. */
static void test_finish_unexecuted(void)
{
    struct env e;
    if (!env_open(&e, conf_trips, false, true))
        return;
    mw_addr cl = addr("203.0.113.52");
    mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &cl};
    mw_store_batch *b = mw_store_batch_new();
    mw_rl_decision d;
    mw_rl_ticket *t = mw_ratelimit_prepare(e.rl, MW_RL_MAIL, &f, b, NULL, NULL);
    MW_TEST_EQ_INT(mw_store_batch_count(b), 1);
    mw_ratelimit_finish(e.rl, &t, b, &d, NULL, NULL);      /* never executed */
    MW_TEST_ASSERT(t == NULL && d.store_failed && !d.allowed);
    MW_TEST_EQ_STR(d.rcode, "451");
    mw_ratelimit_finish(e.rl, &t, b, &d, NULL, NULL);      /* NULL ticket: nothing */
    MW_TEST_ASSERT(d.allowed && !d.store_failed);
    mw_store_batch_free(&b);
    env_close(&e);
}

static void cleanup(void)
{
    mwt_proc_stop(&redis_srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test_checks_ratelimit", "mail",
                     MW_LOG_WARN);
    if (!mwt_proc_dir(&redis_srv, "rl"))
        return 2;
    atexit(cleanup);
    MW_TEST_RUN(test_config_errors);
    MW_TEST_RUN(test_skip_reputation);
    MW_TEST_RUN(test_basic_memory);
    MW_TEST_RUN(test_eom_memory);
    MW_TEST_RUN(test_race_memory);
    MW_TEST_RUN(test_trips_memory);
    MW_TEST_RUN(test_finish_unexecuted);
    if (!MW_TEST_ASSERT(mwt_redis_start(&redis_srv, "rl"))) {
        fprintf(stderr, "redis-server did not start: the redis tests cannot run\n");
        return MW_TEST_SUMMARY();
    }
    MW_TEST_RUN(test_basic_redis);
    MW_TEST_RUN(test_eom_redis);
    MW_TEST_RUN(test_race_redis);
    MW_TEST_RUN(test_trips_redis);
    MW_TEST_RUN(test_redis_down);
    return MW_TEST_SUMMARY();
}
