/*
 * test_checks_dmarc.c - unit tests of the DMARC module (checks/dmarc*.c):
 * record parsing (table), the RFC 9989 tree walk (psd=y/n, deep names,
 * the 8-query limit), sp/np, t=y, strict/relaxed alignment, temperror,
 * several records, the RFC 7489 mode (PSL, pct), against
 * tests/lib/testdns.py on a loopback port started here.
 *
 * Second use, for tests/conformance/test_dmarc_cases.py:
 *     test_checks_dmarc --cases FILE.tsv --dns 127.0.0.1@PORT
 * reads one case per line (tab-separated: id, mode rfc9989|rfc7489,
 * header_from, spf_domain, spf_result, dkim "d:result,d:result" or "-",
 * pct_sample) and prints one line per case:
 *     id TAB result TAB policy TAB disposition TAB policy_domain TAB
 *     org_domain TAB spf_aligned TAB dkim_aligned TAB testing TAB reason
 * ("-" for an empty field).  The driver compares and counts.
 *
 * Environment: MW_SOURCE_DIR, MW_TEST_PYTHON (as test_core_dns.c).
 */
#include <errno.h>
#include <pthread.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "dmarc.h"
#include "dns.h"
#include "mwtest.h"
#include "mwtest_procs.h"

static mwt_proc testdns;
static void stop_testdns(void) { mwt_proc_stop(&testdns); }
static mw_dns *dns;
static mw_dmarc *dm, *dm7489;
/* For the silent name only: an 800 ms query deadline, so its timeouts are
 * quick, while every real answer gets the resolver's generous default (an
 * 800 ms default for all lookups raced a loaded machine). */
static mw_dmarc *dm_fast;

/* ---- the test server ----------------------------------------------------------- */

static const char *const ZONE =
    "{\n"
    /* sp vs np, relaxed alignment */
    " \"_dmarc.example.com\": [{\"TXT\": \"v=DMARC1; p=none; sp=quarantine; np=reject; "
    "rua=mailto:agg@example.com\"}],\n"
    " \"example.com\": [{\"A\": \"192.0.2.1\"}],\n"
    " \"sub.example.com\": [{\"A\": \"192.0.2.2\"}],\n"
    " \"mxonly.example.com\": [{\"MX\": [10, \"mx.example.com\"]}],\n"
    " \"txtonly.example.com\": [{\"TXT\": \"hello\"}],\n"
    " \"_dmarc.twice.example.com\": [{\"TXT\": \"v=DMARC1; p=reject\"}, "
    "{\"TXT\": \"v=DMARC1; p=none\"}],\n"
    " \"twice.example.com\": [{\"A\": \"192.0.2.3\"}],\n"
    /* strict */
    " \"_dmarc.strict.example\": [{\"TXT\": \"v=DMARC1; p=reject; adkim=s; aspf=s\"}],\n"
    " \"strict.example\": [{\"A\": \"192.0.2.4\"}],\n"
    /* t=y */
    " \"_dmarc.testing.example\": [{\"TXT\": \"v=DMARC1; p=reject; t=y\"}],\n"
    " \"_dmarc.testq.example\": [{\"TXT\": \"v=DMARC1; p=quarantine; t=y\"}],\n"
    /* several records, mixed TXT */
    " \"_dmarc.multi.example\": [{\"TXT\": \"v=DMARC1; p=reject\"}, {\"TXT\": \"v=DMARC1; p=reject\"}],\n"
    " \"_dmarc.mixed.example\": [{\"TXT\": \"v=spf1 -all\"}, {\"TXT\": \"v=DMARC1; p=reject\"}],\n"
    /* unusable / p assumed */
    " \"_dmarc.nop.example\": [{\"TXT\": \"v=DMARC1; sp=reject\"}],\n"
    " \"_dmarc.noprua.example\": [{\"TXT\": \"v=DMARC1; p=bogus; rua=mailto:x@noprua.example\"}],\n"
    /* DNS trouble */
    " \"_dmarc.slow.example\": [\"TIMEOUT\"],\n"
    " \"_dmarc.broken.example\": [\"SERVFAIL\"],\n"
    " \"_dmarc.example\": [\"SERVFAIL\"],\n"     /* reached only by names under .example without a record */
    /* PSD: psd=y at the TLD */
    " \"_dmarc.psdtld\": [{\"TXT\": \"v=DMARC1; p=reject; sp=quarantine; np=reject; psd=y\"}],\n"
    " \"org1.psdtld\": [{\"A\": \"192.0.2.5\"}],\n"
    " \"mail.org1.psdtld\": [{\"A\": \"192.0.2.6\"}],\n"
    " \"_dmarc.org2.psdtld\": [{\"TXT\": \"v=DMARC1; p=none\"}],\n"
    " \"mail.org2.psdtld\": [{\"A\": \"192.0.2.7\"}],\n"
    /* psd=n inside an organisation */
    " \"_dmarc.bigcorp.test\": [{\"TXT\": \"v=DMARC1; p=reject\"}],\n"
    " \"_dmarc.dept.bigcorp.test\": [{\"TXT\": \"v=DMARC1; p=quarantine; psd=n\"}],\n"
    " \"a.dept.bigcorp.test\": [{\"A\": \"192.0.2.8\"}],\n"
    " \"_dmarc.mid.bigcorp.test\": [{\"TXT\": \"v=DMARC1; p=none\"}],\n"
    " \"x.mid.bigcorp.test\": [{\"A\": \"192.0.2.9\"}],\n"
    /* deep names under deep.test */
    " \"_dmarc.deep.test\": [{\"TXT\": \"v=DMARC1; p=reject; sp=reject\"}],\n"
    " \"a.b.c.d.e.f.g.h.i.deep.test\": [{\"A\": \"192.0.2.10\"}],\n"
    " \"_dmarc.g.h.i.deep.test\": [{\"TXT\": \"v=DMARC1; p=none\"}],\n"
    " \"_dmarc.c.d.e.f.g.h.i.deep.test\": [{\"TXT\": \"v=DMARC1; p=none\"}],\n"
    /* RFC 7489 mode: PSL org domain, pct */
    " \"_dmarc.example.co.uk\": [{\"TXT\": \"v=DMARC1; p=reject; sp=none; pct=50; np=quarantine\"}],\n"
    " \"www.example.co.uk\": [{\"A\": \"192.0.2.11\"}],\n"
    " \"_dmarc.last.example\": [{\"TXT\": \"v=DMARC1; p=none\"}]\n"
    "}\n";


/* ---- helpers ------------------------------------------------------------------------- */

typedef struct dk {
    const char *d;
    mw_dkim_result r;
} dk;

static void eval(mw_dmarc *d, const char *from, const char *spf_dom, mw_spf_result spf,
                 const dk *sigs, size_t n, mw_dmarc_outcome *o)
{
    mw_dkim_sig s[8];
    mw_dmarc_input in;

    memset(s, 0, sizeof s);
    for (size_t i = 0; i < n && i < 8; i++) {
        s[i].domain = (char *)sigs[i].d;
        s[i].selector = (char *)"sel";
        s[i].result = sigs[i].r;
    }
    memset(&in, 0, sizeof in);
    in.from_domain = from;
    in.spf_domain = spf_dom;
    in.spf_result = spf;
    in.spf_done = spf_dom != NULL;
    in.dkim = s;
    in.ndkim = n;
    mw_dmarc_evaluate(d, &in, o);
    if (getenv("MW_DMARC_VERBOSE"))
        fprintf(stderr, "  %s: %s\n", from ? from : "(null)", o->reason);
}

#define EXPECT(o, res, pol, disp) do { \
        MW_TEST_EQ_STR(mw_dmarc_result_name((o).result), res); \
        MW_TEST_EQ_STR(mw_dmarc_policy_name((o).policy), pol); \
        MW_TEST_EQ_STR(mw_dmarc_policy_name((o).disposition), disp); \
        if ((o).reason && strcmp(mw_dmarc_result_name((o).result), res) != 0) \
            fprintf(stderr, "    reason: %s\n", (o).reason); \
    } while (0)

/* ---- record parsing ------------------------------------------------------------------- */

static void test_record_table(void)
{
    static const struct {
        const char *text;
        int mode;          /* 0: 9989, 1: 7489 */
        bool ok, is_dmarc;
        const char *p, *sp, *np;
        char adkim, aspf, psd;
        bool t, assumed;
        int pct, nrua;
    } cases[] = {
        {"v=DMARC1; p=reject", 0, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        {"v=DMARC1;p=quarantine;sp=none;np=reject;adkim=s;aspf=s;t=y;psd=n", 0, true, true,
         "quarantine", "none", "reject", 's', 's', 'n', true, false, 100, 0},
        {"v = DMARC1 ; P = Reject ; SP=NONE; ADKIM=S", 0, true, true, "reject", "none", "unspecified", 's', 'r', 'u', false, false, 100, 0},
        {"v=DMARC1; p=none;", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        /* not DMARC records at all */
        {"p=reject; v=DMARC1", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=dmarc1; p=reject", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC10; p=reject", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {" v=DMARC1; p=reject", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=spf1 -all", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC2; p=reject", 0, false, false, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        /* DMARC records, but unusable: no valid p and no valid rua */
        {"v=DMARC1", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC1; p=bogus", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC1; sp=reject", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC1; p=reject; sp=maybe", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC1; p=reject; np=x", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        {"v=DMARC1; p=bogus; rua=not a uri", 0, false, true, NULL, NULL, NULL, 0, 0, 0, false, false, 0, 0},
        /* ... with a valid rua: acts as p=none */
        {"v=DMARC1; rua=mailto:a@example.com", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, true, 100, 1},
        {"v=DMARC1; p=bogus; sp=reject; rua=mailto:a@example.com", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, true, 100, 1},
        {"v=DMARC1; p=reject; np=x; rua=mailto:a@example.com", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, true, 100, 1},
        /* bad values of other tags: defaults */
        {"v=DMARC1; p=reject; adkim=x; aspf=strict; t=maybe; psd=q", 0, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        /* unknown tags, removed tags (pct/rf/ri ignored in 9989), junk fragments */
        {"v=DMARC1; p=reject; foo=bar; pct=10; rf=afrf; ri=3600; ; junk; 1x=2", 0, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        /* repeated tag: first wins */
        {"v=DMARC1; p=none; p=reject", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        /* rua lists: invalid URIs dropped */
        {"v=DMARC1; p=none; rua=mailto:a@x.example, bogus ,mailto:b@y.example!10m, :nope", 0, true, true, "none", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 2},
        /* RFC 7489 mode: pct honoured, np/psd/t ignored */
        {"v=DMARC1; p=reject; pct=20; np=none; psd=y; t=y", 1, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 20, 0},
        {"v=DMARC1; p=reject; pct=101", 1, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        {"v=DMARC1; p=reject; pct=-1", 1, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        {"v=DMARC1; p=reject; np=garbage", 1, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 100, 0},
        {"v=DMARC1; p=reject; pct=0", 1, true, true, "reject", "unspecified", "unspecified", 'r', 'r', 'u', false, false, 0, 0},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mw_dmarc_record r;
        char why[200] = "";
        const char *t = cases[i].text;
        bool ok = mw_dmarc_record_parse(t, strlen(t), cases[i].mode ? MW_DMARC_MODE_RFC7489
                                                                    : MW_DMARC_MODE_RFC9989,
                                        &r, why, sizeof why);
        if (!MW_TEST_EQ_INT(ok, cases[i].ok) ||
            !MW_TEST_EQ_INT(mw_dmarc_record_is_dmarc(t, strlen(t)), cases[i].is_dmarc)) {
            fprintf(stderr, "    case %zu \"%s\": %s\n", i, t, why);
        } else if (ok) {
            MW_TEST_EQ_STR(mw_dmarc_policy_name(r.p), cases[i].p);
            MW_TEST_EQ_STR(mw_dmarc_policy_name(r.sp), cases[i].sp);
            MW_TEST_EQ_STR(mw_dmarc_policy_name(r.np), cases[i].np);
            MW_TEST_EQ_INT(r.adkim, cases[i].adkim);
            MW_TEST_EQ_INT(r.aspf, cases[i].aspf);
            MW_TEST_EQ_INT(r.psd, cases[i].psd);
            MW_TEST_EQ_INT(r.t, cases[i].t);
            MW_TEST_EQ_INT(r.p_assumed, cases[i].assumed);
            MW_TEST_EQ_INT(r.pct, cases[i].pct);
            size_t n = 0;
            while (r.rua[n] != NULL)
                n++;
            if (!MW_TEST_EQ_INT(n, cases[i].nrua))
                fprintf(stderr, "    case %zu \"%s\"\n", i, t);
        } else {
            MW_TEST_ASSERT(why[0] != '\0');
        }
        mw_dmarc_record_clear(&r);
    }

    /* NUL and 8-bit bytes are just bytes; the raw copy is printable. */
    const char bin[] = "v=DMARC1; p=reject; x=\0\xff";
    mw_dmarc_record r;
    MW_TEST_ASSERT(mw_dmarc_record_parse(bin, sizeof bin - 1, MW_DMARC_MODE_RFC9989, &r, NULL, 0));
    MW_TEST_EQ_INT(r.p, MW_DMARC_P_REJECT);
    for (const char *p = r.raw; *p; p++)
        MW_TEST_ASSERT((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    MW_TEST_EQ_STR(r.rua[0], NULL);
    mw_dmarc_record_clear(&r);
}

static void test_names(void)
{
    mw_dmarc_result r;
    mw_dmarc_policy p;

    MW_TEST_ASSERT(mw_dmarc_result_parse("TempError", &r) && r == MW_DMARC_TEMPERROR);
    MW_TEST_ASSERT(!mw_dmarc_result_parse("softfail", &r));
    MW_TEST_ASSERT(mw_dmarc_policy_parse("quarantine", &p) && p == MW_DMARC_P_QUARANTINE);
    MW_TEST_ASSERT(!mw_dmarc_policy_parse("unspecified", &p));
    MW_TEST_EQ_STR(mw_dmarc_result_name(MW_DMARC_PERMERROR), "permerror");
    MW_TEST_EQ_STR(mw_dmarc_policy_name(MW_DMARC_P_REJECT), "reject");
}

/* ---- discovery and evaluation ------------------------------------------------------------ */

static void test_policy_sp_np(void)
{
    mw_dmarc_outcome o;

    /* The record's own domain: p. */
    eval(dm, "example.com", "other.example", MW_SPF_PASS, NULL, 0, &o);
    EXPECT(o, "fail", "none", "none");
    MW_TEST_EQ_STR(o.policy_source, "p");
    MW_TEST_EQ_STR(o.policy_domain, "example.com");
    MW_TEST_EQ_STR(o.org_domain, "example.com");
    MW_TEST_EQ_STR(o.record.rua[0], "mailto:agg@example.com");
    mw_dmarc_outcome_clear(&o);

    /* An existing subdomain: sp. */
    eval(dm, "sub.example.com", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.policy_source, "sp");
    MW_TEST_ASSERT(o.from_exists);
    mw_dmarc_outcome_clear(&o);

    /* Exists through MX only: still exists. */
    eval(dm, "mxonly.example.com", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    mw_dmarc_outcome_clear(&o);

    /* Non-existent: NXDOMAIN only (RFC 9989 by RFC 8020). */
    eval(dm, "nx.example.com", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_EQ_STR(o.policy_source, "np");
    MW_TEST_ASSERT(!o.from_exists);
    mw_dmarc_outcome_clear(&o);
    /* A name with a TXT record only answers NODATA for A, AAAA and MX: it
     * exists, so sp applies, not np. */
    eval(dm, "txtonly.example.com", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.policy_source, "sp");
    MW_TEST_ASSERT(o.from_exists);
    mw_dmarc_outcome_clear(&o);

    /* Upper case and a trailing dot are normalised. */
    eval(dm, "SUB.Example.COM.", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.from_domain, "sub.example.com");
    mw_dmarc_outcome_clear(&o);

    /* No record anywhere: none (DMARC does not apply). */
    eval(dm, "nothing.last.test", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "none", "unspecified", "unspecified");
    MW_TEST_EQ_STR(o.policy_domain, NULL);
    mw_dmarc_outcome_clear(&o);

    /* Unusable From. */
    eval(dm, "not a domain", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "permerror", "unspecified", "unspecified");
    mw_dmarc_outcome_clear(&o);
    eval(dm, NULL, NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "permerror", "unspecified", "unspecified");
    mw_dmarc_outcome_clear(&o);
}

static void test_alignment(void)
{
    mw_dmarc_outcome o;

    /* Relaxed: DKIM d= the org domain aligns with a subdomain From. */
    eval(dm, "sub.example.com", NULL, MW_SPF_NONE, (dk[]){{"example.com", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "pass", "quarantine", "none");
    MW_TEST_ASSERT(o.dkim_aligned && !o.spf_aligned);
    MW_TEST_EQ_STR(o.dkim_aligned_domain, "example.com");
    mw_dmarc_outcome_clear(&o);

    /* Relaxed SPF: a sibling subdomain. */
    eval(dm, "sub.example.com", "bounce.example.com", MW_SPF_PASS, NULL, 0, &o);
    EXPECT(o, "pass", "quarantine", "none");
    MW_TEST_ASSERT(o.spf_aligned && !o.dkim_aligned);
    mw_dmarc_outcome_clear(&o);

    /* SPF softfail / DKIM fail of aligned domains: no alignment. */
    eval(dm, "example.com", "example.com", MW_SPF_SOFTFAIL,
         (dk[]){{"example.com", MW_DKIM_FAIL}, {"example.com", MW_DKIM_NEUTRAL}}, 2, &o);
    EXPECT(o, "fail", "none", "none");
    mw_dmarc_outcome_clear(&o);

    /* A passing unrelated d= and a suffix-lookalike do not align. */
    eval(dm, "example.com", "badexample.com", MW_SPF_PASS,
         (dk[]){{"evil.example", MW_DKIM_PASS}, {"notexample.com", MW_DKIM_PASS}}, 2, &o);
    EXPECT(o, "fail", "none", "none");
    mw_dmarc_outcome_clear(&o);

    /* The second of several signatures aligns. */
    eval(dm, "example.com", NULL, MW_SPF_NONE,
         (dk[]){{"evil.example", MW_DKIM_PASS}, {"Mail.Example.com.", MW_DKIM_PASS}}, 2, &o);
    EXPECT(o, "pass", "none", "none");
    MW_TEST_EQ_STR(o.dkim_aligned_domain, "mail.example.com");
    mw_dmarc_outcome_clear(&o);

    /* Strict: only the exact domain. */
    eval(dm, "strict.example", "bounce.strict.example", MW_SPF_PASS,
         (dk[]){{"mail.strict.example", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "fail", "reject", "reject");
    mw_dmarc_outcome_clear(&o);
    eval(dm, "strict.example", "strict.example", MW_SPF_PASS, NULL, 0, &o);
    EXPECT(o, "pass", "reject", "none");
    MW_TEST_ASSERT(o.spf_aligned);
    mw_dmarc_outcome_clear(&o);
    eval(dm, "strict.example", NULL, MW_SPF_NONE, (dk[]){{"STRICT.example", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "pass", "reject", "none");
    mw_dmarc_outcome_clear(&o);

    /* An aligned DKIM temperror with nothing else passing is temperror, never
     * fail (a retry may pass); the applicable policy is still known. */
    eval(dm, "strict.example", NULL, MW_SPF_NONE, (dk[]){{"strict.example", MW_DKIM_TEMPERROR}}, 1, &o);
    EXPECT(o, "temperror", "reject", "unspecified");
    MW_TEST_ASSERT(o.auth_temperror);
    mw_dmarc_outcome_clear(&o);
    /* An unaligned one changes nothing: fail. */
    eval(dm, "strict.example", NULL, MW_SPF_NONE, (dk[]){{"other.example", MW_DKIM_TEMPERROR}}, 1, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_ASSERT(!o.auth_temperror);
    mw_dmarc_outcome_clear(&o);
    /* An aligned pass next to it wins. */
    eval(dm, "strict.example", "strict.example", MW_SPF_PASS, (dk[]){{"strict.example", MW_DKIM_TEMPERROR}}, 1,
         &o);
    EXPECT(o, "pass", "reject", "none");
    mw_dmarc_outcome_clear(&o);
}

static void test_testing(void)
{
    mw_dmarc_outcome o;

    eval(dm, "testing.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "quarantine");
    MW_TEST_ASSERT(o.testing && o.record.t);
    mw_dmarc_outcome_clear(&o);
    eval(dm, "testq.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "none");
    MW_TEST_ASSERT(o.testing);
    mw_dmarc_outcome_clear(&o);
    /* Passing mail in testing mode: disposition none, not "testing". */
    eval(dm, "testing.example", "testing.example", MW_SPF_PASS, NULL, 0, &o);
    EXPECT(o, "pass", "reject", "none");
    MW_TEST_ASSERT(!o.testing);
    mw_dmarc_outcome_clear(&o);
}

static void test_records_at_a_name(void)
{
    mw_dmarc_outcome o;

    /* Two DMARC records at the From domain: both discarded, the walk goes
     * on and finds example.com's (a subdomain: sp). */
    eval(dm, "twice.example.com", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.policy_domain, "example.com");
    mw_dmarc_outcome_clear(&o);

    /* Two records and nothing above (the TLD's query fails!): that
     * failure is temperror; with no TLD trouble, none. */
    eval(dm, "multi.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "temperror", "unspecified", "unspecified");
    mw_dmarc_outcome_clear(&o);

    /* A non-DMARC TXT beside the record is ignored. */
    eval(dm, "mixed.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "reject");
    mw_dmarc_outcome_clear(&o);

    /* Unusable record: no DMARC processing; with rua: p=none. */
    eval(dm, "nop.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "none", "unspecified", "unspecified");
    MW_TEST_ASSERT(strstr(o.reason, "no p tag") != NULL);
    mw_dmarc_outcome_clear(&o);
    eval(dm, "noprua.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "none", "none");
    MW_TEST_ASSERT(o.record.p_assumed);
    mw_dmarc_outcome_clear(&o);
}

static void test_dns_errors(void)
{
    mw_dmarc_outcome o;

    eval(dm_fast, "slow.example", "slow.example", MW_SPF_PASS, NULL, 0, &o);
    EXPECT(o, "temperror", "unspecified", "unspecified");
    MW_TEST_ASSERT(strstr(o.reason, "_dmarc.slow.example") != NULL);
    mw_dmarc_outcome_clear(&o);
    eval(dm, "broken.example", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "temperror", "unspecified", "unspecified");
    mw_dmarc_outcome_clear(&o);
}

static void test_psd(void)
{
    mw_dmarc_outcome o;
    char *org;

    /* psd=y at the TLD: org domain is one label below; with no record of
     * its own, the PSD's record applies (sp for an existing name). */
    eval(dm, "mail.org1.psdtld", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.org_domain, "org1.psdtld");
    MW_TEST_EQ_STR(o.policy_domain, "psdtld");
    mw_dmarc_outcome_clear(&o);
    /* ... np for a non-existent one. */
    eval(dm, "nx.org1.psdtld", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_EQ_STR(o.policy_source, "np");
    mw_dmarc_outcome_clear(&o);
    /* The org domain's own record wins over the PSD's. */
    eval(dm, "mail.org2.psdtld", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "none", "none");
    MW_TEST_EQ_STR(o.policy_domain, "org2.psdtld");
    MW_TEST_EQ_STR(o.org_domain, "org2.psdtld");
    mw_dmarc_outcome_clear(&o);
    /* Relaxed alignment stops at the PSD boundary: org1 vs org2. */
    eval(dm, "mail.org2.psdtld", NULL, MW_SPF_NONE, (dk[]){{"org1.psdtld", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "fail", "none", "none");
    mw_dmarc_outcome_clear(&o);
    eval(dm, "mail.org2.psdtld", NULL, MW_SPF_NONE, (dk[]){{"x.org2.psdtld", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "pass", "none", "none");
    mw_dmarc_outcome_clear(&o);

    /* psd=n inside an organisation: dept.bigcorp.test is its own org domain. */
    eval(dm, "a.dept.bigcorp.test", NULL, MW_SPF_NONE, (dk[]){{"bigcorp.test", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.org_domain, "dept.bigcorp.test");
    MW_TEST_EQ_STR(o.policy_domain, "dept.bigcorp.test");
    mw_dmarc_outcome_clear(&o);
    eval(dm, "a.dept.bigcorp.test", NULL, MW_SPF_NONE, (dk[]){{"x.dept.bigcorp.test", MW_DKIM_PASS}}, 1, &o);
    EXPECT(o, "pass", "quarantine", "none");
    mw_dmarc_outcome_clear(&o);
    /* A record between the From and the org domain is not used: x.mid's
     * org domain is bigcorp.test (fewest labels), whose sp (= p) applies. */
    eval(dm, "x.mid.bigcorp.test", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_EQ_STR(o.policy_domain, "bigcorp.test");
    MW_TEST_EQ_STR(o.org_domain, "bigcorp.test");
    mw_dmarc_outcome_clear(&o);

    bool tf = true;
    MW_TEST_ASSERT(mw_dmarc_domain_enforcing(dm, "mail.org1.psdtld", &tf) && !tf);
    MW_TEST_ASSERT(!mw_dmarc_domain_enforcing(dm, "mail.org2.psdtld", &tf) && !tf);
    MW_TEST_ASSERT(!mw_dmarc_domain_enforcing(dm, "nothing.last.test", &tf) && !tf);
    MW_TEST_ASSERT(!mw_dmarc_domain_enforcing(dm_fast, "slow.example", &tf) && tf);
    MW_TEST_ASSERT(mw_dmarc_domain_enforcing(dm, "testing.example", NULL));   /* before t=y */

    org = mw_dmarc_org_domain(dm, "A.Dept.BigCorp.test");
    MW_TEST_EQ_STR(org, "dept.bigcorp.test");
    free(org);
    org = mw_dmarc_org_domain(dm, "x.mid.bigcorp.test");
    MW_TEST_EQ_STR(org, "bigcorp.test");
    free(org);
    org = mw_dmarc_org_domain(dm, "psdtld");
    MW_TEST_EQ_STR(org, "psdtld");
    free(org);
    org = mw_dmarc_org_domain(dm_fast, "slow.example");
    MW_TEST_EQ_STR(org, NULL);
    free(org);
}

static void test_deep_walk(void)
{
    mw_dmarc_outcome o;

    /* 11 labels: _dmarc at the full name, then the 7-label suffix
     * e.f.g.h.i.deep.test, then one label at a time: 8 queries.  The
     * records at c.d.e.f.g.h.i.deep.test (9 labels, skipped by the
     * shortcut) and g.h.i.deep.test (between, no psd) are not the policy:
     * deep.test's is (fewest labels). */
    eval(dm, "a.b.c.d.e.f.g.h.i.deep.test", NULL, MW_SPF_NONE, NULL, 0, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_EQ_STR(o.policy_domain, "deep.test");
    MW_TEST_EQ_STR(o.org_domain, "deep.test");
    MW_TEST_EQ_INT(o.queries, 8);
    MW_TEST_EQ_INT(mwt_testdns_count(&testdns, "_dmarc.a.b.c.d.e.f.g.h.i.deep.test"), 1);
    MW_TEST_EQ_INT(mwt_testdns_count(&testdns, "_dmarc.b.c.d.e.f.g.h.i.deep.test"), 0);
    MW_TEST_EQ_INT(mwt_testdns_count(&testdns, "_dmarc.c.d.e.f.g.h.i.deep.test"), 0);
    MW_TEST_EQ_INT(mwt_testdns_count(&testdns, "_dmarc.d.e.f.g.h.i.deep.test"), 0);
    mw_dmarc_outcome_clear(&o);

    /* 9 labels with its own record: still at most 8 queries. */
    eval(dm, "c.d.e.f.g.h.i.deep.test", NULL, MW_SPF_NONE, NULL, 0, &o);
    /* Its own record (p=none) is the policy. */
    EXPECT(o, "fail", "none", "none");
    MW_TEST_ASSERT(o.queries <= 8);
    mw_dmarc_outcome_clear(&o);

    /* A 30-label name: still 8 queries. */
    eval(dm, "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26.27.28.deep.test",
         NULL, MW_SPF_NONE, NULL, 0, &o);
    MW_TEST_EQ_INT(o.queries, 8);
    EXPECT(o, "fail", "reject", "reject");
    mw_dmarc_outcome_clear(&o);
}

static void test_rfc7489_mode(void)
{
    mw_dmarc_outcome o;
    mw_dmarc_input in;
    char *org;

    if (dm7489 == NULL) {
        fprintf(stderr, "  (no public suffix list: RFC 7489 tests skipped)\n");
        return;
    }
    org = mw_dmarc_org_domain(dm7489, "a.b.www.example.co.uk");
    MW_TEST_EQ_STR(org, "example.co.uk");
    free(org);
    org = mw_dmarc_org_domain(dm7489, "co.uk");
    MW_TEST_EQ_STR(org, "co.uk");
    free(org);
    org = mw_dmarc_org_domain(dm7489, "a.b.example.com");
    MW_TEST_EQ_STR(org, "example.com");
    free(org);
    org = mw_dmarc_org_domain(dm7489, "x.unknowntld");
    MW_TEST_EQ_STR(org, "x.unknowntld");
    free(org);
    org = mw_dmarc_org_domain(dm7489, "www.ck");   /* an exception rule: !www.ck */
    MW_TEST_EQ_STR(org, "www.ck");
    free(org);
    org = mw_dmarc_org_domain(dm7489, "a.b.foo.ck");   /* wildcard *.ck */
    MW_TEST_EQ_STR(org, "b.foo.ck");
    free(org);

    /* sp for a subdomain (np ignored), pct sampling. */
    memset(&in, 0, sizeof in);
    in.from_domain = "nx.example.co.uk";
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "fail", "none", "none");
    MW_TEST_EQ_STR(o.discovery, "psl");
    MW_TEST_EQ_STR(o.policy_source, "sp");
    mw_dmarc_outcome_clear(&o);

    in.from_domain = "example.co.uk";
    in.pct_sample = 49;   /* 49 % 100 < 50: sampled */
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "fail", "reject", "reject");
    MW_TEST_ASSERT(!o.sampled_out);
    mw_dmarc_outcome_clear(&o);
    in.pct_sample = 150;  /* 50: not sampled -> quarantine */
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "fail", "reject", "quarantine");
    MW_TEST_ASSERT(o.sampled_out);
    mw_dmarc_outcome_clear(&o);

    /* Relaxed alignment by PSL: www.example.co.uk and example.co.uk. */
    mw_dkim_sig s = {.result = MW_DKIM_PASS, .domain = (char *)"www.example.co.uk"};
    in.dkim = &s;
    in.ndkim = 1;
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "pass", "reject", "none");
    mw_dmarc_outcome_clear(&o);

    /* In RFC 7489 mode several records at the From domain end discovery. */
    in.from_domain = "twice.example.com";
    in.ndkim = 0;
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "none", "unspecified", "unspecified");
    mw_dmarc_outcome_clear(&o);
    /* ... but no record there goes to the org domain (PSL). */
    in.from_domain = "deep.sub.example.com";
    mw_dmarc_evaluate(dm7489, &in, &o);
    EXPECT(o, "fail", "quarantine", "quarantine");
    MW_TEST_EQ_STR(o.policy_domain, "example.com");
    MW_TEST_EQ_INT(o.queries, 2);
    mw_dmarc_outcome_clear(&o);
}

static void test_create_errors(void)
{
    char err[300];
    mw_dmarc_options o = {.mode = MW_DMARC_MODE_RFC7489, .psl_file = "/nonexistent/psl.dat"};
    mw_dmarc *d = mw_dmarc_create(dns, &o, err, sizeof err);

    MW_TEST_ASSERT(d == NULL);
    MW_TEST_ASSERT(strstr(err, "/nonexistent/psl.dat") != NULL);
    d = mw_dmarc_create(NULL, NULL, err, sizeof err);
    MW_TEST_ASSERT(d == NULL);
}

/* Concurrent evaluations on one shared handle (TSan: no data race). */
static void *thread_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        mw_dmarc_outcome o;
        eval(dm, i % 2 ? "sub.example.com" : "mail.org1.psdtld", NULL, MW_SPF_NONE,
             (dk[]){{"example.com", MW_DKIM_PASS}}, 1, &o);
        MW_TEST_EQ_STR(mw_dmarc_result_name(o.result), i % 2 ? "pass" : "fail");
        mw_dmarc_outcome_clear(&o);
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];

    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_main, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

/* ---- the case-file mode ------------------------------------------------------------------- */

static const char *dash(const char *s) { return s != NULL && *s ? s : "-"; }

static int run_cases(const char *file, const char *server)
{
    const char *fwd[] = {server};
    /* generous: real answers must not race it (one case is a silent name) */
    mw_dns_options dopt = {.forwarders = fwd, .nforwarders = 1, .timeout_ms = 5000};
    char err[300], line[4096];
    mw_dmarc *d9, *d7;
    FILE *f = fopen(file, "r");

    if (f == NULL) {
        perror(file);
        return 2;
    }
    dns = mw_dns_create(&dopt, err, sizeof err);
    if (dns == NULL) {
        fprintf(stderr, "dns: %s\n", err);
        return 2;
    }
    d9 = mw_dmarc_create(dns, &(mw_dmarc_options){.mode = MW_DMARC_MODE_RFC9989}, err, sizeof err);
    d7 = mw_dmarc_create(dns, &(mw_dmarc_options){.mode = MW_DMARC_MODE_RFC7489}, err, sizeof err);
    if (d9 == NULL)
        return 2;
    while (fgets(line, sizeof line, f)) {
        char *fld[7] = {0}, *save = NULL, *p = line;
        size_t n = 0;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        for (char *t = strtok_r(p, "\t", &save); t && n < 7; t = strtok_r(NULL, "\t", &save))
            fld[n++] = strcmp(t, "-") == 0 ? NULL : t;
        if (n < 7) {
            printf("%s\tbadcase\n", fld[0] ? fld[0] : "?");
            continue;
        }
        mw_dkim_sig sigs[16];
        size_t ns = 0;
        memset(sigs, 0, sizeof sigs);
        for (char *s2 = NULL, *t = fld[5] ? strtok_r(fld[5], ",", &s2) : NULL; t && ns < 16;
             t = strtok_r(NULL, ",", &s2)) {
            char *colon = strrchr(t, ':');
            mw_dkim_result r = MW_DKIM_PASS;
            if (colon) {
                *colon = '\0';
                const char *w = colon + 1;
                r = strcmp(w, "pass") == 0 ? MW_DKIM_PASS : strcmp(w, "fail") == 0 ? MW_DKIM_FAIL
                  : strcmp(w, "temperror") == 0 ? MW_DKIM_TEMPERROR
                  : strcmp(w, "permerror") == 0 ? MW_DKIM_PERMERROR
                  : strcmp(w, "neutral") == 0 ? MW_DKIM_NEUTRAL
                  : strcmp(w, "policy") == 0 ? MW_DKIM_POLICY : MW_DKIM_NONE;
            }
            sigs[ns].domain = t;
            sigs[ns].result = r;
            ns++;
        }
        mw_dmarc_input in = {0};
        mw_spf_result spf = MW_SPF_NONE;
        in.from_domain = fld[2];
        in.spf_domain = fld[3];
        in.spf_done = fld[3] != NULL && fld[4] != NULL && mw_spf_result_parse(fld[4], &spf);
        in.spf_result = spf;
        in.dkim = sigs;
        in.ndkim = ns;
        in.pct_sample = fld[6] ? (uint32_t)strtoul(fld[6], NULL, 10) : 0;
        mw_dmarc *use = fld[1] && strcmp(fld[1], "rfc7489") == 0 ? d7 : d9;
        mw_dmarc_outcome o;
        if (use == NULL) {
            printf("%s\tnopsl\n", fld[0]);
            continue;
        }
        mw_dmarc_evaluate(use, &in, &o);
        printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fld[0], mw_dmarc_result_name(o.result),
               o.policy == MW_DMARC_P_UNSPEC ? "-" : mw_dmarc_policy_name(o.policy),
               o.disposition == MW_DMARC_P_UNSPEC ? "-" : mw_dmarc_policy_name(o.disposition),
               dash(o.policy_domain), dash(o.org_domain), o.spf_aligned ? "pass" : "fail",
               o.dkim_aligned ? "pass" : "fail", o.testing ? "y" : "n", dash(o.reason));
        fflush(stdout);
        mw_dmarc_outcome_clear(&o);
    }
    fclose(f);
    mw_dmarc_destroy(&d9);
    mw_dmarc_destroy(&d7);
    mw_dns_destroy(&dns);
    return 0;
}

int main(int argc, char **argv)
{
    char fwd[64], err[300];

    if (argc == 5 && strcmp(argv[1], "--cases") == 0 && strcmp(argv[3], "--dns") == 0)
        return run_cases(argv[2], argv[4]);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--cases FILE.tsv --dns ADDR@PORT]\n", argv[0]);
        return 2;
    }

    MW_TEST_RUN(test_record_table);
    MW_TEST_RUN(test_names);

    atexit(stop_testdns);
    if (!mwt_testdns_start(&testdns, "dmarc", ZONE)) {
        fprintf(stderr, "cannot start testdns.py (python3-dnslib missing?)\n");
        return 1;
    }
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", testdns.port);
    const char *fwds[] = {fwd};
    mw_dns_options dopt = {.forwarders = fwds, .nforwarders = 1, .timeout_ms = 10000};
    dns = mw_dns_create(&dopt, err, sizeof err);
    if (!MW_TEST_ASSERT(dns != NULL))
        return MW_TEST_SUMMARY();
    dm = mw_dmarc_create(dns, &(mw_dmarc_options){.mode = MW_DMARC_MODE_RFC9989}, err, sizeof err);
    if (!MW_TEST_ASSERT(dm != NULL))
        return MW_TEST_SUMMARY();
    dm_fast = mw_dmarc_create(dns, &(mw_dmarc_options){.mode = MW_DMARC_MODE_RFC9989, .timeout_ms = 800},
                              err, sizeof err);
    if (!MW_TEST_ASSERT(dm_fast != NULL))
        return MW_TEST_SUMMARY();
    dm7489 = mw_dmarc_create(dns, &(mw_dmarc_options){.mode = MW_DMARC_MODE_RFC7489}, err,
                             sizeof err);
    if (dm7489 == NULL)
        fprintf(stderr, "RFC 7489 mode unavailable: %s\n", err);

    MW_TEST_RUN(test_create_errors);
    MW_TEST_RUN(test_policy_sp_np);
    MW_TEST_RUN(test_alignment);
    MW_TEST_RUN(test_testing);
    MW_TEST_RUN(test_records_at_a_name);
    MW_TEST_RUN(test_dns_errors);
    MW_TEST_RUN(test_psd);
    MW_TEST_RUN(test_deep_walk);
    MW_TEST_RUN(test_rfc7489_mode);
    MW_TEST_RUN(test_threads);

    mw_dmarc_destroy(&dm);
    mw_dmarc_destroy(&dm_fast);
    mw_dmarc_destroy(&dm7489);
    mw_dns_destroy(&dns);
    return MW_TEST_SUMMARY();
}
