/*
 * test_engine_policy.c - unit tests for engine/policy.c: the shipped
 * policies parse and decide as documented, rule matching and order, every
 * parse error with its ORIGIN:LINE, and the name lookup order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "cidr.h"
#include "mwtest.h"
#include "policy.h"

static const mw_spf_result all_results[] = {
    MW_SPF_NONE, MW_SPF_NEUTRAL, MW_SPF_PASS, MW_SPF_FAIL,
    MW_SPF_SOFTFAIL, MW_SPF_TEMPERROR, MW_SPF_PERMERROR,
};
#define NRESULTS (sizeof all_results / sizeof all_results[0])
static const mw_trust all_trust[] = {
    MW_TRUST_INBOUND, MW_TRUST_AUTHENTICATED, MW_TRUST_INTERNAL, MW_TRUST_SUBMISSION,
};
#define NTRUST (sizeof all_trust / sizeof all_trust[0])

/* ---- helpers ------------------------------------------------------------------ */

static mw_policy *load_builtin(const char *name)
{
    mw_config_errors errs = {0};
    mw_policy *p = mw_policy_load(name, NULL, &errs);

    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  %s\n", errs.msg[i]);
    MW_TEST_EQ_INT(errs.n, 0);
    mw_config_errors_free(&errs);
    return p;
}

static mw_policy_facts facts(mw_trust t, mw_spf_result spf)
{
    mw_policy_facts f;

    memset(&f, 0, sizeof f);
    f.trust = t;
    f.spf_done = true;
    f.spf = spf;
    f.helo_spf_done = true;
    f.helo_spf = MW_SPF_NONE;
    f.sender_domain = "example.org";
    return f;
}

static mw_policy_decision eval(const mw_policy *p, const mw_policy_facts *f)
{
    mw_policy_decision d = {MW_ACTION_DISCARD, NULL, NULL};

    mw_policy_eval(p, f, &d);
    return d;
}

static bool has_error(const mw_config_errors *e, const char *origin, int line, const char *msg)
{
    char want[512];

    snprintf(want, sizeof want, "%s:%d: %s", origin, line, msg);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msg[i], want, strlen(want)) == 0)
            return true;
    fprintf(stderr, "  wanted error \"%s...\"; got %zu:\n", want, e->n);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
    return false;
}

/* Parse text that must fail with exactly one error at line, starting with msg. */
static void expect_one_error(const char *text, int line, const char *msg)
{
    mw_config_errors errs = {0};
    mw_policy *p = mw_policy_parse(text, "test.conf", &errs);

    MW_TEST_ASSERT(p == NULL);
    if (!MW_TEST_EQ_INT(errs.n, 1))
        fprintf(stderr, "  for: %s\n", msg);
    MW_TEST_ASSERT(has_error(&errs, "test.conf", line, msg));
    mw_policy_free(&p);
    mw_config_errors_free(&errs);
}

static mw_policy *parse_ok(const char *text)
{
    mw_config_errors errs = {0};
    mw_policy *p = mw_policy_parse(text, "/some/dir/custom.conf", &errs);

    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msg[i]);
    MW_TEST_EQ_INT(errs.n, 0);
    mw_config_errors_free(&errs);
    return p;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    mw_buf b = MW_BUF_INIT;
    char chunk[4096];
    size_t n;

    if (fp == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        mw_buf_append(&b, chunk, n);
    fclose(fp);
    mw_buf_puts(&b, "");
    return mw_buf_steal(&b);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    if (fp == NULL) {
        perror(path);
        exit(2);
    }
    fputs(text, fp);
    fclose(fp);
}

/* ---- names ------------------------------------------------------------------------- */

static void test_names(void)
{
    mw_action a;

    MW_TEST_EQ_STR(mw_trust_name(MW_TRUST_INBOUND), "inbound");
    MW_TEST_EQ_STR(mw_trust_name(MW_TRUST_AUTHENTICATED), "authenticated");
    MW_TEST_EQ_STR(mw_trust_name(MW_TRUST_INTERNAL), "internal");
    MW_TEST_EQ_STR(mw_trust_name(MW_TRUST_SUBMISSION), "submission");
    MW_TEST_EQ_STR(mw_trust_name((mw_trust)42), "unknown");
    MW_TEST_ASSERT(!mw_trust_outbound(MW_TRUST_INBOUND));
    MW_TEST_ASSERT(mw_trust_outbound(MW_TRUST_SUBMISSION));

    static const char *const names[] = {"accept", "reject", "tempfail", "quarantine", "discard"};
    for (int i = 0; i < 5; i++) {
        MW_TEST_EQ_STR(mw_action_name((mw_action)i), names[i]);
        MW_TEST_ASSERT(mw_action_parse(names[i], &a) && a == (mw_action)i);
    }
    MW_TEST_EQ_STR(mw_action_name((mw_action)99), "unknown");
    MW_TEST_ASSERT(mw_action_parse("REJECT", &a) && a == MW_ACTION_REJECT);
    MW_TEST_ASSERT(!mw_action_parse("deny", &a));
    MW_TEST_ASSERT(!mw_action_parse("", &a));
    MW_TEST_ASSERT(!mw_action_parse(NULL, &a));
}

/* ---- shipped policies --------------------------------------------------------------- */

static void test_embedded_table(void)
{
    static const char *const want[] = {"default", "monitor-only", "outbound", "strict"};
    const char *src = getenv("MW_SOURCE_DIR");
    size_t n = 0;

    for (const struct mw_embedded_policy *e = mw_embedded_policies; e->name != NULL; e++, n++) {
        mw_policy *p = load_builtin(e->name);
        if (!MW_TEST_ASSERT(p != NULL)) {
            fprintf(stderr, "  built-in policy %s does not load\n", e->name);
            continue;
        }
        MW_TEST_EQ_STR(mw_policy_name(p), e->name);
        MW_TEST_ASSERT(mw_policy_description(p)[0] != '\0');
        mw_policy_free(&p);
        MW_TEST_ASSERT(p == NULL);
        /* Byte for byte the shipped file. */
        if (src != NULL) {
            char path[1024];
            snprintf(path, sizeof path, "%s/policies/%s.conf", src, e->name);
            char *text = slurp(path);
            MW_TEST_ASSERT(text != NULL);
            if (text != NULL)
                MW_TEST_EQ_STR(e->text, text);
            free(text);
        }
    }
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        for (const struct mw_embedded_policy *e = mw_embedded_policies; e->name != NULL; e++)
            found |= strcmp(e->name, want[i]) == 0;
        if (!MW_TEST_ASSERT(found))
            fprintf(stderr, "  no built-in policy %s\n", want[i]);
    }
    MW_TEST_ASSERT(n >= 4);
}

/* Every rule key and reply placeholder the code knows is documented in
 * mailwarden.conf(5), so the two cannot drift. */
static void test_rule_keys_documented(void)
{
    const char *src = getenv("MW_SOURCE_DIR");
    if (src == NULL) {
        fprintf(stderr, "  MW_SOURCE_DIR not set: documentation not checked\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/docs/mailwarden.conf.5", src);
    char *man = slurp(path);
    if (!MW_TEST_ASSERT(man != NULL))
        return;
    const char *rk = strstr(man, "\n.SS Rule keys\n");
    MW_TEST_ASSERT(rk != NULL);
    size_t n = 0;
    for (const char *k; (k = mw_policy_rule_key(n)) != NULL; n++) {
        char want[96];
        snprintf(want, sizeof want, "\n.B %s\n", k);
        if (!MW_TEST_ASSERT(rk != NULL && strstr(rk, want) != NULL))
            fprintf(stderr, "  rule key %s is not documented under Rule keys in mailwarden.conf.5\n", k);
    }
    MW_TEST_ASSERT(n >= 28);
    for (size_t i = 0; mw_policy_placeholder(i) != NULL; i++) {
        char want[96];
        snprintf(want, sizeof want, "%%{%s}", mw_policy_placeholder(i));
        if (!MW_TEST_ASSERT(rk != NULL && strstr(rk, want) != NULL))
            fprintf(stderr, "  placeholder %s is not documented in mailwarden.conf.5\n", want);
    }
    free(man);
}

static void test_default_policy(void)
{
    mw_policy *p = load_builtin("default");

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    for (size_t t = 0; t < NTRUST; t++) {
        for (size_t r = 0; r < NRESULTS; r++) {
            for (size_t h = 0; h < NRESULTS; h++) {
                mw_policy_facts f = facts(all_trust[t], all_results[r]);
                f.helo_spf = all_results[h];
                f.null_sender = h % 2 == 0;
                mw_policy_decision d = eval(p, &f);
                MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
                MW_TEST_ASSERT(d.reply == NULL);
                MW_TEST_EQ_STR(d.rule, all_trust[t] == MW_TRUST_INBOUND ? "inbound-record-only"
                                                                        : "outbound");
            }
        }
    }
    mw_policy_free(&p);
}

static void test_monitor_only_policy(void)
{
    mw_policy *p = load_builtin("monitor-only");

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    for (size_t t = 0; t < NTRUST; t++) {
        for (size_t r = 0; r < NRESULTS; r++) {
            for (size_t h = 0; h < NRESULTS; h++) {
                for (int ns = 0; ns < 2; ns++) {
                    mw_policy_facts f = facts(all_trust[t], all_results[r]);
                    f.helo_spf = all_results[h];
                    f.null_sender = ns;
                    f.spf_done = (r + h) % 3 != 0;
                    mw_policy_decision d = eval(p, &f);
                    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
                    MW_TEST_EQ_STR(d.rule, "monitor");
                }
            }
        }
    }
    mw_policy_free(&p);
}

static void test_strict_policy(void)
{
    mw_policy *p = load_builtin("strict");
    mw_policy_facts f;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    /* Inbound SPF fail: reject with RFC 7372's 5.7.23. */
    f = facts(MW_TRUST_INBOUND, MW_SPF_FAIL);
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.rule, "spf-fail");
    MW_TEST_EQ_STR(d.reply, "550 5.7.23 %{spf_explanation}");

    /* Temperror: tempfail with 4.7.24. */
    f = facts(MW_TRUST_INBOUND, MW_SPF_TEMPERROR);
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_TEMPFAIL);
    MW_TEST_EQ_STR(d.rule, "spf-temperror");
    MW_TEST_ASSERT(d.reply != NULL && strncmp(d.reply, "451 4.7.24 ", 11) == 0);

    /* Softfail, neutral, none, pass, permerror: accepted. */
    static const mw_spf_result soft[] = {MW_SPF_SOFTFAIL, MW_SPF_NEUTRAL, MW_SPF_NONE,
                                         MW_SPF_PASS, MW_SPF_PERMERROR};
    for (size_t i = 0; i < sizeof soft / sizeof soft[0]; i++) {
        f = facts(MW_TRUST_INBOUND, soft[i]);
        d = eval(p, &f);
        MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
        MW_TEST_EQ_STR(d.rule, "default");
        MW_TEST_ASSERT(d.reply == NULL);
    }

    /* Outbound mail is never refused, whatever the results. */
    for (size_t t = 1; t < NTRUST; t++) {
        for (size_t r = 0; r < NRESULTS; r++) {
            f = facts(all_trust[t], all_results[r]);
            f.helo_spf = MW_SPF_FAIL;
            f.null_sender = true;
            d = eval(p, &f);
            MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
            MW_TEST_EQ_STR(d.rule, "outbound");
        }
    }

    /* HELO fail with a null sender: reject; with a real sender: accept. */
    f = facts(MW_TRUST_INBOUND, MW_SPF_PASS);
    f.helo_spf = MW_SPF_FAIL;
    f.null_sender = true;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.rule, "helo-spf-fail-null-sender");
    MW_TEST_ASSERT(d.reply != NULL && strncmp(d.reply, "550 5.7.23 ", 11) == 0);
    f.null_sender = false;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
    /* HELO check not evaluated: the HELO rule does not hold. */
    f.null_sender = true;
    f.helo_spf_done = false;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);

    /* MAIL FROM SPF not evaluated (e.g. spf.enabled = false): no SPF rule
     * holds even though the spf field says fail. */
    f = facts(MW_TRUST_INBOUND, MW_SPF_FAIL);
    f.spf_done = false;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
    MW_TEST_EQ_STR(d.rule, "default");
    mw_policy_free(&p);
}

static void test_outbound_policy(void)
{
    static const char *const rule_for[] = {"inbound-record-only", "authenticated", "internal",
                                           "submission"};
    mw_policy *p = load_builtin("outbound");

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    for (size_t t = 0; t < NTRUST; t++) {
        for (size_t r = 0; r < NRESULTS; r++) {
            mw_policy_facts f = facts(all_trust[t], all_results[r]);
            mw_policy_decision d = eval(p, &f);
            MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
            MW_TEST_EQ_STR(d.rule, rule_for[all_trust[t]]);
        }
    }
    mw_policy_free(&p);
}

/* ---- matching --------------------------------------------------------------------- */

static void test_first_match_and_default(void)
{
    mw_policy *p = parse_ok(
        "description = \"order\";\n"
        "default_action = \"quarantine\";\n"
        "rules = (\n"
        "  { name = \"first\"; spf = [ \"fail\", \"softfail\" ]; action = \"tempfail\"; },\n"
        "  { name = \"second\"; spf = [ \"fail\" ]; action = \"reject\"; },\n"
        "  { name = \"third\"; trust = \"authenticated\"; action = \"discard\"; }\n"
        ");\n");
    mw_policy_facts f;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    MW_TEST_EQ_STR(mw_policy_name(p), "custom");
    MW_TEST_EQ_STR(mw_policy_description(p), "order");
    f = facts(MW_TRUST_INBOUND, MW_SPF_FAIL);
    d = eval(p, &f);
    MW_TEST_EQ_STR(d.rule, "first");
    MW_TEST_EQ_INT(d.action, MW_ACTION_TEMPFAIL);
    MW_TEST_ASSERT(d.reply == NULL);
    f = facts(MW_TRUST_AUTHENTICATED, MW_SPF_PASS);
    d = eval(p, &f);
    MW_TEST_EQ_STR(d.rule, "third");
    MW_TEST_EQ_INT(d.action, MW_ACTION_DISCARD);
    f = facts(MW_TRUST_INBOUND, MW_SPF_PASS);
    d = eval(p, &f);
    MW_TEST_EQ_STR(d.rule, "default");
    MW_TEST_EQ_INT(d.action, MW_ACTION_QUARANTINE);
    MW_TEST_ASSERT(d.reply == NULL);
    mw_policy_free(&p);

    /* No rules at all, no default_action: accept. */
    p = parse_ok("# empty policy\n");
    if (MW_TEST_ASSERT(p != NULL)) {
        d = eval(p, &f);
        MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
        MW_TEST_EQ_STR(d.rule, "default");
        MW_TEST_EQ_STR(mw_policy_description(p), "");
    }
    mw_policy_free(&p);
    p = parse_ok("rules = ( );\n");
    MW_TEST_ASSERT(p != NULL);
    mw_policy_free(&p);
}

static void test_trust_words(void)
{
    mw_policy *p = parse_ok(
        "rules = (\n"
        "  { name = \"out\"; trust = [ \"outbound\" ]; action = \"discard\"; },\n"
        "  { name = \"in\"; trust = [ \"INBOUND\" ]; action = \"quarantine\"; }\n"
        ");\n");
    mw_policy *q = parse_ok(
        "default_action = \"reject\";\n"
        "rules = ( { name = \"all\"; trust = [ \"any\" ]; action = \"accept\"; } );\n");
    mw_policy *r = parse_ok(
        "rules = ( { name = \"sub-int\"; trust = [ \"submission\", \"internal\" ]; action = \"reject\"; } );\n");

    if (!MW_TEST_ASSERT(p != NULL && q != NULL && r != NULL))
        goto out;
    for (size_t t = 0; t < NTRUST; t++) {
        mw_policy_facts f = facts(all_trust[t], MW_SPF_PASS);
        mw_policy_decision d = eval(p, &f);
        MW_TEST_EQ_STR(d.rule, mw_trust_outbound(all_trust[t]) ? "out" : "in");
        d = eval(q, &f);
        MW_TEST_EQ_STR(d.rule, "all");
        d = eval(r, &f);
        MW_TEST_EQ_STR(d.rule, all_trust[t] == MW_TRUST_SUBMISSION ||
                               all_trust[t] == MW_TRUST_INTERNAL ? "sub-int" : "default");
    }
out:
    mw_policy_free(&p);
    mw_policy_free(&q);
    mw_policy_free(&r);
}

static void test_sender_domain(void)
{
    mw_policy *p = parse_ok(
        "rules = (\n"
        "  { name = \"exact\"; sender_domain = [ \"example.com\" ]; action = \"reject\"; },\n"
        "  { name = \"subs\"; sender_domain = [ \"*.example.com\" ]; action = \"tempfail\"; },\n"
        "  { name = \"q\"; sender_domain = \"mail?.example.net\"; action = \"discard\"; }\n"
        ");\n");
    static const struct { const char *dom; const char *rule; } cases[] = {
        {"example.com", "exact"},
        {"EXAMPLE.Com", "exact"},
        {"example.com.", "exact"},
        {"mail.example.com", "subs"},
        {"a.b.example.com", "subs"},
        {"notexample.com", "default"},
        {"example.com.evil.org", "default"},
        {"mail1.example.net", "q"},
        {"mail12.example.net", "default"},
        {"", "default"},
        {NULL, "default"},
    };

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mw_policy_facts f = facts(MW_TRUST_INBOUND, MW_SPF_PASS);
        f.sender_domain = cases[i].dom;
        mw_policy_decision d = eval(p, &f);
        if (!MW_TEST_EQ_STR(d.rule, cases[i].rule))
            fprintf(stderr, "  domain %s\n", cases[i].dom ? cases[i].dom : "(null)");
    }
    mw_policy_free(&p);
}

static void test_networks(void)
{
    mw_policy *p = parse_ok(
        "rules = (\n"
        "  { name = \"net\"; network = [ \"192.0.2.0/24\", \"2001:db8::/32\" ];\n"
        "    not_network = [ \"192.0.2.128/25\" ]; action = \"reject\"; },\n"
        "  { name = \"not-net\"; not_network = \"198.51.100.0/24\"; action = \"tempfail\"; }\n"
        ");\n");
    static const struct { const char *ip; const char *rule; } cases[] = {
        {"192.0.2.1", "net"},
        {"::ffff:192.0.2.1", "net"},
        {"2001:db8::1", "net"},
        {"192.0.2.200", "not-net"},        /* excluded from "net", outside 198.51.100/24 */
        {"198.51.100.7", "default"},
        {"203.0.113.9", "not-net"},
        {NULL, "not-net"},                 /* unknown client: network fails, not_network holds */
    };

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mw_policy_facts f = facts(MW_TRUST_INBOUND, MW_SPF_PASS);
        mw_addr a;
        if (cases[i].ip != NULL) {
            MW_TEST_ASSERT(mw_addr_parse(cases[i].ip, &a));
            f.client = &a;
        }
        mw_policy_decision d = eval(p, &f);
        if (!MW_TEST_EQ_STR(d.rule, cases[i].rule))
            fprintf(stderr, "  client %s\n", cases[i].ip ? cases[i].ip : "(null)");
    }
    mw_policy_free(&p);
}

static void test_all_conditions(void)
{
    mw_policy *p = parse_ok(
        "rules = ( { name = \"all\"; trust = \"inbound\"; spf = \"softfail\";\n"
        "  helo_spf = [ \"fail\", \"softfail\" ]; null_sender = false;\n"
        "  sender_domain = \"*.example.org\"; network = \"192.0.2.0/24\";\n"
        "  not_network = \"192.0.2.0/28\"; action = \"reject\";\n"
        "  reply = \"554 5.7.1 %{rule}: %{sender_domain} from %{client_ip} (100%% sure)\"; } );\n");
    mw_addr a;
    mw_policy_facts f;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    MW_TEST_ASSERT(mw_addr_parse("192.0.2.99", &a));
    f = facts(MW_TRUST_INBOUND, MW_SPF_SOFTFAIL);
    f.helo_spf = MW_SPF_FAIL;
    f.sender_domain = "mail.example.org";
    f.client = &a;
    d = eval(p, &f);
    MW_TEST_EQ_STR(d.rule, "all");
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.reply, "554 5.7.1 %{rule}: %{sender_domain} from %{client_ip} (100%% sure)");
    /* Break each condition in turn. */
    mw_policy_facts g;
    g = f; g.trust = MW_TRUST_INTERNAL;        MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.spf = MW_SPF_FAIL;                MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.helo_spf = MW_SPF_PASS;           MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.helo_spf_done = false;            MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.null_sender = true;               MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.sender_domain = "example.org";    MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    mw_addr b;
    MW_TEST_ASSERT(mw_addr_parse("192.0.2.5", &b));
    g = f; g.client = &b;                      MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.client = NULL;                    MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    mw_policy_free(&p);
}


/* ---- DMARC and header From ------------------------------------------------------- */

static mw_policy_facts dfacts(mw_dmarc_result r, mw_dmarc_policy pol, mw_dmarc_policy disp)
{
    mw_policy_facts f = facts(MW_TRUST_INBOUND, MW_SPF_PASS);

    f.dmarc_done = true;
    f.dmarc = r;
    f.dmarc_policy = pol;
    f.dmarc_disposition = disp;
    f.from_done = true;
    f.from_status = MW_FROM_OK;
    f.from_domain = "paypal.example";
    return f;
}

static void test_default_policy_dmarc(void)
{
    mw_policy *p = load_builtin("default");
    mw_policy_facts f;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    /* Failing DMARC, the domain asks reject: 550 5.7.1 naming the domain. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.rule, "dmarc-reject");
    MW_TEST_ASSERT(d.reply != NULL && strncmp(d.reply, "550 5.7.1 ", 10) == 0 &&
                   strstr(d.reply, "%{from_domain}") != NULL);
    /* ... quarantine: quarantine; t=y lowered reject to quarantine: quarantine. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_QUARANTINE, MW_DMARC_P_QUARANTINE);
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_QUARANTINE);
    MW_TEST_EQ_STR(d.rule, "dmarc-quarantine");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_QUARANTINE);
    MW_TEST_EQ_INT(eval(p, &f).action, MW_ACTION_QUARANTINE);
    /* p=none, pass, none, temperror, permerror: accepted. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_QUARANTINE, MW_DMARC_P_NONE);   /* t=y quarantine */
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    f = dfacts(MW_DMARC_PASS, MW_DMARC_P_REJECT, MW_DMARC_P_NONE);
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    f = dfacts(MW_DMARC_NONE, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    f = dfacts(MW_DMARC_TEMPERROR, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    /* temperror at a domain known to enforce (an aligned identifier's DNS
     * timed out): 451 so the sender retries, never 550, never delivered. */
    for (int pol = MW_DMARC_P_QUARANTINE; pol <= MW_DMARC_P_REJECT; pol++) {
        f = dfacts(MW_DMARC_TEMPERROR, (mw_dmarc_policy)pol, MW_DMARC_P_UNSPEC);
        d = eval(p, &f);
        MW_TEST_EQ_INT(d.action, MW_ACTION_TEMPFAIL);
        MW_TEST_EQ_STR(d.rule, "dmarc-temperror-enforcing");
        MW_TEST_ASSERT(d.reply != NULL && strncmp(d.reply, "451 4.7.1 ", 10) == 0);
    }
    f = dfacts(MW_DMARC_TEMPERROR, MW_DMARC_P_NONE, MW_DMARC_P_UNSPEC);
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    /* DMARC not evaluated: the fields mean nothing. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.dmarc_done = false;
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    /* Outbound mail is never refused. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.trust = MW_TRUST_AUTHENTICATED;
    MW_TEST_EQ_STR(eval(p, &f).rule, "outbound");

    /* Overrides. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.dmarc_override = MW_DMARC_OVR_NEVER_REJECT;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
    MW_TEST_EQ_STR(d.rule, "dmarc-override-deliver");
    f.dmarc_override = MW_DMARC_OVR_ALLOW_NETWORK;
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-override-deliver");
    /* a trusted ARC sealer saw an aligned pass: delivered (disposition none) */
    f.dmarc_override = MW_DMARC_OVR_TRUSTED_ARC;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_ACCEPT);
    MW_TEST_EQ_STR(d.rule, "dmarc-override-deliver");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    f.dmarc_override = MW_DMARC_OVR_ALWAYS_ENFORCE;
    d = eval(p, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.rule, "dmarc-always-enforce");
    f = dfacts(MW_DMARC_PASS, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    f.dmarc_override = MW_DMARC_OVR_ALWAYS_ENFORCE;
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");

    /* Other knowledge before a reject (RFC 9989 §5): a mailing list or a
     * known forwarder at p=reject is quarantined, not refused ... */
    static const unsigned soft[] = {MW_DMARC_OVR_MAILING_LIST, MW_DMARC_OVR_FORWARDER,
                                    MW_DMARC_OVR_MAILING_LIST | MW_DMARC_OVR_FORWARDER};
    for (size_t i = 0; i < sizeof soft / sizeof soft[0]; i++) {
        f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
        f.dmarc_override = soft[i];
        d = eval(p, &f);
        MW_TEST_EQ_INT(d.action, MW_ACTION_QUARANTINE);
        MW_TEST_EQ_STR(d.rule, "dmarc-reject-list-or-forwarder");
    }
    /* ... and so is a client or signing domain with a good reputation;
     * an unknown or poor one is refused as before. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.rep_ip = (mw_policy_rep){true, 0.8};
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-reject-good-ip");
    f.rep_ip = (mw_policy_rep){false, 0.9};
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-reject");
    f.rep_ip = (mw_policy_rep){true, 0.2};
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-reject");
    f.rep_domain = (mw_policy_rep){true, 0.7};
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-reject-good-domain");
    /* A plain spoof is refused; a list at p=quarantine stays quarantined. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-reject");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_QUARANTINE, MW_DMARC_P_QUARANTINE);
    f.dmarc_override = MW_DMARC_OVR_MAILING_LIST;
    MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-quarantine");

    /* Malformed From: rejected when a domain involved enforces, else not. */
    static const mw_from_status bad[] = {MW_FROM_EMPTY, MW_FROM_MULTIPLE, MW_FROM_NODOMAIN,
                                         MW_FROM_UNPARSABLE};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = dfacts(MW_DMARC_PERMERROR, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
        f.from_status = bad[i];
        f.from_domain = NULL;
        f.from_enforcing = true;
        d = eval(p, &f);
        MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
        MW_TEST_EQ_STR(d.rule, "from-malformed-enforcing");
        MW_TEST_ASSERT(d.reply != NULL && strncmp(d.reply, "550 5.7.1 ", 10) == 0);
        f.from_enforcing = false;
        MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
        f.from_enforcing = true;
        f.from_done = false;
        MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
        /* allowed network: delivered */
        f.from_done = true;
        f.dmarc_override = MW_DMARC_OVR_ALLOW_NETWORK;
        MW_TEST_EQ_STR(eval(p, &f).rule, "dmarc-override-deliver");
    }
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    f.from_enforcing = true;   /* a well-formed From is DMARC's business */
    MW_TEST_EQ_STR(eval(p, &f).rule, "inbound-record-only");
    mw_policy_free(&p);
}

static void test_other_policies_dmarc(void)
{
    mw_policy *m = load_builtin("monitor-only"), *s = load_builtin("strict"),
              *o = load_builtin("outbound");
    mw_policy_facts f;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(m && s && o))
        goto out;
    /* monitor-only never refuses. */
    for (int r = MW_DMARC_NONE; r <= MW_DMARC_PERMERROR; r++) {
        for (int pol = MW_DMARC_P_UNSPEC; pol <= MW_DMARC_P_REJECT; pol++) {
            for (unsigned ovr = 0; ovr < 8; ovr++) {
                f = dfacts((mw_dmarc_result)r, (mw_dmarc_policy)pol, (mw_dmarc_policy)pol);
                f.dmarc_override = ovr;
                f.from_status = (mw_from_status)(ovr % 5);
                f.from_enforcing = ovr & 1;
                f.spf = MW_SPF_FAIL;
                MW_TEST_EQ_INT(eval(m, &f).action, MW_ACTION_ACCEPT);
            }
        }
    }
    /* strict: any DMARC fail from an enforcing domain, even t=y lowered. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_QUARANTINE);
    d = eval(s, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_REJECT);
    MW_TEST_EQ_STR(d.rule, "dmarc-fail-enforcing");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_QUARANTINE, MW_DMARC_P_NONE);
    MW_TEST_EQ_STR(eval(s, &f).rule, "dmarc-fail-enforcing");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    MW_TEST_EQ_STR(eval(s, &f).rule, "default");
    f = dfacts(MW_DMARC_TEMPERROR, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
    d = eval(s, &f);
    MW_TEST_EQ_INT(d.action, MW_ACTION_TEMPFAIL);
    MW_TEST_EQ_STR(d.rule, "dmarc-temperror");
    /* strict: a temperror is deferred before any fail rule can refuse it,
     * even with SPF fail beside it (a retry may pass DMARC). */
    f = dfacts(MW_DMARC_TEMPERROR, MW_DMARC_P_REJECT, MW_DMARC_P_UNSPEC);
    f.spf = MW_SPF_FAIL;
    MW_TEST_EQ_STR(eval(s, &f).rule, "dmarc-temperror");
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.dmarc_override = MW_DMARC_OVR_NEVER_REJECT;
    MW_TEST_EQ_STR(eval(s, &f).rule, "dmarc-override-deliver");
    f.dmarc_override = MW_DMARC_OVR_TRUSTED_ARC;   /* a sealer you configured as trusted */
    MW_TEST_EQ_STR(eval(s, &f).rule, "dmarc-override-deliver");
    f = dfacts(MW_DMARC_PERMERROR, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
    f.from_status = MW_FROM_MULTIPLE;
    f.from_enforcing = true;
    MW_TEST_EQ_STR(eval(s, &f).rule, "from-malformed-enforcing");
    /* strict rejects on p=reject alone: lists, forwarders, reputation do not help. */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    f.dmarc_override = MW_DMARC_OVR_MAILING_LIST | MW_DMARC_OVR_FORWARDER;
    f.rep_ip = (mw_policy_rep){true, 0.9};
    MW_TEST_EQ_STR(eval(s, &f).rule, "dmarc-fail-enforcing");
    /* outbound.conf: inbound lists like the default. */
    f.rep_ip = (mw_policy_rep){false, 0};
    MW_TEST_EQ_STR(eval(o, &f).rule, "dmarc-reject-list-or-forwarder");
    /* strict still rejects SPF fail of DMARC-passing mail. */
    f = dfacts(MW_DMARC_PASS, MW_DMARC_P_REJECT, MW_DMARC_P_NONE);
    f.spf = MW_SPF_FAIL;
    MW_TEST_EQ_STR(eval(s, &f).rule, "spf-fail");
    /* outbound.conf: inbound like the default. */
    f = dfacts(MW_DMARC_TEMPERROR, MW_DMARC_P_REJECT, MW_DMARC_P_UNSPEC);
    MW_TEST_EQ_INT(eval(o, &f).action, MW_ACTION_TEMPFAIL);
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_REJECT);
    MW_TEST_EQ_STR(eval(o, &f).rule, "dmarc-reject");
    f.trust = MW_TRUST_SUBMISSION;
    MW_TEST_EQ_STR(eval(o, &f).rule, "submission");
out:
    mw_policy_free(&m);
    mw_policy_free(&s);
    mw_policy_free(&o);
}

static void test_dmarc_conditions(void)
{
    mw_policy *p = parse_ok(
        "rules = (\n"
        " { name = \"d\"; dmarc = [ \"fail\", \"TempError\" ]; dmarc_policy = \"reject\";\n"
        "   dmarc_disposition = [ \"quarantine\", \"reject\" ]; dmarc_override = \"none\";\n"
        "   from_status = \"ok\"; from_domain = [ \"*.bank.example\", \"bank.example\" ];\n"
        "   from_enforcing = false; action = \"reject\";\n"
        "   reply = \"550 5.7.1 %{from_domain} says %{dmarc_policy}\"; },\n"
        " { name = \"ovr\"; dmarc_override = [ \"always_enforce\", \"never_reject\" ]; action = \"discard\"; }\n"
        ");\n");
    mw_policy_facts f, g;
    mw_policy_decision d;

    if (!MW_TEST_ASSERT(p != NULL))
        return;
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_REJECT, MW_DMARC_P_QUARANTINE);
    f.from_domain = "www.bank.example.";
    d = eval(p, &f);
    MW_TEST_EQ_STR(d.rule, "d");
    MW_TEST_EQ_STR(d.reply, "550 5.7.1 %{from_domain} says %{dmarc_policy}");
    g = f; g.dmarc = MW_DMARC_TEMPERROR;             MW_TEST_EQ_STR(eval(p, &g).rule, "d");
    g = f; g.dmarc = MW_DMARC_PASS;                  MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_done = false;                     MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_policy = MW_DMARC_P_QUARANTINE;   MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_disposition = MW_DMARC_P_NONE;    MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_disposition = MW_DMARC_P_UNSPEC;  MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.from_status = MW_FROM_MULTIPLE;         MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.from_done = false;                      MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.from_domain = "evilbank.example";       MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.from_domain = NULL;                     MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.from_domain = "BANK.example";           MW_TEST_EQ_STR(eval(p, &g).rule, "d");
    g = f; g.from_enforcing = true;                  MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_override = MW_DMARC_OVR_ALLOW_NETWORK;   MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    g = f; g.dmarc_override = MW_DMARC_OVR_NEVER_REJECT;    MW_TEST_EQ_STR(eval(p, &g).rule, "ovr");
    g = f; g.dmarc_override = MW_DMARC_OVR_ALWAYS_ENFORCE | MW_DMARC_OVR_ALLOW_NETWORK;
    MW_TEST_EQ_STR(eval(p, &g).rule, "ovr");
    g = f; g.dmarc_override = MW_DMARC_OVR_NEVER_REJECT; g.dmarc_done = false;
    MW_TEST_EQ_STR(eval(p, &g).rule, "default");
    mw_policy_free(&p);

    expect_one_error("rules = (\n { name = \"a\"; dmarc = \"softfail\"; action = \"accept\"; }\n);\n",
                     2, "dmarc: unknown DMARC result \"softfail\"");
    expect_one_error("rules = (\n { name = \"a\"; dmarc_disposition = \"unspecified\"; action = \"accept\"; }\n);\n",
                     2, "unknown DMARC policy \"unspecified\"");
    expect_one_error("rules = (\n { name = \"a\"; dmarc_policy = [ \"none\", \"hold\" ]; action = \"accept\"; }\n);\n",
                     2, "unknown DMARC policy \"hold\"");
    expect_one_error("rules = (\n { name = \"a\"; dmarc_override = \"forwarded\"; action = \"accept\"; }\n);\n",
                     2, "dmarc_override: unknown override \"forwarded\"");
    expect_one_error("rules = (\n { name = \"a\"; from_status = \"broken\"; action = \"accept\"; }\n);\n",
                     2, "from_status: unknown status \"broken\"");
    expect_one_error("rules = (\n { name = \"a\"; from_domain = \"a@b.example\"; action = \"accept\"; }\n);\n",
                     2, "from_domain: \"a@b.example\" is not a domain pattern");
    expect_one_error("rules = (\n { name = \"a\"; from_enforcing = 1; action = \"accept\"; }\n);\n",
                     2, "rule \"a\": from_enforcing: expected true or false");
    expect_one_error("rules = (\n { name = \"a\"; dmarc = [ ]; action = \"accept\"; }\n);\n",
                     2, "dmarc: empty list");
    expect_one_error("rules = (\n { name = \"a\"; action = \"reject\"; reply = \"550 5.7.1 %{dmarc_result}\"; }\n);\n",
                     2, "rule \"a\": unknown placeholder");
    char why[200];
    MW_TEST_ASSERT(mw_policy_reply_valid("550 5.7.1 %{from_domain} rejected", MW_ACTION_REJECT, why, sizeof why));
    MW_TEST_ASSERT(!mw_policy_reply_valid("451 4.7.1 later", MW_ACTION_REJECT, why, sizeof why));
    MW_TEST_ASSERT(!mw_policy_reply_valid("550 5.7.1 x", MW_ACTION_ACCEPT, why, sizeof why));
    MW_TEST_ASSERT(!mw_policy_reply_valid("550 5.7.1 %{nope}", MW_ACTION_REJECT, why, sizeof why));
}

/* ---- errors ----------------------------------------------------------------------- */

static void test_parse_errors(void)
{
    expect_one_error("description = \"x\";\nrules = (\n", 3, "syntax error");
    expect_one_error("description = \"x\";\n\nfoo = 1;\n", 3, "unknown key \"foo\"");
    expect_one_error("default_action = \"deny\";\n", 1, "default_action: unknown action \"deny\"");
    expect_one_error("default_action = 1;\n", 1, "default_action: expected a string");
    expect_one_error("description = 7;\n", 1, "description: expected a string");
    expect_one_error("rules = { a = 1; };\n", 1, "rules: expected a list of groups");
    expect_one_error("rules = ( \"x\" );\n", 1, "rules: element 1 must be a group");
    expect_one_error("rules = (\n { name = \"a\";\n   action = \"accept\";\n   colour = \"red\"; }\n);\n",
                     4, "rule 1: unknown key \"colour\"");
    expect_one_error("rules = (\n { name = \"a\";\n   spf = [ \"pass\", \"failure\" ];\n   action = \"accept\"; }\n);\n",
                     3, "unknown SPF result \"failure\"");
    expect_one_error("rules = (\n { name = \"a\"; helo_spf = \"hardfail\"; action = \"accept\"; }\n);\n",
                     2, "unknown SPF result \"hardfail\"");
    expect_one_error("rules = (\n { name = \"a\";\n   trust = [ \"external\" ];\n   action = \"accept\"; }\n);\n",
                     3, "trust: unknown trust class \"external\"");
    expect_one_error("rules = (\n { name = \"a\";\n   network = [ \"192.0.2.0/24\",\n \"10.0.0.1/8\" ];\n   action = \"accept\"; }\n);\n",
                     4, "bad network \"10.0.0.1/8\"");
    expect_one_error("rules = (\n { name = \"a\"; not_network = \"nonsense\"; action = \"accept\"; }\n);\n",
                     2, "bad network \"nonsense\"");
    expect_one_error("rules = (\n { name = \"a\";\n   action = \"bounce\"; }\n);\n",
                     3, "rule \"a\": unknown action \"bounce\"");
    expect_one_error("rules = (\n { name = \"a\"; }\n);\n", 2, "rule \"a\": missing action");
    expect_one_error("rules = (\n { action = \"accept\"; }\n);\n", 2, "rule 1: missing name");
    expect_one_error("rules = (\n { name = \"default\"; action = \"accept\"; }\n);\n", 2,
                     "rule 1: name \"default\" must be");
    expect_one_error("rules = (\n { name = \"has space\"; action = \"accept\"; }\n);\n", 2,
                     "rule 1: name \"has space\" must be");
    expect_one_error("rules = (\n { name = \"a\"; action = \"accept\"; },\n { name = \"a\"; action = \"reject\"; }\n);\n",
                     3, "duplicate rule name \"a\"");
    expect_one_error("rules = (\n { name = \"a\"; spf = [ ]; action = \"accept\"; }\n);\n",
                     2, "spf: empty list");
    expect_one_error("rules = (\n { name = \"a\"; spf = ( \"fail\", 3 ); action = \"accept\"; }\n);\n",
                     2, "spf: element 2 is not a string");
    expect_one_error("rules = (\n { name = \"a\"; trust = 1; action = \"accept\"; }\n);\n",
                     2, "trust: expected a list of strings");
    expect_one_error("rules = (\n { name = \"a\"; null_sender = \"yes\"; action = \"accept\"; }\n);\n",
                     2, "rule \"a\": null_sender: expected true or false");
    expect_one_error("rules = (\n { name = \"a\"; sender_domain = \"user@example.com\"; action = \"accept\"; }\n);\n",
                     2, "sender_domain: \"user@example.com\" is not a domain pattern");
}

static void test_reply_errors(void)
{
    static const struct { const char *action, *reply, *msg; } bad[] = {
        {"reject", "451 4.7.1 later", "rule \"a\": a reject reply needs a 5xx code, not 451"},
        {"tempfail", "550 5.7.1 no", "rule \"a\": a tempfail reply needs a 4xx code, not 550"},
        {"reject", "550 4.7.1 no", "rule \"a\": enhanced status code must be 5.X.Y to match 550"},
        {"tempfail", "451 5.7.24 no", "rule \"a\": enhanced status code must be 4.X.Y"},
        {"reject", "550 5.7 no", "rule \"a\": malformed enhanced status code"},
        {"reject", "550 5.07.1 no", "rule \"a\": malformed enhanced status code"},
        {"reject", "550 5.7.1000 no", "rule \"a\": malformed enhanced status code"},
        {"reject", "550 5.7.1x no", "rule \"a\": malformed enhanced status code"},
        {"reject", "go away", "rule \"a\": reply must start with a three-digit SMTP code"},
        {"reject", "55 no", "rule \"a\": reply must start with a three-digit SMTP code"},
        {"reject", "5500 no", "rule \"a\": reply must start with a three-digit SMTP code"},
        {"reject", "590 no", "rule \"a\": 590 is not an SMTP reply code"},
        {"reject", "550 5.7.1 %{helo}", "rule \"a\": unknown placeholder"},
        {"reject", "550 5.7.1 50% off", "rule \"a\": unknown placeholder"},
        {"reject", "550 5.7.1 %{rule", "rule \"a\": unknown placeholder"},
        {"reject", "550 5.7.1 tab\there", "rule \"a\": reply must be printable ASCII"},
        {"accept", "250 ok", "rule \"a\": reply is only used with action reject or tempfail"},
        {"quarantine", "550 5.7.1 x", "rule \"a\": reply is only used with action reject or tempfail"},
    };
    char text[512];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 "rules = (\n { name = \"a\";\n   action = \"%s\";\n   reply = \"%s\"; }\n);\n",
                 bad[i].action, bad[i].reply);
        expect_one_error(text, 4, bad[i].msg);
    }
    /* Too long. */
    mw_buf b = MW_BUF_INIT;
    mw_buf_puts(&b, "rules = ( { name = \"a\"; action = \"reject\"; reply = \"550 5.7.1 ");
    for (int i = 0; i < 500; i++)
        mw_buf_putc(&b, 'x');
    mw_buf_puts(&b, "\"; } );\n");
    expect_one_error(mw_buf_cstr(&b), 1, "rule \"a\": reply is longer than");
    mw_buf_free(&b);

    static const struct { const char *action, *reply; } good[] = {
        {"reject", "550"},
        {"reject", "550 no thanks"},
        {"reject", "554 5.7.1 policy"},
        {"reject", "550 5.7.23 %{spf_explanation}"},
        {"reject", "550 5.0.0"},
        {"reject", "550 5.100.999 x"},
        {"tempfail", "451 4.7.24 try later"},
        {"tempfail", "421 4.3.2 %{client_ip} %{sender_domain} %{rule} %%"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "rules = ( { name = \"a\"; action = \"%s\"; reply = \"%s\"; } );\n",
                 good[i].action, good[i].reply);
        mw_policy *p = parse_ok(text);
        if (!MW_TEST_ASSERT(p != NULL))
            fprintf(stderr, "  refused: %s %s\n", good[i].action, good[i].reply);
        mw_policy_free(&p);
    }
}

/* All errors of a file are reported, each with its own line, in order. */
static void test_errors_collected(void)
{
    mw_config_errors errs = {0};
    mw_policy *p = mw_policy_parse(
        "default_action = \"maybe\";\n"                               /* 1 */
        "rules = (\n"                                                 /* 2 */
        "  { name = \"one\";\n"                                       /* 3 */
        "    spf = [ \"fial\" ];\n"                                   /* 4 */
        "    action = \"reject\";\n"                                  /* 5 */
        "    reply = \"451 4.7.1 wrong class\"; },\n"                 /* 6 */
        "  { name = \"two\";\n"                                       /* 7 */
        "    network = [ \"192.0.2.1/24\" ];\n"                       /* 8 */
        "    action = \"accept\"; }\n"                                /* 9 */
        ");\n"                                                        /* 10 */
        "extra = true;\n",                                            /* 11 */
        "mine.conf", &errs);

    MW_TEST_ASSERT(p == NULL);
    MW_TEST_EQ_INT(errs.n, 5);
    MW_TEST_ASSERT(has_error(&errs, "mine.conf", 1, "default_action: unknown action \"maybe\""));
    MW_TEST_ASSERT(has_error(&errs, "mine.conf", 4, "unknown SPF result \"fial\""));
    MW_TEST_ASSERT(has_error(&errs, "mine.conf", 6, "rule \"one\": a reject reply needs a 5xx code"));
    MW_TEST_ASSERT(has_error(&errs, "mine.conf", 8, "bad network \"192.0.2.1/24\""));
    MW_TEST_ASSERT(has_error(&errs, "mine.conf", 11, "unknown key \"extra\""));
    /* Errors append to what the list already holds. */
    p = mw_policy_parse("x = 1;\n", "other.conf", &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_EQ_INT(errs.n, 6);
    mw_config_errors_free(&errs);
}

/* ---- lookup order ---------------------------------------------------------------- */

static void test_load_order(void)
{
    char dir[] = "/tmp/mw-test-policy-XXXXXX";
    char path[256], other[256];
    mw_config_errors errs = {0};
    mw_policy *p;
    mw_policy_facts f = facts(MW_TRUST_INBOUND, MW_SPF_FAIL);

    if (!MW_TEST_ASSERT(mkdtemp(dir) != NULL))
        return;

    /* Built-in when the directory has no such file (or no directory). */
    p = mw_policy_load("strict", dir, &errs);
    if (MW_TEST_ASSERT(p != NULL)) {
        MW_TEST_EQ_STR(mw_policy_name(p), "strict");
        MW_TEST_EQ_INT(eval(p, &f).action, MW_ACTION_REJECT);
    }
    mw_policy_free(&p);
    p = mw_policy_load("strict", "/nonexistent/dir", &errs);
    MW_TEST_ASSERT(p != NULL);
    mw_policy_free(&p);
    MW_TEST_EQ_INT(errs.n, 0);

    /* POLICY_DIR/NAME.conf replaces the built-in of the same name. */
    snprintf(path, sizeof path, "%s/strict.conf", dir);
    write_file(path, "description = \"local strict\";\n"
                     "rules = ( { name = \"local\"; action = \"discard\"; } );\n");
    p = mw_policy_load("strict", dir, &errs);
    if (MW_TEST_ASSERT(p != NULL)) {
        MW_TEST_EQ_STR(mw_policy_name(p), "strict");
        MW_TEST_EQ_STR(mw_policy_description(p), "local strict");
        MW_TEST_EQ_STR(eval(p, &f).rule, "local");
    }
    mw_policy_free(&p);

    /* A local policy with a new name. */
    snprintf(other, sizeof other, "%s/site.conf", dir);
    write_file(other, "default_action = \"tempfail\";\n");
    p = mw_policy_load("site", dir, &errs);
    if (MW_TEST_ASSERT(p != NULL)) {
        MW_TEST_EQ_STR(mw_policy_name(p), "site");
        MW_TEST_EQ_INT(eval(p, &f).action, MW_ACTION_TEMPFAIL);
    }
    mw_policy_free(&p);

    /* A path (contains '/') is read directly; name from the base name. */
    p = mw_policy_load(other, NULL, &errs);
    if (MW_TEST_ASSERT(p != NULL))
        MW_TEST_EQ_STR(mw_policy_name(p), "site");
    mw_policy_free(&p);
    MW_TEST_EQ_INT(errs.n, 0);

    /* Errors in a local file name the file and line. */
    write_file(other, "default_action = \"accept\";\n\nrules = ( { name = \"x\"; action = \"nope\"; } );\n");
    p = mw_policy_load("site", dir, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_ASSERT(has_error(&errs, other, 3, "rule \"x\": unknown action \"nope\""));
    mw_config_errors_free(&errs);
    /* A broken local file is an error, not a silent fall back to the built-in. */
    write_file(path, "rules = (\n");
    p = mw_policy_load("strict", dir, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_ASSERT(has_error(&errs, path, 2, "syntax error"));
    mw_config_errors_free(&errs);

    /* Unknown names, missing paths, empty names. */
    p = mw_policy_load("no-such-policy", dir, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    MW_TEST_ASSERT(errs.n == 1 && strstr(errs.msg[0], "no-such-policy") != NULL &&
                   strstr(errs.msg[0], "built-in: default") != NULL && strstr(errs.msg[0], "did you mean") == NULL);
    mw_config_errors_free(&errs);
    /* a near miss gets a suggestion */
    p = mw_policy_load("stirct", dir, &errs);
    MW_TEST_ASSERT(p == NULL && errs.n == 1 && strstr(errs.msg[0], "did you mean \"strict\"?") != NULL);
    mw_config_errors_free(&errs);
    p = mw_policy_load("/nonexistent/x.conf", dir, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_ASSERT(errs.n == 1 && strstr(errs.msg[0], "/nonexistent/x.conf: cannot read policy") != NULL);
    mw_config_errors_free(&errs);
    p = mw_policy_load("", dir, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    mw_config_errors_free(&errs);
    p = mw_policy_load(NULL, NULL, &errs);
    MW_TEST_ASSERT(p == NULL);
    MW_TEST_EQ_INT(errs.n, 1);
    mw_config_errors_free(&errs);

    /* An unreadable local file (when not root) is an error too. */
    if (geteuid() != 0) {
        write_file(path, "# fine\n");
        chmod(path, 0);
        p = mw_policy_load("strict", dir, &errs);
        MW_TEST_ASSERT(p == NULL);
        MW_TEST_ASSERT(errs.n == 1 && strstr(errs.msg[0], "Permission denied") != NULL);
        mw_config_errors_free(&errs);
    }
    mw_policy_free(&p);
    unlink(path);
    unlink(other);
    rmdir(dir);
}

static void test_reputation_bounds(void)
{
    mw_config_errors errs = {0};
    mw_policy *p = mw_policy_parse("rules = (\n"
                                   "  { name = \"bad-ip\"; reputation_below = -0.5; action = \"tempfail\"; },\n"
                                   "  { name = \"good-dom\"; reputation_subject = \"domain\"; reputation_above = 0.5;\n"
                                   "    action = \"accept\"; },\n"
                                   "  { name = \"rest\"; action = \"quarantine\"; } );\n",
                                   "rep.conf", &errs);
    if (!MW_TEST_ASSERT(p != NULL)) {
        mw_config_errors_free(&errs);
        return;
    }
    mw_policy_facts f = {0};
    mw_policy_decision d;
    mw_policy_eval(p, &f, &d);                       /* unknown scores never match */
    MW_TEST_EQ_STR(d.rule, "rest");
    f.rep_ip = (mw_policy_rep){true, -0.8};
    mw_policy_eval(p, &f, &d);
    MW_TEST_EQ_STR(d.rule, "bad-ip");
    MW_TEST_EQ_INT(d.action, MW_ACTION_TEMPFAIL);
    f.rep_ip = (mw_policy_rep){false, -0.8};           /* too few samples */
    f.rep_domain = (mw_policy_rep){true, 0.9};
    mw_policy_eval(p, &f, &d);
    MW_TEST_EQ_STR(d.rule, "good-dom");
    mw_policy_free(&p);
    /* bad bounds are errors with a line */
    p = mw_policy_parse("rules = ( { name = \"x\";\n reputation_below = 2.5; action = \"accept\"; } );\n",
                        "bad.conf", &errs);
    MW_TEST_ASSERT(p == NULL && errs.n >= 1 && strstr(errs.msg[0], "bad.conf:2:") != NULL);
    mw_policy_free(&p);
    mw_config_errors_free(&errs);
}

/* The conditions on DKIM, ARC, recipients, rate limits and list headers. */
static void test_more_conditions(void)
{
    mw_policy *p = parse_ok(
        "rules = (\n"
        " { name = \"unsigned-from-us\"; trust = [\"inbound\"]; from_domain = [\"example.com\"];\n"
        "   signed_by_from = false; action = \"reject\"; },\n"
        " { name = \"billing\"; recipient = [\"Billing@example.com\"]; dmarc = [\"fail\"];\n"
        "   action = \"quarantine\"; },\n"
        " { name = \"dkim-fail-partner\"; dkim = [\"fail\", \"permerror\"]; action = \"tempfail\"; },\n"
        " { name = \"unsigned\"; dkim = [\"none\"]; recipient_domain = [\"*.vip.example\"];\n"
        "   action = \"quarantine\"; },\n"
        " { name = \"partner\"; dkim_domain = [\"partner.example\"]; action = \"accept\"; },\n"
        " { name = \"arc-fail\"; arc = [\"fail\"]; list_mail = true; action = \"quarantine\"; },\n"
        " { name = \"limited\"; rate_limited = true; action = \"tempfail\"; }\n"
        ");\n");
    if (!MW_TEST_ASSERT(p != NULL))
        return;
    const char *pass_us[] = {"example.com"}, *pass_partner[] = {"partner.example"};
    const char *to_billing[] = {"x@other.example", "billing@example.com"}, *to_vip[] = {"a@b.vip.example"};
    mw_policy_facts f = dfacts(MW_DMARC_PASS, MW_DMARC_P_REJECT, MW_DMARC_P_NONE);
    f.from_domain = "example.com";
    f.dkim_done = true;
    f.dkim_results = 1u << MW_DKIM_NONE;
    /* "reject unsigned mail claiming to be from our own domains" */
    MW_TEST_EQ_STR(eval(p, &f).rule, "unsigned-from-us");
    f.dkim_results = 1u << MW_DKIM_PASS;
    f.dkim_pass_domains = pass_us;
    f.ndkim_pass = 1;
    f.signed_by_from = true;
    MW_TEST_EQ_STR(eval(p, &f).rule, "default");
    f.dkim_done = false;   /* not verified: signed_by_from does not hold either way */
    MW_TEST_EQ_STR(eval(p, &f).rule, "default");
    /* "quarantine mail to billing@ that fails DMARC even at p=none" */
    f = dfacts(MW_DMARC_FAIL, MW_DMARC_P_NONE, MW_DMARC_P_NONE);
    f.rcpts = to_billing;
    f.nrcpts = 2;
    MW_TEST_EQ_STR(eval(p, &f).rule, "billing");
    f.nrcpts = 1;
    MW_TEST_EQ_STR(eval(p, &f).rule, "default");
    /* dkim results: any signature with one of them */
    f = dfacts(MW_DMARC_NONE, MW_DMARC_P_UNSPEC, MW_DMARC_P_UNSPEC);
    f.dkim_done = true;
    f.dkim_results = (1u << MW_DKIM_PASS) | (1u << MW_DKIM_FAIL);
    MW_TEST_EQ_STR(eval(p, &f).rule, "dkim-fail-partner");
    f.dkim_results = 1u << MW_DKIM_NONE;
    f.rcpts = to_vip;
    f.nrcpts = 1;
    MW_TEST_EQ_STR(eval(p, &f).rule, "unsigned");
    f.nrcpts = 0;
    f.dkim_results = 1u << MW_DKIM_PASS;
    f.dkim_pass_domains = pass_partner;
    f.ndkim_pass = 1;
    MW_TEST_EQ_STR(eval(p, &f).rule, "partner");
    f.ndkim_pass = 0;
    f.arc_done = true;
    f.arc = MW_ARC_FAIL;
    MW_TEST_EQ_STR(eval(p, &f).rule, "default");   /* list_mail too */
    f.list_mail = true;
    MW_TEST_EQ_STR(eval(p, &f).rule, "arc-fail");
    f.arc = MW_ARC_PASS;
    MW_TEST_EQ_STR(eval(p, &f).rule, "default");
    f.rate_limited = true;
    MW_TEST_EQ_STR(eval(p, &f).rule, "limited");
    mw_policy_free(&p);
    expect_one_error("rules = (\n { name = \"a\"; dkim = [ \"passed\" ]; action = \"accept\"; }\n);\n", 2,
                     "dkim: unknown DKIM result \"passed\"");
    expect_one_error("rules = (\n { name = \"a\"; recipient = [ \"example.com\" ]; action = \"accept\"; }\n);\n",
                     2, "recipient: \"example.com\" is not an address pattern");
    expect_one_error("rules = (\n { name = \"a\"; signed_by_from = \"yes\"; action = \"accept\"; }\n);\n", 2,
                     "rule \"a\": signed_by_from: expected true or false");
    expect_one_error("rules = (\n { name = \"a\"; arc = [ \"ok\" ]; action = \"accept\"; }\n);\n", 2,
                     "arc: unknown ARC result \"ok\"");
}

int main(void)
{
    MW_TEST_RUN(test_reputation_bounds);
    MW_TEST_RUN(test_names);
    MW_TEST_RUN(test_embedded_table);
    MW_TEST_RUN(test_rule_keys_documented);
    MW_TEST_RUN(test_more_conditions);
    MW_TEST_RUN(test_default_policy);
    MW_TEST_RUN(test_monitor_only_policy);
    MW_TEST_RUN(test_strict_policy);
    MW_TEST_RUN(test_outbound_policy);
    MW_TEST_RUN(test_first_match_and_default);
    MW_TEST_RUN(test_trust_words);
    MW_TEST_RUN(test_sender_domain);
    MW_TEST_RUN(test_networks);
    MW_TEST_RUN(test_all_conditions);
    MW_TEST_RUN(test_default_policy_dmarc);
    MW_TEST_RUN(test_other_policies_dmarc);
    MW_TEST_RUN(test_dmarc_conditions);
    MW_TEST_RUN(test_parse_errors);
    MW_TEST_RUN(test_reply_errors);
    MW_TEST_RUN(test_errors_collected);
    MW_TEST_RUN(test_load_order);
    return MW_TEST_SUMMARY();
}
