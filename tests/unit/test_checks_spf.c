/*
 * test_checks_spf.c - unit tests for mw_spf (checks/spf.c, checks/spf_dns.c)
 * against a real resolver (mw_dns) and the scriptable test DNS server
 * (tests/lib/testdns.py) on a loopback port.
 *
 * Environment: MW_SOURCE_DIR (source root), MW_TEST_PYTHON (default
 * /usr/bin/python3).  Without the server the test cannot run and fails.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "dns.h"
#include "mwtest.h"
#include "mwtest_procs.h"
#include "spf.h"
/* private to filter/checks: the strict parser and the macro expander */
#include "../../filter/checks/spf_record.h"

static const char ZONE[] =
    "{\n"
    " \"pass.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all\"}],\n"
    " \"soft.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 ~all\"}],\n"
    " \"neutral.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 ?all\"}],\n"
    " \"bare.test\": [{\"TXT\": \"v=spf1\"}],\n"
    " \"norecord.test\": [{\"A\": \"192.0.2.1\"}, {\"TXT\": \"v=spf10 not a record\"},\n"
    "                     {\"TXT\": \"google-site-verification=x\"}],\n"
    " \"syntax.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 foo:bar -all\"}],\n"
    " \"badip.test\": [{\"TXT\": \"v=spf1 ip4:300.1.2.3 -all\"}],\n"
    " \"two.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all\"}, {\"TXT\": \"v=spf1 +all\"}],\n"
    " \"incnone.test\": [{\"TXT\": \"v=spf1 include:nothing.test -all\"}],\n"
    " \"nothing.test\": [{\"A\": \"192.0.2.1\"}],\n"
    " \"timeout.test\": [\"TIMEOUT\"],\n"
    " \"timeout2.test\": [\"TIMEOUT\"],\n"
    " \"servfail.test\": [\"SERVFAIL\"],\n"
    " \"inctimeout.test\": [{\"TXT\": \"v=spf1 ip4:203.0.113.0/24 include:timeout.test -all\"}],\n"
    " \"void2.test\": [{\"TXT\": \"v=spf1 a:v1.nx.test a:v2.nx.test ?all\"}],\n"
    " \"void3.test\": [{\"TXT\": \"v=spf1 a:v1.nx.test a:v2.nx.test a:v3.nx.test +all\"}],\n"
    " \"voidmx.test\": [{\"TXT\": \"v=spf1 mx a:v1.nx.test a:v2.nx.test ?all\"},\n"
    "                   {\"MX\": [10, \"m1.voidmx.test\"]}, {\"MX\": [20, \"m2.voidmx.test\"]},\n"
    "                   {\"MX\": [30, \"m3.voidmx.test\"]}],\n"
    " \"m1.voidmx.test\": [{\"TXT\": \"x\"}], \"m2.voidmx.test\": [{\"TXT\": \"x\"}],\n"
    " \"m3.voidmx.test\": [{\"TXT\": \"x\"}],\n"
    " \"amx.test\": [{\"TXT\": \"v=spf1 a:host.amx.test mx -all\"},\n"
    "               {\"MX\": [10, \"mx.amx.test\"]}],\n"
    " \"host.amx.test\": [{\"A\": \"198.51.100.7\"}, {\"AAAA\": \"2001:db8:7::7\"}],\n"
    " \"mx.amx.test\": [{\"A\": \"198.51.100.8\"}, {\"AAAA\": \"2001:db8:8::8\"}],\n"
    " \"redir.test\": [{\"TXT\": \"v=spf1 redirect=pass.test\"}],\n"
    " \"inc.test\": [{\"TXT\": \"v=spf1 include:pass.test -all\"}],\n"
    " \"split.test\": [{\"TXT\": [\"v=spf1 ip4:192.0.2.0/24\", \" -all\"]}],\n"
    " \"expfail.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all exp=why.expfail.test\"}],\n"
    " \"why.expfail.test\": [{\"TXT\": \"Mail from this host is not authorized.\"}],\n"
    " \"expmacro.test\": [{\"TXT\": \"v=spf1 -all exp=why.expmacro.test\"}],\n"
    " \"why.expmacro.test\": [{\"TXT\": \"%{i} is not one of %{d}'s designated mail servers.\"}],\n"
    " \"nul.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 \\u0000 -all\"}],\n"
    " \"hmacro.test\": [{\"TXT\": \"v=spf1 exists:%{h}.ok.hmacro.test -all\"}],\n"
    " \"pass.test.ok.hmacro.test\": [{\"A\": \"127.0.0.2\"}],\n"
    " \"pmacro.test\": [{\"TXT\": \"v=spf1 exists:%{p}.pm.test ?all\"}],\n"
    " \"ptr.test\": [{\"TXT\": \"v=spf1 ptr -all\"}],\n"
    " \"77.100.51.198.in-addr.arpa\": [{\"PTR\": \"host.ptr.test\"}],\n"
    " \"78.100.51.198.in-addr.arpa\": [{\"PTR\": \"other.test\"}],\n"
    " \"host.ptr.test\": [{\"A\": \"198.51.100.77\"}],\n"
    " \"spf99.test\": [{\"SPF\": \"v=spf1 -all\"}, {\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all\"}],\n"
    /* macros everywhere, explanation with every letter */
    " \"expall.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all exp=why.%{d}\"}],\n"
    " \"why.expall.test\": [{\"TXT\": \"c=%{c} i=%{i} ir=%{ir} r=%{r} v=%{v} l=%{l} o=%{o} d=%{d} "
    "h=%{h} p=%{p} t=%{t} L=%{L}\"}],\n"
    " \"explong.test\": [{\"TXT\": \"v=spf1 -all exp=why.explong.test\"}],\n"
    " \"expbad.test\": [{\"TXT\": \"v=spf1 -all exp=why.expbad.test\"}],\n"
    " \"why.expbad.test\": [{\"TXT\": \"broken %{x} macro\"}],\n"
    " \"expcrlf.test\": [{\"TXT\": \"v=spf1 -all exp=why.expcrlf.test\"}],\n"
    " \"why.expcrlf.test\": [{\"TXT\": \"line\\r\\n550 injected\"}],\n"
    " \"lp.test\": [{\"TXT\": \"v=spf1 exists:%{l}.lp.test -all\"}],\n"
    " \"alice.lp.test\": [{\"A\": \"127.0.0.2\"}],\n"
    " \"rev.test\": [{\"TXT\": \"v=spf1 exists:%{ir}.%{v}.rev.test -all\"}],\n"
    " \"10.2.0.192.in-addr.rev.test\": [{\"A\": \"127.0.0.2\"}],\n"
    " \"5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.rev.test\": [{\"A\": \"127.0.0.2\"}],\n"
    " \"strict1.test\": [{\"TXT\": \"v=spf1 a:example.123 -all\"}],\n"
    " \"strict2.test\": [{\"TXT\": \"v=spf1 exp=a.test exp=b.test -all\"}],\n"
    " \"strict3.test\": [{\"TXT\": \"v=spf1 exists:%{q}.test -all\"}],\n"
    " \"strict4.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/024 -all\"}],\n"
    " \"strict5.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 \\u00e9 -all\", \"encoding\": \"latin-1\"}],\n"
    " \"modok.test\": [{\"TXT\": \"v=spf1 x.y-z_w=%{d}/a:b ip4:192.0.2.0/24 -all\"}],\n"
    " \"redirall.test\": [{\"TXT\": \"v=spf1 redirect=pass.test ~all\"}],\n"
    " \"zero4.test\": [{\"TXT\": \"v=spf1 a:host.amx.test/0 -all\"}],\n"
    " \"zero6.test\": [{\"TXT\": \"v=spf1 a:host.amx.test//0 -all\"}],\n"
    " \"zeromx.test\": [{\"TXT\": \"v=spf1 mx:amx.test/0//0 -all\"}],\n"
    " \"zeroip.test\": [{\"TXT\": \"v=spf1 ip4:203.0.113.0/0 ?ip6:2001:db8::/0 -all\"}],\n"
    " \"ptr6.test\": [{\"TXT\": \"v=spf1 ptr -all\"}],\n"
    " \"7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa\": [{\"PTR\": \"h6.ptr6.test\"}],\n"
    " \"h6.ptr6.test\": [{\"AAAA\": \"2001:db8:7::7\"}],\n"
    " \"manymx.test\": [{\"TXT\": \"v=spf1 mx -all\"},\n"
    "   {\"MX\": [1, \"host.amx.test\"]}, {\"MX\": [2, \"m2.test\"]}, {\"MX\": [3, \"m3.test\"]},\n"
    "   {\"MX\": [4, \"m4.test\"]}, {\"MX\": [5, \"m5.test\"]}, {\"MX\": [6, \"m6.test\"]},\n"
    "   {\"MX\": [7, \"m7.test\"]}, {\"MX\": [8, \"m8.test\"]}, {\"MX\": [9, \"m9.test\"]},\n"
    "   {\"MX\": [10, \"m10.test\"]}, {\"MX\": [11, \"m11.test\"]}],\n"
    " \"ttl60.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all\", \"ttl\": 60}],\n"
    " \"trunc.test\": [\"TRUNCATE\", {\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all\"}],\n";

static mwt_proc testdns;
static mw_dns *dns;
static mw_spf *spf;
static mw_spf *spf_fast;   /* short deadline, for the timeout cases */

#define RECEIVER "mx.receiver.test"

/* testdns.py serving ZONE plus generated names (include chain, long records). */
static bool start_server(void)
{
    char zone[128];
    if (!mwt_proc_dir(&testdns, "spf"))
        return false;
    mwt_path(&testdns, "zone.json", zone, sizeof zone);
    FILE *f = fopen(zone, "w");
    if (!f)
        return false;
    fputs(ZONE, f);
    /* include chain: cN includes cN+1 (N = 0..11), c12 lists the network */
    for (int i = 0; i < 12; i++)
        fprintf(f, " \"c%d.chain.test\": [{\"TXT\": \"v=spf1 include:c%d.chain.test -all\"}],\n", i,
                i + 1);
    fputs(" \"c12.chain.test\": [{\"TXT\": \"v=spf1 ip4:192.0.2.0/24 -all\"}],\n", f);
    /* a record longer than any UDP answer here (1232): must come over TCP */
    fputs(" \"long.test\": [{\"TXT\": \"v=spf1", f);
    for (int i = 0; i < 90; i++)
        fprintf(f, " ip4:203.0.113.%d", i);
    fputs(" ip4:192.0.2.0/24 -all\"}],\n", f);
    /* > 511 bytes of compiled mechanisms: libspf2 alone drops the tail */
    fputs(" \"long6.test\": [{\"A\": \"198.51.100.50\"}, {\"TXT\": \"v=spf1", f);
    for (int i = 0; i < 40; i++)
        fprintf(f, " ip6:2001:db8:%x::/48", i);
    fputs(" a -all exp=why.expfail.test\"}],\n", f);
    /* an explanation far beyond the cap */
    fputs(" \"why.explong.test\": [{\"TXT\": \"", f);
    for (int i = 0; i < 300; i++)
        fputs("%{d} ", f);
    fputs("\"}]\n}\n", f);
    fclose(f);

    return mwt_testdns_start(&testdns, "spf", NULL);
}

static void stop_server(void)
{
    mwt_proc_stop(&testdns);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Check one identity, compare the result; returns the outcome (caller clears). */
static mw_spf_result check(mw_spf *s, const char *ip, const char *helo, const char *from,
                           mw_spf_scope scope, mw_spf_outcome *o)
{
    mw_spf_check(s, ip, helo, from, scope, o);
    return o->result;
}

struct expect {
    const char *domain;
    const char *ip;
    mw_spf_result result;
};

/* The same table through both scopes: user@DOMAIN as MAIL FROM, DOMAIN as HELO. */
static void test_results_both_scopes(void)
{
    static const struct expect cases[] = {
        {"pass.test", "192.0.2.10", MW_SPF_PASS},
        {"pass.test", "198.51.100.1", MW_SPF_FAIL},
        {"soft.test", "198.51.100.1", MW_SPF_SOFTFAIL},
        {"neutral.test", "198.51.100.1", MW_SPF_NEUTRAL},
        {"bare.test", "198.51.100.1", MW_SPF_NEUTRAL},
        {"norecord.test", "192.0.2.10", MW_SPF_NONE},
        {"nx.test", "192.0.2.10", MW_SPF_NONE},
        {"syntax.test", "192.0.2.10", MW_SPF_PERMERROR},
        {"badip.test", "192.0.2.10", MW_SPF_PERMERROR},
        {"two.test", "192.0.2.10", MW_SPF_PERMERROR},
        {"incnone.test", "192.0.2.10", MW_SPF_PERMERROR},
        {"servfail.test", "192.0.2.10", MW_SPF_TEMPERROR},
        {"void2.test", "192.0.2.10", MW_SPF_NEUTRAL},
        {"void3.test", "192.0.2.10", MW_SPF_PERMERROR},
        {"voidmx.test", "192.0.2.10", MW_SPF_NEUTRAL},
        {"amx.test", "198.51.100.7", MW_SPF_PASS},
        {"amx.test", "198.51.100.8", MW_SPF_PASS},
        {"amx.test", "198.51.100.9", MW_SPF_FAIL},
        {"amx.test", "2001:db8:7::7", MW_SPF_PASS},
        {"amx.test", "2001:db8:8::8", MW_SPF_PASS},
        {"amx.test", "2001:db8:9::9", MW_SPF_FAIL},
        {"redir.test", "192.0.2.10", MW_SPF_PASS},
        {"redir.test", "198.51.100.1", MW_SPF_FAIL},
        {"inc.test", "192.0.2.10", MW_SPF_PASS},
        {"inc.test", "198.51.100.1", MW_SPF_FAIL},
        {"split.test", "192.0.2.10", MW_SPF_PASS},
        {"spf99.test", "192.0.2.10", MW_SPF_PASS},
        {"pass.test", "2001:db8::25", MW_SPF_PASS},
        {"pass.test", "2001:db9::25", MW_SPF_FAIL},
        {"pass.test", "::ffff:192.0.2.10", MW_SPF_PASS},
        {"pass.test", "::ffff:198.51.100.1", MW_SPF_FAIL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct expect *c = &cases[i];
        char from[128];
        snprintf(from, sizeof from, "user@%s", c->domain);
        mw_spf_outcome o;
        mw_spf_result r = check(spf, c->ip, "helo.example.test", from, MW_SPF_SCOPE_MAILFROM, &o);
        if (!MW_TEST_EQ_STR(mw_spf_result_name(r), mw_spf_result_name(c->result)))
            fprintf(stderr, "   mailfrom %s ip %s: reason %s\n", from, c->ip, o.reason);
        MW_TEST_EQ_STR(o.identity, from);
        MW_TEST_EQ_STR(o.domain, c->domain);
        MW_TEST_ASSERT(o.reason && *o.reason);
        MW_TEST_ASSERT(o.evaluated);
        mw_spf_outcome_clear(&o);

        r = check(spf, c->ip, c->domain, "someone@elsewhere.test", MW_SPF_SCOPE_HELO, &o);
        if (!MW_TEST_EQ_STR(mw_spf_result_name(r), mw_spf_result_name(c->result)))
            fprintf(stderr, "   helo %s ip %s: reason %s\n", c->domain, c->ip, o.reason);
        char pm[128];
        snprintf(pm, sizeof pm, "postmaster@%s", c->domain);
        MW_TEST_EQ_STR(o.identity, pm);
        MW_TEST_EQ_INT(o.scope, MW_SPF_SCOPE_HELO);
        mw_spf_outcome_clear(&o);
    }
}

/* Macros and ptr: libspf2 paths that look at the HELO or the client's name. */
static void test_macros_ptr(void)
{
    mw_spf_outcome o;
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", "pass.test", "a@hmacro.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    /* no HELO at all: %{h} must not crash; no match */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@hmacro.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    mw_spf_result r = check(spf, "192.0.2.10", NULL, "a@pmacro.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(r == MW_SPF_NEUTRAL);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.77", NULL, "a@ptr.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.78", NULL, "a@ptr.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.79", NULL, "a@ptr.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
}

static void test_reasons(void)
{
    mw_spf_outcome o;
    check(spf, "192.0.2.10", NULL, "a@syntax.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "syntax.test"));
    mw_spf_outcome_clear(&o);

    check(spf, "192.0.2.10", NULL, "a@two.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "Multiple"));
    mw_spf_outcome_clear(&o);

    check(spf, "192.0.2.10", NULL, "a@void3.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "void"));
    mw_spf_outcome_clear(&o);

    check(spf, "192.0.2.10", NULL, "a@servfail.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "servfail.test"));
    mw_spf_outcome_clear(&o);

    check(spf, "192.0.2.10", NULL, "a@pass.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "pass.test"));
    MW_TEST_ASSERT(o.explanation == NULL);
    mw_spf_outcome_clear(&o);
}

/* Silent domains: temperror, whatever the machine's speed.  The outcome and
 * reason are exact; the time only has a 10x upper bound (a hang). */
static void test_timeouts(void)
{
    mw_spf_outcome o;
    double t0 = now_s();
    MW_TEST_EQ_INT(check(spf_fast, "192.0.2.10", NULL, "a@timeout.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_TEMPERROR);
    MW_TEST_EQ_STR(o.reason, "SPF evaluation deadline exceeded");
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf_fast, "192.0.2.10", "timeout.test", "", MW_SPF_SCOPE_HELO, &o),
                   MW_SPF_TEMPERROR);
    mw_spf_outcome_clear(&o);
    /* include of a silent domain: the ip4 mechanism before it does not match */
    MW_TEST_EQ_INT(check(spf_fast, "192.0.2.10", NULL, "a@inctimeout.test",
                         MW_SPF_SCOPE_MAILFROM, &o), MW_SPF_TEMPERROR);
    mw_spf_outcome_clear(&o);
    double dt = now_s() - t0;
    MW_TEST_ASSERT(dt < 3 * 1.0 * 10);   /* three deadlines of 1 s, 10x */
    fprintf(stderr, "   timeouts took %.2f s\n", dt);
    /* ... but one that matches first never reaches it (checked with the 5 s
     * checker: its record lookup must not race spf_fast's 1 s deadline) */
    MW_TEST_EQ_INT(check(spf, "203.0.113.5", NULL, "a@inctimeout.test",
                         MW_SPF_SCOPE_MAILFROM, &o), MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
}

static void test_identities(void)
{
    mw_spf_outcome o;
    /* null sender: postmaster@HELO */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", "pass.test", "", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    MW_TEST_EQ_STR(o.identity, "postmaster@pass.test");
    MW_TEST_EQ_STR(o.domain, "pass.test");
    MW_TEST_EQ_INT(o.scope, MW_SPF_SCOPE_MAILFROM);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", "pass.test", "", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    /* null sender and no usable HELO */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "", MW_SPF_SCOPE_MAILFROM, &o), MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", "[192.0.2.10]", "", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    /* HELO scope: address literal, bare word, dotted quad, empty -> none */
    const char *bad_helo[] = {"[192.0.2.10]", "[IPv6:2001:db8::1]", "localhost", "192.0.2.10",
                              "", "bad..name.test", "-x.test", NULL};
    for (int i = 0; bad_helo[i]; i++) {
        MW_TEST_EQ_INT(check(spf, "192.0.2.10", bad_helo[i], "a@pass.test", MW_SPF_SCOPE_HELO, &o),
                       MW_SPF_NONE);
        MW_TEST_ASSERT(o.reason && strstr(o.reason, "not a domain"));
        mw_spf_outcome_clear(&o);
    }
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@pass.test", MW_SPF_SCOPE_HELO, &o),
                   MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    /* sender without local part, malformed sender domains */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "@pass.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    MW_TEST_EQ_STR(o.identity, "postmaster@pass.test");
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@b..test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    char longlabel[128] = "a@";
    memset(longlabel + 2, 'x', 64);
    strcpy(longlabel + 66, ".test");
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, longlabel, MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_NONE);
    mw_spf_outcome_clear(&o);
    /* unusable client address */
    MW_TEST_EQ_INT(check(spf, "not-an-ip", "pass.test", "a@pass.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_NONE);
    MW_TEST_EQ_STR(o.client_ip, "not-an-ip");
    mw_spf_outcome_clear(&o);
    /* case does not matter */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", "PASS.Test", "", MW_SPF_SCOPE_HELO, &o), MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
}

static void test_explanation(void)
{
    mw_spf_outcome o;
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@expfail.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_EQ_STR(o.explanation, "Mail from this host is not authorized.");
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@expfail.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    MW_TEST_ASSERT(o.explanation == NULL);
    mw_spf_outcome_clear(&o);
    /* macros: expanded by our own expander */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@expmacro.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_EQ_STR(o.explanation, "198.51.100.1 is not one of expmacro.test's designated mail servers.");
    mw_spf_outcome_clear(&o);
    /* no exp=: no explanation (libspf2's default text is not used) */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@pass.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_ASSERT(o.explanation == NULL);
    mw_spf_outcome_clear(&o);
}

static void test_nul_record(void)
{
    /* libspf2 would see the record cut at the NUL; our parser sees it all */
    mw_spf_outcome o;
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@nul.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PERMERROR);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "NUL"));
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@nul.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PERMERROR);
    mw_spf_outcome_clear(&o);
}


/* ---- strict parser and macro expander (spf_record.c), no DNS ---- */

static void test_record_syntax(void)
{
    static const char *const good[] = {
        "v=spf1", "V=SPF1 -ALL", "v=spf1 ", "v=spf1  a  -all ", "v=spf1 a mx ptr ?all",
        "v=spf1 a:foo.example.com/24//64 mx:%{d}/0 ~all", "v=spf1 a/0 a//0 ip4:1.2.3.4/0",
        "v=spf1 ip6:::1.1.1.1/0 ip6:2001:db8::/32 ip4:192.0.2.0/24",
        "v=spf1 include:_spf.%{d2} exists:%{ir}.%{l1r-}.lp._spf.%{d2} -all",
        "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", "v=spf1 default=+",
        "v=spf1 a:foo:bar/baz.example.com", "v=spf1 a:foo.example.xn--zckzah -all",
        "v=spf1 exp=%{d}", "v=spf1 redirect=%{d}.d.spf.example.com.",
        "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all",
        "v=spf1 exists:%{p}.ok.example.com", "v=spf1 a:123-456.example.12-3",
        "v=spf1 unknown=%{c}%{r}%{t}",
    };
    static const char *const bad[] = {
        "v=spf1 ip4:1.2.3.4 -all moo", "v=spf1 moo.cow/far_out=man:dog/cat", "v=spf1 =all",
        "v=spf1 1up=foo", "v=spf1 a:example.123", "v=spf1 a:museum", "v=spf1 a:museum.",
        "v=spf1 a:111.222.33.44", "v=spf1 a:example.-com", "v=spf1 a:", "v=spf1 mx:",
        "v=spf1 a/33", "v=spf1 a//129", "v=spf1 a/24/64", "v=spf1 ip4:1.2.3.4/032",
        "v=spf1 ip4:1.2.3.4/33", "v=spf1 ip4:1.2.3", "v=spf1 ip4:01.2.3.4", "v=spf1 ip4",
        "v=spf1 ip4:1.2.3.4//32", "v=spf1 ip6::CAFE::BABE", "v=spf1 ip6:::1/129",
        "v=spf1 -all.", "v=spf1 -all:foo", "v=spf1 -all/8", "v=spf1 ptr/24", "v=spf1 ptr:",
        "v=spf1 include", "v=spf1 include:", "v=spf1 include:a.example.com/24",
        "v=spf1 exists", "v=spf1 exists:", "v=spf1 exists:mail.example.com/24",
        "v=spf1 exp= -all", "v=spf1 exp=-all", "v=spf1 redirect=", "v=spf1 redirect=-all",
        "v=spf1 redirect:x.example.com", "v=spf1 exp=a.example.com exp=b.example.com",
        "v=spf1 redirect=a.example.com redirect=a.example.com", "v=spf1 -all foo=%abc",
        "v=spf1 exists:%(ir).sbl.example.com", "v=spf1 exists:foo%.sbl.example.com",
        "v=spf1 exp=%{r}.example.com", "v=spf1 a:%{a}.example.com", "v=spf1 a:%{d0}.x.com",
        "v=spf1 a:%{d", "v=spf1 exists:%{c}.example.com", "v=spf1 mx:abc.123",
        "v=spf1 ip4:192.0.2.5\n", "v=spf1 a:x.example.com\rptr", "v=spf10", "v=spf1x",
        "spf1 -all", "",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        mw_spf_record r;
        char why[256] = "";
        bool ok = mw_spf_record_parse(good[i], strlen(good[i]), &r, why, sizeof why);
        if (!MW_TEST_ASSERT(ok))
            fprintf(stderr, "   refused \"%s\": %s\n", good[i], why);
        mw_spf_record_free(&r);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mw_spf_record r;
        char why[256] = "";
        bool ok = mw_spf_record_parse(bad[i], strlen(bad[i]), &r, why, sizeof why);
        if (!MW_TEST_ASSERT(!ok))
            fprintf(stderr, "   accepted \"%s\"\n", bad[i]);
        else
            MW_TEST_ASSERT(why[0] != '\0');
        mw_spf_record_free(&r);
    }
    /* NUL, 8-bit: counted bytes, not C strings */
    mw_spf_record r;
    char why[256];
    MW_TEST_ASSERT(!mw_spf_record_parse("v=spf1 a:foo.example.com\0", 25, &r, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "NUL") != NULL);
    MW_TEST_ASSERT(!mw_spf_record_parse("v=spf1 \x80" "a -all", 13, &r, why, sizeof why));
    /* parsed structure */
    const char *rec = "v=spf1 -a:%{d}/24//64 ~mx ip4:192.0.2.0/24 exp=e.%{d} redirect=r.test";
    MW_TEST_ASSERT(mw_spf_record_parse(rec, strlen(rec), &r, why, sizeof why));
    MW_TEST_EQ_INT((long)r.n, 5);
    MW_TEST_EQ_INT(r.t[0].kind, MW_SPF_T_A);
    MW_TEST_EQ_INT(r.t[0].qual, '-');
    MW_TEST_EQ_STR(r.t[0].spec, "%{d}");
    MW_TEST_EQ_INT(r.t[0].cidr4, 24);
    MW_TEST_EQ_INT(r.t[0].cidr6, 64);
    MW_TEST_EQ_INT(r.t[1].qual, '~');
    MW_TEST_ASSERT(r.t[1].spec == NULL);
    MW_TEST_EQ_INT(r.t[2].cidr4, 24);
    MW_TEST_EQ_INT(r.exp, 3);
    MW_TEST_EQ_INT(r.redirect, 4);
    MW_TEST_ASSERT(!r.has_all);
    mw_spf_record_free(&r);
}

/* RFC 7208 7.4's examples, plus the suite's trickier ones. */
static void test_macro_expansion(void)
{
    mw_spf_macro_ctx c = {.local = "strong-bad", .sender_dom = "email.example.com",
                          .domain = "email.example.com", .helo = "mx.example.org",
                          .receiver = "rcv.example.net"};
    MW_TEST_ASSERT(mw_addr_parse("192.0.2.3", &c.ip));
    static const struct { const char *in, *out; } t[] = {
        {"%{s}", "strong-bad@email.example.com"}, {"%{o}", "email.example.com"},
        {"%{d}", "email.example.com"}, {"%{d4}", "email.example.com"},
        {"%{d3}", "email.example.com"}, {"%{d2}", "example.com"}, {"%{d1}", "com"},
        {"%{dr}", "com.example.email"}, {"%{d2r}", "example.email"}, {"%{l}", "strong-bad"},
        {"%{l-}", "strong.bad"}, {"%{lr}", "strong-bad"}, {"%{lr-}", "bad.strong"},
        {"%{l1r-}", "strong"},
        {"%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
        {"%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
        {"%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
        {"%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
        {"%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
        {"%{h}.x.test", "mx.example.org.x.test"}, {"a%%b%_c%-d.test", "a%b c%20d.test"},
        {"%{l2r+-}.user.%{d2}", "bad.strong.user.example.com"},
        {"%{p}.p.test", "unknown.p.test"}, {"trail.test.", "trail.test"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        MW_TEST_ASSERT(mw_spf_domain_spec_ok(t[i].in, strlen(t[i].in)));
        char *e = mw_spf_expand_domain(&c, t[i].in);
        if (!MW_TEST_EQ_STR(e, t[i].out))
            fprintf(stderr, "   expanding %s\n", t[i].in);
        free(e);
    }
    MW_TEST_ASSERT(c.used_local);
    /* IPv6: nibbles (RFC 7208 7.4's example; the suite spells them in upper case) */
    MW_TEST_ASSERT(mw_addr_parse("2001:db8::cb01", &c.ip));
    char *e = mw_spf_expand_domain(&c, "%{ir}.%{v}._spf.%{d2}");
    MW_TEST_ASSERT(strcasecmp(e, "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
                                 ".ip6._spf.example.com") == 0);
    free(e);
    /* explanation-only letters, URL escaping of upper-case letters */
    c.local = "~jack&jill=up-a_b3.c";
    e = mw_spf_expand_explain(&c, "l=%{L} c=%{c} r=%{r}", 20);
    MW_TEST_EQ_STR(e, "l=~jack%26jill%3Dup-a_b3.c c=2001:db8::cb01 r=rcv.example.net");
    free(e);
    MW_TEST_ASSERT(mw_spf_expand_explain(&c, "The %{x}-files.", 15) == NULL);
    MW_TEST_ASSERT(mw_spf_expand_explain(&c, "100%", 4) == NULL);
    MW_TEST_ASSERT(mw_spf_expand_explain(&c, "\xEF\xBB\xBFtext", 7) == NULL);
    /* 7.3: over 253 bytes, labels are dropped from the left */
    c.sender_dom = "somewhat.long.exp.example.com";
    e = mw_spf_expand_domain(&c, "foobar.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.example.com");
    MW_TEST_ASSERT(strlen(e) <= 253);
    MW_TEST_ASSERT(strncmp(e, "somewhat.long.exp.example.com.", 30) == 0);
    free(e);
    /* bounded: a huge expansion is cut */
    mw_buf big = MW_BUF_INIT;
    for (int i = 0; i < 400; i++)
        mw_buf_puts(&big, "%{s}");
    e = mw_spf_expand_explain(&c, big.data, big.len);
    MW_TEST_ASSERT(e && strlen(e) <= MW_SPF_MAX_EXPANSION);
    free(e);
    mw_buf_free(&big);
}

/* ---- behaviour libspf2 alone gets wrong, through the real resolver ---- */

static void test_strict_records(void)
{
    static const char *const perm[] = {"strict1.test", "strict2.test", "strict3.test",
                                       "strict4.test", "strict5.test", NULL};
    for (int i = 0; perm[i]; i++) {
        char from[64];
        snprintf(from, sizeof from, "a@%s", perm[i]);
        mw_spf_outcome o;
        if (!MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, from, MW_SPF_SCOPE_MAILFROM, &o),
                            MW_SPF_PERMERROR))
            fprintf(stderr, "   %s: %s\n", from, o.reason);
        MW_TEST_ASSERT(o.reason && strstr(o.reason, perm[i]));
        mw_spf_outcome_clear(&o);
    }
    mw_spf_outcome o;
    /* a legal unknown modifier libspf2 would refuse */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@modok.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    /* redirect ignored when "all" is present (libspf2: recursion error) */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@redirall.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_SOFTFAIL);
    mw_spf_outcome_clear(&o);
}

static void test_limits(void)
{
    mw_spf_outcome o;
    /* 12 includes deep: over the limit of 10 DNS terms */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@c0.chain.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PERMERROR);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "10"));
    mw_spf_outcome_clear(&o);
    /* 10 includes: at the limit */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@c2.chain.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@c3.chain.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    /* more than 10 MX records: permerror even though the first one matches */
    MW_TEST_EQ_INT(check(spf, "198.51.100.7", NULL, "a@manymx.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PERMERROR);
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "MX"));
    mw_spf_outcome_clear(&o);
}

static void test_zero_cidr_and_families(void)
{
    static const struct expect cases[] = {
        {"zero4.test", "203.0.113.99", MW_SPF_PASS},     /* a/0: any A record matches */
        {"zero4.test", "2001:db8:7::7", MW_SPF_PASS},    /* ip6 length is still /128 */
        {"zero4.test", "2001:db8:7::8", MW_SPF_FAIL},
        {"zero4.test", "::ffff:203.0.113.99", MW_SPF_PASS},
        {"zero6.test", "2001:db9::1", MW_SPF_PASS},      /* a//0: any AAAA record */
        {"zero6.test", "198.51.100.7", MW_SPF_PASS},     /* ip4 length /32, exact */
        {"zero6.test", "198.51.100.8", MW_SPF_FAIL},
        {"zeromx.test", "203.0.113.99", MW_SPF_PASS},
        {"zeromx.test", "2001:db9::1", MW_SPF_PASS},
        {"zeroip.test", "203.0.114.1", MW_SPF_PASS},
        {"zeroip.test", "2001:db9::1", MW_SPF_NEUTRAL},
        {"rev.test", "192.0.2.10", MW_SPF_PASS},         /* %{ir}.%{v} */
        {"rev.test", "2001:db8::25", MW_SPF_PASS},
        {"rev.test", "::ffff:192.0.2.10", MW_SPF_PASS},  /* IPv4-mapped is IPv4 */
        {"rev.test", "192.0.2.11", MW_SPF_FAIL},
        {"ptr6.test", "2001:db8:7::7", MW_SPF_PASS},
        {"ptr6.test", "2001:db8:7::8", MW_SPF_FAIL},
        {"pass.test", "127.0.0.1", MW_SPF_FAIL},         /* no "localhost is always allowed" */
        {"pass.test", "::1", MW_SPF_FAIL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char from[64];
        snprintf(from, sizeof from, "u@%s", cases[i].domain);
        mw_spf_outcome o;
        mw_spf_result r = check(spf, cases[i].ip, "h.test", from, MW_SPF_SCOPE_MAILFROM, &o);
        if (!MW_TEST_EQ_STR(mw_spf_result_name(r), mw_spf_result_name(cases[i].result)))
            fprintf(stderr, "   %s from %s: %s\n", from, cases[i].ip, o.reason);
        mw_spf_outcome_clear(&o);
    }
}

static void test_explanation_macros(void)
{
    mw_spf_outcome o;
    time_t t0 = time(NULL);
    MW_TEST_EQ_INT(check(spf, "198.51.100.77", "helo.example.test", "Some.One@expall.test",
                         MW_SPF_SCOPE_MAILFROM, &o), MW_SPF_FAIL);
    char want[512];
    snprintf(want, sizeof want, "c=198.51.100.77 i=198.51.100.77 ir=77.100.51.198 r=" RECEIVER
             " v=in-addr l=Some.One o=expall.test d=expall.test h=helo.example.test "
             "p=host.ptr.test t=");
    MW_TEST_ASSERT(o.explanation && strncmp(o.explanation, want, strlen(want)) == 0);
    if (o.explanation) {
        long long t = atoll(o.explanation + strlen(want));
        MW_TEST_ASSERT(t >= (long long)t0 && t <= (long long)time(NULL) + 1);
        MW_TEST_ASSERT(strstr(o.explanation, " L=Some.One"));
    }
    fprintf(stderr, "   %s\n", o.explanation ? o.explanation : "(null)");
    mw_spf_outcome_clear(&o);
    /* IPv6 client */
    MW_TEST_EQ_INT(check(spf, "2001:db8::25", "h.test", "x@expall.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_ASSERT(o.explanation && strstr(o.explanation, "c=2001:db8::25 ") &&
                   strstr(o.explanation, " v=ip6 ") && strstr(o.explanation, " p=unknown "));
    mw_spf_outcome_clear(&o);
    /* bad macro in the text: as if there were no exp= */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@expbad.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_ASSERT(o.explanation == NULL);
    mw_spf_outcome_clear(&o);
    /* control characters: not an explain-string either */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@expcrlf.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_ASSERT(o.explanation == NULL);
    mw_spf_outcome_clear(&o);
    /* capped */
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@explong.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_ASSERT(o.explanation && strlen(o.explanation) <= 1024 && strlen(o.explanation) > 900);
    mw_spf_outcome_clear(&o);
}

/* > 512 bytes (and > the EDNS size): libunbound retries over TCP. */
static void test_tcp(void)
{
    mw_spf_outcome o;
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@long.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "203.0.113.89", NULL, "a@long.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.1", NULL, "a@long.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    /* many ip6 terms: the record is evaluated in chunks (spf_dns.h) */
    MW_TEST_EQ_INT(check(spf, "2001:db8:27::1", NULL, "a@long6.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.50", NULL, "a@long6.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);         /* "a" (implicit domain) in the last chunk */
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "198.51.100.51", NULL, "a@long6.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_EQ_STR(o.explanation, "Mail from this host is not authorized.");
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(spf, "2001:db9::1", NULL, "a@long6.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    /* the server truncates every UDP answer for this name */
    MW_TEST_EQ_INT(check(spf, "192.0.2.10", NULL, "a@trunc.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
}

/* A DNS timeout is temperror after the per-query cap, not the whole deadline. */
static void test_query_cap(void)
{
    char err[256];
    mw_spf_options opt = {.timeout_ms = 20000, .query_timeout_ms = 700, .receiver = RECEIVER,
                          .no_cache = true};
    mw_spf *s = mw_spf_create(dns, &opt, err, sizeof err);
    MW_TEST_ASSERT(s != NULL);
    mw_spf_outcome o;
    double t0 = now_s();
    MW_TEST_EQ_INT(check(s, "192.0.2.10", NULL, "a@timeout2.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_TEMPERROR);
    double dt = now_s() - t0;
    /* The reason names the capped query (exact); the time is at least the
     * cap and at most 10x it, still far below the 20 s deadline. */
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "timeout2.test"));
    MW_TEST_ASSERT(o.reason && strstr(o.reason, "timeout after 700 ms"));
    MW_TEST_ASSERT(dt >= 0.6 && dt < 7.0);
    fprintf(stderr, "   timeout after %.2f s: %s\n", dt, o.reason);
    mw_spf_outcome_clear(&o);
    mw_spf_destroy(&s);
}

/* The result cache's fake clock (ms); moved by the main thread only. */
static uint64_t fake_ms = 1000000;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_ms;
}

static void test_cache(void)
{
    char err[256];
    mw_spf_options opt = {.timeout_ms = 5000, .receiver = RECEIVER, .cache_entries = 4};
    mw_spf *s = mw_spf_create(dns, &opt, err, sizeof err);
    MW_TEST_ASSERT(s != NULL);
    mw_spf_cache_stats st0, st;
    mw_spf_outcome o;

    /* same (ip, domain, helo, scope), another local part: a hit */
    MW_TEST_EQ_INT(check(s, "198.51.100.1", "h.test", "a@expfail.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st0);
    MW_TEST_EQ_INT((long)st0.inserts, 1);
    MW_TEST_EQ_INT(check(s, "198.51.100.1", "h.test", "b@expfail.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    MW_TEST_EQ_STR(o.explanation, "Mail from this host is not authorized.");
    MW_TEST_EQ_STR(o.identity, "b@expfail.test");
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st);
    MW_TEST_EQ_INT((long)(st.hits - st0.hits), 1);
    /* other IP, other HELO, other scope: misses */
    check(s, "198.51.100.2", "h.test", "a@expfail.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_outcome_clear(&o);
    check(s, "198.51.100.1", "h2.test", "a@expfail.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st0);
    MW_TEST_EQ_INT((long)(st0.hits - st.hits), 0);

    /* a record using %{l}: the local part is part of the key */
    MW_TEST_EQ_INT(check(s, "192.0.2.10", "h.test", "alice@lp.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(s, "192.0.2.10", "h.test", "bob@lp.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_FAIL);
    mw_spf_outcome_clear(&o);
    MW_TEST_EQ_INT(check(s, "192.0.2.10", "h.test", "alice@lp.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);

    /* bounded */
    mw_spf_cache_get_stats(s, &st);
    MW_TEST_ASSERT(st.entries <= 4);
    MW_TEST_ASSERT(st.evictions >= 1);

    /* temperror is not cached */
    mw_spf_cache_get_stats(s, &st0);
    check(s, "192.0.2.10", "h.test", "a@servfail.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st);
    MW_TEST_EQ_INT((long)(st.inserts - st0.inserts), 0);

    /* the record's TTL (60 s) bounds the entry's life: on a fake clock, a
     * hit at 30 s and a miss at 60 s (sleeping past a real 1 s TTL raced
     * the scheduler).  Not the exact last millisecond: libunbound may hand
     * the record over with 59 s left (its clock ticks in seconds). */
    mw_spf_cache_set_clock(s, fake_clock, NULL);
    check(s, "192.0.2.10", "h.test", "a@ttl60.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st0);
    fake_ms += 30000;
    check(s, "192.0.2.10", "h.test", "a@ttl60.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st);
    MW_TEST_EQ_INT((long)(st.hits - st0.hits), 1);
    fake_ms += 30000;
    MW_TEST_EQ_INT(check(s, "192.0.2.10", "h.test", "a@ttl60.test", MW_SPF_SCOPE_MAILFROM, &o),
                   MW_SPF_PASS);
    mw_spf_outcome_clear(&o);
    mw_spf_cache_get_stats(s, &st0);
    MW_TEST_EQ_INT((long)(st0.hits - st.hits), 0);
    MW_TEST_EQ_INT((long)(st0.inserts - st.inserts), 1);    /* evaluated and stored again */
    fprintf(stderr, "   cache: %lu hits, %lu misses, %lu inserts, %lu evictions, %zu/%zu\n",
            st0.hits, st0.misses, st0.inserts, st0.evictions, st0.entries, st0.capacity);
    mw_spf_destroy(&s);
}

static void test_result_names(void)
{
    mw_spf_result r;
    for (int i = MW_SPF_NONE; i <= MW_SPF_PERMERROR; i++) {
        MW_TEST_ASSERT(mw_spf_result_parse(mw_spf_result_name((mw_spf_result)i), &r));
        MW_TEST_EQ_INT(r, i);
    }
    MW_TEST_EQ_STR(mw_spf_result_name(MW_SPF_SOFTFAIL), "softfail");
    MW_TEST_ASSERT(mw_spf_result_parse("TempError", &r) && r == MW_SPF_TEMPERROR);
    MW_TEST_ASSERT(!mw_spf_result_parse("unknown", &r));
    MW_TEST_ASSERT(!mw_spf_result_parse("", &r));
    MW_TEST_ASSERT(!mw_spf_result_parse(NULL, &r));
    MW_TEST_ASSERT(!mw_spf_result_parse("pass ", &r));
}

/* ---- Received-SPF: a loose RFC 7208 9.1 parser ---- */

struct rspf {
    char result[16];
    char comment[1024];
    char keys[12][32];
    char vals[12][1024];
    int n;
};

static bool is_atext_c(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~.", c));
}

/* Parse result [comment] key=value;... ; false on any syntax error. */
static bool parse_rspf(const char *s, struct rspf *p)
{
    memset(p, 0, sizeof *p);
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
            return false;                       /* one line, ASCII only */
    size_t i = 0;
    while (s[i] >= 'a' && s[i] <= 'z' && i < sizeof p->result - 1) {
        p->result[i] = s[i];
        i++;
    }
    if (!mw_spf_result_parse(p->result, NULL))
        return false;
    while (s[i] == ' ')
        i++;
    if (s[i] == '(') {
        int depth = 1;
        size_t o = 0;
        i++;
        while (s[i] && depth) {
            if (s[i] == '\\' && s[i + 1]) {
                if (o < sizeof p->comment - 2)
                    p->comment[o++] = s[i + 1];
                i += 2;
                continue;
            }
            if (s[i] == '(')
                depth++;
            if (s[i] == ')' && --depth == 0)
                break;
            if (o < sizeof p->comment - 1)
                p->comment[o++] = s[i];
            i++;
        }
        if (s[i] != ')')
            return false;
        i++;
    }
    for (;;) {
        while (s[i] == ' ')
            i++;
        if (!s[i])
            return true;
        if (p->n >= 12)
            return false;
        size_t k = 0;
        while (s[i] && s[i] != '=' && s[i] != ' ' && k < 31)
            p->keys[p->n][k++] = s[i++];
        if (s[i] != '=' || k == 0)
            return false;
        i++;
        size_t o = 0;
        if (s[i] == '"') {
            i++;
            while (s[i] && s[i] != '"') {
                if (s[i] == '\\') {
                    if (!s[i + 1])
                        return false;
                    i++;
                }
                if (o < 1023)
                    p->vals[p->n][o++] = s[i];
                i++;
            }
            if (s[i] != '"')
                return false;
            i++;
        } else {
            while (is_atext_c(s[i]) && o < 1023)
                p->vals[p->n][o++] = s[i++];
            if (o == 0)
                return false;
        }
        p->n++;
        if (s[i] == ';')
            i++;
        else if (s[i])
            return false;
    }
}

static const char *rspf_get(const struct rspf *p, const char *key)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], key) == 0)
            return p->vals[i];
    return NULL;
}

static void test_received_spf(void)
{
    mw_spf_outcome o;
    mw_buf b = MW_BUF_INIT;
    struct rspf p;

    check(spf, "192.0.2.10", "mail.pass.test", "user@pass.test", MW_SPF_SCOPE_MAILFROM, &o);
    mw_spf_received_spf(&o, RECEIVER, &b);
    fprintf(stderr, "   %s\n", mw_buf_cstr(&b));
    MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
    MW_TEST_EQ_STR(p.result, "pass");
    MW_TEST_ASSERT(strstr(p.comment, RECEIVER ": domain of user@pass.test designates 192.0.2.10"));
    MW_TEST_EQ_STR(rspf_get(&p, "client-ip"), "192.0.2.10");
    MW_TEST_EQ_STR(rspf_get(&p, "envelope-from"), "user@pass.test");
    MW_TEST_EQ_STR(rspf_get(&p, "helo"), "mail.pass.test");
    MW_TEST_EQ_STR(rspf_get(&p, "receiver"), RECEIVER);
    MW_TEST_EQ_STR(rspf_get(&p, "identity"), "mailfrom");
    MW_TEST_ASSERT(strstr(mw_buf_cstr(&b), "envelope-from=\"user@pass.test\";"));
    mw_spf_outcome_clear(&o);

    /* HELO identity, IPv6 client (not a dot-atom: quoted) */
    mw_buf_reset(&b);
    check(spf, "2001:db8::25", "pass.test", "", MW_SPF_SCOPE_HELO, &o);
    mw_spf_received_spf(&o, RECEIVER, &b);
    fprintf(stderr, "   %s\n", mw_buf_cstr(&b));
    MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
    MW_TEST_EQ_STR(p.result, "pass");
    MW_TEST_EQ_STR(rspf_get(&p, "client-ip"), "2001:db8::25");
    MW_TEST_EQ_STR(rspf_get(&p, "identity"), "helo");
    MW_TEST_ASSERT(rspf_get(&p, "envelope-from") == NULL);
    mw_spf_outcome_clear(&o);

    /* hostile envelope-from: quote, backslash, CRLF, parentheses, 8-bit */
    mw_buf_reset(&b);
    check(spf, "198.51.100.1", "evil\r\nX-Injected: 1",
          "\"a\\\"b\r\nX-Evil: yes (x) \xff\"@pass.test", MW_SPF_SCOPE_MAILFROM, &o);
    MW_TEST_EQ_INT(o.result, MW_SPF_FAIL);
    mw_spf_received_spf(&o, "rcv (x)\r\n", &b);
    fprintf(stderr, "   %s\n", mw_buf_cstr(&b));
    MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
    MW_TEST_ASSERT(!strchr(mw_buf_cstr(&b), '\r') && !strchr(mw_buf_cstr(&b), '\n'));
    MW_TEST_EQ_STR(p.result, "fail");
    MW_TEST_ASSERT(rspf_get(&p, "envelope-from") != NULL);
    MW_TEST_ASSERT(strstr(rspf_get(&p, "envelope-from"), "X-Evil") != NULL);
    MW_TEST_ASSERT(rspf_get(&p, "helo") != NULL);
    MW_TEST_ASSERT(p.n == 5);   /* receiver client-ip envelope-from helo identity */
    mw_spf_outcome_clear(&o);

    /* errors carry problem=; every result renders; long values are capped */
    const char *froms[] = {"a@syntax.test", "a@servfail.test", "a@nx.test", "a@neutral.test",
                           "a@soft.test", NULL};
    for (int i = 0; froms[i]; i++) {
        mw_buf_reset(&b);
        check(spf, "198.51.100.1", "h.test", froms[i], MW_SPF_SCOPE_MAILFROM, &o);
        mw_spf_received_spf(&o, RECEIVER, &b);
        MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
        MW_TEST_EQ_STR(p.result, mw_spf_result_name(o.result));
        if (o.result == MW_SPF_PERMERROR || o.result == MW_SPF_TEMPERROR)
            MW_TEST_ASSERT(rspf_get(&p, "problem") != NULL);
        mw_spf_outcome_clear(&o);
    }

    /* worst case: every field long and full of bytes that need escaping */
    char big[2048];
    memset(big, '\x01', sizeof big - 20);
    strcpy(big + sizeof big - 20, "@pass.test");
    mw_spf_outcome w = {0};
    w.result = MW_SPF_PERMERROR;
    w.scope = MW_SPF_SCOPE_MAILFROM;
    w.identity = big;
    w.helo = big;
    w.client_ip = big;
    w.reason = big;
    mw_buf_reset(&b);
    mw_spf_received_spf(&w, big, &b);
    MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
    MW_TEST_ASSERT(b.len + strlen("Received-SPF: ") < 998);
    fprintf(stderr, "   worst-case header value: %zu bytes\n", b.len);

    /* an outcome never evaluated still renders */
    mw_spf_outcome z = {0};
    mw_buf_reset(&b);
    mw_spf_received_spf(&z, NULL, &b);
    MW_TEST_ASSERT(parse_rspf(mw_buf_cstr(&b), &p));
    mw_buf_free(&b);
}

/* ---- concurrency ---- */

struct conc_case {
    const char *ip, *helo, *from;
    mw_spf_scope scope;
    mw_spf_result want;
};

static const struct conc_case conc[] = {
    {"192.0.2.10", "x.test", "a@pass.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_PASS},
    {"198.51.100.1", "x.test", "a@pass.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_FAIL},
    {"198.51.100.1", "soft.test", "", MW_SPF_SCOPE_HELO, MW_SPF_SOFTFAIL},
    {"198.51.100.8", "x.test", "a@amx.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_PASS},
    {"2001:db8:8::8", "amx.test", "", MW_SPF_SCOPE_MAILFROM, MW_SPF_PASS},
    {"192.0.2.10", "x.test", "a@void3.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_PERMERROR},
    {"192.0.2.10", "x.test", "a@void2.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_NEUTRAL},
    {"192.0.2.10", "x.test", "a@two.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_PERMERROR},
    {"192.0.2.10", "x.test", "a@norecord.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_NONE},
    {"192.0.2.10", "x.test", "a@servfail.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_TEMPERROR},
    {"198.51.100.1", "x.test", "a@expfail.test", MW_SPF_SCOPE_MAILFROM, MW_SPF_FAIL},
    {"::ffff:192.0.2.10", "redir.test", "", MW_SPF_SCOPE_HELO, MW_SPF_PASS},
};
#define NCONC (sizeof conc / sizeof conc[0])

static atomic_uint conc_bad;

static mw_spf *spf_nocache;   /* half of the threads: every check evaluates */

static void *conc_thread(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    mw_spf *s = (seed & 1) ? spf_nocache : spf;
    for (int i = 0; i < 100; i++) {
        const struct conc_case *c = &conc[(seed + (unsigned)i * 7u) % NCONC];
        mw_spf_outcome o;
        mw_spf_check(s, c->ip, c->helo, c->from, c->scope, &o);
        if (o.result != c->want) {
            atomic_fetch_add(&conc_bad, 1);
            fprintf(stderr, "   thread %u: %s %s -> %s (%s)\n", seed, c->from, c->ip,
                    mw_spf_result_name(o.result), o.reason);
        }
        if (c->want == MW_SPF_FAIL && strstr(c->from, "expfail") &&
            (!o.explanation || strcmp(o.explanation, "Mail from this host is not authorized.")))
            atomic_fetch_add(&conc_bad, 1);
        mw_buf b = MW_BUF_INIT;
        mw_spf_received_spf(&o, RECEIVER, &b);
        mw_buf_free(&b);
        mw_spf_outcome_clear(&o);
    }
    return NULL;
}

static void test_concurrency(void)
{
    char err[256];
    mw_spf_options nopt = {.timeout_ms = 5000, .receiver = RECEIVER, .no_cache = true};
    spf_nocache = mw_spf_create(dns, &nopt, err, sizeof err);
    MW_TEST_ASSERT(spf_nocache != NULL);
    pthread_t t[8];
    double t0 = now_s();
    for (unsigned i = 0; i < 8; i++)
        MW_TEST_ASSERT(pthread_create(&t[i], NULL, conc_thread, (void *)(uintptr_t)i) == 0);
    for (unsigned i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    MW_TEST_EQ_INT(atomic_load(&conc_bad), 0);
    fprintf(stderr, "   800 checks (400 uncached) in %.2f s\n", now_s() - t0);
    mw_spf_destroy(&spf_nocache);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_result_names();
    MW_TEST_RUN(test_record_syntax);
    MW_TEST_RUN(test_macro_expansion);
    if (!MW_TEST_ASSERT(start_server())) {
        stop_server();
        return MW_TEST_SUMMARY();
    }
    char fwd[64], err[256] = "";
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", testdns.port);
    const char *fwds[] = {fwd};
    mw_dns_options dopt = {.forwarders = fwds, .nforwarders = 1, .timeout_ms = 3000};
    dns = mw_dns_create(&dopt, err, sizeof err);
    if (!MW_TEST_ASSERT(dns != NULL)) {
        fprintf(stderr, "mw_dns_create: %s\n", err);
        stop_server();
        return MW_TEST_SUMMARY();
    }
    mw_spf_options sopt = {.timeout_ms = 5000, .receiver = RECEIVER};
    spf = mw_spf_create(dns, &sopt, err, sizeof err);
    mw_spf_options fopt = {.timeout_ms = 1000, .receiver = RECEIVER};
    spf_fast = mw_spf_create(dns, &fopt, err, sizeof err);
    MW_TEST_ASSERT(spf && spf_fast);
    MW_TEST_ASSERT(mw_spf_create(NULL, &sopt, err, sizeof err) == NULL);

    MW_TEST_RUN(test_results_both_scopes);
    MW_TEST_RUN(test_reasons);
    MW_TEST_RUN(test_macros_ptr);
    MW_TEST_RUN(test_identities);
    MW_TEST_RUN(test_explanation);
    MW_TEST_RUN(test_nul_record);
    MW_TEST_RUN(test_received_spf);
    MW_TEST_RUN(test_timeouts);
    MW_TEST_RUN(test_strict_records);
    MW_TEST_RUN(test_limits);
    MW_TEST_RUN(test_zero_cidr_and_families);
    MW_TEST_RUN(test_explanation_macros);
    MW_TEST_RUN(test_tcp);
    MW_TEST_RUN(test_query_cap);
    MW_TEST_RUN(test_cache);
    MW_TEST_RUN(test_concurrency);

    mw_spf_destroy(&spf);
    mw_spf_destroy(&spf_fast);
    MW_TEST_ASSERT(spf == NULL);
    mw_dns_destroy(&dns);
    stop_server();
    return MW_TEST_SUMMARY();
}
