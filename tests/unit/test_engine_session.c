/*
 * test_engine_session.c - the engine without an MTA: trust classes, forged
 * Authentication-Results removal, header edits, policy verdicts, reload
 * semantics (a message keeps the runtime it started with) and the
 * in-flight count used by graceful shutdown.
 *
 * SPF is disabled in these configs (it has its own tests with a real DNS
 * server); the point here is the engine's own logic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "mwtest.h"

static char cfgpath[] = "/tmp/mw-engine-test-XXXXXX";

static mw_config *load(const char *text)
{
    FILE *f = fopen(cfgpath, "w");
    fputs(text, f);
    fclose(f);
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(cfgpath, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config error: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    return cfg;
}

#define BASE "dns = { mode = \"forward\"; forwarders = [\"127.0.0.1@9\"]; };\n" \
             "spf = { enabled = false; };\n" \
             "trust = { internal_networks = [\"10.0.0.0/8\"]; submission_daemons = [\"ORIGINATING\"]; };\n"

static mw_engine *make_engine(const char *extra)
{
    char text[1024];
    snprintf(text, sizeof text, BASE "%s", extra);
    mw_config *cfg = load(text);
    if (!MW_TEST_ASSERT(cfg != NULL))
        return NULL;
    char err[256];
    mw_engine *e = mw_engine_create(cfg, err, sizeof err);
    if (!MW_TEST_ASSERT(e != NULL))
        fprintf(stderr, "engine: %s\n", err);
    return e;
}

static mw_trust trust_of(mw_engine *e, const char *ip, const char *auth, const char *daemon)
{
    mw_session *s = mw_session_new(e, ip, NULL);
    if (auth)
        mw_session_macro(s, "{auth_authen}", auth);
    if (daemon)
        mw_session_macro(s, "{daemon_name}", daemon);
    mw_session_helo(s, "client.example");
    mw_session_mail(s, "<a@example.com>");
    mw_trust t = mw_session_results(s)->trust;
    mw_session_free(&s);
    return t;
}

static void test_trust(void)
{
    mw_engine *e = make_engine("authserv_id = \"mx.test\";\n");
    if (!e)
        return;
    MW_TEST_EQ_INT(trust_of(e, "192.0.2.1", NULL, NULL), MW_TRUST_INBOUND);
    MW_TEST_EQ_INT(trust_of(e, "10.1.2.3", NULL, NULL), MW_TRUST_INTERNAL);
    MW_TEST_EQ_INT(trust_of(e, "::ffff:10.1.2.3", NULL, NULL), MW_TRUST_INTERNAL);
    MW_TEST_EQ_INT(trust_of(e, "192.0.2.1", "alice", NULL), MW_TRUST_AUTHENTICATED);
    MW_TEST_EQ_INT(trust_of(e, "192.0.2.1", "", NULL), MW_TRUST_INBOUND);   /* empty macro */
    MW_TEST_EQ_INT(trust_of(e, "192.0.2.1", NULL, "originating"), MW_TRUST_SUBMISSION);
    MW_TEST_EQ_INT(trust_of(e, "192.0.2.1", NULL, "mx.test"), MW_TRUST_INBOUND);
    MW_TEST_EQ_INT(trust_of(e, NULL, NULL, NULL), MW_TRUST_INBOUND);          /* unix socket peer */
    mw_engine_destroy(&e);
    MW_TEST_ASSERT(e == NULL);
}

static void test_forged_authres(void)
{
    mw_engine *e = make_engine("authserv_id = \"mx.test\";\n");
    if (!e)
        return;
    mw_session *s = mw_session_new(e, "192.0.2.1", "client.example");
    mw_session_helo(s, "client.example");
    mw_session_mail(s, "<a@example.com>");
    mw_session_rcpt(s, "<b@example.org>");
    const char *h1 = "MX.TEST; spf=pass smtp.mailfrom=a@example.com";
    const char *h2 = "other.example; spf=fail";
    const char *h3 = "\n\tmx.test;\n\tdkim=pass";
    mw_session_header(s, "Authentication-Results", h1, strlen(h1));
    mw_session_header(s, "Subject", "hi", 2);
    mw_session_header(s, "authentication-results", h2, strlen(h2));
    mw_session_header(s, "AUTHENTICATION-RESULTS", h3, strlen(h3));
    mw_session_eoh(s);
    const mw_verdict *v = mw_session_eom(s);
    MW_TEST_EQ_INT(v->action, MW_ACTION_ACCEPT);
    /* #3 then #1 (highest first), #2 (foreign) kept */
    if (MW_TEST_EQ_INT(v->nremove, 2)) {
        MW_TEST_EQ_INT(v->remove[0].index, 3);
        MW_TEST_EQ_INT(v->remove[1].index, 1);
    }
    /* spf disabled, DKIM verification on: our A-R says dkim=none */
    if (MW_TEST_EQ_INT(v->nadd, 1)) {
        MW_TEST_EQ_STR(v->add[0].name, "Authentication-Results");
        /* no From header: DMARC cannot be evaluated */
        MW_TEST_EQ_STR(v->add[0].value, "mx.test;\n\tdkim=none;\n\tarc=none smtp.remote-ip=192.0.2.1;\n\tdmarc=permerror (no From header)");
    }
    MW_TEST_ASSERT(mw_session_trace_count(s) >= 3);
    /* a second end of message returns the same verdict, evaluates nothing again */
    size_t ntrace = mw_session_trace_count(s);
    MW_TEST_ASSERT(mw_session_eom(s) == v);
    MW_TEST_EQ_INT(mw_session_trace_count(s), ntrace);
    /* a second message on the same connection starts clean */
    mw_session_mail(s, "<c@example.com>");
    const mw_verdict *v2 = mw_session_eom(s);
    MW_TEST_EQ_INT(v2->nremove, 0);
    mw_session_free(&s);
    mw_engine_destroy(&e);
}

static void test_policy_reply(void)
{
    /* a policy file that rejects everything inbound from one network */
    char pol[] = "/tmp/mw-engine-pol-XXXXXX";
    int fd = mkstemp(pol);
    const char *ptext = "description = \"test\";\n"
                        "rules = ( { name = \"block-net\"; trust = [\"inbound\"]; network = [\"198.51.100.0/24\"];\n"
                        "            action = \"reject\"; reply = \"554 5.7.1 go away %{client_ip} 100%%\"; },\n"
                        "          { name = \"slow\"; network = [\"203.0.113.0/24\"]; action = \"tempfail\"; } );\n";
    if (write(fd, ptext, strlen(ptext)) < 0)
        perror("write");
    close(fd);
    char extra[256];
    snprintf(extra, sizeof extra, "authserv_id = \"mx.test\";\npolicy = \"%s\";\n", pol);
    mw_engine *e = make_engine(extra);
    if (e) {
        mw_session *s = mw_session_new(e, "198.51.100.7", NULL);
        mw_session_mail(s, "<a@example.com>");
        const mw_verdict *v = mw_session_eom(s);
        MW_TEST_EQ_INT(v->action, MW_ACTION_REJECT);
        MW_TEST_EQ_STR(v->rcode, "554");
        MW_TEST_EQ_STR(v->xcode, "5.7.1");
        MW_TEST_EQ_STR(v->text, "go away 198.51.100.7 100%");
        MW_TEST_EQ_STR(v->rule, "block-net");
        mw_session_free(&s);

        s = mw_session_new(e, "203.0.113.9", NULL);
        mw_session_mail(s, "<a@example.com>");
        v = mw_session_eom(s);
        MW_TEST_EQ_INT(v->action, MW_ACTION_TEMPFAIL);
        MW_TEST_EQ_STR(v->rcode, "451");
        MW_TEST_EQ_STR(v->xcode, "4.7.1");
        mw_session_free(&s);

        s = mw_session_new(e, "192.0.2.9", NULL);
        mw_session_mail(s, "<a@example.com>");
        v = mw_session_eom(s);
        MW_TEST_EQ_INT(v->action, MW_ACTION_ACCEPT);
        MW_TEST_ASSERT(v->text == NULL);
        mw_session_free(&s);
        mw_engine_destroy(&e);
    }
    unlink(pol);
}

static void test_reload_and_inflight(void)
{
    mw_engine *e = make_engine("authserv_id = \"old.test\";\n");
    if (!e)
        return;
    MW_TEST_EQ_INT(mw_engine_generation(e), 1);
    mw_session *s = mw_session_new(e, "192.0.2.1", NULL);
    mw_session_mail(s, "<a@example.com>");
    MW_TEST_EQ_INT(mw_engine_active_messages(e), 1);
    MW_TEST_ASSERT(!mw_engine_wait_idle(e, 50));

    /* reload while the message is in flight */
    mw_config *cfg = load(BASE "authserv_id = \"new.test\";\n");
    char err[256];
    MW_TEST_ASSERT(cfg && mw_engine_reload(e, cfg, err, sizeof err));
    MW_TEST_EQ_INT(mw_engine_generation(e), 2);

    /* the in-flight message still uses the old authserv-id */
    const char *old = "old.test; spf=pass";
    const char *nw = "new.test; spf=pass";
    mw_session_header(s, "Authentication-Results", old, strlen(old));
    mw_session_header(s, "Authentication-Results", nw, strlen(nw));
    const mw_verdict *v = mw_session_eom(s);
    MW_TEST_ASSERT(v->nremove == 1 && v->remove[0].index == 1);
    MW_TEST_EQ_INT(mw_engine_active_messages(e), 0);
    MW_TEST_ASSERT(mw_engine_wait_idle(e, 50));

    /* the next message sees the new one */
    mw_session_mail(s, "<a@example.com>");
    mw_session_header(s, "Authentication-Results", old, strlen(old));
    mw_session_header(s, "Authentication-Results", nw, strlen(nw));
    v = mw_session_eom(s);
    MW_TEST_ASSERT(v->nremove == 1 && v->remove[0].index == 2);

    /* a reload that fails (policy missing) keeps the running generation */
    cfg = load(BASE "authserv_id = \"x.test\";\npolicy = \"/nonexistent/policy.conf\";\n");
    if (cfg) {
        bool ok = mw_engine_reload(e, cfg, err, sizeof err);
        MW_TEST_ASSERT(!ok);
        if (!ok)
            mw_config_free(&cfg);
        MW_TEST_EQ_INT(mw_engine_generation(e), 2);
    }
    /* abort forgets the message and releases the in-flight count */
    mw_session_mail(s, "<a@example.com>");
    MW_TEST_EQ_INT(mw_engine_active_messages(e), 1);
    mw_session_abort(s);
    MW_TEST_EQ_INT(mw_engine_active_messages(e), 0);
    mw_session_mail(s, "<a@example.com>");
    mw_session_free(&s);   /* close mid-message releases too */
    MW_TEST_EQ_INT(mw_engine_active_messages(e), 0);
    mw_engine_destroy(&e);
}

/* policy_shadow: a mixed run gives the expected difference counts, and the
 * messages keep the real policy's verdicts. */
static void test_policy_shadow(void)
{
    char real[] = "/tmp/mw-shadow-real-XXXXXX", shadow[] = "/tmp/mw-shadow-strict-XXXXXX";
    int fr = mkstemp(real), fs = mkstemp(shadow);
    if (!MW_TEST_ASSERT(fr >= 0 && fs >= 0))
        return;
    const char *rp = "rules = ( { name = \"all\"; action = \"accept\"; } );\n";
    const char *sp = "rules = (\n { name = \"block\"; recipient_domain = [ \"block.example\" ]; action = \"reject\"; },\n"
                     " { name = \"soft\"; recipient = [ \"soft@*\" ]; action = \"tempfail\"; },\n"
                     " { name = \"same\"; action = \"accept\"; } );\n";
    (void)!write(fr, rp, strlen(rp));
    (void)!write(fs, sp, strlen(sp));
    close(fr);
    close(fs);
    char extra[256];
    snprintf(extra, sizeof extra, "authserv_id = \"mx.test\";\ndmarc = { enabled = false; };\narc = { verify = false; };\npolicy = \"%s\";\npolicy_shadow = \"%s\";\n", real,
             shadow);
    mw_engine *e = make_engine(extra);
    if (e) {
        static const char *const rcpts[] = {"a@block.example", "b@ok.example", "soft@ok.example", "c@block.example",
                                            "d@ok.example", "e@BLOCK.example"};
        int diffs = 0;
        for (size_t i = 0; i < sizeof rcpts / sizeof rcpts[0]; i++) {
            mw_session *s = mw_session_new(e, "192.0.2.1", "client.example");
            mw_session_helo(s, "client.example");
            mw_session_mail(s, "<a@example.com>");
            mw_session_rcpt(s, rcpts[i]);
            mw_session_header(s, "From", "a@example.com", 13);
            mw_session_eoh(s);
            const mw_verdict *v = mw_session_eom(s);
            MW_TEST_EQ_INT(v->action, MW_ACTION_ACCEPT);   /* the real policy decides */
            MW_TEST_EQ_STR(v->rule, "all");
            for (size_t t = 0; t < mw_session_trace_count(s); t++)
                diffs += strstr(mw_session_trace(s, t), "policy_shadow") != NULL;
            mw_session_free(&s);
        }
        MW_TEST_EQ_INT(diffs, 4);
        mw_buf m = MW_BUF_INIT;
        mw_metrics_render(&m);
        MW_TEST_ASSERT(strstr(mw_buf_cstr(&m), "mailwarden_policy_shadow_differences_total{rule=\"block\"} 3\n") != NULL);
        MW_TEST_ASSERT(strstr(mw_buf_cstr(&m), "mailwarden_policy_shadow_differences_total{rule=\"soft\"} 1\n") != NULL);
        MW_TEST_ASSERT(strstr(mw_buf_cstr(&m), "rule=\"same\"") == NULL);
        mw_buf_free(&m);
        mw_engine_destroy(&e);
    }
    /* a shadow policy that does not load refuses the config, like the policy */
    snprintf(extra, sizeof extra, "policy_shadow = \"no-such-policy\";\n");
    mw_config *cfg = load(BASE "policy_shadow = \"no-such-policy\";\n");
    if (MW_TEST_ASSERT(cfg != NULL)) {
        char err[256] = "";
        mw_engine *bad = mw_engine_create(cfg, err, sizeof err);
        MW_TEST_ASSERT(bad == NULL && strstr(err, "policy_shadow") != NULL);
        if (bad)
            mw_engine_destroy(&bad);
        else
            mw_config_free(&cfg);
    }
    unlink(real);
    unlink(shadow);
}

int main(void)
{
    int fd = mkstemp(cfgpath);
    if (fd < 0)
        return 1;
    close(fd);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test", NULL, MW_LOG_WARN);
    MW_TEST_RUN(test_trust);
    MW_TEST_RUN(test_forged_authres);
    MW_TEST_RUN(test_policy_reply);
    MW_TEST_RUN(test_reload_and_inflight);
    MW_TEST_RUN(test_policy_shadow);
    unlink(cfgpath);
    return MW_TEST_SUMMARY();
}
