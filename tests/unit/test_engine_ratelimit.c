/*
 * test_engine_ratelimit.c - when the engine charges rate limits in an SMTP
 * session (docs/ratelimit.md, "When a unit is charged"), on the memory
 * store and on a real redis-server this test starts on a free port:
 *
 *   - round trips per message (the store's counter; with Redis also the
 *     server's own EVALSHA count from INFO commandstats): MAIL costs none,
 *     the first recipient one (its rules and the MAIL-stage rules in ONE
 *     script call), every further recipient one;
 *   - a MAIL-stage limit exceeded: MAIL is accepted, the first recipient is
 *     refused with that limit's reply, and so is every further one;
 *   - nothing is charged for a message without recipients, nor when the
 *     first recipient is refused (by a RCPT-stage rule, or by the MAIL-stage
 *     one: then its RCPT-stage buckets are untouched);
 *   - per-recipient cost over several recipients, MAIL charged once;
 *   - without an SMTP session (Exim's scan, `mailwarden check`: no
 *     mw_session_connect) MAIL is still charged and refused at MAIL;
 *   - threads racing through first recipients (one call across subjects,
 *     several shards of the memory store): exactly the MAIL rule's burst;
 *   - reputation: the client's score rides with the first recipient; a
 *     MAIL-stage refusal is one bad outcome per message; a limited message
 *     does not make the next one of the connection bad.
 *
 * SPF is off (it has its own tests); the client is inbound.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "../../filter/engine/engine_priv.h"
#include "log.h"
#include "mwtest.h"
#include "mwtest_procs.h"

static mwt_proc redis_srv;          /* its directory also holds the config files */

/* ---- plumbing ------------------------------------------------------------------ */

/* The server's own count of EVALSHA calls (INFO commandstats). */
static long long redis_evalsha_calls(void)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
    long long n = -1;
    if (c != NULL && !c->err) {
        redisReply *r = redisCommand(c, "INFO commandstats");
        if (r != NULL && r->type == REDIS_REPLY_STRING) {
            const char *p = strstr(r->str, "cmdstat_evalsha:calls=");
            n = p != NULL ? atoll(p + strlen("cmdstat_evalsha:calls=")) : 0;
        }
        if (r != NULL)
            freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return n;
}

/* mail-ip: the MAIL stage, 3 messages per client; ip-rcpt: 5 recipients per
 * client (RCPT stage, cost recipient); rcpt-cap: 2 per recipient, reject. */
#define RULES                                                                                  \
    "ratelimit = { rules = (\n"                                                                \
    "  { name = \"mail-ip\"; key = \"ip\"; rate = \"3/1h\"; stage = \"mail\"; },\n"            \
    "  { name = \"ip-rcpt\"; key = \"ip\"; rate = \"5/1h\"; cost = \"recipient\"; },\n"        \
    "  { name = \"rcpt-cap\"; key = \"recipient\"; rate = \"2/1d\"; action = \"reject\"; }\n" \
    "); };\n"

static mw_engine *make_engine(bool redis, bool rep)
{
    char path[600], text[2048];
    snprintf(path, sizeof path, "%s/mailwarden.conf", redis_srv.dir);
    snprintf(text, sizeof text,
             "dns = { mode = \"forward\"; forwarders = [\"127.0.0.1@9\"]; };\n"
             "spf = { enabled = false; };\n%s%s" RULES,
             redis ? "" : "state = { backend = \"memory\"; };\n",
             rep ? "reputation = { enabled = true; min_samples = 1; };\n" : "");
    if (redis)
        snprintf(text + strlen(text), sizeof text - strlen(text),
                 "state = { backend = \"redis\"; };\nredis = { host = \"127.0.0.1\"; port = %d; "
                 "connect_timeout = 5000; command_timeout = 5000; };\n",   /* not racing 250 ms */
                 redis_srv.port);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        exit(2);
    fputs(text, f);
    fclose(f);
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(path, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config error: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    if (!MW_TEST_ASSERT(cfg != NULL))
        return NULL;
    char err[256];
    mw_engine *e = mw_engine_create(cfg, err, sizeof err);
    if (!MW_TEST_ASSERT(e != NULL))
        fprintf(stderr, "engine: %s\n", err);
    return e;
}

static unsigned long long trips(mw_engine *e)
{
    mw_runtime *rt = mw_engine_acquire(e, false);
    mw_store_stats st;
    mw_store_stats_get(rt->store, &st);
    mw_engine_release(e, &rt, false);
    return st.round_trips;
}

/* An SMTP session as the milter drives it. */
static mw_session *smtp(mw_engine *e, const char *ip)
{
    mw_session *s = mw_session_new(e, ip, NULL);
    mw_session_connect(s);
    MW_TEST_ASSERT(mw_session_refusal(s) == NULL);
    mw_session_helo(s, "client.example");
    return s;
}

/* "" when accepted, else "RCODE TEXT". */
static const char *step(mw_session *s, char *buf, size_t len)
{
    const mw_reply *r = mw_session_refusal(s);
    if (r == NULL)
        return "";
    snprintf(buf, len, "%s %s", r->rcode, r->text);
    return buf;
}

static const char *mail(mw_session *s, const char *from)
{
    static char buf[600];
    mw_session_mail(s, from);
    return step(s, buf, sizeof buf);
}

static const char *rcpt(mw_session *s, const char *to)
{
    static char buf[600];
    mw_session_rcpt(s, to);
    return step(s, buf, sizeof buf);
}

/* A whole message with n recipients r<tag>-<i>@dest.example; returns the
 * number of recipients accepted. */
static int message(mw_session *s, const char *tag, int n)
{
    int ok = 0;
    char to[100];
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    for (int i = 0; i < n; i++) {
        snprintf(to, sizeof to, "<r%s-%d@dest.example>", tag, i);
        ok += rcpt(s, to)[0] == '\0';
    }
    if (ok > 0)
        mw_session_eom(s);
    else
        mw_session_abort(s);
    return ok;
}

#define MAIL_IP_REFUSAL "451 rate limit exceeded (mail-ip: 3/1h), try again later"
#define IP_RCPT_REFUSAL "451 rate limit exceeded (ip-rcpt: 5/1h), try again later"
#define CAP_REFUSAL     "550 rate limit exceeded (rcpt-cap: 2/1d)"

/* ---- the cases ------------------------------------------------------------------ */

static void check_trips(mw_engine *e, bool redis)
{
    mw_session *s = smtp(e, "203.0.113.10");
    unsigned long long t0 = trips(e);
    long long ev0 = redis ? redis_evalsha_calls() : 0;

    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 0);                     /* MAIL: nothing yet */
    MW_TEST_EQ_STR(rcpt(s, "<t1@dest.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 1);                     /* first recipient: one */
    if (redis)
        MW_TEST_EQ_INT(redis_evalsha_calls() - ev0, 1);   /* mail-ip, ip-rcpt, rcpt-cap: one call */
    mw_session_eom(s);
    MW_TEST_EQ_INT(trips(e) - t0, 1);                     /* no eom rules */

    /* Two recipients: the second one is one more (its own rules only). */
    t0 = trips(e);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<t2@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<t3@dest.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 2);
    mw_session_eom(s);
    mw_session_free(&s);
}

static void check_mail_refused_at_rcpt(mw_engine *e)
{
    mw_session *s = smtp(e, "203.0.113.20");
    for (int m = 0; m < 3; m++) {
        char tag[8];
        snprintf(tag, sizeof tag, "a%d", m);
        MW_TEST_EQ_INT(message(s, tag, 1), 1);
    }
    /* The 4th message: MAIL accepted, each recipient refused with mail-ip's reply. */
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<x1@dest.example>"), MAIL_IP_REFUSAL);
    MW_TEST_EQ_STR(rcpt(s, "<x1@dest.example>"), MAIL_IP_REFUSAL);
    MW_TEST_EQ_STR(rcpt(s, "<x2@dest.example>"), MAIL_IP_REFUSAL);
    mw_session_abort(s);
    mw_session_free(&s);
    /* ... and charged nothing else: x1's rcpt-cap (2) is whole. */
    s = smtp(e, "203.0.113.21");
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<x1@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<x1@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<x1@dest.example>"), CAP_REFUSAL);
    mw_session_eom(s);
    mw_session_free(&s);
}

static void check_not_charged(mw_engine *e)
{
    /* Messages without a recipient (RSET, or every RCPT refused by the
     * MTA before the milter sees it) charge nothing. */
    mw_session *s = smtp(e, "203.0.113.30");
    for (int m = 0; m < 5; m++) {
        MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
        mw_session_abort(s);
    }
    /* The first recipient refused by a RCPT-stage rule: the MAIL stage is
     * not charged either.  Use up cap@'s 2 from another client first. */
    mw_session *o = smtp(e, "203.0.113.31");
    MW_TEST_EQ_STR(mail(o, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(o, "<cap@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(o, "<cap@dest.example>"), "");
    mw_session_eom(o);
    mw_session_free(&o);
    for (int m = 0; m < 2; m++) {
        MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
        MW_TEST_EQ_STR(rcpt(s, "<cap@dest.example>"), CAP_REFUSAL);
        mw_session_abort(s);
    }
    /* So mail-ip still has all 3: three messages pass, the 4th does not. */
    for (int m = 0; m < 3; m++) {
        char tag[8];
        snprintf(tag, sizeof tag, "n%d", m);
        MW_TEST_EQ_INT(message(s, tag, 1), 1);
    }
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<n9@dest.example>"), MAIL_IP_REFUSAL);
    mw_session_abort(s);
    /* A refused first recipient, then an accepted one: MAIL is charged
     * once, with the accepted one (client .32: 3 messages still pass). */
    mw_session_free(&s);
    s = smtp(e, "203.0.113.32");
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<cap@dest.example>"), CAP_REFUSAL);
    MW_TEST_EQ_STR(rcpt(s, "<ok@dest.example>"), "");
    mw_session_eom(s);
    MW_TEST_EQ_INT(message(s, "p1", 1), 1);
    MW_TEST_EQ_INT(message(s, "p2", 1), 1);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<p3@dest.example>"), MAIL_IP_REFUSAL);
    mw_session_abort(s);
    mw_session_free(&s);
}

static void check_per_recipient(mw_engine *e)
{
    /* ip-rcpt: 5 recipients per client, each charged; mail-ip once per message. */
    mw_session *s = smtp(e, "203.0.113.40");
    MW_TEST_EQ_INT(message(s, "m1", 3), 3);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<m2-0@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<m2-1@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<m2-2@dest.example>"), IP_RCPT_REFUSAL);
    mw_session_eom(s);
    /* The first recipient refused by ip-rcpt: mail-ip is not charged. */
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<m3-0@dest.example>"), IP_RCPT_REFUSAL);
    mw_session_abort(s);
    mw_session_free(&s);
    /* So mail-ip was charged twice (once per message, not per recipient):
     * one MAIL left, seen where MAIL is charged at MAIL (no SMTP session). */
    s = mw_session_new(e, "203.0.113.40", NULL);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    mw_session_abort(s);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), MAIL_IP_REFUSAL);
    mw_session_free(&s);
}

static void check_no_smtp_session(mw_engine *e)
{
    /* No mw_session_connect (Exim's scan, `mailwarden check`): MAIL is
     * charged, and refused, at MAIL. */
    mw_session *s = mw_session_new(e, "203.0.113.50", NULL);
    unsigned long long t0 = trips(e);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 1);
    mw_session_abort(s);
    for (int m = 0; m < 2; m++) {
        MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
        mw_session_abort(s);
    }
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), MAIL_IP_REFUSAL);
    mw_session_free(&s);
}

/* Bad outcomes recorded for a client (rep:{ip=IP}, fields BUCKET:b). */
static long long bad_outcomes(mw_engine *e, const char *ip)
{
    mw_runtime *rt = mw_engine_acquire(e, false);
    mw_store_batch *b = mw_store_batch_new();
    char key[100];
    long long n = 0;
    snprintf(key, sizeof key, "rep:{ip=%s}", ip);
    size_t op = mw_store_batch_hgetall(b, key, strlen(key));
    if (mw_store_exec(rt->store, b, NULL, 0) == MW_STORE_OK &&
        mw_store_batch_status(b, op) == MW_STORE_OK) {
        const mw_store_value *v = mw_store_batch_result(b, op);
        for (size_t i = 0; i + 1 < v->nelem; i += 2) {
            const char *f = v->elem[i].str;
            size_t fl = strlen(f);
            if (fl > 2 && strcmp(f + fl - 2, ":b") == 0)
                n += atoll(v->elem[i + 1].str);
        }
    }
    mw_store_batch_free(&b);
    mw_engine_release(e, &rt, false);
    return n;
}

/* Reputation on: the client's score rides with the first recipient (MAIL
 * still costs nothing); a MAIL-stage refusal records one bad outcome per
 * message however many recipients it refuses; a later message of the same
 * connection is not counted bad because an earlier one was limited. */
static void check_reputation(mw_engine *e)
{
    const char *ip = "203.0.113.60";
    mw_session *s = smtp(e, ip);
    unsigned long long t0 = trips(e);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 0);
    MW_TEST_EQ_STR(rcpt(s, "<q0@dest.example>"), "");
    MW_TEST_EQ_INT(trips(e) - t0, 1);                     /* limits + ip, net score */
    mw_session_eom(s);                                     /* neutral outcome: not recorded */
    MW_TEST_EQ_INT(bad_outcomes(e, ip), 0);

    /* A recipient limited (a second one to cap2@): this message is bad ... */
    mw_session *o = smtp(e, "203.0.113.61");
    MW_TEST_EQ_INT(message(o, "cap2", 1), 1);
    MW_TEST_EQ_INT(message(o, "cap2", 1), 1);
    mw_session_free(&o);
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<q1@dest.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<rcap2-0@dest.example>"), CAP_REFUSAL);
    mw_session_eom(s);
    MW_TEST_EQ_INT(bad_outcomes(e, ip), 1);
    /* ... the next one, accepted, is not. */
    MW_TEST_EQ_INT(message(s, "q2", 1), 1);
    MW_TEST_EQ_INT(bad_outcomes(e, ip), 1);

    /* mail-ip used up (3 messages): the 4th is refused at each recipient,
     * and counted bad once. */
    MW_TEST_EQ_STR(mail(s, "<a@sender.example>"), "");
    MW_TEST_EQ_STR(rcpt(s, "<q3@dest.example>"), MAIL_IP_REFUSAL);
    MW_TEST_EQ_STR(rcpt(s, "<q4@dest.example>"), MAIL_IP_REFUSAL);
    mw_session_abort(s);
    MW_TEST_EQ_INT(bad_outcomes(e, ip), 2);
    mw_session_free(&s);
}

/* Threads racing through first recipients (one gcra call across three
 * subjects each: the memory backend locks several shards) on one client:
 * exactly mail-ip's burst of 3 pass, the rest are refused by it. */
struct racer {
    mw_ratelimit *rl;
    int           id;
    int           allowed, refused_mail;
};

static void *race_thread(void *arg)
{
    struct racer *r = arg;
    mw_addr cl;
    mw_addr_parse("203.0.113.70", &cl);
    for (int i = 0; i < 20; i++) {
        char to[64];
        snprintf(to, sizeof to, "race-%d-%d@dest.example", r->id, i);
        mw_rl_facts f = {.trust = MW_RL_TRUST_INBOUND, .client = &cl, .sender = "a@sender.example",
                         .recipient = to, .with_mail = true};
        mw_rl_decision d;
        mw_ratelimit_check(r->rl, MW_RL_RCPT, &f, &d, NULL, NULL);
        r->allowed += d.allowed;
        r->refused_mail += !d.allowed && d.rule != NULL && strcmp(d.rule, "mail-ip") == 0 &&
                           d.rule_stage == MW_RL_MAIL;
    }
    return NULL;
}

static void check_race(mw_engine *e)
{
    mw_runtime *rt = mw_engine_acquire(e, false);
    struct racer r[8];
    pthread_t th[8];
    int allowed = 0, refused = 0;
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){.rl = rt->ratelimit, .id = i};
        pthread_create(&th[i], NULL, race_thread, &r[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        allowed += r[i].allowed;
        refused += r[i].refused_mail;
    }
    MW_TEST_EQ_INT(allowed, 3);
    MW_TEST_EQ_INT(refused, 8 * 20 - 3);
    mw_engine_release(e, &rt, false);
}

static void run_all(bool redis)
{
    mw_engine *e = make_engine(redis, false);
    if (e == NULL)
        return;
    check_trips(e, redis);
    check_mail_refused_at_rcpt(e);
    check_not_charged(e);
    check_per_recipient(e);
    check_no_smtp_session(e);
    check_race(e);
    mw_engine_destroy(&e);
    if ((e = make_engine(redis, true)) == NULL)
        return;
    check_reputation(e);
    mw_engine_destroy(&e);
}

static void test_memory(void) { run_all(false); }
static void test_redis(void) { run_all(true); }

static void cleanup(void)
{
    mwt_proc_stop(&redis_srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test_engine_ratelimit", "mail", MW_LOG_WARN);
    if (!mwt_proc_dir(&redis_srv, "erl"))
        return 2;
    atexit(cleanup);
    MW_TEST_RUN(test_memory);
    if (!MW_TEST_ASSERT(mwt_redis_start(&redis_srv, "erl"))) {
        fprintf(stderr, "redis-server did not start: the redis tests cannot run\n");
        return MW_TEST_SUMMARY();
    }
    MW_TEST_RUN(test_redis);
    return MW_TEST_SUMMARY();
}
